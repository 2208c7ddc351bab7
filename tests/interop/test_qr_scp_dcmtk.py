"""DCMTK's findscu, getscu and movescu against our C-FIND/C-GET/C-MOVE SCP.

Our SCP serves the archive of ``tests/qr_fixtures.py`` from Part 10 files (handlers
yield paths); a DCMTK storescp is the C-MOVE destination, named in the SCP's
``known_aes``. DCMTK runs with ``TCP_NODELAY=1``, as a subprocess of the test's event
loop (asyncio and trio).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from pydicom import dcmread
from pydicom.dataset import Dataset

from aionetdicom import AE, Server
from aionetdicom.contexts import VERIFICATION
from aionetdicom.handlers import Service
from aionetdicom.services.qr_scp import (
    FindRequest,
    GetRequest,
    MoveRequest,
    query_retrieve_contexts,
    retrieve_storage_contexts,
)
from tests.integration.test_qr_scp import find_matches, select
from tests.qr_fixtures import CT_IMAGE_STORAGE, DOE, MR_IMAGE_STORAGE, ROE, write_archive

pytestmark = pytest.mark.interop

FINDSCU = "/usr/bin/findscu"
GETSCU = "/usr/bin/getscu"
MOVESCU = "/usr/bin/movescu"
STORESCP = "/usr/bin/storescp"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
HOST = "127.0.0.1"
SCP_AET = "AIOQRSCP"
DEST_AET = "STOREDEST"
LIMIT = 60.0

DOE_CT, DOE_MR = DOE.studies
(ROE_CT,) = ROE.studies


@pytest.fixture(scope="module")
def archive_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The archive as Part 10 files, by SOP Instance UID."""
    paths = write_archive(tmp_path_factory.mktemp("archive"))
    return {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): path for path in paths}


class Archive:
    """Handlers serving the archive: matches from memory, instances as file paths."""

    def __init__(self, files: dict[str, Path], delay: float = 0.0) -> None:
        self.files = files
        self.delay = delay
        self.requests: list[FindRequest | GetRequest | MoveRequest] = []
        self.sent = 0

    async def find(self, request: FindRequest) -> AsyncIterator[Dataset]:
        self.requests.append(request)
        for match in find_matches(request.identifier):
            if self.delay:
                await anyio.sleep(self.delay)
            self.sent += 1
            yield match

    async def retrieve(self, request: GetRequest | MoveRequest) -> AsyncIterator[object]:
        self.requests.append(request)
        instances = select(request.identifier)
        yield len(instances)
        for instance in instances:
            yield str(self.files[str(instance.SOPInstanceUID)])


@asynccontextmanager
async def our_scp(archive: Archive, **attributes: object) -> AsyncIterator[Server]:
    scp = AE(
        SCP_AET,
        supported_contexts=[
            *VERIFICATION,
            *query_retrieve_contexts(),
            *retrieve_storage_contexts((CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)),
        ],
    )
    scp.handlers.register(Service.C_FIND, archive.find)
    scp.handlers.register(Service.C_GET, archive.retrieve)
    scp.handlers.register(Service.C_MOVE, archive.retrieve)
    for name, value in attributes.items():
        setattr(scp, name, value)
    async with scp.serve(HOST, 0) as server:
        yield server


async def dcmtk(*args: str, succeed: bool = True) -> str:
    """Run a DCMTK client to completion; return its output (stdout and stderr).

    ``succeed``: the exit status must be 0 (else: must not be 0).
    """
    with anyio.fail_after(LIMIT):
        result = await anyio.run_process(
            list(args), env=DCMTK_ENV, check=False, stderr=-2
        )  # -2: subprocess.STDOUT
    output = result.stdout.decode(errors="replace")
    assert (result.returncode == 0) is succeed, output
    return output


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def storescp(folder: Path) -> AsyncIterator[int]:
    """A DCMTK storescp writing into ``folder``; yields its port."""
    port = free_port()
    process: Process = await anyio.open_process(
        [STORESCP, "-aet", DEST_AET, "-od", str(folder), str(port)],
        env=DCMTK_ENV,
        stdin=-3,  # DEVNULL
        stdout=-3,
        stderr=-3,
    )
    try:
        with anyio.fail_after(10):
            while True:
                try:
                    stream = await anyio.connect_tcp(HOST, port)
                except OSError:
                    await anyio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        yield port
    finally:
        process.terminate()
        with anyio.move_on_after(10, shield=True):
            await process.wait()
        await process.aclose()


def extracted(folder: Path) -> list[Dataset]:
    """The responses findscu -X wrote into ``folder``."""
    return [dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]


def sop_uids_in(folder: Path) -> set[str]:
    return {
        str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        for path in folder.iterdir()
        if path.is_file()
    }


async def test_findscu_patient_root(archive_files: dict[str, Path], tmp_path: Path) -> None:
    """findscu -P at PATIENT level: both patients, extracted as response files."""
    archive = Archive(archive_files)
    async with our_scp(archive) as server:
        await dcmtk(
            FINDSCU, "-P", "-aec", SCP_AET, "-X", "-od", str(tmp_path),
            "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID", "-k", "PatientName",
            HOST, str(server.port),
        )  # fmt: skip
    responses = extracted(tmp_path)
    assert {str(ds.PatientID) for ds in responses} == {DOE.patient_id, ROE.patient_id}
    assert {str(ds.PatientName) for ds in responses} == {DOE.name, ROE.name}
    assert archive.requests[0].query_level == "PATIENT"


async def test_findscu_study_root(archive_files: dict[str, Path], tmp_path: Path) -> None:
    """findscu -S at STUDY level with a Patient ID: that patient's two studies."""
    archive = Archive(archive_files)
    async with our_scp(archive) as server:
        await dcmtk(
            FINDSCU, "-S", "-aec", SCP_AET, "-X", "-od", str(tmp_path),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={DOE.patient_id}",
            "-k", "StudyInstanceUID", "-k", "StudyDescription",
            HOST, str(server.port),
        )  # fmt: skip
    responses = extracted(tmp_path)
    assert {str(ds.StudyInstanceUID) for ds in responses} == {DOE_CT.uid, DOE_MR.uid}
    assert {str(ds.StudyDescription) for ds in responses} == {"CT HEAD", "MR KNEE"}


async def test_findscu_cancel(archive_files: dict[str, Path], tmp_path: Path) -> None:
    """findscu --cancel 1: our SCP stops matching and answers Cancel."""
    archive = Archive(archive_files, delay=0.3)
    async with our_scp(archive) as server:
        output = await dcmtk(
            FINDSCU, "-v", "-S", "-aec", SCP_AET, "--cancel", "1",
            "-k", "QueryRetrieveLevel=IMAGE", "-k", "SOPInstanceUID",
            HOST, str(server.port),
        )  # fmt: skip
    assert "Cancel" in output.split("Received Final Find Response")[-1].splitlines()[0]
    assert archive.requests[0].cancelled
    assert archive.sent < 20
    assert output.count("Find Response:") == archive.sent


async def test_getscu_files_arrive(archive_files: dict[str, Path], tmp_path: Path) -> None:
    """getscu -S for a study: its instances arrive in the output directory."""
    archive = Archive(archive_files)
    async with our_scp(archive) as server:
        await dcmtk(
            GETSCU, "-S", "-aec", SCP_AET, "-od", str(tmp_path),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ROE_CT.uid}",
            HOST, str(server.port),
        )  # fmt: skip
    assert sop_uids_in(tmp_path) == set(ROE_CT.instance_uids())
    (request,) = archive.requests
    assert isinstance(request, GetRequest)
    assert request.completed == len(ROE_CT.instance_uids())
    assert request.failed == 0


async def test_getscu_patient_root(archive_files: dict[str, Path], tmp_path: Path) -> None:
    """getscu -P for a patient: CT and MR instances arrive."""
    archive = Archive(archive_files)
    async with our_scp(archive) as server:
        await dcmtk(
            GETSCU, "-P", "-aec", SCP_AET, "-od", str(tmp_path),
            "-k", "QueryRetrieveLevel=PATIENT", "-k", f"PatientID={DOE.patient_id}",
            HOST, str(server.port),
        )  # fmt: skip
    assert sop_uids_in(tmp_path) == set(DOE.instance_uids())


async def test_movescu_to_storescp(archive_files: dict[str, Path], tmp_path: Path) -> None:
    """movescu asks our SCP to move a study to DCMTK's storescp (from ``known_aes``)."""
    archive = Archive(archive_files)
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    async with storescp(dest_dir) as dest_port:
        known = {DEST_AET: (HOST, dest_port)}
        async with our_scp(archive, known_aes=known) as server:
            output = await dcmtk(
                MOVESCU, "-v", "-S", "-aec", SCP_AET, "-aem", DEST_AET,
                "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={DOE_CT.uid}",
                HOST, str(server.port),
            )  # fmt: skip
    assert sop_uids_in(dest_dir) == set(DOE_CT.instance_uids())
    (request,) = archive.requests
    assert isinstance(request, MoveRequest)
    assert request.destination == DEST_AET
    assert request.completed == len(DOE_CT.instance_uids())
    assert "Success" in output.split("Received Final Move Response")[-1].splitlines()[0]


async def test_movescu_unknown_destination(archive_files: dict[str, Path], tmp_path: Path) -> None:
    """movescu to a destination our SCP does not know: 0xA801, nothing is moved."""
    archive = Archive(archive_files)
    async with our_scp(archive, known_aes={}) as server:
        output = await dcmtk(
            MOVESCU, "-v", "-S", "-aec", SCP_AET, "-aem", "NOWHERE",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={DOE_CT.uid}",
            HOST, str(server.port), succeed=False,
        )  # fmt: skip
    final = output.split("Received Final Move Response")[-1].splitlines()[0]
    assert "MoveDestinationUnknown" in final or "a801" in final.lower()
    assert archive.requests == []
