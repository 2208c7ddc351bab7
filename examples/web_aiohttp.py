"""An aiohttp web service in front of a DICOM peer, with its own Storage SCP.

The same service as web_fastapi.py, on aiohttp: a cleanup context runs the Storage SCP
(our AE title, ``--scp-port``; instances streamed to ``<storage>/<Study Instance
UID>/<SOP Instance UID>.dcm``) and the pooled associations to the remote peer for the
application's lifetime; see web_common.py for the DICOM side and the settings.

Endpoints: ``GET /health``, ``GET /echo``, ``GET /studies?PatientName=...&StudyDate=...``
and ``GET /studies/{uid}/series`` (DICOM JSON arrays), ``POST /studies/{uid}/retrieve``
(C-GET into the storage folder), ``POST /studies/{uid}/move?destination=AE`` (C-MOVE,
final summary), ``GET /studies/{uid}/move/events?destination=AE`` (the C-MOVE's
progress as server-sent events ``progress`` ... ``complete`` or ``error``; a
reconnection carrying Last-Event-ID gets 204), ``POST /instances`` (multipart/form-data,
multipart/related or application/dicom; C-STORE of each file, per-file statuses).

Serve it with ``handler_cancellation=True`` (``main()`` does, for ``web.run_app``; pass
it to ``web.AppRunner`` otherwise): then a client that goes away cancels its request,
and the C-MOVE behind an event stream is stopped with C-CANCEL.

Run it (the peer here is qrscp on 11112, e.g. ``python -m aionetdicom qrscp -od
archive --destination WEBGATEWAY=127.0.0.1:11113 11112``)::

    python examples/web_aiohttp.py --peer-port 11112 --peer-aet QRSCP --http-port 8080
    # (every option also reads an environment variable: DICOM_PEER_PORT=11112 ...)

    curl localhost:8080/echo
    curl 'localhost:8080/studies?PatientName=DOE*'
    curl -F file=@ct.dcm localhost:8080/instances
    curl -N 'localhost:8080/studies/1.2.3/move/events'

Needs ``aiohttp``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing

from aiohttp import BodyPartReader, web
from web_common import DICOM_JSON, Gateway, GatewayError, Settings, UploadArea, parse_settings
from web_common import sse_event as sse

GATEWAY = web.AppKey("gateway", Gateway)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def gateway_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """GatewayError -> its HTTP status with a JSON error body."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return web.json_response(exc.body(), status=exc.status_code)


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


async def health(request: web.Request) -> web.Response:
    body = _gateway(request).health()
    return web.json_response(body, status=200 if body["status"] == "ok" else 503)


async def echo(request: web.Request) -> web.Response:
    return web.json_response(await _gateway(request).echo())


async def studies(request: web.Request) -> web.Response:
    matches = await _gateway(request).find_studies(request.query.items())
    return web.json_response(matches, content_type=DICOM_JSON)


async def series(request: web.Request) -> web.Response:
    study_uid = request.match_info["study_uid"]
    matches = await _gateway(request).find_series(study_uid, request.query.items())
    return web.json_response(matches, content_type=DICOM_JSON)


async def retrieve(request: web.Request) -> web.Response:
    return web.json_response(await _gateway(request).retrieve(request.match_info["study_uid"]))


async def move(request: web.Request) -> web.Response:
    events = _gateway(request).move(
        request.match_info["study_uid"], request.query.get("destination")
    )
    async with aclosing(events):
        async for event, data in events:
            if event == "complete":
                return web.json_response(data)
    raise GatewayError(502, "the C-MOVE ended without a final response")


async def move_events(request: web.Request) -> web.StreamResponse:
    """The C-MOVE's responses as server-sent events; its first decides the HTTP status."""
    if "Last-Event-ID" in request.headers:
        return web.Response(status=204)  # an EventSource reconnecting: do not move again
    gateway = _gateway(request)
    events = gateway.move(request.match_info["study_uid"], request.query.get("destination"))
    async with aclosing(events):
        first = await anext(events)  # GatewayError here: a plain HTTP error response
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        number = 1
        await response.write(sse(*first, number))
        try:
            async for event, data in events:
                number += 1
                await response.write(sse(event, data, number))
        except GatewayError as exc:
            error = {"status_code": exc.status_code, **exc.body()}
            await response.write(sse("error", error, number + 1))
        await response.write_eof()
        return response


async def _receive_uploads(request: web.Request, area: UploadArea) -> None:
    """Spool the request's files into ``area``, by media type (else 415)."""
    if request.content_type == "application/dicom":
        sink = await area.add("body")
        async for chunk in request.content.iter_chunked(1 << 16):
            await sink.write(chunk)
        await sink.close()
        return
    if request.content_type not in ("multipart/form-data", "multipart/related"):
        raise GatewayError(
            415,
            f"unsupported media type {request.content_type!r}",
            accepted=["multipart/form-data", "multipart/related", "application/dicom"],
        )
    related = request.content_type == "multipart/related"
    try:
        reader = await request.multipart()
        number = 0
        while (part := await reader.next()) is not None:
            number += 1
            if not isinstance(part, BodyPartReader):
                raise GatewayError(400, "nested multipart bodies are not supported")
            is_dicom = part.headers.get("Content-Type", "").startswith("application/dicom")
            if part.filename is None and not (related or is_dicom):
                await part.release()  # a plain form field
                continue
            sink = await area.add(part.filename or f"part{number}")
            while chunk := await part.read_chunk():
                await sink.write(chunk)
            await sink.close()
    except (ValueError, AssertionError) as exc:  # aiohttp's reader on malformed input
        raise GatewayError(400, f"malformed multipart body: {exc}") from None


async def instances(request: web.Request) -> web.Response:
    gateway = _gateway(request)
    async with gateway.upload_area() as area:
        await _receive_uploads(request, area)
        status, body = await gateway.store_uploads(area.files)
    return web.json_response(body, status=status)


def create_app(settings: Settings | None = None) -> web.Application:
    """The aiohttp application for ``settings`` (default: from the environment)."""
    gateway = Gateway(settings or parse_settings([]))
    app = web.Application(middlewares=[gateway_errors])
    app[GATEWAY] = gateway

    async def dicom(app: web.Application) -> AsyncIterator[None]:
        async with gateway.running():
            yield

    app.cleanup_ctx.append(dicom)
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/echo", echo),
            web.get("/studies", studies),
            web.get("/studies/{study_uid}/series", series),
            web.post("/studies/{study_uid}/retrieve", retrieve),
            web.post("/studies/{study_uid}/move", move),
            web.get("/studies/{study_uid}/move/events", move_events),
            web.post("/instances", instances),
        ]
    )
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Parse settings from the command line and the environment; run the app."""
    description = __doc__.splitlines()[0] if __doc__ else None
    settings = parse_settings(sys.argv[1:] if argv is None else argv, description=description)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        handler_cancellation=True,  # a client that leaves cancels its C-MOVE / C-FIND
    )


if __name__ == "__main__":
    main()
