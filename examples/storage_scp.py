"""A Storage SCP that files every received instance by study, streamed to disk.

Accepts C-STORE for every storage SOP class pydicom knows (compressed transfer syntaxes
too, so instances are kept as sent) and C-ECHO. Each instance is written while it
arrives (bounded memory whatever its size) to
``<output>/<Study Instance UID>/<SOP Instance UID>.dcm`` through a temporary file that
is fsynced and renamed into place before Success is answered; instances without a
valid Study Instance UID go to ``<output>/unknown-study/``. SIGINT or SIGTERM stops it
gracefully: no new associations, running ones get ``--grace`` seconds to finish::

    python examples/storage_scp.py 11112 --output ./incoming
    python examples/storage_scp.py 11112 -o /data -aet ARCHIVE --window 8 --bind 0.0.0.0

Exit status: 0 after a signal, 1 when it cannot listen or write, 2 for bad options.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

import _common
import anyio
from anyio.abc import TaskStatus
from pydicom.uid import UID

from aionetdicom import AE, EchoRequest, StoreRequest, sop_classes, tls
from aionetdicom.datasets import DatasetError

log = logging.getLogger("storage_scp")

UNKNOWN_STUDY = "unknown-study"


def build_parser() -> argparse.ArgumentParser:
    """The command line: port, output folder, AE title, window, grace, TLS."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=_common.port_number, help="TCP port to listen on")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="folder to store instances in"
    )
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument(
        "-aet", "--ae-title", type=_common.ae_title, default="STORE_SCP", help="our AE title"
    )
    parser.add_argument(
        "--window",
        type=_common.positive_int,
        default=1,
        metavar="N",
        help="C-STOREs of one association we accept to serve at once (default: 1)",
    )
    parser.add_argument(
        "--grace",
        type=_common.seconds,
        default=5.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, time running associations get to finish (default: 5)",
    )
    tls = parser.add_argument_group("TLS (PS3.15 BCP 195 profile)")
    tls.add_argument("--tls-cert", metavar="PEM", help="listen with TLS: our certificate")
    tls.add_argument("--tls-key", metavar="PEM", help="our private key (default: in the cert)")
    tls.add_argument("--tls-ca", metavar="PEM", help="require client certificates from this CA")
    _common.add_general_options(parser)
    return parser


def study_folder(output: Path, study_uid: str) -> Path:
    """``output/<study>``; an instance without a usable Study Instance UID goes to
    ``unknown-study`` (the UID names a folder, so it must be a valid UID)."""
    if study_uid and UID(study_uid).is_valid:
        return output / study_uid
    return output / UNKNOWN_STUDY


def make_ae(args: argparse.Namespace, output: Path) -> tuple[AE, list[int]]:
    """The SCP storing under ``output``, and a one-item list counting what it stored."""
    ae = AE(args.ae_title, maximum_operations_performed=args.window)
    ae.add_storage_contexts(sop_classes.STORAGE_SOP_CLASSES, _common.STORAGE_TRANSFER_SYNTAXES)
    stored = [0]

    @ae.on_echo
    async def on_echo(request: EchoRequest) -> int:
        log.info("C-ECHO from %s", request.assoc.peer_ae_title)
        return 0x0000

    @ae.on_store(streaming=True)
    async def on_store(request: StoreRequest) -> int:
        # peek() parses the attributes before Pixel Data while the rest still arrives.
        try:
            head = await request.peek()
        except DatasetError as exc:
            log.warning("cannot parse %s: %s", request.sop_instance_uid, exc)
            return 0xC000  # Error: cannot understand
        folder = study_folder(output, str(head.get("StudyInstanceUID", "") or ""))
        # Temporary file, fsync, rename; 0x0117 for a UID unfit as a file name, 0xA900
        # when the data set's UIDs are not the command's, 0xA700 when the disk is full.
        path = await request.save_to(folder)
        stored[0] += 1
        log.info("stored %s from %s", path, request.assoc.peer_ae_title)
        return 0x0000

    return ae, stored


async def stop_on_signal(
    stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Set ``stop`` on SIGINT or SIGTERM."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            log.warning("%s: shutting down", signal.Signals(signum).name)
            stop.set()
            return


def server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context, or None."""
    if args.tls_cert is None:
        if args.tls_key or args.tls_ca:
            raise _common.ExampleError("--tls-key and --tls-ca need --tls-cert")
        return None
    try:
        return tls.server_context(args.tls_cert, args.tls_key, ca=args.tls_ca)
    except OSError as exc:
        raise _common.ExampleError(f"cannot load the TLS certificate or key: {exc}") from None


async def serve(args: argparse.Namespace) -> int:
    """Listen until a signal; return the exit status."""
    output: Path = args.output
    try:
        await anyio.Path(output).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _common.ExampleError(f"cannot create {output}: {exc.strerror}") from None
    output = Path(await anyio.Path(output).resolve())
    if not await anyio.to_thread.run_sync(os.access, output, os.W_OK):
        raise _common.ExampleError(f"{output} is not writable")
    ae, stored = make_ae(args, output)
    ssl_context = server_tls(args)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        # Signals are caught before listening: a SIGTERM at any time is graceful.
        await tg.start(stop_on_signal, stop)
        async with AsyncExitStack() as stack:
            try:
                server = await stack.enter_async_context(
                    ae.serve(
                        args.bind, args.port, shutdown_grace=args.grace, ssl_context=ssl_context
                    )
                )
            except OSError as exc:
                raise _common.ExampleError(
                    f"cannot listen on {args.bind}:{args.port}: {exc}"
                ) from None
            host, port = server.addresses[0]
            secure = " (TLS)" if ssl_context is not None else ""
            print(
                f"storage_scp listening on {host}:{port}{secure} as {ae.ae_title}, "
                f"storing in {output}",
                flush=True,
            )
            await stop.wait()
            await server.aclose()  # no new associations; running ones get --grace s
        tg.cancel_scope.cancel()
    print(f"storage_scp stopped after storing {stored[0]} instance(s)", flush=True)
    return _common.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), serve, return the exit status."""
    args = build_parser().parse_args(argv)
    _common.setup_logging(max(args.verbose, 1))
    return _common.run(lambda: serve(args), backend=args.backend, program="storage_scp")


if __name__ == "__main__":
    sys.exit(main())
