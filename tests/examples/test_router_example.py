"""examples/router.py between DCMTK's storescu (sender) and a destination on 127.0.0.1.

* plain forwarding to DCMTK storescp (router on trio), and over TLS;
* the destination down and back, with the router stopped (SIGTERM), killed (SIGKILL)
  while holding a queue and killed again while forwarding: every instance the router
  acknowledged reaches the destination (compared by SOP Instance UID);
* dead letters: a destination (the library's own SCP, in this process) that refuses
  some instances for good (0xA900, 0x0122, an SOP class it does not support) and one
  for a while (0xA700).
"""

from __future__ import annotations

import re
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import pydicom
import pytest

from aionetdicom import AE, Status, StoreRequest
from tests.dicom_files import CT_IMAGE_STORAGE, make_ct, make_mr, write_file
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
from tests.interop.test_echo_dcmtk import DCMTK_ENV, Peer, free_port, output, run, start_peer, stop
from tests.interop.test_tls_dcmtk import PKI, dcmtk_tls, pki  # noqa: F401 (a fixture)

pytestmark = pytest.mark.interop

DEST_AET = "DEST"


def start_router(folder: Path, name: str, port: int, destination_port: int, *extra: str) -> Peer:
    """examples/router.py on ``port`` with its spool in ``folder/spool``, fast retries."""
    peer = start_peer(
        example(
            "router", str(port), "--bind", HOST, "--spool", str(folder / "spool"),
            "--destination", f"{DEST_AET}@{HOST}:{destination_port}",
            "--retry-base", "0.1", "--retry-cap", "0.5", *extra,
        ),
        folder / f"{name}.log",
        port=port,
    )  # fmt: skip
    wait_for_line(peer, "router listening on")
    return peer


def start_destination(folder: Path, port: int, *extra: str) -> Peer:
    """DCMTK storescp (one process per association) writing into ``folder/received``."""
    (folder / "received").mkdir(exist_ok=True)
    return start_peer(
        [f"{DCMTK}storescp", "--fork", "-aet", DEST_AET, *extra, "-od",
         str(folder / "received"), str(port)],
        folder / f"destination-{port}.log",
        port=port,
        env=DCMTK_ENV,
    )  # fmt: skip


def send(port: int, files: dict[str, Path]) -> None:
    """DCMTK storescu sends ``files`` to the router; each must be acknowledged Success."""
    result = run(
        [f"{DCMTK}storescu", "-v", "-aec", "ROUTER", HOST, str(port),
         *map(str, files.values())],
        dcmtk=True,
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    assert output(result).count("Received Store Response (Success)") == len(files), output(result)


def queued(spool: Path) -> set[str]:
    """SOP Instance UIDs in the router's queue (read straight from its SQLite file)."""
    with sqlite3.connect(f"file:{spool / 'queue.sqlite3'}?mode=ro", uri=True) as db:
        return {uid for (uid,) in db.execute("SELECT sop_instance_uid FROM queue")}


def spooled(spool: Path) -> set[str]:
    """SOP Instance UIDs of the files waiting in the spool."""
    return {path.name[: -len(".dcm")] for path in (spool / "instances").glob("*.dcm")}


def kill(peer: Peer) -> None:
    """SIGKILL: no clean-up at all."""
    stop(peer)
    assert peer.process.returncode == -signal.SIGKILL


@pytest.fixture
def cleanup() -> Iterator[list[Peer]]:
    """Peers to stop at the end of the test, whatever happens."""
    peers: list[Peer] = []
    yield peers
    for peer in peers:
        stop(peer)


def test_router_forwards_to_dcmtk_on_trio(tmp_path: Path, cleanup: list[Peer]) -> None:
    files = make_files(tmp_path / "in", 6)
    destination_port, port = free_port(), free_port()
    cleanup.append(start_destination(tmp_path, destination_port))
    router = start_router(tmp_path, "router", port, destination_port, "--backend", "trio")
    cleanup.append(router)
    send(port, files)
    wait_until(lambda: set(files) <= dcmtk_received(tmp_path / "received"), "forwarding")
    wait_until(lambda: not queued(tmp_path / "spool"), "an empty queue")
    assert terminate(router) == 0, router.log()
    assert spooled(tmp_path / "spool") == set()
    assert "router stopped: 6 forwarded, 0 still queued" in router.log()
    for uid in files:
        assert re.search(rf"queued {re.escape(uid)} from STORESCU", router.log())
        assert f"forwarded {uid} to DEST (0x0000 Success)" in router.log()


def test_router_forwards_over_tls(
    tmp_path: Path,
    pki: PKI,  # noqa: F811
    cleanup: list[Peer],
) -> None:
    files = make_files(tmp_path / "in", 2)
    destination_port, port = free_port(), free_port()
    cleanup.append(start_destination(tmp_path, destination_port, *dcmtk_tls(pki.server, pki.ca)))
    tls = ["--tls", "--tls-ca", str(pki.ca), "--tls-cert", str(pki.client.cert),
           "--tls-key", str(pki.client.key)]  # fmt: skip
    router = start_router(tmp_path, "router", port, destination_port, *tls)
    cleanup.append(router)
    assert f"forwarding to {DEST_AET}@{HOST}:{destination_port} (TLS)" in router.log()
    send(port, files)
    wait_until(lambda: set(files) <= dcmtk_received(tmp_path / "received"), "forwarding")
    wait_until(lambda: not queued(tmp_path / "spool"), "an empty queue")
    assert terminate(router) == 0, router.log()


def test_router_loses_nothing_across_outages_and_restarts(
    tmp_path: Path, cleanup: list[Peer]
) -> None:
    """The issue's scenario: destination down, instances acknowledged and queued, router
    stopped, restarted, killed, restarted while forwarding and killed again, the
    destination restarted under a running router: every instance arrives."""
    first = make_files(tmp_path / "first", 8)
    second = make_files(tmp_path / "second", 8)
    everything = {**first, **second}
    spool = tmp_path / "spool"
    destination_port, port = free_port(), free_port()

    # 1. Destination down: the router acknowledges everything and queues it.
    router = start_router(tmp_path, "router-1", port, destination_port)
    cleanup.append(router)
    send(port, first)
    assert queued(spool) == spooled(spool) == set(first)
    wait_for_line(router, "unreachable")
    shown = run_example("router", "--spool", str(spool), "--show-queue")
    assert shown.returncode == 0, output(shown)
    assert "8 instance(s) queued" in shown.stdout
    assert "last error: ConnectionRefusedError" in shown.stdout
    # 2. SIGTERM: a clean stop keeps the queue.
    assert terminate(router) == 0, router.log()
    assert "router stopped: 0 forwarded, 8 still queued" in router.log()

    # 3. Restart: the queue resumes; more arrive; then SIGKILL.
    router = start_router(tmp_path, "router-2", port, destination_port)
    cleanup.append(router)
    assert "8 instance(s) queued" in router.log()
    send(port, second)
    kill(router)
    assert queued(spool) == spooled(spool) == set(everything)

    # 4. Destination up (slow: it answers a second after storing), a new router starts
    #    forwarding and is killed once the first instances are delivered, with others
    #    stored at the destination but not yet answered (those are sent again later).
    destination = start_destination(tmp_path, destination_port, "--sleep-after", "1")
    cleanup.append(destination)
    router = start_router(tmp_path, "router-3", port, destination_port)
    cleanup.append(router)
    assert "16 instance(s) queued" in router.log()
    received = tmp_path / "received"
    wait_for_line(router, "forwarded ")
    kill(router)
    # Killed between removing a file and deleting its row, a row may outlive its file
    # (the next start drops it); never is a file left without its row here.
    assert spooled(spool) <= queued(spool)
    assert len(spooled(spool)) < len(everything)

    # 5. Destination down again while a new router runs; then back.
    stop(destination)
    router = start_router(tmp_path, "router-4", port, destination_port)
    cleanup.append(router)
    if queued(spool):
        wait_for_line(router, "unreachable")
    cleanup.append(start_destination(tmp_path, destination_port))
    wait_until(lambda: set(everything) <= dcmtk_received(received), "every instance", 30.0)
    wait_until(lambda: not queued(spool), "an empty queue")
    assert terminate(router) == 0, router.log()

    assert dcmtk_received(received) == set(everything)
    assert spooled(spool) == set()
    assert list((spool / "dead-letter").iterdir()) == []
    for path in received.iterdir():  # complete files, the right instance in each
        assert pydicom.dcmread(path).SOPInstanceUID == path.name.split(".", 1)[1]


def test_router_repairs_what_a_crash_leaves(tmp_path: Path, cleanup: list[Peer]) -> None:
    """What a kill can leave between two steps, made by hand: a partial file of a
    reception (removed), a file renamed into place whose row was never committed
    (queued and forwarded), a row whose file was already removed after delivery (dropped,
    not sent again). A second router on the same spool is refused."""
    files = make_files(tmp_path / "in", 3)
    destination_port, port = free_port(), free_port()
    spool = tmp_path / "spool"
    router = start_router(tmp_path, "router-1", port, destination_port)
    cleanup.append(router)
    delivered, kept, unqueued = files
    send(port, {uid: files[uid] for uid in (delivered, kept)})
    second = run_example(
        "router", str(free_port()), "--spool", str(spool), "--destination", f"X@{HOST}:104"
    )
    assert second.returncode == 1
    assert "is in use by another router" in second.stderr
    kill(router)
    (spool / "instances" / f"{delivered}.dcm").unlink()  # delivered, row not yet deleted
    (spool / "instances" / f"{unqueued}.dcm").write_bytes(files[unqueued].read_bytes())
    (spool / "instances" / f".{unqueued}.dcm.0123456789ab.part").write_bytes(b"half")

    cleanup.append(start_destination(tmp_path, destination_port))
    router = start_router(tmp_path, "router-2", port, destination_port)
    cleanup.append(router)
    assert (
        "recovered the spool: removed 1 partial file(s), queued 1 unqueued file(s) "
        "(0 unreadable ones moved to dead-letter/), dropped 1 row(s)" in router.log()
    )
    assert "2 instance(s) queued" in router.log()
    wait_until(lambda: not queued(spool), "an empty queue")
    assert terminate(router) == 0, router.log()
    assert dcmtk_received(tmp_path / "received") == {kept, unqueued}
    assert list((spool / "instances").iterdir()) == []


# ---------------------------------------------------------------------- dead letters


@pytest.fixture
def anyio_backend() -> str:
    """The in-process destination runs on asyncio (the router on trio is tested above)."""
    return "asyncio"


async def test_router_dead_letters_permanent_failures(tmp_path: Path) -> None:
    """0xA900 and 0x0122 answers and an unsupported SOP class go to dead-letter/ with a
    note and an error line; 0xA700 is retried until it succeeds."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    plan = {"GOOD": 0x0000, "MISMATCH": 0xA900, "UNSUPPORTED": 0x0122, "BUSY": 0xA700}
    uids: dict[str, str] = {}
    paths: list[str] = []
    for number, patient in enumerate([*plan, "MRIMAGE"]):
        ds = make_mr(seed=number) if patient == "MRIMAGE" else make_ct(seed=number)
        ds.PatientID = patient
        uids[patient] = str(ds.SOPInstanceUID)
        paths.append(str(write_file(ds, inputs / f"{patient}.dcm")))

    destination = AE(DEST_AET)
    destination.add_storage_contexts([CT_IMAGE_STORAGE])  # MR Image Storage: not accepted
    seen: dict[str, int] = {}

    @destination.on_store
    async def on_store(request: StoreRequest) -> int:
        patient = str(request.dataset.PatientID)
        seen[patient] = seen.get(patient, 0) + 1
        if patient == "BUSY" and seen[patient] > 1:
            return 0x0000  # busy only the first time
        return plan[patient]

    spool = tmp_path / "spool"
    async with destination.serve(HOST, 0) as server:
        port = free_port()
        router = await anyio.to_thread.run_sync(
            lambda: start_router(tmp_path, "router", port, server.port)
        )
        try:
            stored = await anyio.run_process(
                [f"{DCMTK}storescu", "-aec", "ROUTER", HOST, str(port), *paths],
                env=DCMTK_ENV,
                check=False,
            )
            assert stored.returncode == 0, stored.stderr
            with anyio.fail_after(20):  # the queue is a file: poll it
                while True:
                    if not queued(spool) and seen.get("BUSY", 0) >= 2:
                        break
                    await anyio.sleep(0.05)
            code = await anyio.to_thread.run_sync(terminate, router)
            assert code == 0, router.log()
        finally:
            await anyio.to_thread.run_sync(stop, router)

    assert seen == {"GOOD": 1, "MISMATCH": 1, "UNSUPPORTED": 1, "BUSY": 2}
    dead = spool / "dead-letter"
    expected = {
        "MISMATCH": "destination answered 0xA900",
        "UNSUPPORTED": "destination answered 0x0122",
        "MRIMAGE": "not accepted by the destination",
    }
    assert {path.name for path in dead.iterdir()} == {
        f"{uids[patient]}{suffix}" for patient in expected for suffix in (".dcm", ".json")
    }
    log = router.log()
    for patient, reason in expected.items():
        uid = uids[patient]
        note = pydicom.dcmread(dead / f"{uid}.dcm")
        assert note.PatientID == patient
        assert reason in (dead / f"{uid}.json").read_text()
        assert re.search(rf"ERROR router: dead letter: {re.escape(uid)} .*{reason}", log), log
    assert "destination answered 0xA700" in log
    assert "retrying in" in log
    assert spooled(spool) == set()
    shown = run_example("router", "--spool", str(spool), "--show-queue")
    assert "0 instance(s) queued" in shown.stdout
    assert "3 dead letter(s)" in shown.stdout


def test_router_status_policy() -> None:
    """Which destination statuses deliver, retry or dead-letter an instance; the backoff
    doubles from the base, stays under the cap and keeps at least half of its delay."""
    router = load_example("router")
    outcome = router.Outcome

    def classify(code: int, *retry: int) -> object:
        return router.classify(Status(code, "C-STORE"), frozenset(retry))

    assert classify(0x0000) is outcome.DELIVERED
    assert classify(0xB000) is outcome.DELIVERED  # warning: coercion of data elements
    assert classify(0x0111) is outcome.DELIVERED  # duplicate SOP instance (some PACS)
    assert classify(0xA700) is outcome.RETRY
    assert classify(0xA7FF) is outcome.RETRY
    assert classify(0x0213) is outcome.RETRY
    assert classify(0xA900) is outcome.DEAD
    assert classify(0x0122) is outcome.DEAD
    assert classify(0xC211) is outcome.DEAD
    assert classify(0x0110) is outcome.DEAD
    assert classify(0x0110, 0x0110) is outcome.RETRY  # --retry-status 0110
    for attempt, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (60, 5.0)]:
        delay = router.backoff(attempt, 1.0, 5.0)
        assert full / 2 <= delay <= full
