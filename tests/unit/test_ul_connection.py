"""Sans-I/O tests of :class:`ULConnection`: two connections wired together in memory.

The bytes one side's ``data_to_send()`` returns are fed to the other side's
``receive_data()``; no socket, no clock (ARTIM expiry is an explicit call).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aionetdicom.dimse.packing import pack_message
from aionetdicom.errors import LocalProtocolError
from aionetdicom.pdu import (
    PDV,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    UserInformation,
    decode_pdu,
    encode_pdu,
)
from aionetdicom.ul.connection import Role, ULConnection
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
from aionetdicom.ul.fsm import InvalidTransition, State

VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT = "1.2.840.10008.1.2.1"

RQ = AAssociateRQ(
    called_ae_title="ANY-SCP",
    calling_ae_title="SCU",
    presentation_contexts=(PresentationContextRQ(1, VERIFICATION, (EXPLICIT,)),),
    user_information=UserInformation(maximum_length=16384, implementation_class_uid="1.2.3"),
)
AC = AAssociateAC(
    called_ae_title="ANY-SCP",
    calling_ae_title="SCU",
    presentation_contexts=(PresentationContextAC(1, 0, EXPLICIT),),
    user_information=UserInformation(maximum_length=16384, implementation_class_uid="1.2.4"),
)
RJ = AAssociateRJ(1, 1, 7)
PDATA = PDataTF((PDV(1, True, True, b"\x08\x00\x00\x00command!"),))


def wire(sender: ULConnection) -> bytes:
    """Everything ``sender`` wants to write, as one byte string."""
    return b"".join(bytes(chunk) for chunk in sender.data_to_send())


def deliver(sender: ULConnection, receiver: ULConnection) -> list[ULEvent]:
    """Move ``sender``'s pending bytes into ``receiver``; return its events."""
    data = wire(sender)
    assert data, "nothing was sent"
    return receiver.receive_data(data)


def kinds(events: list[ULEvent]) -> list[type]:
    return [type(event) for event in events]


# --------------------------------------------------------------------------- drivers


def requesting() -> ULConnection:
    """A requestor that has sent its A-ASSOCIATE-RQ (Sta5)."""
    requestor = ULConnection(Role.REQUESTOR)
    requestor.request_association(RQ)
    assert requestor.state is State.STA4
    assert requestor.transport_connected() == []
    assert requestor.state is State.STA5
    return requestor


def indicated() -> tuple[ULConnection, ULConnection]:
    """Requestor in Sta5, acceptor in Sta3 holding the A-ASSOCIATE indication."""
    requestor = requesting()
    acceptor = ULConnection(Role.ACCEPTOR)
    acceptor.transport_connected()
    assert acceptor.state is State.STA2
    assert acceptor.artim_running
    events = deliver(requestor, acceptor)
    assert events == [AssociationRequested(RQ)]
    assert acceptor.state is State.STA3
    assert not acceptor.artim_running
    return requestor, acceptor


def established() -> tuple[ULConnection, ULConnection]:
    """Both sides in Sta6."""
    requestor, acceptor = indicated()
    acceptor.accept(AC)
    assert acceptor.state is State.STA6
    assert deliver(acceptor, requestor) == [AssociationAccepted(AC)]
    assert requestor.state is State.STA6
    return requestor, acceptor


def colliding() -> tuple[ULConnection, ULConnection]:
    """Both sides asked to release before seeing the other's request: Sta9 / Sta10."""
    requestor, acceptor = established()
    requestor.release()
    acceptor.release()
    assert requestor.state is State.STA7
    assert acceptor.state is State.STA7
    from_requestor, from_acceptor = wire(requestor), wire(acceptor)
    assert from_requestor == from_acceptor == encode_pdu(AReleaseRQ())
    assert acceptor.receive_data(from_requestor) == [ReleaseRequested(collision=True)]
    assert requestor.receive_data(from_acceptor) == [ReleaseRequested(collision=True)]
    assert requestor.state is State.STA9
    assert acceptor.state is State.STA10
    return requestor, acceptor


def in_state(state: State) -> ULConnection:
    """A connection driven (by the protocol, not by hand) into ``state``."""
    if state is State.STA1:
        return ULConnection(Role.ACCEPTOR)
    if state is State.STA2:
        acceptor = ULConnection(Role.ACCEPTOR)
        acceptor.transport_connected()
        return acceptor
    if state is State.STA3:
        return indicated()[1]
    if state is State.STA4:
        requestor = ULConnection(Role.REQUESTOR)
        requestor.request_association(RQ)
        return requestor
    if state is State.STA5:
        return requesting()
    requestor, acceptor = established()
    if state is State.STA6:
        return acceptor
    if state is State.STA7:
        requestor.release()
        return requestor
    if state is State.STA8:
        requestor.release()
        deliver(requestor, acceptor)
        return acceptor
    if state is State.STA13:
        requestor.release()
        deliver(requestor, acceptor)
        acceptor.release_response()
        return acceptor
    requestor, acceptor = colliding()
    if state is State.STA9:
        return requestor
    if state is State.STA10:
        return acceptor
    requestor.release_response()
    if state is State.STA11:
        return requestor
    deliver(requestor, acceptor)
    assert state is State.STA12
    return acceptor


@pytest.mark.parametrize("state", list(State))
def test_in_state_reaches_every_state(state: State) -> None:
    assert in_state(state).state is state


# --------------------------------------------------------------------------- establishment


def test_association_accepted() -> None:
    requestor, acceptor = established()
    assert requestor.is_established
    assert acceptor.is_established
    assert not requestor.close_requested
    assert not acceptor.close_requested
    assert not requestor.artim_running
    assert not acceptor.artim_running
    assert not requestor.has_output
    assert not acceptor.has_output


def test_association_request_bytes_are_exact() -> None:
    requestor = requesting()
    data = wire(requestor)
    assert data == encode_pdu(RQ)
    assert decode_pdu(data) == RQ


def test_association_rejected() -> None:
    requestor, acceptor = indicated()
    acceptor.reject(RJ)
    assert acceptor.state is State.STA13
    assert acceptor.artim_running
    data = wire(acceptor)
    assert data == bytes.fromhex("03 00 00000004 00 01 01 07")
    events = requestor.receive_data(data)
    assert events == [AssociationRejected(RJ), ConnectionClosed()]
    assert requestor.state is State.STA1
    assert requestor.close_requested
    assert not requestor.has_output
    # the requestor closes the transport; the acceptor sees EOF in Sta13 (AR-5)
    assert acceptor.receive_eof() == [ConnectionClosed()]
    assert acceptor.state is State.STA1
    assert not acceptor.artim_running


def test_association_bytes_delivered_one_at_a_time() -> None:
    requestor = requesting()
    acceptor = ULConnection(Role.ACCEPTOR)
    acceptor.transport_connected()
    data = wire(requestor)
    for index in range(len(data) - 1):
        assert acceptor.receive_data(data[index : index + 1]) == []
        assert acceptor.in_pdu
        assert acceptor.state is State.STA2
    assert acceptor.receive_data(data[-1:]) == [AssociationRequested(RQ)]
    assert not acceptor.in_pdu


# --------------------------------------------------------------------------- data transfer


def test_pdata_both_ways() -> None:
    requestor, acceptor = established()
    requestor.send_pdata(PDATA)
    (event,) = deliver(requestor, acceptor)
    assert isinstance(event, DataReceived)
    assert [(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in event.pdata.pdvs] == [
        (1, True, True, b"\x08\x00\x00\x00command!")
    ]
    command, dataset = b"C" * 50, b"D" * 30
    for chunks in pack_message(1, command, dataset, 32):
        acceptor.send_encoded_pdata(chunks)
    events = deliver(acceptor, requestor)
    assert all(isinstance(e, DataReceived) for e in events)
    assert len(events) > 1  # several P-DATA-TF PDUs in one receive_data call
    pdvs = [pdv for e in events if isinstance(e, DataReceived) for pdv in e.pdata.pdvs]
    assert b"".join(bytes(p.data) for p in pdvs if p.is_command) == command
    assert b"".join(bytes(p.data) for p in pdvs if not p.is_command) == dataset
    assert [p.is_last for p in pdvs if p.is_command][-1]
    assert [p.is_last for p in pdvs if not p.is_command][-1]
    assert requestor.state is acceptor.state is State.STA6


def test_pdata_larger_than_the_receive_limit_aborts_on_the_header() -> None:
    requestor = ULConnection(Role.REQUESTOR, max_pdata_length=100)
    requestor.request_association(RQ)
    requestor.transport_connected()
    wire(requestor)
    requestor.receive_data(encode_pdu(AC))
    assert requestor.is_established
    events = requestor.receive_data(bytes.fromhex("04 00 00000065"))  # 101 bytes declared
    assert kinds(events) == [Aborted]
    assert wire(requestor) == encode_pdu(AAbort(2, 6))
    assert requestor.state is State.STA13


# --------------------------------------------------------------------------- release


def test_release_requested_by_the_requestor() -> None:
    requestor, acceptor = established()
    requestor.release()
    assert requestor.state is State.STA7
    assert deliver(requestor, acceptor) == [ReleaseRequested(collision=False)]
    assert acceptor.state is State.STA8
    # data may still flow from the side that received the request (AR-7 / AR-6)
    acceptor.send_pdata(PDATA)
    assert acceptor.state is State.STA8
    assert kinds(deliver(acceptor, requestor)) == [DataReceived]
    assert requestor.state is State.STA7
    assert acceptor.release_response() == []
    assert acceptor.state is State.STA13
    assert acceptor.artim_running
    assert deliver(acceptor, requestor) == [ReleaseConfirmed(), ConnectionClosed()]
    assert requestor.state is State.STA1
    assert requestor.close_requested
    assert acceptor.receive_eof() == [ConnectionClosed()]
    assert acceptor.state is State.STA1


def test_release_requested_by_the_acceptor() -> None:
    requestor, acceptor = established()
    acceptor.release()
    assert acceptor.state is State.STA7
    assert deliver(acceptor, requestor) == [ReleaseRequested(collision=False)]
    assert requestor.state is State.STA8
    requestor.release_response()
    assert requestor.state is State.STA13
    assert requestor.artim_running
    assert wire(requestor) == encode_pdu(AReleaseRP())
    assert acceptor.receive_data(encode_pdu(AReleaseRP())) == [
        ReleaseConfirmed(),
        ConnectionClosed(),
    ]
    assert acceptor.state is State.STA1
    assert acceptor.close_requested
    assert requestor.receive_eof() == [ConnectionClosed()]
    assert requestor.state is State.STA1


def test_release_collision_ends_in_sta1_on_both_sides_without_abort() -> None:
    requestor, acceptor = colliding()
    events: list[ULEvent] = []
    # PS3.8: the requestor answers first (AR-9), then the acceptor (AR-10, AR-4)
    assert requestor.release_response() == []
    assert requestor.state is State.STA11
    events += deliver(requestor, acceptor)
    assert events == [ReleaseConfirmed()]
    assert acceptor.state is State.STA12
    assert acceptor.release_response() == []
    assert acceptor.state is State.STA13
    rp = wire(acceptor)
    assert rp == encode_pdu(AReleaseRP())
    events += requestor.receive_data(rp)
    assert events[1:] == [ReleaseConfirmed(), ConnectionClosed()]
    assert requestor.state is State.STA1
    assert requestor.close_requested
    events += acceptor.receive_eof()
    assert acceptor.state is State.STA1
    assert not any(isinstance(event, Aborted) for event in events)
    assert not requestor.has_output
    assert not acceptor.has_output


def test_release_collision_in_the_other_delivery_order() -> None:
    requestor, acceptor = established()
    requestor.release()
    acceptor.release()
    from_acceptor = wire(acceptor)
    from_requestor = wire(requestor)
    assert requestor.receive_data(from_acceptor) == [ReleaseRequested(collision=True)]
    assert acceptor.receive_data(from_requestor) == [ReleaseRequested(collision=True)]
    assert (requestor.state, acceptor.state) == (State.STA9, State.STA10)


# --------------------------------------------------------------------------- abort


@pytest.mark.parametrize("aborting_role", [Role.REQUESTOR, Role.ACCEPTOR])
def test_abort_from_either_side(aborting_role: Role) -> None:
    requestor, acceptor = established()
    aborter, peer = (
        (requestor, acceptor) if aborting_role is Role.REQUESTOR else (acceptor, requestor)
    )
    assert aborter.abort() == []
    assert aborter.state is State.STA13
    assert aborter.artim_running
    data = wire(aborter)
    assert data == bytes.fromhex("07 00 00000004 00 00 00 00")
    events = peer.receive_data(data)
    assert kinds(events) == [Aborted, ConnectionClosed]
    aborted = events[0]
    assert isinstance(aborted, Aborted)
    assert (aborted.source, aborted.reason, aborted.local) == (0, 0, False)
    assert peer.state is State.STA1
    assert peer.close_requested
    assert aborter.receive_eof() == [ConnectionClosed()]
    assert aborter.state is State.STA1


def test_abort_with_provider_source_and_reason() -> None:
    requestor, acceptor = established()
    acceptor.abort(2, 6)
    events = deliver(acceptor, requestor)
    assert isinstance(events[0], Aborted)
    assert (events[0].source, events[0].reason) == (2, 6)


def test_abort_is_harmless_when_nothing_is_left() -> None:
    idle = ULConnection(Role.ACCEPTOR)
    assert idle.abort() == []
    assert idle.state is State.STA1
    closing = in_state(State.STA13)
    wire(closing)
    assert closing.abort() == []
    assert closing.state is State.STA13
    assert not closing.has_output


def test_abort_in_sta2_closes_without_a_pdu() -> None:
    acceptor = in_state(State.STA2)
    assert acceptor.abort() == [ConnectionClosed()]
    assert acceptor.state is State.STA1
    assert acceptor.close_requested
    assert not acceptor.has_output


def test_abort_while_awaiting_the_transport() -> None:
    requestor = in_state(State.STA4)
    requestor.abort()
    assert requestor.state is State.STA1
    assert requestor.close_requested
    assert not requestor.has_output


def test_peer_abort_in_sta13_closes() -> None:
    requestor, acceptor = established()
    requestor.abort()
    wire(requestor)
    acceptor.abort()
    assert requestor.receive_data(wire(acceptor)) == [ConnectionClosed()]
    assert requestor.state is State.STA1
    assert requestor.close_requested


# --------------------------------------------------------------------------- bad input


def test_garbage_on_an_established_association_is_aborted_by_the_provider() -> None:
    requestor, acceptor = established()
    events = acceptor.receive_data(b"\xa5\x00\x00\x00\x00\x04junk")
    assert kinds(events) == [Aborted]
    aborted = events[0]
    assert isinstance(aborted, Aborted)
    assert (aborted.source, aborted.reason, aborted.local) == (2, 1, True)
    assert "invalid PDU" in aborted.detail
    data = wire(acceptor)
    assert data == bytes.fromhex("07 00 00000004 00 00 02 01")  # AA-8: provider source
    assert acceptor.state is State.STA13
    assert acceptor.artim_running
    assert acceptor.receive_data(encode_pdu(PDATA)) == []  # the rest is ignored
    events = requestor.receive_data(data)
    assert kinds(events) == [Aborted, ConnectionClosed]
    assert isinstance(events[0], Aborted)
    assert (events[0].source, events[0].reason, events[0].local) == (2, 1, False)


def test_garbage_before_association_is_aborted_without_an_indication() -> None:
    acceptor = in_state(State.STA2)
    assert acceptor.receive_data(b"GET / HTTP/1.1\r\n\r\n") == []
    assert wire(acceptor) == bytes.fromhex("07 00 00000004 00 00 02 01")
    assert acceptor.state is State.STA13
    assert acceptor.artim_running


def test_invalid_pdu_body_gives_reason_6() -> None:
    _, acceptor = established()
    events = acceptor.receive_data(bytes.fromhex("05 00 00000002 0000"))  # RELEASE-RQ of 2
    assert kinds(events) == [Aborted]
    assert wire(acceptor) == encode_pdu(AAbort(2, 6))


@pytest.mark.parametrize(
    "pdu",
    [AC, RQ, AReleaseRP(), AAssociateRJ(1, 1, 1)],
    ids=["associate-ac", "associate-rq", "release-rp", "associate-rj"],
)
def test_unexpected_pdu_on_an_established_association(
    pdu: AAssociateAC | AAssociateRQ | AReleaseRP | AAssociateRJ,
) -> None:
    _, acceptor = established()
    events = acceptor.receive_data(encode_pdu(pdu))
    assert kinds(events) == [Aborted]
    assert isinstance(events[0], Aborted)
    assert (events[0].source, events[0].reason, events[0].local) == (2, 2, True)
    assert "unexpected" in events[0].detail
    assert wire(acceptor) == encode_pdu(AAbort(2, 2))
    assert acceptor.state is State.STA13


def test_nothing_is_processed_after_close_is_requested() -> None:
    requestor, acceptor = indicated()
    acceptor.reject(RJ)
    # the RJ and an A-ABORT arrive together; the RJ closes, the rest is dropped
    data = wire(acceptor) + encode_pdu(AAbort())
    assert requestor.receive_data(data) == [AssociationRejected(RJ), ConnectionClosed()]
    assert requestor.receive_data(encode_pdu(AReleaseRQ())) == []
    assert requestor.state is State.STA1


# --------------------------------------------------------------------------- ARTIM


def test_artim_expiry_in_sta2() -> None:
    acceptor = in_state(State.STA2)
    assert acceptor.artim_running
    assert acceptor.artim_expired() == [ConnectionClosed()]
    assert acceptor.state is State.STA1
    assert acceptor.close_requested
    assert not acceptor.artim_running
    assert not acceptor.has_output  # AA-2: no A-ABORT, just close


def test_artim_expiry_in_sta13() -> None:
    acceptor = in_state(State.STA13)
    wire(acceptor)
    assert acceptor.artim_running
    assert acceptor.artim_expired() == [ConnectionClosed()]
    assert acceptor.state is State.STA1
    assert acceptor.close_requested
    assert not acceptor.has_output


@pytest.mark.parametrize("state", [State.STA1, State.STA3, State.STA5, State.STA6, State.STA7])
def test_artim_expiry_ignored_when_artim_is_not_running(state: State) -> None:
    connection = in_state(state)
    wire(connection)
    assert not connection.artim_running
    assert connection.artim_expired() == []
    assert connection.state is state
    assert not connection.close_requested


# --------------------------------------------------------------------------- EOF


@pytest.mark.parametrize(
    ("state", "aborted"),
    [
        (State.STA2, False),  # AA-5
        (State.STA3, True),  # AA-4 from here to Sta12
        (State.STA4, True),
        (State.STA5, True),
        (State.STA6, True),
        (State.STA7, True),
        (State.STA8, True),
        (State.STA9, True),
        (State.STA10, True),
        (State.STA11, True),
        (State.STA12, True),
        (State.STA13, False),  # AR-5
    ],
)
def test_eof_in_each_state(state: State, aborted: bool) -> None:
    connection = in_state(state)
    wire(connection)
    events = connection.receive_eof()
    if aborted:
        assert kinds(events) == [Aborted, ConnectionClosed]
        assert isinstance(events[0], Aborted)
        assert (events[0].source, events[0].reason) == (None, None)
        assert "closed by the peer" in events[0].detail
    else:
        assert events == [ConnectionClosed()]
    assert connection.state is State.STA1
    assert not connection.artim_running
    assert not connection.has_output


def test_eof_in_sta1_is_ignored() -> None:
    connection = ULConnection(Role.ACCEPTOR)
    assert connection.receive_eof() == []
    assert connection.state is State.STA1


# --------------------------------------------------------------------------- misuse


PRIMITIVES: dict[str, Callable[[ULConnection], object]] = {
    "request": lambda c: c.request_association(RQ),
    "connected": lambda c: c.transport_connected(),
    "accept": lambda c: c.accept(AC),
    "reject": lambda c: c.reject(RJ),
    "pdata": lambda c: c.send_pdata(PDATA),
    "encoded-pdata": lambda c: c.send_encoded_pdata([encode_pdu(PDATA)]),
    "release": lambda c: c.release(),
    "release-response": lambda c: c.release_response(),
}

WRONG_STATE_CASES = [
    (State.STA1, "accept"),
    (State.STA1, "reject"),
    (State.STA1, "pdata"),
    (State.STA1, "release"),
    (State.STA1, "release-response"),
    (State.STA2, "request"),
    (State.STA2, "pdata"),
    (State.STA2, "release"),
    (State.STA3, "pdata"),
    (State.STA3, "release"),
    (State.STA5, "accept"),
    (State.STA5, "encoded-pdata"),
    (State.STA6, "request"),
    (State.STA6, "connected"),
    (State.STA6, "accept"),
    (State.STA6, "reject"),
    (State.STA6, "release-response"),
    (State.STA7, "pdata"),
    (State.STA7, "release"),
    (State.STA8, "release"),
    (State.STA9, "pdata"),
    (State.STA10, "release-response"),
    (State.STA11, "release-response"),
    (State.STA12, "pdata"),
    (State.STA13, "pdata"),
    (State.STA13, "release"),
    (State.STA13, "release-response"),
]


@pytest.mark.parametrize(
    ("state", "primitive"),
    WRONG_STATE_CASES,
    ids=[f"{state.label}-{name}" for state, name in WRONG_STATE_CASES],
)
def test_primitive_in_the_wrong_state_raises_and_changes_nothing(
    state: State, primitive: str
) -> None:
    connection = in_state(state)
    wire(connection)
    before = (connection.artim_running, connection.close_requested, connection.in_pdu)
    with pytest.raises(LocalProtocolError) as caught:
        PRIMITIVES[primitive](connection)
    assert isinstance(caught.value, InvalidTransition)
    assert state.label in str(caught.value)
    assert connection.state is state
    assert (connection.artim_running, connection.close_requested, connection.in_pdu) == before
    assert not connection.has_output
    # and the connection goes on working
    if state is State.STA6:
        connection.send_pdata(PDATA)
        assert decode_pdu(wire(connection)) == PDATA
    elif state is not State.STA1:
        assert connection.receive_eof()[-1] == ConnectionClosed()
        assert connection.state is State.STA1


def test_transport_connected_without_a_request_is_refused() -> None:
    requestor = ULConnection(Role.REQUESTOR)
    with pytest.raises(LocalProtocolError):
        requestor.transport_connected()
    assert requestor.state is State.STA1
