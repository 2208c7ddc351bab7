"""Send DICOM files to a peer with C-STORE, several at once when the peer allows it.

Files and folders (searched recursively; files that are not DICOM Part 10 are skipped
with a warning) all go over one association. The script proposes an asynchronous
operations window of ``--window`` outstanding operations: when the peer grants more
than one, that many C-STOREs are in flight at once (responses are matched by Message
ID); a peer that grants none (DCMTK, most PACS) gets them one after the other. Each
file is sent as it is on disk when the peer accepted its transfer syntax::

    python examples/store.py 127.0.0.1 11112 -aec STORE_SCP ./study/ extra.dcm
    python examples/store.py pacs.example 104 -aec PACS --window 16 /data/incoming

One line per file on stdout (``stored``/``FAILED``), a summary at the end. Exit status:
0 when every file was stored (Success or Warning), 1 when any failed or the
association failed, 2 for bad options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _common
import anyio

from aionetdicom import AE, Association, DicomNetworkError
from aionetdicom.acse.acceptor import effective_window
from aionetdicom.datasets import DatasetError, FileMeta, read_file_meta
from aionetdicom.errors import NegotiationError
from aionetdicom.services.storage import plan_contexts

log = logging.getLogger("store")


@dataclass
class Tally:
    """What happened to the files so far."""

    stored: int = 0
    failed: int = 0
    failed_paths: list[Path] = field(default_factory=list)


def build_parser() -> argparse.ArgumentParser:
    """The command line: peer, AE titles, TLS, ``--window`` and the paths to send."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_peer_options(parser, calling="STORE_SCU")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="file or folder")
    parser.add_argument(
        "--window",
        type=_common.positive_int,
        default=8,
        metavar="N",
        help="C-STOREs in flight at once if the peer agrees (default: 8; 1: never propose)",
    )
    _common.add_general_options(parser)
    return parser


def find_files(paths: Sequence[Path]) -> list[tuple[Path, FileMeta]]:
    """Every DICOM file named or inside a named folder, with its File Meta (blocking).

    A file named on the command line that is not DICOM is an error; one found in a
    folder is skipped with a warning (folders hold DICOMDIRs, READMEs, ...).
    """
    found: list[tuple[Path, FileMeta]] = []
    for path in paths:
        if path.is_dir():
            for candidate in sorted(p for p in path.rglob("*") if p.is_file()):
                try:
                    found.append((candidate, read_file_meta(candidate)))
                except (DatasetError, OSError) as exc:
                    log.warning("skipping %s: %s", candidate, exc)
        elif path.exists():
            try:
                found.append((path, read_file_meta(path)))
            except DatasetError as exc:
                raise _common.ExampleError(f"{path}: not a DICOM Part 10 file ({exc})") from None
        else:
            raise _common.ExampleError(f"{path}: no such file or folder")
    return found


def granted_window(assoc: Association) -> int:
    """How many of our operations the peer lets us have outstanding (0 = no limit)."""
    if assoc.request is None or assoc.response is None:
        return 1
    invoked, _ = effective_window(
        assoc.request.user_information.asynchronous_operations_window,
        assoc.response.user_information.asynchronous_operations_window,
        requestor=True,
    )
    return invoked


async def store_one(assoc: Association, path: Path, tally: Tally) -> None:
    """C-STORE one file and record the outcome; association-level errors propagate."""
    try:
        status = await assoc.store(path)
    except NegotiationError as exc:  # the peer accepted no context this file fits
        print(f"FAILED {path}: {exc}")
        tally.failed += 1
        tally.failed_paths.append(path)
        return
    except (DatasetError, OSError) as exc:
        if isinstance(exc, DicomNetworkError):
            raise
        print(f"FAILED {path}: cannot read it: {exc}")
        tally.failed += 1
        tally.failed_paths.append(path)
        return
    if status.is_success or status.is_warning:
        tally.stored += 1
        note = "" if status.is_success else f" with warning: {status.description}"
        print(f"stored {path} (0x{int(status):04X}){note}")
    else:
        tally.failed += 1
        tally.failed_paths.append(path)
        print(f"FAILED {path}: 0x{int(status):04X} {status.description}")


async def store_all(assoc: Association, paths: list[Path], workers: int, tally: Tally) -> None:
    """Send ``paths`` with up to ``workers`` C-STOREs in flight (1: one after the other)."""
    if workers <= 1:
        for path in paths:
            await store_one(assoc, path, tally)
        return
    queue: Iterator[Path] = iter(paths)  # shared: each worker takes the next file

    async def worker() -> None:
        for path in queue:
            await store_one(assoc, path, tally)

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)


async def send(args: argparse.Namespace) -> int:
    """Find the files, associate, store them all, release; return the exit status."""
    files = await anyio.to_thread.run_sync(find_files, args.paths)
    if not files:
        raise _common.ExampleError("no DICOM files to send")
    syntaxes: dict[str, list[str]] = {}
    for _, meta in files:
        known = syntaxes.setdefault(meta.sop_class_uid, [])
        if meta.transfer_syntax not in known:
            known.append(meta.transfer_syntax)
    try:
        contexts = plan_contexts(syntaxes)  # each file's own syntax, plus conversions
    except ValueError as exc:
        raise _common.ExampleError(str(exc)) from None
    ae = AE(
        args.calling_aet,
        connect_timeout=args.timeout,
        acse_timeout=args.timeout,
        dimse_timeout=args.timeout,
    )
    tally = Tally()
    paths = [path for path, _ in files]
    try:
        async with ae.associate(
            args.host,
            args.port,
            called_ae_title=args.called_aet,
            contexts=contexts,
            operations_window=(args.window, 1) if args.window > 1 else None,
            ssl_context=_common.client_tls(args),
        ) as assoc:
            window = granted_window(assoc)
            workers = min(args.window, window or args.window, len(paths))
            how = f"{workers} at once" if workers > 1 else "one at a time"
            print(f"sending {len(paths)} file(s) to {args.called_aet}: {how} (window {window})")
            await store_all(assoc, paths, workers, tally)
    except BaseException as exc:
        # The association failed under us: what was not answered is not stored.
        if not any(isinstance(leaf, DicomNetworkError | OSError) for leaf in _common.leaves(exc)):
            raise
        lost = len(paths) - tally.stored - tally.failed
        print(f"{tally.stored} stored, {tally.failed + lost} failed (association failed)")
        raise
    print(f"{tally.stored} stored, {tally.failed} failed")
    return _common.EXIT_FAILED if tally.failed else _common.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run, return the exit status."""
    args = build_parser().parse_args(argv)
    _common.setup_logging(args.verbose)
    return _common.run(lambda: send(args), backend=args.backend, program="store")


if __name__ == "__main__":
    sys.exit(main())
