"""The DICOM side of the web examples (web_fastapi.py, web_aiohttp.py), framework-free.

A :class:`Gateway` runs a Storage SCP (``AE.serve``, streaming every received instance
to ``<storage>/<Study Instance UID>/<SOP Instance UID>.dcm``) and two association pools
to one remote peer: one for C-ECHO, C-FIND, C-MOVE and C-STORE, one for C-GET (whose
storage contexts need the SCP role). The web apps enter ``gateway.running()`` in their
lifespan and turn HTTP requests into its methods; every failure is a
:class:`GatewayError` carrying the HTTP status and a JSON body, so both apps map errors
the same way:

* bad input (query keys, UIDs, AE titles, files that are not DICOM) -> 400, an upload
  of another media type -> 415, too large -> 413, a study without instances -> 404;
* peer unreachable, association rejected or aborted, a failure status -> 502;
* any DICOM timeout (connect, ACSE, DIMSE) -> 504; all pooled associations busy -> 503.

Settings come from environment variables, overridden by command-line options
(``--help`` of either app lists them; :func:`parse_settings`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import ssl
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import anyio
from pydicom.dataset import Dataset

from aionetdicom import (
    AE,
    AssociationPool,
    AssociationRejected,
    DicomNetworkError,
    DicomTimeoutError,
    NegotiationError,
    PoolClosed,
    PoolTimeout,
    RetrieveResponse,
    Server,
    Status,
    StoreRequest,
    contexts,
    sop_classes,
    tls,
    validate_ae_title,
)
from aionetdicom.datasets import DatasetError, read_file_meta
from aionetdicom.services.query_retrieve import (
    DEFAULT_RETRIEVE_STORAGE_CLASSES,
    retrieve_contexts,
)
from aionetdicom.services.storage import contexts_for_files, storage_contexts

logger = logging.getLogger("aionetdicom.examples.web")

#: Transfer syntaxes our Storage SCP accepts (our preference order): kept as sent.
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    contexts.EXPLICIT_VR_LITTLE_ENDIAN,
    contexts.IMPLICIT_VR_LITTLE_ENDIAN,
    contexts.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    contexts.EXPLICIT_VR_BIG_ENDIAN,
    contexts.JPEG_BASELINE_8BIT,
    contexts.JPEG_EXTENDED_12BIT,
    contexts.JPEG_LOSSLESS_SV1,
    contexts.JPEG_LS_LOSSLESS,
    contexts.JPEG_LS_NEAR_LOSSLESS,
    contexts.JPEG_2000_LOSSLESS,
    contexts.JPEG_2000,
    contexts.RLE_LOSSLESS,
)
DICOM_JSON = "application/dicom+json"
#: Upload chunks are gathered up to this size before a worker thread writes them.
WRITE_BATCH = 1 << 20


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Where the peer is, who we are, where files go; see :func:`parse_settings`."""

    peer_host: str = "127.0.0.1"
    peer_port: int = 11112
    peer_ae_title: str = "ANY-SCP"
    ae_title: str = "WEBGATEWAY"
    scp_host: str = "127.0.0.1"
    scp_port: int = 11113
    storage: Path = Path("web-storage")
    pool_size: int = 4
    timeout: float = 30.0
    max_upload_size: int = 1 << 30
    peer_tls: bool = False
    peer_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8000


#: (option, environment variable, Settings field, type, help)
_OPTIONS: tuple[tuple[str, str, str, type, str], ...] = (
    ("--peer-host", "DICOM_PEER_HOST", "peer_host", str, "remote DICOM peer's host"),
    ("--peer-port", "DICOM_PEER_PORT", "peer_port", int, "remote peer's port"),
    ("--peer-aet", "DICOM_PEER_AET", "peer_ae_title", str, "remote peer's AE title"),
    ("--aet", "DICOM_AET", "ae_title", str, "our AE title (calling, SCP, C-MOVE target)"),
    ("--scp-host", "DICOM_SCP_HOST", "scp_host", str, "address our Storage SCP listens on"),
    ("--scp-port", "DICOM_SCP_PORT", "scp_port", int, "port of our Storage SCP"),
    ("--storage", "DICOM_STORAGE", "storage", Path, "folder for received instances"),
    ("--pool-size", "DICOM_POOL_SIZE", "pool_size", int, "associations kept to the peer"),
    ("--timeout", "DICOM_TIMEOUT", "timeout", float, "connect/ACSE/DIMSE timeout (s)"),
    ("--max-upload", "DICOM_MAX_UPLOAD", "max_upload_size", int, "bytes per POST /instances"),
    ("--peer-ca", "DICOM_PEER_CA", "peer_ca", str, "CA file verifying the peer (TLS)"),
    ("--tls-cert", "DICOM_TLS_CERT", "tls_cert", str, "our client certificate (TLS)"),
    ("--tls-key", "DICOM_TLS_KEY", "tls_key", str, "key of --tls-cert"),
    ("--http-host", "HTTP_HOST", "http_host", str, "address the web app listens on"),
    ("--http-port", "HTTP_PORT", "http_port", int, "port of the web app"),
)


def parse_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    description: str | None = None,
) -> Settings:
    """Settings from ``environ`` (default ``os.environ``) overridden by ``argv``.

    ``argv=[]`` reads the environment only (what ``create_app()`` does under
    ``uvicorn --factory``); ``DICOM_PEER_TLS=1`` or ``--peer-tls`` turns TLS on.
    """
    environ = os.environ if environ is None else environ
    defaults = Settings()
    parser = argparse.ArgumentParser(description=description)
    for option, variable, name, kind, text in _OPTIONS:
        default = environ.get(variable, getattr(defaults, name))
        parser.add_argument(
            option, dest=name, type=kind, default=default, help=f"{text} (${variable})"
        )
    tls_default = environ.get("DICOM_PEER_TLS", "").lower() in ("1", "true", "yes", "on")
    parser.add_argument(
        "--peer-tls", action="store_true", default=tls_default, help="TLS to the peer"
    )
    # (argparse converts string defaults, the environment's values, with ``type``.)
    args = parser.parse_args([] if argv is None else list(argv))
    values = {name: getattr(args, name) for _, _, name, _, _ in _OPTIONS}
    return Settings(**values, peer_tls=bool(args.peer_tls))


# ---------------------------------------------------------------------- errors


class GatewayError(Exception):
    """A failure with its HTTP status; ``body()`` is the JSON error document."""

    def __init__(self, status_code: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.details}


def _classify(exc: BaseException) -> GatewayError | None:
    """The HTTP status of a DICOM network failure, None for anything else."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, PoolTimeout):
        return GatewayError(503, f"all associations to the peer are busy: {exc}")
    if isinstance(exc, PoolClosed):
        return GatewayError(503, f"shutting down: {exc}")
    if isinstance(exc, (DicomTimeoutError, TimeoutError)):
        return GatewayError(504, f"the DICOM peer did not answer in time: {exc}")
    if isinstance(exc, AssociationRejected):
        return GatewayError(
            502,
            f"the DICOM peer rejected the association: {exc}",
            result=exc.result,
            source=exc.source,
            reason=exc.reason,
        )
    if isinstance(exc, (DicomNetworkError, OSError)):
        return GatewayError(502, f"DICOM peer unreachable or failing: {exc}")
    return None


@contextmanager
def dicom_errors() -> Iterator[None]:
    """Turn the library's network errors (and OSError from connecting) into GatewayError."""
    try:
        yield
    except Exception as exc:
        error = _classify(exc)
        if error is None or error is exc:
            raise
        raise error from exc


def status_json(status: Status) -> dict[str, str]:
    """A DIMSE status as JSON: hex code, category, description."""
    return {
        "status": f"0x{int(status):04X}",
        "category": status.category.value,
        "description": status.description,
    }


_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_uid(value: str) -> bool:
    """PS3.5 9.1 UID syntax (checked without pydicom, which warns on invalid UIDs)."""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def check_uid(value: str, what: str = "UID") -> str:
    """``value`` if it is a valid DICOM UID, else a 400 error."""
    if not is_uid(value):
        raise GatewayError(400, f"{what} {value[:80]!r} is not a valid DICOM UID")
    return value


def check_ae_title(value: str, what: str = "AE title") -> str:
    try:
        return validate_ae_title(value, what)
    except ValueError as exc:
        raise GatewayError(400, str(exc)) from None


# ---------------------------------------------------------------------- queries

Kind = Literal["text", "PN", "DA", "UI", "IS", "CS"]
_DATE = re.compile(r"[0-9]{8}|[0-9]{8}-([0-9]{8})?|-[0-9]{8}")
_NUMBER = re.compile(r"[0-9]{1,12}")

#: Matching keys accepted as query parameters, per level, and their kinds.
STUDY_FILTERS: dict[str, Kind] = {
    "PatientName": "PN",
    "PatientID": "text",
    "StudyDate": "DA",
    "AccessionNumber": "text",
    "StudyDescription": "text",
    "StudyID": "text",
    "ModalitiesInStudy": "CS",
    "ReferringPhysicianName": "PN",
    "StudyInstanceUID": "UI",
}
SERIES_FILTERS: dict[str, Kind] = {
    "Modality": "CS",
    "SeriesNumber": "IS",
    "SeriesDescription": "text",
    "SeriesInstanceUID": "UI",
}
#: Keys returned (empty in the query) at each level.
STUDY_RETURN_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "StudyInstanceUID",
)
SERIES_RETURN_KEYS = (
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
    "SeriesInstanceUID",
)
MAX_LIMIT = 10_000


def _check_value(keyword: str, kind: Kind, value: str) -> str:
    if len(value) > 64 or any(ord(ch) < 0x20 or ch == "\\" for ch in value):
        raise GatewayError(400, f"{keyword}: at most 64 characters, no control or backslash")
    if kind == "DA" and not _DATE.fullmatch(value):
        raise GatewayError(400, f"{keyword} must be YYYYMMDD or a range like 20200101-20201231")
    if kind == "UI":
        check_uid(value, keyword)
    if kind == "IS" and not _NUMBER.fullmatch(value):
        raise GatewayError(400, f"{keyword} must be a number")
    return value


def build_query(
    level: Literal["STUDY", "SERIES"],
    parameters: Iterable[tuple[str, str]],
    filters: Mapping[str, Kind],
    return_keys: Sequence[str],
) -> tuple[Dataset, int | None]:
    """A C-FIND identifier from HTTP query parameters, and the ``limit`` if given.

    Unknown or repeated parameters are a 400 error, so a typo never turns into a query
    for everything. An empty value means "any".
    """
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword in return_keys:
        setattr(query, keyword, "")
    seen: set[str] = set()
    limit: int | None = None
    for name, value in parameters:
        if name in seen:
            raise GatewayError(400, f"query parameter {name!r} given more than once")
        seen.add(name)
        if name == "limit":
            if not _NUMBER.fullmatch(value) or not 0 < int(value) <= MAX_LIMIT:
                raise GatewayError(400, f"limit must be a number from 1 to {MAX_LIMIT}")
            limit = int(value)
        elif name not in filters:
            raise GatewayError(
                400, f"unknown query parameter {name!r}", allowed=[*filters, "limit"]
            )
        elif value:
            setattr(query, name, _check_value(name, filters[name], value))
    return query, limit


def to_dicom_json(identifier: Dataset) -> dict[str, Any]:
    """A C-FIND match in the DICOM JSON model (PS3.18 F), without Query/Retrieve Level."""
    identifier = Dataset(identifier)  # shallow copy: the caller's dataset stays whole
    if "QueryRetrieveLevel" in identifier:
        del identifier.QueryRetrieveLevel
    return identifier.to_json_dict(suppress_invalid_tags=True)


def _study_identifier(study_uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = check_uid(study_uid, "Study Instance UID")
    return query


def progress_json(response: RetrieveResponse) -> dict[str, Any]:
    """The status and sub-operation counts of a C-GET/C-MOVE response."""
    return {
        **status_json(response.status),
        "remaining": response.remaining,
        "completed": response.completed,
        "failed": response.failed,
        "warning": response.warning,
    }


def _final_retrieve(
    service: str, response: RetrieveResponse | None, study_uid: str
) -> dict[str, Any]:
    """The JSON summary of a finished C-GET/C-MOVE, or the GatewayError it deserves."""
    if response is None:
        raise GatewayError(502, f"the peer sent no final {service} response")
    summary = {
        **progress_json(response),
        "failed_sop_instance_uids": list(response.failed_sop_instance_uids),
        "study": study_uid,
    }
    status = response.status
    if service == "C-MOVE" and int(status) == 0xA801:
        raise GatewayError(400, "the peer does not know the move destination", **summary)
    if status.is_failure:
        raise GatewayError(502, f"{service} failed: {status.description}", **summary)
    if status.is_success and not (response.completed or response.failed or response.warning):
        raise GatewayError(404, f"the peer has no instances of study {study_uid}", **summary)
    return summary


def sse_event(event: str, data: Mapping[str, Any], event_id: int | None = None) -> bytes:
    """One server-sent event (text/event-stream) with a JSON ``data`` line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


# ---------------------------------------------------------------------- uploads


@dataclass
class UploadedFile:
    """One uploaded file: the client's name for it and where it was spooled."""

    name: str
    path: Path


class UploadSink:
    """Writes one upload to disk in batches from worker threads, within a size budget."""

    def __init__(self, area: UploadArea, path: Path) -> None:
        self._area = area
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._handle: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - see close()

    async def write(self, chunk: bytes) -> None:
        self._area.used += len(chunk)
        if self._area.used > self._area.limit:
            raise GatewayError(413, f"the upload exceeds {self._area.limit} bytes")
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if self._handle is not None:
            await anyio.to_thread.run_sync(self._handle.write, data)

    async def close(self) -> None:
        """Write what is left and close the file (again: nothing happens)."""
        if self._handle is None:
            return
        try:
            await self._flush()
        finally:
            handle, self._handle = self._handle, None
            await anyio.to_thread.run_sync(handle.close)


class UploadArea:
    """A temporary folder holding the files of one upload request (see upload_area)."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.used = 0
        self.files: list[UploadedFile] = []
        self._sinks: list[UploadSink] = []

    async def add(self, name: str) -> UploadSink:
        """A sink for the next file, registered under the client's ``name``."""
        path = self.folder / f"{len(self.files):06d}.dcm"
        sink = await anyio.to_thread.run_sync(UploadSink, self, path)
        self.files.append(UploadedFile(name, path))
        self._sinks.append(sink)
        return sink

    async def close(self) -> None:
        """Close every sink (an upload that ended in error leaves some open)."""
        for sink in self._sinks:
            await sink.close()


# ---------------------------------------------------------------------- the gateway


@dataclass
class Gateway:
    """The DICOM half of the web apps: Storage SCP, pools to the peer, operations."""

    settings: Settings
    ae: AE = field(init=False)
    server: Server | None = field(default=None, init=False)
    received: int = field(default=0, init=False)
    _pool: AssociationPool | None = field(default=None, init=False)
    _get_pool: AssociationPool | None = field(default=None, init=False)
    _ssl_context: ssl.SSLContext | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        if s.peer_tls:
            self._ssl_context = tls.client_context(ca=s.peer_ca, cert=s.tls_cert, key=s.tls_key)
        self.ae = AE(
            s.ae_title,
            acse_timeout=s.timeout,
            dimse_timeout=s.timeout,
            connect_timeout=s.timeout,
            network_timeout=max(60.0, 2 * s.timeout),
        )
        self.ae.add_storage_contexts(transfer_syntaxes=ACCEPTED_TRANSFER_SYNTAXES)
        self.ae.on_store(streaming=True)(self._receive)

    @property
    def storage(self) -> Path:
        return self.settings.storage

    @property
    def pool(self) -> AssociationPool:
        if self._pool is None:
            raise GatewayError(503, "the DICOM gateway is not running")
        return self._pool

    @property
    def get_pool(self) -> AssociationPool:
        if self._get_pool is None:
            raise GatewayError(503, "the DICOM gateway is not running")
        return self._get_pool

    def _pool_options(self) -> dict[str, Any]:
        s = self.settings
        return {
            "called_ae_title": s.peer_ae_title,
            # Idle associations are released well before the network timeout would
            # abort them; one the peer closed meanwhile is retried once (retry_stale).
            "idle_timeout": min(30.0, s.timeout),
            "acquire_timeout": s.timeout,
            "ssl_context": self._ssl_context,
        }

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        """Serve the SCP and keep the pools while the block runs (the app's lifespan)."""
        s = self.settings
        await anyio.Path(s.storage).mkdir(parents=True, exist_ok=True)
        # Verification, the FIND and MOVE models, and the common storage classes for
        # uploads (other instances get an association of their own, see store_uploads).
        main_contexts = [
            *contexts.VERIFICATION,
            contexts.PresentationContext(sop_classes.STUDY_ROOT_FIND),
            contexts.PresentationContext(sop_classes.STUDY_ROOT_MOVE),
            *storage_contexts(DEFAULT_RETRIEVE_STORAGE_CLASSES),
        ]
        # C-GET: the model plus the common storage classes with the SCP role, in the
        # uncompressed syntaxes only. (Offering compressed ones in the same contexts lets
        # a peer that prefers them, as qrscp does, pick JPEG and then fail to send the
        # uncompressed instances it holds.)
        get_contexts = retrieve_contexts([sop_classes.STUDY_ROOT_GET])
        options = self._pool_options()
        async with (
            self.ae.serve(s.scp_host, s.scp_port) as server,
            AssociationPool(
                self.ae, s.peer_host, s.peer_port, contexts=main_contexts,
                max_size=s.pool_size, **options,
            ) as pool,
            AssociationPool(
                self.ae, s.peer_host, s.peer_port, contexts=get_contexts,
                max_size=max(1, s.pool_size // 2), **options,
            ) as get_pool,
        ):  # fmt: skip
            self.server, self._pool, self._get_pool = server, pool, get_pool
            logger.info("Storage SCP %s listening on %s", s.ae_title, server.addresses)
            try:
                yield self
            finally:
                self.server = self._pool = self._get_pool = None

    async def _receive(self, request: StoreRequest) -> int:
        """Our SCP's C-STORE handler: stream the instance into its study's folder."""
        head = await request.peek()
        study = str(head.get("StudyInstanceUID", ""))
        folder = self.storage / (study if is_uid(study) else "unknown-study")
        await request.save_to(folder)
        self.received += 1
        return 0x0000

    # ------------------------------------------------------------------ operations

    def health(self) -> dict[str, Any]:
        """What /health reports: our SCP, the peer, the pools (nothing is sent)."""
        s = self.settings
        server = self.server
        ok = server is not None and not server.closing
        return {
            "status": "ok" if ok else "stopping",
            "ae_title": s.ae_title,
            "scp": {"addresses": [list(a) for a in server.addresses] if server else []},
            "peer": {"host": s.peer_host, "port": s.peer_port, "ae_title": s.peer_ae_title},
            "received": self.received,
            "pools": {
                "main": asdict(self._pool.statistics) if self._pool else None,
                "get": asdict(self._get_pool.statistics) if self._get_pool else None,
            },
        }

    async def echo(self) -> dict[str, Any]:
        """C-ECHO the peer through the pool."""
        with dicom_errors():
            status = await self.pool.echo()
        body = {**status_json(status), "peer": self.health()["peer"]}
        if not status.is_success:
            raise GatewayError(502, f"C-ECHO failed: {status.description}", **body)
        return body

    async def find(self, query: Dataset, limit: int | None = None) -> list[dict[str, Any]]:
        """C-FIND (Study Root) through the pool; the matches in DICOM JSON.

        Stopping at ``limit`` matches leaves the iterator early: the pool sends C-CANCEL.
        """
        matches: list[dict[str, Any]] = []
        final: Status | None = None
        with dicom_errors():
            async with self.pool.find(query, model=sop_classes.STUDY_ROOT_FIND) as responses:
                async for response in responses:
                    if response.identifier is not None and response.status.is_pending:
                        matches.append(to_dicom_json(response.identifier))
                        if limit is not None and len(matches) >= limit:
                            break
                    elif not response.status.is_pending:
                        final = response.status
        if final is not None and final.is_failure:
            raise GatewayError(502, f"C-FIND failed: {final.description}", **status_json(final))
        return matches

    async def find_studies(self, parameters: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        query, limit = build_query("STUDY", parameters, STUDY_FILTERS, STUDY_RETURN_KEYS)
        return await self.find(query, limit)

    async def find_series(
        self, study_uid: str, parameters: Iterable[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        query, limit = build_query("SERIES", parameters, SERIES_FILTERS, SERIES_RETURN_KEYS)
        query.StudyInstanceUID = check_uid(study_uid, "Study Instance UID")
        return await self.find(query, limit)

    async def retrieve(self, study_uid: str) -> dict[str, Any]:
        """C-GET a study into ``<storage>/<study>/``; the summary with the files written.

        Each instance is saved (atomically) before its C-STORE sub-operation is
        answered; one that cannot be saved is answered with a failure status by the
        library (0xA700 disk full, 0x0117 bad UID) and counted as failed by the peer.
        """
        query = _study_identifier(study_uid)
        folder = self.storage / study_uid
        files: list[str] = []

        async def save(request: StoreRequest) -> int:
            path = await request.save_to(folder)
            files.append(str(path.relative_to(self.storage)))
            return 0x0000

        final: RetrieveResponse | None = None
        with dicom_errors():
            async with self.get_pool.get(
                query, model=sop_classes.STUDY_ROOT_GET, on_store=save
            ) as responses:
                async for response in responses:
                    if not response.status.is_pending:
                        final = response
        summary = _final_retrieve("C-GET", final, study_uid)
        return {**summary, "storage": str(self.storage), "files": sorted(files)}

    async def move(
        self, study_uid: str, destination: str | None
    ) -> AsyncGenerator[tuple[Literal["progress", "complete"], dict[str, Any]], None]:
        """C-MOVE a study to ``destination`` (default: our own SCP) through the pool.

        Yields ``("progress", counts)`` per Pending response, then ``("complete",
        summary)``; failures raise GatewayError (404 nothing to move, 400 unknown
        destination, 502/504 network). Closing the generator early cancels the C-MOVE.
        """
        query = _study_identifier(study_uid)
        target = check_ae_title(destination or self.settings.ae_title, "move destination")
        final: RetrieveResponse | None = None
        with dicom_errors():
            async with self.pool.move(
                query, target, model=sop_classes.STUDY_ROOT_MOVE
            ) as responses:
                try:
                    async for response in responses:
                        if response.status.is_pending:
                            yield "progress", progress_json(response)
                        else:
                            final = response
                except BaseException as exc:
                    if not isinstance(exc, Exception):  # closed or cancelled, not failed
                        logger.info(  # (the library has sent C-CANCEL by now)
                            "C-MOVE of study %s to %s stopped early (%s): C-CANCEL sent",
                            study_uid,
                            target,
                            type(exc).__name__,
                        )
                    raise
        summary = _final_retrieve("C-MOVE", final, study_uid)
        yield "complete", {**summary, "destination": target}

    @asynccontextmanager
    async def upload_area(self) -> AsyncIterator[UploadArea]:
        """A temporary folder for one request's uploads, removed afterwards."""
        folder = Path(await anyio.to_thread.run_sync(tempfile.mkdtemp, "", "web-upload-"))
        area = UploadArea(folder, self.settings.max_upload_size)
        try:
            yield area
        finally:
            with anyio.CancelScope(shield=True):
                await area.close()
                await anyio.to_thread.run_sync(shutil.rmtree, folder, True)

    async def store_uploads(self, files: Sequence[UploadedFile]) -> tuple[int, dict[str, Any]]:
        """C-STORE uploaded files to the peer; (HTTP status, per-file results).

        Every file is checked first (DICOM Part 10 with the three UIDs): if one is not,
        nothing is sent and the answer is 400. Files go through the pool, as many at
        once as it has associations; a file whose SOP class or transfer syntax the
        pool's associations did not negotiate gets an association proposing exactly
        what it needs. The HTTP status follows STOW-RS (PS3.18 10.5): 200 all stored,
        202 some stored, 409 none stored; 502/504 when the peer could not be reached.
        """
        if not files:
            raise GatewayError(400, "no files in the upload")
        metas: list[dict[str, str]] = []
        problems: list[dict[str, str]] = []
        for upload in files:
            try:
                meta = await anyio.to_thread.run_sync(read_file_meta, upload.path)
            except (DatasetError, OSError) as exc:
                problems.append({"file": upload.name, "error": str(exc)})
                continue
            metas.append(
                {
                    "file": upload.name,
                    "sop_class_uid": meta.sop_class_uid,
                    "sop_instance_uid": meta.sop_instance_uid,
                    "transfer_syntax": meta.transfer_syntax,
                }
            )
        if problems:
            raise GatewayError(400, "not DICOM Part 10 files; nothing was sent", files=problems)

        results: list[dict[str, Any]] = [{} for _ in files]
        errors: list[GatewayError | None] = [None] * len(files)
        limiter = anyio.CapacityLimiter(self.settings.pool_size)

        async def store_one(index: int) -> None:
            async with limiter:
                result: dict[str, Any] = dict(metas[index])
                try:
                    status, via = await self._store(files[index].path)
                except NegotiationError as exc:
                    result.update(ok=False, error=f"the peer cannot take this file: {exc}")
                except Exception as exc:
                    error = _classify(exc)
                    if error is None:
                        raise
                    errors[index] = error
                    result.update(ok=False, error=error.message)
                else:
                    ok = status.is_success or status.is_warning
                    result.update(status_json(status), ok=ok, association=via)
                results[index] = result

        async with anyio.create_task_group() as tg:
            for index in range(len(files)):
                tg.start_soon(store_one, index)
        stored = sum(1 for r in results if r["ok"])
        body = {"stored": stored, "failed": len(files) - stored, "files": results}
        if stored == len(files):
            return 200, body
        if stored:
            return 202, body
        network = [e.status_code for e in errors if e is not None and e.status_code >= 500]
        if len(network) == len(files):
            return max(network), {"error": "the DICOM peer could not be reached", **body}
        return 409, body

    async def _store(self, path: Path) -> tuple[Status, str]:
        """C-STORE one file: through the pool, or a dedicated association if need be."""
        try:
            return await self.pool.store(path), "pool"
        except NegotiationError:
            pass  # its SOP class / transfer syntax is not among the pool's contexts
        proposal = await anyio.to_thread.run_sync(contexts_for_files, [path])
        s = self.settings
        async with self.ae.associate(
            s.peer_host,
            s.peer_port,
            called_ae_title=s.peer_ae_title,
            contexts=proposal,
            ssl_context=self._ssl_context,
        ) as assoc:
            return await assoc.store(path), "dedicated"
