"""C-FIND matching (PS3.4 C.2.2.2) of one candidate Dataset in memory.

For what is not in the SQL index: Modality Worklist items kept as files, and any
handler that filters Datasets itself. The rules are those of :mod:`.matching`
(single value, universal, wildcard, DA/TM/DT range, UID list; PN case-insensitive),
plus sequence matching: a sequence key with one item matches a candidate whose
sequence has at least one item matching every key of that item; an empty sequence
key is universal. :func:`response` builds the identifier to send back: the requested
keys with the candidate's values (sequences reduced to the requested item keys).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aionetdicom.index.attributes import normalise_time, value_text
from aionetdicom.index.matching import MatchingError, end_of_time, is_universal

if TYPE_CHECKING:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

__all__ = ["MatchingError", "matches", "response"]

#: Keys of an identifier that are not matched (they describe the query itself).
_NOT_KEYS = frozenset({0x00080005, 0x00080052})


def matches(identifier: Dataset, candidate: Dataset) -> bool:
    """True when ``candidate`` matches every key of ``identifier``."""
    for element in identifier:
        if element.tag in _NOT_KEYS or element.tag.is_private:
            continue
        if not _element_matches(element, candidate.get(element.tag)):
            return False
    return True


def _element_matches(key: DataElement, found: DataElement | None) -> bool:
    if key.VR == "SQ":
        items = list(key.value or [])
        if not items or all(len(item) == 0 for item in items):
            return True
        if found is None or found.VR != "SQ":
            return False
        return any(matches(items[0], item) for item in found.value or [])
    query = value_text(key.value)
    if is_universal(query):
        return True
    value = "" if found is None else value_text(found.value)
    return value_matches(key.VR, query, value)


def value_matches(vr: str, query: str, value: str) -> bool:
    """One key value against one stored value (both as DICOM text)."""
    query = query.strip(" \0")
    value = value.strip(" \0")
    if vr == "UI":
        return value in {uid.strip(" \0") for uid in query.split("\\")}
    if vr in ("DA", "TM", "DT") and "-" in query and not (vr == "DT" and _is_offset(query)):
        return _in_range(vr, query, value)
    values = value.split("\\") if value else [""]
    if "*" in query or "?" in query:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in query)
        flags = re.DOTALL | (re.IGNORECASE if vr == "PN" else 0)
        return any(re.fullmatch(regex, each, flags) is not None for each in values)
    if vr == "PN":
        return any(each.lower() == query.lower() for each in values)
    if vr == "TM":
        return any(each and normalise_time(each) == normalise_time(query) for each in values)
    return query in values


def _is_offset(query: str) -> bool:
    """A DT value whose only ``-`` is a UTC offset (``20240101120000-0500``)."""
    return query.count("-") == 1 and len(query.split("-")[1]) == 4 and len(query) > 14


def _in_range(vr: str, query: str, value: str) -> bool:
    low, _, high = query.partition("-")
    if "-" in high or not (low or high):
        raise MatchingError(f"{query!r} is not a {vr} range")
    if not value:
        return False
    if vr == "TM":
        value = normalise_time(value)
        low = normalise_time(low) if low else ""
        high = end_of_time(high) if high else ""
    elif vr == "DT":
        value, low = value[:14], low[:14]
        high = (high[:14] + "9" * 14)[:14] if high else ""
    return (not low or value >= low) and (not high or value <= high)


def response(identifier: Dataset, candidate: Dataset) -> Dataset:
    """The identifier to return: each requested key with the candidate's value."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    result = Dataset()
    for key in identifier:
        if key.tag.is_private:
            continue
        found = candidate.get(key.tag)
        if key.VR == "SQ":
            items = list(key.value or [])
            template = items[0] if items else Dataset()
            values = [] if found is None or found.VR != "SQ" else list(found.value or [])
            if len(template):
                values = [response(template, item) for item in values if matches(template, item)]
            result.add_new(key.tag, "SQ", Sequence(values))
        elif key.tag in _NOT_KEYS:
            result.add(key)
        elif found is None:
            result.add_new(key.tag, key.VR, None)
        else:
            result.add_new(key.tag, found.VR, found.value)
    return result
