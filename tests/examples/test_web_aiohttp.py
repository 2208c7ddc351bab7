"""examples/web_aiohttp.py served by aiohttp's AppRunner and TCPSite on 127.0.0.1, its
HTTP endpoints called with aiohttp's client (asyncio only: aiohttp needs it).

The remote peer is DCMTK's dcmqrscp holding the Q/R test archive (see web_peers.py);
C-MOVE goes to the app's own Storage SCP (run by its cleanup context) or to a DCMTK
storescp. Other apps point at a dead port (502) and a peer that never answers (504).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from aionetdicom import AE
from tests.dicom_files import file_bytes
from tests.examples.web_peers import (
    APP_AET,
    DEST_AET,
    EXAMPLES,
    HOST,
    SLOW_AET,
    Archive,
    app_options,
    check_series,
    check_study_match,
    dcmtk_archive,
    new_study,
    parse_sse,
    silent_listener,
    slow_destination,
    sop_instance_uids,
    unread_bytes,
)
from tests.interop.test_echo_dcmtk import free_port, our_app, start_peer, stop
from tests.qr_fixtures import DOE, ROE

pytestmark = pytest.mark.interop

DOE_CT, DOE_MR = DOE.studies
(ROE_CT,) = ROE.studies


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    """examples/web_aiohttp.py imported as its own script would (examples/ on the path)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))
        yield importlib.import_module("web_aiohttp")


@dataclass
class App:
    """A running app: its HTTP client and its storage folder."""

    http: aiohttp.ClientSession
    storage: Path


@asynccontextmanager
async def serve(example: ModuleType, folder: Path, options: list[str]) -> AsyncIterator[App]:
    """Run the app (settings parsed from ``options`` as on its command line, storage in
    ``folder``) for the block."""
    settings = example.parse_settings([*options, "--storage", str(folder / "storage")])
    application = example.create_app(settings)
    runner = web.AppRunner(application, handler_cancellation=True)  # as main() runs it
    await runner.setup()  # the cleanup context starts the SCP and the pools here
    try:
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(f"http://{HOST}:{port}") as http:
            yield App(http, settings.storage)
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    with dcmtk_archive(tmp_path_factory.mktemp("aiohttp_peer")) as archive:
        yield archive


@pytest.fixture(scope="module")
async def app(
    example: ModuleType, archive: Archive, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[App]:
    folder = tmp_path_factory.mktemp("aiohttp_app")
    async with serve(example, folder, app_options(archive.qr.port, archive.app_scp_port)) as app:
        yield app


async def get_json(app: App, path: str, **params: str) -> tuple[int, Any]:
    async with app.http.get(path, params=params) as response:
        return response.status, await response.json(content_type=None)


async def post_json(app: App, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with app.http.post(path, **kwargs) as response:
        return response.status, await response.json(content_type=None)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` every 50 ms until it holds; fail after 15 s."""
    for _ in range(300):
        if await check():
            return
        await anyio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def test_health_and_echo(app: App, archive: Archive) -> None:
    status, body = await get_json(app, "/health")
    assert status == 200
    assert body["scp"]["addresses"] == [[HOST, archive.app_scp_port]]
    for _ in range(2):
        status, body = await get_json(app, "/echo")
        assert (status, body["status"]) == (200, "0x0000"), body
    _, body = await get_json(app, "/health")
    assert body["pools"]["main"]["reused"] >= 1


async def test_find_studies_and_series(app: App) -> None:
    async with app.http.get("/studies", params={"PatientName": "ROE*"}) as response:
        assert response.status == 200
        assert response.content_type == "application/dicom+json"
        (match,) = await response.json(content_type=None)
    check_study_match(match, ROE_CT, ROE.name, ROE.patient_id)
    status, matches = await get_json(app, "/studies", StudyDate="20200101")
    assert [m["0020000D"]["Value"] for m in matches] == [[DOE_CT.uid]]
    status, matches = await get_json(app, f"/studies/{DOE_CT.uid}/series")
    assert status == 200
    check_series(matches, DOE_CT)
    status, body = await get_json(app, "/studies", Bogus="1")
    assert status == 400
    assert "Bogus" in body["error"]


async def test_upload_form_related_and_raw(app: App, archive: Archive) -> None:
    instances = new_study(4, patient="UPLOAD^AIOHTTP")
    form = aiohttp.FormData()
    for number, ds in enumerate(instances[:2]):
        form.add_field(
            "file", file_bytes(ds), filename=f"f{number}.dcm", content_type="application/dicom"
        )
    status, body = await post_json(app, "/instances", data=form)
    assert (status, body["stored"]) == (200, 2), body
    related = aiohttp.MultipartWriter("related", boundary="aiohttp-boundary")
    related.append(file_bytes(instances[2]), {"Content-Type": "application/dicom"})
    status, body = await post_json(app, "/instances", data=related)
    assert (status, body["stored"]) == (200, 1), body
    raw = file_bytes(instances[3])
    status, body = await post_json(
        app, "/instances", data=raw, headers={"Content-Type": "application/dicom"}
    )
    assert (status, body["stored"]) == (200, 1), body
    uids = {str(ds.SOPInstanceUID) for ds in instances}
    assert uids <= sop_instance_uids(archive.storage)  # arrived at dcmqrscp


async def test_upload_bad_input(app: App) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"not dicom at all", filename="x.bin")
    status, body = await post_json(app, "/instances", data=form)
    assert status == 400
    assert body["files"][0]["file"] == "x.bin"
    status, _ = await post_json(app, "/instances", data=b"{}", headers={"Content-Type": "a/b"})
    assert status == 415


async def test_retrieve_with_c_get(app: App) -> None:
    status, body = await post_json(app, f"/studies/{DOE_CT.uid}/retrieve")
    assert status == 200, body
    assert (body["completed"], body["failed"]) == (7, 0)
    assert sop_instance_uids(app.storage / DOE_CT.uid) == set(DOE_CT.instance_uids())
    status, body = await post_json(app, "/studies/not-a-uid/retrieve")
    assert status == 400


async def test_move_events_to_the_apps_own_scp(app: App) -> None:
    async with app.http.get(f"/studies/{DOE_MR.uid}/move/events") as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        lines = [line.decode().rstrip("\n") async for line in response.content]
    events = parse_sse(lines)
    *progress, (_, last, final) = events
    assert progress
    assert {event for _, event, _ in progress} == {"progress"}
    assert last == "complete"
    assert (final["completed"], final["failed"], final["destination"]) == (5, 0, APP_AET)
    assert sop_instance_uids(app.storage / DOE_MR.uid) == set(DOE_MR.instance_uids())


async def test_client_leaving_the_event_stream_cancels_the_move(app: App, archive: Archive) -> None:
    """A client that goes away mid-move: the handler is cancelled, the app sends
    C-CANCEL, dcmqrscp stops, the association goes back to the pool."""
    with slow_destination(archive.slow_port) as slow:
        url = f"/studies/{DOE_MR.uid}/move/events"
        async with app.http.get(url, params={"destination": SLOW_AET}) as response:
            assert response.status == 200
            while (await response.content.readline()).strip():
                pass  # one whole event read; leaving the block closes the connection

        # dcmqrscp waits for SLOWDEST to answer the second C-STORE, so the C-CANCEL
        # the app sends when the client goes away stays unread in its socket.
        async def cancel_sent() -> bool:
            return unread_bytes(archive.qr.port) > 0

        async def lease_returned() -> bool:
            _, health = await get_json(app, "/health")
            return bool(health["pools"]["main"]["leases"] == 0)

        await eventually(cancel_sent, "the C-CANCEL to dcmqrscp")
        slow.release.set()
        await eventually(lease_returned, "the association to come back to the pool")
    assert len(slow.received) == 2, slow.received  # not all 5: the C-MOVE was cancelled
    assert "SubOperationsTerminatedDueToCancelIndication" in archive.qr.log()
    assert (await get_json(app, "/echo"))[0] == 200


async def test_move_to_dcmtk_storescp_and_errors(app: App, archive: Archive) -> None:
    status, body = await post_json(
        app, f"/studies/{ROE_CT.uid}/move", params={"destination": DEST_AET}
    )
    assert (status, body["completed"]) == (200, 8), body
    assert sop_instance_uids(archive.dest_dir) >= set(ROE_CT.instance_uids())
    status, body = await post_json(
        app, f"/studies/{ROE_CT.uid}/move", params={"destination": "UNKNOWN"}
    )
    assert (status, body["status"]) == (400, "0xA801")
    async with app.http.get("/studies/1.2.3.4.5/move/events") as response:
        assert response.status == 404


async def test_cleanup_context_runs_the_scp(example: ModuleType, tmp_path: Path) -> None:
    """The SCP answers while the app runs and is gone after runner.cleanup()."""
    scp_port = free_port()
    ae = AE("PROBE")
    async with (
        serve(example, tmp_path, app_options(free_port(), scp_port)),
        ae.associate(HOST, scp_port, called_ae_title=APP_AET) as assoc,
    ):
        assert (await assoc.echo()).is_success
    with pytest.raises(ConnectionRefusedError):
        async with ae.associate(HOST, scp_port, called_ae_title=APP_AET):
            pass


async def test_peer_down_is_502_and_silent_peer_is_504(example: ModuleType, tmp_path: Path) -> None:
    with silent_listener() as silent:
        dead = app_options(free_port(), free_port(), timeout=1.0)
        mute = app_options(silent.getsockname()[1], free_port(), timeout=1.0)
        async with (
            serve(example, tmp_path / "dead", dead) as down,
            serve(example, tmp_path / "mute", mute) as quiet,
        ):
            status, _ = await get_json(down, "/health")
            assert status == 200
            for path in ("/echo", "/studies", f"/studies/{DOE_CT.uid}/series"):
                status, body = await get_json(down, path)
                assert status == 502, body
                assert "unreachable" in body["error"]
            status, body = await post_json(down, f"/studies/{DOE_CT.uid}/move")
            assert status == 502, body
            form = aiohttp.FormData()
            form.add_field("f", file_bytes(new_study(1)[0]), filename="a.dcm")
            status, body = await post_json(down, "/instances", data=form)
            assert status == 502, body
            assert body["files"][0]["ok"] is False
            status, body = await get_json(quiet, "/echo")
            assert status == 504, body


async def test_against_our_qrscp_with_a_bigger_pool(example: ModuleType, tmp_path: Path) -> None:
    """The same service with our qrscp app as the peer and four pooled associations:
    concurrent uploads, C-FIND, C-GET and C-MOVE back to the app's SCP."""
    port, scp_port = free_port(), free_port()
    command = our_app(
        "qrscp", str(port), "--bind", HOST, "-od", str(tmp_path / "archive"),
        "--destination", f"{APP_AET}={HOST}:{scp_port}", "--max-runtime", "60",
    )  # fmt: skip
    qrscp = start_peer(command, tmp_path / "qrscp.log", port=port)
    try:
        options = app_options(port, scp_port, peer_aet="QRSCP", pool_size=4)
        async with serve(example, tmp_path / "app", options) as app:
            instances = new_study(6, patient="QRSCP^PEER")
            form = aiohttp.FormData()
            for number, ds in enumerate(instances):
                form.add_field("f", file_bytes(ds), filename=f"{number}.dcm")
            status, body = await post_json(app, "/instances", data=form)
            assert (status, body["stored"]) == (200, 6), body
            study = str(instances[0].StudyInstanceUID)
            status, matches = await get_json(app, "/studies", PatientName="QRSCP*")
            assert [m["0020000D"]["Value"] for m in matches] == [[study]], qrscp.log()
            status, body = await post_json(app, f"/studies/{study}/retrieve")
            assert (status, body["completed"]) == (200, 6), body
            async with app.http.get(f"/studies/{study}/move/events") as response:
                lines = [line.decode().rstrip("\n") async for line in response.content]
            *_, (_, last, final) = parse_sse(lines)
            assert (last, final["completed"]) == ("complete", 6), final
    finally:
        stop(qrscp)
    uids = {str(ds.SOPInstanceUID) for ds in instances}
    assert sop_instance_uids(tmp_path / "app" / "storage" / study) == uids
