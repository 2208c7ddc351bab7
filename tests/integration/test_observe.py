"""Metrics hooks and debug summaries: what observers and the log see of real traffic."""

from __future__ import annotations

import logging

import anyio
import pytest
from pydicom.dataset import Dataset

from aionetdicom import AE, Metrics, Observer, OperationRecord, sop_classes
from aionetdicom.association import Association
from aionetdicom.contexts import PresentationContext
from aionetdicom.services.qr_scp import query_retrieve_contexts
from aionetdicom.services.storage import StoreRequest, storage_contexts
from tests.dicom_files import CT_IMAGE_STORAGE, make_ct

HOST = "127.0.0.1"
LIMIT = 20.0


class Recorder(Observer):
    """Keeps everything it is told."""

    def __init__(self) -> None:
        self.opened: list[int] = []
        self.closed: list[tuple[int, BaseException | None]] = []
        self.operations: list[OperationRecord] = []

    def association_opened(self, assoc: Association) -> None:
        self.opened.append(assoc.id)

    def association_closed(self, assoc: Association, error: BaseException | None) -> None:
        self.closed.append((assoc.id, error))

    def operation_finished(self, assoc: Association, operation: OperationRecord) -> None:
        self.operations.append(operation)


def make_scp() -> AE:
    scp = AE(
        "OBS_SCP",
        supported_contexts=[
            PresentationContext(sop_classes.VERIFICATION),
            *storage_contexts([CT_IMAGE_STORAGE]),
            *query_retrieve_contexts([sop_classes.STUDY_ROOT_FIND]),
        ],
    )

    @scp.on_store
    async def on_store(request: StoreRequest) -> int:
        return 0xA700 if request.sop_instance_uid.endswith(".9") else 0

    @scp.on_find
    async def on_find(request: object) -> list[Dataset]:
        matches = []
        for number in range(3):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = f"1.2.{number}"
            matches.append(ds)
        return matches

    return scp


CONTEXTS = [
    PresentationContext(uid)
    for uid in (sop_classes.VERIFICATION, CT_IMAGE_STORAGE, sop_classes.STUDY_ROOT_FIND)
]


async def test_metrics_and_records_on_both_sides() -> None:
    """Echo, two stores (one refused), a find: both sides count associations, bytes,
    operations by status category and their latency."""
    scp, scu = make_scp(), AE("OBS_SCU")
    theirs, ours = scp.add_observer(Metrics()), scu.add_observer(Metrics())
    recorder = scu.add_observer(Recorder())
    scp_recorder = scp.add_observer(Recorder())
    refused = make_ct(seed=2)
    refused.SOPInstanceUID = "1.2.3.9"
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    with anyio.fail_after(LIMIT):
        async with scp.serve(HOST, 0) as server:
            async with scu.associate(HOST, server.port, contexts=CONTEXTS) as assoc:
                assert (await assoc.echo()).is_success
                assert (await assoc.store(make_ct(seed=1))).is_success
                assert int(await assoc.store(refused)) == 0xA700
                matches = [m async for _, m in assoc.find(query, model="study") if m]
                assert len(matches) == 3
                sent, received = assoc.bytes_sent, assoc.bytes_received
            while scp_recorder.closed == []:  # noqa: ASYNC110 - the SCP side ends a bit later
                await anyio.sleep(0.01)
    assert isinstance(ours, Metrics)
    assert isinstance(theirs, Metrics)
    for metrics, role in ((ours, "SCU"), (theirs, "SCP")):
        assert metrics.associations_open == 0
        assert metrics.associations_closed["released"] == 1
        assert metrics.operations[("C-ECHO", role, "success")] == 1
        assert metrics.operations[("C-STORE", role, "success")] == 1
        assert metrics.operations[("C-STORE", role, "failure")] == 1
        assert metrics.operations[("C-FIND", role, "success")] == 1
        count, total = metrics.latency("C-STORE", role)
        assert count == 2
        assert total > 0
    # Both ends agree on every byte (the release PDUs come after the snapshot).
    assert ours.bytes_out == theirs.bytes_in == sent + 10  # + A-RELEASE-RQ
    assert ours.bytes_in == theirs.bytes_out == received + 10  # + A-RELEASE-RP
    assert sent > 2 * len(make_ct(seed=1).PixelData)
    assert len(recorder.opened) == 1
    assert recorder.closed == [(recorder.opened[0], None)]
    store = [op for op in recorder.operations if op.service == "C-STORE"]
    assert [op.status for op in store] == [0x0000, 0xA700]
    assert {op.sop_class_uid for op in store} == {CT_IMAGE_STORAGE}
    text = ours.prometheus_text()
    assert 'dicom_operations_total{service="C-STORE",role="SCU",status="failure"} 1' in text
    assert 'dicom_operation_seconds_count{service="C-FIND",role="SCU"} 1' in text
    assert "dicom_associations_open 0" in text
    assert f"dicom_bytes_sent_total {ours.bytes_out}" in text


async def test_an_abort_is_counted_and_a_failing_observer_is_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Observer):
        def bytes_sent(self, assoc: Association, count: int) -> None:
            raise RuntimeError("observer bug")

    scu = AE("OBS_SCU")
    metrics = scu.add_observer(Metrics())
    scu.add_observer(Broken())
    assert isinstance(metrics, Metrics)
    with anyio.fail_after(LIMIT):
        async with (
            make_scp().serve(HOST, 0) as server,
            scu.associate(HOST, server.port, contexts=CONTEXTS) as assoc,
        ):
            assert (await assoc.echo()).is_success
            await assoc.abort()
    assert metrics.associations_closed["aborted"] == 1
    assert metrics.associations_open == 0
    assert metrics.operations[("C-ECHO", "SCU", "success")] == 1
    assert "observer" in caplog.text
    assert "observer bug" in caplog.text


async def test_debug_summaries(caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG the association logs each DIMSE message it sends and receives."""
    with caplog.at_level(logging.DEBUG, logger="aionetdicom.association"), anyio.fail_after(LIMIT):
        async with (
            make_scp().serve(HOST, 0) as server,
            AE("OBS_SCU").associate(HOST, server.port, contexts=CONTEXTS) as assoc,
        ):
            await assoc.echo()
    messages = [r.getMessage() for r in caplog.records if r.name == "aionetdicom.association"]
    assert any("sending C-ECHO-RQ (message 1, 1.2.840.10008.1.1)" in m for m in messages)
    assert any("received C-ECHO-RSP (to 1, status 0x0000)" in m for m in messages)
    assert any("received C-ECHO-RQ (message 1" in m for m in messages)  # the SCP side
    # ...and each PDU that arrives, on both sides.
    assert any("received A-ASSOCIATE-RQ from OBS_SCU to ANY-SCP" in m for m in messages)
    assert any("received A-ASSOCIATE-AC (3 context(s))" in m for m in messages)
    assert any(m.endswith("received P-DATA-TF (1 PDV(s), 68 bytes)") for m in messages)  # RQ
    assert any(m.endswith("received P-DATA-TF (1 PDV(s), 78 bytes)") for m in messages)  # RSP
    assert any("received A-RELEASE-RQ" in m for m in messages)
    assert any("received A-RELEASE-RP" in m for m in messages)
    assert all(hasattr(r, "association") for r in caplog.records if "C-ECHO" in r.getMessage())
