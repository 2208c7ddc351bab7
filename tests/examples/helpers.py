"""What the example tests share: running the scripts in examples/ and making DICOM files.

Each script runs as a subprocess (``sys.executable examples/<name>.py ...``), exactly as
a user runs it, or, for quick checks of its command line, has its ``main()`` called in
this process; the DCMTK helpers of ``tests.interop.test_echo_dcmtk`` start the peers.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from pydicom.uid import generate_uid

from tests.dicom_files import make_ct, make_mr, write_file
from tests.interop.test_echo_dcmtk import Peer, run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HOST = "127.0.0.1"
DCMTK = "/usr/bin/"


def example(name: str, *args: str) -> list[str]:
    """The command line running ``examples/<name>.py`` with ``args``."""
    return [sys.executable, str(EXAMPLES / f"{name}.py"), *args]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (to call its ``main`` in this process: no start-up
    cost of a subprocess, for checks that need no peer)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the scripts import _common from their folder
    module_name = f"example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example to completion (20 s at most) and capture its output."""
    return run(example(name, *args))


def make_files(
    folder: Path, count: int, *, patient: str = "Doe^Jane", study: str | None = None
) -> dict[str, Path]:
    """``count`` small CT and MR files of one study in ``folder``: SOP Instance UID -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    study = study or generate_uid()
    series = {"CT": generate_uid(), "MR": generate_uid()}
    files: dict[str, Path] = {}
    for number in range(count):
        modality = "CT" if number % 2 == 0 else "MR"
        ds = make_ct(seed=number) if modality == "CT" else make_mr(seed=number)
        ds.PatientName, ds.PatientID = patient, patient.upper()[:8]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[modality]
        uid = str(ds.SOPInstanceUID)
        files[uid] = write_file(ds, folder / f"{uid}.dcm")
    return files


def dcmtk_received(folder: Path) -> set[str]:
    """SOP Instance UIDs of the files DCMTK's storescp wrote (named ``CT.<uid>``)."""
    return {path.name.split(".", 1)[1] for path in folder.iterdir() if "." in path.name}


def wait_until(condition: object, what: str, timeout: float = 20.0) -> None:
    """Poll ``condition()`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def terminate(peer: Peer, timeout: float = 15.0) -> int:
    """SIGTERM the peer's process (not its group) and return its exit status."""
    peer.process.send_signal(signal.SIGTERM)
    try:
        return peer.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(peer.process.pid, signal.SIGKILL)
        peer.process.wait(timeout=10)
        pytest.fail(f"no exit within {timeout} s of SIGTERM:\n{peer.log()}")


def wait_for_line(peer: Peer, text: str, timeout: float = 10.0) -> None:
    """Wait until ``text`` is in the peer's log (fail early if it died)."""

    def seen() -> bool:
        if peer.process.poll() is not None:
            pytest.fail(f"exited with {peer.process.returncode}:\n{peer.log()}")
        return text in peer.log()

    wait_until(seen, f"{text!r} in the log", timeout)
