"""Benchmark Query/Retrieve: our qrscp vs DCMTK dcmqrscp on the same data, same client.

Both servers run as processes on 127.0.0.1 and hold the same 10,000 small CT instances
(100 studies x 4 series x 25 images) plus one 500-instance study; our own SCU drives
both (one client, so the numbers compare the servers):

- ingest: C-STORE of all 10,500 instances over one association;
- C-FIND at study level, every study (universal keys), repeated;
- C-FIND at study level with a PatientName wildcard, repeated;
- C-FIND at image level: every image of one series, for 40 series;
- C-MOVE of the 500-instance study to a DCMTK storescp (``--ignore``).

    python benchmarks/bench_qr.py                 # 3 rounds (ingest in the first)
    python benchmarks/bench_qr.py --rounds 1 --studies 20

Storage folders live in /dev/shm; the instances are generated once into the cache.
DCMTK runs with ``TCP_NODELAY=1``. Prints one table with ratios (dcmqrscp / ours: > 1
means we are faster); raw numbers go to ``benchmarks/results/qr-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import bench_store
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite

from aionetdicom import AE, sop_classes
from aionetdicom.contexts import PresentationContext

HOST = "127.0.0.1"
QR_TITLE = "QRSCP"
DEST_TITLE = "DESTSCP"
DCMQRSCP = "/usr/bin/dcmqrscp"
STORESCP = "/usr/bin/storescp"
ROOT = "1.2.826.0.1.3680043.9.7433.88"
SHM = bench_store.DEFAULT_OUT
RESULTS = Path(__file__).resolve().parent / "results"
SERIES_PER_STUDY = 4
IMAGES_PER_SERIES = 25
MOVE_STUDY_SIZE = 500
IMAGE_QUERIES = 40

DCMQRSCP_CONFIG = """\
NetworkTCPPort  = {port}
MaxPDUSize      = 131072
MaxAssociations = 16

HostTable BEGIN
{dest} = ({dest}, 127.0.0.1, {dest_port})
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{title} {storage} RW (500, 4096mb) ANY
AETable END
"""


def _instance(study: int, series: int, image: int, pixels: bytes) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = bench_store.CT_IMAGE_STORAGE
    ds.SOPInstanceUID = f"{ROOT}.{study}.{series}.{image}"
    ds.StudyInstanceUID = f"{ROOT}.{study}"
    ds.SeriesInstanceUID = f"{ROOT}.{study}.{series}"
    ds.PatientName = f"BENCH^P{study:03d}"
    ds.PatientID = f"P{study:03d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = f"2024{1 + study % 12:02d}{1 + study % 28:02d}"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"A{study:05d}"
    ds.StudyID = str(study)
    ds.Modality = "CT"
    ds.SeriesNumber = series
    ds.InstanceNumber = image + 1
    ds.ReferringPhysicianName = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = bench_store.EXPLICIT_VR_LITTLE_ENDIAN
    ds.file_meta = meta
    return ds


def generate(folder: Path, studies: int) -> list[Path]:
    """``studies`` studies of 4 x 25 images plus one 500-image study, made once (cached)."""
    marker = folder / ".complete"
    if marker.exists() and marker.read_text() == str(studies):
        return sorted(folder.glob("*.dcm"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"generating {studies * 100 + MOVE_STUDY_SIZE} instances in {folder} ...", flush=True)
    pixels = bytes(64 * 64 * 2)
    plan = [(s, SERIES_PER_STUDY, IMAGES_PER_SERIES) for s in range(1, studies + 1)]
    plan.append((0, 5, MOVE_STUDY_SIZE // 5))  # study 0: the C-MOVE study
    for study, series_count, images in plan:
        for series in range(1, series_count + 1):
            for image in range(images):
                ds = _instance(study, series, image, pixels)
                dcmwrite(folder / f"{ds.SOPInstanceUID}.dcm", ds, enforce_file_format=True)
    marker.write_text(str(studies))
    return sorted(folder.glob("*.dcm"))


@contextlib.contextmanager
def server(command: list[str], port: int, what: str, log: Path) -> Iterator[None]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=bench_store.DCMTK_ENV,
            start_new_session=True,
        )
    try:
        bench_store.wait_listening(process, port, what)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def qr_server(kind: str, work: Path, dest_port: int, *, empty: bool = True) -> Iterator[int]:
    """Our qrscp or dcmqrscp on its storage folder (emptied first unless ``empty`` is
    False: a later round reuses what the first ingested); yields its port."""
    port = bench_store.free_port()
    storage = work / f"{kind}-storage"
    if empty:
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True)
    if kind == "ours":
        command = [
            sys.executable,
            "-m",
            "aionetdicom",
            "qrscp",
            str(port),
            "-aet",
            QR_TITLE,
            "-od",
            str(storage),
            "--destination",
            f"{DEST_TITLE}={HOST}:{dest_port}",
            "-pdu",
            "131072",
        ]
    else:
        config = work / "dcmqrscp.cfg"
        config.write_text(
            DCMQRSCP_CONFIG.format(
                port=port, title=QR_TITLE, storage=storage, dest=DEST_TITLE, dest_port=dest_port
            )
        )
        command = [DCMQRSCP, "-c", str(config), str(port)]
    with server(command, port, kind, work / f"{kind}.log"):
        yield port


CONTEXTS = [
    PresentationContext(uid)
    for uid in (
        bench_store.CT_IMAGE_STORAGE,
        sop_classes.STUDY_ROOT_FIND,
        sop_classes.STUDY_ROOT_MOVE,
    )
]


async def _timed(port: int, body: Any) -> float:
    async with AE("BENCH", dimse_timeout=300).associate(
        HOST, port, called_ae_title=QR_TITLE, contexts=CONTEXTS
    ) as assoc:
        start = time.perf_counter()
        await body(assoc)
        return time.perf_counter() - start


def _query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def _count(assoc: Any, identifier: Dataset) -> int:
    found = 0
    async for status, match in assoc.find(identifier, model="study"):
        if match is not None:
            found += 1
        elif not status.is_success:
            raise RuntimeError(f"C-FIND ended with {status}")
    return found


def measure(
    port: int, paths: list[Path], studies: int, repeats: int, *, with_ingest: bool = True
) -> dict[str, Any]:
    """Every scenario against the server on ``port``: seconds and match counts (the
    ingest only ``with_ingest``)."""
    result: dict[str, Any] = {}

    async def ingest(assoc: Any) -> None:
        for path in paths:
            status = await assoc.store(path)
            if not status.is_success:
                raise RuntimeError(f"C-STORE of {path.name}: {status}")

    async def all_studies(assoc: Any) -> None:
        query = _query(
            "STUDY", StudyInstanceUID="", PatientName="", StudyDate="", AccessionNumber=""
        )
        result["study_matches"] = [await _count(assoc, query) for _ in range(repeats)][-1]

    async def wildcard(assoc: Any) -> None:
        query = _query("STUDY", StudyInstanceUID="", PatientName="BENCH^P00*")
        result["wildcard_matches"] = [await _count(assoc, query) for _ in range(repeats)][-1]

    async def images(assoc: Any) -> None:
        total = 0
        for n in range(IMAGE_QUERIES):
            study = 1 + n % studies
            series = 1 + n % SERIES_PER_STUDY
            query = _query(
                "IMAGE",
                StudyInstanceUID=f"{ROOT}.{study}",
                SeriesInstanceUID=f"{ROOT}.{study}.{series}",
                SOPInstanceUID="",
                InstanceNumber="",
            )
            total += await _count(assoc, query)
        result["image_matches"] = total

    async def move(assoc: Any) -> None:
        query = _query("STUDY", StudyInstanceUID=f"{ROOT}.0")
        final = None
        async for progress in assoc.move(query, DEST_TITLE, model="study"):
            final = progress
        assert final is not None
        result["moved"] = final.completed
        if final.failed:
            raise RuntimeError(f"C-MOVE: {final.failed} failed")

    for name, body in (
        *((("ingest", ingest),) if with_ingest else ()),
        ("find_study", all_studies),
        ("find_wildcard", wildcard),
        ("find_image", images),
        ("move_500", move),
    ):
        result[name] = anyio.run(_timed, port, body)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--studies", type=int, default=100, help="studies of 100 images")
    parser.add_argument("--repeats", type=int, default=10, help="C-FIND repeats per round")
    parser.add_argument(
        "--ingest-every-round",
        dest="ingest_once",
        action="store_false",
        help="store everything again in every round (default: round 1 ingests; later "
        "rounds restart both servers on the same storage and repeat the queries)",
    )
    args = parser.parse_args()
    paths = generate(bench_store.DEFAULT_CACHE / f"qr{args.studies}", args.studies)
    work = SHM / "aionetdicom-bench-qr"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "dcmqrscp": []}
    dest_port = bench_store.free_port()
    try:
        dest = [STORESCP, "--ignore", "-aet", DEST_TITLE, "-pdu", "131072", str(dest_port)]
        with server(dest, dest_port, "storescp", work / "dest.log"):
            for round_number in range(args.rounds):
                order = ["ours", "dcmqrscp"] if round_number % 2 == 0 else ["dcmqrscp", "ours"]
                for kind in order:
                    first = round_number == 0 or not args.ingest_once
                    with qr_server(kind, work, dest_port, empty=first) as port:
                        run = measure(port, paths, args.studies, args.repeats, with_ingest=first)
                    runs[kind].append(run)
                    print(f"  [round {round_number + 1}] {kind}: {json.dumps(run)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(runs, len(paths), args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"qr-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    print(f"results: {out}")
    return 0


def print_table(runs: dict[str, list[dict[str, Any]]], count: int, args: Any) -> None:
    rows = [
        ("ingest", f"C-STORE {count} instances, one association"),
        ("find_study", f"C-FIND STUDY, all studies, x{args.repeats}"),
        ("find_wildcard", f"C-FIND STUDY, PatientName wildcard, x{args.repeats}"),
        ("find_image", f"C-FIND IMAGE, one series each, {IMAGE_QUERIES} queries"),
        ("move_500", f"C-MOVE {MOVE_STUDY_SIZE}-instance study to storescp"),
    ]
    print()
    title = f"scenario (median of {args.rounds})"
    print(f"{title:<58} {'ours s':>8} {'dcmqrscp s':>10} {'ratio':>7}")
    print("-" * 86)
    for key, label in rows:
        ours_runs = [run[key] for run in runs["ours"] if key in run]
        theirs_runs = [run[key] for run in runs["dcmqrscp"] if key in run]
        ours, theirs = statistics.median(ours_runs), statistics.median(theirs_runs)
        label = f"{label} (n={len(ours_runs)})"
        print(f"{label:<58} {ours:>8.3f} {theirs:>10.3f} {theirs / ours:>6.2f}x")
    for key in ("study_matches", "wildcard_matches", "image_matches", "moved"):
        values = {kind: runs[kind][-1].get(key) for kind in runs}
        print(f"  matches {key}: {values}")
    print("ratio = dcmqrscp time / our time (> 1: we are faster)")


if __name__ == "__main__":
    raise SystemExit(main())
