"""Which status values each service class allows in a response, and the failure to use
when a handler returns something else (PS3.4 and PS3.7 Annex C)."""

from __future__ import annotations

import logging

from aionetdicom.handlers import Service

logger = logging.getLogger("aionetdicom.services")

#: The failure an SCP sends when its handler raised or returned an invalid status.
FAILURE_FOR: dict[Service, int] = {
    Service.C_ECHO: 0x0110,
    Service.C_STORE: 0xC211,
    Service.C_FIND: 0xC311,
    Service.C_GET: 0xC411,
    Service.C_MOVE: 0xC511,
    Service.N_EVENT_REPORT: 0x0110,
    Service.N_GET: 0x0110,
    Service.N_SET: 0x0110,
    Service.N_ACTION: 0x0110,
    Service.N_CREATE: 0x0110,
    Service.N_DELETE: 0x0110,
}

_GENERAL_FAILURES = frozenset(
    {0x0110, 0x0111, 0x0112, 0x0113, 0x0114, 0x0115, 0x0117, 0x0118, 0x0119}
    | {0x0120, 0x0121, 0x0122, 0x0123, 0x0124, 0x0210, 0x0211, 0x0212, 0x0213}
    | {0x0105, 0x0106, 0x0107, 0x0116}
)


def _in_range(value: int, low: int, high: int) -> bool:
    return low <= value <= high


def is_valid_status(service: Service, value: int, *, final: bool = True) -> bool:
    """True when ``value`` may be sent in a response of ``service``.

    ``final`` False asks about a Pending response (C-FIND, C-GET, C-MOVE only).
    """
    if not 0 <= value <= 0xFFFF:
        return False
    if not final:
        if service is Service.C_FIND:
            return value in (0xFF00, 0xFF01)
        return service in (Service.C_GET, Service.C_MOVE) and value == 0xFF00
    if value == 0x0000:
        return True
    if service is Service.C_ECHO:
        return value in (0x0110, 0x0122, 0x0210, 0x0211, 0x0212)
    if service is Service.C_STORE:
        return (
            value in (0xB000, 0xB006, 0xB007, 0x0107, 0x0116, 0x0117, 0x0122, 0x0124)
            or value in (0x0210, 0x0211, 0x0212)
            or _in_range(value, 0xA700, 0xA7FF)
            or _in_range(value, 0xA900, 0xA9FF)
            or _in_range(value, 0xC000, 0xCFFF)
        )
    if service is Service.C_FIND:
        return (
            value in (0xA700, 0xA900, 0xFE00, 0x0122, 0x0124, 0x0210, 0x0211, 0x0212)
            or _in_range(value, 0xC000, 0xCFFF)
            or value == 0x0001
        )
    if service in (Service.C_GET, Service.C_MOVE):
        allowed = {0xA701, 0xA702, 0xA900, 0xB000, 0xFE00, 0x0122, 0x0124, 0x0210}
        allowed |= {0x0211, 0x0212, 0x0001}
        if service is Service.C_MOVE:
            allowed |= {0xA801}
        return value in allowed or _in_range(value, 0xC000, 0xCFFF)
    # DIMSE-N: the general statuses of PS3.7 Annex C plus the 0x0001 and 0x0107/0x0116
    # warnings, and service-class specific codes in the warning/failure ranges.
    return (
        value in _GENERAL_FAILURES
        or value == 0x0001
        or _in_range(value, 0xA000, 0xAFFF)
        or _in_range(value, 0xB000, 0xBFFF)
        or _in_range(value, 0xC000, 0xCFFF)
    )


def checked_status(
    service: Service, value: object, *, final: bool = True, where: str = "handler"
) -> int:
    """``value`` when it is a valid status for ``service``; otherwise the service's
    standard failure, with a warning in the log saying what was wrong."""
    if isinstance(value, bool) or not isinstance(value, int):
        logger.warning(
            "%s for %s returned %r, not an int status; answering 0x%04X",
            where,
            service.value,
            value,
            FAILURE_FOR[service],
        )
        return FAILURE_FOR[service]
    if is_valid_status(service, value, final=final):
        return value
    logger.warning(
        "%s for %s returned status 0x%04X, which %s does not allow%s; answering 0x%04X",
        where,
        service.value,
        value,
        service.value,
        "" if final else " in a Pending response",
        FAILURE_FOR[service],
    )
    return FAILURE_FOR[service]
