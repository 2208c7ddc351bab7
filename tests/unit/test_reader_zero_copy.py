"""The zero-copy PDU reader and the UL P-DATA fast paths.

Feeding bytes and reading straight into :meth:`PDUReader.receive_buffer` must frame
exactly the same PDUs (and :class:`ULConnection` give the same events and replies)
however the stream is cut; what is handed out is read-only; limits still act on the
header alone.
"""

from __future__ import annotations

import itertools
import time
import tracemalloc
from collections.abc import Iterator
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aionetdicom.dimse.fragments import _keepable
from aionetdicom.dimse.packing import pack_message
from aionetdicom.errors import LocalProtocolError, PDUDecodeError, PDUTooLarge
from aionetdicom.pdu import PDU, PDV, AAbort, AReleaseRP, AReleaseRQ, PDataTF, PDUReader
from aionetdicom.pdu import reader as reader_module
from aionetdicom.pdu.codec import decode_pdu, encode_pdu
from aionetdicom.ul import connection as connection_module
from aionetdicom.ul.connection import Role, ULConnection
from aionetdicom.ul.events import DataReceived, ReleaseRequested, ULEvent
from aionetdicom.ul.fsm import InvalidTransition, State
from tests.unit.test_pdu_properties import (
    aborts,
    associate_acs,
    associate_rjs,
    associate_rqs,
    pdata_tfs,
)
from tests.unit.test_ul_connection import AC, RQ, established, wire

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

stream_pdus: st.SearchStrategy[PDU] = st.one_of(
    associate_rqs(4),
    associate_acs(4),
    associate_rjs,
    pdata_tfs,
    pdata_tfs,
    st.just(AReleaseRQ()),
    st.just(AReleaseRP()),
    aborts,
)
pdu_lists = st.lists(stream_pdus, min_size=1, max_size=6)
read_sizes = st.lists(st.integers(1, 700), min_size=1, max_size=20)
#: Small limits make bodies start below their length and grow while being received.
prealloc_limits = st.sampled_from([1, 7, 64, reader_module.BODY_PREALLOCATE_LIMIT])


def _cut(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos = 0
    for size in _cycle(sizes):
        if pos >= len(data):
            return
        yield data[pos : pos + size]
        pos += size


def _cycle(sizes: list[int]) -> Iterator[int]:
    while True:
        yield from sizes


def _drain(reader: PDUReader) -> list[PDU]:
    out = []
    while (pdu := reader.next_pdu()) is not None:
        out.append(pdu)
    return out


def read_by_feeding(data: bytes, sizes: list[int], *, writable: bool = False) -> list[PDU]:
    """Frame ``data`` delivered in reads of ``sizes`` bytes through ``feed``."""
    reader = PDUReader()
    out: list[PDU] = []
    for piece in _cut(data, sizes):
        if writable:
            buffer = bytearray(piece)
            reader.feed(buffer)
            buffer[:] = b"\xee" * len(buffer)  # the caller reuses its buffer
        else:
            reader.feed(piece)
        out.extend(_drain(reader))
    assert not reader.in_pdu
    assert reader.buffered == 0
    return out


def read_into(data: bytes, sizes: list[int]) -> list[PDU]:
    """Frame ``data`` as an I/O layer using ``recv_into`` would, with reads of ``sizes``."""
    reader = PDUReader()
    out: list[PDU] = []
    pos = 0
    for size in _cycle(sizes):
        if pos >= len(data):
            break
        view = reader.receive_buffer()
        if view is None:
            reader.feed(data[pos : pos + size])
            pos += size
        else:
            n = min(size, len(view), len(data) - pos)
            view[:n] = data[pos : pos + n]
            reader.received_into(n)
            pos += n
        out.extend(_drain(reader))
    assert not reader.in_pdu
    assert reader.buffered == 0
    assert reader.receive_buffer() is None
    return out


def _check_read_only(pdus: list[PDU]) -> None:
    for pdu in pdus:
        if isinstance(pdu, PDataTF):
            for pdv in pdu.pdvs:
                assert isinstance(pdv.data, memoryview)
                assert pdv.data.readonly
                assert _keepable(pdv.data) is pdv.data  # the assembler keeps it, no copy


# --------------------------------------------------------------------------- equivalence


@SETTINGS
@given(pdu_lists, read_sizes, read_sizes, prealloc_limits)
def test_feed_and_receive_into_frame_the_same_pdus(
    pdus: list[PDU], feed_sizes: list[int], into_sizes: list[int], prealloc: int
) -> None:
    stream = b"".join(encode_pdu(pdu) for pdu in pdus)
    with mock.patch.object(reader_module, "BODY_PREALLOCATE_LIMIT", prealloc):
        fed = read_by_feeding(stream, feed_sizes)
        copied = read_by_feeding(stream, feed_sizes, writable=True)
        received = read_into(stream, into_sizes)
        whole = read_by_feeding(stream, [len(stream)])
    assert fed == copied == received == whole == pdus
    for got in (fed, copied, received, whole):
        _check_read_only(got)


@SETTINGS
@given(pdu_lists, st.lists(st.integers(0, 1 << 16), max_size=30))
def test_every_split_pattern_gives_the_old_results(pdus: list[PDU], cuts: list[int]) -> None:
    stream = b"".join(encode_pdu(pdu) for pdu in pdus)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    edges = [0, *points, len(stream)]
    sizes = [b - a for a, b in itertools.pairwise(edges) if b > a] or [1]
    assert read_by_feeding(stream, sizes) == pdus
    assert read_into(stream, sizes) == pdus


def test_every_single_split_point() -> None:
    pdus: list[PDU] = [
        RQ,
        PDataTF((PDV(1, True, False, b"cmd"), PDV(1, True, True, b"!"), PDV(3, False, True, b""))),
        AReleaseRQ(),
        AAbort(2, 6),
    ]
    stream = b"".join(encode_pdu(pdu) for pdu in pdus)
    for point in range(1, len(stream)):
        sizes = [point, len(stream)]
        assert read_by_feeding(stream, sizes) == pdus
        assert read_into(stream, sizes) == pdus


def test_data_handed_out_is_never_written_again() -> None:
    first = encode_pdu(PDataTF((PDV(1, False, False, b"A" * 1000),)))
    second = encode_pdu(PDataTF((PDV(1, False, True, b"B" * 1000),)))
    reader = PDUReader()
    # first body read straight into its buffer, then the next PDU on top
    reader.feed(first[:10])
    assert reader.next_pdu() is None
    view = reader.receive_buffer()
    assert view is not None
    assert len(view) == len(first) - 10  # the body less the 4 bytes fed with the header
    view[:] = first[10:]
    reader.received_into(len(first) - 10)
    (pdu,) = _drain(reader)
    assert isinstance(pdu, PDataTF)
    data = pdu.pdvs[0].data
    assert isinstance(data, memoryview)
    assert data.readonly
    for piece in (second[:3], second[3:500], second[500:]):
        reader.feed(bytearray(piece))
        _drain(reader)
    assert bytes(data) == b"A" * 1000


def test_complete_pdu_in_one_chunk_is_not_copied() -> None:
    chunk = encode_pdu(PDataTF((PDV(1, False, True, b"x" * 4096),))) + encode_pdu(AReleaseRQ())
    reader = PDUReader()
    reader.feed(chunk)
    pdu = reader.next_pdu()
    assert isinstance(pdu, PDataTF)
    data = pdu.pdvs[0].data
    assert isinstance(data, memoryview)
    assert data.obj is chunk  # a view of the received bytes
    assert reader.next_pdu() == AReleaseRQ()


def test_received_into_rejects_misuse() -> None:
    reader = PDUReader()
    with pytest.raises(ValueError, match="receive buffer"):
        reader.received_into(1)
    reader.received_into(0)  # nothing read: harmless
    reader.feed(encode_pdu(PDataTF((PDV(1, False, True, b"x" * 100),)))[:20])
    assert reader.next_pdu() is None
    view = reader.receive_buffer()
    assert view is not None
    with pytest.raises(ValueError, match="receive buffer"):
        reader.received_into(len(view) + 1)
    reader.feed(b"\x00")  # fed bytes go into the same body
    after = reader.receive_buffer()
    assert after is not None
    assert len(after) == len(view) - 1


def test_buffered_and_in_pdu_follow_the_bytes() -> None:
    data = encode_pdu(PDataTF((PDV(1, False, True, b"z" * 50),)))
    reader = PDUReader()
    reader.feed(data[:3])
    assert (reader.next_pdu(), reader.buffered, reader.in_pdu) == (None, 3, True)
    assert reader.receive_buffer() is None  # no header yet
    reader.feed(data[3:10])
    assert (reader.next_pdu(), reader.buffered) == (None, 10)
    view = reader.receive_buffer()
    assert view is not None
    view[:5] = data[10:15]
    reader.received_into(5)
    assert reader.buffered == 15
    assert reader.in_pdu
    reader.feed(data[15:])
    assert reader.buffered == len(data)
    assert reader.next_pdu() == decode_pdu(data)
    assert (reader.buffered, reader.in_pdu) == (0, False)


# --------------------------------------------------------------------------- limits


def test_huge_length_raises_from_the_header_without_allocating() -> None:
    reader = PDUReader()
    tracemalloc.start()
    try:
        reader.feed(b"\x04\x00\xff\xff\xff\xff")
        with pytest.raises(PDUTooLarge, match="declares 4294967295 bytes"):
            reader.next_pdu()
        assert reader.receive_buffer() is None  # no body buffer was made
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    assert reader.buffered == 6
    assert reader.in_pdu


def test_accepted_huge_length_allocates_only_as_bytes_arrive() -> None:
    # A hostile peer declaring the largest allowed body gets a bounded first buffer.
    reader = PDUReader(max_pdata_length=0xFFFFFFFF)
    tracemalloc.start()
    try:
        reader.feed(b"\x04\x00\xff\xff\xff\xff")
        assert reader.next_pdu() is None
        view = reader.receive_buffer()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert view is not None
    assert len(view) == reader_module.BODY_PREALLOCATE_LIMIT
    assert peak < reader_module.BODY_PREALLOCATE_LIMIT + 64 * 1024


@pytest.mark.parametrize("limit", [16, 1 << 20])
def test_limit_raises_on_the_receive_into_path_too(limit: int) -> None:
    reader = PDUReader(max_pdata_length=limit)
    reader.feed(b"\x04\x00" + (limit + 1).to_bytes(4, "big"))
    assert reader.receive_buffer() is None
    with pytest.raises(PDUTooLarge):
        reader.next_pdu()
    assert reader.receive_buffer() is None


def test_decode_error_after_receive_into() -> None:
    reader = PDUReader()
    reader.feed(b"\x04\x00\x00\x00\x00\x08")
    assert reader.next_pdu() is None
    view = reader.receive_buffer()
    assert view is not None
    view[:] = b"\x00\x00\x00\x04\x01\x07ab"  # reserved control bits set
    reader.received_into(8)
    with pytest.raises(PDUDecodeError, match="reserved bits"):
        reader.next_pdu()
    assert not reader.in_pdu


# --------------------------------------------------------------------------- scaling


def test_one_byte_chunks_of_a_big_pdu_are_linear() -> None:
    data = encode_pdu(PDataTF((PDV(1, False, True, bytes(range(256)) * 4096),)))  # 1 MiB
    reader = PDUReader()
    start = time.perf_counter()
    for index in range(len(data)):
        reader.feed(data[index : index + 1])
    pdu = reader.next_pdu()
    elapsed = time.perf_counter() - start
    assert pdu == decode_pdu(data)
    assert elapsed < 20, f"{elapsed:.1f} s for 1 MiB in 1-byte chunks"


def test_small_reads_into_a_growing_body_are_linear() -> None:
    body = b"q" * (3 * reader_module.BODY_PREALLOCATE_LIMIT + 5)
    data = encode_pdu(PDataTF((PDV(1, False, True, body),)))
    start = time.perf_counter()
    assert read_into(data, [4096]) == [decode_pdu(data)]
    assert time.perf_counter() - start < 20


# --------------------------------------------------------------------------- ULConnection


def _conn_feed(conn: ULConnection, data: bytes, sizes: list[int]) -> list[ULEvent]:
    events: list[ULEvent] = []
    for piece in _cut(data, sizes):
        events += conn.receive_data(piece)
    return events


def _conn_into(conn: ULConnection, data: bytes, sizes: list[int]) -> list[ULEvent]:
    events: list[ULEvent] = []
    pos = 0
    for size in _cycle(sizes):
        if pos >= len(data):
            break
        view = conn.receive_buffer()
        if view is None:
            events += conn.receive_data(data[pos : pos + size])
            pos += size
        else:
            n = min(size, len(view), len(data) - pos)
            view[:n] = data[pos : pos + n]
            events += conn.received_into(n)
            pos += n
    return events


def _fresh_acceptor() -> ULConnection:
    acceptor = ULConnection(Role.ACCEPTOR)
    acceptor.transport_connected()
    return acceptor


def _established_requestor() -> ULConnection:
    requestor, _ = established()
    return requestor


def _releasing_requestor() -> ULConnection:
    requestor, _ = established()
    requestor.release()
    wire(requestor)
    return requestor


@SETTINGS
@given(
    st.sampled_from([_fresh_acceptor, _established_requestor, _releasing_requestor]),
    pdu_lists,
    read_sizes,
    read_sizes,
)
def test_connection_events_are_the_same_either_way(
    make: object, pdus: list[PDU], feed_sizes: list[int], into_sizes: list[int]
) -> None:
    assert callable(make)
    stream = b"".join(encode_pdu(pdu) for pdu in pdus)
    fed, into, whole = make(), make(), make()
    expected = whole.receive_data(stream)
    assert _conn_feed(fed, stream, feed_sizes) == expected
    assert _conn_into(into, stream, into_sizes) == expected
    assert fed.state is into.state is whole.state
    assert wire(fed) == wire(into) == wire(whole)
    assert fed.close_requested == into.close_requested == whole.close_requested


def test_connection_receive_buffer_after_failure_is_none() -> None:
    requestor = _established_requestor()
    assert requestor.receive_buffer() is None  # nothing received yet
    data = encode_pdu(PDataTF((PDV(1, False, True, b"x" * 100),)))
    assert requestor.receive_data(data[:20]) == []
    assert requestor.receive_buffer() is not None

    broken = _established_requestor()
    assert broken.receive_data(b"\x09\x00\x00\x00\x00\x10")  # unknown PDU type: aborted
    assert broken.receive_buffer() is None
    assert broken.received_into(5) == []


def test_pdata_fast_state_comes_from_the_table() -> None:
    assert connection_module._PDATA_STATE is State.STA6


def _no_fire(*args: object) -> None:
    raise AssertionError("the generic state machine ran for P-DATA in Sta6")


def test_pdata_in_sta6_skips_the_generic_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    requestor, acceptor = established()
    monkeypatch.setattr(requestor, "_fire", _no_fire)
    monkeypatch.setattr(acceptor, "_fire", _no_fire)
    pdata = PDataTF((PDV(1, True, True, b"\x08\x00\x00\x00command!"),))
    requestor.send_pdata(pdata)
    for chunks in pack_message(1, b"C" * 40, b"D" * 70, 32):
        requestor.send_encoded_pdata(chunks)
    requestor.send_encoded_pdata_many(pack_message(1, b"c" * 10, b"d" * 50, 32))
    data = wire(requestor)
    events = acceptor.receive_data(data)
    assert all(isinstance(event, DataReceived) for event in events)
    assert events[0] == DataReceived(pdata)
    assert len(events) == 1 + len(list(pack_message(1, b"C" * 40, b"D" * 70, 32))) + len(
        list(pack_message(1, b"c" * 10, b"d" * 50, 32))
    )
    assert requestor.state is acceptor.state is State.STA6


def test_send_encoded_pdata_many_matches_one_by_one() -> None:
    one, _ = established()
    many, _ = established()
    messages = [(b"C" * 30, b"D" * 200), (b"c" * 5, None)]
    for command, dataset in messages:
        for chunks in pack_message(3, command, dataset, 64):
            one.send_encoded_pdata(chunks)
        many.send_encoded_pdata_many(pack_message(3, command, dataset, 64))
    assert wire(one) == wire(many)


def test_send_encoded_pdata_many_outside_sta6() -> None:
    idle = ULConnection(Role.REQUESTOR)
    with pytest.raises(InvalidTransition):
        idle.send_encoded_pdata_many([[b"x"]])
    assert not idle.has_output
    with pytest.raises(LocalProtocolError):
        idle.send_encoded_pdata([b"x"])

    # Sta8 (peer asked to release, our response outstanding): AR-7 still sends data
    requestor, acceptor = established()
    requestor.release()
    assert acceptor.receive_data(wire(requestor)) == [ReleaseRequested()]
    assert acceptor.state is State.STA8
    acceptor.send_encoded_pdata_many(pack_message(1, b"C" * 40, None, 32))
    assert acceptor.state is State.STA8
    events = requestor.receive_data(wire(acceptor))  # AR-6 in Sta7
    assert events
    assert all(isinstance(event, DataReceived) for event in events)
    assert requestor.state is State.STA7


def test_pdata_before_establishment_still_aborts() -> None:
    acceptor = _fresh_acceptor()
    acceptor.receive_data(encode_pdu(PDataTF((PDV(1, True, True, b"x"),))))
    assert acceptor.state is State.STA13
    assert wire(acceptor) == encode_pdu(AAbort(2, 2))


def test_association_bytes_through_receive_buffer() -> None:
    acceptor = _fresh_acceptor()
    data = encode_pdu(RQ)
    assert acceptor.receive_data(data[:7]) == []
    view = acceptor.receive_buffer()
    assert view is not None
    assert len(view) == len(data) - 7
    view[:] = data[7:]
    events = acceptor.received_into(len(view))
    assert [type(event).__name__ for event in events] == ["AssociationRequested"]
    acceptor.accept(AC)
    assert acceptor.is_established
