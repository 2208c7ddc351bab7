"""A server keeps serving while hostile or broken peers misbehave on raw TCP.

Each case opens a raw connection to our server, sends bad bytes, and checks the
answer: an A-ABORT (source 2, service provider) with a fitting reason, an
A-ASSOCIATE-RJ where the standard names a reject, or the connection closed, each
within the configured timers. A normal SCU must be able to echo while the bad
connection is open and after it.
"""

from __future__ import annotations

import random
import time

import anyio
import pytest
from anyio.abc import SocketStream

from aionetdicom.contexts import EXPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS
from aionetdicom.pdu import (
    PDU,
    PDV,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    encode_pdu,
)
from tests.hostile import (
    CT_IMAGE_STORAGE,
    FAST,
    HOST,
    INVALID_VALUE,
    NOT_SPECIFIED,
    PROVIDER,
    SLACK,
    SLOW,
    UNEXPECTED_PDU,
    UNRECOGNIZED_PDU,
    assert_abort,
    association_request,
    echo_ok,
    echo_pdata,
    eventually,
    expect_abort_at_once,
    header,
    raw_connection,
    serving,
)

# --------------------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    ("first_byte", "reason"),
    [(0xA5, UNRECOGNIZED_PDU), (0x00, UNRECOGNIZED_PDU), (0x04, INVALID_VALUE)],
)
async def test_random_garbage(first_byte: int, reason: int) -> None:
    # 0x04 starts a P-DATA-TF header whose random length field exceeds every limit.
    garbage = bytes([first_byte, 0, 0xFE]) + random.Random(first_byte).randbytes(509)
    async with serving() as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(garbage)
            await expect_abort_at_once(peer, sent_at, reason)
            await echo_ok(server)
        await echo_ok(server)


async def test_http_request_on_the_dicom_port() -> None:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n"
    async with serving(FAST) as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(request)
            await expect_abort_at_once(peer, sent_at, UNRECOGNIZED_PDU, FAST)  # 'G' = 0x47
            await echo_ok(server)
            assert await peer.next_pdu() is None  # then the server hangs up (ARTIM)
        await echo_ok(server)


@pytest.mark.parametrize("pdu_type", [0x08, 0xFF])
async def test_unknown_pdu_type(pdu_type: int) -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(header(pdu_type, 4) + b"\x00" * 4)
            await expect_abort_at_once(peer, sent_at, UNRECOGNIZED_PDU)
            await echo_ok(server)
        await echo_ok(server)


async def test_unknown_pdu_type_on_an_established_association() -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            await peer.associate()
            sent_at = time.monotonic()
            await peer.send(header(0x09, 4) + b"\x00" * 4)
            await expect_abort_at_once(peer, sent_at, UNRECOGNIZED_PDU)
            await echo_ok(server)
        await echo_ok(server)


# --------------------------------------------------------------------------- lengths


async def test_truncated_pdu_is_dropped_at_artim() -> None:
    async with serving(FAST) as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(header(0x01, 100) + b"\x00\x01" + b"\x20" * 12)  # 20 of 106 bytes
            await echo_ok(server)  # while the truncated PDU stalls
            assert await peer.next_pdu() is None  # no association yet: just closed (AA-2)
            assert FAST * 0.9 <= time.monotonic() - sent_at < FAST + SLACK
        await echo_ok(server)


@pytest.mark.parametrize("pdu_type", [0x04, 0x01], ids=["p-data", "associate-rq"])
async def test_huge_length_before_association_aborts_at_once(pdu_type: int) -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(header(pdu_type, 0xFFFFFFFF))
            await expect_abort_at_once(peer, sent_at, INVALID_VALUE)
            await echo_ok(server)
        await echo_ok(server)


async def test_huge_pdata_length_on_an_established_association_aborts_at_once() -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            await peer.associate()
            sent_at = time.monotonic()
            await peer.send(header(0x04, 0xFFFFFFFF) + b"\x00" * 10)
            await expect_abort_at_once(peer, sent_at, INVALID_VALUE)
            await echo_ok(server)
        await echo_ok(server)


async def test_oversized_associate_request_aborts_at_once() -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(header(0x01, 10 * 1024 * 1024))
            await expect_abort_at_once(peer, sent_at, INVALID_VALUE)
        await echo_ok(server)


@pytest.mark.parametrize("pdu_type", [0x05, 0x07], ids=["release-rq", "abort"])
async def test_wrong_fixed_pdu_length_aborts(pdu_type: int) -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            await peer.associate()
            sent_at = time.monotonic()
            await peer.send(header(pdu_type, 6) + b"\x00" * 6)
            await expect_abort_at_once(peer, sent_at, INVALID_VALUE)
        await echo_ok(server)


async def test_stall_mid_pdu_on_an_established_association() -> None:
    async with serving(FAST) as server:
        async with raw_connection(server) as peer:
            await peer.associate()
            sent_at = time.monotonic()
            await peer.send(header(0x04, 100) + b"\x00" * 10)
            await echo_ok(server)  # while the half PDU stalls
            assert_abort(await peer.next_pdu(), NOT_SPECIFIED)
            assert FAST * 0.9 <= time.monotonic() - sent_at < FAST + SLACK
            assert await peer.next_pdu() is None  # and hangs up after ARTIM
        await echo_ok(server)


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    "context_ids",
    [[2], [1, 254], [1, 3, 3], [0], [1, 0], []],
    ids=["even", "even-second", "duplicate", "zero", "zero-second", "no-contexts"],
)
async def test_invalid_presentation_context_ids_abort(context_ids: list[int]) -> None:
    contexts = [
        PresentationContextRQ(cid, VERIFICATION_SOP_CLASS, (EXPLICIT_VR_LITTLE_ENDIAN,))
        for cid in context_ids
    ]
    async with serving() as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(encode_pdu(association_request(contexts)))
            await expect_abort_at_once(peer, sent_at, INVALID_VALUE)
            await echo_ok(server)
        await echo_ok(server)
        assert all(assoc.state.value in (1, 2, 13) for assoc in server.associations)


@pytest.mark.parametrize(
    ("fields", "reject"),
    [
        ({"protocol_version": 2}, (1, 2, 2)),  # protocol-version-not-supported
        ({"application_context_name": "1.2.3.4"}, (1, 1, 2)),  # app context not supported
    ],
    ids=["protocol-version", "application-context"],
)
async def test_requests_the_standard_rejects(
    fields: dict[str, object], reject: tuple[int, int, int]
) -> None:
    async with serving(FAST) as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(encode_pdu(association_request(**fields)))
            reply = await peer.next_pdu()
            assert time.monotonic() - sent_at < FAST / 2
            assert isinstance(reply, AAssociateRJ)
            assert (reply.result, reply.source, reply.reason) == reject
            await echo_ok(server)
            assert await peer.next_pdu() is None  # then the server hangs up
        await echo_ok(server)


AC = AAssociateAC("ANY-SCP", "HOSTILE", (PresentationContextAC(1, 0, EXPLICIT_VR_LITTLE_ENDIAN),))


@pytest.mark.parametrize(
    "pdu",
    [
        pytest.param(PDataTF((PDV(1, True, True, b"\x00\x00"),)), id="p-data"),
        pytest.param(AReleaseRQ(), id="release-rq"),
        pytest.param(AReleaseRP(), id="release-rp"),
        pytest.param(AC, id="associate-ac"),
        pytest.param(AAssociateRJ(1, 1, 1), id="associate-rj"),
    ],
)
async def test_pdu_before_association_aborts(pdu: PDU) -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(encode_pdu(pdu))
            await expect_abort_at_once(peer, sent_at, UNEXPECTED_PDU)
            await echo_ok(server)
        await echo_ok(server)


async def test_abort_before_association_just_closes() -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            sent_at = time.monotonic()
            await peer.send(encode_pdu(AAbort(0, 0)))
            assert await peer.next_pdu() is None
            assert time.monotonic() - sent_at < SLOW / 2
        await echo_ok(server)


async def test_second_associate_request_on_an_established_association() -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            await peer.associate()
            sent_at = time.monotonic()
            await peer.send(encode_pdu(association_request()))
            await expect_abort_at_once(peer, sent_at, UNEXPECTED_PDU)
            await echo_ok(server)
        await echo_ok(server)


@pytest.mark.parametrize("context_id", [3, 5], ids=["rejected", "never-proposed"])
async def test_pdv_for_a_context_that_was_not_accepted(context_id: int) -> None:
    contexts = [
        PresentationContextRQ(1, VERIFICATION_SOP_CLASS, (EXPLICIT_VR_LITTLE_ENDIAN,)),
        PresentationContextRQ(3, CT_IMAGE_STORAGE, (EXPLICIT_VR_LITTLE_ENDIAN,)),
    ]
    async with serving() as server:
        async with raw_connection(server) as peer:
            await peer.associate(contexts)
            # the accepted context works ...
            await peer.send(echo_pdata(1))
            response = await peer.next_pdu()
            assert isinstance(response, PDataTF)
            assert response.pdvs[0].context_id == 1
            # ... the other one does not
            sent_at = time.monotonic()
            await peer.send(echo_pdata(context_id))
            await expect_abort_at_once(peer, sent_at, INVALID_VALUE)
            await echo_ok(server)
        await echo_ok(server)


async def test_garbage_command_set_aborts() -> None:
    async with serving() as server:
        async with raw_connection(server) as peer:
            await peer.associate()
            sent_at = time.monotonic()
            bogus = PDataTF((PDV(1, True, True, b"\xff" * 40),))
            await peer.send(encode_pdu(bogus))
            reply = await peer.next_pdu()
            assert isinstance(reply, AAbort)
            assert reply.source == PROVIDER
            assert reply.reason in (NOT_SPECIFIED, INVALID_VALUE)  # a DIMSE, not PDU, error
            assert time.monotonic() - sent_at < SLOW / 2
            await echo_ok(server)
        await echo_ok(server)


# --------------------------------------------------------------------------- idle crowds


async def test_many_idle_connections_do_not_block_service() -> None:
    """200 silent connections: an SCU is served while all of them are still pending,
    then ARTIM drops each of them, none early, without a byte sent to it."""
    count = 200
    async with serving(SLOW) as server:
        streams: list[SocketStream] = []
        opened: dict[SocketStream, float] = {}
        try:
            for _ in range(count):
                stream = await anyio.connect_tcp(HOST, server.port)
                opened[stream] = time.monotonic()
                streams.append(stream)
            await eventually(lambda: server.pending_connections == count, SLOW)
            await echo_ok(server)
            # served while every idle connection was still waiting for its ARTIM
            assert server.pending_connections == count
            lifetimes: list[float] = []

            async def wait_dropped(stream: SocketStream) -> None:
                with anyio.fail_after(2 * SLOW + SLACK):
                    try:
                        data = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        lifetimes.append(time.monotonic() - opened[stream])
                    else:
                        pytest.fail(f"an idle connection received {data!r}")

            async with anyio.create_task_group() as tg:
                for stream in streams:
                    tg.start_soon(wait_dropped, stream)
            assert len(lifetimes) == count
            assert min(lifetimes) >= SLOW * 0.9
        finally:
            for stream in streams:
                await stream.aclose()
        await echo_ok(server)
