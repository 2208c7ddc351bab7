"""Where an SCP finds the application's handlers: per DIMSE service, optionally per SOP class.

Handlers are plain async callables. A handler registered for a SOP class wins over
one registered for the whole service; ``lookup`` returns None when neither exists.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from aionetdicom.dimse.command_set import CommandField


class Service(enum.Enum):
    """The DIMSE services an SCP can handle."""

    C_ECHO = "C-ECHO"
    C_STORE = "C-STORE"
    C_FIND = "C-FIND"
    C_GET = "C-GET"
    C_MOVE = "C-MOVE"
    N_EVENT_REPORT = "N-EVENT-REPORT"
    N_GET = "N-GET"
    N_SET = "N-SET"
    N_ACTION = "N-ACTION"
    N_CREATE = "N-CREATE"
    N_DELETE = "N-DELETE"

    @classmethod
    def for_request(cls, command_field: int) -> Service | None:
        """The service of a request command field, or None for C-CANCEL and responses."""
        return _BY_REQUEST.get(command_field)


_BY_REQUEST: dict[int, Service] = {
    CommandField.C_ECHO_RQ: Service.C_ECHO,
    CommandField.C_STORE_RQ: Service.C_STORE,
    CommandField.C_FIND_RQ: Service.C_FIND,
    CommandField.C_GET_RQ: Service.C_GET,
    CommandField.C_MOVE_RQ: Service.C_MOVE,
    CommandField.N_EVENT_REPORT_RQ: Service.N_EVENT_REPORT,
    CommandField.N_GET_RQ: Service.N_GET,
    CommandField.N_SET_RQ: Service.N_SET,
    CommandField.N_ACTION_RQ: Service.N_ACTION,
    CommandField.N_CREATE_RQ: Service.N_CREATE,
    CommandField.N_DELETE_RQ: Service.N_DELETE,
}

Handler = Callable[..., Any]


class HandlerRegistry:
    """Handlers keyed by (service, SOP class or None)."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[Service, str | None], Handler] = {}
        self._streaming: set[tuple[Service, str | None]] = set()

    def __repr__(self) -> str:
        keys = ", ".join(
            f"{service.value}{'' if uid is None else ':' + uid}" for service, uid in self._handlers
        )
        return f"<HandlerRegistry {keys}>"

    def register(
        self,
        service: Service,
        handler: Handler,
        *,
        sop_class: str | None = None,
        streaming: bool = False,
    ) -> None:
        """Use ``handler`` for ``service`` (only for ``sop_class`` when given).

        ``streaming`` (C-STORE only): the handler is called as soon as the command
        arrives and reads the data set while it arrives (see
        :class:`~aionetdicom.services.storage.StoreRequest`).
        """
        if not callable(handler):
            raise TypeError(f"handler for {service.value} must be callable, not {handler!r}")
        if streaming and service is not Service.C_STORE:
            raise ValueError(f"streaming= applies to C-STORE handlers, not {service.value}")
        key = (service, sop_class)
        self._handlers[key] = handler
        if streaming:
            self._streaming.add(key)
        else:
            self._streaming.discard(key)

    def unregister(self, service: Service, *, sop_class: str | None = None) -> None:
        """Remove a registration; no error when there is none."""
        self._handlers.pop((service, sop_class), None)
        self._streaming.discard((service, sop_class))

    def is_streaming(self, service: Service, sop_class: str | None = None) -> bool:
        """Whether the handler :meth:`lookup` finds was registered with ``streaming=True``."""
        if sop_class is not None and (service, sop_class) in self._handlers:
            return (service, sop_class) in self._streaming
        return (service, None) in self._streaming

    def lookup(self, service: Service, sop_class: str | None = None) -> Handler | None:
        """The handler for ``sop_class`` under ``service``, else the service-wide one."""
        if sop_class is not None:
            handler = self._handlers.get((service, sop_class))
            if handler is not None:
                return handler
        return self._handlers.get((service, None))

    def __contains__(self, service: object) -> bool:
        return any(key[0] is service for key in self._handlers)
