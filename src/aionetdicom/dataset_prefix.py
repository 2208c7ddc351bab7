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

__all__ = ["MAX_NESTING", "PIXEL_DATA", "check_nesting", "prefix_end"]

#: (7FE0,0010) Pixel Data: the usual end of what an index needs.
PIXEL_DATA = 0x7FE00010
#: Deepest nesting of sequences accepted while walking (hostile data sets), and by
#: :func:`check_nesting` before pydicom decodes a received data set: pydicom reads and
#: writes sequences recursively, and some hundreds of levels exhaust Python's stack.
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


_U16_LE, _U16_BE = struct.Struct("<H"), struct.Struct(">H")
_U32_LE, _U32_BE = struct.Struct("<L"), struct.Struct(">L")


class _Nesting:
    """Walks every element, sequence and item of a data set, only to measure its depth.

    Malformed structure is not reported (the decoder does that): the walk just stops
    descending where it cannot follow. Recursion is bounded by the limit it enforces.
    """

    __slots__ = ("data", "limit", "size")

    def __init__(self, data: bytes | bytearray | memoryview, limit: int) -> None:
        self.data = data
        self.size = len(data)
        self.limit = limit

    def _u16(self, offset: int, little: bool) -> int:
        return int((_U16_LE if little else _U16_BE).unpack_from(self.data, offset)[0])

    def _u32(self, offset: int, little: bool) -> int:
        return int((_U32_LE if little else _U32_BE).unpack_from(self.data, offset)[0])

    def _tag(self, offset: int, little: bool) -> int:
        return self._u16(offset, little) << 16 | self._u16(offset + 2, little)

    def elements(
        self, offset: int, end: int | None, implicit: bool, little: bool, depth: int
    ) -> int:
        """Walk the elements from ``offset`` to ``end`` (None: to an Item Delimitation
        Item); return where the walk stopped."""
        stop = self.size if end is None else min(end, self.size)
        if offset + 8 <= stop and self._tag(offset, little) >> 16 != 0xFFFE:
            # pydicom decides per data set (and item) from its first element whether
            # the VR is explicit, whatever the transfer syntax says: follow it.
            first, second = self.data[offset + 4], self.data[offset + 5]
            implicit = not (0x40 < first < 0x5B and 0x40 < second < 0x5B)
        while offset + 8 <= stop:
            tag = self._tag(offset, little)
            if tag == _ITEM_END:  # ends an item, or (as pydicom reads it) the data set
                return offset + 8
            vr = b"" if implicit else bytes(self.data[offset + 4 : offset + 6])
            if implicit or tag >> 16 == 0xFFFE:  # delimiters have no VR, whatever the syntax
                vr = b""
                start, length = offset + 8, self._u32(offset + 4, little)
            elif vr in _LONG_VRS:
                if offset + 12 > stop:
                    return self.size
                start, length = offset + 12, self._u32(offset + 8, little)
            else:
                start, length = offset + 8, self._u16(offset + 6, little)
            # Items of UN are Implicit VR Little Endian whatever the syntax (PS3.5 6.2.2).
            items_implicit = implicit or vr == b"UN"
            items_little = little or vr == b"UN"
            if length == _UNDEFINED:
                offset = self.items(start, None, items_implicit, items_little, depth + 1)
                continue
            if vr == b"SQ" or (items_implicit and self._starts_item(start, items_little)):
                self.items(start, start + length, items_implicit, items_little, depth + 1)
            offset = start + length
        return offset

    def _starts_item(self, offset: int, little: bool) -> bool:
        # Implicit VR (or UN): a value that starts with an Item tag may be a sequence,
        # which the decoder would find out from its dictionary.
        return offset + 8 <= self.size and self._tag(offset, little) == _ITEM

    def items(self, offset: int, end: int | None, implicit: bool, little: bool, depth: int) -> int:
        """Walk the items of a sequence; return where the walk stopped."""
        if depth > self.limit:
            raise DatasetError(f"sequences nested deeper than {self.limit} levels")
        stop = self.size if end is None else min(end, self.size)
        while offset + 8 <= stop:
            tag = self._tag(offset, little)
            length = self._u32(offset + 4, little)
            if tag == _SEQUENCE_END:
                return offset + 8
            if tag != _ITEM:
                return self.size
            start = offset + 8
            if length == _UNDEFINED:
                offset = self.elements(start, None, implicit, little, depth)
            else:
                self.elements(start, start + length, implicit, little, depth)
                offset = start + length
        return offset


def check_nesting(
    data: bytes | bytearray | memoryview,
    *,
    implicit: bool,
    little: bool,
    limit: int = MAX_NESTING,
) -> None:
    """Raise :class:`~aionetdicom.datasets.DatasetError` when sequences in ``data`` nest
    deeper than ``limit`` levels, before a recursive decoder meets them."""
    _Nesting(data, limit).elements(0, None, implicit, little, 0)
