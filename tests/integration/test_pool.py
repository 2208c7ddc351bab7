"""The association pool (``aionetdicom.pool``) against our own SCPs and DCMTK's storescp.

Every test counts associations where they are real: at the SCP (accepted, released,
aborted, how many at once) as well as in the pool's statistics. Timeouts in here are
upper bounds so that a bug fails a test instead of hanging it; nothing asserts how
long something took.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from aionetdicom import (
    AE,
    AssociationAborted,
    AssociationEvent,
    AssociationPool,
    AssociationRejected,
    FindRequest,
    PoolClosed,
    PoolTimeout,
    Server,
)
from aionetdicom.contexts import VERIFICATION
from aionetdicom.services.storage import storage_contexts
from tests.dicom_files import CT_IMAGE_STORAGE, make_ct
from tests.integration.test_association import fake_scp, free_port, make_scp, make_scu
from tests.integration.test_qr_scp import (
    DOE_CT,
    SCP_AET,
    SCU_CONTEXTS,
    Collector,
    query,
    retrieve_all,
    served,
    until,
)
from tests.integration.test_qr_scp import make_scp as make_qr_scp
from tests.interop.test_echo_dcmtk import Peer, storescp, wait_for_log  # noqa: F401
from tests.qr_fixtures import DOE

HOST = "127.0.0.1"
#: Upper bound on anything a test waits for.
LIMIT = 10.0


@dataclass
class Seen:
    """What our SCP saw: associations and C-ECHOs, and how many at once."""

    accepted: int = 0
    released: int = 0
    aborted: int = 0
    echoes: int = 0
    #: Most associations established at the SCP while an echo was being answered.
    peak_associations: int = 0
    #: Echo handlers running at once, overall and at most.
    running: int = 0
    peak_running: int = 0
    #: Echo handlers hold until this many run at once (0: answer at once).
    hold_until: int = 0
    #: The next this-many echoes never answer (until their association ends).
    hang_next: int = 0
    #: The next this-many echoes abort their association instead of answering.
    abort_next: int = 0
    delay: float = 0.0
    all_running: anyio.Event = field(default_factory=anyio.Event)
    echo_started: anyio.Event = field(default_factory=anyio.Event)
    #: Echo handlers running at once per SCP-side association id, at most.
    per_association: dict[int, int] = field(default_factory=dict)
    _running_on: dict[int, int] = field(default_factory=dict)


@asynccontextmanager
async def echo_scp(**settings: Any) -> AsyncIterator[tuple[Server, Seen]]:
    """Our SCP answering C-ECHO, counting associations and echoes."""
    scp = make_scp(**settings)
    seen = Seen()
    servers: list[Server] = []

    @scp.on_association("accepted", "released", "aborted")
    async def note(event: AssociationEvent) -> None:
        setattr(seen, event.kind, getattr(seen, event.kind) + 1)

    @scp.on_echo
    async def on_echo(request: Any) -> int:
        key = request.assoc.id
        seen.echoes += 1
        seen.running += 1
        seen._running_on[key] = seen._running_on.get(key, 0) + 1
        seen.per_association[key] = max(seen.per_association.get(key, 0), seen._running_on[key])
        seen.peak_running = max(seen.peak_running, seen.running)
        seen.peak_associations = max(seen.peak_associations, servers[0].active_associations)
        seen.echo_started.set()
        try:
            if seen.hang_next:
                seen.hang_next -= 1
                await anyio.sleep_forever()
            if seen.abort_next:
                seen.abort_next -= 1
                await request.assoc.abort()
            if seen.hold_until:
                if seen.running >= seen.hold_until:
                    seen.all_running.set()
                with anyio.fail_after(LIMIT):
                    await seen.all_running.wait()
            if seen.delay:
                await anyio.sleep(seen.delay)
            return 0x0000
        finally:
            seen.running -= 1
            seen._running_on[key] -= 1

    async with scp.serve(HOST, 0) as server:
        servers.append(server)
        yield server, seen


def pool_to(server: Server, **options: Any) -> AssociationPool:
    """A pool of associations to ``server`` (idle timeout off unless asked for)."""
    options.setdefault("idle_timeout", None)
    options.setdefault("acquire_timeout", LIMIT)
    return AssociationPool(make_scu(), HOST, server.port, **options)


# --------------------------------------------------------------------------- reuse


async def test_sequential_calls_reuse_one_association() -> None:
    """Ten echoes, one association at the SCP, released once the pool closes."""
    async with echo_scp() as (server, seen):
        async with pool_to(server, max_size=3) as pool:
            statuses = [await pool.echo() for _ in range(10)]
            async with pool.acquire() as assoc:
                assert await assoc.echo() == 0
            assert await pool.run(lambda a: a.echo()) == 0
            stats = pool.statistics
        await until(lambda: seen.released == 1)
    assert statuses == [0] * 10
    assert seen.accepted == 1
    assert seen.echoes == 12
    assert seen.aborted == 0
    assert (stats.created, stats.reused, stats.discarded) == (1, 11, 0)
    assert (stats.open, stats.idle, stats.in_use, stats.leases) == (1, 1, 0, 0)
    assert pool.statistics.size == 0


async def test_twenty_concurrent_callers_share_three_associations() -> None:
    """20 callers, max_size 3: all succeed, the SCP never has more than 3 associations."""
    sizes: list[int] = []
    async with echo_scp() as (server, seen):
        seen.delay = 0.005
        async with pool_to(server, max_size=3) as pool:
            statuses: list[int] = []

            async def caller() -> None:
                for _ in range(3):
                    statuses.append(await pool.echo())
                    sizes.append(pool.statistics.size)

            with anyio.fail_after(LIMIT):
                async with anyio.create_task_group() as tg:
                    for _ in range(20):
                        tg.start_soon(caller)
            stats = pool.statistics
        await until(lambda: seen.released == 3)
    assert statuses == [0] * 60
    assert seen.accepted == 3
    assert seen.peak_associations <= 3
    assert seen.aborted == 0
    assert max(sizes) <= 3
    assert stats.created == 3
    assert stats.reused == 57
    assert (stats.waiting, stats.leases) == (0, 0)


async def test_idle_timeout_releases_and_next_call_opens_a_new_one() -> None:
    async with echo_scp() as (server, seen), pool_to(server, idle_timeout=0.1) as pool:
        assert await pool.echo() == 0
        await until(lambda: seen.released == 1)
        await until(lambda: pool.statistics.size == 0)
        assert pool.statistics.expired == 1
        assert await pool.echo() == 0
        assert pool.statistics.created == 2
    assert seen.accepted == 2
    assert seen.aborted == 0


# --------------------------------------------------------------------------- health


async def test_stale_association_is_retried_once_but_a_new_one_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SCP aborts instead of answering: on a reused association the pool's echo
    runs again on a new one; on a new association the error is the caller's."""
    caplog.set_level(logging.INFO, logger="aionetdicom.pool")
    async with echo_scp() as (server, seen), pool_to(server, max_size=1) as pool:
        seen.abort_next = 1
        with pytest.raises(AssociationAborted):
            await pool.echo()
        assert await pool.echo() == 0
        seen.abort_next = 1
        assert await pool.echo() == 0
        stats = pool.statistics
    assert (stats.created, stats.reused, stats.discarded) == (3, 1, 2)
    assert seen.echoes == 4
    messages = [r.getMessage() for r in caplog.records if r.name == "aionetdicom.pool"]
    assert sum("retrying once" in m for m in messages) == 1
    assert sum("discarding association" in m for m in messages) == 2


@pytest.mark.parametrize("ending", ["abort", "release"])
async def test_peer_ending_a_pooled_association_is_transparent(ending: str) -> None:
    """The SCP aborts or releases the idle association: the next call just works."""
    async with echo_scp() as (server, seen), pool_to(server, max_size=1) as pool:
        assert await pool.echo() == 0
        (scp_side,) = server.associations
        if ending == "abort":
            await scp_side.abort()
        else:
            await scp_side.release()
        # Straight away: the pool may or may not have noticed yet.
        assert await pool.echo() == 0
        # Once more after the pool has certainly noticed, through acquire().
        (scp_side,) = server.associations
        await scp_side.abort()
        await until(lambda: pool.statistics.size == 0)
        async with pool.acquire() as assoc:
            assert await assoc.echo() == 0
        stats = pool.statistics
    assert stats.created == 3
    assert stats.discarded == 2
    assert seen.accepted == 3


async def test_health_check_echoes_before_reuse_and_replaces_a_dead_association() -> None:
    async with echo_scp() as (server, seen), pool_to(server, check_after=0.0) as pool:
        for _ in range(3):
            async with pool.acquire():
                pass
        assert seen.echoes == 2  # the first lease was a new association
        assert pool.statistics.checks == 2
        seen.hang_next = 1  # the next health check gets no answer...
        pool.check_timeout = 0.2  # ...within this
        async with pool.acquire() as assoc:
            assert await assoc.echo() == 0
        stats = pool.statistics
    assert (stats.checks, stats.created, stats.discarded) == (3, 2, 1)
    assert seen.accepted == 2
    assert seen.aborted == 1


async def test_health_check_waits_for_check_after() -> None:
    """Leases within ``check_after`` of the last one are not checked."""
    async with echo_scp() as (server, seen), pool_to(server, check_after=3600.0) as pool:
        for _ in range(3):
            async with pool.acquire():
                pass
        assert pool.statistics.checks == 0
    assert seen.echoes == 0


# --------------------------------------------------------------------------- limits


async def test_acquire_timeout_raises_and_leaves_no_waiter() -> None:
    async with echo_scp() as (server, seen), pool_to(server, max_size=1) as pool:
        async with pool.acquire() as held:
            with pytest.raises(PoolTimeout, match=r"became free within 0\.05 s"):
                async with pool.acquire(timeout=0.05):
                    pytest.fail("a second association was lent")
            assert pool.statistics.waiting == 0
            assert await held.echo() == 0
        async with pool.acquire() as again:
            assert again is held
    assert seen.accepted == 1


async def test_connection_refused_propagates_and_frees_the_place() -> None:
    port = free_port()
    async with AssociationPool(make_scu(), HOST, port, max_size=1, acquire_timeout=LIMIT) as pool:
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError, match="refused"):
                await pool.echo()
            stats = pool.statistics
            assert (stats.size, stats.waiting, stats.created) == (0, 0, 0)


async def test_rejection_propagates_and_frees_the_place() -> None:
    async with echo_scp(require_called_ae_title=True) as (server, seen):
        async with pool_to(server, called_ae_title="SOMEONE-ELSE", max_size=1) as pool:
            for _ in range(3):
                with pytest.raises(AssociationRejected):
                    await pool.echo()
                assert pool.statistics.size == 0
        async with pool_to(server, max_size=1) as pool:
            assert await pool.echo() == 0
    assert seen.accepted == 1


# --------------------------------------------------------------------------- cancellation


async def test_cancelled_while_queued_leaves_no_trace() -> None:
    async with echo_scp() as (server, seen), pool_to(server, max_size=1) as pool:
        async with pool.acquire() as held, anyio.create_task_group() as tg:

            async def queued() -> None:
                async with pool.acquire():
                    pytest.fail("the queued caller was served")

            tg.start_soon(queued)
            await until(lambda: pool.statistics.waiting == 1)
            tg.cancel_scope.cancel()
        assert pool.statistics.waiting == 0
        async with pool.acquire() as again:
            assert again is held
            assert await again.echo() == 0
        assert (pool.statistics.created, pool.statistics.size) == (1, 1)
    assert seen.accepted == 1


async def test_cancelled_while_opening_frees_the_place() -> None:
    """A peer that never answers the A-ASSOCIATE-RQ; the caller gives up."""
    async with fake_scp(answer_associate=False) as peer:
        pool = AssociationPool(make_scu(), HOST, peer.port, max_size=1, acquire_timeout=LIMIT)
        async with pool:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.echo)
                with anyio.fail_after(LIMIT):
                    await peer.got_request.wait()
                assert pool.statistics.connecting == 1
                tg.cancel_scope.cancel()
            assert pool.statistics.size == 0
            with anyio.fail_after(LIMIT):
                await peer.got_abort.wait()


async def test_cancelled_mid_echo_discards_the_association() -> None:
    """C-ECHO has no C-CANCEL: the association is aborted, never lent again."""
    async with echo_scp() as (server, seen), pool_to(server) as pool:
        seen.hang_next = 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.echo)
            with anyio.fail_after(LIMIT):
                await seen.echo_started.wait()
            tg.cancel_scope.cancel()
        stats = pool.statistics
        assert (stats.leases, stats.discarded) == (0, 1)
        assert await pool.echo() == 0
        assert pool.statistics.created == 2
    assert seen.aborted == 1
    assert seen.released == 1


@asynccontextmanager
async def qr_pool(**options: Any) -> AsyncIterator[tuple[AssociationPool, Server]]:
    """The archive SCP of test_qr_scp (overridable handlers) and a pool to it."""
    handlers = options.pop("handlers", {})
    async with served(make_qr_scp(**handlers)) as server:
        pool = AssociationPool(
            AE("POOL-SCU"),
            HOST,
            server.port,
            called_ae_title=SCP_AET,
            contexts=SCU_CONTEXTS,
            idle_timeout=None,
            acquire_timeout=LIMIT,
            **options,
        )
        async with pool:
            yield pool, server


def slow_find(started: anyio.Event) -> Callable[[FindRequest], AsyncIterator[Dataset]]:
    """A C-FIND handler that gives one match, then none until cancelled."""

    async def handler(request: FindRequest) -> AsyncIterator[Dataset]:
        match = Dataset()
        match.QueryRetrieveLevel = "PATIENT"
        match.PatientID = DOE.patient_id
        yield match
        started.set()
        await anyio.sleep_forever()

    return handler


async def test_cancelled_mid_find_keeps_the_association() -> None:
    """C-FIND cancelled after a match: C-CANCEL, final response, association reused."""
    started = anyio.Event()
    identifier = query("PATIENT", PatientID="")
    async with qr_pool(handlers={"find": slow_find(started)}) as (pool, _):
        got: list[object] = []
        async with anyio.create_task_group() as tg:

            async def finder() -> None:
                async for response in pool.find(identifier, model="patient"):
                    got.append(response)

            tg.start_soon(finder)
            with anyio.fail_after(LIMIT):
                await started.wait()
            await until(lambda: len(got) == 1)
            tg.cancel_scope.cancel()
        stats = pool.statistics
        assert (stats.leases, stats.discarded, stats.open) == (0, 0, 1)
        assert await pool.echo() == 0
        assert (pool.statistics.created, pool.statistics.reused) == (1, 1)


async def test_find_retried_when_a_reused_association_is_aborted() -> None:
    calls = 0

    async def find_aborting_the_second(request: FindRequest) -> AsyncIterator[Dataset]:
        nonlocal calls
        calls += 1
        if calls == 2:
            await request.assoc.abort()
            return
        match = Dataset()
        match.PatientID = DOE.patient_id
        yield match

    async with qr_pool(handlers={"find": find_aborting_the_second}) as (pool, _):
        for _ in range(2):
            statuses = [r.status async for r in pool.find(query("PATIENT"), model="patient")]
            assert statuses == [0xFF00, 0x0000]
        stats = pool.statistics
    assert calls == 3
    assert (stats.created, stats.discarded) == (2, 1)


async def test_find_iterator_dropped_unfinished_discards_the_association() -> None:
    started = anyio.Event()
    identifier = query("PATIENT", PatientID="")
    async with qr_pool(handlers={"find": slow_find(started)}) as (pool, _):
        async for _response in pool.find(identifier, model="patient"):
            break  # neither aclose() nor async with: the C-FIND is still running
        await until(lambda: pool.statistics.discarded == 1)
        assert pool.statistics.leases == 0
        async with pool.find(identifier, model="patient") as responses:
            async for _response in responses:
                break  # async with: C-CANCEL, final response, association kept
        stats = pool.statistics
        assert (stats.created, stats.discarded, stats.open) == (2, 1, 1)


# --------------------------------------------------------------------------- services


async def test_find_get_move_and_store_through_the_pool() -> None:
    async with qr_pool(max_size=2) as (pool, _):
        studies = []
        async for response in pool.find(
            query("STUDY", PatientID=DOE.patient_id, StudyInstanceUID=""), model="study"
        ):
            if response.identifier is not None:
                studies.append(str(response.identifier.StudyInstanceUID))
            final_find = response
        assert final_find.status == 0x0000
        assert sorted(studies) == sorted(study.uid for study in DOE.studies)

        collector = Collector()
        _, final = await retrieve_all(
            pool.get(query("STUDY", StudyInstanceUID=DOE_CT.uid), on_store=collector)
        )
        assert final.status == 0x0000
        assert collector.uids == set(DOE_CT.instance_uids())

        async with pool.get_instances(query("STUDY", StudyInstanceUID=DOE_CT.uid)) as instances:
            received = [instance.sop_instance_uid async for instance in instances]
        assert set(received) == set(DOE_CT.instance_uids())

        _, moved = await retrieve_all(pool.move(query("STUDY", StudyInstanceUID="1.2"), "NOWHERE"))
        assert moved.status == 0xA801  # unknown destination

        assert await pool.echo() == 0
        stats = pool.statistics
    assert (stats.created, stats.reused, stats.discarded) == (1, 4, 0)


async def test_shared_leases_up_to_the_accepted_window() -> None:
    """max_shared 4 and a peer performing 4 at once: one association, 4 echoes at once."""
    async with echo_scp(maximum_operations_performed=4) as (server, seen):
        seen.hold_until = 4
        async with pool_to(server, max_size=2, max_shared=4) as pool:
            with anyio.fail_after(LIMIT):
                async with anyio.create_task_group() as tg:
                    for _ in range(4):
                        tg.start_soon(pool.echo)
            stats = pool.statistics
    assert seen.accepted == 1
    assert seen.peak_running == 4
    assert (stats.created, stats.reused) == (1, 3)


async def test_shared_leases_fall_back_to_exclusive_without_a_window() -> None:
    """The peer accepts no operations window: each association serves one caller."""
    async with echo_scp() as (server, seen):
        seen.delay = 0.005
        async with pool_to(server, max_size=2, max_shared=4) as pool:
            with anyio.fail_after(LIMIT):
                async with anyio.create_task_group() as tg:
                    for _ in range(6):
                        tg.start_soon(pool.echo)
    assert seen.accepted == 2
    assert max(seen.per_association.values()) == 1


@pytest.mark.interop
async def test_store_through_a_pool_to_dcmtk_storescp(storescp: Peer) -> None:  # noqa: F811
    """DCMTK storescp: health-checked echoes and stores over one association; then a
    pool with an idle timeout has its association released by it. (storescp serves
    one association at a time, hence max_size 1 and one pool after the other.)"""
    acknowledged = storescp.log().count("Association Acknowledged")
    released = storescp.log().count("Association Release")
    contexts = [
        *VERIFICATION,
        *storage_contexts((CT_IMAGE_STORAGE,), (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
    ]
    instances = [make_ct(seed=n) for n in range(2)]

    def pool(**options: Any) -> AssociationPool:
        return AssociationPool(
            make_scu(),
            HOST,
            storescp.port,
            called_ae_title="STORESCP",
            contexts=contexts,
            max_size=1,
            acquire_timeout=LIMIT,
            **options,
        )

    async with pool(idle_timeout=None, check_after=0.0) as first:
        assert [await first.echo() for _ in range(3)] == [0, 0, 0]
        assert [await first.store(instance) for instance in instances] == [0, 0]
        stats = first.statistics
    assert (stats.created, stats.reused, stats.checks) == (1, 4, 4)
    await anyio.to_thread.run_sync(
        lambda: wait_for_log(storescp, "Association Release", released + 1)
    )
    async with pool(idle_timeout=0.1) as second:
        assert await second.echo() == 0
        await anyio.to_thread.run_sync(
            lambda: wait_for_log(storescp, "Association Release", released + 2)
        )
        await until(lambda: second.statistics.size == 0)
        assert second.statistics.expired == 1
    log = storescp.log()
    assert log.count("Association Acknowledged") == acknowledged + 2
    assert "Association Aborted" not in log


# --------------------------------------------------------------------------- shutdown


async def test_aclose_waits_for_leases_then_releases() -> None:
    async with echo_scp() as (server, seen):
        async with pool_to(server, max_size=1, close_grace=LIMIT) as pool:
            leased = anyio.Event()
            go = anyio.Event()
            statuses: list[int] = []

            async def holder() -> None:
                async with pool.acquire() as assoc:
                    leased.set()
                    await go.wait()
                    statuses.append(await assoc.echo())

            async with anyio.create_task_group() as tg:
                tg.start_soon(holder)
                await leased.wait()
                tg.start_soon(pool.aclose)
                await until(lambda: pool.closed)
                with pytest.raises(PoolClosed):
                    await pool.echo()
                go.set()
            assert statuses == [0]
            assert pool.statistics.size == 0
        assert seen.released == 1
        assert seen.aborted == 0


async def test_aclose_aborts_leases_still_out_after_the_grace() -> None:
    async with echo_scp() as (server, seen):
        async with pool_to(server, max_size=1, close_grace=0.1) as pool:
            leased = anyio.Event()
            outcome: list[BaseException] = []

            async def holder() -> None:
                async with pool.acquire() as assoc:
                    leased.set()
                    await assoc.wait_closed()  # aborted by aclose after the grace
                    try:
                        await assoc.echo()
                    except Exception as exc:
                        outcome.append(exc)

            async def queued() -> None:
                try:
                    await pool.echo()
                except PoolClosed as exc:
                    outcome.append(exc)

            with anyio.fail_after(LIMIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(holder)
                    await leased.wait()
                    tg.start_soon(queued)
                    await until(lambda: pool.statistics.waiting == 1)
                    await pool.aclose()
            assert pool.statistics.size == 0
        await until(lambda: seen.aborted == 1)
    assert seen.released == 0
    assert [type(exc).__name__ for exc in outcome] == ["PoolClosed", "AssociationAborted"]


async def test_leaving_the_block_on_error_still_releases_cleanly() -> None:
    async def fail_in_the_block(server: Server) -> None:
        async with pool_to(server) as pool:
            assert await pool.echo() == 0
            raise ZeroDivisionError

    async with echo_scp() as (server, seen):
        with pytest.raises(ZeroDivisionError):
            await fail_in_the_block(server)
        await until(lambda: seen.released == 1)
    assert seen.aborted == 0


async def test_application_errors_in_a_lease_keep_the_association() -> None:
    async with echo_scp() as (server, seen), pool_to(server) as pool:

        async def fail_in_a_lease() -> None:
            async with pool.acquire() as assoc:
                assert await assoc.echo() == 0
                raise KeyError("not the association's fault")

        with pytest.raises(KeyError):
            await fail_in_a_lease()
        assert await pool.echo() == 0
        assert (pool.statistics.created, pool.statistics.discarded) == (1, 0)
    assert seen.accepted == 1


def test_pool_is_built_outside_an_event_loop_and_checks_its_arguments() -> None:
    pool = AssociationPool(AE("X"), HOST, 104, check_after=10.0, contexts=[])
    assert [c.abstract_syntax for c in pool.contexts] == ["1.2.840.10008.1.1"]
    assert "max_size=4" in repr(pool)
    with pytest.raises(ValueError, match="max_size"):
        AssociationPool(AE("X"), HOST, 104, max_size=0)
    with pytest.raises(ValueError, match="idle_timeout"):
        AssociationPool(AE("X"), HOST, 104, idle_timeout=-1.0)
    with pytest.raises(ValueError, match="longer than 16"):
        AssociationPool(AE("X"), HOST, 104, called_ae_title="X" * 17)


async def test_a_pool_must_be_entered_first() -> None:
    pool = AssociationPool(AE("X"), HOST, 104)
    with pytest.raises(RuntimeError, match="async with"):
        await pool.echo()
