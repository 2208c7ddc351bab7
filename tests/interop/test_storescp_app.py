"""Our storescp app (``python -m aionetdicom storescp``) against DCMTK's storescu and echoscu.

Each SCP runs as a subprocess on 127.0.0.1 with a free port, its own output directory
and ``--max-runtime`` as a safety net; it is killed in teardown. DCMTK runs with
``TCP_NODELAY=1``. Files are made with pydicom in ``tests/dicom_files.py``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from tests.dicom_files import make_ct, make_mr, make_sc8, write_file
from tests.interop.test_echo_dcmtk import (
    ECHOSCU,
    Peer,
    free_port,
    our_app,
    output,
    run,
    start_peer,
    stop,
    wait_for_log,
)

pytestmark = pytest.mark.interop

STORESCU = "/usr/bin/storescu"
HOST = "127.0.0.1"
SCP_AET = "STORESCP"


def start_storescp(folder: Path, *flags: str) -> tuple[Peer, Path]:
    """Our storescp at -v with ``flags``, storing in ``folder/out``; the peer and that folder."""
    out = folder / "out"
    out.mkdir(parents=True)
    port = free_port()
    command = our_app(
        "storescp", str(port), "-v", "--bind", HOST, "-od", str(out), "--max-runtime", "60", *flags
    )
    return start_peer(command, folder / "storescp.log", port=port), out


def storescu(peer: Peer, *args: str) -> tuple[int, str]:
    """Run DCMTK's storescu at -v against ``peer``; its exit status and output."""
    result = run(
        [STORESCU, "-v", "-aet", "DCMTKSCU", "-aec", SCP_AET, HOST, str(peer.port), *args],
        dcmtk=True,
    )
    return result.returncode, output(result)


def uid_of(path: Path) -> str:
    """The SOP Instance UID of a DICOM file."""
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def stored(out: Path) -> dict[str, Path]:
    """The DICOM files under ``out`` (recursively) by SOP Instance UID, read with pydicom."""
    found = {}
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        found[str(ds.SOPInstanceUID)] = path
    return found


@pytest.fixture(scope="module")
def default_scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Path]]:
    """Our storescp with default options (uncompressed transfer syntaxes only)."""
    peer, out = start_storescp(tmp_path_factory.mktemp("storescp_default"))
    yield peer, out
    stop(peer)


def test_announces_where_it_listens_and_stores(default_scp: tuple[Peer, Path]) -> None:
    peer, out = default_scp
    line = f"I: storescp listening on {HOST}:{peer.port} as {SCP_AET}, storing in {out.resolve()}"
    assert line in peer.log()


def test_dcmtk_storescu_files_are_stored(default_scp: tuple[Peer, Path], tmp_path: Path) -> None:
    """CT (explicit and implicit VR) and MR files: saved, readable, same instances."""
    peer, out = default_scp
    files = [
        write_file(make_ct(seed=11), tmp_path / "ct1.dcm", ExplicitVRLittleEndian),
        write_file(make_ct(seed=12), tmp_path / "ct2.dcm", ImplicitVRLittleEndian),
        write_file(make_mr(seed=13), tmp_path / "mr.dcm", ExplicitVRLittleEndian),
    ]
    code, log = storescu(peer, *map(str, files))
    assert code == 0, log
    assert log.count("Received Store Response (Success)") == 3
    saved = stored(out)
    for path in files:
        uid = uid_of(path)
        assert uid in saved
        got, want = pydicom.dcmread(saved[uid]), pydicom.dcmread(path)
        assert got.SOPClassUID == want.SOPClassUID
        assert got.PixelData == want.PixelData
        assert saved[uid].name == f"{uid}.dcm"
    text = wait_for_log(peer, "from DCMTKSCU", count=3)
    assert f"I: Received CT Image Storage {uid_of(files[0])} from DCMTKSCU" in text
    assert f"I: Received MR Image Storage {uid_of(files[2])} from DCMTKSCU" in text


def test_dcmtk_storescu_scans_a_directory(default_scp: tuple[Peer, Path], tmp_path: Path) -> None:
    """``storescu +sd`` sends every file of a directory; all arrive."""
    peer, out = default_scp
    folder = tmp_path / "series"
    folder.mkdir()
    files = [
        write_file(make_ct(seed=20 + n), folder / f"ct{n}.dcm", ExplicitVRLittleEndian)
        for n in range(3)
    ]
    files.append(write_file(make_mr(seed=30), folder / "mr.dcm", ImplicitVRLittleEndian))
    code, log = storescu(peer, "+sd", str(folder))
    assert code == 0, log
    assert log.count("Received Store Response (Success)") == 4
    saved = stored(out)
    assert {uid_of(path) for path in files} <= saved.keys()


def test_dcmtk_echoscu(default_scp: tuple[Peer, Path]) -> None:
    peer, _ = default_scp
    result = run(
        [ECHOSCU, "-v", "-aet", "DCMTKECHO", "-aec", SCP_AET, HOST, str(peer.port)], dcmtk=True
    )
    assert result.returncode == 0, output(result)
    assert "Received Echo Response (Success)" in output(result)
    wait_for_log(peer, "Received Echo Request (MsgID 1) from DCMTKECHO")


def test_our_storescu(default_scp: tuple[Peer, Path], tmp_path: Path) -> None:
    """Our own storescu app sends to our storescp."""
    peer, out = default_scp
    files = [
        write_file(make_ct(seed=40), tmp_path / "ct.dcm", ExplicitVRLittleEndian),
        write_file(make_mr(seed=41), tmp_path / "mr.dcm", ExplicitVRLittleEndian),
    ]
    result = run(
        our_app("storescu", "-aet", "OURSCU", "-aec", SCP_AET, HOST, str(peer.port))
        + [str(path) for path in files]
    )
    assert result.returncode == 0, output(result)
    assert "2 sent, 0 failed" in result.stdout
    saved = stored(out)
    assert {uid_of(path) for path in files} <= saved.keys()
    wait_for_log(peer, f"I: Received MR Image Storage {uid_of(files[1])} from OURSCU")


def test_jpeg_refused_without_accept_all(default_scp: tuple[Peer, Path], tmp_path: Path) -> None:
    """A JPEG Baseline file: no context accepts it, storescu fails, nothing is written."""
    peer, out = default_scp
    path = write_file(make_sc8(seed=50), tmp_path / "jpeg.dcm", JPEGBaseline8Bit)
    code, log = storescu(peer, "-xy", str(path))  # -xy: propose JPEG Baseline too
    assert code != 0, log
    assert "Received Store Response (Success)" not in log
    assert "Store Failed" in log
    assert uid_of(path) not in stored(out)


def test_jpeg_stored_with_accept_all(tmp_path: Path) -> None:
    """With ``+xa`` the JPEG Baseline file is accepted and stored as sent."""
    path = write_file(make_sc8(seed=51), tmp_path / "jpeg.dcm", JPEGBaseline8Bit)
    peer, out = start_storescp(tmp_path / "scp", "+xa")
    try:
        code, log = storescu(peer, "-xy", str(path))
    finally:
        stop(peer)
    assert code == 0, log
    assert "Received Store Response (Success)" in log
    saved = stored(out)
    got = pydicom.dcmread(saved[uid_of(path)])
    assert got.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert got.PixelData == pydicom.dcmread(path).PixelData


def test_ignore_writes_nothing(tmp_path: Path) -> None:
    """``--ignore``: storescu gets Success, the output directory stays empty."""
    files = [
        write_file(make_ct(seed=60), tmp_path / "ct.dcm"),
        write_file(make_mr(seed=61), tmp_path / "mr.dcm"),
    ]
    peer, out = start_storescp(tmp_path / "scp", "--ignore")
    try:
        code, log = storescu(peer, *map(str, files))
        text = wait_for_log(peer, "from DCMTKSCU", count=2)
    finally:
        stop(peer)
    assert code == 0, log
    assert log.count("Received Store Response (Success)") == 2
    assert "not storing (--ignore)" in text
    assert list(out.iterdir()) == []


def test_sort_by_study_and_sigterm(tmp_path: Path) -> None:
    """``--sort-by-study``: one folder per Study Instance UID; SIGTERM exits 0."""
    first = make_ct(seed=70)
    second = make_mr(seed=71)
    second.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.71000000000000000000000000001"
    files = [
        write_file(first, tmp_path / "ct.dcm"),
        write_file(second, tmp_path / "mr.dcm"),
    ]
    peer, out = start_storescp(tmp_path / "scp", "--sort-by-study")
    try:
        code, log = storescu(peer, *map(str, files))
        assert code == 0, log
        assert log.count("Received Store Response (Success)") == 2
        os.kill(peer.process.pid, signal.SIGTERM)
        assert peer.process.wait(timeout=10) == 0, peer.log()
    finally:
        stop(peer)
    assert "storescp stopped" in peer.log()
    for ds in (first, second):
        path = out / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        assert pydicom.dcmread(path).SOPInstanceUID == ds.SOPInstanceUID
    assert sorted(p.name for p in out.iterdir()) == sorted(
        {str(first.StudyInstanceUID), str(second.StudyInstanceUID)}
    )
