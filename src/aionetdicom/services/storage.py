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
import stat
import struct
import zlib
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Union, cast

import anyio
import anyio.lowlevel

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
from aionetdicom.dataset_prefix import PIXEL_DATA, check_nesting, prefix_end
from aionetdicom.datasets import (
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    DatasetError,
    decode_dataset,
    encode_dataset,
    encoding_of,
    inflate,
    read_file_meta,
)
from aionetdicom.dimse.command_set import (
    Command,
    CommandField,
    Priority,
    command_priority,
    make_command,
)
from aionetdicom.dimse.status import Status
from aionetdicom.errors import NegotiationError
from aionetdicom.pdu.pdus import Buffer

if TYPE_CHECKING:
    from pydicom.dataset import Dataset, FileMetaDataset

    from aionetdicom.association import Association, RequestHandler
    from aionetdicom.dataset_stream import DatasetStream

__all__ = [
    "DATASET_MISMATCH",
    "DEFAULT_STORE_STATUS",
    "INVALID_SOP_INSTANCE",
    "MAX_PRESENTATION_CONTEXTS",
    "OUT_OF_RESOURCES",
    "DatasetMismatch",
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
#: A streamed data set is written to disk in batches of about this many bytes.
SAVE_BATCH_BYTES = 4 * 1024 * 1024
#: Most bytes of a data set :meth:`StoreRequest.peek` reads to find its leading elements.
PEEK_LIMIT = 16 * 1024 * 1024
#: "Error: Data Set does not match SOP Class" (A9xx): the data set's UIDs are not the
#: command's.
DATASET_MISMATCH = 0xA900
#: Files whose data set is at most this long are read whole (fewer thread hops for the
#: typical image); larger ones are streamed in chunks of :data:`STREAM_CHUNK_BYTES`.
SMALL_FILE_BYTES = 4 * 1024 * 1024
#: Bytes of a small file parsed for its File Meta Information when it was read whole.
_META_WINDOW = 64 * 1024
#: Linux's preadv flag that fails instead of waiting for the disk (None elsewhere).
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)

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
    Per SOP class: a context for each uncompressed syntax the instances are in, one
    offering all uncompressed syntaxes (the instances' own first, then
    ``transfer_syntaxes``) as the fallback, and one context for each compressed syntax, so
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
            if len(uncompressed) > 1:
                # The instances' own uncompressed syntaxes alone first: a peer that
                # prefers another one cannot force a conversion of every instance.
                own = [ts for ts in dict.fromkeys(syntaxes) if ts in UNCOMPRESSED_TRANSFER_SYNTAXES]
                separate.extend(PresentationContext(sop_class, (ts,)) for ts in own)
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


#: Whether a device (``st_dev``) is a memory file system, once looked up.
_MEMORY_DEVICES: dict[int, bool] = {}
_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})


def _in_memory(device: int, path: str | os.PathLike[str]) -> bool:
    """True when ``path`` (on ``device``) lives on tmpfs or ramfs, per /proc/self/mounts."""
    known = _MEMORY_DEVICES.get(device)
    if known is not None:
        return known
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        kind = ""
    answer = kind in _MEMORY_FILE_SYSTEMS
    _MEMORY_DEVICES[device] = answer
    return answer


def _read_cached(path: str | os.PathLike[str]) -> _Instance | None:
    """A small regular file read on the event loop when the page cache holds all of it.

    ``preadv(RWF_NOWAIT)`` fails instead of waiting for the disk, so this never blocks
    on I/O and saves the worker-thread hop for the usual case of a file just written or
    read; on tmpfs and ramfs (memory, which refuse the flag) a plain read is as safe.
    None means: use the worker thread (not cached, large, not a regular file, any
    error, which the thread path then reports properly).
    """
    if _RWF_NOWAIT is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        size = info.st_size
        if not stat.S_ISREG(info.st_mode) or not 132 < size <= SMALL_FILE_BYTES:
            return None
        data = bytearray(size)
        try:
            count = os.preadv(fd, [data], 0, _RWF_NOWAIT)
        except OSError as exc:
            # tmpfs and ramfs do not take the flag, but never wait for a disk either.
            if exc.errno != errno.EOPNOTSUPP or not _in_memory(info.st_dev, path):
                return None
            count = os.preadv(fd, [data], 0)
        if count != size:
            return None
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        meta = read_file_meta(io.BytesIO(memoryview(data)[:_META_WINDOW]))
    except DatasetError:
        return None
    if meta.dataset_offset > min(size, _META_WINDOW - 8):
        return None  # a meta group longer than the window: let the file reader parse it
    return _Instance(
        meta.sop_class_uid,
        meta.sop_instance_uid,
        meta.transfer_syntax,
        memoryview(data)[meta.dataset_offset :].toreadonly(),
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
        cached = _read_cached(source)
        if cached is not None:
            await anyio.lowlevel.checkpoint()
            return cached
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


class DatasetMismatch(ValueError):
    """The data set's SOP Class/Instance UIDs are not the command's (status 0xA900)."""


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


def _write_all(fd: int, data: Buffer) -> None:
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


class _PartFile:
    """A temporary file in the destination folder that becomes ``name`` only when complete.

    Written by worker threads, one call at a time; :meth:`discard` (safe from the event
    loop: close and unlink) removes it on any failure, so no partial file is left.
    """

    __slots__ = ("fd", "final", "folder", "temporary", "written")

    def __init__(self, folder: pathlib.Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.final = folder / name
        self.temporary = folder / f".{name}.{secrets.token_hex(6)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        self.fd: int | None = os.open(self.temporary, flags, 0o666)
        self.written = 0

    def write(self, buffers: Sequence[Buffer]) -> None:
        assert self.fd is not None
        for buffer in buffers:
            _write_all(self.fd, buffer)
            self.written += memoryview(buffer).nbytes

    def finish(self, buffers: Sequence[Buffer]) -> tuple[pathlib.Path, int]:
        """Write the rest, fsync, close and rename into place (then sync the folder)."""
        self.write(buffers)
        assert self.fd is not None
        os.fsync(self.fd)
        fd, self.fd = self.fd, None
        os.close(fd)
        os.replace(self.temporary, self.final)
        _fsync_directory(self.folder)
        return self.final, self.written

    def discard(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with suppress(OSError):
                os.close(fd)
        with suppress(OSError):
            os.unlink(self.temporary)


def _write_atomically(
    folder: pathlib.Path, name: str, *buffers: Buffer
) -> tuple[pathlib.Path, int]:
    """Write ``buffers`` to ``folder/name`` via a synced temporary file and rename."""
    part = _PartFile(folder, name)
    try:
        return part.finish(buffers)
    except BaseException:
        part.discard()
        raise


class StoreRequest:
    """A C-STORE request received: what a store handler gets.

    The data set is in the presentation context's ``transfer_syntax``. A handler
    registered normally gets it whole: ``raw`` (the bytes as received) and ``dataset``
    (decoded by pydicom on first access). A handler registered with
    ``@ae.on_store(streaming=True)`` is called as soon as the command arrives, while
    the data set is still arriving; it reads it with :meth:`save_to` (straight to
    disk), :meth:`chunks`, :meth:`read` or :meth:`peek`, in bounded memory (see
    :mod:`aionetdicom.dataset_stream`). Those four work in both modes, so one handler
    serves either; ``raw`` and ``dataset`` need the whole data set (after ``read``).
    """

    def __init__(
        self,
        assoc: Association,
        context: NegotiatedContext,
        command: Command,
        raw: bytes | None = None,
        *,
        stream: DatasetStream | None = None,
    ) -> None:
        if (raw is None) == (stream is None):
            raise ValueError("a StoreRequest has either the data set bytes or their stream")
        self.assoc = assoc
        self.context = context
        self.command = command
        #: Where :meth:`save_to` stored the instance, and the file's size in bytes.
        self.path: pathlib.Path | None = None
        self.file_size = 0
        self._raw = raw
        self._stream = stream
        self._dataset: Dataset | None = None
        # Streaming: fragments taken from the stream to look at, replayed by chunks().
        self._head: list[Buffer] = []
        self._prefix = bytearray()  # the head joined (inflated when Deflated)
        self._inflater: Any = None
        self._consumed = False

    def __repr__(self) -> str:
        if self._raw is not None:
            size = f"{len(self._raw)} bytes"
        else:
            assert self._stream is not None
            size = f"streamed, {self._stream.received} bytes so far"
        return (
            f"<StoreRequest message {self.message_id} {_name(self.sop_class_uid)} "
            f"{self.sop_instance_uid} ({size})>"
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
        """The transfer syntax of the data set (the presentation context's)."""
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
    def is_streaming(self) -> bool:
        """True when the data set arrives as a stream (``streaming=True`` handler)."""
        return self._stream is not None

    @property
    def raw(self) -> bytes:
        """The data set exactly as received (streaming: only after :meth:`read`)."""
        if self._raw is None:
            raise RuntimeError(
                "the data set of this request is streamed: use await request.read() "
                "(or save_to, chunks, peek) instead of request.raw"
            )
        return self._raw

    @property
    def dataset(self) -> Dataset:
        """The data set decoded by pydicom (on first access; raises DatasetError).

        Streaming: available after :meth:`read`, or after :meth:`save_to` (read back
        from the stored file).
        """
        if self._dataset is None:
            if self._raw is not None:
                self._dataset = decode_dataset(
                    self._raw, self.transfer_syntax, inflate_limit=_inflate_limit(self.assoc)
                )
            elif self.path is not None:
                self._dataset = _read_stored(self.path, _inflate_limit(self.assoc))
            else:
                raise RuntimeError(
                    "the data set of this request is streamed: await request.read() or "
                    "request.peek() first (or save_to, then the stored file is read)"
                )
        return self._dataset

    # ------------------------------------------------------------------ reading

    def _take(self) -> None:
        if self._consumed:
            raise RuntimeError(
                "the data set of this request was already read by save_to, chunks or read"
            )
        self._consumed = True

    def _add_to_prefix(self, chunk: Buffer) -> None:
        if self._inflater is not None:
            room = PEEK_LIMIT + 1 - len(self._prefix)
            try:
                self._prefix += self._inflater.decompress(chunk, max(room, 1))
            except zlib.error as exc:
                raise DatasetError(f"deflated dataset is corrupt: {exc}") from exc
        else:
            self._prefix += chunk

    async def peek(self, stop_before: int = PIXEL_DATA) -> Dataset:
        """The data set's elements before tag ``stop_before`` (default Pixel Data),
        decoded, reading of a streamed data set little more than they need (at most
        about twice as much, and usually just the first fragment).

        What is read stays available to :meth:`save_to`, :meth:`chunks` and
        :meth:`read`. Raises :class:`~aionetdicom.datasets.DatasetError` when the
        elements cannot be walked or take more than :data:`PEEK_LIMIT` bytes.
        """
        implicit, little, deflated = encoding_of(self.transfer_syntax)
        syntax = EXPLICIT_VR_LITTLE_ENDIAN if deflated else self.transfer_syntax
        if self._raw is not None:
            data = memoryview(self._raw)
            complete = True
            if deflated:  # inflate only what the walk may need, never a whole bomb
                head, complete = _inflate_head(self._raw, PEEK_LIMIT)
                data = memoryview(head)
            end = prefix_end(data, implicit=implicit, little=little, stop_tag=stop_before)
            if end is None and not complete:
                raise _prefix_too_long(stop_before)
            return decode_dataset(data if end is None else data[:end], syntax)
        stream = self._stream
        assert stream is not None
        if self._consumed:
            raise RuntimeError("peek() must come before save_to, chunks or read")
        if deflated and self._inflater is None:
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            for chunk in self._head:
                self._add_to_prefix(chunk)
        # Each walk starts over from the first byte, so the prefix is walked again only
        # once it has doubled: linear in total, however small the fragments (walking
        # after every fragment would be quadratic, for a peer an easy way to hog the
        # event loop).
        walk_at = 0
        while True:
            size = len(self._prefix)
            if size >= walk_at or size > PEEK_LIMIT:
                end = self._prefix_end(implicit, little, stop_before)
                if end is not None:
                    return decode_dataset(bytes(self._prefix[:end]), syntax)
                if size > PEEK_LIMIT:
                    raise _prefix_too_long(stop_before)
                walk_at = 2 * size
            try:
                chunk = await stream.receive()
            except anyio.EndOfStream:
                end = self._prefix_end(implicit, little, stop_before)
                return decode_dataset(bytes(self._prefix[:end]), syntax)
            self._head.append(chunk)
            self._add_to_prefix(chunk)

    def _prefix_end(self, implicit: bool, little: bool, stop_before: int) -> int | None:
        prefix = memoryview(self._prefix)
        try:
            return prefix_end(prefix, implicit=implicit, little=little, stop_tag=stop_before)
        finally:
            prefix.release()

    async def verify_uids(self) -> None:
        """Raise :class:`DatasetMismatch` unless the data set's SOP Class and Instance
        UIDs are those of the command (the store service answers 0xA900 for it)."""
        dataset = await self.peek(stop_before=0x00080019)
        found = (
            str(dataset.get("SOPClassUID", "") or ""),
            str(dataset.get("SOPInstanceUID", "") or ""),
        )
        if found != (self.sop_class_uid, self.sop_instance_uid):
            raise DatasetMismatch(
                f"the data set is SOP Class {found[0] or '(none)'} instance "
                f"{found[1] or '(none)'}, the command says SOP Class "
                f"{self.sop_class_uid or '(none)'} instance {self.sop_instance_uid or '(none)'}"
            )

    async def chunks(self) -> AsyncGenerator[Buffer, None]:
        """The data set as it arrives, in pieces (once per request)."""
        self._take()
        if self._raw is not None:
            yield self._raw
            return
        stream = self._stream
        assert stream is not None
        head, self._head = self._head, []
        self._prefix = bytearray()
        for chunk in head:
            yield chunk
        async for chunk in stream:
            yield chunk

    async def read(self) -> bytes:
        """The whole data set in memory (streaming: waits for all of it).

        Streaming, it holds at most the AE's ``maximum_dataset_size`` (as a request
        received into memory would); beyond it MemoryError, answered 0xA700 (use
        :meth:`save_to` or :meth:`chunks` for larger instances).
        """
        if self._raw is None:
            limit = getattr(self.assoc.ae, "maximum_dataset_size", None)
            parts: list[Buffer] = []
            size = 0
            async with aclosing(self.chunks()) as chunks:
                async for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise MemoryError(
                            f"the data set exceeds maximum_dataset_size ({limit} bytes) "
                            "to read into memory; save_to() or chunks() take any size"
                        )
                    parts.append(chunk)
            self._raw = b"".join(parts)
            # Now in memory: from here on it is read as a request received whole would
            # be (save_to and chunks take the bytes, peek and raw see them).
            self._consumed = False
        return self._raw

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

    async def save_to(
        self, folder: str | os.PathLike[str], *, check_uids: bool = True
    ) -> pathlib.Path:
        """Store the instance as ``<folder>/<SOP Instance UID>.dcm``; return its path.

        The Part 10 file (preamble, file meta, the data set bytes as received) is
        written to a temporary file in ``folder`` (a streamed data set while it
        arrives, in batches of :data:`SAVE_BATCH_BYTES` written by worker threads),
        fsynced, and renamed into place only when complete; an existing file of that
        name is replaced. Whatever goes wrong (the association aborts mid-transfer,
        the disk fills up, cancellation) the temporary file is removed, so no
        partial file is ever left.

        Refused before anything is written: a SOP Instance UID that is not a valid UID
        (:class:`InvalidSOPInstanceUID`, answered 0x0117 by the store service), and
        with ``check_uids`` (the default) a data set whose SOP Class/Instance UIDs are
        not the command's (:class:`DatasetMismatch`, answered 0xA900). A full disk
        raises OSError (ENOSPC), answered 0xA700.
        """
        name = _check_file_uid(self.sop_instance_uid) + ".dcm"
        if check_uids:
            await self.verify_uids()
        header = self.file_header()
        target = pathlib.Path(folder)
        if self._raw is not None:  # received whole, or streamed and then read()
            self._take()
            path, size = await anyio.to_thread.run_sync(
                _write_atomically, target, name, header, self.raw
            )
        else:
            path, size = await self._stream_to_file(target, name, header)
        self.path, self.file_size = path, size
        return path

    async def _stream_to_file(
        self, folder: pathlib.Path, name: str, header: bytes
    ) -> tuple[pathlib.Path, int]:
        # The part file is created with the first batch: a data set smaller than a
        # batch is written, synced and renamed by one worker-thread call.
        part: _PartFile | None = None
        try:
            pending: list[Buffer] = [header]
            size = len(header)
            # aclosing: a failed write leaves no half-read generator to finalize later.
            async with aclosing(self.chunks()) as chunks:
                async for chunk in chunks:
                    pending.append(chunk)
                    size += len(chunk)
                    if size >= SAVE_BATCH_BYTES:
                        if part is None:
                            part = await anyio.to_thread.run_sync(_PartFile, folder, name)
                        await anyio.to_thread.run_sync(part.write, pending)
                        pending, size = [], 0
            if part is None:
                return await anyio.to_thread.run_sync(_write_atomically, folder, name, *pending)
            return await anyio.to_thread.run_sync(part.finish, pending)
        except BaseException:
            if part is not None:
                part.discard()
            raise

    async def finish_receiving(self) -> None:
        """Drop what the handler did not read and wait for the end of the data set, so
        the response goes out after it; raises the association's error if it ended."""
        stream = self._stream
        if stream is None or stream.complete:
            return
        stream.discard()
        await stream.wait_finished()


def _inflate_limit(assoc: Association) -> int:
    """The most a received Deflated data set may inflate to: the AE's
    ``maximum_dataset_size`` (what it holds in memory), at most :data:`INFLATE_LIMIT`."""
    limit = getattr(assoc.ae, "maximum_dataset_size", None)
    return INFLATE_LIMIT if limit is None else min(limit, INFLATE_LIMIT)


def _inflate_head(raw: Buffer, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit + 1`` bytes of a Deflated data set inflated, and whether that is all."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        head = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise DatasetError(f"deflated dataset is corrupt: {exc}") from exc
    return head, inflater.eof and len(head) <= limit


def _prefix_too_long(stop_before: int) -> DatasetError:
    """peek()'s error for a data set whose elements before ``stop_before`` exceed
    :data:`PEEK_LIMIT`."""
    return DatasetError(
        f"the elements before ({stop_before >> 16:04X},{stop_before & 0xFFFF:04X}) "
        f"take more than {PEEK_LIMIT} bytes"
    )


def _read_stored(path: pathlib.Path, inflate_limit: int = INFLATE_LIMIT) -> Dataset:
    """The data set of a file ``save_to`` wrote (blocking; small files, or by choice).

    Checked as a received one is (nesting depth, inflated size) before pydicom reads it.
    """
    from pydicom import dcmread

    try:
        raw = path.read_bytes()
        meta = read_file_meta(io.BytesIO(raw))
    except (OSError, DatasetError) as exc:
        raise DatasetError(f"cannot read the stored instance {path}: {exc}") from exc
    implicit, little, deflated = encoding_of(meta.transfer_syntax)
    if deflated:  # pydicom inflates it whole: a bomb must not get that far
        check_nesting(
            inflate(raw[meta.dataset_offset :], inflate_limit), implicit=False, little=True
        )
    else:
        check_nesting(memoryview(raw)[meta.dataset_offset :], implicit=implicit, little=little)
    try:
        dataset = dcmread(io.BytesIO(raw))
    except Exception as exc:
        raise DatasetError(f"cannot read the stored instance {path}: {exc}") from exc
    return dataset


#: A store handler: gets the request, returns the status to answer (0x0000 Success).
StoreHandler = Callable[[StoreRequest], Awaitable[int]]


def store_service(handler: StoreHandler, *, streaming: bool = False) -> RequestHandler:
    """A DIMSE request handler that answers C-STORE-RQ with ``handler``'s status.

    Register it with ``ae.handle_dimse(CommandField.C_STORE_RQ, store_service(fn))`` or
    per association in ``assoc.request_handlers``; ``streaming=True`` hands ``fn`` the
    request as soon as its command arrives (see :class:`StoreRequest`). Statuses as in
    :mod:`aionetdicom.services.storage_scp`.
    """
    from aionetdicom.services.storage_scp import handler_service

    return handler_service(handler, streaming=streaming)
