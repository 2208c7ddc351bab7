"""examples/storage_scp.py receiving from DCMTK's storescu and echoscu, then stopping
gracefully on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from tests.examples.helpers import DCMTK, HOST, example, make_files, terminate, wait_for_line
from tests.interop.test_echo_dcmtk import free_port, output, run, start_peer, stop

pytestmark = pytest.mark.interop


def test_storage_scp_files_instances_by_study(tmp_path: Path) -> None:
    """Two studies from DCMTK storescu land in one folder each, named by SOP Instance
    UID; C-ECHO works; SIGTERM stops the SCP with status 0 and a count."""
    study_a = make_files(tmp_path / "a", 3)
    study_b = make_files(tmp_path / "b", 1)
    out = tmp_path / "out"
    port = free_port()
    scp = start_peer(
        example("storage_scp", str(port), "--bind", HOST, "-o", str(out), "-aet", "ARCHIVE"),
        tmp_path / "scp.log",
        port=port,
    )
    try:
        wait_for_line(scp, f"storage_scp listening on {HOST}:{port} as ARCHIVE")
        echo = run([f"{DCMTK}echoscu", "-aec", "ARCHIVE", HOST, str(port)], dcmtk=True)
        assert echo.returncode == 0, output(echo) + scp.log()
        paths = [str(path) for path in [*study_a.values(), *study_b.values()]]
        store = run([f"{DCMTK}storescu", "-aec", "ARCHIVE", HOST, str(port), *paths], dcmtk=True)
        assert store.returncode == 0, output(store) + scp.log()
        assert terminate(scp) == 0, scp.log()
    finally:
        stop(scp)
    log = scp.log()
    assert "C-ECHO from ECHOSCU" in log
    assert "SIGTERM: shutting down" in log
    assert "storage_scp stopped after storing 4 instance(s)" in log
    for files in (study_a, study_b):
        study = str(pydicom.dcmread(next(iter(files.values()))).StudyInstanceUID)
        stored = {path.stem: path for path in (out / study).iterdir()}
        assert set(stored) == set(files)
        for uid, path in stored.items():
            ds = pydicom.dcmread(path)
            assert ds.SOPInstanceUID == uid
            assert ds.file_meta.MediaStorageSOPInstanceUID == uid
            assert ds.PixelData == pydicom.dcmread(files[uid]).PixelData


def test_storage_scp_refuses_an_output_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run(example("storage_scp", str(free_port()), "-o", str(tmp_path / "file")))
    assert result.returncode == 1
    assert "storage_scp: error: cannot create" in result.stderr
    assert "Traceback" not in result.stderr
