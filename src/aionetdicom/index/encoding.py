"""C-FIND response identifiers written straight from index values.

A response holds a handful of short text elements; building a pydicom Dataset and
encoding it costs more than the query. :func:`encode_identifier` writes the same bytes
(Implicit or Explicit VR Little Endian, text as UTF-8 under Specific Character Set
``ISO_IR 192``) from ``(tag, VR, value)`` triples.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

__all__ = ["ResponseValue", "encode_identifier"]

#: A response element's value: text (multi-values joined by ``\\``), an unsigned short
#: (US), or None for an empty element.
ResponseValue = str | int | None

#: Explicit VR elements with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})
_HEADER = struct.Struct("<HH")
_SHORT = struct.Struct("<2sH")
_LONG = struct.Struct("<2s2xI")
_LENGTH = struct.Struct("<I")
_US = struct.Struct("<H")
#: VRs whose text follows the Specific Character Set (PS3.5 6.1.2.3); the others are
#: ASCII by definition (anything else the index holds is written as Latin-1, as pydicom
#: would).
_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _value_bytes(vr: str, value: ResponseValue) -> bytes:
    if value is None or value == "":
        return b""
    if vr == "US":
        return _US.pack(int(value))
    text = str(value)
    data = text.encode("utf-8") if vr in _CHARSET_VRS else text.encode("latin-1", "replace")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return data


def encode_identifier(
    elements: Iterable[tuple[int, str, ResponseValue]], *, implicit: bool
) -> bytes:
    """The data set of ``elements`` in Implicit or Explicit VR Little Endian (sorted by tag)."""
    parts: list[bytes] = []
    for tag, vr, value in sorted(elements, key=lambda element: element[0]):
        data = _value_bytes(vr, value)
        parts.append(_HEADER.pack(tag >> 16, tag & 0xFFFF))
        if implicit:
            parts.append(_LENGTH.pack(len(data)))
        elif vr in _LONG_VRS:
            parts.append(_LONG.pack(vr.encode("ascii"), len(data)))
        else:
            parts.append(_SHORT.pack(vr.encode("ascii"), len(data)))
        parts.append(data)
    return b"".join(parts)
