"""Hostile input (issue 7, part 3): what tests/integration/test_hostile_peers.py leaves out.

Every case runs in :func:`tests.hostile.serving`: a good SCU echoes before and after,
every connection must end within the timers, and nothing may be logged as an error
(or with a traceback), leave a task exception unretrieved or be unraisable. Each case
checks the standard's answer: A-ABORT source/reason (PS3.8 9.3.8, Table 9-10),
A-ASSOCIATE-RJ result/source/reason (9.3.4), or the DIMSE status (PS3.4, PS3.7).
"""

from __future__ import annotations

import copy
import selectors
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from aionetdicom import AE, FindRequest, sop_classes
from aionetdicom.acse.user_identity import UserIdentity
from aionetdicom.contexts import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    PresentationContext,
)
from aionetdicom.datasets import encode_dataset
from aionetdicom.dimse.command_set import Command, CommandField, encode_command, make_command
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu import (
    PDU,
    PDV,
    AAssociateAC,
    AAssociateRQ,
    PDataTF,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
    UserIdentityRQ,
    UserInformation,
    encode_pdu,
)
from aionetdicom.server import PENDING_CAP_WAIT
from aionetdicom.services.qr_scp import (
    GetRequest,
    MoveRequest,
    query_retrieve_contexts,
    retrieve_storage_contexts,
)
from aionetdicom.services.storage import StoreRequest
from tests.dicom_files import make_ct
from tests.hostile import (
    CT_IMAGE_STORAGE,
    FAST,
    HOST,
    INVALID_VALUE,
    NOT_SPECIFIED,
    SLACK,
    SLOW,
    UNRECOGNIZED_PDU,
    RawPeer,
    assert_abort,
    assert_reject,
    association_request,
    echo_command,
    echo_ok,
    echo_pdata,
    eventually,
    expect_abort_at_once,
    expect_closed,
    header,
    raw_connection,
    serving,
    wait_until_drained,
)

STUDY_ROOT_FIND = sop_classes.STUDY_ROOT_FIND
STUDY_ROOT_GET = sop_classes.STUDY_ROOT_GET
STUDY_ROOT_MOVE = sop_classes.STUDY_ROOT_MOVE
EXPLICIT = (EXPLICIT_VR_LITTLE_ENDIAN,)
#: Reject result/source/reason values used below (PS3.8 9.3.4).
PERMANENT, SERVICE_USER, NO_REASON = 1, 1, 1


def context(context_id: int, abstract_syntax: str, *syntaxes: str) -> PresentationContextRQ:
    return PresentationContextRQ(context_id, abstract_syntax, syntaxes or EXPLICIT)


def store_command(
    sop_instance: str | None, message_id: int = 11, sop_class: str = CT_IMAGE_STORAGE
) -> Command:
    command = make_command(
        CommandField.C_STORE_RQ,
        has_dataset=True,
        MessageID=message_id,
        Priority=0,
        AffectedSOPClassUID=sop_class,
    )
    if sop_instance is not None:
        command["AffectedSOPInstanceUID"] = sop_instance
    return command


def query_command(field: int, sop_class: str, message_id: int = 21, **extra: Any) -> Command:
    return make_command(
        field,
        has_dataset=True,
        MessageID=message_id,
        Priority=0,
        AffectedSOPClassUID=sop_class,
        **extra,
    )


def study_query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    return query


async def status_of(peer: RawPeer, field: int) -> int:
    """The status of the next message, which must be a response of kind ``field``."""
    message = await peer.receive_message()
    assert message.command["CommandField"] == field
    status = message.command["Status"]
    assert isinstance(status, int)
    return status


# =========================================================================== PDU level


@pytest.mark.parametrize("pdu_type", [0x02, 0x03, 0x05, 0x06, 0x07])
async def test_all_ones_pdu_length_of_every_other_type_aborts_at_once(pdu_type: int) -> None:
    """Length 0xFFFFFFFF on the PDU types the peers file leaves out: A-ABORT (2, 6)."""
    async with serving() as server, raw_connection(server) as peer:
        sent_at = time.monotonic()
        await peer.send(header(pdu_type, 0xFFFFFFFF) + b"\x00" * 4)
        await expect_abort_at_once(peer, sent_at, INVALID_VALUE)


async def test_tls_client_hello_on_the_plain_port() -> None:
    """A TLS ClientHello starts with 0x16, no PDU type: A-ABORT unrecognized PDU, then close."""
    random_bytes = bytes(range(32))
    hello = b"\x03\x03" + random_bytes + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + b"\x00\x00"
    handshake = b"\x01" + len(hello).to_bytes(3, "big") + hello
    record = b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake
    async with serving(FAST) as server, raw_connection(server) as peer:
        sent_at = time.monotonic()
        await peer.send(record)
        await expect_abort_at_once(peer, sent_at, UNRECOGNIZED_PDU, FAST)
        await echo_ok(server)
        await expect_closed(peer, FAST + SLACK)  # ARTIM after the abort (Sta13)


def _item(item_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body) if length is None else length) + body


def _associate_rq(items: bytes) -> bytes:
    fixed = struct.pack(">HH16s16s32s", 1, 0, b"ANY-SCP".ljust(16), b"HOSTILE".ljust(16), b"")
    body = fixed + items
    return header(0x01, len(body)) + body


_APP = _item(0x10, b"1.2.840.10008.3.1.1.1")
_ABSTRACT = _item(0x30, VERIFICATION_SOP_CLASS.encode())
_TRANSFER = _item(0x40, EXPLICIT_VR_LITTLE_ENDIAN.encode())
_CONTEXT = _item(0x20, b"\x01\x00\x00\x00" + _ABSTRACT + _TRANSFER)
_MAX_LENGTH = _item(0x51, struct.pack(">L", 16384))
_USER_INFO = _item(0x50, _MAX_LENGTH)

#: A-ASSOCIATE-RQs whose last item (or a sub-item in it) claims more bytes than follow.
ITEMS_PAST_THE_END = {
    "presentation-context": _APP + _USER_INFO + _item(0x20, _CONTEXT[4:], 500),
    "user-information": _APP + _CONTEXT + _item(0x50, _MAX_LENGTH, 200),
    "abstract-syntax": _APP
    + _item(0x20, b"\x01\x00\x00\x00" + _item(0x30, VERIFICATION_SOP_CLASS.encode(), 90))
    + _USER_INFO,
    "maximum-length": _APP + _CONTEXT + _item(0x50, _item(0x51, b"\x00\x00\x40\x00", 40)),
    "identity-field": _APP
    + _CONTEXT
    + _item(0x50, _MAX_LENGTH + _item(0x58, b"\x02\x00" + b"\xff\x00" + b"user")),
}


@pytest.mark.parametrize("items", ITEMS_PAST_THE_END.values(), ids=ITEMS_PAST_THE_END.keys())
async def test_item_length_past_the_end_aborts_at_once(items: bytes) -> None:
    """An item or sub-item length running past its container: A-ABORT (2, 6) at once."""
    async with serving() as server, raw_connection(server) as peer:
        sent_at = time.monotonic()
        await peer.send(_associate_rq(items))
        await expect_abort_at_once(peer, sent_at, INVALID_VALUE)


async def test_the_raw_request_builder_makes_a_valid_request() -> None:
    """The same bytes with honest lengths are accepted (the cases above fail on lengths)."""
    async with serving() as server, raw_connection(server) as peer:
        await peer.send(_associate_rq(_APP + _CONTEXT + _USER_INFO))
        reply = await peer.next_pdu()
        assert isinstance(reply, AAssociateAC)
        assert [c.result for c in reply.presentation_contexts] == [0]


async def test_more_than_128_presentation_contexts_abort() -> None:
    """129 contexts cannot all have distinct odd IDs: A-ABORT (2, 6), no A-ASSOCIATE-AC."""
    contexts = [context(2 * n + 1, VERIFICATION_SOP_CLASS) for n in range(128)]
    contexts.append(context(1, VERIFICATION_SOP_CLASS))
    async with serving() as server, raw_connection(server) as peer:
        sent_at = time.monotonic()
        await peer.send(encode_pdu(association_request(contexts)))
        await expect_abort_at_once(peer, sent_at, INVALID_VALUE)


async def test_exactly_128_presentation_contexts_are_answered() -> None:
    """The boundary: 128 contexts (IDs 1..255) each get an answer, in order."""
    contexts = [context(2 * n + 1, VERIFICATION_SOP_CLASS) for n in range(128)]
    async with serving() as server, raw_connection(server) as peer:
        accepted = await peer.associate(contexts)
        assert [c.context_id for c in accepted.presentation_contexts] == list(range(1, 256, 2))
        assert all(c.result == 0 for c in accepted.presentation_contexts)
        await peer.send(echo_pdata(255))
        assert await status_of(peer, CommandField.C_ECHO_RSP) == 0


# =========================================================================== maximum length


def _with_maximum_length(length: int) -> AAssociateRQ:
    info = UserInformation(maximum_length=length, implementation_class_uid="1.2.3.4")
    return association_request(user_information=info)


@pytest.mark.parametrize("length", [1, 6])
async def test_maximum_length_too_small_for_a_pdv_aborts(length: int) -> None:
    """1-6 bytes cannot carry a PDV with data: A-ABORT (2, 6) instead of an association
    that could never answer (PS3.8 D.1)."""
    async with serving() as server, raw_connection(server) as peer:
        sent_at = time.monotonic()
        await peer.send(encode_pdu(_with_maximum_length(length)))
        await expect_abort_at_once(peer, sent_at, INVALID_VALUE)


@pytest.mark.parametrize("length", [0, 7, 8, 16])
async def test_tiny_or_unlimited_maximum_length_is_honoured(length: int) -> None:
    """0 (no limit) and 7-16 bytes: every P-DATA-TF we send fits; the echo succeeds."""
    async with serving() as server, raw_connection(server) as peer:
        await peer.send(encode_pdu(_with_maximum_length(length)))
        assert isinstance(await peer.next_pdu(), AAssociateAC)
        await peer.send(echo_pdata())
        lengths: list[int] = []
        response = await peer.receive_message(pdu_lengths=lengths)
        assert response.command["Status"] == 0
        assert response.command["MessageIDBeingRespondedTo"] == 7
        if length:
            assert max(lengths) <= length
            assert len(lengths) >= len(encode_command(response.command)) // (length - 6)
        else:
            assert len(lengths) == 1


async def test_our_scu_aborts_an_accept_with_a_too_small_maximum_length() -> None:
    """A peer SCP answering with maximum length 3: our SCU raises ProtocolError and
    sends the A-ABORT that error names (service provider, invalid parameter value)."""
    seen: list[PDU | None] = []

    async def fake_scp(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            peer = RawPeer(stream)
            request = await peer.next_pdu()
            assert isinstance(request, AAssociateRQ)
            answer = AAssociateAC(
                request.called_ae_title,
                request.calling_ae_title,
                (PresentationContextAC(1, 0, EXPLICIT_VR_LITTLE_ENDIAN),),
                UserInformation(maximum_length=3, implementation_class_uid="1.2.3.4"),
            )
            await peer.send(encode_pdu(answer))
            seen.append(await peer.next_pdu())
            seen.append(await peer.next_pdu())

    listener = await anyio.create_tcp_listener(local_host=HOST)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    scu = AE("GOOD-SCU", acse_timeout=SLOW, network_timeout=SLOW)
    contexts = [PresentationContext(VERIFICATION_SOP_CLASS, EXPLICIT)]
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, fake_scp)
        with anyio.fail_after(SLOW + SLACK), pytest.raises(ProtocolError, match="maximum PDU"):
            async with scu.associate(HOST, port, contexts=contexts):
                pytest.fail("the association must not be usable")
        await eventually(lambda: len(seen) == 2, SLOW + SLACK)
        tg.cancel_scope.cancel()
    assert_abort(seen[0], INVALID_VALUE)
    assert seen[1] is None


# =========================================================================== PDVs


def _pdata(body: bytes) -> bytes:
    return header(0x04, len(body)) + body


PDVS = {
    "no-pdv": _pdata(b""),
    "pdv-length-0": _pdata(struct.pack(">LBB", 0, 1, 3)),
    "pdv-length-1": _pdata(struct.pack(">LBB", 1, 1, 3)),
    "pdv-past-the-pdu": _pdata(struct.pack(">LBB", 200, 1, 3) + b"\x00" * 20),
    "second-pdv-past-the-pdu": _pdata(
        struct.pack(">LBB", 4, 1, 0) + b"\x00\x00" + struct.pack(">LBB", 9, 1, 3) + b"\x00"
    ),
}


@pytest.mark.parametrize("pdata", PDVS.values(), ids=PDVS.keys())
async def test_malformed_pdv_aborts_at_once(pdata: bytes) -> None:
    """PDV item lengths of 0 or 1 (below the 2 of context ID and header) or past the
    PDU, or a P-DATA-TF without PDV: A-ABORT (2, 6)."""
    async with serving() as server, raw_connection(server) as peer:
        await peer.associate()
        sent_at = time.monotonic()
        await peer.send(pdata)
        await expect_abort_at_once(peer, sent_at, INVALID_VALUE)


async def test_empty_command_fragments_are_harmless() -> None:
    """PDVs with no data (item length 2) between the fragments of a command: served."""
    encoded = encode_command(echo_command())
    pdvs = (
        PDV(1, True, False, b""),
        PDV(1, True, False, encoded[:10]),
        PDV(1, True, False, b""),
        PDV(1, True, True, encoded[10:]),
    )
    async with serving() as server, raw_connection(server) as peer:
        await peer.associate()
        await peer.send(encode_pdu(PDataTF(pdvs)))
        assert await status_of(peer, CommandField.C_ECHO_RSP) == 0


# =========================================================================== command sets


def _without(command: Command, keyword: str) -> Command:
    del command[keyword]
    return command


def _element_past_the_end() -> bytes:
    encoded = bytearray(encode_command(echo_command()))
    # The last element is CommandDataSetType (US): make its length claim 40 bytes.
    struct.pack_into("<L", encoded, len(encoded) - 6, 40)
    return bytes(encoded)


BROKEN_COMMANDS: dict[str, Callable[[], bytes]] = {
    "no-command-field": lambda: encode_command(_without(echo_command(), "CommandField")),
    "no-data-set-type": lambda: encode_command(_without(echo_command(), "CommandDataSetType")),
    "no-message-id": lambda: encode_command(_without(echo_command(), "MessageID")),
    "find-without-message-id": lambda: encode_command(
        make_command(CommandField.C_FIND_RQ, AffectedSOPClassUID=STUDY_ROOT_FIND, Priority=0)
    ),
    "element-past-the-end": _element_past_the_end,
    "truncated-value": lambda: encode_command(echo_command())[:-1],
    "unknown-command-field": lambda: encode_command(
        make_command(CommandField.C_ECHO_RQ, MessageID=5, AffectedSOPClassUID="1.2.840.10008.1.1")
    ).replace(b"\x30\x00", b"\x77\x07", 1),
}


@pytest.mark.parametrize("make", BROKEN_COMMANDS.values(), ids=BROKEN_COMMANDS.keys())
async def test_broken_command_set_aborts_at_once(make: Callable[[], bytes]) -> None:
    """A command set that cannot be parsed or answered (no Command Field, no Command
    Data Set Type, a request without Message ID, an element running past the data, a
    command field no DIMSE message has): A-ABORT (2, 0) at once, and no response."""
    contexts = [context(1, VERIFICATION_SOP_CLASS), context(3, STUDY_ROOT_FIND)]
    async with serving() as server, raw_connection(server) as peer:
        await peer.associate(contexts)
        sent_at = time.monotonic()
        await peer.send(encode_pdu(PDataTF((PDV(1, True, True, make()),))))
        await expect_abort_at_once(peer, sent_at, NOT_SPECIFIED)


def _files(folder: Path) -> list[Path]:
    """Everything in ``folder``, temporary files included."""
    return sorted(folder.iterdir())


def _scp_saving_to(folder: Path, *, streaming: bool, calls: list[str]) -> AE:
    scp = AE("ANY-SCP", acse_timeout=SLOW, network_timeout=SLOW, dimse_timeout=SLOW)
    scp.add_supported_context(CT_IMAGE_STORAGE, EXPLICIT)

    @scp.on_store(streaming=streaming)
    async def save(request: StoreRequest) -> int:
        calls.append(request.sop_instance_uid)
        await request.save_to(folder)
        return 0x0000

    return scp


def _ct_bytes(sop_instance: str) -> bytes:
    ds = make_ct(32, 32, seed=7)
    ds.SOPInstanceUID = sop_instance
    return encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("command_uid", "status"),
    [(None, 0x0117), ("1.2.826.0.1.99", 0xA900)],
    ids=["no-instance-uid", "uids-disagree"],
)
async def test_store_command_and_data_set_disagree(
    tmp_path: Path, streaming: bool, command_uid: str | None, status: int
) -> None:
    """C-STORE without Affected SOP Instance UID: 0x0117; with one the data set does not
    carry: 0xA900. Nothing is written, not even a temporary file; the association goes
    on."""
    folder = tmp_path / "in"
    folder.mkdir()
    calls: list[str] = []
    scp = _scp_saving_to(folder, streaming=streaming, calls=calls)
    data = _ct_bytes("1.2.826.0.1.42")
    async with serving(scp=scp) as server, raw_connection(server) as peer:
        await peer.associate([context(1, VERIFICATION_SOP_CLASS), context(3, CT_IMAGE_STORAGE)])
        await peer.send_message(3, store_command(command_uid), data)
        assert await status_of(peer, CommandField.C_STORE_RSP) == status
        assert _files(folder) == []
        await peer.send(echo_pdata())
        assert await status_of(peer, CommandField.C_ECHO_RSP) == 0
    assert calls == [command_uid or ""]


# =========================================================================== user identity


def _identity_request(passcode_length: int) -> AAssociateRQ:
    identity = UserIdentityRQ(2, False, b"mallory", b"p" * passcode_length)
    info = UserInformation(
        maximum_length=16384, implementation_class_uid="1.2.3.4", user_identity=identity
    )
    return association_request(user_information=info)


async def test_huge_passcode_reaches_the_identity_handler_which_rejects() -> None:
    """A 60,000-byte passcode is decoded, handed to the identity handler and, rejected
    there, answered A-ASSOCIATE-RJ (permanent, service user, no reason) at once."""
    scp = AE("ANY-SCP", acse_timeout=SLOW, network_timeout=SLOW, dimse_timeout=SLOW)
    seen: list[int] = []

    @scp.on_user_identity
    async def check(identity: UserIdentity, request: AAssociateRQ) -> bool:
        seen.append(len(identity.secondary))
        return len(identity.secondary) <= 1024

    async with serving(scp=scp) as server, raw_connection(server) as peer:
        sent_at = time.monotonic()
        await peer.send(encode_pdu(_identity_request(60_000)))
        assert_reject(await peer.next_pdu(), PERMANENT, SERVICE_USER, NO_REASON)
        assert time.monotonic() - sent_at < SLOW / 2
    assert seen == [60_000]


async def test_huge_passcode_without_identity_handler_is_ignored() -> None:
    """Without an identity handler the (optional) identity is not checked: accepted,
    and no identity answer is sent back."""
    async with serving() as server, raw_connection(server) as peer:
        await peer.send(encode_pdu(_identity_request(60_000)))
        reply = await peer.next_pdu()
        assert isinstance(reply, AAssociateAC)
        assert reply.user_information.user_identity is None
        await peer.send(echo_pdata())
        assert await status_of(peer, CommandField.C_ECHO_RSP) == 0


# =========================================================================== slowloris


async def test_slowloris_before_the_association_is_cut_by_artim() -> None:
    """An A-ASSOCIATE-RQ trickled a byte at a time, each within the timer: ARTIM ends
    the wait for the whole request; no association existed, so the connection is just
    closed (Table 9-10 Sta2/Evt18, AA-2). Others are served meanwhile."""
    request = encode_pdu(association_request())
    async with serving(FAST) as server, raw_connection(server) as peer:
        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(peer.send_slowly, request, FAST * 0.4)
            await echo_ok(server)
            await expect_closed(peer, FAST + SLACK)
            tg.cancel_scope.cancel()
        assert time.monotonic() - started < FAST + SLACK


@pytest.mark.parametrize("how", ["bytes-of-one-pdu", "one-byte-pdus"])
async def test_slowloris_during_p_data_is_cut_by_the_network_timeout(how: str) -> None:
    """On an association, a C-ECHO-RQ trickled a byte at a time (within one PDU, or one
    tiny PDU per byte), each within the network timeout: the timeout bounds the whole
    stall, A-ABORT (2, 0). Others are served meanwhile."""
    encoded = encode_command(echo_command())
    if how == "bytes-of-one-pdu":
        trickle = echo_pdata()
    else:
        trickle = b"".join(
            encode_pdu(
                PDataTF((PDV(1, True, index == len(encoded) - 1, encoded[index : index + 1]),))
            )
            for index in range(len(encoded))
        )
    async with serving(FAST) as server, raw_connection(server) as peer:
        await peer.associate()
        started = time.monotonic()
        async with anyio.create_task_group() as tg:

            async def trickle_slowly() -> None:
                if how == "bytes-of-one-pdu":
                    await peer.send_slowly(trickle, FAST * 0.4)
                else:
                    for index in range(0, len(trickle), 13):  # one 13-byte PDU at a time
                        await peer.send(trickle[index : index + 13])
                        await anyio.sleep(FAST * 0.4)

            tg.start_soon(trickle_slowly)
            await echo_ok(server)
            assert_abort(await peer.next_pdu(FAST * 2 + SLACK), NOT_SPECIFIED)
            tg.cancel_scope.cancel()
        assert time.monotonic() - started < FAST * 2 + SLACK
        await expect_closed(peer, FAST + SLACK)


# =========================================================================== silent readers


def _big_match(number: int) -> Dataset:
    match = Dataset()
    match.QueryRetrieveLevel = "STUDY"
    match.StudyInstanceUID = f"1.2.826.0.1.{number}"
    match.add_new(0x00090010, "LO", "HOSTILE")
    match.add_new(0x00091001, "OB", bytes(64 * 1024))
    return match


async def test_peer_that_never_reads_c_find_responses_is_given_up() -> None:
    """The peer asks for matches and never reads: the writes block, the network timeout
    ends the association; the handler is stopped, having made a bounded number of
    matches; others are served meanwhile."""
    scp = AE("ANY-SCP", acse_timeout=FAST, network_timeout=FAST, dimse_timeout=FAST)
    scp.add_supported_context(STUDY_ROOT_FIND, EXPLICIT)
    made = 0
    stopped = anyio.Event()

    @scp.on_find
    async def endless(request: FindRequest) -> AsyncIterator[Dataset]:
        nonlocal made
        try:
            while True:
                made += 1
                yield _big_match(made)
        finally:
            stopped.set()

    async with serving(scp=scp) as server, raw_connection(server) as peer:
        await peer.associate([context(1, VERIFICATION_SOP_CLASS), context(3, STUDY_ROOT_FIND)])
        identifier = encode_dataset(study_query(), EXPLICIT_VR_LITTLE_ENDIAN)
        await peer.send_message(
            3, query_command(CommandField.C_FIND_RQ, STUDY_ROOT_FIND), identifier
        )
        await echo_ok(server)  # while our writes to the silent peer block
        with anyio.fail_after(4 * FAST + SLACK):
            await stopped.wait()
        assert made * 64 * 1024 < 64 * 1024 * 1024  # bounded by the socket buffers
        await eventually(lambda: len(server.associations) == 0, 2 * FAST + SLACK)


def _get_scp(instances: int, stopped: anyio.Event, made: list[int], size: int = 256) -> AE:
    scp = AE("ANY-SCP", acse_timeout=FAST, network_timeout=FAST, dimse_timeout=FAST)
    for each in query_retrieve_contexts([STUDY_ROOT_GET, STUDY_ROOT_MOVE], EXPLICIT):
        scp.supported_contexts.append(each)
    scp.supported_contexts.extend(retrieve_storage_contexts([CT_IMAGE_STORAGE], EXPLICIT))
    ct = make_ct(size, size, seed=3)

    async def instances_of(request: GetRequest | MoveRequest) -> AsyncIterator[Any]:
        try:
            yield instances
            for _ in range(instances):
                made.append(1)
                ds = copy.deepcopy(ct)  # a shallow copy would share the UID element
                ds.SOPInstanceUID = generate_uid()
                yield ds
        finally:
            stopped.set()

    scp.on_get(instances_of)
    scp.on_move(instances_of)
    return scp


GET_CONTEXTS = [
    context(1, VERIFICATION_SOP_CLASS),
    context(3, STUDY_ROOT_GET),
    context(5, CT_IMAGE_STORAGE),
]
GET_ROLES = UserInformation(
    maximum_length=16384,
    implementation_class_uid="1.2.3.4",
    role_selections=(RoleSelection(CT_IMAGE_STORAGE, False, True),),
)


async def test_peer_that_never_reads_c_get_sub_operations_is_given_up() -> None:
    """C-GET whose requestor never reads the C-STORE sub-operations (8 MiB each, more
    than the socket buffers take): the write blocks, the network timeout ends the
    association; the handler is stopped at once; others are served meanwhile."""
    stopped = anyio.Event()
    made: list[int] = []
    scp = _get_scp(1000, stopped, made, size=2048)
    async with serving(scp=scp) as server, raw_connection(server) as peer:
        accepted = await peer.associate(GET_CONTEXTS, user_information=GET_ROLES)
        assert [c.result for c in accepted.presentation_contexts] == [0, 0, 0]
        identifier = encode_dataset(study_query(), EXPLICIT_VR_LITTLE_ENDIAN)
        await peer.send_message(3, query_command(CommandField.C_GET_RQ, STUDY_ROOT_GET), identifier)
        await echo_ok(server)
        with anyio.fail_after(4 * FAST + SLACK):
            await stopped.wait()
        assert len(made) == 1  # the first sub-operation never got out
        await eventually(lambda: len(server.associations) == 0, 2 * FAST + SLACK)


# =========================================================================== killed peers


async def test_peer_killed_in_mid_c_get() -> None:
    """The C-GET requestor is killed (TCP reset) after the first sub-operation arrived:
    the association ends, the handler is stopped, nothing is logged as an error."""
    stopped = anyio.Event()
    made: list[int] = []
    scp = _get_scp(50, stopped, made)
    async with serving(scp=scp) as server, raw_connection(server) as peer:
        await peer.associate(GET_CONTEXTS, user_information=GET_ROLES)
        identifier = encode_dataset(study_query(), EXPLICIT_VR_LITTLE_ENDIAN)
        await peer.send_message(3, query_command(CommandField.C_GET_RQ, STUDY_ROOT_GET), identifier)
        first = await peer.next_pdu()
        assert isinstance(first, PDataTF)
        assert first.pdvs[0].context_id == 5  # a C-STORE sub-operation is under way
        await peer.kill()
        with anyio.fail_after(2 * FAST + SLACK):
            await stopped.wait()
        await eventually(lambda: len(server.associations) == 0, 2 * FAST + SLACK)
    assert len(made) < 50


async def test_peer_killed_in_mid_c_move(tmp_path: Path) -> None:
    """The C-MOVE requestor is killed after the first Pending response: the handler is
    stopped, the association to the destination ends, and the destination holds only
    complete files (no partial or temporary ones)."""
    stopped = anyio.Event()
    made: list[int] = []
    scp = _get_scp(50, stopped, made)
    destination = AE("DEST", acse_timeout=FAST, network_timeout=FAST, dimse_timeout=FAST)
    destination.add_supported_context(CT_IMAGE_STORAGE, EXPLICIT)
    stored: list[Path] = []

    @destination.on_store(streaming=True)
    async def save(request: StoreRequest) -> int:
        stored.append(await request.save_to(tmp_path))
        return 0x0000

    move_contexts = [context(1, VERIFICATION_SOP_CLASS), context(3, STUDY_ROOT_MOVE)]
    async with destination.serve(HOST, 0) as dest_server:
        scp.known_aes = {"DEST": (HOST, dest_server.port)}
        async with serving(scp=scp) as server, raw_connection(server) as peer:
            await peer.associate(move_contexts)
            identifier = encode_dataset(study_query(), EXPLICIT_VR_LITTLE_ENDIAN)
            move = query_command(CommandField.C_MOVE_RQ, STUDY_ROOT_MOVE, MoveDestination="DEST")
            await peer.send_message(3, move, identifier)
            pending = await peer.receive_message(timeout=SLOW + SLACK)
            assert pending.command["Status"] == 0xFF00
            await peer.kill()
            with anyio.fail_after(2 * FAST + SLACK):
                await stopped.wait()
            await eventually(lambda: len(server.associations) == 0, 2 * FAST + SLACK)
        await wait_until_drained(dest_server, 2 * FAST + SLACK)
    files = _files(tmp_path)
    assert len(files) < 50  # the move stopped early
    assert files == sorted(stored)
    assert len(set(stored)) == len(stored)
    for path in files:
        assert path.suffix == ".dcm"
        assert path.stat().st_size > 32 * 32 * 2


# =========================================================================== idle crowds


def _open_idle(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection((HOST, port)) for _ in range(count)]


def _wait_closed(sockets: list[socket.socket], within: float) -> tuple[int, list[bytes]]:
    """(connections closed by the server, data any of them received) within ``within`` s."""
    closed = 0
    received: list[bytes] = []
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while closed < len(sockets) and time.monotonic() < deadline:
            for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(64)
                except ConnectionResetError:
                    data = b""
                if data:
                    received.append(data)
                selector.unregister(sock)
                closed += 1
    return closed, received


async def test_two_thousand_silent_connections() -> None:
    """2,000 connections that send nothing: at most ``maximum_pending_connections`` wait
    at a time; once the limit has held for a while, each newcomer takes the place of the
    oldest silent one, so a real client is served in the middle of the flood; none of
    them is sent a byte and all are closed in the end."""
    count, limit, timer = 2000, 100, 1.0
    async with serving(timer, maximum_pending_connections=limit) as server:
        highest = 0

        async def watch() -> None:
            nonlocal highest
            while True:
                highest = max(highest, server.pending_connections)
                await anyio.sleep(0.005)

        sockets: list[socket.socket] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                sockets = await anyio.to_thread.run_sync(_open_idle, server.port, count // 2)
                # Every one of them accepted (pending) or turned away...
                handled = lambda: (  # noqa: E731
                    server.pending_connections
                    + server.refused_connections
                    + server.evicted_connections
                    >= count // 2
                )
                await eventually(handled, timer + PENDING_CAP_WAIT + SLACK)
                # ...and once the pending ones have been silent long enough, a real
                # client takes the place of the oldest, in the middle of the flood.
                await anyio.sleep(PENDING_CAP_WAIT + 0.1)
                await echo_ok(server)
                sockets += await anyio.to_thread.run_sync(_open_idle, server.port, count // 2)
                closed, received = await anyio.to_thread.run_sync(
                    _wait_closed, sockets, 2 * timer + PENDING_CAP_WAIT + SLACK
                )
                tg.cancel_scope.cancel()
        finally:
            for sock in sockets:
                sock.close()
        assert received == []
        assert closed == count
        assert highest <= limit
        assert server.evicted_connections + server.refused_connections >= count // 2


# =========================================================================== data sets


@cache
def _deflate_bomb() -> bytes:
    """A Deflated CT data set whose 64 MiB of zeros compress to some 64 KiB."""
    ds = make_ct(8, 8, seed=9)
    ds.SOPInstanceUID = "1.2.826.0.1.77"
    ds.add_new(0x00091001, "OB", bytes(64 * 1024 * 1024))
    ds.add_new(0x00090010, "LO", "HOSTILE")
    raw = encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(raw) + compressor.flush()
    return bomb + b"\x00" * (len(bomb) % 2)


def _nested(depth: int, defined: bool) -> bytes:
    """(0040,A730) Content Sequence items nested ``depth`` deep, Explicit VR LE."""
    inner = b""
    for _ in range(depth):
        if defined:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
            inner = struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, len(item)) + item
        else:
            item = (
                struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
                + inner
                + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
            )
            inner = (
                struct.pack("<HH2sHL", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
                + item
                + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
            )
    return inner


def _deep_ct(defined: bool) -> bytes:
    return _ct_bytes("1.2.826.0.1.78") + _nested(300, defined)


def _scp_decoding(**settings: Any) -> tuple[AE, list[str]]:
    """An SCP whose store and find handlers decode what they get (``request.dataset``,
    ``request.identifier``)."""
    scp = AE("ANY-SCP", acse_timeout=SLOW, network_timeout=SLOW, dimse_timeout=SLOW, **settings)
    syntaxes = (EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
    scp.add_supported_context(CT_IMAGE_STORAGE, syntaxes)
    scp.add_supported_context(STUDY_ROOT_FIND, syntaxes)
    calls: list[str] = []

    @scp.on_store
    async def decode(request: StoreRequest) -> int:
        calls.append("store")
        return 0x0000 if request.dataset.SOPInstanceUID else 0xC000

    @scp.on_find
    async def find(request: FindRequest) -> AsyncIterator[Dataset]:
        calls.append("find")
        yield request.identifier

    return scp, calls


def _find_contexts(syntax: str) -> list[PresentationContextRQ]:
    return [
        context(1, VERIFICATION_SOP_CLASS),
        context(3, CT_IMAGE_STORAGE, syntax),
        context(5, STUDY_ROOT_FIND, syntax),
    ]


async def test_deflate_bomb_in_c_store_is_refused_out_of_resources() -> None:
    """A Deflated data set inflating past ``maximum_dataset_size``: the handler's decode
    stops at the limit and the service answers 0xA700 (Refused: Out of Resources)."""
    scp, calls = _scp_decoding(maximum_dataset_size=1024 * 1024)
    bomb = _deflate_bomb()
    assert len(bomb) < 1024 * 1024  # it passes the limit on received bytes
    async with serving(scp=scp) as server, raw_connection(server) as peer:
        await peer.associate(_find_contexts(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN))
        await peer.send_message(3, store_command("1.2.826.0.1.77"), bomb)
        assert await status_of(peer, CommandField.C_STORE_RSP) == 0xA700
        await peer.send(echo_pdata())
        assert await status_of(peer, CommandField.C_ECHO_RSP) == 0
    assert calls == ["store"]


async def test_deflate_bomb_in_c_find_is_refused_before_the_handler() -> None:
    """A Deflated C-FIND identifier inflating past the limit: 0xA700, handler not called."""
    scp, calls = _scp_decoding(maximum_dataset_size=1024 * 1024)
    async with serving(scp=scp) as server, raw_connection(server) as peer:
        await peer.associate(_find_contexts(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN))
        find = query_command(CommandField.C_FIND_RQ, STUDY_ROOT_FIND)
        await peer.send_message(5, find, _deflate_bomb())
        assert await status_of(peer, CommandField.C_FIND_RSP) == 0xA700
    assert calls == []


@pytest.mark.parametrize("defined", [False, True], ids=["undefined-length", "defined-length"])
async def test_300_deep_sequence_in_c_store_is_not_understood(defined: bool) -> None:
    """A data set with sequences nested 300 deep: decoding refuses it before pydicom
    recurses (no RecursionError anywhere): 0xC211, in "Error: Cannot understand"."""
    scp, calls = _scp_decoding()
    async with serving(scp=scp) as server, raw_connection(server) as peer:
        await peer.associate(_find_contexts(EXPLICIT_VR_LITTLE_ENDIAN))
        await peer.send_message(3, store_command("1.2.826.0.1.78"), _deep_ct(defined))
        assert await status_of(peer, CommandField.C_STORE_RSP) == 0xC211
        await peer.send(echo_pdata())
        assert await status_of(peer, CommandField.C_ECHO_RSP) == 0
    assert calls == ["store"]


@pytest.mark.parametrize("defined", [False, True], ids=["undefined-length", "defined-length"])
async def test_300_deep_sequence_in_c_find_is_refused_before_the_handler(defined: bool) -> None:
    """The same nesting in a C-FIND identifier: 0xC310 (unable to process), handler not
    called, association fine."""
    scp, calls = _scp_decoding()
    query = encode_dataset(study_query(), EXPLICIT_VR_LITTLE_ENDIAN) + _nested(300, defined)
    async with serving(scp=scp) as server, raw_connection(server) as peer:
        await peer.associate(_find_contexts(EXPLICIT_VR_LITTLE_ENDIAN))
        await peer.send_message(5, query_command(CommandField.C_FIND_RQ, STUDY_ROOT_FIND), query)
        assert await status_of(peer, CommandField.C_FIND_RSP) == 0xC310
        await peer.send(echo_pdata())
        assert await status_of(peer, CommandField.C_ECHO_RSP) == 0
    assert calls == []
