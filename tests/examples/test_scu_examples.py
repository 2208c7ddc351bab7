"""The SCU examples (echo, store, find, get, move) against real peers on 127.0.0.1.

echo.py and store.py talk to DCMTK's storescp (which grants no operations window, so
store.py sends one file at a time) and store.py also to examples/storage_scp.py with a
window of 8 (several C-STOREs in flight). find.py, get.py and move.py query our qrscp
app, filled by DCMTK's storescu; a DCMTK storescp is the C-MOVE destination.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from tests.examples.helpers import (
    DCMTK,
    HOST,
    dcmtk_received,
    example,
    load_example,
    make_files,
    run_example,
    terminate,
    wait_for_line,
    wait_until,
)
from tests.interop.test_echo_dcmtk import (
    DCMTK_ENV,
    Peer,
    free_port,
    our_app,
    output,
    run,
    start_peer,
    stop,
)

pytestmark = pytest.mark.interop

QR_AET = "QRSCP"
DEST_AET = "DESTSCP"


@pytest.fixture(scope="module")
def storescp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """DCMTK's storescp writing into ``<its folder>/out``."""
    folder = tmp_path_factory.mktemp("storescp")
    (folder / "out").mkdir()
    port = free_port()
    peer = start_peer(
        [f"{DCMTK}storescp", "-aet", "STORESCP", "-od", str(folder / "out"), str(port)],
        folder / "storescp.log",
        port=port,
        env=DCMTK_ENV,
    )
    yield peer
    stop(peer)


@dataclass
class Archive:
    qrscp: Peer
    destination: Peer
    moved: Path
    study_a: dict[str, Path]  # SOP Instance UID -> file, Doe^Jane
    study_b: dict[str, Path]  # Roe^Rick
    uid_a: str
    uid_b: str


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """Our qrscp holding study A (4 instances) and study B (2), stored by DCMTK storescu,
    with a DCMTK storescp as C-MOVE destination DESTSCP."""
    folder = tmp_path_factory.mktemp("archive")
    moved = folder / "moved"
    moved.mkdir()
    destination_port = free_port()
    destination = start_peer(
        [f"{DCMTK}storescp", "-aet", DEST_AET, "-od", str(moved), str(destination_port)],
        folder / "destination.log",
        port=destination_port,
        env=DCMTK_ENV,
    )
    port = free_port()
    qrscp = start_peer(
        our_app(
            "qrscp", str(port), "--bind", HOST, "-od", str(folder / "storage"),
            "--destination", f"{DEST_AET}={HOST}:{destination_port}", "--max-runtime", "120",
        ),
        folder / "qrscp.log",
        port=port,
    )  # fmt: skip
    try:
        study_a = make_files(folder / "a", 4, patient="Doe^Jane")
        study_b = make_files(folder / "b", 2, patient="Roe^Rick")
        paths = [str(path) for path in [*study_a.values(), *study_b.values()]]
        stored = run([f"{DCMTK}storescu", "-aec", QR_AET, HOST, str(port), *paths], dcmtk=True)
        assert stored.returncode == 0, output(stored) + qrscp.log()
        uid_a = str(pydicom.dcmread(next(iter(study_a.values()))).StudyInstanceUID)
        uid_b = str(pydicom.dcmread(next(iter(study_b.values()))).StudyInstanceUID)
        yield Archive(qrscp, destination, moved, study_a, study_b, uid_a, uid_b)
    finally:
        stop(qrscp)
        stop(destination)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A ``main()`` called in this process configures logging; undo it afterwards."""
    root, library = logging.getLogger(), logging.getLogger("aionetdicom")
    level, handlers, library_level = root.level, list(root.handlers), library.level
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    library.setLevel(library_level)


def peer_args(peer: Peer, called: str) -> list[str]:
    return [HOST, str(peer.port), "-aec", called]


# ---------------------------------------------------------------------- echo.py


def test_echo_succeeds_against_dcmtk(storescp: Peer) -> None:
    result = run_example("echo", *peer_args(storescp, "STORESCP"), "--count", "2")
    assert result.returncode == 0, output(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all("to STORESCP" in line and "0x0000 Success" in line for line in lines)


def test_echo_reports_a_refused_connection_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert load_example("echo").main([HOST, str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.startswith("echo: error: ")
    assert "Connection refused" in err
    assert "Traceback" not in err


def test_echo_rejects_a_bad_ae_title(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        load_example("echo").main([HOST, "104", "-aec", "MUCH_TOO_LONG_AE_TITLE"])
    assert exited.value.code == 2
    assert "-aec/--called-aet" in capsys.readouterr().err


# ---------------------------------------------------------------------- store.py


def test_store_sends_a_folder_one_at_a_time_to_dcmtk(storescp: Peer, tmp_path: Path) -> None:
    """DCMTK grants no operations window: the files go one after the other; a file in
    the folder that is not DICOM is skipped with a warning."""
    files = make_files(tmp_path / "in" / "nested", 4)
    (tmp_path / "in" / "README.txt").write_text("not DICOM")
    result = run_example("store", *peer_args(storescp, "STORESCP"), str(tmp_path / "in"))
    assert result.returncode == 0, output(result)
    assert "sending 4 file(s) to STORESCP: one at a time (window 1)" in result.stdout
    assert result.stdout.count("stored ") == 4
    assert "4 stored, 0 failed" in result.stdout
    assert "skipping" in result.stderr
    assert "README.txt" in result.stderr
    out = Path(storescp.log_path.parent / "out")
    wait_until(lambda: set(files) <= dcmtk_received(out), "the files at storescp")


def test_store_uses_the_operations_window_of_storage_scp(tmp_path: Path) -> None:
    """examples/storage_scp.py --window 8 grants the window: 8 C-STOREs in flight; every
    file arrives, filed by study."""
    files = make_files(tmp_path / "in", 10)
    port = free_port()
    scp = start_peer(
        example(
            "storage_scp", str(port), "--bind", HOST, "-o", str(tmp_path / "out"),
            "--window", "8",
        ),
        tmp_path / "scp.log",
        port=port,
    )  # fmt: skip
    try:
        wait_for_line(scp, "storage_scp listening on")
        result = run_example(
            "store", HOST, str(port), "-aec", "STORE_SCP", "--window", "8", str(tmp_path / "in")
        )
        assert result.returncode == 0, output(result) + scp.log()
        assert "sending 10 file(s) to STORE_SCP: 8 at once (window 8)" in result.stdout
        assert "10 stored, 0 failed" in result.stdout
        assert terminate(scp) == 0, scp.log()
    finally:
        stop(scp)
    study = pydicom.dcmread(next(iter(files.values()))).StudyInstanceUID
    stored = {path.stem for path in (tmp_path / "out" / study).glob("*.dcm")}
    assert stored == set(files)


def test_store_reports_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_example("store").main([HOST, "104", "/no/such/file.dcm"]) == 1
    err = capsys.readouterr().err
    assert "store: error: /no/such/file.dcm: no such file or folder" in err


# ---------------------------------------------------------------------- find.py


def test_find_prints_matches(archive: Archive) -> None:
    result = run_example(
        "find", *peer_args(archive.qrscp, QR_AET), "-k", "PatientName", "-k", "StudyInstanceUID"
    )
    assert result.returncode == 0, output(result)
    assert result.stdout.count("# match ") == 2
    assert "(0010,0010) PatientName PN: Doe^Jane" in result.stdout
    assert "(0010,0010) PatientName PN: Roe^Rick" in result.stdout
    assert f"StudyInstanceUID UI: {archive.uid_a}" in result.stdout
    assert "find: 2 match(es); final status 0x0000 Success" in result.stderr


def test_find_json_is_dicom_json(archive: Archive) -> None:
    """--json: a JSON array of DICOM JSON objects (tags as keys, vr and Value)."""
    result = run_example(
        "find", *peer_args(archive.qrscp, QR_AET), "--json",
        "-k", "PatientName=doe*", "-k", "StudyInstanceUID", "-k", "NumberOfStudyRelatedInstances",
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    matches = json.loads(result.stdout)
    assert len(matches) == 1
    match = matches[0]
    assert match["0020000D"] == {"vr": "UI", "Value": [archive.uid_a]}
    assert match["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert match["00201208"]["Value"] == [4]
    assert pydicom.Dataset.from_json(match).StudyInstanceUID == archive.uid_a


def test_find_limit_cancels_the_rest(archive: Archive) -> None:
    result = run_example(
        "find", *peer_args(archive.qrscp, QR_AET), "--limit", "1", "-k", "StudyInstanceUID"
    )
    assert result.returncode == 0, output(result)
    assert result.stdout.count("# match ") == 1
    assert "stopped at --limit" in result.stderr


def test_find_rejects_an_unknown_keyword(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    find = load_example("find")
    assert find.main([*peer_args(archive.qrscp, QR_AET), "-k", "PatientNmae=X"]) == 1
    assert "'PatientNmae' is not a DICOM keyword" in capsys.readouterr().err


# ---------------------------------------------------------------------- get.py


def test_get_saves_a_study_into_a_folder(archive: Archive, tmp_path: Path) -> None:
    result = run_example(
        "get", *peer_args(archive.qrscp, QR_AET), "-o", str(tmp_path / "got"),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={archive.uid_a}",
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    assert result.stdout.count("saved ") == 4
    assert "completed 4, failed 0, warning 0; final status 0x0000" in result.stderr
    saved = {path.stem: pydicom.dcmread(path) for path in (tmp_path / "got").glob("*.dcm")}
    assert set(saved) == set(archive.study_a)
    assert all(ds.SOPInstanceUID == uid for uid, ds in saved.items())


# ---------------------------------------------------------------------- move.py


def test_move_prints_progress_and_delivers(archive: Archive) -> None:
    result = run_example(
        "move", *peer_args(archive.qrscp, QR_AET), "--destination", DEST_AET,
        "-k", f"StudyInstanceUID={archive.uid_b}",
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("progress: ")
    assert "remaining" in lines[0]
    assert lines[-1].startswith("done: 0x0000 ")
    assert "2 completed, 0 failed, 0 warning" in lines[-1]
    wait_until(lambda: set(archive.study_b) <= dcmtk_received(archive.moved), "moved files")


def test_move_to_an_unknown_destination_fails(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    move = load_example("move")
    args = ["--destination", "NOBODY", "-k", f"StudyInstanceUID={archive.uid_a}"]
    assert move.main([*peer_args(archive.qrscp, QR_AET), *args]) == 1
    assert "done: 0xA801 Refused: move destination unknown" in capsys.readouterr().out
