"""The asynchronous operations window (PS3.7 D.3.3.3) with concurrent C-STOREs.

Eight ``store()`` calls start at once in a task group on ONE association. With a
negotiated window of 8 the SCP has all eight handlers running at the same time; with
the default window of 1 the calls queue on the SCU, transparently, and the SCP never
sees more than one at a time. Each handler answers a status of its own (derived from
the SOP Instance UID) so that every caller can be checked to get its own response.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from aionetdicom import AE, Association, Status, sop_classes
from aionetdicom.acse.acceptor import OPERATIONS_WINDOW_CAP
from aionetdicom.contexts import VERIFICATION, PresentationContext
from aionetdicom.dimse.command_set import CommandField
from aionetdicom.pdu import AsynchronousOperationsWindow
from aionetdicom.services.qr_scp import FindRequest
from aionetdicom.services.storage import StoreRequest, storage_contexts, store_service
from tests.dicom_files import CT_IMAGE_STORAGE, make_ct

HOST = "127.0.0.1"
COUNT = 8
CONTEXTS = [
    *VERIFICATION,
    *storage_contexts((CT_IMAGE_STORAGE,), (ExplicitVRLittleEndian, ImplicitVRLittleEndian)),
]
#: How long a test may wait for the handlers before it fails instead of hanging.
LIMIT = 10.0


def expected_status(index: int) -> int:
    """A distinct status per instance: Success for the first, then 0xC001.. (the
    C-STORE "Cannot understand" range, the only one wide enough to tell them apart)."""
    return 0x0000 if index == 0 else 0xC000 + index


@dataclass
class Tracker:
    """What the SCP's C-STORE handlers saw: concurrency, windows, which instances."""

    statuses: dict[str, int]
    #: Hold each handler until this many have arrived (0: do not wait, just pause).
    hold_until: int = 0
    running: int = 0
    maximum: int = 0
    arrived: int = 0
    all_arrived: anyio.Event = field(default_factory=anyio.Event)
    seen: list[str] = field(default_factory=list)
    windows: list[AsynchronousOperationsWindow | None] = field(default_factory=list)

    async def handler(self, request: StoreRequest) -> int:
        self.running += 1
        self.maximum = max(self.maximum, self.running)
        self.arrived += 1
        self.seen.append(request.sop_instance_uid)
        response = request.assoc.response
        assert response is not None
        self.windows.append(response.user_information.asynchronous_operations_window)
        try:
            if self.hold_until:
                if self.arrived >= self.hold_until:
                    self.all_arrived.set()
                with anyio.fail_after(LIMIT):
                    await self.all_arrived.wait()
            else:
                await anyio.sleep(0.01)  # room for another request to overlap, if it could
        finally:
            self.running -= 1
        return self.statuses[request.sop_instance_uid]


def instances() -> tuple[list[Dataset], dict[str, int]]:
    """``COUNT`` CT instances and the status the SCP answers for each."""
    datasets = [make_ct(seed=i) for i in range(COUNT)]
    return datasets, {ds.SOPInstanceUID: expected_status(i) for i, ds in enumerate(datasets)}


@asynccontextmanager
async def window_pair(
    tracker: Tracker,
    *,
    proposed: tuple[int, int] | None,
    maximum_performed: int = 1,
) -> AsyncIterator[Association]:
    """Our SCP (accepting up to ``maximum_performed``) and an SCU proposing ``proposed``."""
    scp = AE(
        "WINDOW-SCP",
        supported_contexts=CONTEXTS,
        maximum_operations_performed=maximum_performed,
    )
    scp.handle_dimse(CommandField.C_STORE_RQ, store_service(tracker.handler))  # type: ignore[arg-type]
    async with (
        scp.serve(HOST, 0) as server,
        AE("WINDOW-SCU").associate(
            HOST,
            server.port,
            called_ae_title="WINDOW-SCP",
            contexts=CONTEXTS,
            operations_window=proposed,
        ) as assoc,
    ):
        yield assoc


async def store_all(assoc: Association, datasets: list[Dataset]) -> list[Status]:
    """Start one ``store()`` per dataset at once; each result in its dataset's slot."""
    results: list[Status | None] = [None] * len(datasets)

    async def one(index: int) -> None:
        results[index] = await assoc.store(datasets[index])

    with anyio.fail_after(LIMIT * 2):
        async with anyio.create_task_group() as tg:
            for index in range(len(datasets)):
                tg.start_soon(one, index)
    assert all(status is not None for status in results)
    return [status for status in results if status is not None]


def assert_own_statuses(datasets: list[Dataset], results: list[Status]) -> None:
    """Every caller got the status answered for its own instance."""
    assert [int(status) for status in results] == [expected_status(i) for i in range(COUNT)]
    assert results[0].is_success
    assert all(status.is_failure for status in results[1:])


async def test_window_8_runs_8_stores_at_once() -> None:
    """(8, 1) proposed, 8 allowed: both sides see it; all 8 handlers run together."""
    datasets, statuses = instances()
    tracker = Tracker(statuses, hold_until=COUNT)
    async with window_pair(tracker, proposed=(COUNT, 1), maximum_performed=COUNT) as assoc:
        response = assoc.response
        assert response is not None
        assert response.user_information.asynchronous_operations_window == (
            AsynchronousOperationsWindow(COUNT, 1)
        )
        assert assoc.operations_window == (COUNT, 1)  # we invoke 8, we perform 1
        results = await store_all(assoc, datasets)
        assert (await assoc.echo()).is_success
        assert assoc.outstanding_operations == 0
    assert tracker.maximum == COUNT
    assert tracker.all_arrived.is_set()
    assert sorted(tracker.seen) == sorted(statuses)
    assert tracker.windows == [AsynchronousOperationsWindow(COUNT, 1)] * COUNT
    assert_own_statuses(datasets, results)


async def test_default_window_queues_transparently() -> None:
    """No proposal: 8 concurrent store() calls all succeed, one at a time at the SCP."""
    datasets, statuses = instances()
    tracker = Tracker(statuses)
    async with window_pair(tracker, proposed=None, maximum_performed=COUNT) as assoc:
        response = assoc.response
        assert response is not None
        assert response.user_information.asynchronous_operations_window is None
        assert assoc.operations_window == (1, 1)
        results = await store_all(assoc, datasets)
    assert tracker.maximum == 1
    assert sorted(tracker.seen) == sorted(statuses)
    assert tracker.windows == [None] * COUNT
    assert_own_statuses(datasets, results)


async def test_proposal_to_a_default_scp_negotiates_1() -> None:
    """(4, 1) proposed to an SCP that performs 1: the answer is (1, 1), one at a time."""
    datasets, statuses = instances()
    tracker = Tracker(statuses)
    async with window_pair(tracker, proposed=(4, 1)) as assoc:
        response = assoc.response
        assert response is not None
        assert response.user_information.asynchronous_operations_window == (
            AsynchronousOperationsWindow(1, 1)
        )
        results = await store_all(assoc, datasets)
    assert tracker.maximum == 1
    assert tracker.windows == [AsynchronousOperationsWindow(1, 1)] * COUNT
    assert_own_statuses(datasets, results)


async def test_scp_accepts_less_than_proposed_and_performs_that_many() -> None:
    """(8, 1) proposed, the SCP performs 3: answer (3, 1), never more than 3 at once."""
    datasets, statuses = instances()
    tracker = Tracker(statuses, hold_until=3)
    async with window_pair(tracker, proposed=(COUNT, 1), maximum_performed=3) as assoc:
        response = assoc.response
        assert response is not None
        assert response.user_information.asynchronous_operations_window == (
            AsynchronousOperationsWindow(3, 1)
        )
        results = await store_all(assoc, datasets)
    assert tracker.maximum == 3
    assert sorted(tracker.seen) == sorted(statuses)
    assert_own_statuses(datasets, results)


async def test_scp_enforces_its_window_on_a_peer_that_ignores_it() -> None:
    """A peer invoking 8 at once on a (1, 1) association: the SCP still performs one at a
    time (the others wait their turn) and answers each request."""
    datasets, statuses = instances()
    tracker = Tracker(statuses)
    async with window_pair(tracker, proposed=(4, 1)) as assoc:
        assoc.set_operations_window(COUNT)  # misbehave: ignore the negotiated window
        results = await store_all(assoc, datasets)
        assert (await assoc.echo()).is_success
    assert tracker.maximum == 1
    assert sorted(tracker.seen) == sorted(statuses)
    assert_own_statuses(datasets, results)


async def test_unlimited_proposal_is_capped() -> None:
    """(0, 0) proposed ("unlimited") to an SCP performing 0 ("unlimited"): the answer is
    the cap, never 0, and 8 stores still run at once."""
    datasets, statuses = instances()
    tracker = Tracker(statuses, hold_until=COUNT)
    async with window_pair(tracker, proposed=(0, 0), maximum_performed=0) as assoc:
        response = assoc.response
        assert response is not None
        window = response.user_information.asynchronous_operations_window
        assert window == AsynchronousOperationsWindow(OPERATIONS_WINDOW_CAP, 1)
        results = await store_all(assoc, datasets)
    assert tracker.maximum == COUNT
    assert_own_statuses(datasets, results)


async def test_window_runs_c_finds_concurrently() -> None:
    """Window (3, 1): three C-FINDs on one association are served at the same time, each
    caller gets its own matches (responses matched by Message ID)."""
    find_contexts = [*CONTEXTS, PresentationContext(sop_classes.STUDY_ROOT_FIND)]
    started = 0
    all_started = anyio.Event()
    scp = AE("WINDOW-SCP", supported_contexts=find_contexts, maximum_operations_performed=3)

    @scp.on_find
    async def on_find(request: FindRequest) -> AsyncIterator[Dataset]:
        nonlocal started
        started += 1
        if started == 3:
            all_started.set()
        with anyio.fail_after(LIMIT):
            await all_started.wait()  # all three are in flight together, or this times out
        patient = str(request.identifier.PatientID)
        for index in range(5):
            match = Dataset()
            match.QueryRetrieveLevel = "STUDY"
            match.PatientID = patient
            match.StudyInstanceUID = f"1.2.3.{index}"
            yield match

    results: dict[str, list[str]] = {}

    async def query(assoc: Association, patient: str) -> None:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.PatientID = patient
        identifier.StudyInstanceUID = ""
        found: list[str] = []
        async for response in assoc.find(identifier, model="study"):
            if response.identifier is not None and response.status.is_pending:
                found.append(str(response.identifier.PatientID))
        results[patient] = found

    async with (
        scp.serve(HOST, 0) as server,
        AE("WINDOW-SCU").associate(
            HOST, server.port, contexts=find_contexts, operations_window=(3, 1)
        ) as assoc,
    ):
        with anyio.fail_after(LIMIT * 2):
            async with anyio.create_task_group() as tg:
                for patient in ("A", "B", "C"):
                    tg.start_soon(query, assoc, patient)
    assert all_started.is_set()
    assert results == {patient: [patient] * 5 for patient in ("A", "B", "C")}


# ------------------------------------------------------------------------- DCMTK storescp

STORESCP = "/usr/bin/storescp"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp on a free port writing into a fresh folder; killed afterwards."""
    folder = tmp_path / "out"
    folder.mkdir()
    log_path = tmp_path / "storescp.log"
    port = _free_port()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [STORESCP, "-od", str(folder), str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=DCMTK_ENV,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.fail(f"storescp exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"storescp did not listen on {port}:\n{log_path.read_text()}")
                time.sleep(0.05)
        yield port, folder
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.mark.interop
async def test_concurrent_stores_to_dcmtk_storescp(storescp: tuple[int, Path]) -> None:
    """storescp does not negotiate a window: 8 concurrent store() calls all succeed."""
    port, folder = storescp
    datasets = [make_ct(seed=i) for i in range(COUNT)]
    async with AE("WINDOW-SCU").associate(
        HOST, port, called_ae_title="STORESCP", contexts=CONTEXTS, operations_window=(COUNT, 1)
    ) as assoc:
        response = assoc.response
        assert response is not None
        assert response.user_information.asynchronous_operations_window is None
        results = await store_all(assoc, datasets)
    assert all(status.is_success for status in results)
    for ds in datasets:
        assert [p for p in folder.iterdir() if p.name.endswith("." + ds.SOPInstanceUID)]
