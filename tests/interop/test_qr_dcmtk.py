"""C-FIND, C-GET and C-MOVE against DCMTK's dcmqrscp, with a real archive behind it.

One dcmqrscp per module (its database filled by DCMTK's storescu with the archive of
``tests/qr_fixtures.py``) and one DCMTK storescp as the C-MOVE destination STOREDEST.
The library is driven directly (on asyncio and trio) and through our findscu, getscu
and movescu apps. DCMTK runs with ``TCP_NODELAY=1``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from aionetdicom import AE, Association, LocalProtocolError, NegotiationError, sop_classes
from aionetdicom.contexts import VERIFICATION, PresentationContext
from aionetdicom.dimse.command_set import CommandField
from aionetdicom.dimse.status import StatusCategory
from aionetdicom.services.query_retrieve import (
    FindResponse,
    ReceivedInstances,
    RetrieveResponse,
    retrieve_contexts,
)
from aionetdicom.services.storage import StoreRequest, store_service
from tests.qr_fixtures import ALL_INSTANCE_UIDS, DOE, PATIENTS, ROE, write_archive

pytestmark = pytest.mark.interop

DCMQRSCP = "/usr/bin/dcmqrscp"
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
ARCHIVE_AET = "ARCHIVE"
DEST_AET = "STOREDEST"
OUR_MOVE_AET = "AIOMOVE"
SCU_AET = "AIOQRSCU"
RUN_TIMEOUT = 30.0

DOE_CT, DOE_MR = DOE.studies
(ROE_CT,) = ROE.studies
QR_CONTEXTS = [
    *VERIFICATION,
    PresentationContext(sop_classes.PATIENT_ROOT_FIND),
    PresentationContext(sop_classes.STUDY_ROOT_FIND),
    PresentationContext(sop_classes.PATIENT_STUDY_ONLY_FIND),
    PresentationContext(sop_classes.PATIENT_ROOT_MOVE),
    PresentationContext(sop_classes.STUDY_ROOT_MOVE),
]


# ---------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A long-running DCMTK program, its port and its log."""

    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the whole process group (dcmqrscp forks per association)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


def start(command: list[str], log_path: Path, port: int) -> Process:
    """Start ``command`` in its own session and wait until it accepts connections."""
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=log_path.parent,
            env=DCMTK_ENV,
            start_new_session=True,
        )
    process = Process(popen, port, log_path)
    deadline = time.monotonic() + 10
    while True:
        if popen.poll() is not None:
            pytest.fail(f"{command[0]} exited with {popen.returncode}:\n{process.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if time.monotonic() > deadline:
                process.stop()
                pytest.fail(f"{command[0]} did not listen on {port}:\n{process.log()}")
            time.sleep(0.05)


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a client to completion with a timeout; capture its output."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=DCMTK_ENV,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def our_app(*args: str) -> list[str]:
    """``python -m aionetdicom <app> ...``."""
    return [sys.executable, "-m", "aionetdicom", *args]


@dataclass
class Archive:
    """dcmqrscp with the test archive, and the storescp C-MOVE destination."""

    qr: Process
    dest: Process
    dest_dir: Path
    move_port: int

    @property
    def port(self) -> int:
        return self.qr.port


CONFIG = """\
NetworkTCPPort  = {port}
MaxPDUSize      = 65536
MaxAssociations = 32

HostTable BEGIN
storedest = ({dest_aet}, localhost, {dest_port})
aiomove   = ({move_aet}, localhost, {move_port})
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{archive_aet} {storage} RW (20, 100mb) ANY
AETable END
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """dcmqrscp filled with the 20 instances by storescu, plus storescp as STOREDEST."""
    root = tmp_path_factory.mktemp("qr")
    storage = root / "db" / ARCHIVE_AET
    storage.mkdir(parents=True)
    files = write_archive(root / "files")
    port, dest_port, move_port = free_port(), free_port(), free_port()
    config = root / "dcmqrscp.cfg"
    config.write_text(
        CONFIG.format(
            port=port,
            dest_aet=DEST_AET,
            dest_port=dest_port,
            move_aet=OUR_MOVE_AET,
            move_port=move_port,
            archive_aet=ARCHIVE_AET,
            storage=storage,
        )
    )
    qr = start([DCMQRSCP, "-v", "-c", str(config), str(port)], root / "dcmqrscp.log", port)
    dest_dir = root / "storescp"
    dest_dir.mkdir()
    try:
        dest = start(
            [STORESCP, "-aet", DEST_AET, "-od", str(dest_dir), str(dest_port)],
            root / "storescp.log",
            dest_port,
        )
    except BaseException:
        qr.stop()
        raise
    try:
        stored = run(
            [STORESCU, "-aet", "LOADER", "-aec", ARCHIVE_AET, "127.0.0.1", str(port)]
            + [str(path) for path in files]
        )
        assert stored.returncode == 0, stored.stdout + stored.stderr
        yield Archive(qr, dest, dest_dir, move_port)
    finally:
        dest.stop()
        qr.stop()


def associate(
    archive: Archive, contexts: list[PresentationContext] | None = None
) -> AbstractAsyncContextManager[Association]:
    """An association from our SCU AE to the archive."""
    return AE(SCU_AET).associate(
        "127.0.0.1",
        archive.port,
        called_ae_title=ARCHIVE_AET,
        contexts=QR_CONTEXTS if contexts is None else contexts,
    )


def get_contexts(model: str) -> list[PresentationContext]:
    """Verification, the model's GET context and storage contexts with the SCP role."""
    return [*VERIFICATION, *retrieve_contexts([model])]


def query(level: str, **keys: object) -> Dataset:
    """An identifier at ``level`` with the given keys ("" for return keys)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def find_all(
    assoc: Association, identifier: Dataset, model: str = "study"
) -> tuple[list[Dataset], FindResponse]:
    """Every match of a C-FIND and its final response."""
    matches: list[Dataset] = []
    final: FindResponse | None = None
    async for response in assoc.find(identifier, model=model):
        if response.status.is_pending:
            assert response.identifier is not None
            matches.append(response.identifier)
        else:
            final = response
    assert final is not None
    return matches, final


def sop_uids_in(folder: Path) -> set[str]:
    """SOP Instance UIDs of the DICOM files in ``folder``."""
    return {str(dcmread(path).SOPInstanceUID) for path in folder.iterdir() if path.is_file()}


# ---------------------------------------------------------------------- C-FIND


async def test_find_patient_level_patient_root(archive: Archive) -> None:
    async with associate(archive) as assoc:
        matches, final = await find_all(
            assoc, query("PATIENT", PatientID="", PatientName=""), model="patient"
        )
    assert final.status == 0x0000
    assert final.identifier is None
    found = {str(m.PatientID): str(m.PatientName) for m in matches}
    assert found == {p.patient_id: p.name for p in PATIENTS}


async def test_find_study_level(archive: Archive) -> None:
    async with associate(archive) as assoc:
        matches, final = await find_all(
            assoc,
            query("STUDY", PatientID="QR001", StudyInstanceUID="", StudyDate=""),
            model=sop_classes.STUDY_ROOT_FIND,
        )
    assert final.status.category is StatusCategory.SUCCESS
    assert {str(m.StudyInstanceUID): m.StudyDate for m in matches} == {
        DOE_CT.uid: DOE_CT.date,
        DOE_MR.uid: DOE_MR.date,
    }


async def test_find_series_level(archive: Archive) -> None:
    async with associate(archive) as assoc:
        matches, _ = await find_all(
            assoc,
            query(
                "SERIES",
                StudyInstanceUID=ROE_CT.uid,
                SeriesInstanceUID="",
                Modality="",
                SeriesNumber="",
            ),
        )
    found = {str(m.SeriesInstanceUID): (m.Modality, int(m.SeriesNumber)) for m in matches}
    assert found == {s.uid: (s.modality, s.number) for s in ROE_CT.series}


async def test_find_image_level(archive: Archive) -> None:
    series = DOE_CT.series[0]
    async with associate(archive) as assoc:
        matches, final = await find_all(
            assoc,
            query(
                "IMAGE",
                StudyInstanceUID=DOE_CT.uid,
                SeriesInstanceUID=series.uid,
                SOPInstanceUID="",
                InstanceNumber="",
            ),
        )
    assert final.status.is_success
    assert sorted((int(m.InstanceNumber), str(m.SOPInstanceUID)) for m in matches) == list(
        enumerate(series.instance_uids(), start=1)
    )


@pytest.mark.parametrize(
    ("pattern", "studies"),
    [
        ("DOE*", {DOE_CT.uid, DOE_MR.uid}),
        ("*JANE", {ROE_CT.uid}),
        ("?OE^J*", {DOE_CT.uid, DOE_MR.uid, ROE_CT.uid}),
        ("NOBODY*", set()),
    ],
)
async def test_find_wildcards(archive: Archive, pattern: str, studies: set[str]) -> None:
    async with associate(archive) as assoc:
        matches, final = await find_all(
            assoc, query("STUDY", PatientName=pattern, StudyInstanceUID="")
        )
    assert final.status.is_success
    assert {str(m.StudyInstanceUID) for m in matches} == studies


async def test_find_patient_study_only_model_and_unpacking(archive: Archive) -> None:
    """A short model name, and responses unpacking as (status, identifier)."""
    seen = []
    async with associate(archive) as assoc:
        async for status, match in assoc.find(
            query("STUDY", PatientID="QR002", StudyInstanceUID=""), model="psonly"
        ):
            seen.append((int(status), None if match is None else str(match.StudyInstanceUID)))
    assert seen == [(0xFF00, ROE_CT.uid), (0x0000, None)]


async def test_find_without_an_accepted_context_is_a_negotiation_error(
    archive: Archive,
) -> None:
    async with associate(archive, list(VERIFICATION)) as assoc:
        with pytest.raises(NegotiationError, match=r"1\.2\.840\.10008\.5\.1\.4\.1\.2\.2\.1"):
            assoc.find(query("STUDY", StudyInstanceUID=""))
        assert await assoc.echo() == 0x0000


async def test_find_left_early_cancels_and_association_stays_usable(archive: Archive) -> None:
    identifier = query("IMAGE", StudyInstanceUID=DOE_MR.uid, SeriesInstanceUID=DOE_MR.series[0].uid)
    identifier.SOPInstanceUID = ""
    async with associate(archive) as assoc:
        # A plain async for left with break: the iterator is dropped, C-CANCEL goes out
        # from the association's reader, which discards the remaining responses in the
        # background. dcmqrscp allows one outstanding operation (no asynchronous
        # operations window) and aborts when another request overtakes the abandoned
        # C-FIND, so give the background drain time to finish before the next request.
        first = None
        async for status, match in assoc.find(identifier):
            assert status.is_pending
            first = match
            break
        assert first is not None
        assert str(first.SOPInstanceUID) in DOE_MR.instance_uids()
        await anyio.sleep(0.3)
        assert await assoc.echo() == 0x0000
        # async with + cancel(): the remaining responses end with Cancel (or Success
        # when the archive had answered everything before the C-CANCEL arrived).
        count = 0
        final = None
        async with assoc.find(identifier) as responses:
            async for response in responses:
                if response.status.is_pending:
                    count += 1
                    if count == 1:
                        await responses.cancel()
                else:
                    final = response
        assert final is not None
        assert final.status in (0xFE00, 0x0000)
        assert 1 <= count <= 5
        assert responses.done
        matches, final = await find_all(assoc, identifier)
        assert final.status.is_success
        assert {str(m.SOPInstanceUID) for m in matches} == set(DOE_MR.instance_uids())


async def test_find_in_a_cancelled_task_leaves_the_association_usable(archive: Archive) -> None:
    async with associate(archive) as assoc:
        seen = 0
        with anyio.CancelScope() as scope:
            async for response in assoc.find(query("STUDY", StudyInstanceUID="")):
                seen += 1
                assert response.status.is_pending
                scope.cancel()  # lands in the next receive, inside the iterator
        assert scope.cancelled_caught
        assert seen == 1
        assert assoc.is_established
        assert await assoc.echo() == 0x0000
        matches, _ = await find_all(assoc, query("STUDY", StudyInstanceUID=""))
        assert len(matches) == 3


# ---------------------------------------------------------------------- C-GET


def completed_ok(final: RetrieveResponse | None, count: int) -> None:
    assert final is not None
    assert final.status == 0x0000, final
    assert (final.completed, final.failed, final.warning) == (count, 0, 0)
    assert final.failed_sop_instance_uids == ()


async def test_get_study_level_with_a_store_handler(archive: Archive, tmp_path: Path) -> None:
    received: list[StoreRequest] = []

    async def on_store(request: StoreRequest) -> int:
        received.append(request)
        await request.save_to(tmp_path)
        return 0x0000

    progress: list[RetrieveResponse] = []
    async with associate(archive, get_contexts("study")) as assoc:
        async for response in assoc.get(
            query("STUDY", StudyInstanceUID=DOE_CT.uid), on_store=on_store
        ):
            progress.append(response)
        assert CommandField.C_STORE_RQ not in assoc.request_handlers
        assert await assoc.echo() == 0x0000
    completed_ok(progress[-1], 7)
    assert all(r.status.is_pending for r in progress[:-1])
    assert [r.remaining for r in progress[:-1]] == list(range(6, -1, -1))
    assert sop_uids_in(tmp_path) == set(DOE_CT.instance_uids())
    names = {p.name for p in os.scandir(tmp_path)}
    assert names == {f"{u}.dcm" for u in DOE_CT.instance_uids()}
    assert all(r.context.scp_role for r in received)


async def test_get_series_level_as_an_async_iterator(archive: Archive, tmp_path: Path) -> None:
    series = ROE_CT.series[0]
    seen: list[str] = []
    async with associate(archive, get_contexts("study")) as assoc:
        identifier = query("SERIES", StudyInstanceUID=ROE_CT.uid, SeriesInstanceUID=series.uid)
        async with assoc.get_instances(identifier) as instances:
            async for instance in instances:
                assert instance.dataset.SeriesInstanceUID == series.uid
                seen.append(instance.sop_instance_uid)
                await instance.save_to(tmp_path)
                await anyio.sleep(0.01)  # a slow consumer: the archive waits for it
        assert assoc.request_handlers == {}
    assert sorted(seen) == sorted(series.instance_uids())
    assert instances.received == 4
    completed_ok(instances.response, 4)
    assert sop_uids_in(tmp_path) == set(series.instance_uids())


async def test_get_image_level_patient_root(archive: Archive, tmp_path: Path) -> None:
    series = DOE_MR.series[0]
    wanted = series.instance_uids()[2]
    identifier = query(
        "IMAGE",
        PatientID=DOE.patient_id,
        StudyInstanceUID=DOE_MR.uid,
        SeriesInstanceUID=series.uid,
        SOPInstanceUID=wanted,
    )

    async def on_store(request: StoreRequest) -> int:
        await request.save_to(tmp_path)
        return 0x0000

    async with associate(archive, get_contexts("patient")) as assoc:
        responses = [r async for r in assoc.get(identifier, model="patient", on_store=on_store)]
    completed_ok(responses[-1], 1)
    assert sop_uids_in(tmp_path) == {wanted}


async def test_get_reports_failed_sub_operations(archive: Archive) -> None:
    series = DOE_CT.series[1]
    refused = series.instance_uids()[1]

    async def on_store(request: StoreRequest) -> int:
        return 0xA700 if request.sop_instance_uid == refused else 0x0000

    async with associate(archive, get_contexts("study")) as assoc:
        responses = [
            r
            async for r in assoc.get(
                query("SERIES", StudyInstanceUID=DOE_CT.uid, SeriesInstanceUID=series.uid),
                on_store=on_store,
            )
        ]
    final = responses[-1]
    assert final.status == 0xB000
    assert final.status.category is StatusCategory.WARNING
    assert (final.completed, final.failed, final.warning) == (2, 1, 0)
    assert final.failed_sop_instance_uids == (refused,)


async def test_get_instances_left_early_cancels(archive: Archive) -> None:
    identifier = query("PATIENT", PatientID=ROE.patient_id)
    async with associate(archive, get_contexts("patient")) as assoc:
        async with assoc.get_instances(identifier, model="patient") as instances:
            async for instance in instances:
                assert instance.sop_instance_uid in ROE.instance_uids()
                break
        final = instances.response
        assert final is not None
        assert final.status.is_cancel
        assert final.completed == 1
        assert final.remaining is not None
        assert final.remaining + final.completed + (final.failed or 0) == 8
        assert assoc.request_handlers == {}
        assert await assoc.echo() == 0x0000
        # The association can retrieve again at once.
        async with assoc.get_instances(identifier, model="patient") as again:
            uids = [instance.sop_instance_uid async for instance in again]
        assert sorted(uids) == sorted(ROE.instance_uids())


async def test_get_instances_block_raising(archive: Archive) -> None:
    """The error leaves the block as it is; the instance held fails; the rest is cancelled."""
    identifier = query("STUDY", StudyInstanceUID=DOE_MR.uid)
    instances: ReceivedInstances | None = None

    async def consume(assoc: Association) -> None:
        nonlocal instances
        async with assoc.get_instances(identifier) as instances:
            async for _ in instances:
                raise RuntimeError("disk on fire")

    async with associate(archive, get_contexts("study")) as assoc:
        with pytest.raises(RuntimeError, match="disk on fire"):
            await consume(assoc)
        assert instances is not None
        final = instances.response
        assert final is not None
        # dcmqrscp answers Cancel, or A702 when the first sub-operation failed.
        assert final.status.is_cancel or final.status == 0xA702
        assert (final.completed, final.failed) == (0, 1)
        assert await assoc.echo() == 0x0000


async def test_get_instances_in_a_cancelled_task(archive: Archive) -> None:
    identifier = query("STUDY", StudyInstanceUID=DOE_MR.uid)
    async with associate(archive, get_contexts("study")) as assoc:
        taken = 0
        with anyio.CancelScope() as scope:
            async with assoc.get_instances(identifier) as instances:
                async for _ in instances:
                    taken += 1
                    scope.cancel()
                    await anyio.sleep(1)
        assert scope.cancelled_caught
        assert taken == 1
        assert assoc.is_established
        assert assoc.request_handlers == {}
        assert await assoc.echo() == 0x0000
        async with assoc.get_instances(identifier) as again:
            uids = {instance.sop_instance_uid async for instance in again}
    assert uids == set(DOE_MR.instance_uids())
    completed_ok(again.response, 5)


async def test_second_concurrent_get_is_refused(archive: Archive) -> None:
    identifier = query("STUDY", StudyInstanceUID=DOE_MR.uid)

    async def ignore(request: StoreRequest) -> int:
        return 0x0000

    async with associate(archive, get_contexts("study")) as assoc:
        async with assoc.get_instances(identifier) as instances:
            async for _ in instances:
                with pytest.raises(LocalProtocolError, match="already running"):
                    async for _ in assoc.get(identifier, on_store=ignore):
                        pass
                break
        # The refused C-GET left the running one's handler alone, and both are gone now.
        assert instances.response is not None
        assert instances.response.completed == 1
        assert assoc.request_handlers == {}
        responses = [r async for r in assoc.get(identifier, on_store=ignore)]
    completed_ok(responses[-1], 5)


# ---------------------------------------------------------------------- C-MOVE


async def test_move_to_dcmtk_storescp(archive: Archive) -> None:
    for leftover in archive.dest_dir.iterdir():
        if leftover.suffix != ".log":
            leftover.unlink()
    async with associate(archive) as assoc:
        responses = [
            r async for r in assoc.move(query("STUDY", StudyInstanceUID=DOE_MR.uid), DEST_AET)
        ]
    completed_ok(responses[-1], 5)
    assert [r.completed for r in responses[:-1]] == [1, 2, 3, 4, 5]
    files = [p for p in archive.dest_dir.iterdir() if p.suffix != ".log"]
    assert {str(dcmread(p).SOPInstanceUID) for p in files} == set(DOE_MR.instance_uids())


async def test_move_cancelled_midway(archive: Archive) -> None:
    identifier = query("PATIENT", PatientID=DOE.patient_id)
    async with associate(archive) as assoc:
        final = None
        pending = 0
        async with assoc.move(identifier, DEST_AET, model="patient") as responses:
            async for response in responses:
                if response.status.is_pending:
                    pending += 1
                    if pending == 1:
                        await responses.cancel()
                else:
                    final = response
        assert final is not None
        # Cancel with fewer than all 12 done, or Success if the archive was quicker.
        if final.status.is_cancel:
            assert final.completed is not None
            assert final.completed < 12
        else:
            completed_ok(final, 12)
        # Leaving at once (async with) waits for the final response itself.
        async with assoc.move(identifier, DEST_AET, model="patient") as responses:
            async for _ in responses:
                break
        assert responses.done
        assert await assoc.echo() == 0x0000
        matches, _ = await find_all(assoc, query("STUDY", StudyInstanceUID=""))
    assert len(matches) == 3


async def test_move_to_an_unknown_destination_fails(archive: Archive) -> None:
    async with associate(archive) as assoc:
        responses = [
            r async for r in assoc.move(query("STUDY", StudyInstanceUID=DOE_MR.uid), "NOWHERE")
        ]
        assert await assoc.echo() == 0x0000
    assert len(responses) == 1
    (final,) = responses
    assert final.status == 0xA801
    assert final.status.category is StatusCategory.FAILURE
    assert final.status.description == "Refused: move destination unknown"
    assert final.completed in (None, 0)


async def test_move_to_our_own_storage_scp(archive: Archive, tmp_path: Path) -> None:
    receiver = AE(
        OUR_MOVE_AET,
        supported_contexts=[PresentationContext(uid) for uid in (sop_classes.STORAGE_SOP_CLASSES)],
    )
    originators: set[tuple[str | None, int | None]] = set()

    async def on_store(request: StoreRequest) -> int:
        originators.add((request.move_originator_ae_title, request.move_originator_message_id))
        await request.save_to(tmp_path)
        return 0x0000

    receiver.handle_dimse(CommandField.C_STORE_RQ, store_service(on_store))
    async with receiver.serve("127.0.0.1", archive.move_port), associate(archive) as assoc:
        move = assoc.move(query("PATIENT", PatientID=ROE.patient_id), OUR_MOVE_AET, model="patient")
        responses = [r async for r in move]
    completed_ok(responses[-1], 8)
    assert sop_uids_in(tmp_path) == set(ROE.instance_uids())
    assert originators == {(SCU_AET, move.message_id)}


# ---------------------------------------------------------------------- the apps


def _common(archive: Archive) -> list[str]:
    return ["-aet", SCU_AET, "-aec", ARCHIVE_AET, "127.0.0.1", str(archive.port)]


def test_findscu_app_prints_matches(archive: Archive) -> None:
    result = run(
        our_app(
            "findscu",
            "-S",
            "-v",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=DOE*",
            "-k",
            "(0020,000D)",
            "-k",
            "0008,0020",
            *_common(archive),
        )
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("# Find Response") == 2
    assert DOE_CT.uid in result.stdout
    assert DOE_MR.uid in result.stdout
    assert ROE_CT.uid not in result.stdout
    assert "20210315" in result.stdout
    assert "Received Final Find Response (Success), 2 match(es)" in result.stderr


def test_findscu_app_extracts_responses(archive: Archive, tmp_path: Path) -> None:
    result = run(
        our_app(
            "findscu",
            "-P",
            "-X",
            "--no-print",
            "-od",
            str(tmp_path),
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID",
            "-k",
            "PatientBirthDate",
            *_common(archive),
        )
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["rsp0001.dcm", "rsp0002.dcm"]
    read = {str(dcmread(p).PatientID): str(dcmread(p).PatientBirthDate) for p in files}
    assert read == {p.patient_id: p.birth_date for p in PATIENTS}
    assert dcmread(files[0]).file_meta.MediaStorageSOPClassUID == sop_classes.PATIENT_ROOT_FIND


def test_findscu_app_with_a_query_file_and_cancel(archive: Archive, tmp_path: Path) -> None:
    query_file = tmp_path / "query.dcm"
    identifier = query("IMAGE", StudyInstanceUID=DOE_CT.uid, SeriesInstanceUID="")
    identifier.SOPInstanceUID = ""
    identifier.save_as(query_file, implicit_vr=False, little_endian=True)
    series = DOE_CT.series[0]
    result = run(
        our_app(
            "findscu",
            "-S",
            "-v",
            "--cancel",
            "1",
            "-k",
            f"SeriesInstanceUID={series.uid}",
            *_common(archive),
            str(query_file),
        )
    )
    assert result.returncode == 0, result.stderr
    assert "Sending Cancel Request" in result.stderr
    # Cancel, or Success when the archive had sent everything before the C-CANCEL came.
    assert re.search(r"Received Final Find Response \((Cancel|Success)\)", result.stderr)
    shown = result.stdout.count("# Find Response")
    assert 1 <= shown <= len(series.instance_uids())
    assert all(uid in series.instance_uids() for uid in _uids_after(result.stdout, "(0008,0018)"))


def _uids_after(text: str, tag: str) -> list[str]:
    return [line.rsplit(" ", 1)[-1] for line in text.splitlines() if line.startswith(tag)]


def test_findscu_app_bad_key_is_a_usage_error(archive: Archive) -> None:
    result = run(our_app("findscu", "-S", "-k", "NoSuchKeyword=1", *_common(archive)))
    assert result.returncode == 2
    assert "unknown attribute keyword 'NoSuchKeyword'" in result.stderr


def test_getscu_app_stores_a_series(archive: Archive, tmp_path: Path) -> None:
    series = ROE_CT.series[2]
    result = run(
        our_app(
            "getscu",
            "-S",
            "-v",
            "-od",
            str(tmp_path / "in"),
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={ROE_CT.uid}",
            "-k",
            f"SeriesInstanceUID={series.uid}",
            *_common(archive),
        )
    )
    assert result.returncode == 0, result.stderr
    assert "Get Response (Pending): completed 1, remaining 1, failed 0" in result.stderr
    assert "Get Response (Success): completed 2" in result.stderr
    assert sop_uids_in(tmp_path / "in") == set(series.instance_uids())


def test_movescu_app_to_storescp(archive: Archive) -> None:
    for leftover in archive.dest_dir.iterdir():
        if leftover.suffix != ".log":
            leftover.unlink()
    series = DOE_CT.series[0]
    result = run(
        our_app(
            "movescu",
            "-S",
            "-v",
            "-aem",
            DEST_AET,
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            f"StudyInstanceUID={DOE_CT.uid}",
            "-k",
            f"SeriesInstanceUID={series.uid}",
            *_common(archive),
        )
    )
    assert result.returncode == 0, result.stderr
    assert "Move Response (Success): completed 4" in result.stderr
    files = [p for p in archive.dest_dir.iterdir() if p.suffix != ".log"]
    assert {str(dcmread(p).SOPInstanceUID) for p in files} == set(series.instance_uids())


def test_movescu_app_receives_with_its_own_port(archive: Archive, tmp_path: Path) -> None:
    result = run(
        our_app(
            "movescu",
            "-P",
            "-v",
            "-aem",
            OUR_MOVE_AET,
            "+P",
            str(archive.move_port),
            "--store-bind",
            "127.0.0.1",
            "-od",
            str(tmp_path),
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            f"PatientID={DOE.patient_id}",
            *_common(archive),
        )
    )
    assert result.returncode == 0, result.stderr
    assert f"Received 12 instance(s) in {tmp_path}" in result.stderr
    assert sop_uids_in(tmp_path) == set(DOE.instance_uids())


def test_movescu_app_unknown_destination_fails(archive: Archive) -> None:
    result = run(
        our_app(
            "movescu",
            "-aem",
            "NOWHERE",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            f"PatientID={ROE.patient_id}",
            *_common(archive),
        )
    )
    assert result.returncode == 1
    assert "0xA801: Refused: move destination unknown" in result.stderr


def test_archive_holds_every_instance(archive: Archive) -> None:
    """Sanity check of the fixture itself: dcmqrscp indexed all 20 instances."""
    assert len(ALL_INSTANCE_UIDS) == 20
    stored = [p for p in (archive.qr.log_path.parent / "db" / ARCHIVE_AET).iterdir()]
    assert len([p for p in stored if p.name != "index.dat"]) == 20
