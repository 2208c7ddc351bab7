"""A Verification + Storage SCP that exports Prometheus metrics over HTTP.

The AE reports to an :class:`aionetdicom.Metrics` observer (associations open and
ended, bytes in and out, operations by service, role and status, and their latency);
``GET /metrics`` on ``--metrics-port`` answers its Prometheus text exposition, ready to
scrape. Received instances are acknowledged and dropped (this example is about the
numbers)::

    python examples/metrics.py 11112 --metrics-port 9100
    curl http://127.0.0.1:9100/metrics

To feed OpenTelemetry (or prometheus_client) instead, write an observer that updates
your own instruments; it is called on the event loop, so keep it quick::

    class OtelObserver(aionetdicom.Observer):
        def __init__(self, meter):
            self.ops = meter.create_counter("dicom.operations")
            self.latency = meter.create_histogram("dicom.operation.duration", unit="s")

        def operation_finished(self, assoc, op):
            attributes = {"service": op.service, "role": op.role, "status": op.status}
            self.ops.add(1, attributes)
            self.latency.record(op.duration, attributes)

    ae.add_observer(OtelObserver(meter))

Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot listen, 2 for bad options.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

import _common
import anyio
from anyio.abc import SocketStream

from aionetdicom import AE, Metrics, StoreRequest, sop_classes

log = logging.getLogger("metrics")

#: Longest HTTP request head we read before answering.
MAX_REQUEST_HEAD = 8192


def build_parser() -> argparse.ArgumentParser:
    """The command line: DICOM port, metrics port, AE title, bind address."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=_common.port_number, help="DICOM port to listen on")
    parser.add_argument(
        "--metrics-port", type=_common.port_number, default=9100, help="HTTP port for /metrics"
    )
    parser.add_argument("--bind", default="127.0.0.1", help="address of both listeners")
    parser.add_argument(
        "-aet", "--ae-title", type=_common.ae_title, default="METRICS_SCP", help="our AE title"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every association")
    return parser


def make_ae(title: str, metrics: Metrics) -> AE:
    """Verification and every storage SOP class; stores are acknowledged and dropped."""
    ae = AE(title)
    ae.add_storage_contexts(sop_classes.STORAGE_SOP_CLASSES)
    ae.add_observer(metrics)

    @ae.on_store
    async def on_store(request: StoreRequest) -> int:
        return 0x0000

    return ae


async def answer_http(stream: SocketStream, metrics: Metrics) -> None:
    """One HTTP/1.0-style exchange: /metrics gets the exposition, anything else 404."""
    async with stream:
        head = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST_HEAD:
                try:
                    head += await stream.receive(4096)
                except anyio.EndOfStream:
                    break
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
            body = metrics.prometheus_text().encode()
            status, kind = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
        else:
            body, status, kind = b"not found\n", "404 Not Found", "text/plain"
        header = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stream.send(header.encode() + body)


async def serve(args: argparse.Namespace) -> None:
    """The DICOM SCP and the metrics endpoint, until SIGINT or SIGTERM."""
    metrics = Metrics()
    ae = make_ae(args.ae_title, metrics)
    listener = await anyio.create_tcp_listener(local_host=args.bind, local_port=args.metrics_port)
    async with anyio.create_task_group() as tg, ae.serve(args.bind, args.port) as server:
        tg.start_soon(listener.serve, lambda stream: answer_http(stream, metrics))
        print(
            f"DICOM on {args.bind}:{server.port} as {args.ae_title}; "
            f"metrics on http://{args.bind}:{args.metrics_port}/metrics",
            flush=True,
        )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run until a signal; the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        anyio.run(serve, args)
    except OSError as exc:
        print(f"metrics: error: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
