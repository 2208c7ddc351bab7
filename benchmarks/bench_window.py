"""Benchmark the asynchronous operations window: C-STORE over a link with latency.

A delaying TCP proxy on 127.0.0.1 adds ``--latency`` ms (default 5) to every chunk it
forwards, in each direction, keeping the order (a link with a round trip of twice that).
Our SCP (accepting a window of up to 8, answering C-STORE without writing) runs in a
subprocess behind it. Our SCU stores ``--count`` small CT instances (64x64, ~10 KB)
over ONE association through the proxy, once with the default window 1 (one store after
the other) and once proposing (8, 1) with 8 concurrent store tasks; pynetdicom -> our SCP
(window 1) is a reference row. Runs alternate over ``--rounds``; medians are printed.

    python benchmarks/bench_window.py                      # 200 instances, 5 ms, 3 rounds
    python benchmarks/bench_window.py --latency 20 --count 100 --rounds 1

Workers (started by the driver, each its own process): ``bench_window.py _scp --port P``,
``bench_window.py _proxy --port L --target P --latency MS --lifetime S`` and
``bench_window.py _client ours|pynetdicom --port L --dir D --window N``. Clients time
themselves from association request to release. Results: benchmarks/results/window-*.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SCP_TITLE = "WINDOWSCP"
CLIENT_TITLE = "BENCH"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
#: The SCP accepts an operations window up to this; the window-8 client proposes it.
WINDOW = 8
PEER_TIMEOUT = 10.0
CLIENT_TIMEOUT = 300.0
SCRIPT = str(Path(__file__).resolve())

#: (key, label, client, window)
CONFIGS = [
    ("ours-w1", "ours, window 1", "ours", 1),
    ("ours-w8", f"ours, window {WINDOW}", "ours", WINDOW),
    ("pynetdicom", "pynetdicom (window 1)", "pynetdicom", 1),
]


# ====================================================================== test files


def generate(folder: Path, count: int) -> list[Path]:
    """``count`` CT instances, 64x64 16-bit, Explicit VR Little Endian Part 10 files."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import generate_uid

    paths = []
    y, x = np.mgrid[0:64, 0:64]
    for index in range(count):
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientName = "Bench^Window"
        ds.PatientID = "BENCH"
        ds.Modality = "CT"
        ds.InstanceNumber = index + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 64
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = ((x * 3 + y * 2 + index) % 4096).astype(np.uint16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
        ds.file_meta = meta
        path = folder / f"ct{index:05d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


# ====================================================================== workers


def _proxy_main(argv: Sequence[str]) -> None:
    """Forward 127.0.0.1:port <-> 127.0.0.1:target, each chunk ``latency`` ms late."""
    parser = argparse.ArgumentParser(prog="bench_window.py _proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--latency", type=float, required=True, help="ms per direction")
    parser.add_argument("--lifetime", type=float, required=True, help="exit after this (s)")
    args = parser.parse_args(argv)
    import anyio
    from anyio.abc import SocketStream

    delay = args.latency / 1000

    async def pump(source: SocketStream, sink: SocketStream) -> None:
        # The reader stamps each chunk with its due time; the writer sends it then.
        # Chunks overlap in flight (a link, not a stop-and-wait), order is kept, and
        # the queue is bounded (a full queue stops reading: TCP flow control).
        send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](256)

        async def reader() -> None:
            async with send:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    while True:
                        data = await source.receive(65536)
                        await send.send((anyio.current_time() + delay, data))

        async def writer() -> None:
            async with receive:
                with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                    async for due, data in receive:
                        await anyio.sleep(max(0.0, due - anyio.current_time()))
                        await sink.send(data)
                    await sink.send_eof()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)

    async def handle(client: SocketStream) -> None:
        async with client:
            try:
                upstream = await anyio.connect_tcp(HOST, args.target)
            except OSError:
                return
            async with upstream, anyio.create_task_group() as tg:
                tg.start_soon(pump, client, upstream)
                tg.start_soon(pump, upstream, client)

    async def main() -> None:
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=args.port)
        with anyio.move_on_after(args.lifetime):
            await listener.serve(handle)

    anyio.run(main)


def _scp_main(argv: Sequence[str]) -> None:
    """Our SCP: window up to 8, C-STORE answered with Success, nothing written."""
    parser = argparse.ArgumentParser(prog="bench_window.py _scp")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import anyio

    from aionetdicom import AE
    from aionetdicom.dimse.command_set import CommandField
    from aionetdicom.services.storage import StoreRequest, storage_contexts, store_service

    ae = AE(
        SCP_TITLE,
        supported_contexts=storage_contexts(
            [CT_IMAGE_STORAGE], (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
        ),
        maximum_operations_performed=WINDOW,
    )

    async def on_store(request: StoreRequest) -> int:
        return 0

    ae.handle_dimse(CommandField.C_STORE_RQ, store_service(on_store))
    anyio.run(ae.serve_forever, HOST, args.port)


def _ours_client(
    port: int, paths: list[Path], window: int, scp_title: str = SCP_TITLE
) -> dict[str, Any]:
    """Our client storing ``paths`` over one association, ``window`` stores in flight.

    With ``window`` > 1 it proposes ``operations_window=(window, 1)`` and runs ``window``
    store tasks (bench_store.py and bench_all.py reuse it).
    """
    import anyio

    from aionetdicom import AE
    from aionetdicom.contexts import PresentationContext

    contexts = [
        PresentationContext(
            CT_IMAGE_STORAGE, (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
        )
    ]
    ae = AE(CLIENT_TITLE, acse_timeout=PEER_TIMEOUT, dimse_timeout=PEER_TIMEOUT)
    proposal = None if window == 1 else (window, 1)

    async def main() -> dict[str, Any]:
        failed = 0
        pending = iter(paths)
        negotiated: list[int] | None = None

        async def worker() -> None:
            nonlocal failed
            for path in pending:  # the workers share one iterator: each path once
                status = await assoc.store(path)
                failed += not status.is_success

        start = time.perf_counter()
        async with ae.associate(
            HOST, port, called_ae_title=scp_title, contexts=contexts, operations_window=proposal
        ) as assoc:
            assert assoc.response is not None
            item = assoc.response.user_information.asynchronous_operations_window
            if item is not None:
                negotiated = [item.maximum_invoked, item.maximum_performed]
            async with anyio.create_task_group() as tg:
                for _ in range(window):
                    tg.start_soon(worker)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "failed": failed, "negotiated": negotiated}

    result: dict[str, Any] = anyio.run(main)
    return result


def _pynetdicom_client(port: int, paths: list[Path]) -> dict[str, Any]:
    """The reference row: bench_store.py's pynetdicom client, window 1 by nature."""
    from bench_store import _pynetdicom_client as store_with_pynetdicom

    return {**store_with_pynetdicom(port, paths, SCP_TITLE), "negotiated": None}


def _client_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_window.py _client")
    parser.add_argument("client", choices=["ours", "pynetdicom"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--window", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    paths = sorted(args.dir.glob("*.dcm"))
    if args.client == "pynetdicom":
        result = _pynetdicom_client(args.port, paths)
    else:
        result = _ours_client(args.port, paths, args.window)
    result["count"] = len(paths)
    print(json.dumps(result), flush=True)


# ====================================================================== driver


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_listening(process: subprocess.Popen[bytes], port: int, what: str) -> None:
    """Poll until ``port`` accepts connections; fail if the process died."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@contextlib.contextmanager
def worker(args: list[str], port: int, what: str) -> Iterator[None]:
    """Start ``bench_window.py <args>`` listening on ``port``; kill it afterwards."""
    process = subprocess.Popen(
        [sys.executable, SCRIPT, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        wait_listening(process, port, what)
        yield
    finally:
        process.kill()
        process.wait(timeout=10)


def run_client(client: str, window: int, port: int, folder: Path, count: int) -> float:
    """One timed run; its seconds. Raises when a store failed or the window is wrong."""
    command = [sys.executable, SCRIPT, "_client", client, "--port", str(port)]
    command += ["--dir", str(folder), "--window", str(window)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"{client} exited {done.returncode}: {' / '.join(lines[-2:])}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["failed"] or result["count"] != count:
        raise RuntimeError(f"{client}: {result['failed']} of {result['count']} failed")
    if client == "ours" and window > 1 and result["negotiated"] != [window, 1]:
        raise RuntimeError(f"window {window} proposed, {result['negotiated']} negotiated")
    return float(result["seconds"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="instances per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=5.0, help="ms added per direction")
    parser.add_argument("--no-pynetdicom", action="store_true", help="skip the reference row")
    args = parser.parse_args(argv)
    configs = [c for c in CONFIGS if not (args.no_pynetdicom and c[2] == "pynetdicom")]
    times: dict[str, list[float]] = {key: [] for key, *_ in configs}
    errors: dict[str, list[str]] = {key: [] for key, *_ in configs}
    # Upper bound for the proxy: every run at window 1, generously, plus slack.
    per_run = args.count * (4 * args.latency / 1000 + 0.05) + 30
    lifetime = per_run * len(configs) * args.rounds + 60
    with tempfile.TemporaryDirectory(prefix="bench-window-") as tmp:
        folder = Path(tmp)
        paths = generate(folder, args.count)
        size = paths[0].stat().st_size
        scp_port, proxy_port = free_port(), free_port()
        proxy = ["_proxy", "--port", str(proxy_port), "--target", str(scp_port)]
        proxy += ["--latency", str(args.latency), "--lifetime", str(lifetime)]
        print(
            f"{args.count} CT instances of {size} bytes, one association each run, "
            f"+{args.latency:g} ms per direction, {args.rounds} rounds",
            flush=True,
        )
        with (
            worker(["_scp", "--port", str(scp_port)], scp_port, "SCP"),
            worker(proxy, proxy_port, "proxy"),
        ):
            for round_index in range(args.rounds):
                order = configs if round_index % 2 == 0 else configs[::-1]
                for key, label, client, window in order:
                    try:
                        seconds = run_client(client, window, proxy_port, folder, args.count)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        errors[key].append(str(exc))
                        print(f"  round {round_index + 1} {label}: ERROR {exc}", flush=True)
                        continue
                    times[key].append(seconds)
                    print(f"  round {round_index + 1} {label}: {seconds:.3f} s", flush=True)
    print_table(configs, times, errors, args.count)
    save(configs, times, errors, args, size)
    return 0 if all(times.values()) else 1


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def print_table(
    configs: list[tuple[str, str, str, int]],
    times: dict[str, list[float]],
    errors: dict[str, list[str]],
    count: int,
) -> None:
    """Median seconds and instances/s per row, then the window 8 / window 1 ratio."""
    print()
    print(f"{'client -> our SCP, via proxy':<34} {'median s':>10} {'instances/s':>12}  runs")
    for key, label, _client, _window in configs:
        median = _median(times[key])
        runs = f"{len(times[key])}" + (f" ({len(errors[key])} failed)" if errors[key] else "")
        if median is None:
            print(f"{label:<34} {'ERROR':>10} {'':>12}  {runs}")
        else:
            print(f"{label:<34} {median:>10.3f} {count / median:>12.1f}  {runs}")
    one, eight = _median(times["ours-w1"]), _median(times["ours-w8"])
    if one is not None and eight is not None:
        print(f"{f'window {WINDOW} / window 1 (throughput)':<34} {one / eight:>10.2f}x")
    reference = _median(times.get("pynetdicom", []))
    if one is not None and reference is not None:
        print(f"{'ours window 1 / pynetdicom (thr.)':<34} {reference / one:>10.2f}x")


def save(
    configs: list[tuple[str, str, str, int]],
    times: dict[str, list[float]],
    errors: dict[str, list[str]],
    args: argparse.Namespace,
    size: int,
) -> None:
    """Every run's time to benchmarks/results/window-<timestamp>.json."""
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    versions = {}
    for package in ("aionetdicom", "pynetdicom", "pydicom", "anyio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    data = {
        "count": args.count,
        "rounds": args.rounds,
        "latency_ms": args.latency,
        "bytes": size,
        "python": platform.python_version(),
        "versions": versions,
        "rows": [
            {
                "key": key,
                "label": label,
                "client": client,
                "window": window,
                "times": times[key],
                "errors": errors[key],
                "median": _median(times[key]),
            }
            for key, label, client, window in configs
        ],
    }
    path = results / time.strftime("window-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(data, indent=1))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        _client_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_scp":
        _scp_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_proxy":
        _proxy_main(sys.argv[2:])
    else:
        sys.exit(main())
