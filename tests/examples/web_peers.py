"""DCMTK peers and checks shared by the web example tests (FastAPI and aiohttp).

:func:`dcmtk_archive` starts DCMTK's dcmqrscp (the remote peer of the apps) filled by
DCMTK's storescu with the Q/R test archive of ``tests/qr_fixtures.py``, and a DCMTK
storescp as a C-MOVE destination; dcmqrscp also knows the app's own SCP as a C-MOVE
destination. DCMTK runs with ``TCP_NODELAY=1``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pydicom
import pytest
import trustme
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from aionetdicom import AE, StoreRequest
from tests.dicom_files import make_ct
from tests.interop.test_echo_dcmtk import (
    DCMTK_ENV,
    Peer,
    free_port,
    output,
    run,
    start_peer,
    stop,
)
from tests.qr_fixtures import Study, write_archive

HOST = "127.0.0.1"
DCMTK = "/usr/bin/"
ARCHIVE_AET = "ARCHIVE"
APP_AET = "WEBGATEWAY"
DEST_AET = "DESTSCP"
SLOW_AET = "SLOWDEST"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CONFIG = """\
NetworkTCPPort  = {port}
MaxPDUSize      = 65536
MaxAssociations = 32

HostTable BEGIN
webapp   = ({app_aet}, localhost, {app_port})
destscp  = ({dest_aet}, localhost, {dest_port})
slowdest = ({slow_aet}, localhost, {slow_port})
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{archive_aet} {storage} RW (200, 100mb) ANY
AETable END
"""


@dataclass
class Archive:
    """dcmqrscp with the test archive, its storage, and the DCMTK C-MOVE destination."""

    qr: Peer
    storage: Path
    dest: Peer
    dest_dir: Path
    #: The port the app's Storage SCP must listen on (dcmqrscp moves there).
    app_scp_port: int
    #: The port of the SLOWDEST C-MOVE destination (see :func:`slow_destination`).
    slow_port: int


@contextlib.contextmanager
def dcmtk_archive(root: Path) -> Iterator[Archive]:
    """Start dcmqrscp and storescp under ``root``, load the archive; stop both after."""
    storage = root / "db" / ARCHIVE_AET
    storage.mkdir(parents=True)
    dest_dir = root / "dest"
    dest_dir.mkdir()
    port, dest_port, app_port, slow_port = free_port(), free_port(), free_port(), free_port()
    config = root / "dcmqrscp.cfg"
    config.write_text(
        CONFIG.format(
            port=port,
            app_aet=APP_AET,
            app_port=app_port,
            dest_aet=DEST_AET,
            dest_port=dest_port,
            slow_aet=SLOW_AET,
            slow_port=slow_port,
            archive_aet=ARCHIVE_AET,
            storage=storage,
        )
    )
    qr = start_peer(
        [f"{DCMTK}dcmqrscp", "-v", "-c", str(config), str(port)],
        root / "dcmqrscp.log",
        port=port,
        env=DCMTK_ENV,
    )
    try:
        dest = start_peer(
            [f"{DCMTK}storescp", "-aet", DEST_AET, "-od", str(dest_dir), str(dest_port)],
            root / "storescp.log",
            port=dest_port,
            env=DCMTK_ENV,
        )
    except BaseException:
        stop(qr)
        raise
    try:
        files = write_archive(root / "files")
        loaded = run(
            [f"{DCMTK}storescu", "-aec", ARCHIVE_AET, HOST, str(port), *map(str, files)],
            dcmtk=True,
        )
        assert loaded.returncode == 0, output(loaded) + qr.log()
        yield Archive(qr, storage, dest, dest_dir, app_port, slow_port)
    finally:
        stop(dest)
        stop(qr)


@dataclass
class SlowDestination:
    """What :func:`slow_destination` received; set ``release`` to let it go on."""

    release: threading.Event
    received: list[str]


@contextlib.contextmanager
def slow_destination(port: int) -> Iterator[SlowDestination]:
    """Our Storage SCP SLOWDEST (in a thread of its own) that holds the second
    C-STORE until ``release`` is set: a C-MOVE to it stays in progress meanwhile."""
    release = threading.Event()
    received: list[str] = []
    ae = AE(SLOW_AET)
    ae.add_storage_contexts()

    @ae.on_store
    async def on_store(request: StoreRequest) -> int:
        received.append(request.sop_instance_uid)
        if len(received) == 2:
            await anyio.to_thread.run_sync(release.wait, 30.0)
        return 0x0000

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ae.serve(HOST, port)),
    ):
        try:
            yield SlowDestination(release, received)
        finally:
            release.set()


def unread_bytes(port: int) -> int:
    """Bytes received but not yet read by whoever owns the TCP connections on local
    ``port`` of 127.0.0.1 (Linux /proc/net/tcp): tells that a peer busy elsewhere
    (dcmqrscp in a C-MOVE sub-operation) has been sent something, e.g. a C-CANCEL."""
    local = f"0100007F:{port:04X}"
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01":  # ESTABLISHED
            total += int(fields[4].split(":")[1], 16)
    return total


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def tls_files(folder: Path) -> TLSFiles:
    """A CA and server/client certificates for 127.0.0.1 (trustme), as PEM files."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    paths: list[Path] = []
    for name in ("server", "client"):
        leaf = ca.issue_cert(HOST, "localhost", common_name=name)
        cert, key = folder / f"{name}.pem", folder / f"{name}.key"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        paths += [cert, key]
    return TLSFiles(folder / "ca.pem", *paths)


def silent_listener() -> socket.socket:
    """A listening socket that never accepts: connecting works (the kernel's backlog),
    the A-ASSOCIATE-RQ is never answered."""
    return socket.create_server((HOST, 0), backlog=16)


def app_command(script: str, *options: str) -> list[str]:
    """``python examples/<script> <options>``: an example app run as documented."""
    return [sys.executable, str(EXAMPLES / script), *options]


def app_options(
    archive_port: int,
    scp_port: int,
    *,
    peer_aet: str = ARCHIVE_AET,
    timeout: float = 10.0,
    pool_size: int = 1,
) -> list[str]:
    """The settings pointing an app at a peer (``peer_aet`` on ``archive_port``).

    One association per pool by default: dcmqrscp forks per association and names
    stored files from the clock, so two of its processes storing at the same moment
    can write the same file name and one instance is lost (Debian's DCMTK 3.6.7).
    """
    return [
        "--peer-host", HOST, "--peer-port", str(archive_port), "--peer-aet", peer_aet,
        "--aet", APP_AET, "--scp-host", HOST, "--scp-port", str(scp_port),
        "--timeout", str(timeout), "--pool-size", str(pool_size),
    ]  # fmt: skip


# ---------------------------------------------------------------------- data


def new_study(count: int, *, patient: str = "UPLOAD^ONE") -> list[Dataset]:
    """``count`` CT instances of a fresh study (new UIDs) for upload tests."""
    study, series = generate_uid(), generate_uid()
    instances = []
    for number in range(count):
        ds = make_ct(rows=16, columns=16, seed=number)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID = patient, f"ID-{study[-8:]}"
        instances.append(ds)
    return instances


def multipart_related(parts: Iterable[bytes], boundary: str = "dicom-boundary-7f3a") -> bytes:
    """A STOW-RS style multipart/related body of application/dicom parts."""
    body = b""
    for data in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def related_type(boundary: str = "dicom-boundary-7f3a") -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'


def sop_instance_uids(folder: Path) -> set[str]:
    """SOP Instance UIDs of every DICOM file under ``folder``."""
    found = set()
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.endswith((".cfg", ".log")):
            with contextlib.suppress(pydicom.errors.InvalidDicomError):
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                found.add(str(ds.SOPInstanceUID))
    return found


def parse_sse(lines: Iterable[str]) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event, data) of each event in the lines of a text/event-stream."""
    events = []
    current: dict[str, str] = {}
    for line in lines:
        if not line:
            if current:
                events.append((int(current["id"]), current["event"], json.loads(current["data"])))
            current = {}
            continue
        name, _, value = line.partition(": ")
        current[name] = value
    assert not current, f"unterminated event {current}"
    return events


# ---------------------------------------------------------------------- checks


def value(match: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` (8 hex digits) in a DICOM JSON object."""
    return match[tag]["Value"][0]


def check_study_match(match: dict[str, Any], study: Study, name: str, patient_id: str) -> None:
    """A study-level C-FIND match in DICOM JSON (PS3.18 F) describes ``study``."""
    assert match["0020000D"] == {"vr": "UI", "Value": [study.uid]}
    assert match["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": name}]}
    assert match["00100020"] == {"vr": "LO", "Value": [patient_id]}
    assert match["00080020"] == {"vr": "DA", "Value": [study.date]}
    assert value(match, "00080050") == study.accession
    assert value(match, "00081030") == study.description
    assert "00080052" not in match  # Query/Retrieve Level is not part of the result
    assert all(len(tag) == 8 and int(tag, 16) >= 0 for tag in match)


def check_series(matches: list[dict[str, Any]], study: Study) -> None:
    """Series-level matches: one per series of ``study``, with modality and number."""
    found = {value(m, "0020000E"): (value(m, "00080060"), value(m, "00200011")) for m in matches}
    assert found == {s.uid: (s.modality, s.number) for s in study.series}
    assert all(m["0020000D"]["Value"] == [study.uid] for m in matches)
    assert all(m["00200011"]["vr"] == "IS" for m in matches)
