"""The Application Entity: the user's entry point for associations as SCU and SCP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TypeVar, Union, cast

import anyio
from anyio.abc import SocketListener

from aionetdicom.acse.acceptor import (
    check_request,
    effective_window,
    negotiate_contexts,
    negotiate_window,
    validate_contexts,
)
from aionetdicom.acse.contexts import VERIFICATION, NegotiatedContext, PresentationContext
from aionetdicom.acse.requestor import (
    interpret_acceptance,
    negotiated_maximum_length,
    propose,
)
from aionetdicom.acse.user_identity import UserIdentity
from aionetdicom.association import Association, RequestHandler, Timeouts
from aionetdicom.dimse.command_set import CommandField, make_command
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.errors import (
    ACSETimeout,
    AssociationAborted,
    AssociationRejected,
    ConnectionClosed,
    ProtocolError,
)
from aionetdicom.pdu.constants import (
    AbortSource,
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
from aionetdicom.server import Server
from aionetdicom.services.verification import EchoRequest, serve_echo
from aionetdicom.transport import connect
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

_F = TypeVar("_F", bound=Callable[..., object])


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
    """

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
        require_called_ae_title: bool = False,
        allowed_calling_ae_titles: Collection[str] | None = None,
        supported_contexts: Sequence[PresentationContext] = VERIFICATION,
        accept_any_abstract_syntax: bool = False,
        maximum_operations_invoked: int = 1,
        maximum_operations_performed: int = 1,
        maximum_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
        implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
        implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
    ) -> None:
        self.ae_title = validate_ae_title(ae_title)
        if maximum_pdu_length < 0 or maximum_pdu_length > 0xFFFFFFFF:
            raise ValueError("maximum_pdu_length must be 0 (unlimited) or a 32-bit length")
        if 0 < maximum_pdu_length < 7:
            raise ValueError("maximum_pdu_length must leave room for a PDV (at least 7)")
        if maximum_associations < 1:
            raise ValueError("maximum_associations must be at least 1")
        self.maximum_pdu_length = maximum_pdu_length
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout
        self.connect_timeout = connect_timeout
        self.maximum_associations = maximum_associations
        self.require_called_ae_title = require_called_ae_title
        self.allowed_calling_ae_titles = (
            None
            if allowed_calling_ae_titles is None
            else frozenset(validate_ae_title(t) for t in allowed_calling_ae_titles)
        )
        self.supported_contexts: list[PresentationContext] = list(supported_contexts)
        self.accept_any_abstract_syntax = accept_any_abstract_syntax
        self.maximum_operations_invoked = maximum_operations_invoked
        self.maximum_operations_performed = maximum_operations_performed
        self.maximum_associate_length = maximum_associate_length
        self.implementation_class_uid = implementation_class_uid
        self.implementation_version_name = implementation_version_name
        self.echo_handler: EchoHandler | None = None
        self.user_identity_handler: UserIdentityHandler | None = None
        self._services: dict[int, RequestHandler] = {CommandField.C_ECHO_RQ: serve_echo}

    def __repr__(self) -> str:
        return f"<AE {self.ae_title!r}>"

    # ------------------------------------------------------------------ configuration

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

    def handle_dimse(self, command_field: int, handler: RequestHandler) -> None:
        """Low-level: run ``handler(assoc, message)`` for each received request of a kind.

        The handler must send the response itself (``assoc.send_message``). Service
        classes are built on this; most applications use their ``on_*`` decorators.
        """
        if command_field & 0x8000 or command_field == CommandField.C_CANCEL_RQ:
            raise ValueError(f"command field 0x{command_field:04X} is not a request")
        self._services[command_field] = handler

    def on_echo(self, handler: _F) -> _F:
        """Decorator: ``handler(request) -> status`` answers each C-ECHO (default Success)."""
        self.echo_handler = handler  # type: ignore[assignment]
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
    ) -> AsyncIterator[Association]:
        """Request an association; release it when the block ends, abort it on error.

        Raises :class:`AssociationRejected` (with result, source and reason),
        :class:`AssociationAborted`, :class:`ConnectTimeout` or :class:`ACSETimeout`.
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
        stream = await connect(host, port, timeout=timeouts.connect)
        connection = ULConnection(
            Role.REQUESTOR,
            max_pdata_length=self._receive_limit(),
            max_associate_length=self.maximum_associate_length,
        )
        assoc = Association(self, stream, connection, timeouts=timeouts, send_cap=DEFAULT_SEND_CAP)
        assoc.request = request
        assoc.request_handler = self._dispatch
        try:
            await self._negotiate_as_requestor(assoc, connection, request, host, port)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await assoc._abort_with(ConnectionClosed("association request failed"))
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
                            raise AssociationAborted(event.source, event.reason, event.detail)
                    if response is None and connection.state is State.STA1:
                        raise ConnectionClosed(
                            f"{host}:{port} closed the connection during association negotiation"
                        )
        except TimeoutError:
            raise ACSETimeout(
                f"no A-ASSOCIATE-AC/RJ from {host}:{port} within {timeout} s (ACSE timeout)"
            ) from None
        assoc.response = response
        try:
            assoc.contexts = interpret_acceptance(request, response)
        except ProtocolError as exc:
            await assoc._abort_with(AssociationAborted(AbortSource.SERVICE_PROVIDER, 6, str(exc)))
            raise
        assoc.send_max_pdu = negotiated_maximum_length(
            response.user_information.maximum_length, DEFAULT_SEND_CAP
        )
        assoc.set_operations_window(
            effective_window(
                request.user_information.asynchronous_operations_window,
                response.user_information.asynchronous_operations_window,
                requestor=True,
            ).may_invoke
        )
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
        host: str | Sequence[str] = "0.0.0.0",
        port: int = 11112,
    ) -> AsyncIterator[Server]:
        """Listen on ``host``:``port`` (port 0 picks a free one) while the block runs.

        Leaving the block stops accepting, lets running associations finish for a
        grace period, then aborts the rest.
        """
        hosts = [host] if isinstance(host, str) else list(host)
        listeners: list[SocketListener] = []
        for address in hosts:
            multi = await anyio.create_tcp_listener(local_host=address, local_port=port)
            listeners.extend(cast(SocketListener, each) for each in multi.listeners)
        async with Server.running(self, listeners) as server:
            yield server

    async def serve_forever(self, host: str | Sequence[str] = "0.0.0.0", port: int = 11112) -> None:
        """Serve until cancelled."""
        async with self.serve(host, port) as server:
            await server.wait_closed()

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
        if isinstance(field, int) and (field | 0x8000) in CommandField.__members__.values():
            response = make_command(
                field | 0x8000,
                MessageIDBeingRespondedTo=message.command.get("MessageID", 0),
                Status=0x0211,
            )
            await assoc.send_message(message.context_id, response)

    async def _decide(
        self, request: AAssociateRQ, server: Server
    ) -> AAssociateRJ | tuple[AAssociateAC, tuple[NegotiatedContext, ...]]:
        """Reject, or accept with the negotiated contexts (contexts already validated)."""
        if server.active_associations >= self.maximum_associations:
            return AAssociateRJ(
                RejectResult.TRANSIENT,
                RejectSource.SERVICE_PROVIDER_PRESENTATION,
                PresentationRejectReason.LOCAL_LIMIT_EXCEEDED,
            )
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
                user_identity=identity_reply,
            ),
        )
        return response, negotiation.contexts

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

    async def _serve_connection(self, assoc: Association, server: Server) -> None:
        """Run one incoming connection from transport indication to close."""
        connection = assoc._conn
        connection.transport_connected()
        request = await self._await_request(assoc, connection)
        if request is None:
            return
        assoc.request = request
        try:
            validate_contexts(request)
        except ProtocolError as exc:
            assoc._protocol_abort(exc)
            await assoc._flush()
            await self._drain(assoc, connection)
            return
        decision = await self._decide(request, server)
        if isinstance(decision, AAssociateRJ):
            rejection = decision
            assoc.log.info(
                "association request from %s rejected: %s",
                request.calling_ae_title,
                AssociationRejected(rejection.result, rejection.source, rejection.reason),
            )
            connection.reject(rejection)
            await assoc._flush()
            await self._drain(assoc, connection)
            return
        response, assoc.contexts = decision
        assoc.response = response
        assoc.send_max_pdu = negotiated_maximum_length(
            request.user_information.maximum_length, DEFAULT_SEND_CAP
        )
        assoc.set_operations_window(
            effective_window(
                request.user_information.asynchronous_operations_window,
                response.user_information.asynchronous_operations_window,
                requestor=False,
            ).may_invoke
        )
        assoc.request_handler = self._dispatch
        connection.accept(response)
        await assoc._flush()
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
                for event in await assoc._receive_events():
                    if isinstance(event, ul.AssociationRequested):
                        return event.request
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
