"""C-STORE against DCMTK: our SCU (library and storescu app) to ``/usr/bin/storescp``.

storescp runs bit-preserving (``+B``: it writes the data set bytes exactly as received)
and accepts every transfer syntax it knows (``+xa``), at ``-d`` so that its log shows
each C-STORE-RQ's fields. Files are made with pydicom in ``tests/dicom_files.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from aionetdicom import AE, NegotiationError
from aionetdicom.contexts import VERIFICATION, PresentationContext
from aionetdicom.datasets import read_file_meta
from aionetdicom.dimse.command_set import Priority
from aionetdicom.services.storage import contexts_for_files
from tests.dicom_files import (
    CT_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    file_bytes,
    make_ct,
    make_mr,
    make_multiframe,
    make_sc8,
    write_file,
)

pytestmark = pytest.mark.interop

STORESCP = "/usr/bin/storescp"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
HOST = "127.0.0.1"
KEY_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientName",
    "PatientID",
    "Modality",
    "Rows",
    "Columns",
    "BitsAllocated",
)


@dataclass
class StoreSCP:
    """A running DCMTK storescp, where it writes, and its log."""

    process: subprocess.Popen[bytes]
    port: int
    folder: Path
    log_path: Path

    def log(self) -> str:
        """What storescp logged so far."""
        return self.log_path.read_text(errors="replace")

    def stored(self, sop_instance_uid: str, timeout: float = 5.0) -> Path:
        """The file storescp wrote for ``sop_instance_uid`` (named ``<modality>.<uid>``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [p for p in self.folder.iterdir() if p.name.endswith("." + sop_instance_uid)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                pytest.fail(f"storescp wrote no file for {sop_instance_uid}:\n{self.log()[-3000:]}")
            time.sleep(0.02)

    def has_stored(self, sop_instance_uid: str) -> bool:
        """True when a file for ``sop_instance_uid`` exists now."""
        return any(p.name.endswith("." + sop_instance_uid) for p in self.folder.iterdir())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreSCP]:
    """storescp -d +xa +B on a free port, output to a fresh folder; killed afterwards."""
    base = tmp_path_factory.mktemp("storescp")
    folder = base / "out"
    folder.mkdir()
    log_path = base / "storescp.log"
    port = _free_port()
    command = [STORESCP, "-d", "+xa", "+B", "-od", str(folder), str(port)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=DCMTK_ENV,
            start_new_session=True,
        )
    scp = StoreSCP(process, port, folder, log_path)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.fail(f"storescp exited with {process.returncode}:\n{scp.log()}")
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"storescp did not listen on {port}:\n{scp.log()}")
                time.sleep(0.05)
        yield scp
    finally:
        _stop(process)


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its File Meta Information."""
    data = path.read_bytes()
    return data[read_file_meta(path).dataset_offset :]


def assert_same_instance(ours: pydicom.Dataset, stored: Path) -> pydicom.FileDataset:
    """The stored file holds ``ours``: key attributes and pixel data are equal."""
    theirs = pydicom.dcmread(stored)
    for keyword in KEY_ATTRIBUTES:
        assert theirs.get(keyword) == ours.get(keyword), keyword
    assert theirs.PixelData == ours.PixelData
    return theirs


MAKERS = {"ct": make_ct, "mr": make_mr, "multiframe": make_multiframe, "sc8": make_sc8}
RAW_CASES = [
    ("ct", ExplicitVRLittleEndian),
    ("ct", ImplicitVRLittleEndian),
    ("mr", ExplicitVRLittleEndian),
    ("mr", ImplicitVRLittleEndian),
    ("multiframe", ExplicitVRLittleEndian),
    ("multiframe", ImplicitVRLittleEndian),
    ("mr", DeflatedExplicitVRLittleEndian),
    ("sc8", JPEGBaseline8Bit),
    ("multiframe", RLELossless),
]


@pytest.mark.parametrize(("kind", "syntax"), RAW_CASES, ids=[f"{k}-{s.name}" for k, s in RAW_CASES])
async def test_file_is_stored_as_it_is(
    storescp: StoreSCP, tmp_path: Path, kind: str, syntax: str
) -> None:
    """A file in an accepted transfer syntax reaches storescp byte for byte."""
    ds = MAKERS[kind]()
    path = write_file(ds, tmp_path / f"{kind}.dcm", syntax)
    contexts = [PresentationContext(ds.SOPClassUID, (syntax,))]
    async with AE("OURSCU").associate(HOST, storescp.port, contexts=contexts) as assoc:
        assert assoc.accepted_contexts[0].transfer_syntax == syntax
        status = await assoc.store(path)
    assert status.is_success, status
    stored = storescp.stored(ds.SOPInstanceUID)
    assert read_file_meta(stored).transfer_syntax == syntax
    assert dataset_bytes(stored) == dataset_bytes(path)
    theirs = pydicom.dcmread(stored)
    ours = pydicom.dcmread(path)
    for keyword in KEY_ATTRIBUTES:
        assert theirs.get(keyword) == ours.get(keyword), keyword
    assert theirs.PixelData == ours.PixelData
    if syntax != JPEGBaseline8Bit:
        assert theirs.pixel_array.tobytes() == ds.PixelData


async def test_big_file_is_streamed_to_storescp(storescp: StoreSCP, tmp_path: Path) -> None:
    """A ~40 MB file from a path (sent in chunks, never read whole) arrives byte for byte."""
    ds = make_sc8(5000, 8000, seed=12)
    path = write_file(ds, tmp_path / "big.dcm", ExplicitVRLittleEndian)
    contexts = [PresentationContext(SECONDARY_CAPTURE_IMAGE_STORAGE, (ExplicitVRLittleEndian,))]
    async with AE("OURSCU").associate(HOST, storescp.port, contexts=contexts) as assoc:
        status = await assoc.store(path)
    assert status.is_success, status
    stored = storescp.stored(ds.SOPInstanceUID, timeout=30)
    assert read_file_meta(stored).transfer_syntax == ExplicitVRLittleEndian
    assert dataset_bytes(stored) == dataset_bytes(path)
    assert pydicom.dcmread(stored).PixelData == ds.PixelData


async def test_files_with_contexts_for_files(storescp: StoreSCP, tmp_path: Path) -> None:
    """contexts_for_files proposes what a mixed batch needs; every file is stored."""
    made = [
        (make_ct(seed=1), ExplicitVRLittleEndian),
        (make_mr(seed=2), ImplicitVRLittleEndian),
        (make_multiframe(seed=3), DeflatedExplicitVRLittleEndian),
        (make_sc8(seed=4), JPEGBaseline8Bit),
        (make_sc8(seed=5), ExplicitVRLittleEndian),
    ]
    paths = [write_file(ds, tmp_path / f"{i}.dcm", ts) for i, (ds, ts) in enumerate(made)]
    contexts = contexts_for_files(paths)
    async with AE("OURSCU").associate(HOST, storescp.port, contexts=contexts) as assoc:
        statuses = [await assoc.store(path) for path in paths]
    assert [int(s) for s in statuses] == [0] * len(paths)
    for ds, _ in made:
        stored = storescp.stored(ds.SOPInstanceUID)
        theirs = pydicom.dcmread(stored)
        assert theirs.SOPInstanceUID == ds.SOPInstanceUID
        assert theirs.PatientID == ds.PatientID
    jpeg = storescp.stored(made[3][0].SOPInstanceUID)
    assert read_file_meta(jpeg).transfer_syntax == JPEGBaseline8Bit


async def test_store_dataset_path_and_bytes(storescp: StoreSCP, tmp_path: Path) -> None:
    """All three kinds of source arrive; files and bytes go byte for byte."""
    by_dataset, by_path, by_bytes = make_ct(seed=10), make_mr(seed=11), make_ct(seed=12)
    path = write_file(by_path, tmp_path / "mr.dcm", ExplicitVRLittleEndian)
    data = file_bytes(by_bytes, ExplicitVRLittleEndian)
    contexts = [
        PresentationContext(CT_IMAGE_STORAGE, (ExplicitVRLittleEndian,)),
        PresentationContext(by_path.SOPClassUID, (ExplicitVRLittleEndian,)),
    ]
    async with AE("OURSCU").associate(HOST, storescp.port, contexts=contexts) as assoc:
        assert (await assoc.store(by_dataset)).is_success
        assert (await assoc.store(path)).is_success
        assert (await assoc.store(data)).is_success
    assert_same_instance(by_dataset, storescp.stored(by_dataset.SOPInstanceUID))
    stored_path = storescp.stored(by_path.SOPInstanceUID)
    assert dataset_bytes(stored_path) == dataset_bytes(path)
    assert_same_instance(by_path, stored_path)
    stored_bytes = storescp.stored(by_bytes.SOPInstanceUID)
    assert dataset_bytes(stored_bytes) == data[read_file_meta(io.BytesIO(data)).dataset_offset :]
    assert_same_instance(by_bytes, stored_bytes)


async def test_explicit_file_converted_to_implicit(storescp: StoreSCP, tmp_path: Path) -> None:
    """Only Implicit VR LE proposed: the Explicit VR LE file is converted and stored."""
    ds = make_ct(seed=20)
    path = write_file(ds, tmp_path / "ct.dcm", ExplicitVRLittleEndian)
    contexts = [PresentationContext(CT_IMAGE_STORAGE, (ImplicitVRLittleEndian,))]
    async with AE("OURSCU").associate(HOST, storescp.port, contexts=contexts) as assoc:
        status = await assoc.store(path)
    assert status.is_success
    stored = storescp.stored(ds.SOPInstanceUID)
    assert read_file_meta(stored).transfer_syntax == ImplicitVRLittleEndian
    assert dataset_bytes(stored) != dataset_bytes(path)
    theirs = assert_same_instance(ds, stored)
    assert theirs.pixel_array.tobytes() == ds.PixelData
    assert theirs.ImagePositionPatient == ds.ImagePositionPatient


async def test_jpeg_not_accepted_raises_before_sending(storescp: StoreSCP, tmp_path: Path) -> None:
    """A JPEG file with only uncompressed syntaxes accepted: NegotiationError, nothing sent."""
    ds = make_sc8(seed=30)
    path = write_file(ds, tmp_path / "sc.dcm", JPEGBaseline8Bit)
    contexts = [
        *VERIFICATION,
        PresentationContext(SECONDARY_CAPTURE_IMAGE_STORAGE, (ExplicitVRLittleEndian,)),
    ]
    sent: list[object] = []
    async with AE("OURSCU").associate(HOST, storescp.port, contexts=contexts) as assoc:
        original = assoc.send_message

        async def counting(*args: object, **kwargs: object) -> None:
            sent.append(args)
            await original(*args, **kwargs)  # type: ignore[arg-type]

        assoc.send_message = counting  # type: ignore[method-assign]
        with pytest.raises(NegotiationError) as caught:
            await assoc.store(path)
        assert sent == []
        assert (await assoc.echo()).is_success
    message = str(caught.value)
    assert message.startswith(
        "Secondary Capture Image Storage (1.2.840.10008.5.1.4.1.1.7) in JPEG Baseline"
    )
    assert "was not accepted; accepted for this SOP class: Explicit VR Little Endian" in message
    assert len(sent) == 1  # the C-ECHO only
    await anyio.sleep(0.2)
    assert not storescp.has_stored(ds.SOPInstanceUID)
    assert ds.SOPInstanceUID not in storescp.log()


async def test_priority_and_move_originator_reach_storescp(
    storescp: StoreSCP, tmp_path: Path
) -> None:
    """storescp's -d log shows the priority and move originator we sent."""
    ds = make_ct(seed=40)
    contexts = [PresentationContext(CT_IMAGE_STORAGE, (ExplicitVRLittleEndian,))]
    async with AE("OURSCU").associate(HOST, storescp.port, contexts=contexts) as assoc:
        status = await assoc.store(
            ds,
            priority=Priority.HIGH,
            move_originator_ae_title="MOVER-AE",
            move_originator_message_id=4242,
        )
    assert status.is_success
    storescp.stored(ds.SOPInstanceUID)
    log = storescp.log()
    at = log.index(f"Affected SOP Instance UID     : {ds.SOPInstanceUID}")
    block = log[at - 1000 : at + 1000]
    assert re.search(r"Priority\s*: high", block)
    assert re.search(r"Move Originator AE Title\s*: MOVER-AE", block)
    assert re.search(r"Move Originator ID\s*: 4242", block)


# ---------------------------------------------------------------------- the storescu app


def run_storescu(*args: str) -> subprocess.CompletedProcess[str]:
    """Run our storescu app as ``python -m aionetdicom storescu``."""
    return subprocess.run(
        [sys.executable, "-m", "aionetdicom", "storescu", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_storescu_app_scans_a_folder(storescp: StoreSCP, tmp_path: Path) -> None:
    """+sd +r sends every DICOM file under a folder, skips the rest with a warning."""
    made = [make_ct(seed=50), make_mr(seed=51), make_sc8(seed=52)]
    write_file(made[0], tmp_path / "a.dcm", ExplicitVRLittleEndian)
    (tmp_path / "sub").mkdir()
    write_file(made[1], tmp_path / "sub" / "b.dcm", ImplicitVRLittleEndian)
    write_file(made[2], tmp_path / "sub" / "c", JPEGBaseline8Bit)
    (tmp_path / "sub" / "notes.txt").write_text("not DICOM")
    result = run_storescu("-aec", "STORESCP", "+sd", "+r", HOST, str(storescp.port), str(tmp_path))
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "3 sent, 0 failed" in result.stdout
    assert "notes.txt" in result.stderr
    assert "W:" in result.stderr
    for ds in made:
        assert pydicom.dcmread(storescp.stored(ds.SOPInstanceUID)).PatientID == ds.PatientID


def test_storescu_app_reports_failures(storescp: StoreSCP, tmp_path: Path) -> None:
    """-xi proposes Implicit VR LE only: the JPEG file fails, the other is converted."""
    good, jpeg = make_ct(seed=60), make_sc8(seed=61)
    good_path = write_file(good, tmp_path / "good.dcm", ExplicitVRLittleEndian)
    jpeg_path = write_file(jpeg, tmp_path / "jpeg.dcm", JPEGBaseline8Bit)
    result = run_storescu("-xi", HOST, str(storescp.port), str(good_path), str(jpeg_path))
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert "1 sent, 1 failed" in result.stdout
    assert "JPEG Baseline" in result.stderr
    stored = storescp.stored(good.SOPInstanceUID)
    assert read_file_meta(stored).transfer_syntax == ImplicitVRLittleEndian
    assert not storescp.has_stored(jpeg.SOPInstanceUID)
