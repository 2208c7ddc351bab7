"""A FastAPI web service in front of a DICOM peer, with its own Storage SCP.

The app's lifespan runs a Storage SCP (our AE title, ``--scp-port``; instances are
streamed to ``<storage>/<Study Instance UID>/<SOP Instance UID>.dcm``) and keeps pooled
associations to the remote peer; see web_common.py for the DICOM side and the settings.

Endpoints:

* ``GET /health``: our SCP, the peer's address, pool statistics (sends nothing).
* ``GET /echo``: C-ECHO the peer.
* ``GET /studies?PatientName=DOE*&StudyDate=20200101-20201231&limit=10``: C-FIND at
  study level; the matches as a JSON array in the DICOM JSON model (PS3.18 F).
* ``GET /studies/{uid}/series?Modality=CT``: C-FIND at series level.
* ``POST /studies/{uid}/retrieve``: C-GET the study into the storage folder.
* ``POST /studies/{uid}/move?destination=AE``: C-MOVE (default destination: our SCP);
  the final summary.
* ``GET /studies/{uid}/move/events?destination=AE``: the same C-MOVE with its progress
  as server-sent events: ``progress`` per Pending response, then ``complete`` (or
  ``error``). Close the EventSource on ``complete``: a reconnection (Last-Event-ID)
  is answered 204 so that the browser does not start the move again.
* ``POST /instances``: upload files (``multipart/form-data``, ``multipart/related``
  as in STOW-RS, or one ``application/dicom`` body); each is sent with C-STORE.

Run it (the peer here is qrscp on 11112, e.g. ``python -m aionetdicom qrscp -od
archive --destination WEBGATEWAY=127.0.0.1:11113 11112``)::

    python examples/web_fastapi.py --peer-port 11112 --peer-aet QRSCP --http-port 8000
    # or, settings from the environment:
    DICOM_PEER_PORT=11112 DICOM_PEER_AET=QRSCP \\
        uvicorn --app-dir examples --factory web_fastapi:create_app --port 8000

    curl localhost:8000/echo
    curl 'localhost:8000/studies?PatientName=DOE*'
    curl -F file=@ct.dcm localhost:8000/instances
    curl -N 'localhost:8000/studies/1.2.3/move/events?destination=WEBGATEWAY'

Needs ``fastapi``, ``uvicorn`` and ``python-multipart``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Receive, Scope, Send
from web_common import (
    DICOM_JSON,
    Gateway,
    GatewayError,
    Settings,
    UploadArea,
    UploadSink,
    parse_settings,
)
from web_common import sse_event as sse

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MoveEvents = AsyncGenerator[tuple[Literal["progress", "complete"], dict[str, Any]], None]


class EventStream(StreamingResponse):
    """text/event-stream of a C-MOVE: one event per response, ``error`` on failure.

    The generator is closed however the response ends (a client that goes away
    included), which cancels a C-MOVE still running.
    """

    def __init__(self, first: tuple[str, dict[str, Any]], events: MoveEvents) -> None:
        self._events = events
        self._stream = self._encode(first, events)
        super().__init__(
            self._stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @staticmethod
    async def _encode(
        first: tuple[str, dict[str, Any]], events: MoveEvents
    ) -> AsyncGenerator[bytes, None]:
        number = 1
        yield sse(*first, number)
        try:
            async for event, data in events:
                number += 1
                yield sse(event, data, number)
        except GatewayError as exc:
            yield sse("error", {"status_code": exc.status_code, **exc.body()}, number + 1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
                await self._events.aclose()


# ---------------------------------------------------------------------- uploads


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    field_name: bytes = b""
    value: bytes = b""


class _MultipartCollector:
    """Turns python-multipart's synchronous callbacks into a list of actions that the
    request handler then carries out asynchronously (writing files off the loop)."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Any]] = []
        self.part = _Part()
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        def header_field(data: bytes, start: int, end: int) -> None:
            self.part.field_name += data[start:end]

        def header_value(data: bytes, start: int, end: int) -> None:
            self.part.value += data[start:end]

        def header_end() -> None:
            name = self.part.field_name.decode("latin-1").strip().lower()
            self.part.headers[name] = self.part.value.decode("latin-1").strip()
            self.part.field_name = self.part.value = b""

        def part_begin() -> None:
            self.part = _Part()

        def headers_finished() -> None:
            self.actions.append(("begin", self.part.headers))

        def part_data(data: bytes, start: int, end: int) -> None:
            self.actions.append(("data", bytes(data[start:end])))

        def part_end() -> None:
            self.actions.append(("end", None))

        def end() -> None:
            self.ended = True

        return {
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_begin": part_begin,
            "on_headers_finished": headers_finished,
            "on_part_data": part_data,
            "on_part_end": part_end,
            "on_end": end,
        }


def _file_name(headers: dict[str, str], related: bool, number: int) -> str | None:
    """The client's name of a part that is a file; None for a plain form field."""
    _, options = parse_options_header(headers.get("content-disposition", ""))
    filename = options.get(b"filename")
    if filename is not None:
        return filename.decode("utf-8", "replace") or f"part{number}"
    if related or headers.get("content-type", "").lower().startswith("application/dicom"):
        return f"part{number}"
    return None


async def _receive_multipart(
    request: Request, boundary: bytes, related: bool, area: UploadArea
) -> None:
    """Stream every file part of a multipart body into ``area``."""
    collector = _MultipartCollector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())
    except ValueError as exc:  # python-multipart's errors are ValueErrors
        raise GatewayError(400, f"bad multipart boundary: {exc}") from None
    sink: UploadSink | None = None
    number = 0
    async for chunk in request.stream():
        try:
            parser.write(chunk)
        except ValueError as exc:
            raise GatewayError(400, f"malformed multipart body: {exc}") from None
        actions, collector.actions = collector.actions, []
        for action, value in actions:
            if action == "begin":
                number += 1
                name = _file_name(value, related, number)
                sink = None if name is None else await area.add(name)
            elif action == "data" and sink is not None:
                await sink.write(value)
            elif action == "end" and sink is not None:
                await sink.close()
                sink = None
    parser.finalize()
    if not collector.ended:
        raise GatewayError(400, "the multipart body ends before its closing boundary")


async def _receive_uploads(request: Request, area: UploadArea) -> None:
    """Spool the request's files into ``area``, by media type (else 415)."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type == b"application/dicom":
        sink = await area.add("body")
        async for chunk in request.stream():
            await sink.write(chunk)
        await sink.close()
    elif content_type in (b"multipart/form-data", b"multipart/related"):
        boundary = options.get(b"boundary")
        if not boundary:
            raise GatewayError(400, "multipart body without a boundary parameter")
        related = content_type == b"multipart/related"
        await _receive_multipart(request, boundary, related, area)
    else:
        raise GatewayError(
            415,
            f"unsupported media type {content_type.decode('latin-1')!r}",
            accepted=["multipart/form-data", "multipart/related", "application/dicom"],
        )


# ---------------------------------------------------------------------- the app


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app for ``settings`` (default: from the environment)."""
    gateway = Gateway(settings or parse_settings([]))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with gateway.running():
            yield

    app = FastAPI(title="DICOM gateway (aionetdicom)", lifespan=lifespan)

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = gateway.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/echo")
    async def echo() -> dict[str, Any]:
        return await gateway.echo()

    @app.get("/studies")
    async def studies(request: Request) -> JSONResponse:
        matches = await gateway.find_studies(request.query_params.multi_items())
        return JSONResponse(matches, media_type=DICOM_JSON)

    @app.get("/studies/{study_uid}/series")
    async def series(study_uid: str, request: Request) -> JSONResponse:
        matches = await gateway.find_series(study_uid, request.query_params.multi_items())
        return JSONResponse(matches, media_type=DICOM_JSON)

    @app.post("/studies/{study_uid}/retrieve")
    async def retrieve(study_uid: str) -> dict[str, Any]:
        return await gateway.retrieve(study_uid)

    @app.post("/studies/{study_uid}/move")
    async def move(study_uid: str, destination: str | None = None) -> dict[str, Any]:
        async with aclosing(gateway.move(study_uid, destination)) as events:
            async for event, data in events:
                if event == "complete":
                    return data
        raise GatewayError(502, "the C-MOVE ended without a final response")

    @app.get("/studies/{study_uid}/move/events")
    async def move_events(
        study_uid: str, request: Request, destination: str | None = None
    ) -> Response:
        if "last-event-id" in request.headers:
            return Response(status_code=204)  # an EventSource reconnecting: do not move again
        events = gateway.move(study_uid, destination)
        try:  # the first response decides the HTTP status (404, 400, 502, 504 ...)
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return EventStream(first, events)

    @app.post("/instances")
    async def instances(request: Request) -> JSONResponse:
        async with gateway.upload_area() as area:
            await _receive_uploads(request, area)
            status_code, body = await gateway.store_uploads(area.files)
        return JSONResponse(body, status_code=status_code)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Parse settings from the command line and the environment; serve with uvicorn."""
    description = __doc__.splitlines()[0] if __doc__ else None
    settings = parse_settings(sys.argv[1:] if argv is None else argv, description=description)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port)


if __name__ == "__main__":
    main()
