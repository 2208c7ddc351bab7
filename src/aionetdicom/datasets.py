"""Datasets on the wire: encode and decode with pydicom, read file meta without pydicom.

DIMSE carries datasets without the File Meta Information; their encoding is the
transfer syntax of the presentation context. pydicom does the dataset work; the file
meta parser here is small and strict so that a stored file can be sent as it is,
without decoding the dataset at all.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from aionetdicom.acse.contexts import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: Transfer syntaxes whose encoding is native (not encapsulated); datasets can be
#: converted between them by pydicom alone.
UNCOMPRESSED_TRANSFER_SYNTAXES = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"})
_LONG_VRS |= frozenset({b"UR", b"UT", b"UV"})
_TAG = struct.Struct("<HH")


class DatasetError(ValueError):
    """A dataset or DICOM file could not be read, written or converted."""


class DatasetTooLarge(DatasetError):
    """A dataset would exceed a size limit once decoded (a Deflated one inflating past it)."""


def encoding_of(transfer_syntax: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) for a transfer syntax UID.

    Every transfer syntax other than Implicit VR LE and Explicit VR BE is explicit
    VR little endian at the dataset level (encapsulated pixel data included).
    """
    if transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN:
        return True, True, False
    if transfer_syntax == EXPLICIT_VR_BIG_ENDIAN:
        return False, False, False
    return False, True, transfer_syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN


def encode_dataset(dataset: Dataset, transfer_syntax: str) -> bytes:
    """Encode ``dataset`` (without file meta) in ``transfer_syntax``."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    implicit, little, deflated = encoding_of(transfer_syntax)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = implicit
    buffer.is_little_endian = little
    try:
        write_dataset(buffer, dataset)
    except Exception as exc:
        raise DatasetError(f"cannot encode the dataset as {transfer_syntax}: {exc}") from exc
    data = buffer.getvalue()
    if deflated:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    if len(data) % 2:
        data += b"\x00"
    return data


def inflate(data: bytes, limit: int | None = None) -> bytes:
    """Inflate a Deflated Explicit VR LE dataset, refusing to grow past ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        if limit is None:
            out = inflater.decompress(data) + inflater.flush()
        else:
            out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise DatasetError(f"deflated dataset is corrupt: {exc}") from exc
    if limit is not None and (len(out) > limit or inflater.unconsumed_tail):
        raise DatasetTooLarge(f"deflated dataset inflates beyond the limit of {limit} bytes")
    if not inflater.eof:
        # zlib stops quietly where the bytes end: without this, a cut-off data set
        # would pass for a shorter one.
        raise DatasetError("deflated dataset is truncated: its deflate stream does not end")
    return out


def decode_dataset(
    data: bytes | memoryview, transfer_syntax: str, *, inflate_limit: int | None = None
) -> Dataset:
    """Decode a dataset received in ``transfer_syntax``; raise DatasetError if malformed.

    Sequences nested deeper than :data:`~aionetdicom.dataset_prefix.MAX_NESTING` levels
    are refused before pydicom, which recurses per level, sees them; a Deflated data set
    inflating past ``inflate_limit`` bytes raises :class:`DatasetTooLarge`.
    """
    from pydicom.filereader import read_dataset

    from aionetdicom.dataset_prefix import check_nesting

    implicit, little, deflated = encoding_of(transfer_syntax)
    raw = bytes(data)
    if deflated:
        raw = inflate(raw, inflate_limit)
    check_nesting(raw, implicit=implicit, little=little)
    try:
        dataset = read_dataset(io.BytesIO(raw), implicit, little)
    except Exception as exc:
        raise DatasetError(f"cannot decode the dataset as {transfer_syntax}: {exc}") from exc
    return dataset


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What DIMSE needs from a DICOM file's meta header, and where its dataset starts."""

    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    dataset_offset: int
    file_size: int


def _uid(values: dict[int, bytes], element: int) -> str:
    """The UID in (0002,``element``); it goes on the wire, so it must be ASCII."""
    try:
        value = values[element]
    except KeyError:
        raise DatasetError(f"file meta lacks (0002,{element:04X})") from None
    if not value.isascii():
        raise DatasetError(f"file meta (0002,{element:04X}) is not an ASCII UID: {value[:64]!r}")
    return value.decode("ascii").rstrip("\x00 ")


def read_file_meta(source: str | os.PathLike[str] | BinaryIO) -> FileMeta:
    """Parse the preamble and File Meta Information group of a DICOM Part 10 file.

    Reads only the header; the dataset bytes start at ``dataset_offset``. Raises
    :class:`DatasetError` for anything that is not a Part 10 file with the three UIDs.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as opened:
            return read_file_meta(opened)
    handle = source
    start = handle.tell()
    head = handle.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise DatasetError("not a DICOM Part 10 file (no 'DICM' after the 128-byte preamble)")
    values: dict[int, bytes] = {}
    offset = 132
    while True:
        header = handle.read(8)
        if len(header) < 8:
            break
        group, element = _TAG.unpack_from(header)
        if group != 0x0002:
            break
        vr = header[4:6]
        if vr in _LONG_VRS:
            extra = handle.read(4)
            if len(extra) < 4:
                raise DatasetError("file meta element truncated")
            (length,) = struct.unpack("<L", extra)
            size = 12
        else:
            (length,) = struct.unpack("<H", header[6:8])
            size = 8
        if length > 1 << 20:
            raise DatasetError(f"file meta element (0002,{element:04X}) is {length} bytes long")
        value = handle.read(length)
        if len(value) < length:
            raise DatasetError(f"file meta element (0002,{element:04X}) truncated")
        values[element] = value
        offset += size + length
    handle.seek(0, os.SEEK_END)
    file_size = handle.tell() - start
    handle.seek(start + offset)
    return FileMeta(
        transfer_syntax=_uid(values, 0x0010),
        sop_class_uid=_uid(values, 0x0002),
        sop_instance_uid=_uid(values, 0x0003),
        dataset_offset=offset,
        file_size=file_size,
    )
