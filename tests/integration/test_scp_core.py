"""The SCP core: handlers per service and SOP class, handler failures and timeouts,
association notifications, the server's limits, shutdown and listeners.

Our SCU against our SCP over real TCP (IPv4 and IPv6 loopback); raw sockets where a
well-behaved peer cannot produce the situation.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pydicom
import pytest
from anyio.abc import SocketStream
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from aionetdicom import (
    AE,
    Association,
    AssociationAborted,
    AssociationRejected,
    ConnectionClosed,
    EchoRequest,
    UserIdentity,
)
from aionetdicom.ae import _LazyService
from aionetdicom.association import ASSOCIATION_EVENTS, AssociationEvent
from aionetdicom.contexts import VERIFICATION, PresentationContext
from aionetdicom.datasets import encode_dataset
from aionetdicom.dimse.command_set import CommandField, make_command
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.handlers import Service
from aionetdicom.pdu import AAssociateRQ
from aionetdicom.services.storage import StoreRequest, storage_contexts
from aionetdicom.sop_classes import STORAGE_SOP_CLASSES, STUDY_ROOT_FIND
from tests.dicom_files import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    make_ct,
    make_mr,
    make_sc8,
)

HOST = "127.0.0.1"
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
IMAGES = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE)
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.7433.1.1"
FIND_CONTEXT = PresentationContext(STUDY_ROOT_FIND, SYNTAXES)


def make_scp(title: str = "CORE-SCP", **settings: object) -> AE:
    """An SCP for images and Study Root C-FIND, with short test timeouts."""
    defaults: dict[str, object] = {
        "acse_timeout": 2.0,
        "dimse_timeout": 2.0,
        "network_timeout": 5.0,
        "supported_contexts": [*VERIFICATION, *storage_contexts(IMAGES, SYNTAXES), FIND_CONTEXT],
    }
    defaults.update(settings)
    return AE(title, **defaults)  # type: ignore[arg-type]


def make_scu(title: str = "CORE-SCU", **settings: object) -> AE:
    defaults: dict[str, object] = {
        "acse_timeout": 3.0,
        "dimse_timeout": 5.0,
        "network_timeout": 10.0,
        "connect_timeout": 3.0,
    }
    defaults.update(settings)
    return AE(title, **defaults)  # type: ignore[arg-type]


SCU_CONTEXTS = [*VERIFICATION, *storage_contexts(IMAGES, SYNTAXES), FIND_CONTEXT]


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until ``condition()`` holds."""
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 (a condition, not an event)
            await anyio.sleep(0.01)


def find_query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    return query


async def find_statuses(assoc: Association) -> list[int]:
    return [int(response.status) async for response in assoc.find(find_query())]


def pending_find_response(assoc: Association, message: AssembledMessage, status: int) -> tuple:
    """A C-FIND-RSP (command, data set bytes or None) answering ``message``."""
    context = next(c for c in assoc.contexts if c.context_id == message.context_id)
    pending = status in (0xFF00, 0xFF01)
    command = make_command(
        CommandField.C_FIND_RSP,
        has_dataset=pending,
        MessageIDBeingRespondedTo=message.command["MessageID"],
        AffectedSOPClassUID=STUDY_ROOT_FIND,
        Status=status,
    )
    data = None
    if pending:
        match = Dataset()
        match.QueryRetrieveLevel = "STUDY"
        match.StudyInstanceUID = "1.2.3"
        data = encode_dataset(match, context.transfer_syntax)
    return command, data


# --------------------------------------------------------------------------- registration


def test_every_service_has_a_decorator_bare_and_per_sop_class() -> None:
    ae = AE("REG")
    names = {
        Service.C_ECHO: "on_echo",
        Service.C_STORE: "on_store",
        Service.C_FIND: "on_find",
        Service.C_GET: "on_get",
        Service.C_MOVE: "on_move",
        Service.N_EVENT_REPORT: "on_n_event_report",
        Service.N_GET: "on_n_get",
        Service.N_SET: "on_n_set",
        Service.N_ACTION: "on_n_action",
        Service.N_CREATE: "on_n_create",
        Service.N_DELETE: "on_n_delete",
    }
    assert set(names) == set(Service)
    for service, name in names.items():

        async def general(request: object) -> int:
            return 0

        async def specific(request: object) -> int:
            return 0

        decorator = getattr(ae, name)
        assert decorator(general) is general  # bare
        assert decorator(sop_class=["1.2.3", "1.2.4"])(specific) is specific
        assert ae.handlers.lookup(service) is general
        assert ae.handlers.lookup(service, "1.2.3") is specific
        assert ae.handlers.lookup(service, "1.2.4") is specific
        assert ae.handlers.lookup(service, "1.2.5") is general
    assert AE.on_store.__doc__ is not None
    assert "C-STORE" in AE.on_store.__doc__


def test_echo_handler_property_is_the_registry_entry() -> None:
    ae = AE("ECHO")
    assert ae.echo_handler is None

    async def first(request: EchoRequest) -> int:
        return 0

    ae.echo_handler = first
    assert ae.handlers.lookup(Service.C_ECHO) is first

    @ae.on_echo
    async def second(request: EchoRequest) -> int:
        return 0

    assert ae.echo_handler is second
    ae.echo_handler = None
    assert ae.handlers.lookup(Service.C_ECHO) is None


def test_handler_timeout_follows_the_dimse_timeout_unless_set() -> None:
    ae = AE("T", dimse_timeout=7.0)
    assert ae.handler_timeout == 7.0
    ae.dimse_timeout = 3.0
    assert ae.handler_timeout == 3.0
    assert AE("T", handler_timeout=1.5).handler_timeout == 1.5
    assert AE("T", handler_timeout=None).handler_timeout is None
    with pytest.raises(ValueError, match="handler_timeout"):
        AE("T", handler_timeout=-1)
    with pytest.raises(ValueError, match="maximum_pending_connections"):
        AE("T", maximum_pending_connections=0)


def test_add_storage_contexts_has_no_128_limit_and_replaces() -> None:
    ae = AE("STORE", supported_contexts=VERIFICATION)
    added = ae.add_storage_contexts()
    assert len(added) == len(set(STORAGE_SOP_CLASSES)) > 128
    assert len(ae.supported_contexts) == len(added) + 1
    ae.add_storage_contexts([CT_IMAGE_STORAGE], [ImplicitVRLittleEndian])
    ct = [c for c in ae.supported_contexts if c.abstract_syntax == CT_IMAGE_STORAGE]
    assert [c.transfer_syntaxes for c in ct] == [(ImplicitVRLittleEndian,)]
    assert len(ae.supported_contexts) == len(added) + 1


def test_association_decorator_validates_kinds() -> None:
    ae = AE("N")
    with pytest.raises(ValueError, match="unknown association event"):
        ae.on_association("opened")  # type: ignore[arg-type]

    @ae.on_association
    async def everything(event: AssociationEvent) -> None:
        pass

    assert all(everything in ae._association_handlers[k] for k in ASSOCIATION_EVENTS)
    ae.remove_association_handler(everything)
    assert all(not handlers for handlers in ae._association_handlers.values())


# --------------------------------------------------------------------------- dispatch


async def test_store_dispatch_per_sop_class(tmp_path: Path) -> None:
    """A SOP-class handler wins; the service-wide one takes the rest; register() works."""
    scp = make_scp()
    seen: list[tuple[str, str]] = []

    @scp.on_store
    async def anything(request: StoreRequest) -> int:
        seen.append(("any", request.sop_class_uid))
        await request.save_to(tmp_path)
        return 0x0000

    @scp.on_store(sop_class=CT_IMAGE_STORAGE)
    async def ct_only(request: StoreRequest) -> int:
        seen.append(("ct", request.sop_class_uid))
        return 0xB000

    async def sc_only(request: StoreRequest) -> int:
        seen.append(("sc", request.sop_class_uid))
        return 0x0000

    scp.handlers.register(Service.C_STORE, sc_only, sop_class=SECONDARY_CAPTURE_IMAGE_STORAGE)
    mr = make_mr(seed=1)
    async with (
        scp.serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, contexts=SCU_CONTEXTS) as assoc,
    ):
        assert await assoc.store(make_ct(seed=1)) == 0xB000
        assert await assoc.store(mr) == 0x0000
        assert await assoc.store(make_sc8(seed=1)) == 0x0000
    assert seen == [
        ("ct", CT_IMAGE_STORAGE),
        ("any", MR_IMAGE_STORAGE),
        ("sc", SECONDARY_CAPTURE_IMAGE_STORAGE),
    ]
    stored = pydicom.dcmread(tmp_path / f"{mr.SOPInstanceUID}.dcm")
    assert stored.PatientName == mr.PatientName


async def test_no_store_handler_refuses_the_sop_class(caplog: pytest.LogCaptureFixture) -> None:
    """0x0122 (SOP Class not supported) for a SOP class nobody handles, logged."""
    scp = make_scp()

    @scp.on_store(sop_class=CT_IMAGE_STORAGE)
    async def ct_only(request: StoreRequest) -> int:
        return 0

    async with (
        scp.serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, contexts=SCU_CONTEXTS) as assoc,
    ):
        assert await assoc.store(make_ct(seed=2)) == 0
        status = await assoc.store(make_mr(seed=2))
        assert status == 0x0122
        assert status.is_failure
        assert await assoc.echo() == 0  # the association is fine
    assert any(
        "no store handler" in r.getMessage() and MR_IMAGE_STORAGE in r.getMessage()
        for r in caplog.records
    )


async def test_accept_any_abstract_syntax_reaches_the_store_handler() -> None:
    """A private SOP class is accepted and dispatched to the service-wide handler."""
    scp = make_scp(accept_any_abstract_syntax=True, supported_contexts=VERIFICATION)
    seen: list[str] = []

    @scp.on_store
    async def anything(request: StoreRequest) -> int:
        seen.append(request.sop_class_uid)
        return 0

    ds = make_ct(seed=3)
    ds.SOPClassUID = PRIVATE_SOP_CLASS
    contexts = [*VERIFICATION, PresentationContext(PRIVATE_SOP_CLASS, SYNTAXES)]
    async with (
        scp.serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, contexts=contexts) as assoc,
    ):
        assert await assoc.store(ds) == 0
        scp.handlers.unregister(Service.C_STORE)
        assert await assoc.store(ds) == 0x0122
    assert seen == [PRIVATE_SOP_CLASS]


async def test_missing_service_module_answers_unrecognized_operation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A default service whose module does not exist answers 0x0211 and logs why."""
    scp = make_scp()
    scp.handle_dimse(CommandField.C_FIND_RQ, _LazyService("aionetdicom.services._nope", "x"))
    async with (
        scp.serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, contexts=SCU_CONTEXTS) as assoc,
    ):
        assert await find_statuses(assoc) == [0x0211]
        assert await assoc.echo() == 0
    assert any("aionetdicom.services._nope" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- failures


async def test_raising_handler_gets_c211_and_the_server_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scp = make_scp()

    @scp.on_store
    async def broken(request: StoreRequest) -> int:
        raise RuntimeError("disk on fire")

    @scp.on_store(sop_class=MR_IMAGE_STORAGE)
    async def fine(request: StoreRequest) -> int:
        return 0

    async with scp.serve(HOST, 0) as server:
        async with make_scu().associate(HOST, server.port, contexts=SCU_CONTEXTS) as assoc:
            status = await assoc.store(make_ct(seed=4))
            assert status == 0xC211
            assert await assoc.store(make_mr(seed=4)) == 0  # same association still serves
            scp_id = next(iter(server.associations)).id
        async with make_scu().associate(HOST, server.port, contexts=SCU_CONTEXTS) as again:
            assert await again.store(make_mr(seed=5)) == 0
            assert await again.store(make_ct(seed=5)) == 0xC211
    logged = [r for r in caplog.records if r.exc_info and "disk on fire" in str(r.exc_info[1])]
    assert logged
    assert f"association #{scp_id}" in logged[0].getMessage()


async def test_raising_low_level_service_gets_its_service_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handle_dimse service that raises after a Pending response: final 0xC311."""
    scp = make_scp()

    async def find(assoc: Association, message: AssembledMessage) -> None:
        await assoc.send_message(message.context_id, *pending_find_response(assoc, message, 0xFF00))
        raise KeyError("index corrupt")

    scp.handle_dimse(CommandField.C_FIND_RQ, find)
    async with (
        scp.serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, contexts=SCU_CONTEXTS) as assoc,
    ):
        assert await find_statuses(assoc) == [0xFF00, 0xC311]
        assert await assoc.echo() == 0
        assert assoc.is_established
    assert any(r.exc_info and "index corrupt" in str(r.exc_info[1]) for r in caplog.records)


async def test_handler_past_the_timeout_is_cancelled_and_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failure within the handler timeout (well before the SCU's DIMSE timeout)."""
    scp = make_scp(handler_timeout=0.5)
    cancelled: list[bool] = []

    @scp.on_store
    async def hangs(request: StoreRequest) -> int:
        if request.sop_class_uid == MR_IMAGE_STORAGE:
            return 0
        try:
            await anyio.sleep(60)
        finally:
            cancelled.append(True)
        return 0

    async with scp.serve(HOST, 0) as server:
        async with make_scu(dimse_timeout=10).associate(
            HOST, server.port, contexts=SCU_CONTEXTS
        ) as assoc:
            started = time.monotonic()
            status = await assoc.store(make_ct(seed=6))
            elapsed = time.monotonic() - started
            assert status == 0xC211
            assert 0.4 < elapsed < 2.0
            assert cancelled == [True]
            assert await assoc.store(make_mr(seed=6)) == 0
        async with make_scu().associate(HOST, server.port, contexts=SCU_CONTEXTS) as again:
            assert await again.echo() == 0
    assert any(
        r.levelno == logging.WARNING and "handler timeout" in r.getMessage() for r in caplog.records
    )


async def test_pending_responses_keep_a_long_service_alive() -> None:
    """The deadline restarts with every Pending response; silence past it fails."""
    scp = make_scp(handler_timeout=0.5)
    silent = {"value": False}

    async def find(assoc: Association, message: AssembledMessage) -> None:
        for _ in range(4):
            await anyio.sleep(60 if silent["value"] else 0.3)
            await assoc.send_message(
                message.context_id, *pending_find_response(assoc, message, 0xFF00)
            )
        await assoc.send_message(message.context_id, *pending_find_response(assoc, message, 0))

    scp.handle_dimse(CommandField.C_FIND_RQ, find)
    async with (
        scp.serve(HOST, 0) as server,
        make_scu(dimse_timeout=10).associate(HOST, server.port, contexts=SCU_CONTEXTS) as assoc,
    ):
        started = time.monotonic()
        assert await find_statuses(assoc) == [0xFF00] * 4 + [0]
        assert time.monotonic() - started > 1.0  # longer than the handler timeout overall
        silent["value"] = True
        started = time.monotonic()
        assert await find_statuses(assoc) == [0xC311]
        assert time.monotonic() - started < 2.0


async def test_invalid_status_becomes_the_standard_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scp = make_scp()

    @scp.on_store
    async def odd(request: StoreRequest) -> object:
        return 0x1234 if request.sop_class_uid == CT_IMAGE_STORAGE else "stored"

    @scp.on_echo
    async def echo(request: EchoRequest) -> object:
        return 0xC000  # not a C-ECHO status

    async with (
        scp.serve(HOST, 0) as server,
        make_scu().associate(HOST, server.port, contexts=SCU_CONTEXTS) as assoc,
    ):
        assert await assoc.store(make_ct(seed=7)) == 0xC211
        assert await assoc.store(make_mr(seed=7)) == 0xC211
        assert await assoc.echo() == 0x0110
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0x1234" in m and "C-STORE" in m for m in messages)
    assert any("'stored'" in m for m in messages)
    assert any("0xC000" in m and "C-ECHO" in m for m in messages)


# --------------------------------------------------------------------------- notifications


def recorder(ae: AE, side: str, log: list[tuple[str, str, str | None, str]]) -> None:
    @ae.on_association
    async def record(event: AssociationEvent) -> None:
        log.append((side, event.kind, event.initiator, type(event.error).__name__))


async def test_notifications_for_accept_and_release_in_order() -> None:
    events: list[tuple[str, str, str | None, str]] = []
    scp, scu = make_scp(), make_scu()
    recorder(scp, "scp", events)
    recorder(scu, "scu", events)
    async with scp.serve(HOST, 0) as server:
        async with scu.associate(HOST, server.port) as assoc:
            assert await assoc.echo() == 0
        scu_events = [e for e in events if e[0] == "scu"]
        assert scu_events == [
            ("scu", "requested", None, "NoneType"),
            ("scu", "accepted", None, "NoneType"),
            ("scu", "released", "local", "NoneType"),
        ]
        await eventually(lambda: len(events) == 6)
    assert [e for e in events if e[0] == "scp"] == [
        ("scp", "requested", None, "NoneType"),
        ("scp", "accepted", None, "NoneType"),
        ("scp", "released", "peer", "NoneType"),
    ]


async def test_notifications_for_a_rejection() -> None:
    events: list[tuple[str, str, str | None, str]] = []
    scp, scu = make_scp(require_called_ae_title=True), make_scu()
    recorder(scp, "scp", events)
    recorder(scu, "scu", events)
    async with scp.serve(HOST, 0) as server:
        with pytest.raises(AssociationRejected):
            async with scu.associate(HOST, server.port, called_ae_title="WRONG"):
                pytest.fail("should have been rejected")
        await eventually(lambda: len(events) == 4)
    assert [e for e in events if e[0] == "scu"] == [
        ("scu", "requested", None, "NoneType"),
        ("scu", "rejected", "peer", "AssociationRejected"),
    ]
    assert [e for e in events if e[0] == "scp"] == [
        ("scp", "requested", None, "NoneType"),
        ("scp", "rejected", "local", "AssociationRejected"),
    ]


async def test_notifications_for_an_abort_say_who() -> None:
    events: list[tuple[str, str, str | None, str]] = []
    details: list[AssociationEvent] = []
    scp, scu = make_scp(), make_scu()
    recorder(scp, "scp", events)
    recorder(scu, "scu", events)

    @scp.on_association("aborted")
    async def keep(event: AssociationEvent) -> None:
        details.append(event)

    async with scp.serve(HOST, 0) as server:
        async with scu.associate(HOST, server.port) as assoc:
            assert await assoc.echo() == 0
            await assoc.abort()
        await eventually(lambda: len(events) == 6)
    assert [e for e in events if e[0] == "scu"][-1] == (
        "scu",
        "aborted",
        "local",
        "AssociationAborted",
    )
    assert [e for e in events if e[0] == "scp"] == [
        ("scp", "requested", None, "NoneType"),
        ("scp", "accepted", None, "NoneType"),
        ("scp", "aborted", "peer", "AssociationAborted"),
    ]
    (event,) = details
    assert event.peer_ae_title == "CORE-SCU"
    assert isinstance(event.error, AssociationAborted)
    assert event.error.source == 0  # A-ABORT from the service user


async def test_cancelled_scu_block_still_notifies_the_abort() -> None:
    """Cancelling the task inside ``associate`` aborts; the SCU hears "aborted" too."""
    events: list[tuple[str, str, str | None, str]] = []
    scu = make_scu()
    recorder(scu, "scu", events)
    async with make_scp().serve(HOST, 0) as server:
        with anyio.move_on_after(0.3) as scope:
            async with scu.associate(HOST, server.port) as assoc:
                assert await assoc.echo() == 0
                await anyio.sleep(10)
        assert scope.cancelled_caught
    assert events == [
        ("scu", "requested", None, "NoneType"),
        ("scu", "accepted", None, "NoneType"),
        ("scu", "aborted", "local", "AssociationAborted"),
    ]


async def test_notification_handlers_neither_block_nor_break_anything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scp = make_scp()
    delivered: list[str] = []

    @scp.on_association("accepted")
    async def slow(event: AssociationEvent) -> None:
        await anyio.sleep(1.0)
        delivered.append("slow")

    @scp.on_association("accepted", "released")
    async def broken(event: AssociationEvent) -> None:
        raise ValueError(f"notification bug on {event.kind}")

    @scp.on_association("released")
    async def after(event: AssociationEvent) -> None:
        delivered.append("released")

    async with scp.serve(HOST, 0) as server:
        started = time.monotonic()
        async with make_scu().associate(HOST, server.port) as assoc:
            assert await assoc.echo() == 0
        assert time.monotonic() - started < 0.8  # not held up by the slow handler
        await eventually(lambda: delivered == ["slow", "released"])
    assert sum("notification bug" in str(r.exc_info[1]) for r in caplog.records if r.exc_info) == 2


# --------------------------------------------------------------------------- limits


async def test_maximum_associations_counts_the_ones_negotiating() -> None:
    """Five requests at once against a limit of 3, the identity check in between:
    exactly three get in, and places free up again when they end."""
    scp = make_scp(maximum_associations=3)

    @scp.on_user_identity
    async def slow_login(identity: UserIdentity, request: AAssociateRQ) -> bool:
        await anyio.sleep(0.3)
        return True

    accepted: list[int] = []
    rejected: list[tuple[int, int, int]] = []
    go = anyio.Event()

    async def attempt(port: int, i: int) -> None:
        login = UserIdentity.username(f"user{i}")
        try:
            async with make_scu().associate(HOST, port, user_identity=login) as assoc:
                accepted.append(i)
                await go.wait()
                assert await assoc.echo() == 0
        except AssociationRejected as exc:
            rejected.append((exc.result, exc.source, exc.reason))

    async with scp.serve(HOST, 0) as server:
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(attempt, server.port, i)
            await eventually(lambda: len(accepted) + len(rejected) == 5)
            assert len(accepted) == 3
            assert rejected == [(2, 3, 2)] * 2  # transient, provider (presentation), limit
            assert server.admitted == 3
            go.set()
        await eventually(lambda: server.admitted == 0)
        # At the edge once more, one at a time: the 3rd fits, the 4th does not.
        async with (
            make_scu().associate(HOST, server.port) as a,
            make_scu().associate(HOST, server.port) as b,
            make_scu().associate(HOST, server.port) as c,
        ):
            with pytest.raises(AssociationRejected):
                async with make_scu().associate(HOST, server.port):
                    pytest.fail("a fourth association must be rejected")
            assert [await x.echo() for x in (a, b, c)] == [0, 0, 0]


async def receive_or_eof(stream: SocketStream, timeout: float) -> str:
    """'closed' if the server closed ``stream`` within ``timeout``, else 'open'."""
    with anyio.move_on_after(timeout):
        try:
            await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            return "closed"
        return "data"
    return "open"


async def test_pending_connection_cap_closes_the_extra_silent_ones() -> None:
    cap = 4
    scp = make_scp(maximum_pending_connections=cap, acse_timeout=10.0)
    async with scp.serve(HOST, 0) as server:
        async with make_scu().associate(HOST, server.port) as established:
            silent: list[SocketStream] = []
            try:
                for _ in range(cap + 5):
                    silent.append(await anyio.connect_tcp(HOST, server.port))
                await eventually(
                    lambda: server.refused_connections + server.evicted_connections == 5
                )
                outcomes = [await receive_or_eof(s, 0.3) for s in silent]
                # After PENDING_CAP_WAIT the four stuck ones make room for four
                # newcomers; the last one finds only fresh ones and is turned away.
                assert outcomes == ["closed"] * cap + ["open"] * cap + ["closed"]
                assert (server.evicted_connections, server.refused_connections) == (cap, 1)
                assert server.pending_connections == cap
                # established associations are not pending: this one is unaffected
                assert await established.echo() == 0
            finally:
                for stream in silent:
                    await stream.aclose()
        await eventually(lambda: server.pending_connections == 0)
        async with make_scu().associate(HOST, server.port) as assoc:
            assert await assoc.echo() == 0


async def test_pending_connection_cap_lets_a_burst_of_real_clients_wait() -> None:
    """Twelve clients at once against a cap of 2: they queue, none is turned away."""
    scp = make_scp(maximum_pending_connections=2)
    statuses: list[int] = []

    async def client() -> None:
        async with make_scu().associate(HOST, server.port) as assoc:
            statuses.append(int(await assoc.echo()))

    async with scp.serve(HOST, 0) as server:
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(client)
        assert server.refused_connections == 0
    assert statuses == [0] * 12


# --------------------------------------------------------------------------- shutdown


async def test_shutdown_lets_an_operation_finish_within_the_grace() -> None:
    scp = make_scp()
    events: list[tuple[str, str, str | None, str]] = []
    recorder(scp, "scp", events)

    @scp.on_store
    async def slow(request: StoreRequest) -> int:
        await anyio.sleep(0.5)
        return 0

    async with scp.serve(HOST, 0) as server, anyio.create_task_group() as tg:
        port = server.port
        async with make_scu().associate(HOST, port, contexts=SCU_CONTEXTS) as assoc:

            async def close_soon() -> None:
                await anyio.sleep(0.1)
                await server.aclose(grace=5.0)

            started = time.monotonic()
            tg.start_soon(close_soon)
            assert await assoc.store(make_ct(seed=8)) == 0
            assert server.closing
            with pytest.raises(ConnectionRefusedError):
                async with make_scu().associate(HOST, port):
                    pytest.fail("no longer accepting")
        with anyio.fail_after(2):
            await server.wait_closed()
        assert time.monotonic() - started < 2.0  # did not sit out the 5 s grace
        assert assoc.abort_reason is None
    assert ("scp", "released", "peer", "NoneType") in events


async def test_shutdown_aborts_what_outlives_the_grace() -> None:
    scp = make_scp(handler_timeout=None)
    events: list[tuple[str, str, str | None, str]] = []
    recorder(scp, "scp", events)
    cancelled: list[bool] = []

    @scp.on_store
    async def forever(request: StoreRequest) -> int:
        try:
            await anyio.sleep(60)
        finally:
            cancelled.append(True)
        return 0

    async with (
        scp.serve(HOST, 0, shutdown_grace=0.4) as server,
        make_scu(dimse_timeout=10).associate(HOST, server.port, contexts=SCU_CONTEXTS) as assoc,
    ):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.aclose)  # the serve() default: shutdown_grace
            started = time.monotonic()
            with pytest.raises((AssociationAborted, ConnectionClosed)):
                await assoc.store(make_ct(seed=9))
            elapsed = time.monotonic() - started
        assert 0.3 < elapsed < 1.5
    assert cancelled == [True]
    assert ("scp", "aborted", "local", "AssociationAborted") in events


# --------------------------------------------------------------------------- listeners


def ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


HAS_IPV6 = ipv6_loopback()


async def test_ipv6_listener() -> None:
    assert HAS_IPV6, "this machine has IPv6 loopback; the test relies on it"
    async with make_scp().serve("::1", 0) as server:
        ((host, port),) = server.addresses
        assert host == "::1"
        assert "[::1]" in repr(server)
        async with make_scu().associate("::1", port) as assoc:
            assert await assoc.echo() == 0
            assert assoc.peer_address[0] == "::1"


async def test_two_listeners_ipv4_and_ipv6() -> None:
    hosts = ["127.0.0.1", "::1"] if HAS_IPV6 else ["127.0.0.1", "127.0.0.2"]
    async with make_scp().serve(hosts, 0) as server:
        assert [h for h, _ in server.addresses] == hosts
        for host, port in server.addresses:
            async with make_scu().associate(host, port) as assoc:
                assert await assoc.echo() == 0


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind((HOST, 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


async def test_two_listeners_as_host_port_pairs() -> None:
    ports = free_ports(2)
    async with make_scp().serve([(HOST, ports[0]), (HOST, ports[1])]) as server:
        assert server.addresses == [(HOST, ports[0]), (HOST, ports[1])]
        seen = []
        for port in ports:
            async with make_scu().associate(HOST, port) as assoc:
                assert await assoc.echo() == 0
            seen.append(port)
        assert seen == ports


async def test_listen_address_errors_leave_nothing_open() -> None:
    with pytest.raises(ValueError, match="at least one"):
        async with make_scp().serve([], 0):
            pass
    first, taken = free_ports(2)
    with (
        socket.create_server((HOST, taken)),
        pytest.raises(OSError, match="in use"),
    ):
        async with make_scp().serve([(HOST, first), (HOST, taken)]):
            pytest.fail("the second address is taken")
    with socket.create_server((HOST, first)):  # the first listener was closed again
        pass
