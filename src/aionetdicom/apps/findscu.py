"""findscu: query a DICOM peer with C-FIND (like DCMTK's findscu).

The query is built from ``-k`` keys and/or query files::

    findscu -S -k QueryRetrieveLevel=STUDY -k PatientName=DOE* -k StudyInstanceUID pacs 104
    findscu -W -k "ScheduledProcedureStepSequence[0].Modality=CT" -k PatientName ris 104

A key is ``PATH[=VALUE]``; a key without a value (or with an empty one) is a return key.
``PATH`` is a keyword or a tag, ``0010,0010``, ``(0010,0010)`` or ``00100010``, and reaches
into sequence items with ``[n]``: ``(0040,0100)[0].Modality``. Matches go to stdout as
dataset dumps; ``-X`` also writes each to ``rsp0001.dcm``, ``rsp0002.dcm`` ... in ``-od``.

Exit status 0 when every query ended with Success (or Cancel after ``--cancel``), 1 on
any failure, 2 for bad arguments, 130 on Ctrl-C. The query helpers here are shared by
getscu and movescu.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aionetdicom.acse.contexts import PresentationContext
from aionetdicom.ae import AE
from aionetdicom.apps import common
from aionetdicom.association import Association
from aionetdicom.dimse.packing import PDV_OVERHEAD
from aionetdicom.dimse.status import Status
from aionetdicom.errors import DicomNetworkError
from aionetdicom.services.query_retrieve import query_model

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

DESCRIPTION = "findscu: DICOM query (C-FIND) SCU"

# ---------------------------------------------------------------------- query keys

_PATH_PART = re.compile(
    r"""
    (?:
        \((?P<g1>[0-9A-Fa-f]{4}),(?P<e1>[0-9A-Fa-f]{4})\)   # (gggg,eeee)
      | (?P<g2>[0-9A-Fa-f]{4}),(?P<e2>[0-9A-Fa-f]{4})       # gggg,eeee
      | (?P<tag>[0-9A-Fa-f]{8})                             # ggggeeee
      | (?P<keyword>[A-Za-z][A-Za-z0-9]*)                   # keyword
    )
    (?:\[(?P<index>[0-9]+)\])?                              # [item]
    """,
    re.VERBOSE,
)
_INT_VRS = frozenset({"US", "UL", "SS", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_UNSETTABLE_VRS = frozenset({"AT", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_MAX_ITEM_INDEX = 1000


class QueryKeyError(ValueError):
    """A ``-k`` query key that cannot be understood."""


@dataclass(frozen=True)
class PathPart:
    """One step of a key path: a tag, and the sequence item to enter (None for the last)."""

    tag: int
    index: int | None


@dataclass(frozen=True)
class QueryKey:
    """A parsed ``-k`` key: the element path and its value (None: empty return key)."""

    path: tuple[PathPart, ...]
    value: str | None


def _tag_of(match: re.Match[str], text: str) -> int:
    from pydicom.datadict import tag_for_keyword

    if match["keyword"] is not None:
        tag = tag_for_keyword(match["keyword"])
        if tag is None:
            raise QueryKeyError(f"unknown attribute keyword {match['keyword']!r} in key {text!r}")
        return int(tag)
    if match["tag"] is not None:
        return int(match["tag"], 16)
    group = match["g1"] or match["g2"]
    element = match["e1"] or match["e2"]
    return int(group, 16) << 16 | int(element, 16)


def parse_key(text: str) -> QueryKey:
    """Parse ``PATH[=VALUE]`` (see the module doc); raise ValueError when malformed."""
    path_text, has_value, value = text.partition("=")
    path_text = path_text.strip()
    if not path_text:
        raise QueryKeyError(f"query key {text!r} names no attribute")
    parts: list[PathPart] = []
    for piece in path_text.split("."):
        match = _PATH_PART.fullmatch(piece.strip())
        if match is None:
            raise QueryKeyError(
                f"cannot read {piece!r} in query key {text!r} (use a keyword, gggg,eeee "
                "or (gggg,eeee), optionally followed by [n])"
            )
        index = None if match["index"] is None else int(match["index"])
        if index is not None and index > _MAX_ITEM_INDEX:
            raise QueryKeyError(f"item index {index} in query key {text!r} is too large")
        parts.append(PathPart(_tag_of(match, text), index))
    for part in parts[:-1]:
        if part.index is None:
            raise QueryKeyError(
                f"query key {text!r}: a sequence on the path needs an item index, e.g. [0]"
            )
    return QueryKey(tuple(parts), value if has_value and value != "" else None)


def _vr(tag: int, text: str) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        raise QueryKeyError(
            f"query key {text!r}: ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not in the "
            "data dictionary, so its VR is unknown"
        ) from None
    return vr.split(" or ")[0]


def _convert(vr: str, value: str | None, text: str) -> Any:
    if value is None:
        if vr == "SQ":
            return []
        return None if vr in _INT_VRS or vr in _FLOAT_VRS else ""
    if vr == "SQ":
        raise QueryKeyError(f"query key {text!r}: a sequence takes no value; address its items")
    if vr in _UNSETTABLE_VRS:
        raise QueryKeyError(f"query key {text!r}: cannot give a value of VR {vr}")
    parts = value.split("\\")
    try:
        if vr in _INT_VRS:
            numbers: list[Any] = [int(part) for part in parts]
        elif vr in _FLOAT_VRS:
            numbers = [float(part) for part in parts]
        else:
            return value
    except ValueError:
        raise QueryKeyError(f"query key {text!r}: {value!r} is not a valid {vr} value") from None
    return numbers[0] if len(numbers) == 1 else numbers


def apply_key(dataset: Dataset, key: QueryKey, text: str = "") -> None:
    """Set ``key`` in ``dataset``, creating sequence items on the way; later keys win."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    text = text or repr(key)
    current = dataset
    for part in key.path[:-1]:
        vr = _vr(part.tag, text)
        if vr != "SQ":
            raise QueryKeyError(
                f"query key {text!r}: ({part.tag >> 16:04X},{part.tag & 0xFFFF:04X}) "
                "is not a sequence"
            )
        if part.tag not in current or current[part.tag].VR != "SQ":
            current.add_new(part.tag, "SQ", DicomSequence())
        items = current[part.tag].value
        assert part.index is not None
        while len(items) <= part.index:
            items.append(Dataset())
        current = items[part.index]
    last = key.path[-1]
    vr = _vr(last.tag, text)
    if last.index is not None:
        if vr != "SQ":
            raise QueryKeyError(f"query key {text!r}: only a sequence takes an item index")
        if last.tag not in current or current[last.tag].VR != "SQ":
            current.add_new(last.tag, "SQ", DicomSequence())
        items = current[last.tag].value
        while len(items) <= last.index:
            items.append(Dataset())
        if key.value is not None:
            raise QueryKeyError(f"query key {text!r}: a sequence item takes no value")
        return
    value = _convert(vr, key.value, text)
    if vr == "SQ":
        value = DicomSequence()
    current.add_new(last.tag, vr, value)


def build_query(keys: Sequence[str], base: Dataset | None = None) -> Dataset:
    """A query identifier: ``base`` (a copy of it) with every ``-k`` key applied in order."""
    from pydicom.dataset import Dataset

    dataset = Dataset() if base is None else _copy(base)
    for text in keys:
        apply_key(dataset, parse_key(text), text)
    return dataset


def _copy(dataset: Dataset) -> Dataset:
    import copy

    from pydicom.dataset import Dataset

    result = Dataset()
    for element in dataset:
        result.add(copy.deepcopy(element))
    return result


def read_query_file(path: Path) -> Dataset:
    """A query identifier from a DICOM file (file meta left out)."""
    from pydicom import dcmread

    try:
        dataset = dcmread(path, force=True)
    except OSError as exc:
        raise common.AppError(f"cannot read query file {path}: {exc}") from None
    except Exception as exc:
        raise common.AppError(f"query file {path} is not a DICOM file: {exc}") from None
    return _copy(dataset)


def queries(args: argparse.Namespace) -> list[Dataset]:
    """The identifiers to send: one per query file, or one from the keys alone."""
    try:
        if args.files:
            return [build_query(args.keys, read_query_file(path)) for path in args.files]
        if not args.keys:
            raise common.AppError("no query: give -k keys and/or a query file", code=2)
        return [build_query(args.keys)]
    except QueryKeyError as exc:
        raise common.AppError(str(exc), code=2) from None


# ---------------------------------------------------------------------- shared options


def add_query_options(
    parser: argparse.ArgumentParser, *, models: Sequence[str], default: str
) -> None:
    """Information model flags, ``-k`` keys and the optional query file(s)."""
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="dcmfile-in",
        help="DICOM query file(s); -k keys are applied on top of each",
    )
    group = parser.add_argument_group("query information model")
    exclusive = group.add_mutually_exclusive_group()
    flags = {
        "worklist": ("-W", "--worklist", "use modality worklist information model"),
        "patient": ("-P", "--patient", "use patient root information model"),
        "study": ("-S", "--study", "use study root information model"),
        "patient-study": ("-O", "--psonly", "use patient/study only information model"),
    }
    for name in models:
        short, long, text = flags[name]
        if name == default:
            text += " (default)"
        exclusive.add_argument(
            short, long, dest="model", action="store_const", const=name, help=text
        )
    group.set_defaults(model=default)
    keys = parser.add_argument_group("query keys")
    keys.add_argument(
        "-k",
        "--key",
        dest="keys",
        action="append",
        default=[],
        metavar="KEY",
        help='override or add a key, "PATH=VALUE" or "PATH" for a return key; PATH is a '
        "keyword, gggg,eeee or (gggg,eeee), with [n] for sequence items "
        '("(0040,0100)[0].Modality=CT")',
    )


def add_output_directory(parser: argparse.ArgumentParser, what: str) -> None:
    """``-od/--output-directory`` (default: the current directory)."""
    parser.add_argument_group("output").add_argument(
        "-od",
        "--output-directory",
        dest="output_directory",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help=f"write {what} to DIR (default: current directory)",
    )


def check_output_directory(path: Path) -> Path:
    """``path`` if it is a writable directory (created if missing), else AppError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise common.AppError(f"cannot create output directory {path}: {exc}") from None
    if not path.is_dir():
        raise common.AppError(f"output directory {path} is not a directory")
    return path


def connect_error(exc: OSError, args: argparse.Namespace) -> common.AppError:
    """An OSError while associating, as the AppError the apps report."""
    text = common.describe_os_error(exc)
    if f"{args.peer}:{args.port}" not in text:
        text = f"cannot connect to {args.peer}:{args.port}: {text}"
    return common.AppError(f"Association Request Failed: {text}")


def log_association(assoc: Association, log: logging.Logger) -> None:
    """The DCMTK-style lines after acceptance (contexts at -d)."""
    log.info("Association Accepted (Max Send PDV: %d)", assoc.send_max_pdu - PDV_OVERHEAD)
    log.debug("%s", common.describe_contexts(assoc.contexts))


def status_text(status: Status) -> str:
    """``Pending`` / ``Success`` / ``0xA801: Refused: move destination unknown``."""
    if status.is_pending or status.is_success or status.is_cancel:
        return status.category.value
    return f"0x{int(status):04X}: {status.description}"


def log_dataset(log: logging.Logger, dataset: Dataset | None) -> None:
    """A dataset dump at debug level."""
    if dataset is not None and log.isEnabledFor(logging.DEBUG):
        log.debug("%s", dataset)


# ---------------------------------------------------------------------- findscu


def build_parser() -> argparse.ArgumentParser:
    """The findscu command line."""
    parser = common.make_parser("findscu", DESCRIPTION)
    common.add_general_options(parser)
    common.add_scu_network_options(parser, calling_aet="FINDSCU", key_option=False)
    add_query_options(
        parser, models=("worklist", "patient", "study", "patient-study"), default="patient"
    )
    common.add_propose_ts_options(parser)
    other = parser.add_argument_group("processing options")
    other.add_argument(
        "--cancel",
        type=common.positive_int,
        metavar="N",
        help="send C-CANCEL after N responses with a match",
    )
    other.add_argument(
        "--repeat", type=common.positive_int, default=1, metavar="N", help="send each query N times"
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "-X",
        "--extract",
        action="store_true",
        help="write each response to rsp0001.dcm, rsp0002.dcm ... in the output directory",
    )
    output.add_argument(
        "--no-print",
        dest="print_matches",
        action="store_false",
        help="do not print the matches on stdout",
    )
    add_output_directory(parser, "extracted responses")
    return parser


def write_response(dataset: Dataset, folder: Path, number: int, model_uid: str) -> Path:
    """Write one response identifier as a Part 10 file ``rspNNNN.dcm``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(model_uid)
    meta.MediaStorageSOPInstanceUID = UID(str(dataset.get("SOPInstanceUID", "")) or generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    copy = _copy(dataset)
    copy.file_meta = meta
    path = folder / f"rsp{number:04d}.dcm"
    copy.save_as(path, enforce_file_format=True)
    return path


async def find(args: argparse.Namespace, log: logging.Logger) -> int:
    """Associate, send each query, print the matches, release; return the exit status."""
    identifiers = queries(args)
    model_uid = query_model(args.model, "find")
    folder = check_output_directory(args.output_directory) if args.extract else None
    ae = AE(args.calling_aet, **common.timeout_kwargs(args))
    contexts = [PresentationContext(model_uid, tuple(args.transfer_syntaxes))]
    failures = 0
    written = 0
    log.info("Requesting Association")
    try:
        async with ae.associate(
            args.peer,
            args.port,
            called_ae_title=args.called_aet,
            ssl_context=common.tls_context(args, server=False),
            contexts=contexts,
        ) as assoc:
            log_association(assoc, log)
            for identifier in identifiers * args.repeat:
                log.info("Sending Find Request")
                log_dataset(log, identifier)
                matches = 0
                final: Status | None = None
                async with assoc.find(identifier, model=model_uid) as responses:
                    async for response in responses:
                        status, match = response.status, response.identifier
                        if status.is_pending:
                            matches += 1
                            log.info("Received Find Response %d (%s)", matches, status_text(status))
                            if match is not None:
                                if args.print_matches:
                                    print(f"# Find Response {matches} ({status_text(status)})")
                                    print(match, end="\n\n", flush=True)
                                if folder is not None:
                                    written += 1
                                    path = write_response(match, folder, written, model_uid)
                                    log.info("Writing response dataset to file: %s", path)
                            if args.cancel is not None and matches == args.cancel:
                                log.info("Sending Cancel Request")
                                await responses.cancel()
                        else:
                            final = status
                if final is None or not (final.is_success or final.is_warning or final.is_cancel):
                    failures += 1
                    shown = "none" if final is None else status_text(final)
                    log.error("Find Failed, final status: %s", shown)
                else:
                    log.info(
                        "Received Final Find Response (%s), %d match(es)",
                        status_text(final),
                        matches,
                    )
            log.info("Releasing Association")
    except OSError as exc:
        if isinstance(exc, DicomNetworkError):
            raise
        raise connect_error(exc, args) from exc
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run findscu with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    log = common.setup_logging(args, "findscu")
    return common.run_app(lambda: find(args, log), args.backend, log)


if __name__ == "__main__":
    raise SystemExit(main())
