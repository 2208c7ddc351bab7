"""Find where a data set's leading elements end, from its first bytes only (sans-I/O).

A streamed C-STORE data set can be checked (SOP Class/Instance UIDs) or indexed
(patient, study, series attributes) from the elements before its Pixel Data, without
waiting for, decoding or holding the rest. :func:`prefix_end` walks the element
structure (tags and lengths, nested sequences and items of undefined length included)
of Implicit VR Little Endian, Explicit VR Little Endian and Explicit VR Big Endian
data, and says where the first top-level element at or after a given tag starts.
"""

from __future__ import annotations

import struct

from aionetdicom.datasets import DatasetError

__all__ = ["MAX_NESTING", "PIXEL_DATA", "prefix_end"]

#: (7FE0,0010) Pixel Data: the usual end of what an index needs.
PIXEL_DATA = 0x7FE00010
#: Deepest nesting of sequences accepted while walking (hostile data sets).
MAX_NESTING = 64

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


class _NeedMore(Exception):
    """The data ends inside the element being walked."""


class _Walker:
    __slots__ = ("data", "implicit", "size", "tag", "u16", "u32")

    def __init__(self, data: bytes | bytearray | memoryview, implicit: bool, little: bool) -> None:
        self.data = data
        self.size = len(data)
        self.implicit = implicit
        order = "<" if little else ">"
        self.u16 = struct.Struct(order + "H")
        self.u32 = struct.Struct(order + "L")
        self.tag = struct.Struct(order + "HH")

    def read_tag(self, offset: int) -> int:
        if offset + 4 > self.size:
            raise _NeedMore
        group, element = self.tag.unpack_from(self.data, offset)
        return int(group) << 16 | int(element)

    def header(self, offset: int, tag: int) -> tuple[int, int]:
        """(offset of the value, value length) of the element at ``offset``."""
        if tag >> 16 == 0xFFFE or self.implicit:
            if offset + 8 > self.size:
                raise _NeedMore
            return offset + 8, int(self.u32.unpack_from(self.data, offset + 4)[0])
        if offset + 8 > self.size:
            raise _NeedMore
        vr = bytes(self.data[offset + 4 : offset + 6])
        if vr in _LONG_VRS:
            if offset + 12 > self.size:
                raise _NeedMore
            return offset + 12, int(self.u32.unpack_from(self.data, offset + 8)[0])
        return offset + 8, int(self.u16.unpack_from(self.data, offset + 6)[0])

    def skip_element(self, offset: int, depth: int) -> int:
        """Offset just past the element at ``offset``."""
        tag = self.read_tag(offset)
        start, length = self.header(offset, tag)
        if length != _UNDEFINED:
            end = start + length
            if end > self.size:
                raise _NeedMore
            return end
        if start - offset == 12 and bytes(self.data[offset + 4 : offset + 6]) == b"UN":
            # UN of undefined length (explicit VR: a 12-byte header): its items are
            # Implicit VR Little Endian whatever the transfer syntax (PS3.5 6.2.2), up
            # to and including the Sequence Delimitation Item.
            return _Walker(self.data, True, True).skip_items(start, depth + 1)
        return self.skip_items(start, depth + 1)

    def skip_items(self, offset: int, depth: int) -> int:
        """Offset just past the Sequence Delimitation Item ending the items at ``offset``."""
        if depth > MAX_NESTING:
            raise DatasetError(f"sequences nested deeper than {MAX_NESTING} levels")
        while True:
            tag = self.read_tag(offset)
            start, length = self.header(offset, tag)
            if tag == _SEQUENCE_END:
                return start
            if tag != _ITEM:
                raise DatasetError(
                    f"expected an item (FFFE,E000) at offset {offset}, found "
                    f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
                )
            if length != _UNDEFINED:
                offset = start + length
                if offset > self.size:
                    raise _NeedMore
                continue
            offset = start
            while (inner := self.read_tag(offset)) != _ITEM_END:
                if inner >> 16 == 0xFFFE:
                    raise DatasetError(
                        f"unexpected ({inner >> 16:04X},{inner & 0xFFFF:04X}) inside an item "
                        f"at offset {offset}"
                    )
                # An element of this item: a sequence in it nests one level deeper
                # (skip_element adds that level), not two.
                offset = self.skip_element(offset, depth)
            offset, _ = self.header(offset, _ITEM_END)


def prefix_end(
    data: bytes | bytearray | memoryview, *, implicit: bool, little: bool, stop_tag: int
) -> int | None:
    """Where the first top-level element with a tag at or above ``stop_tag`` starts.

    None when ``data`` ends before such an element begins (more data is needed, or the
    data set has none: the caller knows whether more will come). Raises
    :class:`~aionetdicom.datasets.DatasetError` for structure that cannot be walked.
    """
    walker = _Walker(data, implicit, little)
    offset = 0
    try:
        while True:
            if walker.read_tag(offset) >= stop_tag:
                return offset
            offset = walker.skip_element(offset, 0)
    except _NeedMore:
        return None
