"""The sans-I/O DICOM upper-layer connection: bytes and primitives in, bytes and events out.

:class:`ULConnection` drives the PS3.8 state machine of :mod:`aionetdicom.ul.fsm`.
It never touches a socket or a clock: the I/O layer feeds it received bytes, the
end of the stream and ARTIM expiry, calls its primitives, writes what
:meth:`ULConnection.data_to_send` returns, and closes the transport when
:attr:`ULConnection.close_requested` becomes true.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from aionetdicom.errors import LocalProtocolError, ProtocolError
from aionetdicom.pdu.codec import encode_pdu
from aionetdicom.pdu.constants import AbortReason, AbortSource
from aionetdicom.pdu.pdus import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    Buffer,
    PDataTF,
)
from aionetdicom.pdu.reader import (
    DEFAULT_MAX_ASSOCIATE_LENGTH,
    DEFAULT_MAX_UNLIMITED_PDATA_LENGTH,
    PDUReader,
)
from aionetdicom.ul.events import (
    Aborted,
    AssociationAccepted,
    AssociationRejected,
    AssociationRequested,
    ConnectionClosed,
    DataReceived,
    ReleaseConfirmed,
    ReleaseRequested,
    ULEvent,
)
from aionetdicom.ul.fsm import TRANSITIONS, Action, Event, State, StateMachine, action_for

_PDU_EVENTS: dict[type, Event] = {
    AAssociateAC: Event.EVT3,
    AAssociateRJ: Event.EVT4,
    AAssociateRQ: Event.EVT6,
    PDataTF: Event.EVT10,
    AReleaseRQ: Event.EVT12,
    AReleaseRP: Event.EVT13,
    AAbort: Event.EVT16,
}


def _pdata_state() -> State:
    """The state where Table 9-10 answers Evt9 with DT-1 and Evt10 with DT-2, staying put.

    There the P-DATA fast paths below do what ``_fire`` would (send, or hand over a
    DataReceived) without the generic lookup; deriving the state from the table keeps
    the table the single source of truth, and import fails if it no longer fits.
    """
    states = [
        state
        for state in State
        if state is not State.STA1
        and TRANSITIONS.get((state, Event.EVT9)) is Action.DT_1
        and TRANSITIONS.get((state, Event.EVT10)) is Action.DT_2
        and Action.DT_1.next_states == Action.DT_2.next_states == {state}
    ]
    if len(states) != 1:  # pragma: no cover - guards edits of the table
        raise RuntimeError(f"Table 9-10 has no single P-DATA self-loop state: {states}")
    return states[0]


#: Sta6: P-DATA sent (DT-1) or received (DT-2) leaves the state unchanged.
_PDATA_STATE = _pdata_state()


class Role(enum.Enum):
    """Which side of the association this connection is."""

    REQUESTOR = "requestor"
    ACCEPTOR = "acceptor"


class ULConnection:
    """One transport connection's upper-layer protocol machine (PS3.8 section 9.2)."""

    def __init__(
        self,
        role: Role,
        *,
        max_pdata_length: int = DEFAULT_MAX_UNLIMITED_PDATA_LENGTH,
        max_associate_length: int = DEFAULT_MAX_ASSOCIATE_LENGTH,
    ) -> None:
        self.role = role
        self._machine = StateMachine()
        self._reader = PDUReader(max_pdata_length, max_associate_length)
        self._reader_failed = False
        self._outgoing: list[Buffer] = []
        self._events: list[ULEvent] = []
        self._pdu: PDU | None = None
        self._request: AAssociateRQ | None = None
        self._error: ProtocolError | None = None
        self._association_indicated = False
        #: True while the ARTIM timer must run; the I/O layer owns the clock.
        self.artim_running = False
        #: True once the transport should be closed (after flushing ``data_to_send``).
        self.close_requested = False
        self._actions: dict[Action, Callable[[], State]] = {
            Action.AE_1: self._ae1,
            Action.AE_2: self._ae2,
            Action.AE_3: self._ae3,
            Action.AE_4: self._ae4,
            Action.AE_5: self._ae5,
            Action.AE_6: self._ae6,
            Action.AE_7: self._ae7,
            Action.AE_8: self._ae8,
            Action.DT_1: self._dt1,
            Action.DT_2: self._dt2,
            Action.AR_1: self._ar1,
            Action.AR_2: self._ar2,
            Action.AR_3: self._ar3,
            Action.AR_4: self._ar4,
            Action.AR_5: self._ar5,
            Action.AR_6: self._dt2_in_release,
            Action.AR_7: self._ar7,
            Action.AR_8: self._ar8,
            Action.AR_9: self._ar9,
            Action.AR_10: self._ar10,
            Action.AA_1: self._aa1,
            Action.AA_2: self._aa2,
            Action.AA_3: self._aa3,
            Action.AA_4: self._aa4,
            Action.AA_5: self._aa5,
            Action.AA_6: self._aa6,
            Action.AA_7: self._aa7,
            Action.AA_8: self._aa8,
        }

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> State:
        """The current PS3.8 state (Sta1-Sta13)."""
        return self._machine.state

    @property
    def is_established(self) -> bool:
        """True in Sta6, where DIMSE messages may flow both ways."""
        return self._machine.state is State.STA6

    @property
    def has_output(self) -> bool:
        """True when buffers wait to be written (see :meth:`data_to_send`)."""
        return bool(self._outgoing)

    @property
    def in_pdu(self) -> bool:
        """True while part of a PDU has been received (a stall here is suspicious)."""
        return self._reader.in_pdu

    @property
    def max_pdata_length(self) -> int:
        """The largest P-DATA-TF body accepted from the peer."""
        return self._reader.max_pdata_length

    @max_pdata_length.setter
    def max_pdata_length(self, value: int) -> None:
        self._reader.max_pdata_length = value

    # ------------------------------------------------------------------ I/O inputs

    def data_to_send(self) -> list[Buffer]:
        """Take the buffers to write to the transport, in order."""
        out = self._outgoing
        self._outgoing = []
        return out

    def receive_data(self, data: Buffer) -> list[ULEvent]:
        """Feed bytes from the transport; return the events they complete."""
        if self._reader_failed or self.close_requested:
            return []
        self._reader.feed(data)
        return self._process_received()

    def receive_buffer(self) -> memoryview | None:
        """Where to read the rest of a PDU body straight from the transport, or None.

        A writable view of the still-empty tail of the body being received: read into
        it (``n = recv_into(view)``), then call :meth:`received_into` with ``n`` before
        anything else. None means read normally and call :meth:`receive_data`.
        """
        if self._reader_failed or self.close_requested:
            return None
        return self._reader.receive_buffer()

    def received_into(self, nbytes: int) -> list[ULEvent]:
        """``nbytes`` were read into :meth:`receive_buffer`; return the events they complete.

        The events are the same as :meth:`receive_data` would give for those bytes.
        """
        if self._reader_failed or self.close_requested:
            return []
        self._reader.received_into(nbytes)
        return self._process_received()

    def receive_eof(self) -> list[ULEvent]:
        """The peer closed the transport (Evt17)."""
        if self._machine.state is State.STA1:
            return []
        self._fire(Event.EVT17)
        return self._take_events()

    def artim_expired(self) -> list[ULEvent]:
        """The ARTIM timer ran out (Evt18)."""
        if not self.artim_running:
            return []
        self._fire(Event.EVT18)
        return self._take_events()

    # ------------------------------------------------------------------ primitives

    def request_association(self, request: AAssociateRQ) -> None:
        """A-ASSOCIATE request (Evt1); the I/O layer then opens the transport."""
        self._request = request
        self._fire_local(Event.EVT1)

    def transport_connected(self) -> list[ULEvent]:
        """Transport open: confirmation for a requestor (Evt2), indication (Evt5) otherwise."""
        self._fire_local(Event.EVT2 if self.role is Role.REQUESTOR else Event.EVT5)
        return self._take_events()

    def accept(self, response: AAssociateAC) -> None:
        """A-ASSOCIATE response, accept (Evt7)."""
        self._pdu = response
        self._fire_local(Event.EVT7)

    def reject(self, response: AAssociateRJ) -> None:
        """A-ASSOCIATE response, reject (Evt8)."""
        self._pdu = response
        self._fire_local(Event.EVT8)

    def send_pdata(self, pdata: PDataTF) -> None:
        """P-DATA request (Evt9) for a P-DATA-TF value."""
        if self._machine.state is _PDATA_STATE:  # DT-1, Sta6 -> Sta6
            self._send(pdata)
            return
        self._pdu = pdata
        self._fire_local(Event.EVT9)

    def send_encoded_pdata(self, chunks: Iterable[Buffer]) -> None:
        """P-DATA request (Evt9) for an already encoded P-DATA-TF (header + PDV items)."""
        if self._machine.state is _PDATA_STATE:  # DT-1, Sta6 -> Sta6: just queue it
            self._outgoing.extend(chunks)
            return
        self._pdu = None
        self._fire_local(Event.EVT9)
        self._outgoing.extend(chunks)

    def send_encoded_pdata_many(self, pdus: Iterable[Iterable[Buffer]]) -> None:
        """P-DATA requests for several encoded P-DATA-TFs, checking the state once.

        Same as calling :meth:`send_encoded_pdata` for each, in order.
        """
        if self._machine.state is _PDATA_STATE:
            extend = self._outgoing.extend
            for chunks in pdus:
                extend(chunks)
            return
        for chunks in pdus:
            self.send_encoded_pdata(chunks)

    def release(self) -> None:
        """A-RELEASE request (Evt11)."""
        self._fire_local(Event.EVT11)

    def release_response(self) -> list[ULEvent]:
        """A-RELEASE response (Evt14)."""
        self._fire_local(Event.EVT14)
        return self._take_events()

    def abort(
        self,
        source: int = AbortSource.SERVICE_USER,
        reason: int = AbortReason.NOT_SPECIFIED,
    ) -> list[ULEvent]:
        """A-ABORT request (Evt15); harmless when nothing is left to abort."""
        state = self._machine.state
        if state in (State.STA1, State.STA13):
            return []
        if state is State.STA2:
            # No association exists yet, so there is nothing to abort: close the
            # transport as on ARTIM expiry (AA-2).
            self._fire(Event.EVT18)
            return self._take_events()
        self._pdu = AAbort(source, reason)
        self._fire_local(Event.EVT15)
        return self._take_events()

    # ------------------------------------------------------------------ machinery

    def _take_events(self) -> list[ULEvent]:
        events = self._events
        self._events = []
        return events

    def _process_received(self) -> list[ULEvent]:
        """Turn the PDUs the reader completed into state machine events."""
        reader = self._reader
        machine = self._machine
        while True:
            try:
                pdu = reader.next_pdu()
            except ProtocolError as exc:
                self._reader_failed = True
                self._error = exc
                self._fire(Event.EVT19)
                break
            if pdu is None:
                break
            if type(pdu) is PDataTF and machine.state is _PDATA_STATE:
                self._events.append(DataReceived(pdu))  # DT-2, Sta6 -> Sta6
                continue
            self._pdu = pdu
            self._fire(_PDU_EVENTS[type(pdu)])
            if self.close_requested:
                break
        return self._take_events()

    def _fire_local(self, event: Event) -> None:
        try:
            self._fire(event)
        except LocalProtocolError:
            raise
        except ProtocolError as exc:  # pragma: no cover - local primitives never decode
            raise LocalProtocolError(str(exc)) from exc

    def _fire(self, event: Event) -> None:
        action = action_for(self._machine.state, event)
        self._machine.apply(event, self._actions[action]())
        self._pdu = None
        if self._machine.state is State.STA1:
            self.artim_running = False
            self._events.append(ConnectionClosed())

    def _send(self, pdu: PDU) -> None:
        self._outgoing.append(encode_pdu(pdu))

    def _close(self) -> None:
        self.close_requested = True

    def _received_abort(self) -> Aborted:
        pdu = self._pdu
        if isinstance(pdu, AAbort):
            return Aborted(pdu.source, pdu.reason, detail="A-ABORT received from the peer")
        return Aborted(None, None, detail="transport connection closed by the peer")

    def _provider_abort_pdu(self) -> AAbort:
        """The A-ABORT for a bad or unexpected PDU; the reason says which."""
        if self._error is not None:
            return AAbort(AbortSource.SERVICE_PROVIDER, self._error.abort_reason)
        return AAbort(AbortSource.SERVICE_PROVIDER, AbortReason.UNEXPECTED_PDU)

    def _abort_detail(self) -> str:
        if self._error is not None:
            return f"invalid PDU received: {self._error}"
        if self._pdu is not None:
            return (
                f"unexpected {type(self._pdu).__name__} received in state "
                f"{self._machine.state.name}"
            )
        return "protocol error"

    # ------------------------------------------------------------------ actions

    def _ae1(self) -> State:
        return State.STA4

    def _ae2(self) -> State:
        if self._request is None:
            raise LocalProtocolError("transport connected before an A-ASSOCIATE request")
        self._send(self._request)
        return State.STA5

    def _ae3(self) -> State:
        assert isinstance(self._pdu, AAssociateAC)
        self._events.append(AssociationAccepted(self._pdu))
        return State.STA6

    def _ae4(self) -> State:
        assert isinstance(self._pdu, AAssociateRJ)
        self._events.append(AssociationRejected(self._pdu))
        self._close()
        return State.STA1

    def _ae5(self) -> State:
        self.artim_running = True
        return State.STA2

    def _ae6(self) -> State:
        assert isinstance(self._pdu, AAssociateRQ)
        self.artim_running = False
        self._association_indicated = True
        self._events.append(AssociationRequested(self._pdu))
        return State.STA3

    def _ae7(self) -> State:
        assert isinstance(self._pdu, AAssociateAC)
        self._send(self._pdu)
        return State.STA6

    def _ae8(self) -> State:
        assert isinstance(self._pdu, AAssociateRJ)
        self._send(self._pdu)
        self.artim_running = True
        return State.STA13

    def _dt1(self) -> State:
        if self._pdu is not None:
            self._send(self._pdu)
        return self._machine.state

    def _dt2(self) -> State:
        assert isinstance(self._pdu, PDataTF)
        self._events.append(DataReceived(self._pdu))
        return State.STA6

    def _dt2_in_release(self) -> State:
        assert isinstance(self._pdu, PDataTF)
        self._events.append(DataReceived(self._pdu))
        return State.STA7

    def _ar1(self) -> State:
        self._send(AReleaseRQ())
        return State.STA7

    def _ar2(self) -> State:
        self._events.append(ReleaseRequested())
        return State.STA8

    def _ar3(self) -> State:
        self._events.append(ReleaseConfirmed())
        self._close()
        return State.STA1

    def _ar4(self) -> State:
        self._send(AReleaseRP())
        self.artim_running = True
        return State.STA13

    def _ar5(self) -> State:
        self.artim_running = False
        return State.STA1

    def _ar7(self) -> State:
        if self._pdu is not None:
            self._send(self._pdu)
        return State.STA8

    def _ar8(self) -> State:
        self._events.append(ReleaseRequested(collision=True))
        return State.STA9 if self.role is Role.REQUESTOR else State.STA10

    def _ar9(self) -> State:
        self._send(AReleaseRP())
        return State.STA11

    def _ar10(self) -> State:
        self._events.append(ReleaseConfirmed())
        return State.STA12

    def _aa1(self) -> State:
        # AA-1 follows an unexpected or invalid PDU (or a local abort before Sta6).
        # For a received PDU we send the provider source and a reason, which tells
        # the peer more than the bare service-user abort.
        if isinstance(self._pdu, AAbort) and self._error is None:
            pdu = self._pdu
        else:
            pdu = self._provider_abort_pdu()
            if self._association_indicated:
                self._events.append(Aborted(pdu.source, pdu.reason, True, self._abort_detail()))
        self._send(pdu)
        self.artim_running = True
        return State.STA13

    def _aa2(self) -> State:
        self.artim_running = False
        self._close()
        return State.STA1

    def _aa3(self) -> State:
        self._events.append(self._received_abort())
        self._close()
        return State.STA1

    def _aa4(self) -> State:
        self._events.append(Aborted(None, None, detail="transport connection closed by the peer"))
        return State.STA1

    def _aa5(self) -> State:
        self.artim_running = False
        return State.STA1

    def _aa6(self) -> State:
        return State.STA13

    def _aa7(self) -> State:
        self._send(self._provider_abort_pdu())
        return State.STA13

    def _aa8(self) -> State:
        pdu = self._provider_abort_pdu()
        self._send(pdu)
        detail = self._abort_detail()
        self._events.append(Aborted(pdu.source, pdu.reason, local=True, detail=detail))
        self.artim_running = True
        return State.STA13
