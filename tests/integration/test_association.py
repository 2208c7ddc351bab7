"""Ours <-> ours (and DCMTK) over real TCP on 127.0.0.1.

Negotiation, release and abort from either side, rejections, user identity, roles,
PDU sizes, every timeout, cancellation, server shutdown and DCMTK interop. Scripted
raw-socket peers stand in where a well-behaved peer cannot produce the situation.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute

from aionetdicom import (
    AE,
    ACSETimeout,
    Association,
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    ConnectionClosed,
    ConnectTimeout,
    DIMSETimeout,
    NegotiationError,
    Server,
    UserIdentity,
)
from aionetdicom.ae import DEFAULT_SEND_CAP
from aionetdicom.contexts import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION,
    VERIFICATION_SOP_CLASS,
    PresentationContext,
)
from aionetdicom.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    AsynchronousOperationsWindow,
    PDataTF,
    PDUReader,
    PresentationContextAC,
    RoleSelection,
    UserIdentityAC,
    UserIdentityType,
    UserInformation,
    encode_pdu,
)
from aionetdicom.pdu.constants import PresentationContextResult
from aionetdicom.ul import events as ul
from aionetdicom.ul.connection import Role, ULConnection
from aionetdicom.ul.fsm import State

# Marked here as well as by tests/conftest.py: the conftest marks tests only after
# collection, too late for anyio to combine its backend parameter with parametrize.


HOST = "127.0.0.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def make_scp(title: str = "ANY-SCP", **settings: object) -> AE:
    """An SCP AE with timeouts small enough for tests (overridable)."""
    defaults: dict[str, object] = {
        "acse_timeout": 2.0,
        "dimse_timeout": 2.0,
        "network_timeout": 5.0,
    }
    defaults.update(settings)
    return AE(title, **defaults)  # type: ignore[arg-type]


def make_scu(title: str = "TEST-SCU", **settings: object) -> AE:
    """An SCU AE with timeouts small enough for tests (overridable)."""
    defaults: dict[str, object] = {
        "acse_timeout": 2.0,
        "dimse_timeout": 2.0,
        "network_timeout": 5.0,
        "connect_timeout": 2.0,
    }
    defaults.update(settings)
    return AE(title, **defaults)  # type: ignore[arg-type]


def server_side(server: Server) -> Association:
    """The one association the server holds right now."""
    (assoc,) = server.associations
    return assoc


async def wait_closed(assoc: Association, timeout: float = 2.0) -> None:
    with anyio.fail_after(timeout):
        await assoc.wait_closed()


# --------------------------------------------------------------------------- fake peers


def accept_all(request: AAssociateRQ, maximum_length: int = 16384) -> AAssociateAC:
    """An A-ASSOCIATE-AC accepting every proposed context with its first transfer syntax."""
    return AAssociateAC(
        called_ae_title=request.called_ae_title,
        calling_ae_title=request.calling_ae_title,
        presentation_contexts=tuple(
            PresentationContextAC(pc.context_id, 0, pc.transfer_syntaxes[0])
            for pc in request.presentation_contexts
        ),
        user_information=UserInformation(
            maximum_length=maximum_length, implementation_class_uid="1.2.3.4.5.6"
        ),
    )


class FakeSCP:
    """A raw-socket SCP that records every PDU and answers only what it is told to.

    It never answers a P-DATA-TF (so DIMSE requests hang); it accepts the association
    when ``answer_associate`` and answers A-RELEASE-RQ when ``answer_release``.
    """

    def __init__(self, *, answer_associate: bool = True, answer_release: bool = True) -> None:
        self.answer_associate = answer_associate
        self.answer_release = answer_release
        self.received: list[PDU] = []
        self.got_request = anyio.Event()
        self.got_pdata = anyio.Event()
        self.got_release = anyio.Event()
        self.got_abort = anyio.Event()
        self.disconnected = anyio.Event()
        self.port = 0

    async def handle(self, stream: ByteStream) -> None:
        reader = PDUReader(1 << 24)
        async with stream:
            try:
                while True:
                    reader.feed(await stream.receive())
                    while (pdu := reader.next_pdu()) is not None:
                        await self._on_pdu(stream, pdu)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
            finally:
                self.disconnected.set()

    async def _on_pdu(self, stream: ByteStream, pdu: PDU) -> None:
        self.received.append(pdu)
        if isinstance(pdu, AAssociateRQ):
            self.got_request.set()
            if self.answer_associate:
                await stream.send(encode_pdu(accept_all(pdu)))
        elif isinstance(pdu, PDataTF):
            self.got_pdata.set()
        elif isinstance(pdu, AReleaseRQ):
            self.got_release.set()
            if self.answer_release:
                await stream.send(encode_pdu(AReleaseRP()))
        elif isinstance(pdu, AAbort):
            self.got_abort.set()

    def aborts(self) -> list[AAbort]:
        return [pdu for pdu in self.received if isinstance(pdu, AAbort)]


@asynccontextmanager
async def fake_scp(**behaviour: bool) -> AsyncIterator[FakeSCP]:
    peer = FakeSCP(**behaviour)
    listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    peer.port = listener.extra(SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, peer.handle)
        try:
            yield peer
        finally:
            tg.cancel_scope.cancel()
    await listener.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose listen queue is full, so a new connect neither succeeds nor fails."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind((HOST, 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect((HOST, port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --------------------------------------------------------------------------- echo basics


async def test_echo_success_and_association_details() -> None:
    async with make_scp().serve(HOST, 0) as server:
        async with make_scu("ECHO-SCU").associate(HOST, server.port) as assoc:
            status = await assoc.echo()
            assert status == 0x0000
            assert status.is_success
            assert assoc.is_requestor
            assert assoc.is_established
            assert assoc.state is State.STA6
            assert assoc.peer_ae_title == "ANY-SCP"
            assert assoc.local_ae_title == "ECHO-SCU"
            assert assoc.peer_implementation_class_uid == make_scp().implementation_class_uid
            assert assoc.peer_implementation_version_name == "AIONETDICOM_010"
            (context,) = assoc.accepted_contexts
            assert context.context_id == 1
            assert context.abstract_syntax == VERIFICATION_SOP_CLASS
            assert context.transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
            assert (context.scu_role, context.scp_role) == (True, False)

            scp_side = server_side(server)
            assert not scp_side.is_requestor
            assert scp_side.peer_ae_title == "ECHO-SCU"
            assert scp_side.local_ae_title == "ANY-SCP"
            assert scp_side.peer_implementation_class_uid == assoc.ae.implementation_class_uid
            assert scp_side.accepted_contexts == assoc.accepted_contexts
            assert server.active_associations == 1
        assert assoc.state is State.STA1
        assert not assoc.is_established


async def test_several_echoes_on_one_association() -> None:
    seen: list[int] = []
    scp = make_scp()

    @scp.on_echo
    async def on_echo(request: object) -> int:
        seen.append(request.message_id)  # type: ignore[attr-defined]
        return 0x0000

    async with scp.serve(HOST, 0) as server, make_scu().associate(HOST, server.port) as assoc:
        statuses = [await assoc.echo() for _ in range(5)]
    assert statuses == [0] * 5
    assert len(seen) == 5
    assert len(set(seen)) == 5  # a fresh Message ID each time


async def test_echo_handler_status_reaches_the_scu() -> None:
    scp = make_scp()

    @scp.on_echo
    async def on_echo(request: object) -> int:
        return 0x0110

    async with scp.serve(HOST, 0) as server, make_scu().associate(HOST, server.port) as assoc:
        status = await assoc.echo()
    assert status == 0x0110
    assert not status.is_success


# --------------------------------------------------------------------------- release


async def test_release_by_scu_closes_both_sides_without_abort() -> None:
    async with make_scp().serve(HOST, 0) as server:
        async with make_scu().associate(HOST, server.port) as assoc:
            scp_side = server_side(server)
            assert await assoc.echo() == 0
        assert assoc.state is State.STA1
        await wait_closed(scp_side)
        assert scp_side.state is State.STA1
        assert scp_side.abort_reason is None
        assert assoc.abort_reason is None
        assert server.active_associations == 0


async def test_release_by_scp() -> None:
    async with make_scp().serve(HOST, 0) as server:
        started = time.monotonic()
        async with make_scu().associate(HOST, server.port) as assoc:
            scp_side = server_side(server)
            assert await assoc.echo() == 0
            with anyio.fail_after(2):
                await scp_side.release()
            await wait_closed(assoc)
            assert scp_side.state is State.STA1
            assert assoc.state is State.STA1
            assert assoc.abort_reason is None
            assert scp_side.abort_reason is None
            with pytest.raises(AssociationError, match="released"):
                await assoc.echo()
        assert time.monotonic() - started < 2  # leaving the block did not wait for a timer


async def test_release_requested_from_the_scp_echo_handler() -> None:
    scp = make_scp()
    async with anyio.create_task_group() as tg:

        @scp.on_echo
        async def on_echo(request: object) -> int:
            tg.start_soon(request.assoc.release)  # type: ignore[attr-defined]
            return 0x0000

        async with (
            scp.serve(HOST, 0) as server,
            make_scu().associate(HOST, server.port) as assoc,
        ):
            assert await assoc.echo() == 0
            await wait_closed(assoc)
            assert assoc.abort_reason is None
            with pytest.raises(AssociationError):
                await assoc.echo()


async def test_release_collision_completes_on_both_sides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collisions: list[Role] = []
    receive_data = ULConnection.receive_data

    def spy(self: ULConnection, data: bytes) -> list[ul.ULEvent]:
        events = receive_data(self, data)
        collisions.extend(
            self.role for e in events if isinstance(e, ul.ReleaseRequested) and e.collision
        )
        return events

    monkeypatch.setattr(ULConnection, "receive_data", spy)
    acse_timeout = 1.5
    async with make_scp(acse_timeout=acse_timeout).serve(HOST, 0) as server:
        async with make_scu(acse_timeout=acse_timeout).associate(HOST, server.port) as assoc:
            scp_side = server_side(server)
            assert await assoc.echo() == 0
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(scp_side.release)
                tg.start_soon(assoc.release)
            elapsed = time.monotonic() - started
        await wait_closed(scp_side)
    assert sorted(collisions, key=lambda r: r.value) == [Role.ACCEPTOR, Role.REQUESTOR]
    assert elapsed < acse_timeout  # neither side fell back to abort on the ACSE timer
    assert assoc.state is State.STA1
    assert scp_side.state is State.STA1
    assert assoc.abort_reason is None
    assert scp_side.abort_reason is None


# --------------------------------------------------------------------------- abort


async def test_abort_by_scu_is_recorded_by_the_server() -> None:
    async with make_scp().serve(HOST, 0) as server:
        async with make_scu().associate(HOST, server.port) as assoc:
            scp_side = server_side(server)
            assert await assoc.echo() == 0
            await assoc.abort()
            assert assoc.state is State.STA1
            await wait_closed(scp_side)
            reason = scp_side.abort_reason
            assert isinstance(reason, AssociationAborted)
            assert reason.source == 0
            assert "received from the peer" in str(reason)
            with pytest.raises(AssociationAborted):
                await assoc.echo()
        # the server goes on serving
        async with make_scu().associate(HOST, server.port) as again:
            assert await again.echo() == 0


async def test_abort_by_scp_fails_the_next_echo() -> None:
    async with make_scp().serve(HOST, 0) as server:
        started = time.monotonic()
        async with make_scu().associate(HOST, server.port) as assoc:
            scp_side = server_side(server)
            assert await assoc.echo() == 0
            await scp_side.abort()
            with pytest.raises(AssociationAborted) as caught:
                await assoc.echo()
            assert caught.value.source == 0
            assert assoc.abort_reason is caught.value
        assert time.monotonic() - started < 1.5  # leaving the block did not hang
        assert assoc.state is State.STA1


# --------------------------------------------------------------------------- rejection


async def test_reject_wrong_called_ae_title() -> None:
    async with make_scp(require_called_ae_title=True).serve(HOST, 0) as server:
        with pytest.raises(AssociationRejected) as caught:
            async with make_scu().associate(HOST, server.port, called_ae_title="WRONG"):
                pytest.fail("the association should have been rejected")
        assert (caught.value.result, caught.value.source, caught.value.reason) == (1, 1, 7)
        assert "called-AE-title-not-recognized" in str(caught.value)
        async with make_scu().associate(HOST, server.port, called_ae_title="ANY-SCP") as assoc:
            assert await assoc.echo() == 0


async def test_reject_calling_ae_title_not_allowed() -> None:
    scp = make_scp(allowed_calling_ae_titles=["FRIEND"])
    async with scp.serve(HOST, 0) as server:
        with pytest.raises(AssociationRejected) as caught:
            async with make_scu("STRANGER").associate(HOST, server.port):
                pytest.fail("the association should have been rejected")
        assert (caught.value.result, caught.value.source, caught.value.reason) == (1, 1, 3)
        assert "calling-AE-title-not-recognized" in str(caught.value)
        async with make_scu("FRIEND").associate(HOST, server.port) as assoc:
            assert await assoc.echo() == 0


async def test_maximum_associations_rejects_then_recovers() -> None:
    async with make_scp(maximum_associations=1).serve(HOST, 0) as server:
        async with make_scu().associate(HOST, server.port) as first:
            with pytest.raises(AssociationRejected) as caught:
                async with make_scu().associate(HOST, server.port):
                    pytest.fail("the second association should have been rejected")
            assert (caught.value.result, caught.value.source, caught.value.reason) == (2, 3, 2)
            assert "local-limit-exceeded" in str(caught.value)
            assert await first.echo() == 0  # the first one is unharmed
        async with make_scu().associate(HOST, server.port) as second:
            assert await second.echo() == 0


async def test_unsupported_abstract_syntax_is_rejected_per_context() -> None:
    async with make_scp().serve(HOST, 0) as server:
        ct_only = (PresentationContext(CT_IMAGE_STORAGE),)
        async with make_scu().associate(HOST, server.port, contexts=ct_only) as assoc:
            (context,) = assoc.contexts
            assert context.result == PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
            assert int(context.result) == 3
            assert not context.accepted
            assert assoc.accepted_contexts == ()
            with pytest.raises(NegotiationError, match="no presentation context"):
                await assoc.echo()
            with pytest.raises(NegotiationError, match="ABSTRACT_SYNTAX_NOT_SUPPORTED"):
                assoc.context_for(CT_IMAGE_STORAGE)
        both = (*ct_only, *VERIFICATION)
        async with make_scu().associate(HOST, server.port, contexts=both) as assoc:
            assert [c.accepted for c in assoc.contexts] == [False, True]
            assert await assoc.echo() == 0


async def test_unsupported_transfer_syntax_is_rejected_per_context() -> None:
    scp = make_scp(
        supported_contexts=[
            PresentationContext(VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN,))
        ]
    )
    async with scp.serve(HOST, 0) as server:
        explicit_only = (PresentationContext(VERIFICATION_SOP_CLASS, (EXPLICIT_VR_LITTLE_ENDIAN,)),)
        async with make_scu().associate(HOST, server.port, contexts=explicit_only) as assoc:
            (context,) = assoc.contexts
            assert context.result == PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED
            with pytest.raises(NegotiationError):
                await assoc.echo()


async def test_scp_transfer_syntax_preference_wins() -> None:
    scp = make_scp(
        supported_contexts=[
            PresentationContext(
                VERIFICATION_SOP_CLASS, (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
            )
        ]
    )
    proposal = (
        PresentationContext(
            VERIFICATION_SOP_CLASS, (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
        ),
    )
    async with (
        scp.serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, contexts=proposal) as assoc,
    ):
        (context,) = assoc.accepted_contexts
        assert context.transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
        assert server_side(server).accepted_contexts[0].transfer_syntax == (
            IMPLICIT_VR_LITTLE_ENDIAN
        )
        assert await assoc.echo() == 0


# --------------------------------------------------------------------------- user identity


def identity_scp(seen: list[UserIdentity]) -> AE:
    scp = make_scp()

    @scp.on_user_identity
    async def check(identity: UserIdentity, request: AAssociateRQ) -> object:
        seen.append(identity)
        assert request.calling_ae_title == "TEST-SCU"
        if identity.identity_type == UserIdentityType.USERNAME_AND_PASSCODE:
            ok = identity.primary == b"alice" and identity.secondary == b"secret"
            return ok, b"welcome alice"
        return True

    return scp


async def test_user_identity_accepted_with_server_response() -> None:
    seen: list[UserIdentity] = []
    async with identity_scp(seen).serve(HOST, 0) as server:
        login = UserIdentity.username_and_passcode(
            "alice", "secret", positive_response_requested=True
        )
        async with make_scu().associate(HOST, server.port, user_identity=login) as assoc:
            assert assoc.response is not None
            assert assoc.response.user_information.user_identity == UserIdentityAC(b"welcome alice")
            assert await assoc.echo() == 0
        # no positive response asked for: none given
        quiet = UserIdentity.username_and_passcode("alice", "secret")
        async with make_scu().associate(HOST, server.port, user_identity=quiet) as assoc:
            assert assoc.response is not None
            assert assoc.response.user_information.user_identity is None
    assert [(i.primary, i.secondary) for i in seen] == [(b"alice", b"secret")] * 2
    assert seen[0].positive_response_requested
    assert not seen[1].positive_response_requested


async def test_user_identity_wrong_passcode_is_rejected() -> None:
    seen: list[UserIdentity] = []
    async with identity_scp(seen).serve(HOST, 0) as server:
        login = UserIdentity.username_and_passcode(
            "alice", "guess", positive_response_requested=True
        )
        with pytest.raises(AssociationRejected) as caught:
            async with make_scu().associate(HOST, server.port, user_identity=login):
                pytest.fail("the association should have been rejected")
    assert (caught.value.result, caught.value.source, caught.value.reason) == (1, 1, 1)
    assert [i.secondary for i in seen] == [b"guess"]


@pytest.mark.parametrize(
    ("identity", "kind", "primary"),
    [
        pytest.param(
            UserIdentity.kerberos(b"\x60\x82ticket\x00\xff"),
            UserIdentityType.KERBEROS,
            b"\x60\x82ticket\x00\xff",
            id="kerberos",
        ),
        pytest.param(
            UserIdentity.saml("<saml:Assertion/>"),
            UserIdentityType.SAML,
            b"<saml:Assertion/>",
            id="saml",
        ),
        pytest.param(
            UserIdentity.jwt("eyJhbGciOi.eyJzdWIi.c2ln"),
            UserIdentityType.JWT,
            b"eyJhbGciOi.eyJzdWIi.c2ln",
            id="jwt",
        ),
        pytest.param(UserIdentity.username("bob"), UserIdentityType.USERNAME, b"bob", id="user"),
    ],
)
async def test_user_identity_types_reach_the_hook(
    identity: UserIdentity, kind: UserIdentityType, primary: bytes
) -> None:
    seen: list[UserIdentity] = []
    async with (
        identity_scp(seen).serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, user_identity=identity) as assoc,
    ):
        assert await assoc.echo() == 0
    (received,) = seen
    assert received.identity_type == kind
    assert received.primary == primary
    assert received.secondary == b""


# --------------------------------------------------------------------------- extended negotiation


async def test_role_selection_visible_on_both_sides() -> None:
    scp = make_scp()
    scp.add_supported_context(CT_IMAGE_STORAGE, scu_role=True, scp_role=True)
    scp.add_supported_context(MR_IMAGE_STORAGE, scu_role=True, scp_role=False)
    proposal = (
        PresentationContext(CT_IMAGE_STORAGE, scu_role=False, scp_role=True),
        PresentationContext(MR_IMAGE_STORAGE, scu_role=True, scp_role=True),
        *VERIFICATION,
    )
    async with (
        scp.serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, contexts=proposal) as assoc,
    ):
        scp_side = server_side(server)
        assert assoc.request is not None
        assert assoc.response is not None
        assert set(assoc.request.user_information.role_selections) == {
            RoleSelection(CT_IMAGE_STORAGE, False, True),
            RoleSelection(MR_IMAGE_STORAGE, True, True),
        }
        assert set(assoc.response.user_information.role_selections) == {
            RoleSelection(CT_IMAGE_STORAGE, False, True),
            RoleSelection(MR_IMAGE_STORAGE, True, False),
        }
        for side in (assoc, scp_side):
            roles = {c.abstract_syntax: (c.scu_role, c.scp_role) for c in side.contexts}
            assert roles == {
                CT_IMAGE_STORAGE: (False, True),
                MR_IMAGE_STORAGE: (True, False),
                VERIFICATION_SOP_CLASS: (True, False),
            }
        assert scp_side.response == assoc.response
        assert await assoc.echo() == 0


async def test_asynchronous_operations_window_negotiation() -> None:
    scp = make_scp(maximum_operations_invoked=2, maximum_operations_performed=4)
    async with scp.serve(HOST, 0) as server:
        async with make_scu().associate(HOST, server.port, operations_window=(5, 3)) as assoc:
            scp_side = server_side(server)
            expected = AsynchronousOperationsWindow(maximum_invoked=4, maximum_performed=2)
            assert assoc.response is not None
            assert scp_side.response is not None
            assert scp_side.request is not None
            assert assoc.response.user_information.asynchronous_operations_window == expected
            assert scp_side.response.user_information.asynchronous_operations_window == expected
            assert scp_side.request.user_information.asynchronous_operations_window == (
                AsynchronousOperationsWindow(5, 3)
            )
            assert await assoc.echo() == 0
        # not proposed: not answered
        async with make_scu().associate(HOST, server.port) as assoc:
            assert assoc.response is not None
            assert assoc.response.user_information.asynchronous_operations_window is None


# --------------------------------------------------------------------------- PDU sizes


@pytest.mark.parametrize(("scu_max", "scp_max"), [(0, 16384), (16384, 0), (0, 0)])
async def test_unlimited_maximum_pdu_length(scu_max: int, scp_max: int) -> None:
    async with make_scp(maximum_pdu_length=scp_max).serve(HOST, 0) as server:
        scu = make_scu(maximum_pdu_length=scu_max)
        async with scu.associate(HOST, server.port) as assoc:
            scp_side = server_side(server)
            assert assoc.response is not None
            assert assoc.response.user_information.maximum_length == scp_max
            assert assoc.send_max_pdu == (scp_max or DEFAULT_SEND_CAP)
            assert scp_side.send_max_pdu == (scu_max or DEFAULT_SEND_CAP)
            for _ in range(3):
                assert await assoc.echo() == 0


@pytest.mark.parametrize("scp_max", [16, 100])
async def test_tiny_scp_maximum_pdu_length_fragments_the_command(
    monkeypatch: pytest.MonkeyPatch, scp_max: int
) -> None:
    received: list[tuple[Role, int]] = []  # (receiving role, PDV data length)
    pdu_sizes: list[int] = []
    receive_data = ULConnection.receive_data

    def spy(self: ULConnection, data: bytes) -> list[ul.ULEvent]:
        events = receive_data(self, data)
        for event in events:
            if isinstance(event, ul.DataReceived):
                pdvs = event.pdata.pdvs
                received.extend((self.role, len(pdv.data)) for pdv in pdvs)
                if self.role is Role.ACCEPTOR:
                    pdu_sizes.append(sum(len(pdv.data) + 6 for pdv in pdvs))
        return events

    monkeypatch.setattr(ULConnection, "receive_data", spy)
    async with (
        make_scp(maximum_pdu_length=scp_max).serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port) as assoc,
    ):
        assert assoc.send_max_pdu == scp_max
        assert await assoc.echo() == 0
        assert await assoc.echo() == 0
    at_scp = [size for role, size in received if role is Role.ACCEPTOR]
    command_length = sum(at_scp) // 2
    assert command_length > 60  # a C-ECHO-RQ command set
    assert len(at_scp) >= 2 * -(-command_length // (scp_max - 6))
    assert max(at_scp) <= scp_max - 6
    assert max(pdu_sizes) <= scp_max
    # the SCU's own limit is large: the response comes back in one PDV
    at_scu = [size for role, size in received if role is Role.REQUESTOR]
    assert len(at_scu) == 2


# --------------------------------------------------------------------------- timeouts


async def test_acse_timeout_when_the_peer_never_answers() -> None:
    async with fake_scp(answer_associate=False) as peer:
        started = time.monotonic()
        with pytest.raises(ACSETimeout, match="ACSE timeout") as caught:
            async with make_scu(acse_timeout=0.5).associate(HOST, peer.port):
                pytest.fail("the association should not have been established")
        elapsed = time.monotonic() - started
        assert isinstance(caught.value, TimeoutError)
        assert 0.45 <= elapsed < 1.5
        assert peer.got_request.is_set()
        with anyio.fail_after(2):
            await peer.disconnected.wait()
        assert [(a.source, a.reason) for a in peer.aborts()] == [(0, 0)]


async def test_connection_refused_is_a_clear_oserror() -> None:
    port = free_port()
    with pytest.raises(ConnectionRefusedError) as caught:
        async with make_scu().associate(HOST, port):
            pytest.fail("nothing listens on the port")
    assert f"{HOST}:{port}" in str(caught.value)
    assert "refused" in str(caught.value).lower()


async def test_connect_timeout() -> None:
    with full_backlog() as port:
        started = time.monotonic()
        with pytest.raises(ConnectTimeout, match="connection timeout") as caught:
            async with make_scu(connect_timeout=0.3).associate(HOST, port):
                pytest.fail("the connection should not have been established")
        assert 0.25 <= time.monotonic() - started < 1.5
    assert isinstance(caught.value, TimeoutError)
    assert f"{HOST}:{port}" in str(caught.value)


async def test_dimse_timeout_aborts_the_association() -> None:
    async with fake_scp() as peer:
        scu = make_scu(dimse_timeout=0.3)
        started = time.monotonic()
        async with scu.associate(HOST, peer.port) as assoc:
            with pytest.raises(DIMSETimeout, match="DIMSE timeout"):
                await assoc.echo()
            assert 0.25 <= time.monotonic() - started < 1.5
            assert not assoc.is_established
            assert assoc.state is State.STA1
            with pytest.raises(DIMSETimeout):
                await assoc.echo()  # the failure sticks to the association
        with anyio.fail_after(2):
            await peer.got_abort.wait()
        assert [(a.source, a.reason) for a in peer.aborts()] == [(0, 0)]
        assert not peer.got_release.is_set()


async def test_echo_timeout_argument_overrides_the_dimse_timeout() -> None:
    async with fake_scp() as peer:
        async with make_scu(dimse_timeout=30).associate(HOST, peer.port) as assoc:
            started = time.monotonic()
            with pytest.raises(DIMSETimeout):
                await assoc.echo(timeout=0.2)
            assert time.monotonic() - started < 1.5
        with anyio.fail_after(2):
            await peer.got_abort.wait()


async def test_scp_network_timeout_aborts_a_silent_association() -> None:
    async with make_scp(network_timeout=0.4).serve(HOST, 0) as server:
        async with make_scu(network_timeout=30).associate(HOST, server.port) as assoc:
            scp_side = server_side(server)
            started = time.monotonic()
            await wait_closed(assoc, 3)
            elapsed = time.monotonic() - started
            assert 0.35 <= elapsed < 2
            with pytest.raises(AssociationAborted) as caught:
                await assoc.echo()
            assert (caught.value.source, caught.value.reason) == (2, 0)
        await wait_closed(scp_side)
        async with make_scu().associate(HOST, server.port) as again:
            assert await again.echo() == 0


# --------------------------------------------------------------------------- cancellation


async def test_cancelled_echo_aborts_the_association_and_leaks_no_task() -> None:
    """C-ECHO has no C-CANCEL, so cancelling a waiting echo must end in A-ABORT."""
    async with fake_scp() as peer:
        started = time.monotonic()
        async with make_scu(dimse_timeout=30).associate(HOST, peer.port) as assoc:
            tasks_before = len(anyio.get_running_tasks())
            async with anyio.create_task_group() as tg:
                tg.start_soon(assoc.echo)
                with anyio.fail_after(2):
                    await peer.got_pdata.wait()
                tg.cancel_scope.cancel()
            # The reader task ends with the aborted association; nothing new is left.
            with anyio.fail_after(2):
                await assoc.wait_closed()
            await anyio.wait_all_tasks_blocked()
            assert len(anyio.get_running_tasks()) <= tasks_before
            assert not assoc.is_established
            with pytest.raises(AssociationAborted):
                await assoc.echo()
        assert time.monotonic() - started < 1.5  # leaving the block did not hang
        with anyio.fail_after(2):
            await peer.disconnected.wait()
        assert AAbort in {type(pdu) for pdu in peer.received}
        assert AReleaseRQ not in {type(pdu) for pdu in peer.received}
        assert assoc.state is State.STA1


async def test_cancelling_the_association_block_aborts_it() -> None:
    async with make_scp().serve(HOST, 0) as server:
        with anyio.CancelScope() as scope:
            async with make_scu().associate(HOST, server.port) as assoc:
                scp_side = server_side(server)
                assert await assoc.echo() == 0
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert assoc.state is State.STA1
        await wait_closed(scp_side)
        reason = scp_side.abort_reason
        assert isinstance(reason, AssociationAborted)
        assert reason.source == 0


async def test_cancelled_association_request_aborts_at_the_peer() -> None:
    async with fake_scp(answer_associate=False) as peer:
        with anyio.move_on_after(0.3) as scope:
            async with make_scu(acse_timeout=30).associate(HOST, peer.port):
                pytest.fail("the association should not have been established")
        assert scope.cancelled_caught
        with anyio.fail_after(2):
            await peer.disconnected.wait()
        assert [type(pdu) for pdu in peer.received] == [AAssociateRQ, AAbort]


# --------------------------------------------------------------------------- shutdown


async def test_server_shutdown_aborts_open_associations_after_the_grace() -> None:
    async with make_scp().serve(HOST, 0) as server:
        port = server.port
        async with make_scu().associate(HOST, port) as assoc:
            scp_side = server_side(server)
            assert await assoc.echo() == 0
            started = time.monotonic()
            await server.aclose(grace=0.3)
            assert 0.25 <= time.monotonic() - started < 1.5
            await wait_closed(assoc)
            with pytest.raises((AssociationAborted, ConnectionClosed)):
                await assoc.echo()
        assert scp_side.state is State.STA1
    with pytest.raises(ConnectionRefusedError):
        async with make_scu().associate(HOST, port):
            pytest.fail("the server no longer listens")


async def test_server_shutdown_lets_a_finishing_association_release() -> None:
    async with make_scp().serve(HOST, 0) as server, anyio.create_task_group() as tg:
        async with make_scu().associate(HOST, server.port) as assoc:
            scp_side = server_side(server)
            tg.start_soon(server.aclose, 5.0)
            await anyio.sleep(0.05)
            assert await assoc.echo() == 0  # still served during the grace period
            started = time.monotonic()
        with anyio.fail_after(2):
            await server.wait_closed()
        assert time.monotonic() - started < 1.5
    assert scp_side.abort_reason is None
    assert assoc.abort_reason is None


# --------------------------------------------------------------------------- DCMTK interop


async def test_dcmtk_echoscu_abort_is_recorded_and_server_keeps_serving() -> None:
    scp = make_scp()
    seen: list[Association] = []

    @scp.on_echo
    async def on_echo(request: object) -> int:
        seen.append(request.assoc)  # type: ignore[attr-defined]
        return 0x0000

    async with scp.serve(HOST, 0) as server:
        command = ["/usr/bin/echoscu", "--abort", "-aec", "ANY-SCP", HOST, str(server.port)]
        with anyio.fail_after(10):
            result = await anyio.run_process(command, env=DCMTK_ENV, check=False)
        assert result.returncode == 0, result.stderr
        (dcmtk_side,) = seen
        await wait_closed(dcmtk_side)
        reason = dcmtk_side.abort_reason
        assert isinstance(reason, AssociationAborted)
        assert reason.source == 0
        assert dcmtk_side.peer_ae_title == "ECHOSCU"
        async with make_scu().associate(HOST, server.port) as assoc:
            assert await assoc.echo() == 0


async def test_dcmtk_echoscu_with_small_pdu() -> None:
    scp = make_scp()
    seen: list[Association] = []

    @scp.on_echo
    async def on_echo(request: object) -> int:
        seen.append(request.assoc)  # type: ignore[attr-defined]
        return 0x0000

    async with scp.serve(HOST, 0) as server:
        command = ["/usr/bin/echoscu", "-pdu", "4096", "-aec", "ANY-SCP", HOST, str(server.port)]
        with anyio.fail_after(10):
            result = await anyio.run_process(command, env=DCMTK_ENV, check=False)
        assert result.returncode == 0, result.stderr
        (dcmtk_side,) = seen
        await wait_closed(dcmtk_side)
        assert dcmtk_side.request is not None
        assert dcmtk_side.request.user_information.maximum_length == 4096
        assert dcmtk_side.send_max_pdu == 4096
        assert dcmtk_side.abort_reason is None


async def test_our_scu_against_dcmtk_storescp(tmp_path: Path) -> None:
    port = free_port()
    command = ["/usr/bin/storescp", "-aet", "STORESCP", "-od", str(tmp_path), str(port)]
    async with await anyio.open_process(command, env=DCMTK_ENV) as process:
        try:
            with anyio.fail_after(10):
                while True:
                    try:
                        probe = await anyio.connect_tcp(HOST, port)
                    except OSError:
                        await anyio.sleep(0.05)
                    else:
                        await probe.aclose()
                        break
            scu = make_scu(maximum_pdu_length=4096)
            async with scu.associate(HOST, port, called_ae_title="STORESCP") as assoc:
                assert assoc.peer_implementation_class_uid is not None
                assert assoc.peer_implementation_class_uid.startswith("1.2.276.0.7230010")
                assert [await assoc.echo() for _ in range(3)] == [0, 0, 0]
            assert assoc.state is State.STA1
            assert assoc.abort_reason is None
        finally:
            process.terminate()
