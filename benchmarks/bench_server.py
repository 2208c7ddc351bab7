"""Benchmark our SCP under many associations: a burst of stores, and idle memory.

Two parts, each against ONE SCP process (ours, ``AE.serve`` on asyncio, in a
subprocess on a free 127.0.0.1 port):

``burst``
    ``--associations`` (500) associations at once, each storing ``--instances`` (10)
    small CT instances (64x64, 16 bit, about 9 KB) and releasing. The clients are ours,
    in ``--client-processes`` (2) processes, each holding its share of the
    associations as concurrent ``async with ae.associate(...)`` blocks in one task
    group. The processes prepare (imports, instance bytes) first and start together;
    the wall time runs from that start until the last process reported. Counted:
    associations that stored everything with Success, failed associations (with the
    error), instances stored; the SCP's peak RSS (VmHWM).
``idle``
    ``--idle`` (1000) associations opened by one client process (ours, one task group,
    at most 100 negotiating at a time) and kept open doing nothing. The SCP's VmRSS
    (``/proc/<pid>/status``) is read after one warm-up association and again with all
    of them established; reported as MB in total and KB per association.

Both the driver and every worker raise their open-file limit (RLIMIT_NOFILE) to the
hard limit. The SCP keeps the library's defaults except ``maximum_associations``
(raised to fit the idle part); in ``--mode write`` (default) it saves every instance
with ``request.save_to`` under ``--out`` (tmpfs by default), in ``--mode ignore`` it
only answers Success.

    python benchmarks/bench_server.py                       # both parts
    python benchmarks/bench_server.py --part burst --rounds 3
    python benchmarks/bench_server.py --part idle --idle 2000

Results go to ``benchmarks/results/server-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SCP_TITLE = "BENCHSCP"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
SCRIPT = str(Path(__file__).resolve())
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
#: Timeouts of the benchmark's clients: generous, 500 associations share two cores.
CLIENT_TIMEOUT = 120.0
UID_ROOT = "1.2.826.0.1.3680043.9.7433.42"


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# ====================================================================== workers


def _scp_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_server.py _scp")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["ignore", "write"], default="write")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--maximum-associations", type=int, default=5000)
    args = parser.parse_args(argv)
    raise_fd_limit()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import anyio

    from aionetdicom import AE
    from aionetdicom.services.storage import StoreRequest

    # Connections closed by the pending-connection cap are logged at DEBUG: show them.
    logging.getLogger("aionetdicom.server").setLevel(logging.DEBUG)
    ae = AE(SCP_TITLE, maximum_associations=args.maximum_associations)
    ae.add_storage_contexts()
    out: Path | None = args.out if args.mode == "write" else None

    @ae.on_store
    async def on_store(request: StoreRequest) -> int:
        if out is not None:
            await request.save_to(out)
        return 0

    anyio.run(ae.serve_forever, HOST, args.port)


def _instances(tag: int, associations: int, instances: int) -> list[list[bytes]]:
    """Part 10 bytes of small CT instances, unique SOP Instance UIDs, per association."""
    import io

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import generate_uid

    def uid(a: int, i: int) -> str:
        return f"{UID_ROOT}.1{tag:03d}{a:05d}{i:04d}"

    placeholder = uid(0, 0)
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = placeholder
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Bench^Server"
    ds.PatientID = "BENCH"
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = placeholder
    ds.file_meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    template = buffer.getvalue()
    key = placeholder.encode()
    return [
        [template.replace(key, uid(a, i).encode()) for i in range(1, instances + 1)]
        for a in range(1, associations + 1)
    ]


def _burst_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_server.py _burst")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--associations", type=int, required=True)
    parser.add_argument("--instances", type=int, required=True)
    parser.add_argument("--tag", type=int, default=0)
    args = parser.parse_args(argv)
    raise_fd_limit()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    import anyio

    from aionetdicom import AE
    from aionetdicom.contexts import PresentationContext

    blobs = _instances(args.tag, args.associations, args.instances)
    ae = AE(
        f"BURST{args.tag}",
        acse_timeout=CLIENT_TIMEOUT,
        dimse_timeout=CLIENT_TIMEOUT,
        network_timeout=CLIENT_TIMEOUT,
        connect_timeout=CLIENT_TIMEOUT,
    )
    contexts = [PresentationContext(CT_IMAGE_STORAGE, (EXPLICIT_VR_LITTLE_ENDIAN,))]
    ok = 0
    stored = 0
    errors: dict[str, int] = {}
    latencies: list[float] = []

    async def one(instances: list[bytes]) -> None:
        nonlocal ok, stored
        started = time.perf_counter()
        good = 0
        try:
            async with ae.associate(
                HOST, args.port, called_ae_title=SCP_TITLE, contexts=contexts
            ) as assoc:
                for blob in instances:
                    status = await assoc.store(blob)
                    if status.is_success:
                        good += 1
                    else:
                        key = f"status 0x{int(status):04X}"
                        errors[key] = errors.get(key, 0) + 1
        except Exception as exc:
            key = f"{type(exc).__name__}: {str(exc)[:80]}"
            errors[key] = errors.get(key, 0) + 1
        else:
            latencies.append(time.perf_counter() - started)
            ok += good == len(instances)
        stored += good

    async def main() -> None:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for instances in blobs:
                tg.start_soon(one, instances)
        elapsed = time.perf_counter() - started
        latencies.sort()
        result = {
            "associations": len(blobs),
            "ok": ok,
            "failed": len(blobs) - ok,
            "stored": stored,
            "errors": errors,
            "elapsed": elapsed,
            "latency_p50": latencies[len(latencies) // 2] if latencies else None,
            "latency_max": latencies[-1] if latencies else None,
        }
        print(json.dumps(result), flush=True)

    anyio.run(main)


def _idle_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_server.py _idle")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--negotiating", type=int, default=100)
    args = parser.parse_args(argv)
    raise_fd_limit()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    import anyio

    from aionetdicom import AE
    from aionetdicom.contexts import PresentationContext

    ae = AE(
        "IDLE",
        acse_timeout=CLIENT_TIMEOUT,
        dimse_timeout=CLIENT_TIMEOUT,
        network_timeout=None,  # idle on purpose
        connect_timeout=CLIENT_TIMEOUT,
    )
    contexts = [PresentationContext(CT_IMAGE_STORAGE, (EXPLICIT_VR_LITTLE_ENDIAN,))]
    gate = anyio.Semaphore(args.negotiating)
    release = anyio.Event()
    settled = anyio.Event()  # every association is open or has failed
    established = 0
    finished = 0
    errors: dict[str, int] = {}

    async def hold() -> None:
        nonlocal established, finished
        negotiating = True
        await gate.acquire()
        try:
            async with ae.associate(HOST, args.port, called_ae_title=SCP_TITLE, contexts=contexts):
                established += 1
                gate.release()
                negotiating = False
                if established + sum(errors.values()) == args.count:
                    settled.set()
                await release.wait()
        except Exception as exc:
            key = f"{type(exc).__name__}: {str(exc)[:80]}"
            errors[key] = errors.get(key, 0) + 1
            if established + sum(errors.values()) == args.count:
                settled.set()
        finally:
            if negotiating:
                gate.release()
            finished += 1

    async def main() -> None:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(args.count):
                tg.start_soon(hold)
            await settled.wait()
            print(
                json.dumps(
                    {
                        "established": established,
                        "errors": errors,
                        "elapsed": time.perf_counter() - started,
                    }
                ),
                flush=True,
            )
            await anyio.to_thread.run_sync(sys.stdin.readline)
            release.set()
        print(json.dumps({"released": finished}), flush=True)

    anyio.run(main)


# ====================================================================== driver


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_listening(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the SCP exited with {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the SCP did not listen on {port}")


@contextlib.contextmanager
def running_scp(mode: str, out: Path, log_path: Path) -> Iterator[tuple[int, int]]:
    """Start our SCP; yield (pid, port); kill it afterwards."""
    port = free_port()
    command = [sys.executable, SCRIPT, "_scp", "--port", str(port), "--mode", mode]
    if mode == "write":
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        command += ["--out", str(out)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_listening(process, port)
            yield process.pid, port
        finally:
            process.kill()
            process.wait(timeout=10)
            if mode == "write":
                shutil.rmtree(out, ignore_errors=True)


def worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def expect(process: subprocess.Popen[str], what: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"worker ended before {what} (exit {process.wait()})")
    return line.strip()


def send(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def warm_up(port: int) -> None:
    """One association with one echo and one store, so lazy imports are done."""
    code = (
        "import anyio, sys\n"
        "from aionetdicom import AE\n"
        "from aionetdicom.contexts import PresentationContext\n"
        f"sys.path.insert(0, {str(Path(SCRIPT).parent)!r})\n"
        "from bench_server import _instances\n"
        "async def main():\n"
        f"    ctx = [PresentationContext({CT_IMAGE_STORAGE!r}, ({EXPLICIT_VR_LITTLE_ENDIAN!r},))]\n"
        f"    async with AE('WARM').associate({HOST!r}, {port}, called_ae_title={SCP_TITLE!r},"
        " contexts=ctx) as a:\n"
        "        assert (await a.store(_instances(999, 1, 1)[0][0])).is_success\n"
        "anyio.run(main)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def run_burst(args: argparse.Namespace, log_dir: Path) -> list[dict[str, Any]]:
    rounds = []
    shares = [args.associations // args.client_processes] * args.client_processes
    for i in range(args.associations % args.client_processes):
        shares[i] += 1
    for number in range(1, args.rounds + 1):
        with running_scp(args.mode, args.out / "bench-server", log_dir / "scp-burst.log") as (
            pid,
            port,
        ):
            warm_up(port)
            rss_before = status_kb(pid, "VmRSS")
            clients = []
            for index, share in enumerate(shares):
                command = ["_burst", "--port", str(port), "--associations", str(share)]
                command += ["--instances", str(args.instances), "--tag", str(index)]
                clients.append(worker(*command))
            for client in clients:
                if expect(client, "ready") != "ready":
                    raise RuntimeError("unexpected worker output")
            started = time.perf_counter()
            for client in clients:
                send(client, "go")
            results = [json.loads(expect(client, "result")) for client in clients]
            wall = time.perf_counter() - started
            for client in clients:
                client.wait(timeout=30)
            stored_files = (
                sum(1 for _ in (args.out / "bench-server").iterdir())
                if args.mode == "write"
                else None
            )
            peak = status_kb(pid, "VmHWM")
        errors: dict[str, int] = {}
        for result in results:
            for key, count in result["errors"].items():
                errors[key] = errors.get(key, 0) + count
        summary = {
            "round": number,
            "associations": sum(r["associations"] for r in results),
            "ok": sum(r["ok"] for r in results),
            "failed": sum(r["failed"] for r in results),
            "instances_stored": sum(r["stored"] for r in results),
            "files_written": stored_files,
            "errors": errors,
            "wall_seconds": wall,
            "instances_per_second": sum(r["stored"] for r in results) / wall,
            "latency_p50_seconds": statistics.median(
                r["latency_p50"] for r in results if r["latency_p50"] is not None
            )
            if any(r["latency_p50"] is not None for r in results)
            else None,
            "latency_max_seconds": max(
                (r["latency_max"] for r in results if r["latency_max"] is not None),
                default=None,
            ),
            "scp_rss_before_mb": rss_before / 1024,
            "scp_peak_rss_mb": peak / 1024,
        }
        rounds.append(summary)
        print(
            f"burst round {number}: {summary['associations']} associations x "
            f"{args.instances} instances, {args.client_processes} client processes: "
            f"{summary['ok']} ok, {summary['failed']} failed, "
            f"{summary['instances_stored']} instances stored"
            + ("" if stored_files is None else f" ({stored_files} files written)")
            + f" in {wall:.2f} s ({summary['instances_per_second']:.0f} instances/s; "
            f"association p50 {summary['latency_p50_seconds']:.2f} s, "
            f"max {summary['latency_max_seconds']:.2f} s); "
            f"SCP RSS {summary['scp_rss_before_mb']:.1f} MB before, "
            f"peak {summary['scp_peak_rss_mb']:.1f} MB",
            flush=True,
        )
        if errors:
            print(f"  errors: {errors}", flush=True)
    return rounds


def run_idle(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    with running_scp("ignore", args.out / "bench-idle", log_dir / "scp-idle.log") as (pid, port):
        warm_up(port)
        time.sleep(0.5)
        before = status_kb(pid, "VmRSS")
        client = worker("_idle", "--port", str(port), "--count", str(args.idle))
        if expect(client, "ready") != "ready":
            raise RuntimeError("unexpected worker output")
        send(client, "go")
        opened = json.loads(expect(client, "established"))
        time.sleep(1.0)  # let the SCP settle
        during = status_kb(pid, "VmRSS")
        client_rss = status_kb(client.pid, "VmRSS")
        send(client, "release")
        released = json.loads(expect(client, "released"))
        client.wait(timeout=60)
        time.sleep(0.5)
        after = status_kb(pid, "VmRSS")
    count = opened["established"]
    result = {
        "requested": args.idle,
        "established": count,
        "errors": opened["errors"],
        "open_seconds": opened["elapsed"],
        "released": released["released"],
        "scp_rss_before_mb": before / 1024,
        "scp_rss_with_idle_mb": during / 1024,
        "scp_rss_after_release_mb": after / 1024,
        "kb_per_association": (during - before) / count if count else None,
        "client_rss_mb": client_rss / 1024,
    }
    print(
        f"idle: {count} of {args.idle} associations established in {opened['elapsed']:.2f} s; "
        f"SCP VmRSS {before / 1024:.1f} MB before, {during / 1024:.1f} MB with them open "
        f"(+{(during - before) / 1024:.1f} MB, "
        f"{result['kb_per_association']:.1f} KB per association), "
        f"{after / 1024:.1f} MB after release; client process {client_rss / 1024:.1f} MB",
        flush=True,
    )
    if opened["errors"]:
        print(f"  errors: {opened['errors']}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    workers = {"_scp": _scp_main, "_burst": _burst_main, "_idle": _idle_main}
    if argv and argv[0] in workers:
        workers[argv[0]](argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["burst", "idle", "both"], default="both")
    parser.add_argument("--associations", type=int, default=500)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--mode", choices=["ignore", "write"], default="write")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    limit = raise_fd_limit()
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-server-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, open-file limit {limit}; "
        f"SCP logs in {log_dir}",
        flush=True,
    )
    report: dict[str, Any] = {"argv": argv, "fd_limit": limit}
    if args.part in ("burst", "both"):
        report["burst"] = run_burst(args, log_dir)
    if args.part in ("idle", "both"):
        report["idle"] = run_idle(args, log_dir)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"server-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
