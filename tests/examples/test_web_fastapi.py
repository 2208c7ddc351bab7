"""examples/web_fastapi.py run as documented (``python examples/web_fastapi.py ...``,
uvicorn in a subprocess), its HTTP endpoints called with httpx over 127.0.0.1.

The remote peer is DCMTK's dcmqrscp holding the Q/R test archive (see web_peers.py);
C-MOVE goes to the app's own Storage SCP (run by its lifespan) or to a DCMTK storescp.
Further apps point at a dead port (502), a peer that never answers (504), and a DCMTK
storescp over TLS.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from pydicom.uid import JPEGBaseline8Bit

from tests.dicom_files import file_bytes, make_sc8
from tests.examples.web_peers import (
    APP_AET,
    DCMTK,
    DEST_AET,
    EXAMPLES,
    HOST,
    SLOW_AET,
    Archive,
    app_command,
    app_options,
    check_series,
    check_study_match,
    dcmtk_archive,
    multipart_related,
    new_study,
    parse_sse,
    related_type,
    silent_listener,
    slow_destination,
    sop_instance_uids,
    tls_files,
    unread_bytes,
    wait_until,
)
from tests.interop.test_echo_dcmtk import (
    DCMTK_ENV,
    Peer,
    free_port,
    start_peer,
    stop,
    wait_for_log,
)
from tests.qr_fixtures import DOE, ROE

pytestmark = pytest.mark.interop

DOE_CT, DOE_MR = DOE.studies
(ROE_CT,) = ROE.studies


@dataclass
class App:
    """A running web_fastapi.py process, an HTTP client for it, its storage folder."""

    process: Peer
    client: httpx.Client
    storage: Path

    def log(self) -> str:
        return self.process.log()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    with dcmtk_archive(tmp_path_factory.mktemp("fastapi_peer")) as archive:
        yield archive


@contextlib.contextmanager
def start_app(folder: Path, *options: str) -> Iterator[App]:
    """Run ``python examples/web_fastapi.py`` (in ``folder``) for the block."""
    folder.mkdir(exist_ok=True)
    port = free_port()
    storage = folder / "storage"
    command = app_command("web_fastapi.py", *options, "--storage", str(storage))
    process = start_peer(
        [*command, "--http-host", HOST, "--http-port", str(port)], folder / "app.log", port=port
    )
    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30.0) as client:
            yield App(process, client, storage)
        process.process.send_signal(signal.SIGTERM)  # uvicorn runs the lifespan's exit
        process.process.wait(timeout=20)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def app(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    folder = tmp_path_factory.mktemp("fastapi_app")
    with start_app(folder, *app_options(archive.qr.port, archive.app_scp_port)) as app:
        yield app


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    """examples/web_fastapi.py imported as its own script would (examples/ on the path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))
        yield importlib.import_module("web_fastapi")


def test_health(app: App, archive: Archive) -> None:
    response = app.client.get("/health")
    assert response.status_code == 200, app.log()
    body = response.json()
    assert body["status"] == "ok"
    assert body["ae_title"] == APP_AET
    assert body["scp"]["addresses"] == [[HOST, archive.app_scp_port]]
    assert body["peer"] == {"host": HOST, "port": archive.qr.port, "ae_title": "ARCHIVE"}
    assert body["pools"]["main"]["max_size"] == 1


def test_echo_through_the_pool(app: App) -> None:
    for _ in range(3):
        response = app.client.get("/echo")
        assert response.status_code == 200, app.log()
        assert response.json()["status"] == "0x0000"
        assert response.json()["category"] == "Success"
    pool = app.client.get("/health").json()["pools"]["main"]
    assert pool["reused"] >= 2  # one association served the three echoes
    assert pool["created"] <= 2


def test_find_studies_as_dicom_json(app: App) -> None:
    response = app.client.get("/studies", params={"PatientName": "DOE*"})
    assert response.status_code == 200, app.log()
    assert response.headers["content-type"] == "application/dicom+json"
    matches = {m["0020000D"]["Value"][0]: m for m in response.json()}
    assert set(matches) == {DOE_CT.uid, DOE_MR.uid}
    for study in DOE.studies:
        check_study_match(matches[study.uid], study, DOE.name, DOE.patient_id)

    ranged = app.client.get("/studies", params={"StudyDate": "20210101-20221231"}).json()
    assert {m["0020000D"]["Value"][0] for m in ranged} == {DOE_MR.uid, ROE_CT.uid}
    limited = app.client.get("/studies", params={"limit": "1"})
    assert limited.status_code == 200
    assert len(limited.json()) == 1  # the rest cancelled with C-CANCEL
    assert app.client.get("/studies", params={"PatientName": "NOBODY*"}).json() == []


def test_find_series(app: App) -> None:
    response = app.client.get(f"/studies/{ROE_CT.uid}/series")
    assert response.status_code == 200, app.log()
    check_series(response.json(), ROE_CT)
    only_ct = app.client.get(f"/studies/{ROE_CT.uid}/series", params={"Modality": "CT"}).json()
    assert len(only_ct) == 2


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/studies", {"PatientNam": "DOE*"}),  # unknown key
        ("/studies", {"StudyDate": "2020-01-01"}),
        ("/studies", {"limit": "0"}),
        ("/studies/1.2.x/series", {}),
    ],
)
def test_bad_queries_are_400(app: App, path: str, params: dict[str, str]) -> None:
    response = app.client.get(path, params=params)
    assert response.status_code == 400
    assert "error" in response.json()


def test_upload_multipart_form_reaches_dcmqrscp(app: App, archive: Archive) -> None:
    instances = new_study(2, patient="UPLOAD^FORM")
    files = [
        ("file", (f"ct{number}.dcm", file_bytes(ds), "application/dicom"))
        for number, ds in enumerate(instances)
    ]
    response = app.client.post("/instances", files=files, data={"comment": "ignored"})
    assert response.status_code == 200, app.log()
    body = response.json()
    assert body["stored"] == 2
    assert [f["file"] for f in body["files"]] == ["ct0.dcm", "ct1.dcm"]
    assert all(f["status"] == "0x0000" and f["association"] == "pool" for f in body["files"])
    uids = {str(ds.SOPInstanceUID) for ds in instances}
    assert uids <= sop_instance_uids(archive.storage)  # in dcmqrscp's storage area
    found = app.client.get(
        "/studies", params={"StudyInstanceUID": str(instances[0].StudyInstanceUID)}
    ).json()
    assert [m["00100010"]["Value"][0]["Alphabetic"] for m in found] == ["UPLOAD^FORM"]


def test_upload_raw_and_multipart_related(app: App, archive: Archive) -> None:
    raw, *related = new_study(3, patient="UPLOAD^RAW")
    response = app.client.post(
        "/instances", content=file_bytes(raw), headers={"content-type": "application/dicom"}
    )
    assert response.status_code == 200, app.log()
    assert response.json()["stored"] == 1
    response = app.client.post(
        "/instances",
        content=multipart_related(file_bytes(ds) for ds in related),
        headers={"content-type": related_type()},
    )
    assert response.status_code == 200, app.log()
    assert response.json()["stored"] == 2
    uids = {str(ds.SOPInstanceUID) for ds in (raw, *related)}
    assert uids <= sop_instance_uids(archive.storage)


def test_upload_bad_input(app: App) -> None:
    not_dicom = app.client.post("/instances", files=[("file", ("a.txt", b"hello", "text/plain"))])
    assert not_dicom.status_code == 400
    assert not_dicom.json()["files"][0]["file"] == "a.txt"
    assert app.client.post("/instances", files=[], data={"a": "b"}).status_code in (400, 415)
    plain = app.client.post("/instances", content=b"x", headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    body = multipart_related([file_bytes(new_study(1)[0])])
    truncated = app.client.post(
        "/instances", content=body[:-40], headers={"content-type": related_type()}
    )
    assert truncated.status_code == 400


def test_upload_the_peer_refuses_is_409(app: App) -> None:
    """A JPEG file dcmqrscp does not accept: the pool cannot send it, an association of
    its own is tried, the peer accepts no context for it: 409 as in STOW-RS."""
    response = app.client.post(
        "/instances",
        content=file_bytes(make_sc8(), JPEGBaseline8Bit),
        headers={"content-type": "application/dicom"},
    )
    assert response.status_code == 409, app.log()
    (result,) = response.json()["files"]
    assert result["ok"] is False
    assert "JPEG Baseline" in result["error"]


def test_retrieve_with_c_get_into_storage(app: App) -> None:
    response = app.client.post(f"/studies/{DOE_MR.uid}/retrieve")
    assert response.status_code == 200, app.log()
    body = response.json()
    assert (body["status"], body["completed"], body["failed"]) == ("0x0000", 5, 0)
    assert len(body["files"]) == 5
    assert sop_instance_uids(app.storage / DOE_MR.uid) == set(DOE_MR.instance_uids())
    missing = app.client.post("/studies/1.2.3.4.5/retrieve")
    assert missing.status_code == 404


def test_move_events_to_the_apps_own_scp(app: App) -> None:
    """C-MOVE to the app's SCP with progress as server-sent events."""
    received = app.client.get("/health").json()["received"]
    with app.client.stream("GET", f"/studies/{ROE_CT.uid}/move/events") as response:
        assert response.status_code == 200, app.log()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.iter_lines())
    *progress, (last_id, last, final) = events
    assert progress
    assert all(event == "progress" and data["status"] == "0xFF00" for _, event, data in progress)
    assert [number for number, _, _ in events] == list(range(1, len(events) + 1))
    assert last == "complete"
    assert (final["status"], final["completed"], final["failed"]) == ("0x0000", 8, 0)
    assert final["destination"] == APP_AET
    assert sop_instance_uids(app.storage / ROE_CT.uid) == set(ROE_CT.instance_uids())
    assert app.client.get("/health").json()["received"] == received + 8
    again = app.client.get(
        f"/studies/{ROE_CT.uid}/move/events", headers={"Last-Event-ID": str(last_id)}
    )
    assert again.status_code == 204  # a reconnecting EventSource does not move again


def test_client_leaving_the_event_stream_cancels_the_move(app: App, archive: Archive) -> None:
    """A client that goes away mid-move: the app sends C-CANCEL, dcmqrscp stops moving,
    the association goes back to the pool, and the app carries on."""
    url = f"/studies/{ROE_CT.uid}/move/events"
    with slow_destination(archive.slow_port) as slow:
        with app.client.stream("GET", url, params={"destination": SLOW_AET}) as response:
            assert response.status_code == 200, app.log()
            for line in response.iter_lines():
                if not line:
                    break  # one whole event read; leaving the block closes the connection
        # dcmqrscp waits for SLOWDEST to answer the second C-STORE, so the C-CANCEL
        # the app sends when the client goes away stays unread in its socket.
        wait_until(lambda: unread_bytes(archive.qr.port) > 0, "the C-CANCEL to dcmqrscp")
        slow.release.set()
        wait_until(
            lambda: app.client.get("/health").json()["pools"]["main"]["leases"] == 0,
            "the C-MOVE's association to come back to the pool",
        )
    assert len(slow.received) == 2, slow.received  # not all 8: the C-MOVE was cancelled
    assert "SubOperationsTerminatedDueToCancelIndication" in archive.qr.log()
    wait_for_log(app.process, "stopped early (CancelledError): C-CANCEL sent")
    assert app.client.get("/echo").status_code == 200


def test_move_to_dcmtk_storescp(app: App, archive: Archive) -> None:
    response = app.client.post(f"/studies/{DOE_CT.uid}/move", params={"destination": DEST_AET})
    assert response.status_code == 200, app.log()
    assert response.json()["completed"] == 7
    assert sop_instance_uids(archive.dest_dir) >= set(DOE_CT.instance_uids())


def test_move_errors(app: App) -> None:
    unknown = app.client.post(f"/studies/{DOE_CT.uid}/move", params={"destination": "NOBODY"})
    assert unknown.status_code == 400
    assert unknown.json()["status"] == "0xA801"
    assert app.client.post(f"/studies/{DOE_CT.uid}/move?destination=BAD\\AE").status_code == 400
    assert app.client.get("/studies/1.2.3.4.5/move/events").status_code == 404


def test_peer_down_is_502_and_silent_peer_is_504(tmp_path: Path) -> None:
    """Nobody listening on the peer's port: 502; a peer that never answers the
    association request (within the 1 s timeout): 504. /health stays 200."""
    dead_port = free_port()
    silent = silent_listener()
    with silent:
        silent_port = silent.getsockname()[1]
        dead = app_options(dead_port, free_port(), timeout=1.0)
        mute = app_options(silent_port, free_port(), timeout=1.0)
        with (
            start_app(tmp_path / "dead", *dead) as down,
            start_app(tmp_path / "mute", *mute) as quiet,
        ):
            assert down.client.get("/health").status_code == 200
            for response in (
                down.client.get("/echo"),
                down.client.get("/studies", params={"PatientName": "X*"}),
                down.client.post(f"/studies/{DOE_CT.uid}/retrieve"),
                down.client.get(f"/studies/{DOE_CT.uid}/move/events"),
            ):
                assert response.status_code == 502, down.log()
                assert "unreachable" in response.json()["error"]
            timed_out = quiet.client.get("/echo")
            assert timed_out.status_code == 504, quiet.log()
            assert "in time" in timed_out.json()["error"]


def test_lifespan_starts_and_stops_the_scp_and_the_pool(archive: Archive, tmp_path: Path) -> None:
    """uvicorn's SIGTERM runs the lifespan's exit: the pool releases its association
    (A-RELEASE, seen by dcmqrscp), the SCP stops listening, the process ends."""
    scp_port = free_port()
    with start_app(tmp_path, *app_options(archive.qr.port, scp_port)) as app:
        assert app.client.get("/echo").status_code == 200
        with socket.create_connection((HOST, scp_port), timeout=5):
            pass  # the lifespan's SCP listens
        released = archive.qr.log().count("Association Release")
    # (uvicorn re-raises the signal it handled once it has shut down.)
    assert app.process.process.returncode in (0, -signal.SIGTERM), app.log()
    assert "Application shutdown complete" in app.log()
    assert "Finished server process" in app.log()
    wait_until(
        lambda: archive.qr.log().count("Association Release") > released,
        "dcmqrscp to see the pool's A-RELEASE",
    )
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, scp_port), timeout=5)


def test_tls_peer_and_an_association_of_its_own(tmp_path: Path) -> None:
    """The app talks TLS to DCMTK storescp (+tls, client certificate required, every
    transfer syntax accepted): C-ECHO, a CT through the pool, and a JPEG file that the
    pool's contexts cannot carry over an association negotiated for it."""
    pki = tls_files(tmp_path)
    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    tls = ["+tls", str(pki.server_key), str(pki.server_cert), "+cf", str(pki.ca)]
    storescp = start_peer(
        [
            f"{DCMTK}storescp",
            "--fork",
            "-aet",
            "ARCHIVE",
            "+xa",
            *tls,
            "-od",
            str(received),
            str(port),
        ],
        tmp_path / "storescp.log",
        port=port,
        env=DCMTK_ENV,
    )
    try:
        options = app_options(port, free_port(), pool_size=4)
        options += ["--peer-tls", "--peer-ca", str(pki.ca)]
        options += ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
        with start_app(tmp_path / "app", *options) as secure:
            assert secure.client.get("/echo").status_code == 200, secure.log()
            ct, sc = new_study(1)[0], make_sc8()
            files = [
                ("file", ("ct.dcm", file_bytes(ct), "application/dicom")),
                ("file", ("sc.dcm", file_bytes(sc, JPEGBaseline8Bit), "application/dicom")),
            ]
            response = secure.client.post("/instances", files=files)
            assert response.status_code == 200, secure.log() + storescp.log()
            assert [f["association"] for f in response.json()["files"]] == ["pool", "dedicated"]
    finally:
        stop(storescp)
    assert sop_instance_uids(received) == {str(ct.SOPInstanceUID), str(sc.SOPInstanceUID)}


async def test_event_stream_turns_a_late_failure_into_an_error_event(
    example: ModuleType,
) -> None:
    """A failure after the first event cannot change the HTTP status any more: it
    becomes an ``error`` event, the last one."""

    async def events() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        yield "progress", {"completed": 2}
        raise example.GatewayError(502, "C-MOVE failed: boom", status="0xC000")

    chunks = [chunk async for chunk in example.EventStream._encode(("progress", {}), events())]
    text = b"".join(chunks).decode()
    parsed = parse_sse(text.split("\n")[:-1])
    assert [(number, event) for number, event, _ in parsed] == [
        (1, "progress"),
        (2, "progress"),
        (3, "error"),
    ]
    assert parsed[-1][2] == {"status_code": 502, "error": "C-MOVE failed: boom", "status": "0xC000"}


def test_settings_from_environment_and_command_line(example: ModuleType) -> None:
    environ = {"DICOM_PEER_PORT": "4242", "DICOM_PEER_TLS": "yes", "DICOM_STORAGE": "/srv/x"}
    settings = example.parse_settings(["--peer-aet", "PACS", "--pool-size", "2"], environ)
    assert (settings.peer_port, settings.peer_tls, settings.storage) == (4242, True, Path("/srv/x"))
    assert (settings.peer_ae_title, settings.pool_size, settings.timeout) == ("PACS", 2, 30.0)
