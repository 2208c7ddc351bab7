"""Hierarchical query and retrieve rules (PS3.4 C.4.1.2.1, C.4.2.2.1).

Without relational queries (SOP Class Extended Negotiation), an SCU must identify
the entity above the level it asks about: the unique key of every level above the
Query/Retrieve level holds a single value (no wildcard, no list, not empty). A
retrieve also names what it retrieves: the unique key of its own level (a single
value or a list of UIDs), and no other keys. :func:`check_hierarchical` says which
rule an identifier breaks; relational requests skip it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aionetdicom.index.attributes import UNIQUE_KEY, Level, value_text
from aionetdicom.index.matching import MatchingError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: Elements an identifier may always carry besides the keys.
_NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"})

#: The Patient level is identified by Patient ID (with its issuer, when given).
_PATIENT_KEYS = ("PatientID",)


def _text(identifier: Dataset, keyword: str) -> str | None:
    """The key's value as text without padding, or None when the key is absent."""
    value = identifier.get(keyword)
    return None if value is None else value_text(value).strip(" \0")


def _single(identifier: Dataset, keyword: str, level: Level) -> None:
    value = _text(identifier, keyword)
    if value is None or value == "":
        raise MatchingError(
            f"{keyword} is required for a {level.value} key above the query level "
            "(hierarchical query; relational queries were not negotiated)"
        )
    if "\\" in value or "*" in value or "?" in value:
        raise MatchingError(
            f"{keyword} must be a single value in a hierarchical query, not {value!r}"
        )


def check_hierarchical(
    level: Level | str, top: Level | str, identifier: Dataset, *, retrieve: bool = False
) -> None:
    """Raise :class:`MatchingError` unless ``identifier`` follows the hierarchical rules.

    ``top`` is the information model's root (PATIENT or STUDY); ``retrieve`` applies
    the C-MOVE / C-GET rules as well.
    """
    level, top = Level(level), Level(top)
    levels = list(Level)
    for above in levels[top.depth : level.depth]:
        keys = _PATIENT_KEYS if above is Level.PATIENT else (UNIQUE_KEY[above],)
        for keyword in keys:
            _single(identifier, keyword, above)
    if not retrieve:
        return
    own = "PatientID" if level is Level.PATIENT else UNIQUE_KEY[level]
    value = _text(identifier, own)
    if not value:
        raise MatchingError(f"a {level.value} level retrieve needs {own}")
    if "*" in value or "?" in value or (level is Level.PATIENT and "\\" in value):
        raise MatchingError(f"{own} of a retrieve cannot hold wildcards or lists: {value!r}")
    # Patient ID is tolerated in a Study Root identifier: some SCUs send it along.
    allowed = {own, *_NOT_KEYS, "PatientID", "IssuerOfPatientID"}
    allowed |= {UNIQUE_KEY[each] for each in levels[top.depth : level.depth + 1]}
    extra = sorted(
        element.keyword or str(element.tag)
        for element in identifier
        if (element.keyword or str(element.tag)) not in allowed
    )
    if extra:
        raise MatchingError(f"a retrieve identifier holds only unique keys, not {', '.join(extra)}")
