"""An established DICOM association: the thin async layer over the sans-I/O core.

One reader task per association feeds received bytes into :class:`ULConnection`,
reassembles DIMSE messages, routes responses to the operation waiting for them (by
Message ID Being Responded To) and hands requests to the local services. Writes go
through one lock, so the PDUs of two messages never interleave.

Requests received run as tasks of the association (:meth:`Association._run_handler`),
guarded so that the application's code can neither kill the association nor leave the
peer without an answer:

* a service that raises gets the standard failure status of its DIMSE service
  (:data:`~aionetdicom.services.status_rules.FAILURE_FOR`) sent for it, unless it had
  already sent its final response; the traceback is logged with the association id;
* a service of the AE (not a per-association override such as the C-STORE
  sub-operations of a C-GET, which set their own pace) must send its next response
  within :attr:`AE.handler_timeout <aionetdicom.ae.AE.handler_timeout>` seconds of the
  request, of its previous Pending response, or of the last response the peer sent
  us on this association (the C-STORE sub-operations a C-GET SCP makes). Otherwise it
  is cancelled, the service's failure status is sent and a warning logged; when the
  response cannot be sent (the cancellation cut a message in half) the association
  is aborted instead. DICOM leaves DIMSE timers to the implementation (PS3.8 defines
  only ARTIM, 9.1.5; PS3.2 lists "DIMSE level time-out values" among the configuration
  parameters a conformance statement documents); answering before the peer's own
  DIMSE timeout expires is the outcome most useful to it.

Association notifications (see :class:`AssociationEvent`) are queued to one task per
association that calls the AE's notification handlers in order, so a slow handler
delays later notifications, never the protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, cast

import anyio
from anyio.abc import ByteStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aionetdicom.acse.acceptor import OPERATIONS_WINDOW_CAP
from aionetdicom.acse.contexts import NegotiatedContext
from aionetdicom.dataset_stream import DatasetStream
from aionetdicom.dimse.command_set import (
    Command,
    CommandField,
    encode_command,
    is_response,
    make_command,
)
from aionetdicom.dimse.fragments import AssembledMessage, DatasetFragment, MessageAssembler
from aionetdicom.dimse.packing import LengthMismatch, StreamPacker, pack_message
from aionetdicom.dimse.status import Status
from aionetdicom.errors import (
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    ConnectionClosed,
    DicomNetworkError,
    DIMSETimeout,
    LocalProtocolError,
    NegotiationError,
    NetworkTimeout,
    ProtocolError,
)
from aionetdicom.handlers import Service
from aionetdicom.observe import Observer, OperationRecord, notify
from aionetdicom.pdu.constants import AbortReason, AbortSource
from aionetdicom.pdu.pdus import AAssociateAC, AAssociateRQ, Buffer
from aionetdicom.services.normalized import NormalizedOperations
from aionetdicom.services.query_retrieve import QueryRetrieveOperations
from aionetdicom.services.status_rules import FAILURE_FOR
from aionetdicom.services.storage import StorageOperations
from aionetdicom.socket_stream import SocketStream
from aionetdicom.tls import TLSInfo
from aionetdicom.transport import RECEIVE_SIZE, peer_address, tls_info
from aionetdicom.ul import events as ul
from aionetdicom.ul.connection import Role, ULConnection
from aionetdicom.ul.fsm import State

if TYPE_CHECKING:
    from aionetdicom.ae import AE

logger = logging.getLogger("aionetdicom.association")

_ids = itertools.count(1)
_PENDING = frozenset({0xFF00, 0xFF01})
#: Requests a C-CANCEL-RQ may refer to (PS3.7 9.3.2.3).
_CANCELLABLE = frozenset({CommandField.C_FIND_RQ, CommandField.C_GET_RQ, CommandField.C_MOVE_RQ})

#: PDUs of one message are written together up to about this many bytes: fewer
#: system calls, while memory stays bounded for large datasets.
WRITE_COALESCE_BYTES = 4 * 1024 * 1024
#: ... or up to this many PDUs, so that a peer announcing a tiny maximum PDU length
#: cannot make us hold millions of small buffers before a write.
WRITE_COALESCE_PDUS = 1024
#: While part of a PDU or of a DIMSE message has arrived, the network timeout starts
#: over only once this many more bytes came in: a peer trickling a byte at a time
#: (slowloris) is cut off after the network timeout, a slow but working link is not.
MIN_PROGRESS_BYTES = 64 * 1024

#: A service for requests received on an association: (association, message) -> None.
#: A handler function may carry an ``accepts_stream(assoc, command) -> bool`` attribute:
#: True for a command makes its data set arrive as ``message.stream`` (see
#: :mod:`aionetdicom.dataset_stream`) instead of in ``message.dataset``.
RequestHandler = Callable[["Association", AssembledMessage], Awaitable[None]]
#: Decides whether a received request's data set is streamed to its handler.
StreamPolicy = Callable[["Association", Command], bool]

#: The association notifications, in the order they can happen.
AssociationEventKind = Literal["requested", "accepted", "rejected", "released", "aborted"]
ASSOCIATION_EVENTS: tuple[AssociationEventKind, ...] = (
    "requested",
    "accepted",
    "rejected",
    "released",
    "aborted",
)


@dataclass(frozen=True, slots=True)
class AssociationEvent:
    """A notification about an association, as handed to ``@ae.on_association`` handlers.

    ``kind`` is one of :data:`ASSOCIATION_EVENTS`. Every association that reached
    "requested" (A-ASSOCIATE-RQ received, or sent by us) ends with exactly one of
    "rejected", "released" or "aborted", with "accepted" in between when it was
    accepted. ``initiator`` says who rejected, released or aborted it: "local" (this
    AE, including its upper layer on a protocol error or timer expiry) or "peer"
    (including a connection the peer closed or lost); None for "requested" and
    "accepted". ``error`` is what ended it: :class:`AssociationRejected` (result,
    source, reason), :class:`AssociationAborted` (source, reason),
    :class:`~aionetdicom.errors.ConnectionClosed` or one of the timeouts; None when it
    was released.
    """

    kind: AssociationEventKind
    assoc: Association
    initiator: Literal["local", "peer"] | None = None
    error: DicomNetworkError | None = None

    def __repr__(self) -> str:
        who = "" if self.initiator is None else f" by {self.initiator}"
        why = "" if self.error is None else f": {self.error}"
        return f"<AssociationEvent {self.kind} #{self.assoc.id}{who}{why}>"

    @property
    def request(self) -> AAssociateRQ | None:
        """The A-ASSOCIATE-RQ (None only when our own request never got out)."""
        return self.assoc.request

    @property
    def peer_ae_title(self) -> str:
        """The peer's AE title."""
        return self.assoc.peer_ae_title

    @property
    def peer_address(self) -> tuple[str, int]:
        """The peer's (host, port)."""
        return self.assoc.peer_address


#: A notification handler: ``await handler(event)``; what it returns is ignored.
AssociationHandler = Callable[[AssociationEvent], Awaitable[object]]

#: Seconds notifications still queued get when their delivery task is cancelled.
NOTIFICATION_DRAIN = 1.0


class _Notifier:
    """Delivers one association's notifications, in order, from a task of their own."""

    def __init__(
        self,
        handlers: dict[str, tuple[AssociationHandler, ...]],
        timeout: float | None,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._handlers = handlers
        self._timeout = timeout
        self._log = log
        self._send, self._receive = anyio.create_memory_object_stream[AssociationEvent](math.inf)

    def emit(self, event: AssociationEvent) -> None:
        if self._handlers.get(event.kind):
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._send.send_nowait(event)

    def close(self) -> None:
        """No more events: :meth:`run` returns once the queued ones are delivered."""
        self._send.close()

    async def run(self) -> None:
        """Deliver until :meth:`close`; cancelled, deliver what is still queued (and
        what the ending association still emits) for :data:`NOTIFICATION_DRAIN` s."""
        with self._receive:
            try:
                async for event in self._receive:
                    await self._deliver(event)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True), anyio.move_on_after(NOTIFICATION_DRAIN):
                    async for event in self._receive:
                        await self._deliver(event)
                raise

    async def _deliver(self, event: AssociationEvent) -> None:
        for handler in self._handlers.get(event.kind, ()):
            await self._call(handler, event)

    async def _call(self, handler: AssociationHandler, event: AssociationEvent) -> None:
        limit = math.inf if self._timeout is None else self._timeout
        try:
            with anyio.fail_after(limit):
                await handler(event)
        except TimeoutError:
            self._log.warning(
                "association #%d: %r notification handler %r still running after %s s; "
                "cancelled it",
                event.assoc.id,
                event.kind,
                handler,
                self._timeout,
            )
        except Exception:
            self._log.exception(
                "association #%d: %r notification handler %r raised",
                event.assoc.id,
                event.kind,
                handler,
            )


class _Answering:
    """What the guard of one received request knows about the responses sent for it."""

    __slots__ = ("final_sent", "limit", "scope")

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.final_sent = False
        self.scope: anyio.CancelScope | None = None

    def progressed(self) -> None:
        """A Pending response went out, or the peer answered us: restart the clock."""
        if self.scope is not None and self.limit is not None and not self.final_sent:
            self.scope.deadline = anyio.current_time() + self.limit

    def finished(self) -> None:
        """The final response is being sent: no more deadline."""
        self.final_sent = True
        if self.scope is not None:
            self.scope.deadline = math.inf


def failure_response(command: Command, status: int, comment: str = "") -> Command:
    """The response to request ``command`` with ``status`` (and Error Comment)."""
    field = command.get("CommandField")
    assert isinstance(field, int)
    response = make_command(field | 0x8000, Status=status)
    _copy(response, "MessageIDBeingRespondedTo", command.get("MessageID", 0))
    sop_class = command.get("AffectedSOPClassUID", command.get("RequestedSOPClassUID"))
    instance = command.get("AffectedSOPInstanceUID", command.get("RequestedSOPInstanceUID"))
    _copy(response, "AffectedSOPClassUID", sop_class)
    if field == CommandField.C_STORE_RQ or (
        CommandField.N_EVENT_REPORT_RQ <= field <= CommandField.N_DELETE_RQ
    ):
        _copy(response, "AffectedSOPInstanceUID", instance)
    if comment:
        _copy(response, "ErrorComment", comment[:64])
    return response


def _copy(command: Command, keyword: str, value: object) -> None:
    # A value the peer sent (too long, say) must never stop us from answering.
    if value is None:
        return
    with suppress(TypeError, ValueError, KeyError):
        command[keyword] = value  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait, None meaning forever.

    ``acse``: association negotiation, release, and ARTIM; ``dimse``: each DIMSE
    response; ``network``: silence on an established association (idle from when the
    last operation ended), and the longest stall in the middle of a PDU or message
    (see :data:`MIN_PROGRESS_BYTES`); ``connect``: the TCP connection.
    """

    acse: float | None = 30.0
    dimse: float | None = 30.0
    network: float | None = 60.0
    connect: float | None = 30.0


class Association(StorageOperations, QueryRetrieveOperations, NormalizedOperations):
    """One association with a peer AE; create it with ``AE.associate`` or ``AE.serve``.

    The DIMSE operations (``echo``, ``store``, ``find``, ``get``, ``move``, ``n_get`` …)
    come from the service modules' mixins.
    """

    def __init__(
        self,
        ae: AE,
        stream: ByteStream,
        connection: ULConnection,
        *,
        timeouts: Timeouts,
        send_cap: int,
    ) -> None:
        self.ae = ae
        self.id = next(_ids)
        self._stream = stream
        # Zero-copy paths of streams that offer them (aionetdicom.socket_stream).
        self._receive_into: Callable[[memoryview], Awaitable[int]] | None = getattr(
            stream, "receive_into", None
        )
        self._send_buffers: Callable[[Sequence[Buffer]], Awaitable[None]] | None = getattr(
            stream, "send_buffers", None
        )
        # Bare-socket streams take their timeouts themselves, armed only while they
        # wait: no cancel scope per read or write.
        self._timed_io = isinstance(stream, SocketStream)
        self._conn = connection
        self.timeouts = timeouts
        self._send_cap = send_cap
        #: Bytes received from and sent to the peer on this association's connection.
        self.bytes_received = 0
        self.bytes_sent = 0
        self._observers: tuple[Observer, ...] = tuple(getattr(ae, "observers", ()))
        self._clock: Callable[[], float] | None = None
        self._opened = False
        # Operations in flight for the observers: message ID -> (command field, SOP
        # class, start time), ours (requests we sent) and theirs (requests we serve).
        self._ours: dict[int, tuple[int, str, float]] = {}
        self._theirs: dict[int, tuple[int, str, float]] = {}
        self._send_lock = anyio.Lock(fast_acquire=True)  # no yield when uncontended
        self._assembler = MessageAssembler(
            stream_dataset=self._wants_stream,
            max_dataset_length=getattr(ae, "maximum_dataset_size", None),
            max_streamed_dataset_length=getattr(ae, "maximum_streamed_dataset_size", None),
        )
        #: The streamed data set being received, if any (one message at a time).
        self._incoming: DatasetStream | None = None
        self._waiters: dict[int, MemoryObjectSendStream[AssembledMessage]] = {}
        self._abandoned: dict[int, Callable[[], None] | None] = {}
        self._invoke_slots: anyio.Semaphore | None = anyio.Semaphore(1, fast_acquire=True)
        self._window = (1, 1)
        # Requests of the peer we serve at once: the window we accepted to perform.
        self._perform_slots = anyio.Semaphore(1)
        self._slot_holders: set[int] = set()
        self._owed_responses = 0
        self._last_received = 0.0
        # When the last request served or operation awaited finished: the network
        # timeout counts idleness from then, not from before the work.
        self._work_ended_at = -math.inf
        # Time spent waiting for the rest of a PDU or message, and the bytes received
        # meanwhile (see MIN_PROGRESS_BYTES).
        self._stalled = 0.0
        self._progress = 0
        self._message_ids = itertools.count(1)
        self._failure: DicomNetworkError | None = None
        self._closed = anyio.Event()
        self._release_requested_locally = False
        self._task_group: anyio.abc.TaskGroup | None = None
        self.log = logging.LoggerAdapter(logger, {"association": self.id})
        #: The peer's (host, port).
        self.peer_address: tuple[str, int] = peer_address(stream)
        #: A-ASSOCIATE-RQ and -AC exchanged (set once negotiation succeeded).
        self.request: AAssociateRQ | None = None
        self.response: AAssociateAC | None = None
        #: Every proposed presentation context with its outcome, in proposal order.
        self.contexts: tuple[NegotiatedContext, ...] = ()
        #: Largest P-DATA-TF body we may send to the peer.
        self.send_max_pdu = send_cap
        #: Handler for DIMSE requests the peer sends us (set by the AE).
        self.request_handler: RequestHandler | None = None
        #: Per-command-field handlers that take precedence on this association only,
        #: e.g. the C-STORE sub-operations of a running C-GET.
        self.request_handlers: dict[int, RequestHandler] = {}
        #: Whether a request's data set is streamed to the AE's handler (set by the AE).
        self.stream_policy: StreamPolicy | None = None
        #: Bytes of a streamed data set buffered ahead of its handler.
        self.stream_buffer = 4 * 1024 * 1024
        #: The A-ABORT or protocol error that ended the association, if any.
        self.abort_reason: AssociationAborted | None = None
        # Guards of the requests being served, by the request's Message ID.
        self._answering: dict[int, _Answering] = {}
        # Notifications: None when the AE has no notification handlers.
        self._notifier: _Notifier | None = None
        self._requested = False  # "requested" was notified: an end must follow
        self._ended = False  # "rejected", "released" or "aborted" was notified
        self._end: tuple[Literal["released", "aborted"], Literal["local", "peer"]] | None = None
        self._end_error: DicomNetworkError | None = None
        #: One event per C-FIND/C-GET/C-MOVE request received, by Message ID, set when
        #: a C-CANCEL-RQ names it (created here, so a C-CANCEL right behind its request
        #: is not lost; the serving function removes it when done).
        self._cancel_requests: dict[int, anyio.Event] = {}

    def _now(self) -> float:
        """The event loop's clock (anyio.current_time), read without looking up the
        async backend every time: the association reads it several times a message."""
        clock = self._clock
        if clock is None:
            clock = self._clock = loop_clock()
        return clock()

    # ------------------------------------------------------------------ information

    def __repr__(self) -> str:
        return (
            f"<Association #{self.id} {self.local_ae_title}->{self.peer_ae_title} "
            f"{self.peer_address[0]}:{self.peer_address[1]} {self._conn.state.label}>"
        )

    @property
    def is_requestor(self) -> bool:
        """True when we requested this association (we are the SCU side)."""
        return self._conn.role is Role.REQUESTOR

    @property
    def local_ae_title(self) -> str:
        """Our AE title on this association."""
        if self.request is None:
            return self.ae.ae_title
        rq = self.request
        return rq.calling_ae_title if self.is_requestor else rq.called_ae_title

    @property
    def peer_ae_title(self) -> str:
        """The peer's AE title on this association."""
        if self.request is None:
            return ""
        rq = self.request
        return rq.called_ae_title if self.is_requestor else rq.calling_ae_title

    @property
    def state(self) -> State:
        """The upper-layer state (Sta6 while established)."""
        return self._conn.state

    @property
    def is_established(self) -> bool:
        """True while DIMSE messages can be exchanged."""
        return self._conn.is_established and self._failure is None

    @property
    def accepted_contexts(self) -> tuple[NegotiatedContext, ...]:
        """The accepted presentation contexts."""
        return tuple(c for c in self.contexts if c.accepted)

    @property
    def operations_window(self) -> tuple[int, int]:
        """(our requests outstanding at once, the peer's requests we perform at once)
        as negotiated: (1, 1) unless both sides agreed to more."""
        return self._window

    @property
    def outstanding_operations(self) -> int:
        """Our requests waiting for their turn in the window or for their final
        response (a C-GET counts until its sub-operations are done)."""
        requests = set(self._waiters) | set(self._abandoned) | self._slot_holders
        return len(requests) + (1 if self._running_get is not None and not requests else 0)

    @property
    def tls(self) -> TLSInfo | None:
        """The TLS version, cipher and peer certificate, or None on plain TCP."""
        return tls_info(self._stream)

    @property
    def extended_negotiation(self) -> dict[str, bytes]:
        """The SOP Class Extended Negotiation the acceptor agreed to: SOP class UID ->
        service-class application information (empty when it sent none)."""
        pdu = self.response
        if pdu is None:
            return {}
        return {
            item.sop_class_uid: item.service_class_application_information
            for item in pdu.user_information.sop_class_extended
        }

    @property
    def peer_implementation_class_uid(self) -> str | None:
        """The peer's Implementation Class UID, if it sent one."""
        pdu = self.response if self.is_requestor else self.request
        return None if pdu is None else pdu.user_information.implementation_class_uid

    @property
    def peer_implementation_version_name(self) -> str | None:
        """The peer's Implementation Version Name, if it sent one."""
        pdu = self.response if self.is_requestor else self.request
        return None if pdu is None else pdu.user_information.implementation_version_name

    def context_for(
        self, abstract_syntax: str, transfer_syntax: str | None = None
    ) -> NegotiatedContext:
        """The first accepted context for ``abstract_syntax`` (and transfer syntax, if given)."""
        for context in self.contexts:
            if (
                context.accepted
                and context.abstract_syntax == abstract_syntax
                and (transfer_syntax is None or context.transfer_syntax == transfer_syntax)
            ):
                return context
        proposed = [c for c in self.contexts if c.abstract_syntax == abstract_syntax]
        if not proposed:
            raise NegotiationError(
                f"no presentation context for {abstract_syntax} was proposed on this association"
            )
        results = ", ".join(f"#{c.context_id}: {c.result.name}" for c in proposed)
        raise NegotiationError(
            f"the peer accepted no presentation context for {abstract_syntax} ({results})"
        )

    # ------------------------------------------------------------------ notifications

    def _notify(
        self,
        kind: AssociationEventKind,
        initiator: Literal["local", "peer"] | None = None,
        error: DicomNetworkError | None = None,
    ) -> None:
        if kind == "requested":
            self._requested = True
        elif kind in ("rejected", "released", "aborted"):
            if self._ended or not self._requested:
                return
            self._ended = True
        if self._observers:
            if kind == "accepted":
                self._opened = True
                notify(self._observers, "association_opened", self)
            elif kind in ("released", "aborted") and self._opened:
                notify(self._observers, "association_closed", self, error)
        if self._notifier is not None:
            self._notifier.emit(AssociationEvent(kind, self, initiator, error))

    def _note_end(
        self,
        kind: Literal["released", "aborted"],
        initiator: Literal["local", "peer"],
        error: DicomNetworkError | None = None,
    ) -> None:
        """Remember how the association ends (the first cause wins); notified on close."""
        if self._end is None:
            self._end = (kind, initiator)
            self._end_error = error

    # ------------------------------------------------------------------ reading

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if not self._conn.is_established:
            raise LocalProtocolError(
                f"association is not established (state {self._conn.state.label}: "
                f"{self._conn.state.description})"
            )

    def _mid_message(self) -> bool:
        """True while part of a PDU or of a DIMSE message has arrived: the peer owes us
        the rest, so waiting for it is a stall, not idleness."""
        return self._conn.in_pdu or self._assembler.in_progress

    async def _receive_events(self) -> list[ul.ULEvent]:
        """Read once (honouring ARTIM and the network timeout) and return UL events.

        Between messages the network timeout starts over with every read. In the
        middle of a PDU or message it is a budget for the whole wait, renewed only by
        :data:`MIN_PROGRESS_BYTES` of progress, so that a trickling peer is cut off.
        """
        conn = self._conn
        timeout = self.timeouts.acse if conn.artim_running else self.timeouts.network
        stalling = not conn.artim_running and timeout is not None and self._mid_message()
        if not stalling:
            self._stalled = 0.0
            self._progress = 0
        limit = math.inf if timeout is None else timeout
        if stalling:
            limit = max(0.0, limit - self._stalled)
        data: bytes | None = None
        filled = 0
        timed_out = False
        started = self._now() if stalling else 0.0  # only a stall is timed from here
        try:
            into = conn.receive_buffer() if self._receive_into is not None else None
            if self._timed_io:
                stream = cast(SocketStream, self._stream)
                wait = None if limit == math.inf else limit
                if into is not None:
                    # The rest of a PDU body: read it where the PDU will be decoded.
                    filled = await stream.receive_into(into, timeout=wait)
                else:
                    data = await stream.receive(RECEIVE_SIZE, timeout=wait)
            else:
                with anyio.fail_after(limit):
                    if into is not None:
                        assert self._receive_into is not None
                        filled = await self._receive_into(into)
                    else:
                        data = await self._stream.receive(RECEIVE_SIZE)
            if into is not None and not filled:
                raise anyio.EndOfStream
        except TimeoutError:
            timed_out = True
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            data = None
            filled = 0
        now = self._now()
        received = filled or (len(data) if data else 0)
        if received:
            self.bytes_received += received
            if self._observers:
                notify(self._observers, "bytes_received", self, received)
        if stalling:
            self._stalled += now - started
            self._progress += received
            if self._progress >= MIN_PROGRESS_BYTES:
                self._stalled = 0.0
                self._progress = 0
        if timed_out:
            if conn.artim_running:
                events = conn.artim_expired()
            elif not stalling and (
                self._owed_responses or self._waiters or self._work_ended_at + limit > now
            ):
                # Quiet, but not idle: we are still working on the peer's request (a
                # long C-MOVE), or waiting for its response, which the DIMSE and
                # handler timeouts bound, or only just finished. The network timeout
                # is for idle links.
                return []
            else:
                where = "in the middle of a PDU or message" if stalling else "while idle"
                self._fail(NetworkTimeout(f"no data from the peer for {timeout} s {where}"))
                events = conn.abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
        elif filled:
            self._last_received = now
            events = conn.received_into(filled)
        elif data is None:
            events = conn.receive_eof()
        else:
            self._last_received = now
            events = conn.receive_data(data)
        if events and self.log.isEnabledFor(logging.DEBUG):
            for event in events:
                self.log.debug("association #%d: %s", self.id, _describe(event))
        for event in events:
            if isinstance(event, ul.Aborted):
                # Record the abort before the flush below yields (closing the stream), so
                # a concurrent operation sees AssociationAborted, not a bare state error.
                self._note_abort(event)
            elif isinstance(event, ul.ReleaseConfirmed):
                self._note_end("released", "local")  # the flush may close the stream
            elif isinstance(event, ul.AssociationRejected):
                rj = event.response
                self._notify(
                    "rejected", "peer", AssociationRejected(rj.result, rj.source, rj.reason)
                )
        await self._flush()
        return events

    async def _flush(self) -> None:
        """Write what the connection produced; close the stream when it asks."""
        if self._conn.close_requested:
            await self._write_pending()
            await self._close_stream()
            return
        if self._conn.has_output:
            async with self._send_lock:
                await self._write_pending()

    async def _write_pending(self) -> None:
        data = self._conn.data_to_send()
        if not data:
            return
        timeout = self.timeouts.network
        size = sum(map(len, data))
        self.bytes_sent += size
        if self._observers:
            notify(self._observers, "bytes_sent", self, size)
        try:
            if self._timed_io:
                stream = cast(SocketStream, self._stream)
                await stream.send_buffers(data, timeout=timeout)  # scatter/gather, no copy
            else:
                with anyio.fail_after(math.inf if timeout is None else timeout):
                    if self._send_buffers is not None:
                        await self._send_buffers(data)
                    else:
                        joined = bytes(data[0]) if len(data) == 1 else b"".join(data)
                        await self._stream.send(joined)
        except TimeoutError:
            self._fail(NetworkTimeout(f"the peer did not read what we sent for {timeout} s"))
            await self._close_stream()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionClosed(f"connection lost while sending: {exc!r}"))
            await self._close_stream()

    async def _close_stream(self) -> None:
        with anyio.CancelScope(shield=True):
            with suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._stream.aclose()
        if self._conn.state is not State.STA1:
            self._conn.receive_eof()
        self._finish()

    def _fail(self, error: DicomNetworkError) -> None:
        if self._failure is None:
            self._failure = error
            self.log.info("association #%d ended: %s", self.id, error)
        if self._incoming is not None:
            self._incoming.fail(self._failure)
            self._incoming = None

    def _finish(self) -> None:
        if self._failure is None:
            self._failure = ConnectionClosed("the association has ended")
        if self._end is None:
            self._note_end("aborted", "peer", ConnectionClosed("the connection was closed"))
        assert self._end is not None
        kind, initiator = self._end
        for table, role in ((self._ours, "SCU"), (self._theirs, "SCP")):
            for message_id in list(table):
                self._operation_done(table, message_id, role, None, "association ended")  # type: ignore[arg-type]
        self._notify(kind, initiator, self._end_error)
        for waiter in self._waiters.values():
            waiter.close()
        self._waiters.clear()
        self._closed.set()

    async def run(self) -> None:
        """Serve the established association until it ends; never raises protocol errors."""
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                while self._conn.state is not State.STA1 and not self._closed.is_set():
                    events = await self._receive_events()
                    for event in events:
                        await self._handle_event(event)
                tg.cancel_scope.cancel()
        finally:
            self._task_group = None
            if not self._closed.is_set():
                # Cancelled (or failed) while the association lives: tell the peer with
                # an A-ABORT rather than just dropping the connection.
                await self._abort_with(
                    AssociationAborted(None, None, "the association's reader task ended")
                )

    async def _handle_event(self, event: ul.ULEvent) -> None:
        conn = self._conn
        if isinstance(event, ul.DataReceived):
            for pdv in event.pdata.pdvs:
                if not self._is_accepted_context(pdv.context_id):
                    self._protocol_abort(
                        ProtocolError(
                            f"PDV for presentation context {pdv.context_id}, "
                            "which is not an accepted context",
                            abort_reason=AbortReason.INVALID_PDU_PARAMETER_VALUE,
                        )
                    )
                    await self._flush()
                    return
                try:
                    message = self._assembler.feed(pdv)
                except ProtocolError as exc:
                    self._protocol_abort(exc)
                    await self._flush()
                    return
                if message is None:
                    continue
                if isinstance(message, DatasetFragment):
                    incoming = self._incoming
                    if message.is_last:
                        self._incoming = None
                    if incoming is not None:
                        await incoming.put(message.data, message.is_last)
                    continue
                if message.streamed:
                    self._incoming = DatasetStream(self.stream_buffer)
                    message = replace(message, stream=self._incoming)
                await self._on_message(message)
                if self.abort_reason is not None:
                    return  # the message aborted the association: ignore the rest
        elif isinstance(event, ul.ReleaseRequested):
            if event.collision:
                self._note_end("released", "local")
                if conn.state is State.STA9:
                    conn.release_response()
            else:
                self._fail(AssociationError("the peer released the association"))
                self._note_end("released", "peer")
                conn.release_response()
            await self._flush()
        elif isinstance(event, ul.ReleaseConfirmed):
            self._note_end("released", "local")
            if conn.state is State.STA12:
                conn.release_response()
            await self._flush()
        elif isinstance(event, ul.Aborted):
            self._note_abort(event)
        elif isinstance(event, ul.ConnectionClosed):
            await self._close_stream()

    def _note_abort(self, event: ul.Aborted) -> None:
        if self.abort_reason is None:
            self.abort_reason = AssociationAborted(event.source, event.reason, event.detail)
        self._fail(self.abort_reason)
        self._note_end("aborted", "local" if event.local else "peer", self.abort_reason)

    def _protocol_abort(self, error: ProtocolError) -> None:
        self.log.warning("aborting association #%d: %s", self.id, error)
        aborted = AssociationAborted(
            AbortSource.SERVICE_PROVIDER, error.abort_reason, f"we aborted: {error}"
        )
        self.abort_reason = aborted
        self._fail(aborted)
        self._note_end("aborted", "local", aborted)
        self._conn.abort(AbortSource.SERVICE_PROVIDER, error.abort_reason)

    def _wants_stream(self, command: Command) -> bool:
        """Whether the handler of request ``command`` takes its data set as a stream."""
        field = command.get("CommandField")
        if not isinstance(field, int) or is_response(field):
            return False
        override = self.request_handlers.get(field)
        if override is not None:
            accepts = getattr(override, "accepts_stream", None)
            return bool(accepts is not None and accepts(self, command))
        policy = self.stream_policy
        return policy is not None and policy(self, command)

    def _is_accepted_context(self, context_id: int) -> bool:
        for context in self.contexts:
            if context.context_id == context_id:
                return context.accepted
        return False

    async def _on_message(self, message: AssembledMessage) -> None:
        command = message.command
        field = command.get("CommandField")
        if not isinstance(field, int):
            self._protocol_abort(ProtocolError("received a DIMSE command without CommandField"))
            await self._flush()
            return
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "association #%d: received %s on context %d%s",
                self.id,
                _summary(command),
                message.context_id,
                " (data set streamed)" if message.streamed else "",
            )
        if is_response(field):
            for answering in self._answering.values():
                answering.progressed()  # e.g. a C-GET SCP's sub-operation was answered
            responded_to = command.get("MessageIDBeingRespondedTo")
            if self._ours and command.get("Status") not in _PENDING:
                self._operation_done(self._ours, responded_to, "SCU", command.get("Status"))
            if responded_to in self._abandoned:
                if command.get("Status") not in _PENDING:  # (recorded above)
                    self._release_slot(responded_to)
                    finished = self._abandoned.pop(responded_to)
                    if finished is not None:
                        finished()
                return
            waiter = self._waiters.get(responded_to) if isinstance(responded_to, int) else None
            if waiter is None:
                self.log.warning(
                    "association #%d: dropping %s for unknown message ID %r",
                    self.id,
                    _field_name(field),
                    responded_to,
                )
                return
            try:
                waiter.send_nowait(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._waiters.pop(responded_to, None)  # type: ignore[arg-type]
            return
        if field != CommandField.C_CANCEL_RQ and not isinstance(command.get("MessageID"), int):
            # PS3.7: the response carries the request's Message ID; without one the
            # request cannot be answered (DCMTK aborts too).
            self._protocol_abort(
                ProtocolError(f"received a {_field_name(field)} without a Message ID")
            )
            await self._flush()
            return
        if field == CommandField.C_CANCEL_RQ:
            cancelled = command.get("MessageIDBeingRespondedTo")
            if isinstance(cancelled, int) and cancelled in self._cancel_requests:
                self._cancel_requests[cancelled].set()
        elif field in _CANCELLABLE and isinstance(message_id := command.get("MessageID"), int):
            self._cancel_requests[message_id] = anyio.Event()
        override = self.request_handlers.get(field)
        handler = self.request_handler if override is None else override
        if handler is None or self._task_group is None:
            self.log.warning(
                "association #%d: no service for %s; ignoring it", self.id, _field_name(field)
            )
            if message.stream is not None:
                message.stream.discard()  # or the reader would wait on a full buffer
            return
        self._task_group.start_soon(self._run_handler, handler, message, override is None)

    async def _run_handler(
        self, handler: RequestHandler, message: AssembledMessage, timed: bool = True
    ) -> None:
        """Serve one request; answer for the service when it fails or overruns.

        See the module docstring for the policy.
        """
        command = message.command
        field = command.get("CommandField")
        service = Service.for_request(field) if isinstance(field, int) else None
        message_id = command.get("MessageID")
        limit = self.ae.handler_timeout if timed and service is not None else None
        answering = _Answering(limit)
        tracked = isinstance(message_id, int) and message_id not in self._answering
        if tracked:
            self._answering[message_id] = answering  # type: ignore[index]
            if self._observers and isinstance(field, int):
                self._theirs[message_id] = (field, _sop_class(command), self._now())  # type: ignore[index]
        self._owed_responses += 1
        what = _field_name(field) if isinstance(field, int) else "request"
        comment = ""
        slot = self._perform_slots if service is not None else None
        holding = False
        try:
            if slot is not None:
                try:
                    slot.acquire_nowait()  # no checkpoint: start at once when free
                except anyio.WouldBlock:
                    await slot.acquire()
                holding = True
            with anyio.CancelScope() as scope:
                answering.scope = scope
                if limit is not None:
                    scope.deadline = anyio.current_time() + limit
                if message.stream is not None:
                    message.stream.on_progress = answering.progressed
                try:
                    await handler(self, message)
                except DicomNetworkError as exc:
                    if not self.is_established:
                        self.log.info("association #%d: %s not completed: %s", self.id, what, exc)
                        return
                    self.log.warning("association #%d: %s failed: %s", self.id, what, exc)
                    comment = "Processing failed"
                except Exception:
                    self.log.exception(
                        "association #%d: the service for %s (message ID %r) raised",
                        self.id,
                        what,
                        message_id,
                    )
                    comment = "Handler failed"
            if scope.cancelled_caught and not answering.final_sent:
                self.log.warning(
                    "association #%d: the handler for %s (message ID %r) still ran after "
                    "%s s (handler timeout); cancelled it",
                    self.id,
                    what,
                    message_id,
                    limit,
                )
                comment = "Handler timed out"
            if message.stream is not None and not message.stream.complete:
                # The peer is still sending the data set: take the rest before answering.
                message.stream.discard()
                with suppress(DicomNetworkError):
                    await message.stream.wait_finished()
            if comment and service is not None and not answering.final_sent:
                await self._send_failure(message, service, comment)
        finally:
            if message.stream is not None:
                message.stream.discard()
            if holding:
                assert slot is not None
                slot.release()
            self._owed_responses -= 1
            self._work_ended_at = self._now()
            if tracked:
                self._answering.pop(message_id, None)  # type: ignore[arg-type]
                if self._theirs:
                    self._operation_done(
                        self._theirs, message_id, "SCP", None, "no final response sent"
                    )

    async def _send_failure(
        self, message: AssembledMessage, service: Service, comment: str
    ) -> None:
        """Send the service's standard failure for ``message``, or abort if we cannot."""
        if not self.is_established:
            return
        status = FAILURE_FOR[service]
        self.log.info(
            "association #%d: answering %s with 0x%04X (%s)",
            self.id,
            service.value,
            status,
            comment,
        )
        try:
            await self.send_message(
                message.context_id, failure_response(message.command, status, comment)
            )
        except DicomNetworkError as exc:
            self.log.info("association #%d: failure response not sent: %s", self.id, exc)
        except Exception:
            self.log.exception("association #%d: could not build the failure response", self.id)
            await self._abort_with(
                AssociationAborted(None, None, "a failure response could not be sent")
            )

    # ------------------------------------------------------------------ sending

    def _forget_waiter(self, message_id: int) -> None:
        if self._ours and message_id not in self._abandoned:
            self._operation_done(self._ours, message_id, "SCU", None, "no final response")
        waiter = self._waiters.pop(message_id, None)
        if waiter is not None:
            waiter.close()
            self._work_ended_at = self._now()
        self._release_slot(message_id)

    def _cancel_abandoned(
        self, context_id: int, message_id: int, on_finish: Callable[[], None] | None
    ) -> None:
        """An operation's iterator was dropped unfinished: C-CANCEL it in the background.

        Its slot in the operations window stays taken until the final response.
        """
        waiter = self._waiters.pop(message_id, None)
        if waiter is not None:
            waiter.close()
        if self._task_group is None or not self.is_established:
            self._release_slot(message_id)
            if on_finish is not None:
                on_finish()
            return
        self._abandoned[message_id] = on_finish
        self._task_group.start_soon(self._send_abandoned_cancel, context_id, message_id)

    async def _send_abandoned_cancel(self, context_id: int, message_id: int) -> None:
        from aionetdicom.operation import send_cancel

        try:
            await send_cancel(self, context_id, message_id)
        except DicomNetworkError as exc:
            self.log.info("association #%d: C-CANCEL not sent: %s", self.id, exc)

    def next_message_id(self) -> int:
        """A Message ID not used by any outstanding request on this association."""
        for _ in range(0x10000):
            message_id = next(self._message_ids) & 0xFFFF
            if message_id and message_id not in self._waiters and message_id not in self._abandoned:
                return message_id
        raise LocalProtocolError("every Message ID is in use")  # pragma: no cover

    async def send_message(
        self, context_id: int, command: Command, dataset: bytes | memoryview | None = None
    ) -> None:
        """Send one DIMSE message; a cancellation half-way aborts the association."""
        self._check_usable()
        encoded = encode_command(command)
        if self._answering:
            self._note_response(command)
        if self._observers:
            self._note_request_sent(command)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "association #%d: sending %s on context %d (%d data set bytes)",
                self.id,
                _summary(command),
                context_id,
                0 if dataset is None else len(dataset),
            )
        async with self._send_lock:
            started = False
            try:
                buffered = pdus = 0
                for chunks in pack_message(context_id, encoded, dataset, self.send_max_pdu):
                    self._check_usable()
                    self._conn.send_encoded_pdata(chunks)
                    buffered += self.send_max_pdu
                    pdus += 1
                    if buffered >= WRITE_COALESCE_BYTES or pdus >= WRITE_COALESCE_PDUS:
                        started = True
                        await self._write_pending()
                        buffered = pdus = 0
                started = True
                await self._write_pending()
            except BaseException:
                await self._message_interrupted(started)
                raise
        if self._failure is not None:
            raise self._failure

    async def _message_interrupted(self, started: bool) -> None:
        """A message failed part-way: drop it if nothing was written, else abort (the
        peer holds a partial message the association cannot recover from)."""
        if not started:
            self._conn.data_to_send()  # nothing reached the peer: drop it all
            return
        with anyio.CancelScope(shield=True):
            self._fail(AssociationAborted(None, None, "a message was interrupted"))
            self._conn.abort()
            await self._write_pending()

    async def send_message_stream(
        self, context_id: int, command: Command, chunks: AsyncIterator[bytes], length: int
    ) -> None:
        """Send one DIMSE message whose data set (``length`` bytes) comes from ``chunks``.

        The data set is packed as it arrives and written about every
        :data:`WRITE_COALESCE_BYTES`, so memory stays bounded whatever its size. The
        send lock is held for the whole message. As with :meth:`send_message`, an
        error or cancellation once something was written aborts the association;
        before that, nothing is sent. If ``chunks`` gives more or fewer than
        ``length`` bytes the association is aborted (the peer cannot be told the
        message was cut short) and :class:`LocalProtocolError` is raised.
        """
        self._check_usable()
        packer = StreamPacker(context_id, self.send_max_pdu, length)
        encoded = encode_command(command)
        if self._answering:
            self._note_response(command)
        async with self._send_lock:
            started = False
            buffered = 0

            queued = 0

            async def send(pdus: Iterable[list[Buffer]]) -> None:
                nonlocal started, buffered, queued
                for pdu in pdus:
                    self._check_usable()
                    self._conn.send_encoded_pdata(pdu)
                    buffered += sum(len(part) for part in pdu)
                    queued += 1
                    if buffered >= WRITE_COALESCE_BYTES or queued >= WRITE_COALESCE_PDUS:
                        started = True
                        await self._write_pending()
                        buffered = queued = 0

            try:
                await send(packer.command(encoded))
                async for chunk in chunks:
                    await send(packer.feed(chunk))
                await send(packer.finish())
                started = True
                await self._write_pending()
            except LengthMismatch as exc:
                error = LocalProtocolError(
                    f"data set on presentation context {context_id}: {exc}; association aborted"
                )
                self.log.warning("association #%d: %s", self.id, error)
                self._conn.data_to_send()  # a message cut short must not go out
                with anyio.CancelScope(shield=True):
                    self._fail(AssociationAborted(None, None, f"a message was cut short: {exc}"))
                    if not self._closed.is_set():
                        assert self._failure is not None
                        self._note_end("aborted", "local", self._failure)
                        self._conn.abort()
                        await self._write_pending()
                        await self._close_stream()
                raise error from None
            except BaseException:
                await self._message_interrupted(started)
                raise
        if self._failure is not None:
            raise self._failure

    def _note_response(self, command: Command) -> None:
        field = command.get("CommandField")
        if not isinstance(field, int) or not is_response(field):
            return
        answering = self._answering.get(command.get("MessageIDBeingRespondedTo"))  # type: ignore[arg-type]
        if answering is None:
            return
        if command.get("Status") in _PENDING:
            answering.progressed()
        else:
            answering.finished()
            if self._theirs:
                responded_to = command.get("MessageIDBeingRespondedTo")
                self._operation_done(self._theirs, responded_to, "SCP", command.get("Status"))

    def _note_request_sent(self, command: Command) -> None:
        """Start timing one of our requests for the observers."""
        field = command.get("CommandField")
        message_id = command.get("MessageID")
        if (
            isinstance(field, int)
            and isinstance(message_id, int)
            and not is_response(field)
            and field != CommandField.C_CANCEL_RQ
        ):
            self._ours[message_id] = (field, _sop_class(command), self._now())

    def _operation_done(
        self,
        table: dict[int, tuple[int, str, float]],
        message_id: object,
        role: Literal["SCU", "SCP"],
        status: object,
        error: str | None = None,
    ) -> None:
        """Tell the observers an operation ended (once; unknown IDs are ignored)."""
        entry = table.pop(message_id, None) if isinstance(message_id, int) else None
        if entry is None:
            return
        field, sop_class, started = entry
        record = OperationRecord(
            service=_field_name(field).removesuffix("_RQ").replace("_", "-"),
            role=role,
            sop_class_uid=sop_class,
            status=status if isinstance(status, int) else None,
            duration=self._now() - started,
            error=error,
        )
        notify(self._observers, "operation_finished", self, record)

    def set_operations_window(self, maximum_invoked: int, maximum_performed: int = 1) -> None:
        """Allow ``maximum_invoked`` outstanding requests of ours (others queue) and serve
        up to ``maximum_performed`` of the peer's at once (later ones wait to start).

        0 means unlimited in the negotiation and here stands for
        :data:`~aionetdicom.acse.acceptor.OPERATIONS_WINDOW_CAP`.
        """
        self._invoke_slots = anyio.Semaphore(
            maximum_invoked or OPERATIONS_WINDOW_CAP, fast_acquire=True
        )
        self._perform_slots = anyio.Semaphore(maximum_performed or OPERATIONS_WINDOW_CAP)
        self._window = (
            maximum_invoked or OPERATIONS_WINDOW_CAP,
            maximum_performed or OPERATIONS_WINDOW_CAP,
        )

    async def _register_waiter(
        self, message_id: int
    ) -> MemoryObjectReceiveStream[AssembledMessage]:
        """Wait for a free slot in the operations window, then route ``message_id``'s
        responses into the returned stream."""
        self._check_usable()
        if message_id in self._waiters or message_id in self._slot_holders:
            raise LocalProtocolError(f"message ID {message_id} is already outstanding")
        if self._invoke_slots is not None:
            await self._invoke_slots.acquire()
            self._slot_holders.add(message_id)
            try:
                self._check_usable()
            except BaseException:
                self._release_slot(message_id)
                raise
        send, receive = anyio.create_memory_object_stream[AssembledMessage](math.inf)
        self._waiters[message_id] = send
        return receive

    def _release_slot(self, message_id: int) -> None:
        if message_id in self._slot_holders:
            self._slot_holders.discard(message_id)
            if self._invoke_slots is not None:
                self._invoke_slots.release()

    @asynccontextmanager
    async def expect_responses(
        self, message_id: int
    ) -> AsyncIterator[MemoryObjectReceiveStream[AssembledMessage]]:
        """Register for the responses to ``message_id`` while the block runs."""
        if message_id in self._waiters:
            raise LocalProtocolError(f"message ID {message_id} is already outstanding")
        receive = await self._register_waiter(message_id)
        try:
            with receive:
                yield receive
        finally:
            self._forget_waiter(message_id)

    async def receive_response(
        self,
        responses: MemoryObjectReceiveStream[AssembledMessage],
        what: str,
        timeout: float | None = None,
        *,
        abort_on_cancel: bool = True,
    ) -> AssembledMessage:
        """The next response from ``responses`` within the DIMSE timeout.

        Cancellation while waiting aborts the association unless ``abort_on_cancel`` is
        False (operations that have C-CANCEL handle cancellation themselves).
        """
        limit = self.timeouts.dimse if timeout is None else timeout
        try:
            return await self._receive_within(responses, limit)
        except anyio.get_cancelled_exc_class():
            if abort_on_cancel and self.is_established:
                # The peer will still answer; without C-CANCEL for this operation the
                # only clean way out is A-ABORT (DESIGN: never an undefined state).
                await self._abort_with(
                    AssociationAborted(None, None, f"cancelled while waiting for the {what}")
                )
            raise
        except anyio.EndOfStream:
            raise self._failure or ConnectionClosed("the association has ended") from None
        except TimeoutError:
            self.log.warning("association #%d: no %s within %s s; aborting", self.id, what, limit)
            error = DIMSETimeout(f"no {what} within {limit} s (DIMSE timeout); association aborted")
            await self._abort_with(error)
            raise error from None

    async def _receive_within(
        self, responses: MemoryObjectReceiveStream[AssembledMessage], limit: float | None
    ) -> AssembledMessage:
        """Receive, timing out after ``limit`` s without traffic from the peer.

        The clock stops while the peer waits for us (a request of theirs, such as a
        C-GET sub-operation, is still being handled) and restarts from the last data
        the peer sent.
        """
        if limit is None:
            return await responses.receive()
        clock = self._now
        deadline = clock() + limit
        while True:
            with anyio.move_on_after(max(0.0, deadline - clock())):
                return await responses.receive()
            now = clock()
            if self._owed_responses:
                deadline = now + limit
            elif self._last_received + limit > now:
                deadline = self._last_received + limit
            else:
                raise TimeoutError

    async def send_request(
        self,
        context: NegotiatedContext,
        command: Command,
        dataset: bytes | memoryview | None = None,
        what: str = "response",
    ) -> AssembledMessage:
        """Send a request that has exactly one response and return that response."""
        message_id = command["MessageID"]
        assert isinstance(message_id, int)
        async with self.expect_responses(message_id) as responses:
            await self.send_message(context.context_id, command, dataset)
            return await self.receive_response(responses, what)

    # ------------------------------------------------------------------ operations

    async def echo(self, *, timeout: float | None = None) -> Status:
        """C-ECHO: ask the peer to confirm it is there; returns its status (0x0000 Success)."""
        from aionetdicom.services.verification import echo

        return await echo(self, timeout=timeout)

    # ------------------------------------------------------------------ ending

    async def release(self) -> None:
        """Release the association in order (A-RELEASE), aborting if the peer stalls."""
        if self._closed.is_set() or self._conn.state in (State.STA1, State.STA13):
            return
        if self._conn.state is not State.STA6:
            await self.abort()
            return
        self._release_requested_locally = True
        async with self._send_lock:
            self._conn.release()
            await self._write_pending()
        timeout = self.timeouts.acse
        with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
            await self._closed.wait()
        if scope.cancelled_caught:
            self.log.warning("association #%d: no A-RELEASE-RP within %s s", self.id, timeout)
            await self.abort()

    async def abort(self) -> None:
        """Abort the association at once (A-ABORT, service-user source)."""
        await self._abort_with(AssociationAborted(None, None, "aborted by the local user"))

    async def _abort_with(self, error: DicomNetworkError) -> None:
        with anyio.CancelScope(shield=True):
            self._fail(error)
            if not self._closed.is_set():
                self._note_end("aborted", "local", error)
                self._conn.abort()
                async with self._send_lock:
                    await self._write_pending()
                await self._close_stream()

    async def wait_closed(self) -> None:
        """Wait until the transport connection is closed."""
        await self._closed.wait()


def _describe(event: ul.ULEvent) -> str:
    """A line for the DEBUG log: which PDU arrived (or what the upper layer did)."""
    if isinstance(event, ul.DataReceived):
        pdvs = event.pdata.pdvs
        size = sum(len(pdv.data) for pdv in pdvs)
        return f"received P-DATA-TF ({len(pdvs)} PDV(s), {size} bytes)"
    if isinstance(event, ul.AssociationRequested):
        rq = event.request
        return (
            f"received A-ASSOCIATE-RQ from {rq.calling_ae_title} to {rq.called_ae_title} "
            f"({len(rq.presentation_contexts)} presentation context(s))"
        )
    if isinstance(event, ul.AssociationAccepted):
        return f"received A-ASSOCIATE-AC ({len(event.response.presentation_contexts)} context(s))"
    if isinstance(event, ul.AssociationRejected):
        rj = event.response
        return (
            f"received A-ASSOCIATE-RJ (result {rj.result}, source {rj.source}, reason {rj.reason})"
        )
    if isinstance(event, ul.ReleaseRequested):
        return "received A-RELEASE-RQ" + (" (release collision)" if event.collision else "")
    if isinstance(event, ul.ReleaseConfirmed):
        return "received A-RELEASE-RP"
    if isinstance(event, ul.Aborted):
        where = "local" if event.local else "peer"
        return f"A-ABORT ({where}; source {event.source}, reason {event.reason}) {event.detail}"
    return type(event).__name__


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock: on asyncio the loop's own ``time`` (what
    ``anyio.current_time`` reads, minus its per-call backend detection), elsewhere
    ``anyio.current_time``."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:  # not on asyncio (trio): anyio finds the clock
        return anyio.current_time


def _sop_class(command: Command) -> str:
    value = command.get("AffectedSOPClassUID") or command.get("RequestedSOPClassUID")
    return value if isinstance(value, str) else ""


def _summary(command: Command) -> str:
    """``C-STORE-RQ (message 3, 1.2.840...)`` or ``C-FIND-RSP (to 3, status 0xFF00)``."""
    field = command.get("CommandField")
    name = _field_name(field).replace("_", "-") if isinstance(field, int) else "command"
    if isinstance(field, int) and is_response(field):
        status = command.get("Status")
        shown = f"0x{status:04X}" if isinstance(status, int) else "?"
        responded_to = command.get("MessageIDBeingRespondedTo")
        return f"{name} (to {responded_to!s}, status {shown})"
    message_id = command.get("MessageID")
    return f"{name} (message {message_id!s}, {_sop_class(command) or '-'})"


def _field_name(field: int) -> str:
    try:
        return CommandField(field).name
    except ValueError:
        return f"command 0x{field:04X}"
