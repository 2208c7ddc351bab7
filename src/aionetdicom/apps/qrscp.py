"""qrscp: a Storage + Query/Retrieve SCP on an embedded index (SQLite, or PostgreSQL).

Instances stored with C-STORE go to disk while they arrive, into
``<storage>/<Study Instance UID>/<SOP Instance UID>.dcm`` (temporary file, fsync,
atomic rename), and are indexed only once the file is safely there. C-FIND answers
from the index (Patient Root, Study Root and Patient/Study Only models; matching per
PS3.4 C.2.2.2, streamed from a database cursor; C-CANCEL stops it); C-GET and C-MOVE
send the stored files as they are (converted only when the peer accepted no matching
transfer syntax). With ``--worklist DIR`` it also answers Modality Worklist C-FINDs
from the worklist files in DIR (``*.wl``, ``*.dcm``; sequence matching included).
Verification is always there.

A duplicate SOP Instance UID replaces the stored instance: the newest copy wins.

Settings come from flags or a TOML file (``--config``); flags win::

    ae_title = "QRSCP"
    port = 11112
    storage = "/var/lib/qrscp"
    database = "sqlite:////var/lib/qrscp/index.db"   # or postgresql://user@host/db
    allowed_calling_aes = ["MODALITY1", "VIEWER"]    # default: any
    allowed_peers = ["10.0.0.0/8", "127.0.0.1"]      # default: any address
    lenient_queries = false                          # true: every query relational
    worklist = "/var/lib/qrscp/worklist"             # Modality Worklist items

    [destinations.VIEWER]                            # C-MOVE destinations
    host = "10.0.0.7"
    port = 11112
    tls = true                                       # reach it over TLS (default false)

    [tls]                                            # our identity (PEM files)
    cert = "/etc/qrscp/qrscp.pem"
    key = "/etc/qrscp/qrscp.key"
    ca = ["/etc/qrscp/ca.pem"]                       # who we trust
    listen = true                                    # as --tls: serve over TLS
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio

from aionetdicom import sop_classes
from aionetdicom.acse.contexts import VERIFICATION_SOP_CLASS, PresentationContext, is_valid_uid
from aionetdicom.ae import AE
from aionetdicom.apps import common
from aionetdicom.apps.serving import add_server_options, serve_until_stopped
from aionetdicom.apps.storescp import check_output_directory, storage_transfer_syntaxes
from aionetdicom.datasets import DatasetError
from aionetdicom.services.qr_scp import (
    EncodedIdentifier,
    FindRequest,
    GetRequest,
    MoveRequest,
    StoredInstance,
    query_retrieve_contexts,
)
from aionetdicom.services.storage import DEFAULT_STORE_STATUS, StoreRequest
from aionetdicom.services.verification import EchoRequest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DESCRIPTION = "qrscp: DICOM storage and query/retrieve SCP on an embedded index"

#: The port qrscp listens on when neither the command line nor the config names one.
DEFAULT_PORT = 11112

SUCCESS = 0x0000
#: C-STORE failure "Out of Resources" (PS3.4 B.2.3): the instance could not be indexed.
OUT_OF_RESOURCES = 0xA700
#: C-FIND/C-GET/C-MOVE failure "Identifier does not match SOP Class" (PS3.4 C.4).
IDENTIFIER_DOES_NOT_MATCH = 0xA900

#: Request transfer syntaxes the index writes responses in directly (little endian).
_DIRECT_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})

#: The root level of each Q/R information model, by FIND/GET/MOVE SOP Class UID.
MODEL_ROOT: dict[str, str] = {
    **dict.fromkeys(
        (
            sop_classes.PATIENT_ROOT_FIND,
            sop_classes.PATIENT_ROOT_GET,
            sop_classes.PATIENT_ROOT_MOVE,
        ),
        "PATIENT",
    ),
    **dict.fromkeys(
        (sop_classes.STUDY_ROOT_FIND, sop_classes.STUDY_ROOT_GET, sop_classes.STUDY_ROOT_MOVE),
        "STUDY",
    ),
    **dict.fromkeys(
        (
            sop_classes.PATIENT_STUDY_ONLY_FIND,
            sop_classes.PATIENT_STUDY_ONLY_GET,
            sop_classes.PATIENT_STUDY_ONLY_MOVE,
        ),
        "PATIENT-STUDY",
    ),
}
_MODEL_LEVELS: dict[str, tuple[str, ...]] = {
    "PATIENT": ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    "STUDY": ("STUDY", "SERIES", "IMAGE"),
    "PATIENT-STUDY": ("PATIENT", "STUDY"),
}


def build_parser() -> argparse.ArgumentParser:
    """The qrscp command line."""
    parser = common.make_parser("qrscp", DESCRIPTION, plus_options=True)
    common.add_general_options(parser)
    add_server_options(parser, ae_title_default="QRSCP", port_default=DEFAULT_PORT)
    common.add_prefer_ts_options(parser, accept_all=True)
    archive = parser.add_argument_group("archive options")
    archive.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML settings (ae_title, port, storage, database, allowed_calling_aes, "
        "[destinations.TITLE] host/port); flags win",
    )
    archive.add_argument(
        "-od",
        "--storage",
        "--output-directory",
        dest="storage",
        type=Path,
        default=None,
        metavar="DIRECTORY",
        help="where instances are stored (default: ./qrscp-storage, created)",
    )
    archive.add_argument(
        "--database",
        default=None,
        metavar="URL",
        help="index database (default: sqlite:///<storage>/index.db; "
        "postgresql://user:password@host/db for PostgreSQL)",
    )
    archive.add_argument(
        "--worklist",
        type=Path,
        default=None,
        metavar="DIRECTORY",
        help="answer Modality Worklist C-FINDs from the *.wl and *.dcm files in DIRECTORY",
    )
    archive.add_argument(
        "--lenient-queries",
        action="store_true",
        default=None,
        help="match every C-FIND/C-GET/C-MOVE identifier relationally, even when the SCU "
        "did not negotiate relational queries (default: hierarchical rules, 0xA900)",
    )
    archive.add_argument(
        "--destination",
        action="append",
        default=[],
        metavar="TITLE=HOST:PORT[,tls]",
        help="a C-MOVE destination (,tls: reached over TLS with --cert/--key/--ca); "
        "repeat for several",
    )
    return parser


def parse_destination(text: str) -> tuple[str, tuple[str, int, bool]]:
    """``TITLE=HOST:PORT[,tls]`` as ``(title, (host, port, tls))``; AppError when malformed."""
    title, equals, address = text.partition("=")
    address, comma, option = address.partition(",")
    host, colon, port = address.rpartition(":")
    if (
        not equals
        or not colon
        or not title.strip()
        or not host
        or not port.isdigit()
        or (comma and option.strip().lower() != "tls")
    ):
        raise common.AppError(f"--destination {text!r}: expected TITLE=HOST:PORT[,tls]")
    return common.ae_title(title.strip()), (host.strip("[]"), int(port), bool(comma))


def destination_addresses(
    args: argparse.Namespace,
) -> dict[str, tuple[str, int] | tuple[str, int, ssl.SSLContext | None]]:
    """The AE's known_aes: TLS destinations get a client context from the TLS files."""
    client: ssl.SSLContext | None = None
    known: dict[str, tuple[str, int] | tuple[str, int, ssl.SSLContext | None]] = {}
    for title, (host, port, tls) in args.destinations.items():
        if not tls:
            known[title] = (host, port)
            continue
        if client is None:
            from aionetdicom import tls as tls_module

            try:
                client = tls_module.client_context(
                    ca=list(args.ca) if args.ca else None, cert=args.cert, key=args.key
                )
            except (OSError, ssl.SSLError) as exc:
                raise common.AppError(f"cannot set up TLS for destinations: {exc}") from exc
        known[title] = (host, port, client)
    return known


def load_settings(args: argparse.Namespace) -> argparse.Namespace:
    """Merge the TOML file of ``--config`` under the flags; fill in the defaults."""
    config: dict[str, Any] = {}
    if args.config is not None:
        try:
            config = tomllib.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise common.AppError(f"cannot read --config {str(args.config)!r}: {exc}") from exc
    known = {
        "ae_title",
        "port",
        "storage",
        "database",
        "allowed_calling_aes",
        "allowed_peers",
        "destinations",
        "worklist",
        "lenient_queries",
        "tls",
    }
    unknown = set(config) - known
    if unknown:
        raise common.AppError(f"unknown settings in {args.config}: {', '.join(sorted(unknown))}")
    if "ae_title" in config and args.ae_title == "QRSCP":
        args.ae_title = common.ae_title(str(config["ae_title"]))
    if args.port is None:
        try:
            args.port = common.port_number(str(config.get("port", DEFAULT_PORT)))
        except argparse.ArgumentTypeError as exc:
            raise common.AppError(f"port: {exc}") from exc
    if args.storage is None:
        args.storage = Path(config.get("storage", "qrscp-storage"))
    if args.allowed_peer is None and "allowed_peers" in config:
        try:
            args.allowed_peer = [common.peer_network(str(n)) for n in config["allowed_peers"]]
        except argparse.ArgumentTypeError as exc:
            raise common.AppError(f"allowed_peers: {exc}") from exc
    if args.allowed_calling_aet is None and "allowed_calling_aes" in config:
        args.allowed_calling_aet = [common.ae_title(str(t)) for t in config["allowed_calling_aes"]]
    destinations: dict[str, tuple[str, int, bool]] = {}
    for title, where in dict(config.get("destinations", {})).items():
        try:
            destinations[common.ae_title(title)] = (
                str(where["host"]),
                int(where["port"]),
                bool(where.get("tls", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise common.AppError(f"destination {title!r}: needs host and port ({exc})") from exc
    destinations.update(parse_destination(text) for text in args.destination)
    args.destinations = destinations
    _merge_tls_settings(args, config.get("tls", {}))
    args.storage.mkdir(parents=True, exist_ok=True)
    args.storage = check_output_directory(args.storage)
    if args.lenient_queries is None:
        args.lenient_queries = bool(config.get("lenient_queries", False))
    if args.worklist is None and "worklist" in config:
        args.worklist = Path(str(config["worklist"]))
    if args.worklist is not None and not args.worklist.is_dir():
        raise common.AppError(f"worklist folder {str(args.worklist)!r} is not a directory")
    database = args.database or config.get("database")
    args.database = str(database) if database else f"sqlite:///{args.storage / 'index.db'}"
    return args


def _merge_tls_settings(args: argparse.Namespace, tls: Any) -> None:
    """The ``[tls]`` table (cert, key, ca, listen) under the TLS flags."""
    common.take_tls_pair(args)  # +tls KEY CERT names the files the destinations use too
    if not isinstance(tls, dict):
        raise common.AppError("tls: expected a table (cert, key, ca, listen)")
    unknown = set(tls) - {"cert", "key", "ca", "listen"}
    if unknown:
        raise common.AppError(f"unknown tls settings: {', '.join(sorted(unknown))}")
    if args.cert is None and "cert" in tls:
        args.cert = Path(str(tls["cert"]))
    if args.key is None and "key" in tls:
        args.key = Path(str(tls["key"]))
    if not args.ca and "ca" in tls:
        cas = tls["ca"] if isinstance(tls["ca"], list) else [tls["ca"]]
        args.ca = [Path(str(ca)) for ca in cas]
    if tls.get("listen", False):
        args.tls = True
    # The files also serve the TLS destinations, with or without a TLS listener.
    args.tls_files_used_elsewhere = any(tls for _, _, tls in args.destinations.values())


def make_ae(args: argparse.Namespace, log: logging.Logger, index: Any) -> AE:
    """The SCP: Verification, Storage into ``args.storage``, Q/R from ``index``."""
    from aionetdicom.index import Added, MatchingError
    from aionetdicom.index.dataset_matching import matches, response
    from aionetdicom.index.hierarchy import check_hierarchical

    syntaxes = storage_transfer_syntaxes(args.transfer_syntaxes)
    ae = AE(
        args.ae_title,
        maximum_associations=args.max_associations,
        require_called_ae_title=args.require_called_aet,
        allowed_calling_ae_titles=args.allowed_calling_aet,
        allowed_peer_addresses=args.allowed_peer,
        supported_contexts=[
            PresentationContext(VERIFICATION_SOP_CLASS),
            *query_retrieve_contexts(
                [*MODEL_ROOT, *([sop_classes.MODALITY_WORKLIST_FIND] if args.worklist else [])]
            ),
        ],
        known_aes=destination_addresses(args),
        **common.timeout_kwargs(args),
    )
    ae.extended_negotiation_handler = _relational_reply
    # scp_role: a C-GET requestor may take the Storage SCP role for the sub-operations.
    ae.add_storage_contexts(sop_classes.STORAGE_SOP_CLASSES, syntaxes, scp_role=True)
    storage: Path = args.storage

    @ae.on_echo
    async def on_echo(request: EchoRequest) -> int:
        log.info("Echo from %s", request.assoc.peer_ae_title)
        return SUCCESS

    @ae.on_store(streaming=True)
    async def on_store(request: StoreRequest) -> int:
        try:
            head = await request.peek()
        except DatasetError as exc:
            log.error("Cannot read the data set of %s: %s", request.sop_instance_uid, exc)
            return DEFAULT_STORE_STATUS
        study = str(head.get("StudyInstanceUID", "") or "")
        if not is_valid_uid(study) or not is_valid_uid(str(head.get("SeriesInstanceUID", ""))):
            log.error(
                "Refusing %s: Study or Series Instance UID missing or invalid",
                request.sop_instance_uid,
            )
            return DEFAULT_STORE_STATUS
        path = await request.save_to(storage / study)
        try:
            added, old = await index.add(
                head,
                path=str(path),
                transfer_syntax=request.transfer_syntax,
                size=request.file_size,
            )
        except Exception:
            log.exception("Stored %s but could not index it", path)
            return OUT_OF_RESOURCES
        if added is Added.REPLACED and old is not None and old != str(path):
            await anyio.to_thread.run_sync(_remove_file, old)
        log.info("Stored %s from %s (%s)", path.name, request.assoc.peer_ae_title, added.value)
        return SUCCESS

    @ae.on_find
    async def on_find(request: FindRequest) -> AsyncIterator[Any]:
        where = _model_and_level(request.sop_class_uid, request.query_level)
        if where is None:
            yield IDENTIFIER_DOES_NOT_MATCH, None
            return
        top, level = where
        try:
            if not (args.lenient_queries or _relational(request)):
                check_hierarchical(level, top, request.identifier)
            syntax = request.transfer_syntax
            if syntax in _DIRECT_SYNTAXES:  # written without building Datasets
                async for data in index.find(
                    level, request.identifier, top=top, transfer_syntax=syntax
                ):
                    yield EncodedIdentifier(data, syntax)
            else:
                async for match in index.find(level, request.identifier, top=top):
                    yield match
        except MatchingError as exc:
            log.warning("C-FIND from %s: %s", request.assoc.peer_ae_title, exc)
            yield IDENTIFIER_DOES_NOT_MATCH, None

    if args.worklist is not None:
        folder: Path = args.worklist

        @ae.on_find(sop_class=sop_classes.MODALITY_WORKLIST_FIND)
        async def on_worklist(request: FindRequest) -> AsyncIterator[Any]:
            try:
                for path in await anyio.to_thread.run_sync(_worklist_files, folder):
                    item = await anyio.to_thread.run_sync(_read_worklist_item, path, log)
                    if item is not None and matches(request.identifier, item):
                        yield response(request.identifier, item)
            except MatchingError as exc:
                log.warning("Worklist C-FIND from %s: %s", request.assoc.peer_ae_title, exc)
                yield IDENTIFIER_DOES_NOT_MATCH, None

    async def retrieve(request: GetRequest | MoveRequest) -> AsyncIterator[Any]:
        where = _model_and_level(request.sop_class_uid, request.query_level)
        if where is None:
            yield IDENTIFIER_DOES_NOT_MATCH, None
            return
        top, level = where
        try:
            if not (args.lenient_queries or _relational(request)):
                check_hierarchical(level, top, request.identifier, retrieve=True)
            files = [
                StoredInstance(f.path, f.sop_class_uid, f.sop_instance_uid, f.transfer_syntax)
                async for f in index.files(level, request.identifier, top=top)
            ]
        except MatchingError as exc:
            log.warning("Retrieve from %s: %s", request.assoc.peer_ae_title, exc)
            yield IDENTIFIER_DOES_NOT_MATCH, None
            return
        yield len(files)
        for each in files:
            yield each

    ae.on_get(retrieve)
    ae.on_move(retrieve)
    return ae


def _relational_reply(sop_class_uid: str, information: bytes) -> bytes | None:
    """Our SOP Class Extended Negotiation reply for the Q/R models (PS3.4 C.5.1.1.1,
    C.5.2.1.1, C.5.3.1.1): relational queries and retrievals yes, nothing else."""
    if sop_class_uid not in MODEL_ROOT or not information:
        return None
    return bytes([1 if information[0] == 1 else 0]) + bytes(len(information) - 1)


def _relational(request: FindRequest | GetRequest | MoveRequest) -> bool:
    """Whether the SCU negotiated relational queries (or retrievals) for this model."""
    agreed = request.assoc.extended_negotiation.get(request.sop_class_uid, b"")
    return agreed[:1] == b"\x01"


def _model_and_level(sop_class_uid: str, level: str | None) -> tuple[str, str] | None:
    """(model root for the index, level) of a request, or None if they do not fit."""
    model = MODEL_ROOT.get(sop_class_uid)
    if model is None or level not in _MODEL_LEVELS[model]:
        return None
    return ("PATIENT" if model == "PATIENT-STUDY" else model), level


def _worklist_files(folder: Path) -> list[Path]:
    """The worklist item files of ``folder``, in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".wl", ".dcm"))


def _read_worklist_item(path: Path, log: logging.Logger) -> Any:
    """One worklist item (a DICOM file), or None (logged) when it cannot be read."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, force=path.suffix.lower() == ".wl")
    except (OSError, InvalidDicomError, ValueError) as exc:
        log.warning("Skipping worklist file %s: %s", path, exc)
        return None


def _remove_file(path: str) -> None:
    """Delete the file of a replaced instance (stored under another path)."""
    with suppress(FileNotFoundError):
        os.unlink(path)


async def serve(args: argparse.Namespace, log: logging.Logger) -> int:
    """Open the index, listen until a signal or ``--max-runtime``; return 0."""
    try:
        from aionetdicom.index import DicomIndex
    except ImportError as exc:
        raise common.AppError(
            f"qrscp needs the 'server' extra (pip install 'aionetdicom[server]'): {exc}"
        ) from exc
    args = load_settings(args)
    try:
        index = await DicomIndex.open(args.database)
    except Exception as exc:
        raise common.AppError(f"cannot open the index database {args.database!r}: {exc}") from exc
    try:
        ae = make_ae(args, log, index)
        what = f", storing in {args.storage}, index {_safe_url(args.database)}"
        await serve_until_stopped(ae, args, log, "qrscp", what)
    finally:
        with anyio.CancelScope(shield=True):
            await index.aclose()
    return 0


def _safe_url(url: str) -> str:
    """``url`` without its password, for the log."""
    scheme, separator, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not separator or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{place}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run qrscp with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    log = common.setup_logging(args, "qrscp", library_verbose=True)
    if args.backend != "asyncio":
        log.error("E: qrscp runs on asyncio only (its database driver needs it)")
        return 1
    return common.run_app(lambda: serve(args, log), args.backend, log)


if __name__ == "__main__":
    raise SystemExit(main())
