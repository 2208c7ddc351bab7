"""store(path) reads small files from the page cache on the event loop (RWF_NOWAIT).

The fast path must give exactly what the worker-thread reader gives, and step aside
(None) for everything it does not handle, so the thread path decides and reports.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from aionetdicom.services import storage
from tests.dicom_files import make_ct, write_file

pytestmark = pytest.mark.skipif(
    storage._RWF_NOWAIT is None, reason="preadv(RWF_NOWAIT) is Linux-only"
)


def write_ct(folder: Path) -> Path:
    path = folder / "ct.dcm"
    write_file(make_ct(seed=3), path)
    return path


def test_cached_file_matches_the_thread_reader(tmp_path: Path) -> None:
    path = write_ct(tmp_path)
    path.read_bytes()  # in the page cache now
    cached = storage._read_cached(path)
    expected = storage._read_file_meta(path)
    assert cached is not None
    assert cached.sop_class_uid == expected.sop_class_uid
    assert cached.sop_instance_uid == expected.sop_instance_uid
    assert cached.transfer_syntax == expected.transfer_syntax
    assert cached.dataset_offset == expected.dataset_offset
    assert cached.raw is not None
    assert expected.raw is not None
    assert bytes(cached.raw) == bytes(expected.raw)
    assert bytes(cached.raw) == path.read_bytes()[expected.dataset_offset :]


def test_not_a_dicom_file_is_left_to_the_thread_reader(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"\0" * 1000)
    assert storage._read_cached(path) is None


def test_missing_file_is_left_to_the_thread_reader(tmp_path: Path) -> None:
    assert storage._read_cached(tmp_path / "missing.dcm") is None


def test_large_file_is_left_to_the_streaming_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_ct(tmp_path)
    monkeypatch.setattr(storage, "SMALL_FILE_BYTES", path.stat().st_size - 1)
    assert storage._read_cached(path) is None


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs are POSIX")
def test_fifo_is_not_opened_for_a_blocking_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    assert storage._read_cached(fifo) is None  # returns at once: no writer needed


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm (tmpfs)")
def test_tmpfs_file_is_read_inline() -> None:
    """tmpfs refuses RWF_NOWAIT, but memory never blocks: the file is read inline."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        path = write_ct(Path(folder))
        assert storage._in_memory(path.stat().st_dev, path)
        cached = storage._read_cached(path)
        assert cached is not None
        assert cached.raw is not None
        assert bytes(cached.raw) == bytes(storage._read_file_meta(path).raw or b"")


def test_memory_file_system_detection_agrees_with_stat(tmp_path: Path) -> None:
    """``stat -f`` (coreutils) is the independent witness of the file system type."""
    import subprocess

    path = write_ct(tmp_path)
    kind = subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert storage._in_memory(path.stat().st_dev, path) is (kind in ("tmpfs", "ramfs"))
