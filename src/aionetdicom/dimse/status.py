"""DIMSE status codes (Status (0000,0900)): categories by PS3.7 Annex C, descriptions.

The category of a code depends only on its value: PS3.7 Annex C requires every
service-specific code to fall in the range of its status class. Codes outside every
range (which the standard forbids) are classed as failure, so that an unrecognised
outcome is never taken for success.
"""

from __future__ import annotations

import enum

__all__ = [
    "GENERAL_STATUSES",
    "SERVICE_STATUSES",
    "Status",
    "StatusCategory",
    "describe_status",
    "status_category",
]


class StatusCategory(enum.Enum):
    """The five status classes of PS3.7 Annex C."""

    SUCCESS = "Success"
    WARNING = "Warning"
    FAILURE = "Failure"
    CANCEL = "Cancel"
    PENDING = "Pending"


#: Status codes of PS3.7 Annex C, valid for every DIMSE service, plus 0x0001 and
#: 0xFF01 whose meaning is the same wherever PS3.4 uses them.
GENERAL_STATUSES: dict[int, str] = {
    0x0000: "Success",
    0x0001: "Warning: requested optional attributes are not supported",
    0x0105: "No such attribute",
    0x0106: "Invalid attribute value",
    0x0107: "Attribute list error",
    0x0110: "Processing failure",
    0x0111: "Duplicate SOP instance",
    0x0112: "No such SOP instance",
    0x0113: "No such event type",
    0x0114: "No such argument",
    0x0115: "Invalid argument value",
    0x0116: "Attribute value out of range",
    0x0117: "Invalid object instance",
    0x0118: "No such SOP class",
    0x0119: "Class-instance conflict",
    0x0120: "Missing attribute",
    0x0121: "Missing attribute value",
    0x0122: "Refused: SOP class not supported",
    0x0123: "No such action",
    0x0124: "Refused: not authorized",
    0x0210: "Duplicate invocation",
    0x0211: "Unrecognized operation",
    0x0212: "Mistyped argument",
    0x0213: "Resource limitation",
    0xFE00: "Cancel",
    0xFF00: "Pending",
    0xFF01: "Pending: one or more optional keys not supported",
}

_QR_COMMON: dict[int, str] = {
    0xA701: "Refused: out of resources, unable to calculate number of matches",
    0xA702: "Refused: out of resources, unable to perform sub-operations",
    0xA900: "Error: identifier does not match SOP class",
    0xFE00: "Sub-operations terminated due to cancel indication",
    0xB000: "Sub-operations complete, one or more failures or warnings",
    0x0000: "Sub-operations complete, no failures",
    0xFF00: "Sub-operations are continuing",
}

#: Service-specific codes (PS3.4 B.2.3, C.4.1.1.4, C.4.2.1.5, C.4.3.1.4), by service.
SERVICE_STATUSES: dict[str, dict[int, str]] = {
    "C-STORE": {
        0xB000: "Warning: coercion of data elements",
        0xB007: "Warning: data set does not match SOP class",
        0xB006: "Warning: elements discarded",
    },
    "C-FIND": {
        0xA700: "Refused: out of resources",
        0xA900: "Error: identifier does not match SOP class",
        0xFE00: "Matching terminated due to cancel request",
        0xFF00: "Pending: matches are continuing, optional keys supported",
        0xFF01: "Pending: matches are continuing, one or more optional keys not supported",
    },
    "C-GET": dict(_QR_COMMON),
    "C-MOVE": {**_QR_COMMON, 0xA801: "Refused: move destination unknown"},
}

# (service, mask, pattern, description): ranges such as A7xx, matched after exact codes.
_SERVICE_RANGES: tuple[tuple[str, int, int, str], ...] = (
    ("C-STORE", 0xFF00, 0xA700, "Refused: out of resources"),
    ("C-STORE", 0xFF00, 0xA900, "Error: data set does not match SOP class"),
    ("C-STORE", 0xF000, 0xC000, "Error: cannot understand"),
    ("C-FIND", 0xF000, 0xC000, "Failed: unable to process"),
    ("C-GET", 0xF000, 0xC000, "Failed: unable to process"),
    ("C-MOVE", 0xF000, 0xC000, "Failed: unable to process"),
)


def status_category(value: int, service: str | None = None) -> StatusCategory:
    """The status class of ``value`` (PS3.7 Annex C).

    ``service`` (e.g. ``"C-STORE"``) is accepted for symmetry with
    :func:`describe_status`; by Annex C it cannot change the class.
    """
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"status {value!r} does not fit in 16 bits")
    if value == 0x0000:
        return StatusCategory.SUCCESS
    if value in (0xFF00, 0xFF01):
        return StatusCategory.PENDING
    if value == 0xFE00:
        return StatusCategory.CANCEL
    if value in (0x0001, 0x0107, 0x0116) or 0xB000 <= value <= 0xBFFF:
        return StatusCategory.WARNING
    return StatusCategory.FAILURE


def describe_status(value: int, service: str | None = None) -> str:
    """A short human description of ``value``, specific to ``service`` when known."""
    if service is not None:
        specific = SERVICE_STATUSES.get(service)
        if specific is not None and value in specific:
            return specific[value]
        for name, mask, pattern, text in _SERVICE_RANGES:
            if name == service and value & mask == pattern:
                return text
    known = GENERAL_STATUSES.get(value)
    if known is not None:
        return known
    return f"{status_category(value).value} (code not known)"


class Status(int):
    """A Status (0000,0900) value that knows its category and description.

    Still an ``int``: ``str()`` and formatting give the plain number, ``repr()``
    reads like ``Status(0x0000 Success)``.
    """

    service: str | None

    def __new__(cls, value: int, service: str | None = None) -> Status:
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"status {value!r} does not fit in 16 bits")
        self = super().__new__(cls, value)
        self.service = service
        return self

    @property
    def category(self) -> StatusCategory:
        """The status class (PS3.7 Annex C)."""
        return status_category(self, self.service)

    @property
    def is_success(self) -> bool:
        """True for 0x0000."""
        return self.category is StatusCategory.SUCCESS

    @property
    def is_warning(self) -> bool:
        """True for warning codes (the operation completed)."""
        return self.category is StatusCategory.WARNING

    @property
    def is_failure(self) -> bool:
        """True for failure codes and for codes outside every Annex C range."""
        return self.category is StatusCategory.FAILURE

    @property
    def is_cancel(self) -> bool:
        """True for 0xFE00."""
        return self.category is StatusCategory.CANCEL

    @property
    def is_pending(self) -> bool:
        """True for 0xFF00 and 0xFF01 (more responses follow)."""
        return self.category is StatusCategory.PENDING

    @property
    def description(self) -> str:
        """A short human description, service-specific when the service is known."""
        return describe_status(self, self.service)

    def __repr__(self) -> str:
        return f"Status(0x{int(self):04X} {self.description})"

    def __str__(self) -> str:
        return int.__repr__(self)

    def __reduce__(self) -> tuple[type[Status], tuple[int, str | None]]:
        return (Status, (int(self), self.service))
