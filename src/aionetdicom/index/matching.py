"""C-FIND key matching (PS3.4 C.2.2.2) as SQL conditions on the index columns.

One function, :func:`condition`, turns one key of an identifier into a condition on
its column, or None for universal matching (an empty value, or ``*`` alone):

- UI: single value or a list of UIDs (``\\``-separated); never wildcards.
- DA and TM: single value or a range (``a-b``, ``-b``, ``a-``); TM values compare in
  their normalised ``HHMMSS.FFFFFF`` form, so ``0930-1200`` means what it says.
- Everything else: single value, or wildcard matching when the value holds ``*`` or
  ``?``. PN values match case-insensitively (the standard allows it, and users type
  names in any case); other values match case-sensitively. A multi-valued attribute
  (``ImageType``) matches when any of its values does.

Values never reach SQL as text: they are bound parameters, and the LIKE patterns escape
``%``, ``_`` and the escape character itself.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, false, func, or_
from sqlalchemy.sql.elements import ColumnClause

from aionetdicom.index.attributes import Attribute, normalise, normalise_time

#: Attributes stored with several values joined by backslashes.
MULTI_VALUED = frozenset({"ImageType"})

_RANGE_VRS = frozenset({"DA", "TM"})
_ESCAPE = "!"


class MatchingError(ValueError):
    """A key value that cannot be matched (e.g. a malformed range)."""


def is_universal(value: str) -> bool:
    """True for a value that matches everything (empty, or ``*`` alone)."""
    text = value.strip(" \0")
    return text in ("", "*")


def condition(
    attribute: Attribute, column: ColumnClause[str], value: str
) -> ColumnElement[bool] | None:
    """The SQL condition for matching ``value`` against ``column``; None: universal."""
    if is_universal(value):
        return None
    vr = attribute.vr
    if vr == "UI":
        uids = [uid.strip(" \0") for uid in value.split("\\") if uid.strip(" \0")]
        if not uids:
            return None
        return column == uids[0] if len(uids) == 1 else column.in_(uids)
    text = value.strip(" \0")
    if vr in _RANGE_VRS and "-" in text:
        return _range(vr, column, text)
    if "*" in text or "?" in text:
        return _wildcard(attribute, column, text)
    return _single(attribute, column, normalise(vr, text))


def _single(attribute: Attribute, column: ColumnClause[str], value: str) -> ColumnElement[bool]:
    if attribute.vr == "PN":
        return func.lower(column) == value.lower()
    if attribute.keyword in MULTI_VALUED:
        escaped = _escape(value)
        return or_(
            column == value,
            column.like(escaped + "\\%", escape=_ESCAPE),
            column.like("%\\" + escaped, escape=_ESCAPE),
            column.like("%\\" + escaped + "\\%", escape=_ESCAPE),
        )
    return column == value


def _wildcard(attribute: Attribute, column: ColumnClause[str], value: str) -> ColumnElement[bool]:
    pattern = "".join(
        "%" if char == "*" else "_" if char == "?" else _escape(char) for char in value
    )
    if attribute.vr == "PN":
        return func.lower(column).like(pattern.lower(), escape=_ESCAPE)
    return column.like(pattern, escape=_ESCAPE)


def _escape(text: str) -> str:
    return (
        text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )


def _range(vr: str, column: ColumnClause[str], value: str) -> ColumnElement[bool]:
    low, separator, high = value.partition("-")
    if separator != "-" or "-" in high:
        raise MatchingError(f"{value!r} is not a {vr} range (one '-' at most)")
    low, high = low.strip(), high.strip()
    if not low and not high:
        raise MatchingError(f"{value!r} is a range without ends")
    if vr == "TM":
        low = normalise_time(low) if low else ""
        high = end_of_time(high) if high else ""
    for end in (low, high):
        if end and vr == "DA" and not (len(end) == 8 and end.isdigit()):
            raise MatchingError(f"{end!r} is not a DA value (YYYYMMDD)")
    conditions = [column.is_not(None), column != ""]
    if low:
        conditions.append(column >= low)
    if high:
        conditions.append(column <= high)
    if low and high and low > high:
        return false()
    return and_(*conditions)


def end_of_time(value: str) -> str:
    """The last instant a TM range end covers: ``12`` reaches ``125959.999999``."""
    text = value.replace(":", "")
    whole, dot, fraction = text.partition(".")
    if dot:
        return f"{(whole + '0000')[:6]}.{(fraction + '999999')[:6]}"
    return f"{(whole + '5959')[:6]}.999999"
