"""Our SCP against DCMTK clients: ``/usr/bin/storescu`` and ``/usr/bin/echoscu``.

The SCP is the library (``AE.serve`` with ``@ae.on_store`` handlers that call
``request.save_to``) in the test's event loop; the DCMTK programs run as
subprocesses with ``TCP_NODELAY=1`` and a timeout. Files are made with pydicom in
``tests/dicom_files.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from aionetdicom import AE, EchoRequest
from aionetdicom.association import AssociationEvent
from aionetdicom.services.storage import StoreRequest
from tests.dicom_files import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    make_ct,
    make_mr,
    make_sc8,
    write_file,
)

pytestmark = pytest.mark.interop

STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
HOST = "127.0.0.1"
SCP_TITLE = "AIOSTORE"
RUN_TIMEOUT = 30.0


def make_scp() -> AE:
    """Our storage SCP: every storage SOP class, the default transfer syntaxes."""
    ae = AE(SCP_TITLE, acse_timeout=5, dimse_timeout=10, network_timeout=20)
    ae.add_storage_contexts()
    return ae


async def run(*command: str) -> tuple[int, str]:
    """Run a DCMTK program; its exit status and everything it printed."""
    with anyio.fail_after(RUN_TIMEOUT):
        result = await anyio.run_process(list(command), env=DCMTK_ENV, check=False)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def same_dataset(stored: Path, original: Path) -> None:
    """The data set of ``stored`` equals the one of ``original`` element by element."""
    got = pydicom.dcmread(stored)
    want = pydicom.dcmread(original)
    assert got.file_meta.MediaStorageSOPInstanceUID == want.SOPInstanceUID
    assert got.file_meta.MediaStorageSOPClassUID == want.SOPClassUID
    assert [e.tag for e in got] == [e.tag for e in want]
    for element in want:
        assert got[element.tag].value == element.value, element.keyword
    assert got.PixelData == want.PixelData


def make_tree(root: Path) -> list[Path]:
    """CT, MR and SC files (explicit and implicit VR) in a small directory tree."""
    made: list[tuple[Dataset, str, str]] = [
        (make_ct(seed=1), "series1/ct1.dcm", ExplicitVRLittleEndian),
        (make_ct(seed=2), "series1/ct2.dcm", ImplicitVRLittleEndian),
        (make_mr(seed=3), "series2/mr.dcm", ExplicitVRLittleEndian),
        (make_sc8(seed=4), "series2/deeper/sc.dcm", ExplicitVRLittleEndian),
    ]
    paths = []
    for ds, name, syntax in made:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.append(write_file(ds, path, syntax))
    return paths


async def test_storescu_directory_to_our_scp(tmp_path: Path) -> None:
    """``storescu +sd +r`` sends a tree of CT/MR/SC files; each is saved and equal."""
    files = make_tree(tmp_path / "in")
    out = tmp_path / "out"
    scp = make_scp()
    seen: list[tuple[str, str]] = []

    @scp.on_store
    async def save(request: StoreRequest) -> int:
        seen.append((request.sop_class_uid, request.assoc.peer_ae_title))
        await request.save_to(out)
        return 0x0000

    async with scp.serve(HOST, 0) as server:
        code, log = await run(
            STORESCU, "-v", "-aet", "DCMTKSCU", "-aec", SCP_TITLE, "+sd", "+r",
            HOST, str(server.port), str(tmp_path / "in"),
        )  # fmt: skip
    assert code == 0, log
    assert log.count("Received Store Response (Success)") == len(files)
    assert sorted(uid for uid, _ in seen) == sorted(
        [CT_IMAGE_STORAGE, CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, SECONDARY_CAPTURE_IMAGE_STORAGE]
    )
    assert {title for _, title in seen} == {"DCMTKSCU"}
    for path in files:
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        same_dataset(out / f"{uid}.dcm", path)


async def test_storescu_files_dispatched_per_sop_class(tmp_path: Path) -> None:
    """Per-SOP-class handlers over DCMTK; an unhandled SOP class gets 0x0122."""
    ct = write_file(make_ct(seed=5), tmp_path / "ct.dcm", ExplicitVRLittleEndian)
    mr = write_file(make_mr(seed=6), tmp_path / "mr.dcm", ExplicitVRLittleEndian)
    sc = write_file(make_sc8(seed=7), tmp_path / "sc.dcm", ExplicitVRLittleEndian)
    scp = make_scp()
    handled: list[str] = []

    @scp.on_store(sop_class=CT_IMAGE_STORAGE)
    async def on_ct(request: StoreRequest) -> int:
        handled.append("ct")
        await request.save_to(tmp_path / "ct")
        return 0

    @scp.on_store(sop_class=MR_IMAGE_STORAGE)
    async def on_mr(request: StoreRequest) -> int:
        handled.append("mr")
        await request.save_to(tmp_path / "mr")
        return 0xB000  # warning: coercion of data elements

    async with scp.serve(HOST, 0) as server:
        code, log = await run(
            STORESCU, "-v", "-nh", "-aec", SCP_TITLE, HOST, str(server.port),
            str(ct), str(mr), str(sc),
        )  # fmt: skip
    assert handled == ["ct", "mr"]
    assert "Received Store Response (Success)" in log
    assert "Received Store Response (Warning: CoercionOfDataElements)" in log
    assert "Received Store Response (Refused: SOPClassNotSupported)" in log
    assert code == 0, log  # -nh: storescu carries on (and exits 0) after a refusal
    same_dataset(tmp_path / "ct" / f"{pydicom.dcmread(ct).SOPInstanceUID}.dcm", ct)
    same_dataset(tmp_path / "mr" / f"{pydicom.dcmread(mr).SOPInstanceUID}.dcm", mr)


async def test_storescu_sees_the_failure_of_a_raising_handler(tmp_path: Path) -> None:
    """0xC211 for the file whose handler raised; the next storescu run succeeds."""
    path = write_file(make_ct(seed=8), tmp_path / "ct.dcm", ExplicitVRLittleEndian)
    scp = make_scp()
    calls: list[int] = []

    @scp.on_store
    async def flaky(request: StoreRequest) -> int:
        calls.append(request.message_id)
        if len(calls) == 1:
            raise RuntimeError("database unavailable")
        return 0

    async with scp.serve(HOST, 0) as server:
        code, log = await run(STORESCU, "-d", "-aec", SCP_TITLE, HOST, str(server.port), str(path))
        assert code != 0
        assert "0xc211" in log.lower()
        code, log = await run(STORESCU, "-v", "-aec", SCP_TITLE, HOST, str(server.port), str(path))
        assert code == 0, log
        assert "Received Store Response (Success)" in log
    assert len(calls) == 2


async def test_echoscu_to_our_scp() -> None:
    """echoscu (three echoes on one association) to our SCP; handler and notifications."""
    scp = make_scp()
    echoes: list[tuple[str, int]] = []
    events: list[tuple[str, str | None]] = []

    @scp.on_echo
    async def on_echo(request: EchoRequest) -> int:
        echoes.append((request.assoc.peer_ae_title, request.message_id))
        return 0

    @scp.on_association
    async def on_event(event: AssociationEvent) -> None:
        events.append((event.kind, event.initiator))

    async with scp.serve(HOST, 0) as server:
        code, log = await run(
            ECHOSCU, "-v", "--repeat", "3", "-aet", "DCMTKECHO", "-aec", SCP_TITLE,
            HOST, str(server.port),
        )  # fmt: skip
        with anyio.fail_after(5):
            while len(events) < 3:  # noqa: ASYNC110 (delivered by another task)
                await anyio.sleep(0.01)
    assert code == 0, log
    assert log.count("Received Echo Response (Success)") == 3
    assert [title for title, _ in echoes] == ["DCMTKECHO"] * 3
    assert len({message_id for _, message_id in echoes}) == 3
    assert events == [("requested", None), ("accepted", None), ("released", "peer")]
