"""The Application Entity: the user's entry point for associations as SCU and SCP.

An SCP is an AE with handlers, serving one task per association::

    import anyio
    from aionetdicom import AE
    from aionetdicom.sop_classes import STORAGE_SOP_CLASSES

    scp = AE("STORE_SCP")
    scp.add_storage_contexts(STORAGE_SOP_CLASSES)

    @scp.on_store                                   # every storage SOP class...
    async def on_store(request) -> int:
        await request.save_to("/data/incoming")
        return 0x0000

    @scp.on_store(sop_class="1.2.840.10008.5.1.4.1.1.2")   # ...but CT goes here
    async def on_ct(request) -> int:
        await request.save_to("/data/ct")
        return 0x0000

    @scp.on_association("accepted", "released", "aborted")
    async def log_it(event) -> None:
        print(event.kind, event.peer_ae_title, event.initiator, event.error)

    async def main() -> None:
        async with scp.serve(["0.0.0.0", "::"], 11112, shutdown_grace=5.0) as server:
            await server.wait_closed()

    anyio.run(main)

Handlers are async callables registered per DIMSE service (``on_echo``, ``on_store``,
``on_find``, ``on_get``, ``on_move``, ``on_n_event_report``, ``on_n_get``,
``on_n_set``, ``on_n_action``, ``on_n_create``, ``on_n_delete``), optionally per SOP
class, in :attr:`AE.handlers` (a :class:`~aionetdicom.handlers.HandlerRegistry`). A
handler that raises, returns an invalid status or overruns
:attr:`AE.handler_timeout` gets its service's standard failure status sent for it
(see :mod:`aionetdicom.association`); the association and the server carry on.
"""

from __future__ import annotations

import importlib
import logging
import ssl
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Literal, TypeVar, Union, cast, overload

import anyio

from aionetdicom.acse.acceptor import (
    check_request,
    effective_window,
    negotiate_contexts,
    negotiate_window,
    validate_contexts,
)
from aionetdicom.acse.contexts import (
    DEFAULT_TRANSFER_SYNTAXES,
    VERIFICATION,
    NegotiatedContext,
    PresentationContext,
)
from aionetdicom.acse.requestor import (
    interpret_acceptance,
    negotiated_maximum_length,
    propose,
)
from aionetdicom.acse.user_identity import UserIdentity
from aionetdicom.addresses import IPNetwork, network
from aionetdicom.association import (
    ASSOCIATION_EVENTS,
    Association,
    AssociationEventKind,
    AssociationHandler,
    RequestHandler,
    Timeouts,
    _Notifier,
)
from aionetdicom.dimse.command_set import Command, CommandField, make_command
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.errors import (
    ACSETimeout,
    AssociationAborted,
    AssociationRejected,
    ConnectionClosed,
    DicomNetworkError,
    ProtocolError,
)
from aionetdicom.handlers import HandlerRegistry, Service
from aionetdicom.observe import Observer
from aionetdicom.pdu.constants import (
    PresentationRejectReason,
    RejectResult,
    RejectSource,
    UserRejectReason,
)
from aionetdicom.pdu.items import (
    AsynchronousOperationsWindow,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserInformation,
)
from aionetdicom.pdu.pdus import AAssociateAC, AAssociateRJ, AAssociateRQ
from aionetdicom.pdu.reader import DEFAULT_MAX_ASSOCIATE_LENGTH, DEFAULT_MAX_UNLIMITED_PDATA_LENGTH
from aionetdicom.server import DEFAULT_SHUTDOWN_GRACE, Server
from aionetdicom.services.storage_scp import serve_store
from aionetdicom.services.verification import EchoRequest, serve_echo
from aionetdicom.sop_classes import STORAGE_SOP_CLASSES
from aionetdicom.transport import TCPListener, connect, listen_tcp
from aionetdicom.ul import events as ul
from aionetdicom.ul.connection import Role, ULConnection
from aionetdicom.ul.fsm import State

logger = logging.getLogger("aionetdicom.ae")

#: Our Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID under 2.25.
IMPLEMENTATION_CLASS_UID = "2.25.7219312378301723030250714351678337389"
#: Our Implementation Version Name (at most 16 characters).
IMPLEMENTATION_VERSION_NAME = "AIONETDICOM_010"

#: Largest P-DATA-TF we announce we accept. Bigger PDUs mean fewer writes and wake-ups.
DEFAULT_MAXIMUM_PDU_LENGTH = 256 * 1024
#: Largest P-DATA-TF body we send when the peer announces 0 (no limit).
DEFAULT_SEND_CAP = 1024 * 1024

EchoHandler = Callable[[EchoRequest], Awaitable[int]]
#: Decides a user identity: returns accept (bool), or (accept, server response bytes).
IdentityDecision = Union[bool, tuple[bool, Union[bytes, None]]]
UserIdentityHandler = Callable[[UserIdentity, AAssociateRQ], Awaitable[IdentityDecision]]
#: Where a known AE listens: (host, port), or (host, port, ssl_context) for TLS.
KnownAddress = Union[tuple[str, int], tuple[str, int, ssl.SSLContext | None]]


def _known_address(title: str, address: Sequence[Any]) -> KnownAddress:
    """A ``known_aes`` entry, checked: (host, port[, ssl_context])."""
    if len(address) == 2:
        return (str(address[0]), int(address[1]))
    if len(address) == 3 and (address[2] is None or isinstance(address[2], ssl.SSLContext)):
        return (str(address[0]), int(address[1]), address[2])
    raise ValueError(f"known AE {title!r}: expected (host, port[, ssl_context]), not {address!r}")


#: Reply to a SOP Class Extended Negotiation item: ``(sop_class_uid, information)``.
ExtendedNegotiationHandler = Callable[[str, bytes], "bytes | None"]

_F = TypeVar("_F", bound=Callable[..., object])
MoveDestinationHandler = Callable[..., Awaitable[Union[tuple[str, int], None]]]

#: Connections that have not sent their A-ASSOCIATE-RQ yet, at most, by default.
DEFAULT_MAXIMUM_PENDING_CONNECTIONS = 256
#: Largest data set received into memory by default (streamed ones are not bounded).
DEFAULT_MAXIMUM_DATASET_SIZE = 1024 * 1024 * 1024

#: Where ``serve`` listens: a host, several hosts (same port), or (host, port) pairs.
ListenAddresses = Union[str, Sequence[str], Sequence[tuple[str, int]]]


class _LazyService:
    """A default request service that lives in a module imported on first use.

    While that module does not exist (or lacks the function) requests get 0x0211
    Unrecognized Operation and a warning in the log, as for any unsupported request.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name
        self._target: RequestHandler | None = None

    def __repr__(self) -> str:
        return f"<service {self.module}.{self.name}>"

    def _resolve(self) -> RequestHandler | None:
        if self._target is None:
            try:
                module = importlib.import_module(self.module)
            except ModuleNotFoundError as exc:
                if exc.name != self.module:
                    raise
                return None
            target = getattr(module, self.name, None)
            if target is None:
                return None
            self._target = cast(RequestHandler, target)
        return self._target

    async def __call__(self, assoc: Association, message: AssembledMessage) -> None:
        target = self._resolve()
        if target is None:
            field = message.command.get("CommandField")
            assoc.log.warning(
                "association #%d: %s is not available (%s.%s missing); answering 0x0211",
                assoc.id,
                _request_name(field),
                self.module,
                self.name,
            )
            await _answer_unrecognized(assoc, message)
            return
        await target(assoc, message)


def _request_name(field: object) -> str:
    if not isinstance(field, int):
        return repr(field)
    try:
        return CommandField(field).name
    except ValueError:
        return f"command 0x{field:04X}"


async def _answer_unrecognized(assoc: Association, message: AssembledMessage) -> None:
    """Answer a request with 0x0211 Unrecognized Operation (PS3.7 C.5.13)."""
    field = message.command.get("CommandField")
    if isinstance(field, int) and (field | 0x8000) in CommandField.__members__.values():
        response = make_command(
            field | 0x8000,
            MessageIDBeingRespondedTo=message.command.get("MessageID", 0),
            Status=0x0211,
        )
        await assoc.send_message(message.context_id, response)
        return
    # No DIMSE message answers an unknown command field: without an A-ABORT the peer
    # would wait for its DIMSE timeout.
    shown = f"0x{field:04X}" if isinstance(field, int) else repr(field)
    assoc._protocol_abort(ProtocolError(f"unrecognized DIMSE command field {shown}"))
    await assoc._flush()


def _default_services() -> dict[int, RequestHandler]:
    """The request services every AE starts with (``AE.handle_dimse`` replaces them)."""
    qr = "aionetdicom.services.qr_scp"
    normalized = _LazyService("aionetdicom.services.normalized_scp", "serve_normalized")
    return {
        CommandField.C_ECHO_RQ: serve_echo,
        CommandField.C_STORE_RQ: serve_store,
        CommandField.C_FIND_RQ: _LazyService(qr, "serve_find"),
        CommandField.C_GET_RQ: _LazyService(qr, "serve_get"),
        CommandField.C_MOVE_RQ: _LazyService(qr, "serve_move"),
        CommandField.N_EVENT_REPORT_RQ: normalized,
        CommandField.N_GET_RQ: normalized,
        CommandField.N_SET_RQ: normalized,
        CommandField.N_ACTION_RQ: normalized,
        CommandField.N_CREATE_RQ: normalized,
        CommandField.N_DELETE_RQ: normalized,
    }


class _Registrar:
    """``ae.on_<service>`` bound to an AE: a decorator, bare or with ``sop_class=``."""

    __slots__ = ("_registry", "_service")

    def __init__(self, registry: HandlerRegistry, service: Service) -> None:
        self._registry = registry
        self._service = service

    def __repr__(self) -> str:
        return f"<on_{self._service.name.lower()} decorator>"

    @overload
    def __call__(self, handler: _F, /) -> _F: ...

    @overload
    def __call__(
        self,
        handler: None = None,
        /,
        *,
        sop_class: str | Iterable[str] | None = None,
        streaming: bool = False,
    ) -> Callable[[_F], _F]: ...

    def __call__(
        self,
        handler: _F | None = None,
        /,
        *,
        sop_class: str | Iterable[str] | None = None,
        streaming: bool = False,
    ) -> _F | Callable[[_F], _F]:
        if handler is not None:
            self._registry.register(self._service, handler)
            return handler
        uids: list[str | None]
        if sop_class is None:
            uids = [None]
        elif isinstance(sop_class, str):
            uids = [sop_class]
        else:
            uids = list(sop_class)
        if streaming and self._service is not Service.C_STORE:
            raise ValueError(f"streaming= applies to on_store, not {self._service.value}")

        def decorate(function: _F) -> _F:
            for uid in uids:
                self._registry.register(self._service, function, sop_class=uid, streaming=streaming)
            return function

        return decorate


class _ServiceDecorator:
    """Class attribute that gives each AE its ``on_<service>`` decorator."""

    def __init__(self, service: Service, what: str) -> None:
        self.service = service
        self.__doc__ = (
            f"Decorator: register an async handler for {service.value} requests ({what}).\n\n"
            f"``@ae.on_x`` handles every SOP class; ``@ae.on_x(sop_class=uid_or_uids)`` only "
            f"those, and wins over the service-wide one. Same as "
            f"``ae.handlers.register(Service.{service.name}, fn, sop_class=...)``."
        )

    @overload
    def __get__(self, ae: None, owner: type[AE]) -> _ServiceDecorator: ...

    @overload
    def __get__(self, ae: AE, owner: type[AE]) -> _Registrar: ...

    def __get__(self, ae: AE | None, owner: type[AE]) -> _ServiceDecorator | _Registrar:
        if ae is None:
            return self
        return _Registrar(ae.handlers, self.service)


def validate_ae_title(title: str, what: str = "AE title") -> str:
    """Return ``title`` without surrounding spaces, or raise ValueError if it is invalid."""
    if not isinstance(title, str):
        raise TypeError(f"{what} must be a str, not {type(title).__name__}")
    stripped = title.strip(" ")
    if not stripped:
        raise ValueError(f"{what} must not be empty")
    if len(stripped) > 16:
        raise ValueError(f"{what} {title!r} is longer than 16 characters")
    if any(ord(ch) < 0x20 or ord(ch) > 0x7E or ch == "\\" for ch in stripped):
        raise ValueError(f"{what} {title!r} holds a control, non-ASCII or backslash character")
    return stripped


class AE:
    """A DICOM Application Entity: requests associations and serves them.

    Settings given here are the defaults of every association the AE makes or
    accepts; ``associate`` and ``serve`` take per-call overrides where it matters.

    SCP settings: ``maximum_associations`` accepted at once (negotiating ones
    included; more are rejected "transient, local limit exceeded");
    ``maximum_pending_connections``, connections that have not sent their
    A-ASSOCIATE-RQ yet (more are closed at once); ``handler_timeout``, seconds a
    handler may take before its service answers with a failure status
    (``"dimse"``, the default: the DIMSE timeout; None: no limit);
    ``supported_contexts`` (see also :meth:`add_storage_contexts`);
    ``maximum_dataset_size``, the largest data set held in memory (default 1 GiB;
    a C-STORE handler registered with ``streaming=True`` is bounded by
    ``maximum_streamed_dataset_size`` instead, default unlimited);
    ``allowed_calling_ae_titles`` and ``allowed_peer_addresses`` (networks; others
    are disconnected at once) say who may associate;
    ``accept_any_abstract_syntax`` accepts every proposed abstract syntax with the
    default transfer syntaxes, the way to accept any storage SOP class (private
    ones too): the C-STORE service then answers 0x0122 for a SOP class without a
    handler.
    """

    on_echo = _ServiceDecorator(Service.C_ECHO, "status; default Success without one")
    on_store = _ServiceDecorator(
        Service.C_STORE,
        "StoreRequest -> status; ``streaming=True``: called when the command arrives, the "
        "data set is read while it arrives, e.g. by ``await request.save_to(folder)``",
    )
    on_find = _ServiceDecorator(Service.C_FIND, "see services.qr_scp")
    on_get = _ServiceDecorator(Service.C_GET, "see services.qr_scp")
    on_move = _ServiceDecorator(Service.C_MOVE, "see services.qr_scp")
    on_n_event_report = _ServiceDecorator(Service.N_EVENT_REPORT, "see services.normalized_scp")
    on_n_get = _ServiceDecorator(Service.N_GET, "see services.normalized_scp")
    on_n_set = _ServiceDecorator(Service.N_SET, "see services.normalized_scp")
    on_n_action = _ServiceDecorator(Service.N_ACTION, "see services.normalized_scp")
    on_n_create = _ServiceDecorator(Service.N_CREATE, "see services.normalized_scp")
    on_n_delete = _ServiceDecorator(Service.N_DELETE, "see services.normalized_scp")

    def __init__(
        self,
        ae_title: str = "AIONETDICOM",
        *,
        maximum_pdu_length: int = DEFAULT_MAXIMUM_PDU_LENGTH,
        acse_timeout: float | None = 30.0,
        dimse_timeout: float | None = 30.0,
        network_timeout: float | None = 60.0,
        connect_timeout: float | None = 30.0,
        maximum_associations: int = 1000,
        maximum_pending_connections: int = DEFAULT_MAXIMUM_PENDING_CONNECTIONS,
        handler_timeout: float | Literal["dimse"] | None = "dimse",
        require_called_ae_title: bool = False,
        allowed_calling_ae_titles: Collection[str] | None = None,
        allowed_peer_addresses: Collection[str | IPNetwork] | None = None,
        supported_contexts: Sequence[PresentationContext] = VERIFICATION,
        accept_any_abstract_syntax: bool = False,
        maximum_operations_invoked: int = 1,
        maximum_operations_performed: int = 1,
        maximum_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
        implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
        implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
        known_aes: Mapping[str, KnownAddress] | None = None,
        maximum_dataset_size: int | None = DEFAULT_MAXIMUM_DATASET_SIZE,
        maximum_streamed_dataset_size: int | None = None,
    ) -> None:
        self.ae_title = validate_ae_title(ae_title)
        if maximum_pdu_length < 0 or maximum_pdu_length > 0xFFFFFFFF:
            raise ValueError("maximum_pdu_length must be 0 (unlimited) or a 32-bit length")
        if 0 < maximum_pdu_length < 7:
            raise ValueError("maximum_pdu_length must leave room for a PDV (at least 7)")
        if maximum_associations < 1:
            raise ValueError("maximum_associations must be at least 1")
        if maximum_pending_connections < 1:
            raise ValueError("maximum_pending_connections must be at least 1")
        self.maximum_pdu_length = maximum_pdu_length
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout
        self.connect_timeout = connect_timeout
        self.maximum_associations = maximum_associations
        self.maximum_pending_connections = maximum_pending_connections
        self.handler_timeout = handler_timeout
        self.require_called_ae_title = require_called_ae_title
        self.allowed_calling_ae_titles = (
            None
            if allowed_calling_ae_titles is None
            else frozenset(validate_ae_title(t) for t in allowed_calling_ae_titles)
        )
        #: Networks (``"10.0.0.0/8"``, ``"::1"``) whose hosts may connect; a connection
        #: from anywhere else is closed as soon as it is accepted. None: any address.
        self.allowed_peer_addresses = (
            None
            if allowed_peer_addresses is None
            else tuple(network(each) for each in allowed_peer_addresses)
        )
        self.supported_contexts: list[PresentationContext] = list(supported_contexts)
        self.accept_any_abstract_syntax = accept_any_abstract_syntax
        self.maximum_operations_invoked = maximum_operations_invoked
        self.maximum_operations_performed = maximum_operations_performed
        self.maximum_associate_length = maximum_associate_length
        #: Largest data set received into memory (to a non-streaming handler or as a
        #: response); a larger one aborts the association. None: no limit.
        self.maximum_dataset_size = maximum_dataset_size
        #: Largest data set streamed to a handler (written to disk as it arrives).
        self.maximum_streamed_dataset_size = maximum_streamed_dataset_size
        self.implementation_class_uid = implementation_class_uid
        self.implementation_version_name = implementation_version_name
        #: The application's handlers, per DIMSE service and optionally per SOP class.
        self.handlers = HandlerRegistry()
        self.user_identity_handler: UserIdentityHandler | None = None
        #: Optional ``(sop_class_uid, application_information) -> bytes | None``: our
        #: reply to a requestor's SOP Class Extended Negotiation item (PS3.7 D.3.3.5)
        #: for a SOP class we accepted; None (or no hook) sends no reply item, which
        #: tells the requestor none of the options is supported.
        self.extended_negotiation_handler: ExtendedNegotiationHandler | None = None
        #: Metrics hooks told about every association of this AE (see
        #: :mod:`aionetdicom.observe`); add with :meth:`add_observer`.
        self.observers: list[Observer] = []
        #: Peers this AE may open associations to on its own (C-MOVE destinations,
        #: storage commitment reports): AE title -> (host, port), or (host, port,
        #: ssl_context) for a peer reached over TLS. Never taken from a request alone.
        self.known_aes: dict[str, KnownAddress] = {
            validate_ae_title(title): _known_address(title, address)
            for title, address in (known_aes or {}).items()
        }
        #: Optional async hook ``(ae_title, request) -> (host, port) | None`` deciding
        #: C-MOVE destinations instead of ``known_aes``.
        self.move_destination_handler: MoveDestinationHandler | None = None
        self._association_handlers: dict[str, list[AssociationHandler]] = {}
        self._services: dict[int, RequestHandler] = _default_services()

    def __repr__(self) -> str:
        return f"<AE {self.ae_title!r}>"

    # ------------------------------------------------------------------ configuration

    @property
    def handler_timeout(self) -> float | None:
        """Seconds an SCP handler may run before its service answers with a failure.

        Set it to a number, None (no limit) or ``"dimse"`` (follow ``dimse_timeout``,
        the default). Keep it below the peers' DIMSE timeout, so that they get the
        failure status rather than abort.
        """
        if self._handler_timeout == "dimse":
            return self.dimse_timeout
        return self._handler_timeout

    @handler_timeout.setter
    def handler_timeout(self, value: float | Literal["dimse"] | None) -> None:
        if value != "dimse" and value is not None and (isinstance(value, str) or value < 0):
            raise ValueError(f"handler_timeout must be >= 0, None or 'dimse', not {value!r}")
        self._handler_timeout: float | Literal["dimse"] | None = value

    @property
    def echo_handler(self) -> EchoHandler | None:
        """The C-ECHO handler (kept for compatibility; see :attr:`handlers`)."""
        return cast("EchoHandler | None", self.handlers.lookup(Service.C_ECHO))

    @echo_handler.setter
    def echo_handler(self, handler: EchoHandler | None) -> None:
        if handler is None:
            self.handlers.unregister(Service.C_ECHO)
        else:
            self.handlers.register(Service.C_ECHO, handler)

    def timeouts(self) -> Timeouts:
        """The AE's current timeouts as one value."""
        return Timeouts(
            acse=self.acse_timeout,
            dimse=self.dimse_timeout,
            network=self.network_timeout,
            connect=self.connect_timeout,
        )

    def add_supported_context(
        self,
        abstract_syntax: str,
        transfer_syntaxes: Sequence[str] | None = None,
        *,
        scu_role: bool | None = None,
        scp_role: bool | None = None,
    ) -> PresentationContext:
        """Support ``abstract_syntax`` as SCP, transfer syntaxes in our preference order."""
        context = PresentationContext(abstract_syntax, scu_role=scu_role, scp_role=scp_role)
        if transfer_syntaxes is not None:
            context = replace(context, transfer_syntaxes=tuple(transfer_syntaxes))
        self.supported_contexts.append(context)
        return context

    def add_storage_contexts(
        self,
        sop_classes: Iterable[str] = STORAGE_SOP_CLASSES,
        transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
        *,
        scu_role: bool | None = None,
        scp_role: bool | None = None,
    ) -> list[PresentationContext]:
        """Support the storage SOP classes as SCP (every one by default).

        An SCP has no limit on how many abstract syntaxes it supports (the 128 limit
        is on the contexts one association proposes). ``transfer_syntaxes`` are in our
        order of preference. Support given before for the same SOP classes is replaced.
        """
        uids = [sop_classes] if isinstance(sop_classes, str) else list(sop_classes)
        added = [
            PresentationContext(uid, tuple(transfer_syntaxes), scu_role=scu_role, scp_role=scp_role)
            for uid in dict.fromkeys(uids)
        ]
        replaced = {context.abstract_syntax for context in added}
        self.supported_contexts = [
            c for c in self.supported_contexts if c.abstract_syntax not in replaced
        ]
        self.supported_contexts.extend(added)
        return added

    def handle_dimse(self, command_field: int, handler: RequestHandler) -> None:
        """Low-level: run ``handler(assoc, message)`` for each received request of a kind.

        The handler must send the response itself (``assoc.send_message``). Service
        classes are built on this; most applications use their ``on_*`` decorators.
        """
        if command_field & 0x8000 or command_field == CommandField.C_CANCEL_RQ:
            raise ValueError(f"command field 0x{command_field:04X} is not a request")
        self._services[command_field] = handler

    @overload
    def on_association(self, handler: _F, /) -> _F: ...

    @overload
    def on_association(self, *kinds: AssociationEventKind) -> Callable[[_F], _F]: ...

    def on_association(self, *kinds: object) -> object:
        """Decorator: ``await handler(event: AssociationEvent)`` on association events.

        ``@ae.on_association("accepted", "released")`` for those kinds,
        ``@ae.on_association`` (bare) or ``@ae.on_association()`` for all of
        ``requested``, ``accepted``, ``rejected``, ``released`` and ``aborted`` (see
        :class:`~aionetdicom.association.AssociationEvent`). Works for associations the
        AE accepts and those it requests. Each association's events are delivered in
        order by a task of their own, never blocking the protocol; a handler that
        raises or overruns :attr:`handler_timeout` is logged and skipped.
        """
        if len(kinds) == 1 and callable(kinds[0]):
            return self.on_association()(kinds[0])
        chosen: tuple[str, ...] = tuple(kinds) if kinds else ASSOCIATION_EVENTS  # type: ignore[arg-type]
        unknown = [k for k in chosen if k not in ASSOCIATION_EVENTS]
        if unknown:
            raise ValueError(
                f"unknown association event(s) {unknown!r}; choose from {ASSOCIATION_EVENTS}"
            )

        def decorate(handler: _F) -> _F:
            for kind in chosen:
                self._association_handlers.setdefault(kind, []).append(handler)  # type: ignore[arg-type]
            return handler

        return decorate

    def remove_association_handler(self, handler: AssociationHandler) -> None:
        """Stop calling ``handler`` for association events (no error if it was not there)."""
        for handlers in self._association_handlers.values():
            while handler in handlers:
                handlers.remove(handler)

    def _make_notifier(self, assoc: Association) -> _Notifier | None:
        """The notifier for a new association, or None without notification handlers."""
        handlers = {k: tuple(v) for k, v in self._association_handlers.items() if v}
        if not handlers:
            return None
        notifier = _Notifier(handlers, self.handler_timeout, assoc.log)
        assoc._notifier = notifier
        return notifier

    def add_observer(self, observer: Observer) -> Observer:
        """Report associations and operations from now on to ``observer`` (returned)."""
        self.observers.append(observer)
        return observer

    def on_extended_negotiation(self, handler: _F) -> _F:
        """Decorator: ``handler(sop_class_uid, information) -> reply bytes | None``."""
        self.extended_negotiation_handler = handler  # type: ignore[assignment]
        return handler

    def on_user_identity(self, handler: _F) -> _F:
        """Decorator: ``handler(identity, request) -> bool | (bool, response)`` decides logins."""
        self.user_identity_handler = handler  # type: ignore[assignment]
        return handler

    # ------------------------------------------------------------------ SCU side

    def _receive_limit(self) -> int:
        return self.maximum_pdu_length or DEFAULT_MAX_UNLIMITED_PDATA_LENGTH

    def _user_information(self, **extra: object) -> UserInformation:
        return UserInformation(
            maximum_length=self.maximum_pdu_length,
            implementation_class_uid=self.implementation_class_uid,
            implementation_version_name=self.implementation_version_name,
            **extra,  # type: ignore[arg-type]
        )

    @asynccontextmanager
    async def associate(
        self,
        host: str,
        port: int,
        *,
        called_ae_title: str = "ANY-SCP",
        contexts: Sequence[PresentationContext] = VERIFICATION,
        user_identity: UserIdentity | None = None,
        operations_window: tuple[int, int] | None = None,
        extended_negotiation: Sequence[SOPClassExtendedNegotiation] = (),
        common_extended_negotiation: Sequence[SOPClassCommonExtendedNegotiation] = (),
        timeouts: Timeouts | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> AsyncIterator[Association]:
        """Request an association; release it when the block ends, abort it on error.

        With ``ssl_context`` (see :func:`aionetdicom.tls.client_context`) the
        connection speaks TLS (``server_hostname`` defaults to ``host``; it is checked
        only if the context checks host names); the handshake counts against the
        connect timeout.

        Raises :class:`AssociationRejected` (with result, source and reason),
        :class:`AssociationAborted`, :class:`ConnectTimeout`, :class:`TLSError` or
        :class:`ACSETimeout`.
        With notification handlers (:meth:`on_association`), leaving the block also
        waits until they have been called for this association.
        """
        timeouts = timeouts or self.timeouts()
        called = validate_ae_title(called_ae_title, "called AE title")
        rq_contexts, roles = propose(contexts)
        window = None
        if operations_window is not None:
            window = AsynchronousOperationsWindow(*operations_window)
        request = AAssociateRQ(
            called_ae_title=called,
            calling_ae_title=self.ae_title,
            presentation_contexts=rq_contexts,
            user_information=self._user_information(
                asynchronous_operations_window=window,
                role_selections=roles,
                sop_class_extended=tuple(extended_negotiation),
                sop_class_common_extended=tuple(common_extended_negotiation),
                user_identity=None if user_identity is None else user_identity.to_item(),
            ),
        )
        stream = await connect(
            host,
            port,
            timeout=timeouts.connect,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
        )
        connection = ULConnection(
            Role.REQUESTOR,
            max_pdata_length=self._receive_limit(),
            max_associate_length=self.maximum_associate_length,
        )
        assoc = Association(self, stream, connection, timeouts=timeouts, send_cap=DEFAULT_SEND_CAP)
        assoc.request = request
        assoc.request_handler = self._dispatch
        assoc.stream_policy = self._streams_dataset
        notifier = self._make_notifier(assoc)
        if notifier is None:
            async with self._requested(assoc, connection, request, host, port) as ready:
                yield ready
            return
        # Notifications run in a task of their own; leaving the block waits until
        # they have been delivered (each bounded by the handler timeout).
        error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            try:
                async with self._requested(assoc, connection, request, host, port) as ready:
                    yield ready
            except BaseException as exc:
                error = exc
            finally:
                notifier.close()
        if error is not None:
            raise error

    @asynccontextmanager
    async def _requested(
        self,
        assoc: Association,
        connection: ULConnection,
        request: AAssociateRQ,
        host: str,
        port: int,
    ) -> AsyncIterator[Association]:
        """Negotiate, run the reader while the block runs, then release (or abort)."""
        try:
            await self._negotiate_as_requestor(assoc, connection, request, host, port)
        except BaseException as exc:
            cause = exc if isinstance(exc, DicomNetworkError) else None
            with anyio.CancelScope(shield=True):
                await assoc._abort_with(cause or ConnectionClosed("association request failed"))
            raise
        error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(assoc.run)
            try:
                yield assoc
            except BaseException as exc:
                error = exc
                await assoc._abort_with(
                    AssociationAborted(None, None, f"aborted because the block raised {exc!r}")
                )
            else:
                try:
                    await assoc.release()
                except BaseException as exc:
                    error = exc
                    await assoc.abort()
            tg.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _negotiate_as_requestor(
        self,
        assoc: Association,
        connection: ULConnection,
        request: AAssociateRQ,
        host: str,
        port: int,
    ) -> None:
        connection.request_association(request)
        connection.transport_connected()
        await assoc._flush()
        assoc._notify("requested")
        timeout = assoc.timeouts.acse
        response: AAssociateAC | None = None
        try:
            with anyio.fail_after(timeout):
                while response is None:
                    for event in await assoc._receive_events():
                        if isinstance(event, ul.AssociationAccepted):
                            response = event.response
                        elif isinstance(event, ul.AssociationRejected):
                            rj = event.response
                            raise AssociationRejected(rj.result, rj.source, rj.reason)
                        elif isinstance(event, ul.Aborted):
                            assoc._note_abort(event)
                            raise AssociationAborted(event.source, event.reason, event.detail)
                    if response is None and connection.state is State.STA1:
                        closed = ConnectionClosed(
                            f"{host}:{port} closed the connection during association negotiation"
                        )
                        assoc._note_end("aborted", "peer", closed)
                        raise closed
        except TimeoutError:
            raise ACSETimeout(
                f"no A-ASSOCIATE-AC/RJ from {host}:{port} within {timeout} s (ACSE timeout)"
            ) from None
        assoc.response = response
        try:
            assoc.contexts = interpret_acceptance(request, response)
        except ProtocolError as exc:
            # The wire A-ABORT says what the exception says (provider, the error's reason).
            with anyio.CancelScope(shield=True):
                assoc._protocol_abort(exc)
                await assoc._flush()
                await assoc._close_stream()
            raise
        assoc.send_max_pdu = negotiated_maximum_length(
            response.user_information.maximum_length, DEFAULT_SEND_CAP
        )
        assoc.set_operations_window(
            *effective_window(
                request.user_information.asynchronous_operations_window,
                response.user_information.asynchronous_operations_window,
                requestor=True,
            )
        )
        assoc._notify("accepted")
        assoc.log.info(
            "association #%d accepted by %s at %s:%d (%d of %d contexts)",
            assoc.id,
            request.called_ae_title,
            host,
            port,
            len(assoc.accepted_contexts),
            len(assoc.contexts),
        )

    # ------------------------------------------------------------------ SCP side

    @asynccontextmanager
    async def serve(
        self,
        host: ListenAddresses = "0.0.0.0",
        port: int = 11112,
        *,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncIterator[Server]:
        """Listen while the block runs; ``server.addresses`` says where.

        ``host`` is one address (IPv4 or IPv6: ``"::1"``, ``"::"``), a list of them
        (each listens on ``port``), or a list of ``(host, port)`` pairs. Port 0 picks
        a free port (per listener). One task serves each association.

        With ``ssl_context`` (see :func:`aionetdicom.tls.server_context`) every
        connection speaks TLS; each handshake runs in its connection's task and must
        finish within the ACSE timeout, so a silent or slow peer never holds up others.

        Leaving the block (or :meth:`Server.aclose`) stops accepting, lets the
        associations in flight finish for ``shutdown_grace`` seconds, then aborts the
        rest.
        """
        addresses = _listen_addresses(host, port)
        listeners: list[TCPListener] = []
        try:
            for address, each_port in addresses:
                listeners.extend(await listen_tcp(address, each_port))
        except BaseException:
            with anyio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
            raise
        async with Server.running(
            self, listeners, shutdown_grace=shutdown_grace, ssl_context=ssl_context
        ) as server:
            yield server

    async def serve_forever(
        self,
        host: ListenAddresses = "0.0.0.0",
        port: int = 11112,
        *,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Serve until cancelled (then shut down gracefully, see :meth:`serve`)."""
        async with self.serve(
            host, port, shutdown_grace=shutdown_grace, ssl_context=ssl_context
        ) as server:
            await server.wait_closed()

    def _streams_dataset(self, assoc: Association, command: Command) -> bool:
        """True for a C-STORE-RQ whose handler was registered with ``streaming=True``."""
        if command.get("CommandField") != CommandField.C_STORE_RQ:
            return False
        service = self._services.get(CommandField.C_STORE_RQ)
        if service is not serve_store:
            accepts = getattr(service, "accepts_stream", None)
            return bool(accepts is not None and accepts(assoc, command))
        sop_class = command.get("AffectedSOPClassUID")
        return self.handlers.is_streaming(
            Service.C_STORE, sop_class if isinstance(sop_class, str) and sop_class else None
        )

    async def _dispatch(self, assoc: Association, message: AssembledMessage) -> None:
        """Hand a received DIMSE request to the service for its command field."""
        field = message.command.get("CommandField")
        service = self._services.get(field) if isinstance(field, int) else None
        if service is not None:
            await service(assoc, message)
            return
        if field == CommandField.C_CANCEL_RQ:
            return
        assoc.log.warning("association #%d: unsupported DIMSE request %r", assoc.id, field)
        await _answer_unrecognized(assoc, message)

    def _no_room(self, server: Server) -> AAssociateRJ | None:
        """The rejection while shutting down or at ``maximum_associations``, else None."""
        if server.closing:
            return AAssociateRJ(
                RejectResult.TRANSIENT,
                RejectSource.SERVICE_PROVIDER_PRESENTATION,
                PresentationRejectReason.TEMPORARY_CONGESTION,
            )
        if server.admitted >= self.maximum_associations:
            return AAssociateRJ(
                RejectResult.TRANSIENT,
                RejectSource.SERVICE_PROVIDER_PRESENTATION,
                PresentationRejectReason.LOCAL_LIMIT_EXCEEDED,
            )
        return None

    async def _decide(
        self, request: AAssociateRQ, server: Server, assoc: Association
    ) -> AAssociateRJ | tuple[AAssociateAC, tuple[NegotiatedContext, ...]]:
        """Reject, or accept with the negotiated contexts (contexts already validated).

        An accepted association takes its place among ``maximum_associations`` here,
        with no await between the check and the reservation, so that requests being
        negotiated at the same time can never together exceed the limit.
        """
        full = self._no_room(server)
        if full is not None:
            return full
        rejection = check_request(
            request,
            ae_title=self.ae_title,
            require_called_ae_title=self.require_called_ae_title,
            allowed_calling_ae_titles=self.allowed_calling_ae_titles,
        )
        if rejection is not None:
            return rejection
        identity_reply: UserIdentityAC | None = None
        offered = request.user_information.user_identity
        if isinstance(offered, UserIdentityRQ) and self.user_identity_handler is not None:
            accepted, server_response = await self._check_identity(offered, request)
            if not accepted:
                return AAssociateRJ(
                    RejectResult.PERMANENT,
                    RejectSource.SERVICE_USER,
                    UserRejectReason.NO_REASON,
                )
            if offered.positive_response_requested:
                identity_reply = UserIdentityAC(server_response or b"")
        negotiation = negotiate_contexts(
            request.presentation_contexts,
            self.supported_contexts,
            request.user_information.role_selections,
            accept_any_abstract_syntax=self.accept_any_abstract_syntax,
        )
        window = negotiate_window(
            request.user_information.asynchronous_operations_window,
            maximum_invoked=self.maximum_operations_invoked,
            maximum_performed=self.maximum_operations_performed,
        )
        response = AAssociateAC(
            called_ae_title=request.called_ae_title,
            calling_ae_title=request.calling_ae_title,
            presentation_contexts=negotiation.ac_contexts,
            user_information=self._user_information(
                asynchronous_operations_window=window,
                role_selections=negotiation.role_replies,
                sop_class_extended=self._extended_replies(request, negotiation.contexts),
                user_identity=identity_reply,
            ),
        )
        full = self._no_room(server)  # again: the identity check may have awaited
        if full is not None:
            return full
        server._admit(assoc)
        return response, negotiation.contexts

    def _extended_replies(
        self, request: AAssociateRQ, contexts: Sequence[NegotiatedContext]
    ) -> tuple[SOPClassExtendedNegotiation, ...]:
        """Our SOP Class Extended Negotiation replies, for accepted SOP classes only."""
        handler = self.extended_negotiation_handler
        if handler is None:
            return ()
        accepted = {context.abstract_syntax for context in contexts if context.accepted}
        replies: dict[str, SOPClassExtendedNegotiation] = {}
        for item in request.user_information.sop_class_extended:
            uid = item.sop_class_uid
            if uid not in accepted or uid in replies:
                continue
            try:
                reply = handler(uid, item.service_class_application_information)
            except Exception:
                logger.exception("extended negotiation handler failed for %s; no reply", uid)
                continue
            if reply is not None:
                replies[uid] = SOPClassExtendedNegotiation(uid, bytes(reply))
        return tuple(replies.values())

    async def _check_identity(
        self, offered: UserIdentityRQ, request: AAssociateRQ
    ) -> tuple[bool, bytes | None]:
        handler = self.user_identity_handler
        assert handler is not None
        try:
            identity = UserIdentity.from_item(offered)
        except ValueError:
            return False, None
        try:
            decision = await handler(identity, request)
        except Exception:
            logger.exception("user identity handler raised; rejecting the association")
            return False, None
        if isinstance(decision, tuple):
            return bool(decision[0]), decision[1]
        return bool(decision), None

    async def _serve_connection(
        self, assoc: Association, server: Server, identified: Callable[[], None]
    ) -> None:
        """Run one incoming connection from transport indication to close.

        ``identified()`` is called once the connection is no longer pending: its
        A-ASSOCIATE-RQ arrived, or it ended before one did.
        """
        connection = assoc._conn
        connection.transport_connected()
        try:
            request = await self._await_request(assoc, connection)
        finally:
            identified()
        if request is None:
            return
        assoc.request = request
        assoc._notify("requested")
        try:
            validate_contexts(request)
        except ProtocolError as exc:
            assoc._protocol_abort(exc)
            await assoc._flush()
            await self._drain(assoc, connection)
            return
        decision = await self._decide(request, server, assoc)
        if isinstance(decision, AAssociateRJ):
            rejection = decision
            error = AssociationRejected(rejection.result, rejection.source, rejection.reason)
            assoc.log.info(
                "association request from %s rejected: %s", request.calling_ae_title, error
            )
            connection.reject(rejection)
            await assoc._flush()
            assoc._notify("rejected", "local", error)
            await self._drain(assoc, connection)
            return
        response, assoc.contexts = decision
        assoc.response = response
        assoc.send_max_pdu = negotiated_maximum_length(
            request.user_information.maximum_length, DEFAULT_SEND_CAP
        )
        assoc.set_operations_window(
            *effective_window(
                request.user_information.asynchronous_operations_window,
                response.user_information.asynchronous_operations_window,
                requestor=False,
            )
        )
        assoc.request_handler = self._dispatch
        assoc.stream_policy = self._streams_dataset
        connection.accept(response)
        await assoc._flush()
        if assoc.is_established:
            assoc._notify("accepted")
        assoc.log.info(
            "association #%d accepted from %s (%s:%d)",
            assoc.id,
            request.calling_ae_title,
            *assoc.peer_address,
        )
        await assoc.run()

    async def _await_request(
        self, assoc: Association, connection: ULConnection
    ) -> AAssociateRQ | None:
        """Wait (ARTIM) for the A-ASSOCIATE-RQ; None if the connection ended instead."""
        with anyio.move_on_after(assoc.timeouts.acse or float("inf")):
            while connection.state is State.STA2:
                events = await assoc._receive_events()
                for event in events:
                    # The same read may also hold an A-ABORT (or the end of the
                    # connection): the request stands only if we may still answer it.
                    if isinstance(event, ul.AssociationRequested):
                        if connection.state in (State.STA3,):  # mypy: state changes
                            return event.request
                        assoc.log.info(
                            "association request from %s withdrawn before it was answered",
                            event.request.calling_ae_title,
                        )
        if connection.state is State.STA2:
            connection.artim_expired()
            await assoc._flush()
        await self._drain(assoc, connection)
        return None

    async def _drain(self, assoc: Association, connection: ULConnection) -> None:
        """In Sta13, wait (ARTIM) for the peer to close, then close ourselves."""
        with anyio.move_on_after(assoc.timeouts.acse or float("inf")):
            while connection.state is State.STA13:
                await assoc._receive_events()
        if connection.state is State.STA13:
            connection.artim_expired()
        await assoc._close_stream()


def _listen_addresses(host: ListenAddresses, port: int) -> list[tuple[str, int]]:
    """``serve``'s ``host`` and ``port`` as (host, port) pairs."""
    if isinstance(host, str):
        return [(host, port)]
    result: list[tuple[str, int]] = []
    for each in host:
        if isinstance(each, str):
            result.append((each, port))
        elif isinstance(each, tuple) and len(each) == 2:
            result.append((str(each[0]), int(each[1])))
        else:
            raise TypeError(f"listen address must be a host or (host, port), not {each!r}")
    if not result:
        raise ValueError("serve needs at least one address to listen on")
    return result
