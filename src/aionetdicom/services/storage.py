"""Storage service class (PS3.4 Annex B): C-STORE as SCU, and the C-STORE SCP side.

Sending (:meth:`StorageOperations.store`): a DICOM file (path or bytes) goes out as it
is, the bytes after its File Meta Information unchanged, whenever the peer accepted a
presentation context for its SOP Class with the file's transfer syntax (from a path, the
data set is read and sent in chunks, so memory stays bounded whatever the file's size;
see :meth:`Association.send_message_stream
<aionetdicom.association.Association.send_message_stream>`); the dataset is
decoded and re-encoded (in a worker thread) only when it must be converted between two
uncompressed transfer syntaxes. Nothing is decompressed: a compressed instance whose
transfer syntax was not accepted raises :class:`NegotiationError` before anything is
sent.

Receiving (:func:`store_service`): each C-STORE-RQ becomes a :class:`StoreRequest`
(command, context, the data set bytes as received, a lazily decoded dataset) handed to
an async handler whose return value is the response status. ``save_to`` writes a Part
10 file atomically. Statuses the service itself chooses (PS3.4 B.2.3, PS3.7 9.1.1.1.9):

* the handler raised, or returned something that is not a status:
  :data:`DEFAULT_STORE_STATUS` 0xC211, in the range Cxxx "Error: Cannot understand",
  the only general failure the Storage service defines (PS3.7 does not list 0x0110
  Processing failure among the C-STORE statuses);
* the disk is full (``ENOSPC``/``EDQUOT``) or memory ran out: :data:`OUT_OF_RESOURCES`
  0xA700, "Refused: Out of Resources";
* the SOP Instance UID is not a valid UID, so it cannot name a file:
  :data:`INVALID_SOP_INSTANCE` 0x0117, "Invalid SOP Instance" (PS3.7 C.5: the UID
  violates the UID construction rules).
"""

from __future__ import annotations

import errno
import io
import os
import pathlib
import secrets
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Union, cast

import anyio

from aionetdicom import sop_classes
from aionetdicom.acse.contexts import (
    DEFAULT_TRANSFER_SYNTAXES,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NegotiatedContext,
    PresentationContext,
    is_valid_uid,
)
from aionetdicom.datasets import (
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    DatasetError,
    decode_dataset,
    encode_dataset,
    read_file_meta,
)
from aionetdicom.dimse.command_set import (
    Command,
    CommandField,
    Priority,
    command_priority,
    make_command,
    set_if_valid,
)
from aionetdicom.dimse.status import Status
from aionetdicom.errors import NegotiationError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset, FileMetaDataset

    from aionetdicom.association import Association, RequestHandler
    from aionetdicom.dimse.fragments import AssembledMessage

__all__ = [
    "DEFAULT_STORE_STATUS",
    "INVALID_SOP_INSTANCE",
    "MAX_PRESENTATION_CONTEXTS",
    "OUT_OF_RESOURCES",
    "InvalidSOPInstanceUID",
    "StorageOperations",
    "StoreHandler",
    "StoreRequest",
    "StoreSource",
    "choose_context",
    "contexts_for_files",
    "storage_contexts",
    "store",
    "store_service",
]

#: Status sent when the store handler raised or returned something that is not a
#: status: 0xC211, range Cxxx "Error: Cannot understand" (PS3.4 Table B.2-1); the same
#: value as FAILURE_FOR[C-STORE], so every storage path reports a failed handler alike.
DEFAULT_STORE_STATUS = 0xC211
#: "Refused: Out of Resources" (A7xx): no space left to store the instance.
OUT_OF_RESOURCES = 0xA700
#: "Invalid SOP Instance" (PS3.7 C.5): the SOP Instance UID breaks the UID rules.
INVALID_SOP_INSTANCE = 0x0117
#: Presentation context IDs are the odd numbers 1-255 (PS3.8 9.3.2.2).
MAX_PRESENTATION_CONTEXTS = 128
#: A Deflated data set received is not inflated beyond this many bytes.
INFLATE_LIMIT = 1 << 31
#: A file sent as it is is read in chunks of this size, never whole.
STREAM_CHUNK_BYTES = 1024 * 1024
#: Files whose data set is at most this long are read whole (fewer thread hops for the
#: typical image); larger ones are streamed in chunks of :data:`STREAM_CHUNK_BYTES`.
SMALL_FILE_BYTES = 4 * 1024 * 1024

#: What ``store`` sends: a pydicom Dataset, a DICOM file's path, or a DICOM file's bytes.
StoreSource = Union["Dataset", str, "os.PathLike[str]", bytes]

# Uncompressed targets for a conversion, most preferred first: explicit VR keeps VRs,
# little endian is what everyone reads, deflate costs CPU on both sides.
_CONVERSION_ORDER = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
)
#: Transfer syntax of a dataset pydicom read in (implicit VR, little endian).
_ENCODINGS = {
    (True, True): IMPLICIT_VR_LITTLE_ENDIAN,
    (False, True): EXPLICIT_VR_LITTLE_ENDIAN,
    (False, False): EXPLICIT_VR_BIG_ENDIAN,
}
_BULK_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData", "EncapsulatedDocument")
_OUT_OF_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _name(uid: str) -> str:
    """``Name (uid)`` for a registered UID, the UID alone otherwise."""
    name = sop_classes.sop_class_name(uid)
    return uid if name == uid else f"{name} ({uid})"


def _ts_name(uid: str) -> str:
    return sop_classes.sop_class_name(uid)


# ====================================================================== contexts


def storage_contexts(
    sop_classes: Iterable[str] = sop_classes.STORAGE_SOP_CLASSES,
    transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
) -> list[PresentationContext]:
    """One presentation context per Storage SOP Class with ``transfer_syntaxes``.

    The default covers every Storage SOP Class (more than 128): right for an SCP's
    supported contexts. An SCU proposes at most 128 contexts, so it passes the SOP
    classes it needs, or uses :func:`contexts_for_files`.
    """
    return [PresentationContext(uid, tuple(transfer_syntaxes)) for uid in sop_classes]


def plan_contexts(
    found: Mapping[str, Iterable[str]],
    transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
) -> list[PresentationContext]:
    """Contexts to send instances of the given SOP classes in the given transfer syntaxes.

    ``found`` maps each SOP Class UID to the transfer syntaxes its instances are in.
    Per SOP class: one context offering its uncompressed syntaxes (the instances' own
    first, then ``transfer_syntaxes``), and one context for each compressed syntax, so
    that the peer's choice for one cannot shut out another (a compressed instance is
    never decompressed to convert it). When that makes more than 128 contexts, all
    syntaxes of a SOP class share one context; more than 128 SOP classes is a
    ValueError.
    """
    separate: list[PresentationContext] = []
    combined: list[PresentationContext] = []
    for sop_class, syntaxes in found.items():
        wanted = list(dict.fromkeys([*syntaxes, *transfer_syntaxes]))
        uncompressed = [ts for ts in wanted if ts in UNCOMPRESSED_TRANSFER_SYNTAXES]
        compressed = [ts for ts in wanted if ts not in UNCOMPRESSED_TRANSFER_SYNTAXES]
        if uncompressed:
            separate.append(PresentationContext(sop_class, tuple(uncompressed)))
        separate.extend(PresentationContext(sop_class, (ts,)) for ts in compressed)
        combined.append(PresentationContext(sop_class, tuple(compressed + uncompressed)))
    if len(separate) <= MAX_PRESENTATION_CONTEXTS:
        return separate
    if len(combined) <= MAX_PRESENTATION_CONTEXTS:
        return combined
    raise ValueError(
        f"the instances belong to {len(combined)} SOP classes, which need "
        f"{len(combined)} presentation contexts; at most {MAX_PRESENTATION_CONTEXTS} fit "
        "in one association, so send them over several associations"
    )


def contexts_for_files(
    paths: Iterable[str | os.PathLike[str]],
    transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
    *,
    file_syntaxes: bool = True,
) -> list[PresentationContext]:
    """Presentation contexts to send the DICOM files at ``paths`` (at most 128).

    Reads only each file's meta header (blocking; call it from a worker thread for many
    files). Per SOP class the files' own transfer syntaxes are proposed (unless
    ``file_syntaxes`` is False) plus ``transfer_syntaxes`` (default Explicit and
    Implicit VR Little Endian, for conversion); see :func:`plan_contexts`. Raises
    :class:`~aionetdicom.datasets.DatasetError` for a file that is not DICOM Part 10,
    ValueError when more than 128 contexts would be needed.
    """
    found: dict[str, list[str]] = {}
    for path in paths:
        try:
            meta = read_file_meta(path)
        except DatasetError as exc:
            raise DatasetError(f"{os.fspath(path)}: {exc}") from None
        syntaxes = found.setdefault(meta.sop_class_uid, [])
        if file_syntaxes and meta.transfer_syntax not in syntaxes:
            syntaxes.append(meta.transfer_syntax)
    return plan_contexts(found, transfer_syntaxes)


def choose_context(
    contexts: Iterable[NegotiatedContext],
    sop_class_uid: str,
    transfer_syntax: str | None,
    *,
    as_requestor: bool = True,
) -> tuple[NegotiatedContext, bool]:
    """The accepted context to send an instance on, and whether it must be re-encoded.

    A context with the instance's own ``transfer_syntax`` wins (False: send as it is).
    Otherwise an uncompressed instance (or one whose syntax is unknown, None) may go in
    any accepted uncompressed syntax (True: convert). Only contexts on which we may
    invoke C-STORE count: the requestor's SCU role, or as acceptor the requestor's SCP
    role. Raises :class:`NegotiationError` naming what was accepted instead.
    """
    proposed = [c for c in contexts if c.abstract_syntax == sop_class_uid]
    usable = [c for c in proposed if c.accepted and (c.scu_role if as_requestor else c.scp_role)]
    if not usable:
        if not proposed:
            raise NegotiationError(
                f"{_name(sop_class_uid)} was not proposed on this association, "
                "so the instance cannot be sent"
            )
        if any(c.accepted for c in proposed):
            role = "SCU" if as_requestor else "SCP (for the requestor)"
            raise NegotiationError(
                f"{_name(sop_class_uid)} was accepted, but not with the {role} role "
                "C-STORE needs here"
            )
        results = ", ".join(f"#{c.context_id} {c.result.name}" for c in proposed)
        raise NegotiationError(
            f"the peer accepted no context for {_name(sop_class_uid)}: {results}"
        )
    if transfer_syntax is not None:
        for context in usable:
            if context.transfer_syntax == transfer_syntax:
                return context, False
    if transfer_syntax is None or transfer_syntax in UNCOMPRESSED_TRANSFER_SYNTAXES:
        for preferred in _CONVERSION_ORDER:
            for context in usable:
                if context.transfer_syntax == preferred:
                    return context, True
    accepted = ", ".join(dict.fromkeys(_ts_name(c.transfer_syntax) for c in usable))
    what = (
        "an uncompressed transfer syntax"
        if transfer_syntax is None
        else (_ts_name(transfer_syntax))
    )
    hint = ""
    if transfer_syntax is not None and transfer_syntax not in UNCOMPRESSED_TRANSFER_SYNTAXES:
        hint = " (compressed data sets are not decompressed to convert them)"
    raise NegotiationError(
        f"{_name(sop_class_uid)} in {what} was not accepted; "
        f"accepted for this SOP class: {accepted}{hint}"
    )


# ====================================================================== SCU


@dataclass(frozen=True, slots=True)
class _Instance:
    """An instance about to be sent: its UIDs and either encoded bytes or a Dataset."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str | None
    raw: bytes | memoryview | None = None
    dataset: Dataset | None = None
    #: A Part 10 file not read yet: its path and where its data set starts.
    path: str | os.PathLike[str] | None = None
    dataset_offset: int = 0


def _read_file_meta(path: str | os.PathLike[str]) -> _Instance:
    """The UIDs of a DICOM file and where its data set starts.

    A data set of at most :data:`SMALL_FILE_BYTES` is read in the same pass (one open,
    one worker-thread hop); a larger one is left on disk to be streamed.
    """
    with open(path, "rb") as handle:
        try:
            meta = read_file_meta(handle)
        except DatasetError as exc:
            raise DatasetError(f"{os.fspath(path)}: {exc}") from None
        small = meta.file_size - meta.dataset_offset <= SMALL_FILE_BYTES
        raw = handle.read() if small else None
    return _Instance(
        meta.sop_class_uid,
        meta.sop_instance_uid,
        meta.transfer_syntax,
        raw,
        path=path,
        dataset_offset=meta.dataset_offset,
    )


def _open_dataset(path: str | os.PathLike[str], offset: int) -> tuple[BinaryIO, int]:
    """Open ``path`` at its data set; return the handle and the data set's length."""
    handle = open(path, "rb")  # noqa: SIM115 - closed by the caller
    try:
        size = os.fstat(handle.fileno()).st_size
        if size < offset:
            raise DatasetError(f"{os.fspath(path)}: the file is shorter than its meta header")
        handle.seek(offset)
    except BaseException:
        handle.close()
        raise
    return handle, size - offset


async def _file_chunks(handle: BinaryIO, length: int) -> AsyncGenerator[bytes, None]:
    """Up to ``length`` bytes of ``handle`` in chunks of :data:`STREAM_CHUNK_BYTES`,
    each read in a worker thread; stops early at the end of the file."""
    remaining = length
    while remaining > 0:
        chunk = await anyio.to_thread.run_sync(handle.read, min(STREAM_CHUNK_BYTES, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


async def _send_file(
    assoc: Association, context_id: int, command: Command, instance: _Instance
) -> None:
    """Send the data set of a Part 10 file as it is, read in chunks (bounded memory)."""
    assert instance.path is not None
    handle, length = await anyio.to_thread.run_sync(
        _open_dataset, instance.path, instance.dataset_offset
    )
    try:
        async with aclosing(_file_chunks(handle, length)) as chunks:
            await assoc.send_message_stream(context_id, command, chunks, length)
    finally:
        handle.close()


def _read_part10(path: str | os.PathLike[str]) -> _Instance:
    """Meta header and dataset bytes of a DICOM file, with one read of the dataset."""
    with open(path, "rb") as handle:
        try:
            meta = read_file_meta(handle)
        except DatasetError as exc:
            raise DatasetError(f"{os.fspath(path)}: {exc}") from None
        data = handle.read()
    return _Instance(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax, data)


def _from_bytes(data: bytes) -> _Instance:
    meta = read_file_meta(io.BytesIO(data))
    raw = memoryview(data)[meta.dataset_offset :]
    return _Instance(meta.sop_class_uid, meta.sop_instance_uid, meta.transfer_syntax, raw)


def _from_dataset(ds: Dataset) -> _Instance:
    meta = getattr(ds, "file_meta", None)

    def uid(keyword: str, meta_keyword: str) -> str:
        value = ds.get(keyword) or (meta.get(meta_keyword) if meta is not None else None)
        if not value:
            raise ValueError(f"the dataset has no {keyword}")
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return "\\".join(str(part) for part in value)  # as encoded: one value
        return str(value)

    sop_class = uid("SOPClassUID", "MediaStorageSOPClassUID")
    sop_instance = uid("SOPInstanceUID", "MediaStorageSOPInstanceUID")
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        implicit, little = ds.original_encoding
        if implicit is not None and little is not None:
            syntax = _ENCODINGS.get((bool(implicit), bool(little)))
    return _Instance(sop_class, sop_instance, None if not syntax else str(syntax), dataset=ds)


async def _load(source: StoreSource) -> _Instance:
    from pydicom.dataset import Dataset

    if isinstance(source, Dataset):
        return _from_dataset(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        return await anyio.to_thread.run_sync(_read_file_meta, source)
    raise TypeError(
        f"store() takes a pydicom Dataset, a path or bytes, not {type(source).__name__}"
    )


def _transcode(instance: _Instance, transfer_syntax: str) -> bytes:
    """Encode the instance in ``transfer_syntax`` (decoding its bytes first if need be)."""
    dataset = instance.dataset
    if dataset is None:
        assert instance.raw is not None
        assert instance.transfer_syntax is not None
        dataset = decode_dataset(
            instance.raw, instance.transfer_syntax, inflate_limit=INFLATE_LIMIT
        )
    return encode_dataset(dataset, transfer_syntax)


def _is_big(instance: _Instance) -> bool:
    dataset = instance.dataset
    return dataset is None or any(keyword in dataset for keyword in _BULK_KEYWORDS)


def _check_priority(priority: int) -> int:
    try:
        return int(Priority(priority))
    except ValueError:
        raise ValueError(
            f"priority must be Priority.LOW, MEDIUM or HIGH (2, 0, 1), not {priority!r}"
        ) from None


async def store(
    assoc: Association,
    dataset: StoreSource,
    *,
    priority: int = Priority.MEDIUM,
    move_originator_ae_title: str | None = None,
    move_originator_message_id: int | None = None,
    timeout: float | None = None,
) -> Status:
    """Send one instance with C-STORE on ``assoc``; see :meth:`StorageOperations.store`."""
    command = make_command(CommandField.C_STORE_RQ, has_dataset=True)
    command["Priority"] = _check_priority(priority)
    if (move_originator_ae_title is None) != (move_originator_message_id is None):
        raise ValueError(
            "move_originator_ae_title and move_originator_message_id go together "
            "(both name the C-MOVE this C-STORE is a sub-operation of)"
        )
    if move_originator_ae_title is not None and move_originator_message_id is not None:
        from aionetdicom.ae import validate_ae_title

        command["MoveOriginatorApplicationEntityTitle"] = validate_ae_title(
            move_originator_ae_title, "move originator AE title"
        )
        command["MoveOriginatorMessageID"] = move_originator_message_id
    instance = await _load(dataset)
    command["AffectedSOPClassUID"] = instance.sop_class_uid
    command["AffectedSOPInstanceUID"] = instance.sop_instance_uid
    context, convert = choose_context(
        assoc.contexts,
        instance.sop_class_uid,
        instance.transfer_syntax,
        as_requestor=assoc.is_requestor,
    )
    data: bytes | memoryview | None = None
    if instance.raw is not None and not convert:
        data = instance.raw
    elif instance.path is not None and not convert:
        pass  # streamed from the file below
    elif instance.path is not None:
        instance = await anyio.to_thread.run_sync(_read_part10, instance.path)
        data = await anyio.to_thread.run_sync(_transcode, instance, context.transfer_syntax)
    elif _is_big(instance):
        data = await anyio.to_thread.run_sync(_transcode, instance, context.transfer_syntax)
    else:
        data = _transcode(instance, context.transfer_syntax)
    message_id = assoc.next_message_id()
    command["MessageID"] = message_id
    async with assoc.expect_responses(message_id) as responses:
        if data is None:
            await _send_file(assoc, context.context_id, command, instance)
        else:
            await assoc.send_message(context.context_id, command, data)
        response = await assoc.receive_response(responses, "C-STORE response", timeout)
    status = response.command.get("Status")
    if not isinstance(status, int):
        assoc.log.warning("association #%d: C-STORE response without Status", assoc.id)
        status = DEFAULT_STORE_STATUS
    return Status(status, "C-STORE")


class StorageOperations:
    """Association methods for this service (mixed into :class:`Association`)."""

    async def store(
        self,
        dataset: StoreSource,
        *,
        priority: int = Priority.MEDIUM,
        move_originator_ae_title: str | None = None,
        move_originator_message_id: int | None = None,
        timeout: float | None = None,
    ) -> Status:
        """C-STORE one instance; return the peer's status (a :class:`Status`).

        ``dataset`` is a pydicom Dataset, or a DICOM Part 10 file as a path or as bytes.
        A file whose transfer syntax the peer accepted for its SOP class is sent as it
        is, without decoding. An uncompressed instance is converted (in a worker thread)
        when only another uncompressed syntax was accepted; otherwise
        :class:`NegotiationError` is raised before anything is sent. A Dataset's
        transfer syntax is ``file_meta.TransferSyntaxUID``, else the encoding it was
        read in; without either, any accepted uncompressed syntax will do.

        ``move_originator_ae_title`` and ``move_originator_message_id`` mark a C-MOVE
        sub-operation; ``timeout`` overrides the DIMSE timeout for the response.
        """
        return await store(
            cast("Association", self),
            dataset,
            priority=priority,
            move_originator_ae_title=move_originator_ae_title,
            move_originator_message_id=move_originator_message_id,
            timeout=timeout,
        )


# ====================================================================== SCP


class InvalidSOPInstanceUID(ValueError):
    """A received SOP Instance UID is not a valid UID, so it cannot name a file."""


_META_VRS = {
    0x0001: b"OB",
    0x0002: b"UI",
    0x0003: b"UI",
    0x0010: b"UI",
    0x0012: b"UI",
    0x0013: b"SH",
    0x0016: b"AE",
    0x0017: b"AE",
    0x0018: b"AE",
}
_META_KEYWORDS = {
    0x0001: "FileMetaInformationVersion",
    0x0002: "MediaStorageSOPClassUID",
    0x0003: "MediaStorageSOPInstanceUID",
    0x0010: "TransferSyntaxUID",
    0x0012: "ImplementationClassUID",
    0x0013: "ImplementationVersionName",
    0x0016: "SourceApplicationEntityTitle",
    0x0017: "SendingApplicationEntityTitle",
    0x0018: "ReceivingApplicationEntityTitle",
}


def _encode_file_meta(values: Mapping[int, bytes | str]) -> bytes:
    """Preamble, ``DICM`` and the group 0002 elements (Explicit VR LE, PS3.10 7.1)."""
    body = bytearray()
    for element in sorted(values):
        value = values[element]
        vr = _META_VRS[element]
        raw = value if isinstance(value, bytes) else value.encode("ascii")
        if len(raw) % 2:
            raw += b"\x00" if vr in (b"UI", b"OB") else b" "
        if vr == b"OB":
            body += struct.pack("<HH2sHL", 2, element, vr, 0, len(raw))
        else:
            body += struct.pack("<HH2sH", 2, element, vr, len(raw))
        body += raw
    group_length = struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(body))
    return bytes(128) + b"DICM" + group_length + bytes(body)


def _check_file_uid(uid: str) -> str:
    """``uid`` if it can name a file, else raise InvalidSOPInstanceUID saying why."""
    if is_valid_uid(uid) and uid:
        return uid
    if any(ch in uid for ch in "/\\") or ".." in uid:
        why = "holds a path separator or '..'"
    elif any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uid):
        why = "holds NUL or control characters"
    else:
        why = "is not a valid UID (digits and dots, at most 64 characters)"
    raise InvalidSOPInstanceUID(
        f"SOP Instance UID {uid!r} {why}; refusing to use it as a file name"
    )


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (tests replace this to simulate a full disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(folder: pathlib.Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where directories can't open)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(
    folder: pathlib.Path, name: str, header: bytes, raw: bytes | memoryview
) -> pathlib.Path:
    """Write ``header`` + ``raw`` to ``folder/name`` via a synced temporary file and rename."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    temporary = folder / f".{name}.{secrets.token_hex(6)}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o666)
    try:
        try:
            _write_all(fd, header)
            _write_all(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, final)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(folder)
    return final


@dataclass(eq=False)
class StoreRequest:
    """A C-STORE request received: what a store handler gets.

    ``raw`` is the data set exactly as received, in ``transfer_syntax``; ``dataset``
    decodes it (with pydicom) on first access only.
    """

    assoc: Association
    context: NegotiatedContext
    command: Command
    raw: bytes
    _dataset: Dataset | None = field(default=None, init=False, repr=False)

    def __repr__(self) -> str:
        return (
            f"<StoreRequest message {self.message_id} {_name(self.sop_class_uid)} "
            f"{self.sop_instance_uid} ({len(self.raw)} bytes)>"
        )

    def _text(self, keyword: str) -> str:
        value = self.command.get(keyword)
        return value if isinstance(value, str) else ""

    @property
    def message_id(self) -> int:
        """The request's Message ID."""
        value = self.command.get("MessageID")
        return value if isinstance(value, int) else 0

    @property
    def sop_class_uid(self) -> str:
        """Affected SOP Class UID of the command ("" when missing)."""
        return self._text("AffectedSOPClassUID")

    @property
    def sop_instance_uid(self) -> str:
        """Affected SOP Instance UID of the command ("" when missing); not validated."""
        return self._text("AffectedSOPInstanceUID")

    @property
    def transfer_syntax(self) -> str:
        """The transfer syntax ``raw`` is encoded in (the presentation context's)."""
        return self.context.transfer_syntax

    @property
    def priority(self) -> int:
        """Priority of the request (a :class:`Priority` when it is a valid one)."""
        return command_priority(self.command)

    @property
    def move_originator_ae_title(self) -> str | None:
        """The AE title that asked for this C-STORE with C-MOVE, if it is a sub-operation."""
        value = self.command.get("MoveOriginatorApplicationEntityTitle")
        return value if isinstance(value, str) and value else None

    @property
    def move_originator_message_id(self) -> int | None:
        """The Message ID of that C-MOVE request, if any."""
        value = self.command.get("MoveOriginatorMessageID")
        return value if isinstance(value, int) else None

    @property
    def dataset(self) -> Dataset:
        """The data set decoded by pydicom (on first access; raises DatasetError)."""
        if self._dataset is None:
            self._dataset = decode_dataset(
                self.raw, self.transfer_syntax, inflate_limit=INFLATE_LIMIT
            )
        return self._dataset

    def _meta_values(self) -> dict[int, bytes | str]:
        ae = self.assoc.ae
        values: dict[int, bytes | str] = {
            0x0001: b"\x00\x01",
            0x0002: self.sop_class_uid,
            0x0003: self.sop_instance_uid,
            0x0010: self.transfer_syntax,
            0x0012: ae.implementation_class_uid,
        }
        if ae.implementation_version_name:
            values[0x0013] = ae.implementation_version_name
        local, peer = self.assoc.local_ae_title, self.assoc.peer_ae_title
        if local:
            values[0x0016] = local
            values[0x0018] = local
        if peer:
            values[0x0017] = peer
        return values

    @property
    def file_meta(self) -> FileMetaDataset:
        """File Meta Information for storing this instance (PS3.10 7.1).

        From the command and context, with our Implementation Class UID and Version
        Name, and the AE titles (Source and Receiving: ours; Sending: the peer's).
        """
        from pydicom.dataset import FileMetaDataset

        meta = FileMetaDataset()
        for element, value in self._meta_values().items():
            setattr(meta, _META_KEYWORDS[element], value)
        return meta

    def file_header(self) -> bytes:
        """The Part 10 preamble, ``DICM`` and encoded File Meta Information."""
        return _encode_file_meta(self._meta_values())

    async def save_to(self, folder: str | os.PathLike[str]) -> pathlib.Path:
        """Write ``<folder>/<SOP Instance UID>.dcm`` atomically; return its path.

        The Part 10 file (preamble, file meta, the data set bytes as received) goes to
        a temporary file in ``folder`` that is fsynced and then renamed, in a worker
        thread; an existing file of that name is replaced. A SOP Instance UID that is
        not a valid UID raises :class:`InvalidSOPInstanceUID` (a ValueError) and
        nothing is written; on a full disk the temporary file is removed and the
        OSError (ENOSPC) propagates; the store service answers 0xA700 for it.
        """
        name = _check_file_uid(self.sop_instance_uid) + ".dcm"
        header = self.file_header()
        return await anyio.to_thread.run_sync(
            _write_atomically, pathlib.Path(folder), name, header, self.raw
        )


#: A store handler: gets the request, returns the status to answer (0x0000 Success).
StoreHandler = Callable[[StoreRequest], Awaitable[int]]


def _status_for_error(assoc: Association, exc: Exception) -> tuple[int, str]:
    """The failure status and error comment for an exception raised by a store handler."""
    if isinstance(exc, InvalidSOPInstanceUID):
        assoc.log.warning("association #%d: C-STORE refused: %s", assoc.id, exc)
        return INVALID_SOP_INSTANCE, "Invalid SOP Instance UID"
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _OUT_OF_SPACE):
        assoc.log.error("association #%d: C-STORE out of resources: %s", assoc.id, exc)
        return OUT_OF_RESOURCES, "Out of resources"
    assoc.log.exception("association #%d: store handler raised", assoc.id)
    return DEFAULT_STORE_STATUS, "Storage handler failed"


def store_service(handler: StoreHandler) -> RequestHandler:
    """A DIMSE request handler that answers C-STORE-RQ with ``handler``'s status.

    Register it with ``ae.handle_dimse(CommandField.C_STORE_RQ, store_service(fn))`` or
    per association in ``assoc.request_handlers``. Exceptions from ``handler`` become
    failure statuses (see the module docstring); a return value that is not an int
    status gives :data:`DEFAULT_STORE_STATUS` and a warning.
    """

    async def serve_store(assoc: Association, message: AssembledMessage) -> None:
        command = message.command
        context = next((c for c in assoc.contexts if c.context_id == message.context_id), None)
        comment = ""
        if message.dataset is None or context is None:
            assoc.log.warning("association #%d: C-STORE-RQ without a data set", assoc.id)
            status, comment = DEFAULT_STORE_STATUS, "No data set"
        else:
            request = StoreRequest(assoc, context, command, message.dataset)
            try:
                result = await handler(request)
            except Exception as exc:
                status, comment = _status_for_error(assoc, exc)
            else:
                if (
                    isinstance(result, int)
                    and not isinstance(result, bool)
                    and (0 <= result <= 0xFFFF)
                ):
                    status = int(result)
                else:
                    assoc.log.warning(
                        "association #%d: store handler returned %r, not a status; "
                        "answering 0x%04X",
                        assoc.id,
                        result,
                        DEFAULT_STORE_STATUS,
                    )
                    status, comment = DEFAULT_STORE_STATUS, "Storage handler gave no status"
        response = make_command(CommandField.C_STORE_RSP, Status=status)
        set_if_valid(response, "MessageIDBeingRespondedTo", command.get("MessageID", 0))
        set_if_valid(response, "AffectedSOPClassUID", command.get("AffectedSOPClassUID"))
        set_if_valid(response, "AffectedSOPInstanceUID", command.get("AffectedSOPInstanceUID"))
        if comment and Status(status).is_failure:
            response["ErrorComment"] = comment
        await assoc.send_message(message.context_id, response)

    return serve_store
