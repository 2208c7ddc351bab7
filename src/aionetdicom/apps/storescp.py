"""storescp: a Storage SCP (plus Verification) saving what it receives, like DCMTK's storescp.

Each instance received with C-STORE goes to disk while it arrives (memory stays
bounded whatever its size) and is renamed, once complete and fsync'd, to
``<output directory>/<SOP Instance UID>.dcm`` (with ``--sort-by-study``, in a
subfolder named after its Study Instance UID), the data set bytes exactly as received.
A SOP Instance UID or Study Instance UID that cannot name a file (not a valid UID) is
refused with a failure status and nothing is written. ``--ignore`` receives and answers
Success without writing anything.

By default every Storage SOP class is accepted in the uncompressed transfer syntaxes
(as DCMTK does); ``+xa`` also accepts the compressed ones (JPEG, JPEG-LS, JPEG 2000,
RLE, Deflated, MPEG, HEVC), preferring them so that compressed instances are stored as
sent. ``--accept-any-sop-class`` accepts any abstract syntax
(private SOP classes too) with the library's default transfer syntaxes.

Runs until SIGINT or SIGTERM (or ``--max-runtime``), then stops accepting and lets
running associations finish before it exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from aionetdicom import sop_classes
from aionetdicom.acse.contexts import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    PresentationContext,
    is_valid_uid,
)
from aionetdicom.ae import AE
from aionetdicom.apps import common
from aionetdicom.apps.serving import add_server_options, serve_until_stopped
from aionetdicom.datasets import DatasetError
from aionetdicom.services.storage import DEFAULT_STORE_STATUS, StoreRequest
from aionetdicom.services.verification import EchoRequest

DESCRIPTION = "storescp: DICOM storage (C-STORE) SCP"

#: Success (PS3.4 B.2.3).
SUCCESS = 0x0000


def build_parser() -> argparse.ArgumentParser:
    """The storescp command line: DCMTK's options (``-od``, ``+xa``, ``--ignore`` ...)."""
    parser = common.make_parser("storescp", DESCRIPTION, plus_options=True)
    common.add_general_options(parser)
    network = add_server_options(parser, ae_title_default="STORESCP")
    network.add_argument(
        "-pm",
        "--promiscuous",
        "--accept-any-sop-class",
        dest="accept_any_sop_class",
        action="store_true",
        help="accept any abstract syntax, unknown SOP classes too "
        "(those get the default transfer syntaxes)",
    )
    common.add_prefer_ts_options(parser)
    output = parser.add_argument_group("output options")
    output.add_argument(
        "-od",
        "--output-directory",
        dest="output_directory",
        type=Path,
        default=Path("."),
        metavar="DIRECTORY",
        help="write received objects to existing DIRECTORY (default: .)",
    )
    output.add_argument(
        "--sort-by-study",
        action="store_true",
        help="store each instance in a subfolder named after its Study Instance UID",
    )
    output.add_argument(
        "--ignore",
        action="store_true",
        help="ignore store data: receive and answer Success, but do not store",
    )
    return parser


def check_output_directory(folder: Path) -> Path:
    """``folder`` made absolute, or an AppError if it is not a writable directory."""
    if not folder.exists():
        raise common.AppError(f"output directory {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise common.AppError(f"output directory {str(folder)!r} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise common.AppError(f"output directory {str(folder)!r} is not writable")
    return folder.resolve()


def storage_transfer_syntaxes(syntaxes: Sequence[str]) -> tuple[str, ...]:
    """Our order of preference for the storage contexts, given the option's syntaxes.

    With ``+xa`` the compressed syntaxes come first, as in DCMTK's storescp: a peer that
    offers an instance's own compressed syntax next to uncompressed ones then sends it
    as it is (nothing decompressed, lossy data not re-encoded), and it is stored that
    way. The uncompressed syntaxes follow, and Deflated (only a transport encoding) last.
    """
    chosen = tuple(syntaxes)
    if set(chosen) != set(common.ALL_TRANSFER_SYNTAXES):
        return chosen
    plain = {
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
    compressed = tuple(ts for ts in chosen if ts not in plain)
    uncompressed = tuple(
        ts for ts in chosen if ts in plain and ts != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    )
    return (*compressed, *uncompressed, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)


async def _study_instance_uid(request: StoreRequest) -> str:
    """The instance's Study Instance UID, as text ("" if missing).

    Parses only the start of the data set as it arrives (up to Pixel Data).
    """
    value = (await request.peek()).get("StudyInstanceUID")
    return "" if value is None else str(value)


def make_ae(args: argparse.Namespace, log: logging.Logger, output: Path | None = None) -> AE:
    """The Storage and Verification SCP the options describe, saving into ``output``.

    ``output`` defaults to ``args.output_directory``; it is not used with ``--ignore``.
    """
    folder = args.output_directory if output is None else output
    syntaxes = tuple(args.transfer_syntaxes)
    ae = AE(
        args.ae_title,
        maximum_associations=args.max_associations,
        require_called_ae_title=args.require_called_aet,
        allowed_calling_ae_titles=args.allowed_calling_aet,
        allowed_peer_addresses=args.allowed_peer,
        supported_contexts=[PresentationContext(VERIFICATION_SOP_CLASS, syntaxes)],
        accept_any_abstract_syntax=args.accept_any_sop_class,
        **common.timeout_kwargs(args),
    )
    ae.add_storage_contexts(sop_classes.STORAGE_SOP_CLASSES, storage_transfer_syntaxes(syntaxes))

    @ae.on_echo
    async def on_echo(request: EchoRequest) -> int:
        log.info(
            "Received Echo Request (MsgID %d) from %s",
            request.message_id,
            request.assoc.peer_ae_title,
        )
        return SUCCESS

    @ae.on_store(streaming=True)
    async def on_store(request: StoreRequest) -> int:
        name = sop_classes.sop_class_name(request.sop_class_uid)
        log.info(
            "Received %s %s from %s", name, request.sop_instance_uid, request.assoc.peer_ae_title
        )
        if args.ignore:
            return SUCCESS
        target = Path(folder)
        if args.sort_by_study:
            try:
                study = await _study_instance_uid(request)
            except DatasetError as exc:
                log.error("Cannot read the data set of %s: %s", request.sop_instance_uid, exc)
                return DEFAULT_STORE_STATUS
            if not is_valid_uid(study):
                log.error(
                    "Refusing %s: Study Instance UID %r is missing or not a valid UID",
                    request.sop_instance_uid,
                    study,
                )
                return DEFAULT_STORE_STATUS
            target = target / study
        # The data set goes to disk as it arrives. An invalid SOP Instance UID raises
        # InvalidSOPInstanceUID: the library answers 0x0117 and writes nothing; UIDs
        # that disagree with the command get 0xA900; a full disk gets 0xA700.
        path = await request.save_to(target)
        log.debug("Stored %s", path)
        return SUCCESS

    return ae


async def serve(args: argparse.Namespace, log: logging.Logger) -> int:
    """Listen until a signal or ``--max-runtime``; shut down gracefully; return 0."""
    output = None if args.ignore else check_output_directory(args.output_directory)
    ae = make_ae(args, log, output)
    storing = "not storing (--ignore)" if output is None else f"storing in {output}"
    if output is not None and args.sort_by_study:
        storing += " (one folder per study)"
    await serve_until_stopped(ae, args, log, "storescp", f", {storing}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run storescp with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    log = common.setup_logging(args, "storescp", library_verbose=True)
    return common.run_app(lambda: serve(args, log), args.backend, log)


if __name__ == "__main__":
    raise SystemExit(main())
