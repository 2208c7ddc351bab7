"""storescu: send DICOM files to a peer with C-STORE (like DCMTK's storescu).

Every file goes over one association. A file whose own transfer syntax the peer accepted
is sent as it is, without decoding; uncompressed files are converted when only another
uncompressed syntax was accepted. By default each SOP class is proposed with the files'
own transfer syntaxes plus Explicit and Implicit VR Little Endian.

Prints ``N sent, N failed`` on stdout at the end. Exit status 0 when every file was
stored (Success or Warning), 1 when any failed or the association failed, 2 for bad
arguments, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

from aionetdicom import sop_classes
from aionetdicom.acse.contexts import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LOSSLESS_SV1,
    RLE_LOSSLESS,
    is_valid_uid,
)
from aionetdicom.ae import AE
from aionetdicom.apps import common
from aionetdicom.apps.progress import Progress
from aionetdicom.association import Association
from aionetdicom.datasets import DatasetError, FileMeta, read_file_meta
from aionetdicom.dimse.command_set import Priority
from aionetdicom.dimse.packing import PDV_OVERHEAD
from aionetdicom.errors import DicomNetworkError, NegotiationError
from aionetdicom.services.storage import plan_contexts

DESCRIPTION = "storescu: DICOM storage (C-STORE) SCU"

#: Show the progress bar (on a terminal) when more than this many files go.
PROGRESS_THRESHOLD = 10

_UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
_PRIORITIES = {"low": Priority.LOW, "medium": Priority.MEDIUM, "high": Priority.HIGH}


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid transfer syntax UID")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The storescu command line: DCMTK's options (``+sd``, ``+r``, ``-xi`` ...)."""
    parser = common.make_parser("storescu", DESCRIPTION, plus_options=True)
    common.add_general_options(parser)
    network = common.add_scu_network_options(parser, calling_aet="STORESCU")
    parser.add_argument(
        "files", nargs="+", metavar="dcmfile-in", help="DICOM file or directory to be sent"
    )
    inputs = parser.add_argument_group("input files")
    inputs.add_argument(
        "+sd",
        "--scan-directories",
        "--scan",
        dest="scan",
        action="store_true",
        help="scan directories for DICOM files (others are skipped with a warning)",
    )
    recurse = inputs.add_mutually_exclusive_group()
    recurse.add_argument(
        "+r", "--recurse", dest="recurse", action="store_true", help="recurse within directories"
    )
    recurse.add_argument(
        "-r",
        "--no-recurse",
        dest="recurse",
        action="store_false",
        help="do not recurse within directories (default)",
    )
    network.add_argument(
        "--priority",
        choices=tuple(_PRIORITIES),
        default="medium",
        help="C-STORE priority (default: medium)",
    )
    network.add_argument(
        "--repeat",
        type=common.positive_int,
        default=1,
        metavar="N",
        help="send the files N times (default: 1)",
    )
    progress = network.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help=f"always show a progress bar (default: on a terminal, above {PROGRESS_THRESHOLD} "
        "files)",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show a progress bar"
    )
    common.add_propose_ts_options(parser)
    more = parser.add_argument_group("more proposed transfer syntaxes")
    flags: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
        ("-xs", "--propose-lossless", (JPEG_LOSSLESS_SV1, *_UNCOMPRESSED),
         "propose JPEG lossless (SV1) and all uncompressed TS"),
        ("-xy", "--propose-jpeg8", (JPEG_BASELINE_8BIT, *_UNCOMPRESSED),
         "propose JPEG baseline (8 bit) and all uncompressed TS"),
        ("-xx", "--propose-jpeg12", (JPEG_EXTENDED_12BIT, *_UNCOMPRESSED),
         "propose JPEG extended (12 bit) and all uncompressed TS"),
        ("-xr", "--propose-rle", (RLE_LOSSLESS, *_UNCOMPRESSED),
         "propose RLE lossless and all uncompressed TS"),
    )  # fmt: skip
    for short, long, syntaxes, text in flags:
        more.add_argument(
            short, long, dest="transfer_syntaxes", action="store_const", const=syntaxes, help=text
        )
    more.add_argument(
        "-pts",
        "--propose-ts",
        dest="propose_ts",
        action="append",
        type=_uid,
        metavar="UID",
        help="also propose transfer syntax UID (repeat for several)",
    )
    # No flag: propose each file's own syntax plus Explicit and Implicit VR LE.
    parser.set_defaults(transfer_syntaxes=None)
    return parser


def collect_files(
    inputs: Sequence[str], *, scan: bool, recurse: bool, log: logging.Logger
) -> tuple[list[tuple[Path, FileMeta]], int]:
    """The DICOM files to send with their meta, and how many named files were unusable.

    Directories need ``scan``; files found by scanning that are not DICOM are skipped
    with a warning, files named on the command line that are not DICOM count as failed.
    """
    found: list[tuple[Path, FileMeta]] = []
    failed = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            if not scan:
                raise common.AppError(
                    f"{path} is a directory: scan it with +sd (and +r to recurse)"
                )
            walker = path.rglob("*") if recurse else path.iterdir()
            for candidate in sorted(p for p in walker if p.is_file()):
                try:
                    found.append((candidate, read_file_meta(candidate)))
                except (DatasetError, OSError) as exc:
                    log.warning("skipping %s: not a DICOM file (%s)", candidate, exc)
            continue
        try:
            found.append((path, read_file_meta(path)))
        except (DatasetError, OSError) as exc:
            log.error("cannot send %s: %s", path, exc)
            failed += 1
    return found, failed


def proposed_syntaxes(args: argparse.Namespace) -> tuple[list[str], bool]:
    """The transfer syntaxes to propose besides the files' own, and whether to add those."""
    chosen = args.transfer_syntaxes
    extra = list(args.propose_ts or ())
    if chosen is None and not extra:
        return [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN], True
    return list(dict.fromkeys([*(chosen or ()), *extra])), False


async def send(args: argparse.Namespace, log: logging.Logger) -> int:
    """Collect the files, associate, C-STORE each, release; print the summary."""
    files, failed = await anyio.to_thread.run_sync(
        lambda: collect_files(args.files, scan=args.scan, recurse=args.recurse, log=log)
    )
    sent = 0
    if not files:
        if not failed:
            raise common.AppError("no DICOM files to send")
        print(f"{sent} sent, {failed} failed")
        return 1
    syntaxes, own = proposed_syntaxes(args)
    by_class: dict[str, list[str]] = {}
    for _, meta in files:
        known = by_class.setdefault(meta.sop_class_uid, [])
        if own and meta.transfer_syntax not in known:
            known.append(meta.transfer_syntax)
    try:
        contexts = plan_contexts(by_class, syntaxes)
    except ValueError as exc:
        raise common.AppError(str(exc)) from None
    priority = _PRIORITIES[args.priority]
    total = len(files) * args.repeat
    show = args.progress
    if show is None:
        show = total > PROGRESS_THRESHOLD and args.log_level > logging.INFO and sys.stderr.isatty()
    ae = AE(args.calling_aet, **common.timeout_kwargs(args))
    log.info("Requesting Association")
    log.debug(
        "Proposing %d presentation context(s) for %d SOP class(es)", len(contexts), len(by_class)
    )
    attempted = 0
    try:
        async with ae.associate(
            args.peer,
            args.port,
            called_ae_title=args.called_aet,
            ssl_context=common.tls_context(args, server=False),
            contexts=contexts,
        ) as assoc:
            log.info("Association Accepted (Max Send PDV: %d)", assoc.send_max_pdu - PDV_OVERHEAD)
            log.debug("%s", common.describe_contexts(assoc.contexts))
            with Progress(total, enabled=bool(show)) as progress:
                for _ in range(args.repeat):
                    for path, meta in files:
                        ok = await _store_one(assoc, path, meta, priority, log)
                        attempted += 1
                        sent += ok
                        failed += not ok
                        progress.advance(failed=not ok)
            log.info("Releasing Association")
    except (DicomNetworkError, OSError) as exc:
        described = common.describe_error(exc)
        log.error("%s", described[0] if described else exc)
        failed += total - attempted  # what the association took down with it
        print(f"{sent} sent, {failed} failed")
        return 1
    print(f"{sent} sent, {failed} failed")
    return 1 if failed else 0


async def _store_one(
    assoc: Association, path: Path, meta: FileMeta, priority: int, log: logging.Logger
) -> bool:
    """C-STORE one file; log the outcome; True when the peer stored it."""
    log.info("Sending %s (%s)", path, sop_classes.sop_class_name(meta.sop_class_uid))
    try:
        status = await assoc.store(path, priority=priority)
    except NegotiationError as exc:
        log.error("cannot send %s: %s", path, exc)
        return False
    except DicomNetworkError:
        raise
    except (DatasetError, OSError, ValueError) as exc:
        log.error("cannot send %s: %s", path, exc)
        return False
    if status.is_success:
        log.info("Received Store Response (Success)")
        return True
    if status.is_warning:
        log.warning("%s: stored with warning 0x%04X: %s", path, int(status), status.description)
        return True
    log.error("%s: store failed 0x%04X: %s", path, int(status), status.description)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run storescu with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    log = common.setup_logging(args, "storescu")
    return common.run_app(lambda: send(args, log), args.backend, log)


if __name__ == "__main__":
    raise SystemExit(main())
