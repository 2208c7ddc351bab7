"""Benchmark C-STORE throughput: many CT images over ONE association.

Clients (aionetdicom, pynetdicom, DCMTK ``storescu``) send the same files to the same
SCP, DCMTK ``storescp``, in one run, so the numbers compare as ratios on a noisy
machine; ours -> ours and pynetdicom -> pynetdicom rows are added for reference. Each
pair runs with the SCP discarding what it receives (``ignore``: storescp ``--ignore``)
and writing it to tmpfs (``write``).

    python benchmarks/bench_store.py                 # 1000 CT 512x512x16 bit, 3 rounds
    python benchmarks/bench_store.py --count 200 --rounds 1 --modes ignore

The images (about 525 MB for 1000) are generated once into ``--cache-dir`` and reused.
Every SCP announces a maximum PDU of 128 KiB (storescp's largest), so every client
sends PDUs of the same size. DCMTK runs with ``TCP_NODELAY=1`` (see DESIGN.md).
Python clients run in their own process and time themselves from association request
to release, after imports and listing the files; ``storescu`` is timed from outside,
process start included (it also parses every file with DCMTK, which is its way).

The same file is the worker: ``bench_store.py _client ours --port P --dir D`` and
``bench_store.py _scp ours --port P --mode ignore`` are what the driver starts (handy
for profiling: ``python -m cProfile -s cumtime benchmarks/bench_store.py _client ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SCP_TITLE = "STORESCP"
CLIENT_TITLE = "BENCH"
STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"
#: Debian's DCMTK keeps Nagle's algorithm on unless this is set (see DESIGN.md).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
#: storescp accepts at most 128 KiB; every SCP here announces the same.
SCP_MAX_PDU = 131072
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
#: ACSE/DIMSE timeout of the Python clients: loopback answers in milliseconds.
PEER_TIMEOUT = 10.0
CLIENT_TIMEOUT = 300.0
SCRIPT = str(Path(__file__).resolve())
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "aionetdicom-bench"
DEFAULT_OUT = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())

CLIENT_NAMES = {
    "ours": "ours (asyncio)",
    "ours-trio": "ours (trio)",
    "pynetdicom": "pynetdicom",
    "dcmtk": "DCMTK storescu",
}
SCP_NAMES = {"dcmtk": "DCMTK storescp", "ours": "ours", "pynetdicom": "pynetdicom"}
DEFAULT_PAIRS = "ours>dcmtk,pynetdicom>dcmtk,dcmtk>dcmtk,ours>ours,pynetdicom>pynetdicom"


# ====================================================================== test images


def generate(folder: Path, count: int) -> list[Path]:
    """``count`` CT images, 512x512 16-bit, Explicit VR LE, made once and reused."""
    marker = folder / ".complete"
    paths = [folder / f"ct{i:05d}.dcm" for i in range(count)]
    if marker.exists() and all(p.exists() for p in paths):
        return paths
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    print(f"generating {count} CT images in {folder} ...", file=sys.stderr, flush=True)
    root = generate_uid()[:50].rstrip(".")
    study, series = generate_uid(), generate_uid()
    # A 12-bit pattern, little endian 16-bit words.
    values = [((i * 7) ^ (i >> 9)) & 0x0FFF for i in range(512 * 512)]
    pixel_data = struct.pack(f"<{len(values)}H", *values)
    for index, path in enumerate(paths):
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = f"{root}.{index + 1}"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.PatientName = "Bench^CT"
        ds.PatientID = "BENCH"
        ds.Modality = "CT"
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0, 0, index]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.PixelData = pixel_data
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = EXPLICIT_VR_LITTLE_ENDIAN
        ds.file_meta = meta
        dcmwrite(path, ds, enforce_file_format=True)
    marker.write_text(str(count))
    return paths


# ====================================================================== workers


def _ours_client(port: int, paths: list[Path], backend: str) -> dict[str, Any]:
    import anyio

    from aionetdicom import AE
    from aionetdicom.contexts import PresentationContext

    contexts = [
        PresentationContext(
            CT_IMAGE_STORAGE, (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
        )
    ]
    ae = AE(CLIENT_TITLE, acse_timeout=PEER_TIMEOUT, dimse_timeout=PEER_TIMEOUT)

    async def main() -> dict[str, Any]:
        failed = 0
        start = time.perf_counter()
        async with ae.associate(HOST, port, called_ae_title=SCP_TITLE, contexts=contexts) as assoc:
            for path in paths:
                status = await assoc.store(path)
                failed += not status.is_success
        return {"seconds": time.perf_counter() - start, "failed": failed}

    result: dict[str, Any] = anyio.run(main, backend=backend)
    return result


def _pynetdicom_client(port: int, paths: list[Path], scp_title: str = SCP_TITLE) -> dict[str, Any]:
    """pynetdicom storing ``paths`` over one association (bench_window.py reuses it)."""
    from pynetdicom import AE

    ae = AE(ae_title=CLIENT_TITLE)
    ae.add_requested_context(
        CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]
    )
    ae.acse_timeout = ae.dimse_timeout = PEER_TIMEOUT
    failed = 0
    start = time.perf_counter()
    assoc = ae.associate(HOST, port, ae_title=scp_title)
    if not assoc.is_established:
        raise RuntimeError("pynetdicom: association not established")
    for path in paths:
        status = assoc.send_c_store(str(path))
        failed += not status or status.Status != 0
    assoc.release()
    return {"seconds": time.perf_counter() - start, "failed": failed}


def _client_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_store.py _client")
    parser.add_argument("client", choices=["ours", "ours-trio", "pynetdicom"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument(
        "--window", type=int, default=1, help="ours: propose (N, 1) and keep N stores in flight"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    paths = sorted(args.dir.glob("*.dcm"))[: args.count]
    if args.client == "pynetdicom":
        result = _pynetdicom_client(args.port, paths)
    elif args.window > 1:
        from bench_window import _ours_client as store_with_window

        result = store_with_window(args.port, paths, args.window, scp_title=SCP_TITLE)
    else:
        backend = "trio" if args.client == "ours-trio" else "asyncio"
        result = _ours_client(args.port, paths, backend)
    result["count"] = len(paths)
    print(json.dumps(result), flush=True)


def _scp_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_store.py _scp")
    parser.add_argument("scp", choices=["ours", "pynetdicom"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["ignore", "write"], default="ignore")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--window", type=int, default=1, help="ours: maximum_operations_performed (default 1)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    write = args.mode == "write"
    out: Path = args.out
    if write and out is None:
        parser.error("--mode write needs --out")
    if args.scp == "ours":
        import anyio

        from aionetdicom import AE
        from aionetdicom.dimse.command_set import CommandField
        from aionetdicom.services.storage import StoreRequest, storage_contexts, store_service

        ae = AE(
            SCP_TITLE,
            maximum_pdu_length=SCP_MAX_PDU,
            supported_contexts=storage_contexts(
                [CT_IMAGE_STORAGE], (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
            ),
            maximum_operations_performed=args.window,
        )

        async def on_store(request: StoreRequest) -> int:
            if write:
                await request.save_to(out)
            return 0

        ae.handle_dimse(CommandField.C_STORE_RQ, store_service(on_store))
        anyio.run(ae.serve_forever, HOST, args.port)
        return
    from pynetdicom import AE as PynAE
    from pynetdicom import evt

    pyn = PynAE(ae_title=SCP_TITLE)
    pyn.maximum_pdu_size = SCP_MAX_PDU
    pyn.add_supported_context(
        CT_IMAGE_STORAGE, [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]
    )

    def handle(event: Any) -> int:
        if write:
            name = str(event.request.AffectedSOPInstanceUID)
            with open(out / f"{name}.dcm", "wb") as handle:
                handle.write(event.encoded_dataset())
        return 0x0000

    pyn.start_server((HOST, args.port), block=True, evt_handlers=[(evt.EVT_C_STORE, handle)])


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


@dataclass
class SCP:
    """A running SCP process, its port and output folder (None: discards)."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    out: Path | None

    def clear(self) -> None:
        """Remove what it wrote."""
        if self.out is not None:
            for path in self.out.iterdir():
                path.unlink()

    def stored(self) -> int:
        """How many files it wrote."""
        return 0 if self.out is None else sum(1 for p in self.out.iterdir() if p.is_file())


@contextlib.contextmanager
def running_scp(name: str, mode: str, out_root: Path, log_dir: Path) -> Iterator[SCP]:
    """Start one SCP for ``mode``; kill it afterwards."""
    port = free_port()
    out = None
    if mode == "write":
        out = out_root / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    env = None
    if name == "dcmtk":
        command = [STORESCP, "-aet", SCP_TITLE, "-pdu", str(SCP_MAX_PDU)]
        command += ["-od", str(out)] if out is not None else ["--ignore"]
        command.append(str(port))
        env = DCMTK_ENV
    else:
        command = [sys.executable, SCRIPT, "_scp", name, "--port", str(port), "--mode", mode]
        if out is not None:
            command += ["--out", str(out)]
    log = (log_dir / f"scp-{name}-{mode}.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    try:
        wait_listening(process, port, SCP_NAMES[name])
        yield SCP(name, process, port, out)
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)


def run_client(client: str, scp: SCP, folder: Path, count: int, window: int = 1) -> float:
    """One timed run of ``client`` sending ``count`` files to ``scp``; its seconds.

    ``window`` > 1 (ours only): propose that operations window and keep as many stores
    in flight; the run fails unless (window, 1) was negotiated.
    """
    if client == "dcmtk":
        command = [STORESCU, "-aet", CLIENT_TITLE, "-aec", SCP_TITLE, "-R", "-xe"]
        command += [HOST, str(scp.port), *sorted(str(p) for p in folder.glob("*.dcm"))[:count]]
        start = time.perf_counter()
        done = subprocess.run(
            command, env=DCMTK_ENV, capture_output=True, timeout=CLIENT_TIMEOUT, check=False
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"storescu exited {done.returncode}: {done.stderr[-500:]!r}")
        return seconds
    command = [sys.executable, SCRIPT, "_client", client, "--port", str(scp.port)]
    command += ["--dir", str(folder), "--count", str(count)]
    if window > 1:
        command += ["--window", str(window)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"{client} exited {done.returncode}: {' / '.join(lines[-2:])}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["failed"] or result["count"] != count:
        raise RuntimeError(f"{client}: {result['failed']} of {result['count']} failed")
    if window > 1 and result.get("negotiated") != [window, 1]:
        raise RuntimeError(f"window {window} proposed, {result.get('negotiated')} negotiated")
    return float(result["seconds"])


@dataclass
class Cell:
    """The runs of one client->SCP pair in one mode."""

    times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description="C-STORE throughput: ours vs pynetdicom vs DCMTK")
    parser.add_argument("--count", type=int, default=1000, help="images (default: 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default: 3)")
    parser.add_argument(
        "--modes", default="ignore,write", help="SCP modes: ignore, write (default: both)"
    )
    parser.add_argument(
        "--pairs",
        default=DEFAULT_PAIRS,
        help=f"client>scp pairs, comma separated (default: {DEFAULT_PAIRS})",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="where images are kept")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="SCP output (tmpfs)")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep the SCPs' logs here")
    args = parser.parse_args(argv)

    pairs = [tuple(p.split(">")) for p in args.pairs.split(",") if p]
    for client, scp_name in pairs:
        if client not in CLIENT_NAMES or scp_name not in SCP_NAMES:
            parser.error(f"unknown pair {client}>{scp_name}")
    modes = [m for m in args.modes.split(",") if m]
    folder = args.cache_dir or DEFAULT_CACHE / f"ct{args.count}"
    paths = generate(folder, args.count)
    total_bytes = sum(p.stat().st_size for p in paths)
    out_root = Path(tempfile.mkdtemp(prefix="aionetdicom-bench-", dir=args.out_dir))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="aionetdicom-bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    cells: dict[tuple[str, str, str], Cell] = {}
    print(
        f"{args.count} CT images, {total_bytes / 1e6:.0f} MB, one association each run, "
        f"{args.rounds} round(s), modes: {', '.join(modes)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        for mode in modes:
            scp_kinds = list(dict.fromkeys(scp for _, scp in pairs))
            with contextlib.ExitStack() as stack:
                scps = {
                    kind: stack.enter_context(running_scp(kind, mode, out_root, log_dir))
                    for kind in scp_kinds
                }
                for round_index in range(args.rounds):
                    order = pairs if round_index % 2 == 0 else list(reversed(pairs))
                    for client, scp_name in order:
                        scp = scps[scp_name]
                        cell = cells.setdefault((client, scp_name, mode), Cell())
                        scp.clear()
                        try:
                            seconds = run_client(client, scp, folder, args.count)
                            if mode == "write":
                                deadline = time.monotonic() + 5
                                while scp.stored() < args.count and time.monotonic() < deadline:
                                    time.sleep(0.05)
                                if scp.stored() != args.count:
                                    raise RuntimeError(
                                        f"SCP wrote {scp.stored()} of {args.count} files"
                                    )
                            cell.times.append(seconds)
                            note = f"{seconds:.2f} s"
                        except Exception as exc:
                            cell.errors.append(str(exc))
                            note = f"ERROR {exc}"
                        print(
                            f"  [{mode} round {round_index + 1}] {CLIENT_NAMES[client]} -> "
                            f"{SCP_NAMES[scp_name]}: {note}",
                            file=sys.stderr,
                            flush=True,
                        )
                        scp.clear()
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    print_table(cells, pairs, modes, args.count, total_bytes)
    save(cells, args, total_bytes)
    return 0


def print_table(
    cells: dict[tuple[str, str, str], Cell],
    pairs: list[tuple[str, ...]],
    modes: list[str],
    count: int,
    total_bytes: int,
) -> None:
    """Medians per pair and mode, then the ratios."""
    label_width = max(len(f"{CLIENT_NAMES[c]} -> {SCP_NAMES[s]}") for c, s in pairs)
    header = f"{'client -> SCP':<{label_width}}"
    for mode in modes:
        header += f" | {mode + ': s':>10} {'MB/s':>7} {'img/s':>7}"
    print()
    print(header)
    print("-" * len(header))
    for client, scp_name in pairs:
        line = f"{CLIENT_NAMES[client] + ' -> ' + SCP_NAMES[scp_name]:<{label_width}}"
        for mode in modes:
            cell = cells.get((client, scp_name, mode), Cell())
            median = cell.median
            if median is None:
                line += f" | {'error':>10} {'':>7} {'':>7}"
            else:
                mbs = total_bytes / 1e6 / median
                line += f" | {median:>10.2f} {mbs:>7.0f} {count / median:>7.0f}"
        print(line)
    print()
    for mode in modes:

        def med(client: str, scp_name: str, mode: str = mode) -> float | None:
            cell = cells.get((client, scp_name, mode))
            return None if cell is None else cell.median

        ratios = []
        ours = med("ours", "dcmtk")
        for other, label in (("pynetdicom", "ours/pynetdicom"), ("dcmtk", "ours/DCMTK")):
            theirs = med(other, "dcmtk")
            if ours and theirs:
                ratios.append(f"{label} {theirs / ours:.2f}x")
        same = med("ours", "ours")
        pyn_same = med("pynetdicom", "pynetdicom")
        if same and pyn_same:
            ratios.append(f"ours->ours / pynetdicom->pynetdicom {pyn_same / same:.2f}x")
        if ratios:
            print(f"throughput ratios ({mode}, into DCMTK storescp): " + ", ".join(ratios))
    errors = [(k, e) for k, cell in cells.items() for e in cell.errors]
    for (client, scp_name, mode), error in errors:
        print(f"error {CLIENT_NAMES[client]} -> {SCP_NAMES[scp_name]} ({mode}): {error}")


def save(cells: dict[tuple[str, str, str], Cell], args: argparse.Namespace, size: int) -> None:
    """Every run's time to benchmarks/results/store-<timestamp>.json."""
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    versions = {}
    for package in ("aionetdicom", "pynetdicom", "pydicom", "anyio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    data = {
        "count": args.count,
        "rounds": args.rounds,
        "bytes": size,
        "python": platform.python_version(),
        "versions": versions,
        "cells": [
            {"client": c, "scp": s, "mode": m, "times": cell.times, "errors": cell.errors}
            for (c, s, m), cell in cells.items()
        ],
    }
    path = results / time.strftime("store-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(data, indent=1))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        _client_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_scp":
        _scp_main(sys.argv[2:])
    else:
        sys.exit(main())
