"""All benchmarks in one run and ONE table: ours vs pynetdicom vs DCMTK, as ratios.

Six scenarios; in each, ours, pynetdicom and DCMTK are measured in the same run (so
the ratios hold on a noisy machine), every peer in its own process on a free
127.0.0.1 port, every SCP announcing a maximum PDU of 128 KiB, DCMTK with
``TCP_NODELAY=1``, the order alternating between rounds:

1. C-STORE of 1000 CT images (512x512x16 bit) over one association, SCPs ignoring the
   data (storescp ``--ignore``; ours is ``python -m aionetdicom storescp --ignore``).
   Pairs: ours, pynetdicom, storescu -> DCMTK storescp; storescu -> ours, pynetdicom;
   X -> X; ours -> ours with an operations window of 8 (bench_store.py's window SCP).
2. 200 small CT instances (64x64, ~9 KB), one association each, sequential.
3. One ~200 MB multi-frame instance, SCPs writing to /dev/shm: wall time and peak RSS
   (VmHWM) of the client and of the SCP, each SCP a fresh process per run.
4. C-FIND with 1000 matches (dcmqrscp holds at most 500 studies per storage area, so
   the query is SERIES level in one study of 1000 series; every SCP answers the same).
5. 500 concurrent associations (associate, C-ECHO, small C-STORE, release) into our
   SCP (storescp app), and X -> X (pynetdicom's SCP, storescp ``--fork``).
6. Operations window 8 vs 1 through a proxy adding 5 ms each way (bench_window.py's).

    python benchmarks/bench_all.py                 # everything, 3 rounds
    python benchmarks/bench_all.py --quick         # smaller counts, 1 round (< 3 min)
    python benchmarks/bench_all.py --only 1,3 --rounds 1

Python clients run in their own process and time themselves after imports; DCMTK
programs are timed from outside (process start included; where that dominates, a row
estimates the time without it from runs against a closed port). Every cell is a time
(or a peak RSS) and the ratio columns say how many times ours is better (> 1: faster or
smaller). Raw numbers go to ``benchmarks/results/all-<timestamp>.json``. See
benchmarks/README.md for the rows.

The same file is the worker: ``bench_all.py _client '<json job>'`` and ``bench_all.py
_scp '<json job>'`` (pynetdicom's Storage SCP, ours and pynetdicom's C-FIND SCPs) are
what the driver starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import bench_echo
import bench_server
import bench_store
import bench_window

HOST = "127.0.0.1"
SCRIPT = str(Path(__file__).resolve())
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = bench_store.DEFAULT_CACHE
SHM = bench_store.DEFAULT_OUT
#: The DCMTK programs, by absolute path.
DCMTK = {name: f"/usr/bin/{name}" for name in ("storescp", "storescu", "findscu", "dcmqrscp")}
#: Debian's DCMTK keeps Nagle's algorithm on unless this is set (40 ms per reply).
DCMTK_ENV = bench_store.DCMTK_ENV
CLIENT_TITLE = "BENCH"
STORE_TITLE = bench_store.SCP_TITLE
QR_TITLE = "QRSCP"
SCP_MAX_PDU = bench_store.SCP_MAX_PDU
CT_IMAGE_STORAGE = bench_store.CT_IMAGE_STORAGE
MF_WORD_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
SYNTAXES = (bench_store.EXPLICIT_VR_LITTLE_ENDIAN, bench_store.IMPLICIT_VR_LITTLE_ENDIAN)
#: Timeouts of the Python clients (ACSE, DIMSE, network) and of one client run.
PEER_TIMEOUT = 120.0
RUN_TIMEOUT = 600.0
#: pynetdicom's SCP drops an idle association after this, as our storescp app does.
SCP_IDLE_TIMEOUT = 60.0
#: C-FIND data: one study, this many series, one instance each (dcmqrscp's DB cap is
#: 500 studies per storage area, so 1000 matches must be below study level).
QR_ROOT = "1.2.826.0.1.3680043.9.7433.77"
QR_STUDY = f"{QR_ROOT}.1"
#: The C-FIND identifier: every series of the study, three return keys.
QR_KEYS = {
    "QueryRetrieveLevel": "SERIES",
    "StudyInstanceUID": QR_STUDY,
    "SeriesInstanceUID": "",
    "Modality": "",
    "SeriesNumber": "",
}
#: Closed-port runs per DCMTK cell to estimate process start (as bench_echo.py).
STARTUP_SAMPLES = 25
#: Tries of a failed run (the failures are footnoted in its cell).
TRIES = 2

T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    store_count: int = 1000
    small_count: int = 200
    frames: int = 100
    matches: int = 1000
    queries: int = 7
    burst: int = 500
    window_count: int = 200
    latency_ms: float = 5.0


DEFAULT_SIZES = Sizes()
QUICK_SIZES = Sizes(
    store_count=200, small_count=50, frames=25, queries=3, burst=100, window_count=50
)


# ====================================================================== shared helpers


def vm_kb(pid: int, field_name: str) -> int:
    """A kB field (VmHWM, VmRSS) of /proc/<pid>/status."""
    return bench_server.status_kb(pid, field_name)


def own_peak_kb() -> int:
    return vm_kb(os.getpid(), "VmHWM")


def error_text(exc: BaseException) -> str:
    while getattr(exc, "exceptions", None):  # an exception group: show a real error
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    text = str(exc) or type(exc).__name__
    if isinstance(exc, subprocess.TimeoutExpired):
        text = f"timed out after {exc.timeout:.0f} s"
    return " ".join(text.split())[:300]


def last_lines(text: str | bytes, count: int = 2) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-count:])


def qr_series(index: int) -> dict[str, Any]:
    """The series-level keys of series ``index`` (0-based) of the C-FIND study."""
    return {
        "StudyInstanceUID": QR_STUDY,
        "SeriesInstanceUID": f"{QR_ROOT}.2.{index + 1}",
        "Modality": "OT",
        "SeriesNumber": str(index + 1),
    }


def make_dataset(elements: dict[str, Any]) -> Any:
    """A pydicom Dataset with these elements (keyword: value)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def write_part10(path: Path, elements: dict[str, Any]) -> None:
    """A Part 10 file, Explicit VR Little Endian, of a data set with these elements."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import dcmwrite

    ds = make_dataset(elements)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = bench_store.EXPLICIT_VR_LITTLE_ENDIAN
    dcmwrite(path, ds, enforce_file_format=True)


def qr_identifiers(count: int) -> list[Any]:
    """What dcmqrscp answers for the query, prebuilt for our and pynetdicom's SCP."""
    common = {"QueryRetrieveLevel": "SERIES", "RetrieveAETitle": QR_TITLE}
    return [make_dataset({**common, **qr_series(index)}) for index in range(count)]


# ====================================================================== workers: clients


def pyn_ae(*contexts: tuple[str, Sequence[str] | None]) -> Any:
    """A pynetdicom AE requesting ``(SOP class, transfer syntaxes or None)`` contexts."""
    from pynetdicom import AE as PynAE

    pyn = PynAE(ae_title=CLIENT_TITLE)
    for uid, syntaxes in contexts:
        if syntaxes is None:
            pyn.add_requested_context(uid)
        else:
            pyn.add_requested_context(uid, list(syntaxes))
    pyn.acse_timeout = pyn.dimse_timeout = pyn.network_timeout = PEER_TIMEOUT
    return pyn


def pyn_associate(pyn: Any, port: int, aet: str) -> Any:
    assoc = pyn.associate(HOST, port, ae_title=aet)
    if not assoc.is_established:
        raise RuntimeError("pynetdicom: association not established")
    return assoc


def check(what: str, status: Any) -> None:
    """Fail unless ``status`` (ours: a Status; pynetdicom: a Dataset) is Success."""
    code = getattr(status, "Status", status)
    if code is None or not hasattr(code, "__int__") or int(code) != 0:
        raise RuntimeError(f"{what} failed ({status or 'no response'})")


def pyn_store_one(pyn: Any, port: int, item: Any) -> None:
    """Associate, C-STORE ``item`` (a path or a Dataset), release."""
    assoc = pyn_associate(pyn, port, STORE_TITLE)
    status = assoc.send_c_store(str(item) if isinstance(item, Path) else item)
    assoc.release()
    check("pynetdicom C-STORE", status)


def ours_ae() -> Any:
    from aionetdicom import AE

    return AE(
        CLIENT_TITLE,
        acse_timeout=PEER_TIMEOUT,
        dimse_timeout=PEER_TIMEOUT,
        network_timeout=PEER_TIMEOUT,
        connect_timeout=PEER_TIMEOUT,
    )


def ours_contexts(*sop_classes: str) -> list[Any]:
    from aionetdicom.contexts import PresentationContext

    return [PresentationContext(uid, SYNTAXES) for uid in sop_classes]


async def ours_store_one(ae: Any, port: int, item: Path | bytes, contexts: list[Any]) -> None:
    """Associate, C-STORE ``item`` (a file, streamed from disk, or Part 10 bytes), release."""
    async with ae.associate(HOST, port, called_ae_title=STORE_TITLE, contexts=contexts) as assoc:
        status = await assoc.store(item)
    check("C-STORE", status)


def _store_each(client: str, port: int, paths: list[Path]) -> dict[str, Any]:
    """One association per instance, sequential, after one warm-up association."""
    if client == "pynetdicom":
        pyn = pyn_ae((CT_IMAGE_STORAGE, SYNTAXES))
        pyn_store_one(pyn, port, paths[0])
        start = time.perf_counter()
        for path in paths:
            pyn_store_one(pyn, port, path)
        return {"seconds": time.perf_counter() - start}

    import anyio

    ae, contexts = ours_ae(), ours_contexts(CT_IMAGE_STORAGE)

    async def main() -> float:
        await ours_store_one(ae, port, paths[0], contexts)
        start = time.perf_counter()
        for path in paths:
            await ours_store_one(ae, port, path, contexts)
        return time.perf_counter() - start

    return {"seconds": anyio.run(main)}


def _store_big(client: str, port: int, path: Path, sop_class: str) -> dict[str, Any]:
    """One big instance over one association; seconds and this process's VmHWM."""
    if client == "pynetdicom":
        pyn = pyn_ae((sop_class, SYNTAXES))
        start_kb, start = vm_kb(os.getpid(), "VmRSS"), time.perf_counter()
        pyn_store_one(pyn, port, path)
    else:
        import anyio

        ae, contexts = ours_ae(), ours_contexts(sop_class)
        start_kb, start = vm_kb(os.getpid(), "VmRSS"), time.perf_counter()
        anyio.run(ours_store_one, ae, port, path, contexts)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_kb": own_peak_kb(), "start_kb": start_kb}


def _find(client: str, port: int, aet: str, queries: int, expect: int) -> dict[str, Any]:
    """``queries`` times [associate, C-FIND, release] after one warm-up; seconds of each."""
    query = make_dataset(QR_KEYS)
    if client == "pynetdicom":
        pyn = pyn_ae((STUDY_ROOT_FIND, None))

        def pyn_one() -> int:
            assoc = pyn_associate(pyn, port, aet)
            matches, final = 0, None
            for status, _identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
                if status and status.Status in (0xFF00, 0xFF01):
                    matches += 1
                else:
                    final = status
            assoc.release()
            check("pynetdicom C-FIND", final)
            return matches

        one: Callable[[], int] = pyn_one
    else:
        import anyio

        from aionetdicom.contexts import PresentationContext

        ae = ours_ae()
        contexts = [PresentationContext(STUDY_ROOT_FIND)]

        async def ours_one() -> int:
            matches, final = 0, None
            async with ae.associate(HOST, port, called_ae_title=aet, contexts=contexts) as assoc:
                async for status, identifier in assoc.find(query, model="study"):
                    if status.is_pending and identifier is not None:
                        matches += 1
                    else:
                        final = status
            check("C-FIND", final)
            return matches

        def one() -> int:
            return int(anyio.run(ours_one))

    times: list[float] = []
    got = one()  # warm-up
    for _ in range(queries):
        start = time.perf_counter()
        got = one()
        times.append(time.perf_counter() - start)
        if got != expect:
            raise RuntimeError(f"{got} matches, expected {expect}")
    return {"seconds": times, "matches": got}


def burst_result(
    start: float, end: float, finished: list[float], errors: dict[str, int]
) -> dict[str, Any]:
    """``seconds``: from the start until the last SUCCESSFUL association ended (a lost
    reply that times out does not count); ``wall``: until every one ended."""
    last = max(finished) if finished else end
    return {"seconds": last - start, "wall": end - start, "ok": len(finished), "errors": errors}


def _burst(client: str, port: int, count: int, tag: int) -> dict[str, Any]:
    """``count`` concurrent [associate, C-ECHO, C-STORE, release]; after one warm-up."""
    bench_server.raise_fd_limit()
    blobs = [b[0] for b in bench_server._instances(tag, count + 1, 1)]
    errors: dict[str, int] = {}
    finished: list[float] = []  # when each successful association ended
    lock = threading.Lock()

    def failed(exc: Exception) -> bool:
        what = f"{type(exc).__name__}: {error_text(exc)}"[:120]
        with lock:
            errors[what] = errors.get(what, 0) + 1
        return False

    if client == "pynetdicom":
        from pydicom import dcmread

        verification = "1.2.840.10008.1.1"
        datasets = [dcmread(io.BytesIO(blob)) for blob in blobs]

        def pyn_one(pyn: Any, dataset: Any) -> bool:
            try:
                assoc = pyn_associate(pyn, port, STORE_TITLE)
                echo = assoc.send_c_echo()
                stored = assoc.send_c_store(dataset)
                assoc.release()
                check("C-ECHO", echo)
                check("C-STORE", stored)
            except Exception as exc:
                return failed(exc)
            with lock:
                finished.append(time.perf_counter())
            return True

        def make_ae() -> Any:
            return pyn_ae((verification, None), (CT_IMAGE_STORAGE, SYNTAXES[:1]))

        if not pyn_one(make_ae(), datasets[0]):
            raise RuntimeError(f"warm-up failed: {errors}")
        finished.clear()
        barrier = threading.Barrier(count + 1)
        aes = [make_ae() for _ in range(count)]

        def run(index: int) -> None:
            barrier.wait()
            pyn_one(aes[index], datasets[index + 1])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        result = burst_result(start, time.perf_counter(), finished, errors)
        return result | {"peak_kb": own_peak_kb()}

    import anyio

    from aionetdicom.contexts import VERIFICATION

    ae = ours_ae()
    contexts = [*VERIFICATION, *ours_contexts(CT_IMAGE_STORAGE)]

    async def one(blob: bytes) -> bool:
        try:
            async with ae.associate(
                HOST, port, called_ae_title=STORE_TITLE, contexts=contexts
            ) as assoc:
                echo = await assoc.echo()
                stored = await assoc.store(blob)
            check("C-ECHO", echo)
            check("C-STORE", stored)
        except Exception as exc:
            return failed(exc)
        finished.append(time.perf_counter())
        return True

    async def main() -> dict[str, Any]:
        if not await one(blobs[0]):
            raise RuntimeError(f"warm-up failed: {errors}")
        finished.clear()
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for blob in blobs[1:]:
                tg.start_soon(one, blob)
        return burst_result(start, time.perf_counter(), finished, errors)

    result: dict[str, Any] = anyio.run(main)
    return result | {"peak_kb": own_peak_kb()}


CLIENT_JOBS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "store-each": lambda job: _store_each(
        job["client"], job["port"], sorted(Path(job["dir"]).glob("*.dcm"))[: job["count"]]
    ),
    "store-big": lambda job: _store_big(
        job["client"], job["port"], Path(job["file"]), job["sop_class"]
    ),
    "find": lambda job: _find(
        job["client"], job["port"], job["aet"], job["queries"], job["expect"]
    ),
    "burst": lambda job: _burst(job["client"], job["port"], job["count"], job["tag"]),
}


def _client_main(argv: Sequence[str]) -> None:
    """Run one JSON job (argv[0]); print one JSON line: the result or {"error": ...}."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    job = json.loads(argv[0])
    try:
        result = CLIENT_JOBS[job["kind"]](job)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {error_text(exc)}"}
    print(json.dumps(result), flush=True)


# ====================================================================== workers: SCPs


def _serve_find_ours(port: int, identifiers: list[Any]) -> None:
    import anyio

    from aionetdicom import AE, FindRequest
    from aionetdicom.contexts import VERIFICATION
    from aionetdicom.services.qr_scp import query_retrieve_contexts

    ae = AE(
        QR_TITLE,
        maximum_pdu_length=SCP_MAX_PDU,
        supported_contexts=[*VERIFICATION, *query_retrieve_contexts()],
    )

    @ae.on_find
    async def on_find(request: FindRequest) -> Any:
        for identifier in identifiers:
            yield identifier

    anyio.run(ae.serve_forever, HOST, port)


def _pyn_server(title: str, job: dict[str, Any]) -> Any:
    from pynetdicom import AE as PynAE

    pyn = PynAE(ae_title=title)
    pyn.maximum_pdu_size = SCP_MAX_PDU
    pyn.maximum_associations = job.get("associations", 10)
    pyn.acse_timeout = pyn.dimse_timeout = PEER_TIMEOUT
    pyn.network_timeout = SCP_IDLE_TIMEOUT
    return pyn


def _scp_main(argv: Sequence[str]) -> None:
    """One JSON job (argv[0]): ``find`` (ours or pynetdicom) or ``store`` (pynetdicom).

    ``find`` answers every C-FIND with the same prebuilt matches; ``store`` is a
    pynetdicom Storage SCP (CT, multi-frame SC, Verification), writing to ``out`` or not.
    """
    job = json.loads(argv[0])
    bench_server.raise_fd_limit()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    identifiers = qr_identifiers(job["matches"]) if job["kind"] == "find" else []
    if job["kind"] == "find" and job["scp"] == "ours":
        _serve_find_ours(job["port"], identifiers)
        return
    from pynetdicom import evt

    if job["kind"] == "find":
        pyn = _pyn_server(QR_TITLE, job)
        pyn.add_supported_context(STUDY_ROOT_FIND)

        def find(event: Any) -> Iterator[tuple[int, Any]]:
            for identifier in identifiers:
                yield 0xFF00, identifier

        handlers = [(evt.EVT_C_FIND, find)]
    else:
        pyn = _pyn_server(STORE_TITLE, job)
        pyn.add_supported_context("1.2.840.10008.1.1")
        for uid in (CT_IMAGE_STORAGE, MF_WORD_SC_STORAGE):
            pyn.add_supported_context(uid, list(SYNTAXES))
        out = None if job.get("out") is None else Path(job["out"])

        def store(event: Any) -> int:
            if out is not None:
                name = str(event.request.AffectedSOPInstanceUID)
                with open(out / f"{name}.dcm", "wb") as handle:
                    handle.write(event.encoded_dataset())
            return 0x0000

        handlers = [(evt.EVT_C_STORE, store)]
    pyn.start_server((HOST, job["port"]), block=True, evt_handlers=handlers)


WORKERS: dict[str, Callable[[Sequence[str]], None]] = {
    "_client": _client_main,
    "_scp": _scp_main,
}


# ====================================================================== driver: processes


def log(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def kill(process: subprocess.Popen[bytes], group: bool = False) -> None:
    """Kill a child (its whole process group with ``group``) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@contextlib.contextmanager
def started(
    command: list[str],
    port: int,
    what: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    group: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait until ``port`` listens; kill it (its group) at the end."""
    with log_path.open("ab") as output:
        streams: dict[str, Any] = {"stdout": output, "stderr": subprocess.STDOUT}
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, env=env, start_new_session=group, **streams
        )
    try:
        try:
            bench_store.wait_listening(process, port, what)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc} ({last_lines(log_path.read_bytes())})") from None
        yield process
    finally:
        kill(process, group)


def python_job(job: dict[str, Any], timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """Run a client job in a fresh Python process; its JSON result."""
    done = subprocess.run(
        [sys.executable, SCRIPT, "_client", json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{job['client']} exited {done.returncode}: {last_lines(done.stderr)}")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


@dataclass
class Exited:
    seconds: float
    returncode: int
    stderr: bytes
    peak_kb: int


def run_measured(command: list[str], timeout: float = RUN_TIMEOUT, watch: bool = False) -> Exited:
    """Run a DCMTK program; wall time from spawn to exit; with ``watch`` its peak RSS.

    The peak is VmHWM polled every 10 ms until the exit (wait4's ru_maxrss would not
    do: it counts the memory of this driver, which the child had before exec)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=DCMTK_ENV
        )
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        tree = TreeRss(process.pid, interval=0.01)
        if watch:
            tree.start()
        try:
            _, status, _usage = os.wait4(process.pid, 0)
        except BaseException:
            kill(process)
            raise
        finally:
            timer.cancel()
            if watch:
                tree.stop(final_sample=False)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if process.returncode == -signal.SIGKILL:
        raise RuntimeError(f"{Path(command[0]).name} timed out after {timeout:.0f} s")
    return Exited(seconds, process.returncode, stderr, tree.peak_kb)


def run_dcmtk(command: list[str], timeout: float = RUN_TIMEOUT, watch: bool = False) -> Exited:
    """run_measured, failing on a non-zero exit status."""
    done = run_measured(command, timeout, watch)
    if done.returncode != 0:
        name = Path(command[0]).name
        raise RuntimeError(f"{name} exited {done.returncode}: {last_lines(done.stderr)}")
    return done


def dcmtk_with_startup(
    make: Callable[[int, int], list[str]], port: int, runs: int
) -> dict[str, Any]:
    """``runs`` timed runs of ``make(port, i)``, with up to STARTUP_SAMPLES runs of
    ``make(closed_port, i)`` interleaved: process start, DCMTK start-up, refused connect."""
    closed = bench_store.free_port()
    stride = max(1, runs // STARTUP_SAMPLES)
    real: list[float] = []
    start_up: list[float] = []
    for index in range(runs):
        real.append(run_dcmtk(make(port, index)).seconds)
        if index % stride == 0:
            start_up.append(run_measured(make(closed, index)).seconds)
    return {"real": real, "closed_port": start_up}


def storescu(port: int, title: str, files: Sequence[Path | str]) -> list[str]:
    command = [DCMTK["storescu"], "-aet", CLIENT_TITLE, "-aec", title, "-R", "-xe"]
    return [*command, HOST, str(port), *(str(f) for f in files)]


def findscu(port: int, aet: str, *options: str) -> list[str]:
    command = [DCMTK["findscu"], "-aet", CLIENT_TITLE, "-aec", aet, "-S", *options]
    for keyword, value in QR_KEYS.items():
        command += ["-k", f"{keyword}={value}" if value else keyword]
    return [*command, HOST, str(port)]


def storescu_burst(port: int, paths: list[Path], count: int) -> dict[str, Any]:
    """``count`` storescu processes at once, one instance each (as burst_result)."""
    processes: list[subprocess.Popen[bytes]] = []
    finished: list[float] = []
    errors: dict[str, int] = {}
    try:
        start = time.perf_counter()
        for index in range(count):
            command = storescu(port, STORE_TITLE, [paths[index % len(paths)]])
            processes.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=DCMTK_ENV,
                )
            )
        by_pid = {process.pid: process for process in processes}
        timer = threading.Timer(RUN_TIMEOUT, lambda: [p.kill() for p in by_pid.values()])
        timer.start()
        try:
            while by_pid:  # reap them as they end, without polling every one
                pid = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT).si_pid
                if pid not in by_pid:
                    raise RuntimeError(f"another child process ({pid}) ended: the SCP?")
                if by_pid.pop(pid).wait() == 0:
                    finished.append(time.perf_counter())
        finally:
            timer.cancel()
        end = time.perf_counter()
    finally:
        for process in processes:
            if process.returncode is None:
                kill(process)
    for process in processes:
        assert process.stderr is not None
        text = last_lines(process.stderr.read(), 1)[:120]
        process.stderr.close()
        if process.returncode != 0:
            what = f"storescu exit {process.returncode}: {text}"
            errors[what] = errors.get(what, 0) + 1
    return burst_result(start, end, finished, errors)


class TreeRss(threading.Thread):
    """Peak memory of a process and its children (storescp --fork), sampled: the
    process's VmHWM plus the VmRSS of each child at the time of the sample."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.peak_children = 0
        self._stop_event = threading.Event()
        self._page_kb = os.sysconf("SC_PAGE_SIZE") // 1024

    def _rss_kb(self, pid: int | str) -> int:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page_kb
        return 0

    def sample(self) -> None:
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        own = 0
        with contextlib.suppress(OSError, KeyError, ValueError):
            own = vm_kb(self.pid, "VmHWM")
        total = own + sum(self._rss_kb(child) for child in children)
        self.peak_kb = max(self.peak_kb, total)
        self.peak_children = max(self.peak_children, len(children))

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self, final_sample: bool = True) -> None:
        self._stop_event.set()
        self.join()
        if final_sample:
            self.sample()


# ====================================================================== driver: results


@dataclass
class Measure:
    """The runs of one cell: values in the unit of the rows showing it, errors, raw data."""

    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)

    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


@dataclass
class Row:
    """A table row: measure keys for the ours, pynetdicom and DCMTK cells (None: '-')."""

    scenario: int
    label: str
    unit: str
    #: "higher" or "lower" is better (ratios are then shown with >1 = ours better), or
    #: "" for no ratio.
    better: str
    keys: tuple[str | None, str | None, str | None]


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


class Bench:
    """Settings, measurements and rows of one run."""

    def __init__(self, sizes: Sizes, rounds: int, log_dir: Path, out_root: Path) -> None:
        self.sizes = sizes
        self.rounds = rounds
        self.log_dir = log_dir
        self.out_root = out_root
        self.measures: dict[str, Measure] = {}
        self.rows: list[Row] = []
        self.titles: dict[int, str] = {}
        self.notes: dict[int, list[str]] = {}
        self.info: dict[str, Any] = {}
        self.seconds: dict[int, float] = {}

    def measure(self, key: str) -> Measure:
        return self.measures.setdefault(key, Measure())

    def note(self, scenario: int, text: str) -> None:
        self.notes.setdefault(scenario, []).append(text)

    def attempt(self, key: str, what: str, run: Callable[[], T]) -> T | None:
        """Run one measurement, up to TRIES times; every failure is recorded as an error
        of ``key`` (a footnote of its cell), None when no try succeeded."""
        for tries in range(1, TRIES + 1):
            try:
                return run()
            except Exception as exc:
                text = error_text(exc)
                self.measure(key).errors.append(text)
                again = "; trying again" if tries < TRIES else ""
                log(f"{what}: ERROR {text}{again}")
        return None

    def record(self, key: str, value: float, raw: Any = None) -> None:
        measure = self.measure(key)
        measure.values.append(value)
        if raw is not None:
            measure.raw.append(raw)

    def timed(
        self, key: str, what: str, run: Callable[[], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """attempt(), then record the result's ``seconds`` (and the result as raw data)."""
        result = self.attempt(key, what, run)
        if result is not None:
            self.record(key, result["seconds"], result)
            log(f"{what}: {result['seconds']:.3f} s")
        return result

    def partial(self, key: str, result: dict[str, Any], count: int) -> None:
        """Record the failed associations of a burst as an error of the cell."""
        if result["ok"] != count:
            worst = sorted(result["errors"].items(), key=lambda item: -item[1])[:2]
            text = "; ".join(f"{n}x {what}" for what, n in worst)
            self.measure(key).errors.append(f"{count - result['ok']} of {count} failed: {text}")

    def unavailable(self, key: str, scp_key: str) -> None:
        """The cell ``key`` could not run: its SCP (errors in ``scp_key``) did not start."""
        self.measure(key).errors.append(self.measure(scp_key).errors[-1])

    def runs(
        self, tag: str, pairs: Sequence[tuple[str, str]], available: Container[str] | None = None
    ) -> Iterator[tuple[str, str, str, str]]:
        """(client, SCP, measure key, label) of every run, the order alternating between
        rounds; a pair whose SCP is not ``available`` gets the SCP's error instead."""
        for round_index in range(self.rounds):
            for client, scp in self.order(pairs, round_index):
                key = pair_key(tag, client, scp)
                if available is not None and scp not in available:
                    self.unavailable(key, f"{tag}/scp-{scp}")
                    continue
                yield client, scp, key, f"[{tag} r{round_index + 1}] {client} -> {scp}"

    def record_mb(self, key: str, result: dict[str, Any], *names: str) -> None:
        """Record the ``<name>_kb`` fields of a result, in MB, as ``key/<name>``."""
        for name in names:
            if f"{name}_kb" in result:
                self.record(f"{key}/{name}", result[f"{name}_kb"] / 1024)

    def order(self, items: Sequence[T], round_index: int) -> list[T]:
        """A B C, then C B A, ..."""
        return list(items) if round_index % 2 == 0 else list(reversed(items))

    def out_dir(self, name: str) -> Path:
        path = self.out_root / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path


def warm_page_cache(paths: Sequence[Path]) -> None:
    """Read the files once, so that no run (the first of a round) pays for the disk."""
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(1 << 20):
                pass


def files_in(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def wait_for_files(folder: Path, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(files_in(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    found = len(files_in(folder))
    if found != count:
        raise RuntimeError(f"the SCP wrote {found} of {count} files")


# ====================================================================== data


def small_instances(count: int) -> Path:
    """``count`` 64x64 CT instances (bench_window.py's), made once into the cache."""
    folder = CACHE / f"small{count}"
    marker = folder / ".complete"
    if marker.exists() and len(list(folder.glob("*.dcm"))) == count:
        return folder
    log(f"generating {count} small CT instances in {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    bench_window.generate(folder, count)
    marker.write_text(str(count))
    return folder


def multiframe(frames: int) -> Path:
    """One multi-frame grayscale word SC instance, ``frames`` x 1024 x 1024 x 16 bit."""
    path = CACHE / f"multiframe-{frames}x1024x1024.dcm"
    if path.exists():
        return path
    import numpy as np
    from pydicom.uid import generate_uid

    log(f"generating {path} ({frames * 2} MiB of pixel data)")
    CACHE.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:1024, 0:1024]
    base = ((x * 3 + y * 2) % 4096).astype(np.uint16)
    pixels = (base[None, :, :] + np.arange(frames, dtype=np.uint16)[:, None, None]) % 4096
    elements = {
        "SOPClassUID": MF_WORD_SC_STORAGE,
        "SOPInstanceUID": generate_uid(),
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "PatientName": "Bench^MultiFrame",
        "PatientID": "BENCH",
        "Modality": "OT",
        "ConversionType": "WSD",
        "InstanceNumber": 1,
        "NumberOfFrames": frames,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": 1024,
        "Columns": 1024,
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "PixelData": pixels.astype(np.uint16).tobytes(),
    }
    del pixels
    partial = path.with_suffix(".partial")
    write_part10(partial, elements)
    partial.rename(path)
    return path


DCMQRSCP_CONFIG = """\
NetworkTCPPort  = {port}
MaxPDUSize      = 131072
MaxAssociations = 64

HostTable BEGIN
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{title} {storage} RW (10, 1024mb) ANY
AETable END
"""


@contextlib.contextmanager
def dcmqrscp(storage: Path, config_dir: Path, log_path: Path) -> Iterator[int]:
    """dcmqrscp (it forks per association) on ``storage``; yields its port."""
    port = bench_store.free_port()
    config = config_dir / f"dcmqrscp-{port}.cfg"
    config.write_text(DCMQRSCP_CONFIG.format(port=port, title=QR_TITLE, storage=storage))
    command = [DCMTK["dcmqrscp"], "-c", str(config), str(port)]
    with started(command, port, "dcmqrscp", log_path, DCMTK_ENV, group=True):
        yield port


def qr_archive(matches: int, log_dir: Path) -> Path:
    """dcmqrscp's storage area with one study of ``matches`` series, made once (cached)."""
    root = CACHE / f"qr-series{matches}"
    storage = root / "db" / QR_TITLE
    marker = root / ".complete"
    if marker.exists():
        return storage
    log(f"building the dcmqrscp archive in {root} ({matches} series, one study)")
    shutil.rmtree(root, ignore_errors=True)
    files = root / "files"
    files.mkdir(parents=True)
    storage.mkdir(parents=True)
    common = {
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture, no pixel data
        "PatientName": "Bench^Find",
        "PatientID": "BENCHFIND",
        "StudyDate": "20240101",
        "StudyTime": "120000",
        "StudyID": "1",
        "AccessionNumber": "A1",
        "ConversionType": "WSD",
        "InstanceNumber": 1,
    }
    paths = []
    for index in range(matches):
        path = files / f"i{index:05d}.dcm"
        uid = f"{QR_ROOT}.3.{index + 1}"
        write_part10(path, {**common, "SOPInstanceUID": uid, **qr_series(index)})
        paths.append(path)
    with dcmqrscp(storage, root, log_dir / "dcmqrscp-load.log") as port:
        run_dcmtk(storescu(port, QR_TITLE, paths), timeout=600)
        time.sleep(0.5)  # let the forked child finish its index update
    stored = len(list(storage.glob("*.dcm")))
    if stored != matches:
        raise RuntimeError(f"dcmqrscp kept {stored} of {matches} instances")
    marker.write_text(str(matches))
    return storage


# ====================================================================== Storage SCPs

WINDOW = bench_window.WINDOW


def store_scp_command(
    kind: str, port: int, out: Path | None, associations: int
) -> tuple[list[str], bool]:
    """(command, is DCMTK) of a Storage SCP; ``out`` None: ignore the data.

    dcmtk: storescp (dcmtk-fork: with --fork); ours: the storescp app (it streams);
    ours-w8: bench_store.py's SCP accepting a window of 8; pynetdicom: ``_scp store``.
    """
    if kind.startswith("dcmtk"):
        command = [DCMTK["storescp"], "-aet", STORE_TITLE, "-pdu", str(SCP_MAX_PDU)]
        command += ["-od", str(out)] if out is not None else ["--ignore"]
        command += ["--fork"] if kind == "dcmtk-fork" else []
        return [*command, str(port)], True
    if kind == "ours":
        command = [sys.executable, "-m", "aionetdicom", "storescp", "-aet", STORE_TITLE]
        command += ["-ba", HOST, "-pdu", str(SCP_MAX_PDU)]
        command += ["--max-associations", str(max(associations, 1000))]
        command += ["-od", str(out)] if out is not None else ["--ignore"]
        return [*command, str(port)], False
    if kind == "ours-w8":
        command = [sys.executable, bench_store.__file__, "_scp", "ours", "--port", str(port)]
        command += ["--window", str(WINDOW), "--mode", "ignore"]
        return command, False
    job = {"kind": "store", "port": port, "associations": associations}
    job["out"] = None if out is None else str(out)
    return [sys.executable, SCRIPT, "_scp", json.dumps(job)], False


@contextlib.contextmanager
def store_scp(
    b: Bench, kind: str, tag: str, write: bool = False, associations: int = 10
) -> Iterator[bench_store.SCP]:
    """A Storage SCP of ``kind`` on a free port, writing under /dev/shm with ``write``."""
    port = bench_store.free_port()
    out = b.out_dir(f"{tag}-{kind}") if write else None
    command, dcmtk = store_scp_command(kind, port, out, associations)
    log_path = b.log_dir / f"{tag}-scp-{kind}.log"
    env = DCMTK_ENV if dcmtk else None
    try:
        with started(command, port, kind, log_path, env, group=dcmtk) as process:
            yield bench_store.SCP(kind, process, port, out)
    finally:
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)


@contextlib.contextmanager
def store_scps(b: Bench, kinds: Sequence[str], tag: str) -> Iterator[dict[str, bench_store.SCP]]:
    """Several SCPs (ignoring the data); one that does not start is left out, with a note."""
    with contextlib.ExitStack() as stack:
        scps: dict[str, bench_store.SCP] = {}
        for kind in kinds:
            scp = b.attempt(
                f"{tag}/scp-{kind}",
                f"[{tag}] {kind} SCP",
                lambda kind=kind: stack.enter_context(store_scp(b, kind, tag)),
            )
            if scp is not None:
                scps[kind] = scp
        yield scps


def pair_key(tag: str, client: str, scp: str) -> str:
    return f"{tag}/{client}>{scp}"


Pairs = Sequence[tuple[str, str]]
#: The (client, SCP) pairs of the usual rows, in the column order ours, pynetdicom, DCMTK.
SAME: Pairs = [("ours", "ours"), ("pynetdicom", "pynetdicom"), ("dcmtk", "dcmtk")]
INTO_DCMTK: Pairs = [("ours", "dcmtk"), ("pynetdicom", "dcmtk"), ("dcmtk", "dcmtk")]
FROM_DCMTK: Pairs = [("dcmtk", "ours"), ("dcmtk", "pynetdicom"), ("dcmtk", "dcmtk")]
#: Every pair of those once.
ALL_PAIRS: list[tuple[str, str]] = list(dict.fromkeys([*SAME, *INTO_DCMTK, *FROM_DCMTK]))


def keys3(tag: str, pairs: Pairs, suffix: str = "") -> tuple[str, str, str]:
    """The measure keys of a row: one pair per column."""
    ours, pynetdicom, dcmtk = (pair_key(tag, client, scp) + suffix for client, scp in pairs)
    return ours, pynetdicom, dcmtk


# ====================================================================== 1: C-STORE 1000 CT

S1_PAIRS = [*ALL_PAIRS, ("ours-w8", "ours-w8")]


def scenario_store(b: Bench) -> None:
    count = b.sizes.store_count
    folder = CACHE / f"ct{count}"
    paths = bench_store.generate(folder, count)
    warm_page_cache(paths)
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    b.titles[1] = (
        f"C-STORE {count} CT 512x512x16 ({megabytes:.0f} MB) over ONE association, "
        "SCP ignores the data; seconds"
    )
    b.info["s1_megabytes"] = megabytes
    with store_scps(b, list(dict.fromkeys(scp for _, scp in S1_PAIRS)), "s1") as scps:
        for client, kind, key, what in b.runs("s1", S1_PAIRS, scps):

            def run(client: str = client, kind: str = kind) -> dict[str, Any]:
                window = WINDOW if client == "ours-w8" else 1
                name = "ours" if client == "ours-w8" else client
                seconds = bench_store.run_client(name, scps[kind], folder, count, window)
                return {"seconds": seconds, "mb_per_s": megabytes / seconds}

            b.timed(key, what, run)

    window = [("ours-w8", "ours-w8"), *SAME[1:]]
    b.rows += [
        Row(1, "client X -> DCMTK storescp", "s", "lower", keys3("s1", INTO_DCMTK)),
        Row(1, "DCMTK storescu -> SCP X", "s", "lower", keys3("s1", FROM_DCMTK)),
        Row(1, "X -> X", "s", "lower", keys3("s1", SAME)),
        Row(1, f"X -> X, ours with window {WINDOW}", "s", "lower", keys3("s1", window)),
    ]


# ====================================================================== 2: one association each

LIBRARIES = ("ours", "pynetdicom", "dcmtk")


def scenario_small(b: Bench) -> None:
    count = b.sizes.small_count
    folder = small_instances(count)
    paths = sorted(folder.glob("*.dcm"))
    warm_page_cache(paths)
    b.titles[2] = (
        f"{count} small CT (64x64, {paths[0].stat().st_size / 1000:.0f} KB), ONE association "
        "each, sequential, SCPs ignore; seconds for all"
    )
    with store_scps(b, LIBRARIES, "s2") as scps:
        for lib, _, key, what in b.runs("s2", SAME, scps):
            port = scps[lib].port
            if lib != "dcmtk":
                job = {"kind": "store-each", "client": lib, "port": port}
                job |= {"dir": str(folder), "count": count}
                b.timed(key, what, lambda job=job: python_job(job))
                continue

            def dcmtk_run(port: int = port) -> dict[str, Any]:
                def make(port: int, index: int) -> list[str]:
                    return storescu(port, STORE_TITLE, [paths[index]])

                return dcmtk_with_startup(make, port, count)

            result = b.attempt(key, what, dcmtk_run)
            if result is not None:
                real, start_up = result["real"], result["closed_port"]
                b.record(key, sum(real), result)
                per = statistics.median(real) - statistics.median(start_up)
                b.record(f"{key}/est", count * per)
                log(f"{what}: {sum(real):.2f} s with process starts, {per * 1e3:.2f} ms each est.")
    ours, pynetdicom, dcmtk = keys3("s2", SAME)
    b.rows += [
        Row(
            2, "X -> X (DCMTK: a storescu per association)", "s", "lower", (ours, pynetdicom, dcmtk)
        ),
        Row(
            2,
            "X -> X, DCMTK less process start [est]",
            "s",
            "lower",
            (ours, pynetdicom, dcmtk + "/est"),
        ),
    ]


# ====================================================================== 3: one big instance

#: Target of our peak RSS, client and SCP, in scenario 3 (MB).
RSS_TARGET_MB = 64


def store_big_once(b: Bench, client: str, kind: str, path: Path) -> dict[str, Any]:
    """A fresh SCP of ``kind`` writing to /dev/shm, ``client`` stores ``path``; the
    seconds, the client's peak RSS and the SCP's (VmHWM just before it is killed)."""
    with store_scp(b, kind, "s3", write=True) as scp:
        assert scp.out is not None
        scp_start_kb = vm_kb(scp.process.pid, "VmRSS")
        if client == "dcmtk":
            done = run_dcmtk(storescu(scp.port, STORE_TITLE, [path]), watch=True)
            result = {"seconds": done.seconds, "client_kb": done.peak_kb}
        else:
            job = {"kind": "store-big", "client": client, "port": scp.port, "file": str(path)}
            done_job = python_job(job | {"sop_class": MF_WORD_SC_STORAGE})
            result = {"seconds": done_job["seconds"], "client_kb": done_job["peak_kb"]}
            result["client_start_kb"] = done_job["start_kb"]
        result["scp_start_kb"] = scp_start_kb
        wait_for_files(scp.out, 1)
        written = files_in(scp.out)[0].stat().st_size
        if written < path.stat().st_size * 0.99:
            raise RuntimeError(f"the SCP wrote {written} bytes of {path.stat().st_size}")
        result["scp_kb"] = vm_kb(scp.process.pid, "VmHWM")
    return result


def scenario_big(b: Bench) -> None:
    path = multiframe(b.sizes.frames)
    warm_page_cache([path])
    megabytes = path.stat().st_size / 1e6
    b.titles[3] = (
        f"ONE multi-frame instance ({b.sizes.frames} x 1024x1024x16, {megabytes:.0f} MB), "
        "SCP writes to /dev/shm; seconds, peak RSS in MB"
    )
    for client, kind, key, what in b.runs("s3", ALL_PAIRS):
        result = b.timed(key, what, lambda c=client, k=kind: store_big_once(b, c, k, path))
        if result is not None:
            b.record_mb(key, result, "client", "scp", "client_start", "scp_start")
            client_mb, scp_mb = result["client_kb"] / 1024, result["scp_kb"] / 1024
            log(f"{what}: client {client_mb:.0f} MB, SCP {scp_mb:.0f} MB")

    b.rows += [
        Row(3, "X -> X: wall time", "s", "lower", keys3("s3", SAME)),
        Row(3, "X -> X: client peak RSS", "MB", "lower", keys3("s3", SAME, "/client")),
        Row(3, "X -> X: SCP peak RSS", "MB", "lower", keys3("s3", SAME, "/scp")),
        Row(
            3,
            "X -> X: client RSS before the transfer",
            "MB",
            "",
            keys3("s3", SAME, "/client_start"),
        ),
        Row(3, "X -> X: SCP RSS before the transfer", "MB", "", keys3("s3", SAME, "/scp_start")),
        Row(3, "client X -> DCMTK storescp: wall time", "s", "lower", keys3("s3", INTO_DCMTK)),
        Row(
            3,
            "client X -> storescp: client peak RSS",
            "MB",
            "lower",
            keys3("s3", INTO_DCMTK, "/client"),
        ),
        Row(3, "DCMTK storescu -> SCP X: wall time", "s", "lower", keys3("s3", FROM_DCMTK)),
        Row(3, "storescu -> SCP X: SCP peak RSS", "MB", "lower", keys3("s3", FROM_DCMTK, "/scp")),
    ]
    ours = pair_key("s3", "ours", "ours")
    peaks = [b.measure(f"{ours}/{side}").median() for side in ("client", "scp")]
    starts = [b.measure(f"{ours}/{side}_start").median() for side in ("client", "scp")]
    if None not in peaks and None not in starts:
        verdict = "met" if max(peaks) < RSS_TARGET_MB else "NOT met"  # type: ignore[type-var]
        b.note(
            3,
            f"target ours < {RSS_TARGET_MB} MB on each side: {verdict}: client {peaks[0]:.0f} "
            f"MB ({starts[0]:.0f} before the transfer), SCP {peaks[1]:.0f} MB "
            f"({starts[1]:.0f} before)",
        )


# ====================================================================== 4: C-FIND, 1000 matches


@contextlib.contextmanager
def find_scps(b: Bench) -> Iterator[dict[str, int]]:
    """The three C-FIND SCPs; yields their ports (one that does not start is left out)."""
    matches = b.sizes.matches
    storage = qr_archive(matches, b.log_dir)
    with contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        for lib in LIBRARIES:

            def start(lib: str = lib) -> int:
                if lib == "dcmtk":
                    return stack.enter_context(
                        dcmqrscp(storage, b.out_root, b.log_dir / "s4-dcmqrscp.log")
                    )
                port = bench_store.free_port()
                job = {"kind": "find", "scp": lib, "port": port, "matches": matches}
                command = [sys.executable, SCRIPT, "_scp", json.dumps(job)]
                stack.enter_context(started(command, port, lib, b.log_dir / f"s4-{lib}.log"))
                return port

            port = b.attempt(f"s4/scp-{lib}", f"[4] {lib} SCP", start)
            if port is not None:
                ports[lib] = port
        yield ports


def findscu_runs(port: int, queries: int, matches: int) -> dict[str, Any]:
    """One verbose findscu run that must see ``matches`` responses, then timed runs."""
    done = run_dcmtk(findscu(port, QR_TITLE, "-v"))
    seen = done.stderr.decode(errors="replace").count("(Pending)")
    if seen != matches:
        raise RuntimeError(f"findscu saw {seen} pending responses, expected {matches}")
    result = dcmtk_with_startup(lambda p, _i: findscu(p, QR_TITLE), port, queries)
    result["seconds"] = statistics.median(result["real"])
    return result


def scenario_find(b: Bench) -> None:
    matches, queries = b.sizes.matches, b.sizes.queries
    b.titles[4] = (
        f"C-FIND, {matches} matches (SERIES level, one study), associate + find + release; "
        f"median of {queries} queries, seconds"
    )
    with find_scps(b) as ports:
        for client, kind, key, what in b.runs("s4", ALL_PAIRS, ports):
            port = ports[kind]
            if client == "dcmtk":
                result = b.timed(key, what, lambda port=port: findscu_runs(port, queries, matches))
                if result is not None:
                    start_up = statistics.median(result["closed_port"])
                    b.record(key + "/est", result["seconds"] - start_up)
                continue
            job = {"kind": "find", "client": client, "port": port, "aet": QR_TITLE}
            job |= {"queries": queries, "expect": matches}
            result = b.attempt(key, what, lambda job=job: python_job(job))
            if result is not None:
                b.record(key, statistics.median(result["seconds"]), result)
                log(f"{what}: {statistics.median(result['seconds']):.3f} s per query")

    ours, pynetdicom, dcmtk = keys3("s4", SAME)
    b.rows += [
        Row(4, "X -> X", "s", "lower", (ours, pynetdicom, dcmtk)),
        Row(
            4,
            "X -> X, findscu less process start [est]",
            "s",
            "lower",
            (ours, pynetdicom, dcmtk + "/est"),
        ),
        Row(4, "client X -> dcmqrscp", "s", "lower", keys3("s4", INTO_DCMTK)),
        Row(4, "findscu -> SCP X", "s", "lower", keys3("s4", FROM_DCMTK)),
    ]
    b.note(
        4, "ours and pynetdicom SCPs answer from a prebuilt list; dcmqrscp searches its index file"
    )


# ====================================================================== 5: 500 at once

S5_PAIRS = [
    ("ours", "ours"),
    ("pynetdicom", "ours"),
    ("dcmtk", "ours"),
    ("pynetdicom", "pynetdicom"),
    ("dcmtk", "dcmtk-fork"),
]


def burst_once(b: Bench, client: str, kind: str, count: int, tag: int) -> dict[str, Any]:
    """A fresh SCP of ``kind``; ``count`` associations of ``client`` at once."""
    with store_scp(b, kind, "s5", associations=count + 10) as scp:
        tree = TreeRss(scp.process.pid)
        tree.start()
        try:
            if client == "dcmtk":
                paths = sorted(small_instances(b.sizes.small_count).glob("*.dcm"))
                result = storescu_burst(scp.port, paths, count)
            else:
                job = {"kind": "burst", "client": client, "port": scp.port}
                result = python_job(job | {"count": count, "tag": tag})
        finally:
            tree.stop()
        # storescp --fork: a sampled sum over its children; else the process's own peak.
        result["scp_kb"] = tree.peak_kb if kind == "dcmtk-fork" else vm_kb(scp.process.pid, "VmHWM")
        result["scp_children"] = tree.peak_children
    if result["ok"] == 0:
        raise RuntimeError(f"no association succeeded: {result['errors']}")
    return result


def scenario_burst(b: Bench) -> None:
    count = b.sizes.burst
    b.titles[5] = (
        f"{count} associations AT ONCE, each: associate, C-ECHO, C-STORE 9 KB, release "
        "(DCMTK: storescu processes, no C-ECHO); seconds until the last successful one "
        "ended; SCP peak RSS in MB"
    )
    for tag, (client, kind, key, what) in enumerate(b.runs("s5", S5_PAIRS)):

        def run(client: str = client, kind: str = kind, tag: int = tag) -> dict[str, Any]:
            return burst_once(b, client, kind, count, tag)

        result = b.timed(key, what, run)
        if result is not None:
            b.partial(key, result, count)
            b.record_mb(key, result, "scp")
            log(f"{what}: {result['ok']}/{count} ok, SCP {result['scp_kb'] / 1024:.0f} MB")

    same = [*SAME[:2], ("dcmtk", "dcmtk-fork")]
    b.rows += [
        Row(5, "client X -> our SCP (storescp app)", "s", "lower", keys3("s5", S5_PAIRS[:3])),
        Row(5, "X -> X (DCMTK: storescp --fork)", "s", "lower", keys3("s5", same)),
        Row(5, "X -> X: SCP peak RSS (DCMTK: sampled)", "MB", "lower", keys3("s5", same, "/scp")),
    ]


# ====================================================================== 6: operations window


#: (key, client, window)
S6_CONFIGS = [
    ("ours-w1", "ours", 1),
    ("ours-w8", "ours", WINDOW),
    ("pynetdicom", "pynetdicom", 1),
    ("dcmtk", "dcmtk", 1),
]


def scenario_window(b: Bench) -> None:
    count, latency = b.sizes.window_count, b.sizes.latency_ms
    folder = small_instances(count)
    warm_page_cache(sorted(folder.glob("*.dcm")))
    b.titles[6] = (
        f"{count} small CT over ONE association through a proxy adding {latency:g} ms each "
        f"way, into bench_store.py's SCP (window up to {WINDOW}); seconds"
    )
    # The proxy exits by itself after a bound on the whole scenario (bench_window.py's).
    per_run = count * (4 * latency / 1000 + 0.05) + 30
    lifetime = per_run * len(S6_CONFIGS) * b.rounds + 60
    proxy_port = bench_store.free_port()
    with store_scp(b, "ours-w8", "s6") as scp:
        proxy = ["_proxy", "--port", str(proxy_port), "--target", str(scp.port)]
        proxy += ["--latency", str(latency), "--lifetime", str(lifetime)]
        with bench_window.worker(proxy, proxy_port, "proxy"):
            via = bench_store.SCP("proxy", scp.process, proxy_port, None)
            for round_index in range(b.rounds):
                for key, client, window in b.order(S6_CONFIGS, round_index):
                    what = f"[s6 r{round_index + 1}] {client}, window {window}, via proxy"

                    def run(client: str = client, window: int = window) -> dict[str, Any]:
                        return {
                            "seconds": bench_store.run_client(client, via, folder, count, window)
                        }

                    b.timed(f"s6/{key}", what, run)
    one, eight = b.measure("s6/ours-w1").median(), b.measure("s6/ours-w8").median()
    if one is not None and eight is not None:
        b.record("s6/speed-up", one / eight)
        verdict = "met" if one / eight >= 4 else "NOT met"
        b.note(
            6,
            f"ours window {WINDOW} vs 1: {one / eight:.2f}x faster (target >= 4x: {verdict})",
        )
    theirs = ("s6/pynetdicom", "s6/dcmtk")
    b.rows += [
        Row(6, "window 1", "s", "lower", ("s6/ours-w1", *theirs)),
        Row(
            6, f"ours window {WINDOW} (the others: window 1)", "s", "lower", ("s6/ours-w8", *theirs)
        ),
        Row(
            6,
            f"ours: window 1 time / window {WINDOW} time (>= 4)",
            "x",
            "",
            ("s6/speed-up", None, None),
        ),
    ]


SCENARIOS: dict[int, Callable[[Bench], None]] = {
    1: scenario_store,
    2: scenario_small,
    3: scenario_big,
    4: scenario_find,
    5: scenario_burst,
    6: scenario_window,
}


# ====================================================================== table and JSON


def cell_text(measure: Measure | None, footnotes: dict[str, int]) -> str:
    """The median, with ``[eN]`` when some runs failed; ``ERROR [eN]`` when all did."""
    if measure is None:
        return "-"
    text = number(median) if (median := measure.median()) is not None else "ERROR"
    marks = [
        f"e{footnotes.setdefault(error, len(footnotes) + 1)}"
        for error in dict.fromkeys(measure.errors)
    ]
    return f"{text} [{','.join(marks)}]" if marks else text


def ratio(row: Row, ours: float | None, theirs: float | None) -> str:
    """How many times ours is better: > 1 means faster (or smaller)."""
    if not row.better or not ours or not theirs:
        return ""
    value = theirs / ours if row.better == "lower" else ours / theirs
    return f"{value:.2f}x"


def table_lines(b: Bench) -> tuple[list[str], dict[str, int]]:
    footnotes: dict[str, int] = {}
    header = ["#", "row", "unit", "ours", "pynetdicom", "DCMTK", "ours vs pyn", "ours vs DCMTK"]
    body: list[list[str] | str] = []
    scenario = 0
    for row in b.rows:
        if row.scenario != scenario:
            scenario = row.scenario
            body.append(f"-- {scenario}: {b.titles.get(scenario, '')}")
        measures = [None if key is None else b.measures.get(key) for key in row.keys]
        medians = [None if m is None else m.median() for m in measures]
        cells = [cell_text(m, footnotes) for m in measures]
        ratios = [ratio(row, medians[0], medians[1]), ratio(row, medians[0], medians[2])]
        body.append([str(row.scenario), row.label, row.unit, *cells, *ratios])
    widths = [len(h) for h in header]
    for line in body:
        if isinstance(line, list):
            widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]

    def fmt(cells: list[str]) -> str:
        parts = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt(header), "-" * len(fmt(header))]
    lines += [fmt(line) if isinstance(line, list) else line for line in body]
    return lines, footnotes


def print_report(b: Bench, total_seconds: float) -> None:
    lines, footnotes = table_lines(b)
    print()
    print("\n".join(lines))
    print()
    print(
        "ratios: how many times ours is better (> 1: ours faster / smaller); medians of "
        f"{b.rounds} round(s)"
    )
    for scenario in sorted(b.notes):
        for text in b.notes[scenario]:
            print(f"note {scenario}: {text}")
    for error, index in footnotes.items():
        print(f"[e{index}] {error}")
    seconds = ", ".join(f"{n}: {s:.0f} s" for n, s in sorted(b.seconds.items()))
    print(f"wall time per scenario: {seconds}; total {total_seconds:.0f} s")


def save(b: Bench, argv: Sequence[str], total_seconds: float) -> Path:
    """Everything, with every run's raw numbers, to benchmarks/results/all-<timestamp>.json."""
    RESULTS.mkdir(exist_ok=True)
    data = {
        "argv": list(argv),
        "sizes": dataclasses.asdict(b.sizes),
        "rounds": b.rounds,
        "machine": bench_echo.machine_info(),
        "total_seconds": total_seconds,
        "scenario_seconds": b.seconds,
        "titles": b.titles,
        "notes": b.notes,
        "info": b.info,
        "rows": [
            {
                **dataclasses.asdict(row),
                "medians": [
                    None if (m := b.measures.get(k or "")) is None else m.median() for k in row.keys
                ],
            }
            for row in b.rows
        ],
        "measures": {key: dataclasses.asdict(m) for key, m in b.measures.items()},
        "table": table_lines(b)[0],
    }
    path = RESULTS / time.strftime("all-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(data, indent=1, default=str))
    return path


# ====================================================================== main


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds the with-blocks: every child is killed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, 1 round")
    parser.add_argument("--only", default="", help="scenarios to run, e.g. 1,3 (default: all)")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the SCPs' logs here")
    args = parser.parse_args(argv)
    try:
        only = sorted({int(n) for n in args.only.split(",") if n.strip()} or SCENARIOS)
    except ValueError:
        parser.error(f"--only: {args.only!r} is not a list of numbers")
    if not set(only) <= set(SCENARIOS):
        parser.error(f"--only: scenarios are {', '.join(map(str, SCENARIOS))}")
    rounds = args.rounds or (1 if args.quick else 3)
    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    signal.signal(signal.SIGTERM, _terminate)
    bench_server.raise_fd_limit()
    out_root = Path(tempfile.mkdtemp(prefix="bench-all-", dir=SHM))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-all-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    b = Bench(sizes, rounds, log_dir, out_root)
    started_at = time.perf_counter()
    log(f"scenarios {','.join(map(str, only))}, {rounds} round(s), {sizes}; logs in {log_dir}")
    try:
        for scenario in only:
            start = time.perf_counter()
            try:
                SCENARIOS[scenario](b)
            except Exception as exc:
                b.note(scenario, f"scenario failed: {error_text(exc)}")
                log(f"scenario {scenario} failed: {error_text(exc)}")
            b.seconds[scenario] = time.perf_counter() - start
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    total = time.perf_counter() - started_at
    print_report(b, total)
    print(f"results: {save(b, sys.argv if argv is None else argv, total)}")
    failed = any(m.errors for m in b.measures.values()) or any(
        "failed" in text for texts in b.notes.values() for text in texts
    )
    if args.log_dir is None and not failed:
        shutil.rmtree(log_dir, ignore_errors=True)
    elif failed:
        print(f"logs: {log_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](sys.argv[2:])
    else:
        sys.exit(main())
