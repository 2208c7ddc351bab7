"""Our C-FIND, C-GET and C-MOVE SCP (``services.qr_scp``) with our own SCU, over TCP.

The SCP's handlers serve the small archive of ``tests/qr_fixtures.py`` from memory
(matching done here, as an application would). Every information model and every
other C-FIND-based service goes through a real association; C-CANCEL, handler
failures, invalid statuses, sub-operation counts and the Failed SOP Instance UID
List, move destinations, and peers that abort mid-retrieve.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from pydicom.dataset import Dataset

from aionetdicom import AE, Association, DicomNetworkError, Server, sop_classes
from aionetdicom.contexts import VERIFICATION, PresentationContext
from aionetdicom.datasets import encode_dataset
from aionetdicom.dimse.command_set import CommandField, make_command
from aionetdicom.handlers import Service
from aionetdicom.operation import send_cancel
from aionetdicom.services.qr_scp import (
    EncodedIdentifier,
    FindRequest,
    GetRequest,
    MoveRequest,
    QueryRetrieveRequest,
    StoredInstance,
    query_retrieve_contexts,
    retrieve_storage_contexts,
)
from aionetdicom.services.query_retrieve import FindResponse, RetrieveResponse, retrieve_contexts
from aionetdicom.services.storage import StoreRequest, storage_contexts, store_service
from tests.qr_fixtures import (
    ALL_INSTANCE_UIDS,
    CT_IMAGE_STORAGE,
    DOE,
    MR_IMAGE_STORAGE,
    ROE,
    datasets,
)

HOST = "127.0.0.1"
SCP_AET = "QR-SCP"
SCU_AET = "QR-SCU"
DEST_AET = "DEST"
LIMIT = 20.0

#: The archive: 20 instances (CT and MR) of 2 patients, as Datasets with file meta.
ARCHIVE: tuple[Dataset, ...] = tuple(ds for _, ds in datasets())
DOE_CT, DOE_MR = DOE.studies
(ROE_CT,) = ROE.studies

_UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_LEVEL_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}

OTHER_FIND_CLASSES = tuple(
    uid
    for uid in sop_classes.FIND_SOP_CLASSES
    if uid not in sop_classes.QR_FIND_SOP_CLASSES and uid != sop_classes.MODALITY_WORKLIST_FIND
)


# ---------------------------------------------------------------------- the "database"


def _values(value: object) -> list[str]:
    if isinstance(value, str):
        return [part for part in value.split("\\") if part]
    return [str(part) for part in value]  # type: ignore[attr-defined]


def select(identifier: Dataset) -> list[Dataset]:
    """The archive's instances whose unique keys match ``identifier`` (single or list)."""
    chosen = []
    for instance in ARCHIVE:
        if all(
            not identifier.get(key) or str(instance.get(key)) in _values(identifier.get(key))
            for key in _UNIQUE_KEYS
        ):
            chosen.append(instance)
    return chosen


def find_matches(identifier: Dataset) -> list[Dataset]:
    """One response identifier per matching entity at the identifier's level."""
    level = str(identifier.QueryRetrieveLevel)
    key = _LEVEL_KEY[level]
    found: dict[str, Dataset] = {}
    for instance in select(identifier):
        value = str(instance.get(key))
        if value in found:
            continue
        match = Dataset()
        for element in identifier:
            if element.tag in instance:
                match.add(instance[element.tag])
            else:
                match.add_new(element.tag, element.VR, element.value)
        match.QueryRetrieveLevel = level
        found[value] = match
    return list(found.values())


def query(level: str, **keys: object) -> Dataset:
    """An identifier at ``level`` with the given keys ("" for return keys)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def uids_of(instances: list[Dataset]) -> set[str]:
    return {str(each.SOPInstanceUID) for each in instances}


# ---------------------------------------------------------------------- handlers


async def on_find(request: FindRequest) -> AsyncIterator[Dataset]:
    for match in find_matches(request.identifier):
        yield match


async def on_retrieve(request: GetRequest | MoveRequest) -> AsyncIterator[object]:
    instances = select(request.identifier)
    yield len(instances)
    for instance in instances:
        yield instance


# ---------------------------------------------------------------------- peers

SCP_CONTEXTS = [
    *VERIFICATION,
    *query_retrieve_contexts(),
    *retrieve_storage_contexts((CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)),
]
SCU_CONTEXTS = [
    *VERIFICATION,
    *query_retrieve_contexts(sop_classes.FIND_SOP_CLASSES + sop_classes.MOVE_SOP_CLASSES),
    *retrieve_contexts(sop_classes.GET_SOP_CLASSES, (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)),
]


def make_scp(**handlers: Any) -> AE:
    """An SCP with the archive handlers (override with find=/get=/move=)."""
    scp = AE(SCP_AET, supported_contexts=SCP_CONTEXTS)
    scp.handlers.register(Service.C_FIND, handlers.get("find", on_find))
    scp.handlers.register(Service.C_GET, handlers.get("get", on_retrieve))
    scp.handlers.register(Service.C_MOVE, handlers.get("move", on_retrieve))
    return scp


@asynccontextmanager
async def served(scp: AE) -> AsyncIterator[Server]:
    async with scp.serve(HOST, 0) as server:
        yield server


def connect(
    server: Server, contexts: list[PresentationContext] | None = None, title: str = SCU_AET
) -> Any:
    return AE(title).associate(
        HOST,
        server.port,
        called_ae_title=SCP_AET,
        contexts=SCU_CONTEXTS if contexts is None else contexts,
    )


@asynccontextmanager
async def pair(**handlers: Any) -> AsyncIterator[tuple[AE, Server, Association]]:
    scp = make_scp(**handlers)
    async with served(scp) as server, connect(server) as assoc:
        yield scp, server, assoc


async def find_all(
    assoc: Association, identifier: Dataset, model: str
) -> tuple[list[Dataset], FindResponse]:
    matches: list[Dataset] = []
    final: FindResponse | None = None
    with anyio.fail_after(LIMIT):
        async for response in assoc.find(identifier, model=model):
            if response.status.is_pending:
                assert response.identifier is not None
                matches.append(response.identifier)
            else:
                final = response
    assert final is not None
    return matches, final


async def retrieve_all(responses: Any) -> tuple[list[RetrieveResponse], RetrieveResponse]:
    pending: list[RetrieveResponse] = []
    final: RetrieveResponse | None = None
    with anyio.fail_after(LIMIT):
        async for response in responses:
            if response.status.is_pending:
                pending.append(response)
            else:
                final = response
    assert final is not None
    return pending, final


async def until(condition: Callable[[], bool]) -> None:
    """Wait (polling; at most LIMIT s) until ``condition()`` holds."""
    with anyio.fail_after(LIMIT):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


def errors_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


class Collector:
    """A C-STORE handler keeping what it received (optionally slowly)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[StoreRequest] = []
        self.first = anyio.Event()

    async def __call__(self, request: StoreRequest) -> int:
        self.requests.append(request)
        self.first.set()
        if self.delay:
            await anyio.sleep(self.delay)
        return 0x0000

    @property
    def uids(self) -> set[str]:
        return {request.sop_instance_uid for request in self.requests}


@asynccontextmanager
async def destination(
    collector: Collector,
    sop_classes_accepted: tuple[str, ...] = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE),
) -> AsyncIterator[Server]:
    """Our own storage SCP as the C-MOVE destination."""
    dest = AE(DEST_AET, supported_contexts=[*VERIFICATION, *storage_contexts(sop_classes_accepted)])
    dest.handle_dimse(CommandField.C_STORE_RQ, store_service(collector))
    async with dest.serve(HOST, 0) as server:
        yield server


# ====================================================================== C-FIND

QR_FIND_CASES = [
    pytest.param(
        sop_classes.PATIENT_ROOT_FIND,
        query("PATIENT", PatientID="", PatientName=""),
        {DOE.patient_id, ROE.patient_id},
        "PatientID",
        id="patient-root",
    ),
    pytest.param(
        sop_classes.STUDY_ROOT_FIND,
        query("STUDY", PatientID=DOE.patient_id, StudyInstanceUID="", StudyDescription=""),
        {DOE_CT.uid, DOE_MR.uid},
        "StudyInstanceUID",
        id="study-root",
    ),
    pytest.param(
        sop_classes.PATIENT_STUDY_ONLY_FIND,
        query("STUDY", PatientID=ROE.patient_id, StudyInstanceUID=""),
        {ROE_CT.uid},
        "StudyInstanceUID",
        id="patient-study-only",
    ),
    pytest.param(
        sop_classes.STUDY_ROOT_FIND,
        query("SERIES", StudyInstanceUID=ROE_CT.uid, SeriesInstanceUID="", Modality=""),
        {series.uid for series in ROE_CT.series},
        "SeriesInstanceUID",
        id="study-root-series",
    ),
    pytest.param(
        sop_classes.PATIENT_ROOT_FIND,
        query(
            "IMAGE",
            PatientID=DOE.patient_id,
            StudyInstanceUID=DOE_MR.uid,
            SeriesInstanceUID=DOE_MR.series[0].uid,
            SOPInstanceUID="",
        ),
        set(DOE_MR.instance_uids()),
        "SOPInstanceUID",
        id="patient-root-image",
    ),
]


@pytest.mark.parametrize(("model", "identifier", "expected", "key"), QR_FIND_CASES)
async def test_find_query_retrieve_models(
    model: str, identifier: Dataset, expected: set[str], key: str
) -> None:
    """Each Q/R FIND model: the handler's matches come back, then Success."""
    seen: list[FindRequest] = []

    async def handler(request: FindRequest) -> AsyncIterator[Dataset]:
        seen.append(request)
        async for match in on_find(request):
            yield match

    scp = make_scp(find=handler)
    async with served(scp) as server, connect(server) as assoc:
        matches, final = await find_all(assoc, identifier, model)
    assert final.status == 0x0000
    assert final.identifier is None
    assert {str(match.get(key)) for match in matches} == expected
    assert len(matches) == len(expected)
    assert all(match.QueryRetrieveLevel == identifier.QueryRetrieveLevel for match in matches)
    (request,) = seen
    assert request.sop_class_uid == model
    assert request.query_level == identifier.QueryRetrieveLevel
    assert request.requestor_ae_title == SCU_AET
    assert not request.cancelled


@pytest.mark.parametrize(
    "model",
    [sop_classes.MODALITY_WORKLIST_FIND, *OTHER_FIND_CLASSES],
    ids=sop_classes.sop_class_name,
)
async def test_find_other_services(model: str) -> None:
    """Worklist and every other C-FIND-based service, with a handler for that SOP class."""
    seen: list[str] = []

    async def handler(request: FindRequest) -> AsyncIterator[object]:
        seen.append(request.sop_class_uid)
        for number in (1, 2):
            match = Dataset()
            match.PatientID = f"{request.identifier.PatientID}-{number}"
            match.PatientName = "SERVICE^TEST"
            yield match
        yield 0xFF01, request.identifier  # pending, optional keys not supported

    scp = make_scp()
    scp.handlers.register(Service.C_FIND, handler, sop_class=model)
    identifier = Dataset()
    identifier.PatientID = "P7"
    identifier.PatientName = ""
    async with served(scp) as server, connect(server) as assoc:
        responses: list[FindResponse] = []
        with anyio.fail_after(LIMIT):
            async for response in assoc.find(identifier, model=model):
                responses.append(response)
    assert seen == [model]
    assert [int(r.status) for r in responses] == [0xFF00, 0xFF00, 0xFF01, 0x0000]
    assert [r.identifier.PatientID for r in responses[:3]] == ["P7-1", "P7-2", "P7"]  # type: ignore[union-attr]
    assert responses[0].identifier.PatientName == "SERVICE^TEST"  # type: ignore[union-attr]
    assert responses[0].command["AffectedSOPClassUID"] == model


async def test_find_streams_each_match_as_it_is_yielded() -> None:
    """The first match reaches the SCU while the handler waits for the SCU to see it."""
    seen_first = anyio.Event()

    async def handler(request: FindRequest) -> AsyncIterator[Dataset]:
        first, second = find_matches(query("PATIENT", PatientID=""))
        yield first
        await seen_first.wait()  # would deadlock if the service collected matches first
        yield second

    async with pair(find=handler) as (_, _, assoc):
        statuses = []
        with anyio.fail_after(LIMIT):
            async for response in assoc.find(query("PATIENT", PatientID=""), model="patient"):
                statuses.append(int(response.status))
                seen_first.set()
    assert statuses == [0xFF00, 0xFF00, 0x0000]


async def test_find_handler_may_return_a_list_or_a_coroutine() -> None:
    """A plain function returning a list, and a coroutine returning one, work too."""

    def plain(request: FindRequest) -> list[Dataset]:
        return find_matches(request.identifier)

    async def coroutine(request: FindRequest) -> list[Dataset]:
        return find_matches(request.identifier)

    for handler in (plain, coroutine):
        async with pair(find=handler) as (_, _, assoc):
            matches, final = await find_all(assoc, query("PATIENT", PatientID=""), "patient")
        assert final.status == 0x0000
        assert {m.PatientID for m in matches} == {DOE.patient_id, ROE.patient_id}


class Endless:
    """A C-FIND handler that never runs out of matches, recording how it ended."""

    def __init__(self, delay: float = 0.005) -> None:
        self.delay = delay
        self.yielded = 0
        self.closed = anyio.Event()
        self.started = anyio.Event()
        self.requests: list[QueryRetrieveRequest] = []

    async def __call__(self, request: FindRequest) -> AsyncIterator[Dataset]:
        self.requests.append(request)
        self.started.set()
        try:
            while True:
                await anyio.sleep(self.delay)
                match = Dataset()
                match.QueryRetrieveLevel = "PATIENT"
                match.PatientID = f"P{self.yielded}"
                self.yielded += 1
                yield match
        finally:
            self.closed.set()


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
async def test_find_encoded_identifiers(syntax: str) -> None:
    """EncodedIdentifier matches go out as they are in the request's transfer syntax,
    and are converted from another one."""
    from aionetdicom.datasets import encode_dataset

    match = Dataset()
    match.QueryRetrieveLevel = "PATIENT"
    match.PatientName = "Encoded^Match"
    match.PatientID = "E1"

    async def handler(request: FindRequest) -> list[object]:
        return [EncodedIdentifier(encode_dataset(match, syntax), syntax)]

    contexts = [PresentationContext(sop_classes.PATIENT_ROOT_FIND, [syntax])]
    async with served(make_scp(find=handler)) as server, connect(server, contexts) as assoc:
        matches, final = await find_all(assoc, query("PATIENT", PatientID=""), "patient")
    assert final.status == 0x0000
    assert [(m.PatientName, m.PatientID) for m in matches] == [("Encoded^Match", "E1")]

    other = "1.2.840.10008.1.2" if syntax.endswith("2.1") else "1.2.840.10008.1.2.1"
    contexts = [PresentationContext(sop_classes.PATIENT_ROOT_FIND, [other])]
    async with served(make_scp(find=handler)) as server, connect(server, contexts) as assoc:
        matches, final = await find_all(assoc, query("PATIENT", PatientID=""), "patient")
    assert [(m.PatientName, m.PatientID) for m in matches] == [("Encoded^Match", "E1")]


async def test_find_cancel_mid_stream() -> None:
    """C-CANCEL after 3 matches: the generator is closed and the final status is Cancel."""
    endless = Endless()
    async with pair(find=endless) as (_, _, assoc):
        statuses: list[int] = []
        with anyio.fail_after(LIMIT):
            async with assoc.find(query("PATIENT", PatientID=""), model="patient") as responses:
                async for response in responses:
                    statuses.append(int(response.status))
                    if len(statuses) == 3:
                        await responses.cancel()
            await endless.closed.wait()
        assert (await assoc.echo()).is_success
    assert statuses[-1] == 0xFE00
    assert all(status == 0xFF00 for status in statuses[:-1])
    assert len(statuses) - 1 == endless.yielded
    assert endless.requests[0].cancelled


async def test_find_scu_leaving_the_loop_cancels() -> None:
    """``break`` out of the SCU's loop: C-CANCEL reaches the handler, which is closed."""
    endless = Endless()
    async with pair(find=endless) as (_, _, assoc):
        with anyio.fail_after(LIMIT):
            async with assoc.find(query("PATIENT", PatientID=""), model="patient") as responses:
                async for _ in responses:
                    break
            await endless.closed.wait()
            assert (await assoc.echo()).is_success
    assert endless.requests[0].cancelled
    assert endless.yielded < 100


def study_find_request(assoc: Association) -> tuple[Any, int, Any, bytes]:
    """A C-FIND-RQ (context, Message ID, command, encoded identifier) to send by hand."""
    context = assoc.context_for(sop_classes.STUDY_ROOT_FIND)
    message_id = assoc.next_message_id()
    command = make_command(
        CommandField.C_FIND_RQ,
        has_dataset=True,
        MessageID=message_id,
        AffectedSOPClassUID=sop_classes.STUDY_ROOT_FIND,
        Priority=0,
    )
    data = encode_dataset(query("STUDY", StudyInstanceUID=""), context.transfer_syntax)
    return context, message_id, command, data


async def test_find_cancel_interrupts_a_waiting_handler() -> None:
    """C-CANCEL while the handler waits for its first match: the handler is interrupted."""
    endless = Endless(delay=30.0)
    async with pair(find=endless) as (_, _, assoc):
        context, message_id, command, data = study_find_request(assoc)
        started = anyio.current_time()
        with anyio.fail_after(LIMIT):
            async with assoc.expect_responses(message_id) as responses:
                await assoc.send_message(context.context_id, command, data)
                await endless.started.wait()  # the handler is running (and sleeping)
                await send_cancel(assoc, context.context_id, message_id)
                response = await assoc.receive_response(responses, "C-FIND response")
            await endless.closed.wait()
        elapsed = anyio.current_time() - started
    assert response.command["Status"] == 0xFE00
    assert endless.yielded == 0
    assert elapsed < 10


async def test_find_cancel_right_behind_the_request() -> None:
    """C-CANCEL sent right behind the request, whether or not the handler started: Cancel."""
    endless = Endless(delay=30.0)
    async with pair(find=endless) as (_, _, assoc):
        context, message_id, command, data = study_find_request(assoc)
        with anyio.fail_after(LIMIT):
            async with assoc.expect_responses(message_id) as responses:
                await assoc.send_message(context.context_id, command, data)
                await send_cancel(assoc, context.context_id, message_id)
                response = await assoc.receive_response(responses, "C-FIND response")
            assert (await assoc.echo()).is_success
    assert response.command["Status"] == 0xFE00
    assert endless.yielded == 0


async def test_find_handler_raising(caplog: pytest.LogCaptureFixture) -> None:
    """A handler raising after one match: 0xC311, traceback logged, association fine."""

    async def handler(request: FindRequest) -> AsyncIterator[Dataset]:
        yield find_matches(request.identifier)[0]
        raise RuntimeError("database is down")

    async with pair(find=handler) as (_, _, assoc):
        matches, final = await find_all(assoc, query("PATIENT", PatientID=""), "patient")
        assert (await assoc.echo()).is_success
    assert len(matches) == 1
    assert final.status == 0xC311
    assert final.status.is_failure
    logged = [r for r in caplog.records if r.exc_info and "database is down" in str(r.exc_info[1])]
    assert logged


async def test_find_handler_raising_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A plain handler raising before returning anything: 0xC311."""

    def handler(request: FindRequest) -> list[Dataset]:
        raise KeyError("boom")

    async with pair(find=handler) as (_, _, assoc):
        matches, final = await find_all(assoc, query("PATIENT", PatientID=""), "patient")
    assert matches == []
    assert final.status == 0xC311
    assert any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param((0x1234, None), 0xC311, id="unknown-status"),
        pytest.param((0xFF00, None), 0xC311, id="pending-without-identifier"),
        pytest.param("not a match", 0xC311, id="not-a-dataset"),
        pytest.param((True, None), 0xC311, id="bool-status"),
        pytest.param((0xA700, None), 0xA700, id="valid-refusal"),
        pytest.param((0xC123, None), 0xC123, id="valid-failure"),
        pytest.param(0xFE00, 0xFE00, id="bare-cancel-status"),
    ],
)
async def test_find_statuses_from_the_handler(item: object, expected: int) -> None:
    """A yielded status ends the operation: valid ones are sent, others become 0xC311."""

    async def handler(request: FindRequest) -> AsyncIterator[object]:
        yield find_matches(request.identifier)[0]
        yield item
        yield find_matches(request.identifier)[1]  # never sent

    async with pair(find=handler) as (_, _, assoc):
        matches, final = await find_all(assoc, query("PATIENT", PatientID=""), "patient")
    assert len(matches) == 1
    assert final.status == expected


async def test_find_without_handler_or_identifier() -> None:
    """No handler for the SOP class: 0x0122; a C-FIND-RQ without identifier: 0xA900."""
    scp = make_scp()
    scp.handlers.unregister(Service.C_FIND)
    async with served(scp) as server, connect(server) as assoc:
        _, final = await find_all(assoc, query("PATIENT", PatientID=""), "patient")
        assert final.status == 0x0122
        scp.handlers.register(Service.C_FIND, on_find)
        context = assoc.context_for(sop_classes.PATIENT_ROOT_FIND)
        message_id = assoc.next_message_id()
        command = make_command(
            CommandField.C_FIND_RQ,
            MessageID=message_id,
            AffectedSOPClassUID=sop_classes.PATIENT_ROOT_FIND,
            Priority=0,
        )
        with anyio.fail_after(LIMIT):
            response = await assoc.send_request(context, command)
    assert response.command["Status"] == 0xA900
    assert response.command["MessageIDBeingRespondedTo"] == message_id


async def test_find_per_sop_class_handler_wins() -> None:
    """A handler registered for one model answers it; the service-wide one the others."""

    scp = make_scp()

    @scp.on_find(sop_class=sop_classes.MODALITY_WORKLIST_FIND)
    async def worklist_only(request: FindRequest) -> AsyncIterator[Dataset]:
        ds = Dataset()
        ds.AccessionNumber = "WL1"
        yield ds

    async with served(scp) as server, connect(server) as assoc:
        wl, _ = await find_all(assoc, query("PATIENT", AccessionNumber=""), "worklist")
        qr, _ = await find_all(assoc, query("PATIENT", PatientID=""), "patient")
    assert [m.AccessionNumber for m in wl] == ["WL1"]
    assert {m.PatientID for m in qr} == {DOE.patient_id, ROE.patient_id}


# ====================================================================== C-GET

GET_CASES = [
    pytest.param(
        sop_classes.PATIENT_ROOT_GET,
        query("PATIENT", PatientID=ROE.patient_id),
        set(ROE.instance_uids()),
        id="patient-root",
    ),
    pytest.param(
        sop_classes.STUDY_ROOT_GET,
        query("STUDY", StudyInstanceUID=DOE_MR.uid),
        set(DOE_MR.instance_uids()),
        id="study-root",
    ),
    pytest.param(
        sop_classes.PATIENT_STUDY_ONLY_GET,
        query("STUDY", PatientID=DOE.patient_id, StudyInstanceUID=DOE_CT.uid),
        set(DOE_CT.instance_uids()),
        id="patient-study-only",
    ),
    pytest.param(
        sop_classes.COMPOSITE_INSTANCE_ROOT_GET,
        query("IMAGE", SOPInstanceUID=list(ALL_INSTANCE_UIDS[:3])),
        set(ALL_INSTANCE_UIDS[:3]),
        id="composite-instance-root",
    ),
    pytest.param(
        sop_classes.COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET,
        query("IMAGE", SOPInstanceUID=ALL_INSTANCE_UIDS[5]),
        {ALL_INSTANCE_UIDS[5]},
        id="composite-without-bulk-data",
    ),
]


@pytest.mark.parametrize(("model", "identifier", "expected"), GET_CASES)
async def test_get_models(model: str, identifier: Dataset, expected: set[str]) -> None:
    """Each GET model: the instances arrive as C-STORE sub-operations, counts add up."""
    collector = Collector()
    async with pair() as (_, _, assoc):
        pending, final = await retrieve_all(assoc.get(identifier, model=model, on_store=collector))
    assert collector.uids == expected
    assert final.status == 0x0000
    assert (final.completed, final.failed, final.warning) == (len(expected), 0, 0)
    assert final.failed_sop_instance_uids == ()
    # One Pending per sub-operation but the last, remaining counting down.
    assert [p.remaining for p in pending] == list(range(len(expected) - 1, 0, -1))
    assert [p.completed for p in pending] == list(range(1, len(expected)))
    pixel = {r.sop_instance_uid: r.dataset.PixelData for r in collector.requests}
    originals = {str(ds.SOPInstanceUID): ds.PixelData for ds in ARCHIVE}
    assert all(pixel[uid] == originals[uid] for uid in expected)


async def test_get_unaccepted_sop_class_fails_with_uid_list() -> None:
    """MR instances the SCU did not propose (with the SCP role) fail: Warning 0xB000."""
    collector = Collector()
    contexts = [*VERIFICATION, *retrieve_contexts(["patient"], (CT_IMAGE_STORAGE,))]
    async with served(make_scp()) as server, connect(server, contexts) as assoc:
        pending, final = await retrieve_all(
            assoc.get(
                query("PATIENT", PatientID=DOE.patient_id), model="patient", on_store=collector
            )
        )
    mr_uids = set(DOE_MR.instance_uids())
    ct_uids = set(DOE_CT.instance_uids())
    assert collector.uids == ct_uids
    assert final.status == 0xB000
    assert final.status.is_warning
    assert (final.completed, final.failed, final.warning) == (len(ct_uids), len(mr_uids), 0)
    assert set(final.failed_sop_instance_uids) == mr_uids
    assert pending[-1].remaining == 1
    assert all(p.failed_sop_instance_uids == () for p in pending)


async def test_get_all_failed() -> None:
    """Every sub-operation failing (nothing acceptable): 0xA702 with every UID listed."""
    contexts = [*VERIFICATION, *retrieve_contexts(["study"], (CT_IMAGE_STORAGE,))]
    async with served(make_scp()) as server, connect(server, contexts) as assoc:
        _, final = await retrieve_all(
            assoc.get(
                query("STUDY", StudyInstanceUID=DOE_MR.uid), model="study", on_store=Collector()
            )
        )
    assert final.status == 0xA702
    assert final.failed == len(DOE_MR.instance_uids())
    assert final.completed == 0
    assert set(final.failed_sop_instance_uids) == set(DOE_MR.instance_uids())


async def test_get_store_warning_and_failure_statuses() -> None:
    """C-STORE Warning and Failure responses are counted; a failure lists its UID."""
    statuses = iter([0x0000, 0xB007, 0xA700, 0x0000, 0x0000])

    async def answer(request: StoreRequest) -> int:
        return next(statuses)

    expected = DOE_MR.instance_uids()
    async with pair() as (_, _, assoc):
        _, final = await retrieve_all(
            assoc.get(query("STUDY", StudyInstanceUID=DOE_MR.uid), model="study", on_store=answer)
        )
    assert final.status == 0xB000
    assert (final.completed, final.warning, final.failed) == (3, 1, 1)
    assert final.failed_sop_instance_uids == (expected[2],)


async def test_get_without_total_omits_remaining() -> None:
    """A handler that gives no total: Pending responses leave Remaining out."""

    async def handler(request: GetRequest) -> AsyncIterator[Dataset]:
        for instance in select(request.identifier):
            yield instance

    collector = Collector()
    async with pair(get=handler) as (_, _, assoc):
        pending, final = await retrieve_all(
            assoc.get(
                query("STUDY", StudyInstanceUID=DOE_MR.uid), model="study", on_store=collector
            )
        )
    assert final.status == 0x0000
    assert len(pending) == len(DOE_MR.instance_uids())
    assert all(p.remaining is None for p in pending)
    assert [p.completed for p in pending] == list(range(1, len(pending) + 1))


async def test_get_paths_and_bytes(tmp_path: Any) -> None:
    """Instances yielded as file paths and as file bytes are sent as they are."""
    paths = []
    for index, instance in enumerate(ARCHIVE[:2]):
        path = tmp_path / f"{index}.dcm"
        instance.save_as(path, enforce_file_format=True)
        paths.append(path)

    async def handler(request: GetRequest) -> list[object]:
        return [str(paths[0]), paths[1].read_bytes()]

    collector = Collector()
    async with pair(get=handler) as (_, _, assoc):
        _, final = await retrieve_all(
            assoc.get(query("IMAGE", SOPInstanceUID=""), model="composite", on_store=collector)
        )
    assert final.status == 0x0000
    assert final.completed == 2
    assert collector.uids == uids_of(list(ARCHIVE[:2]))


def stored_instances(folder: Any, instances: list[Dataset]) -> list[StoredInstance]:
    """``instances`` saved under ``folder`` and described as StoredInstance items."""
    items = []
    for index, instance in enumerate(instances):
        path = folder / f"{index}.dcm"
        instance.save_as(path, enforce_file_format=True)
        syntax = str(instance.file_meta.TransferSyntaxUID)
        items.append(StoredInstance(path, instance.SOPClassUID, instance.SOPInstanceUID, syntax))
    return items


async def test_get_and_move_stored_instances(tmp_path: Any) -> None:
    """StoredInstance items are sent from their paths; one whose file is gone fails
    with the UID the item names."""
    items = stored_instances(tmp_path, list(ARCHIVE[:3]))
    missing = items[2]
    missing.path.unlink()  # type: ignore[union-attr]

    async def handler(request: Any) -> list[object]:
        return list(items)

    collector, moved = Collector(), Collector()
    scp = make_scp(get=handler, move=handler)
    async with destination(moved) as dest, served(scp) as server:
        scp.known_aes = {DEST_AET: (HOST, dest.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:
            identifier = query("IMAGE", SOPInstanceUID="")
            _, got = await retrieve_all(
                assoc.get(identifier, model="composite", on_store=collector)
            )
            _, move = await retrieve_all(assoc.move(identifier, DEST_AET, model="composite"))
    sent = uids_of(list(ARCHIVE[:2]))
    for final, received in ((got, collector), (move, moved)):
        assert final.status == 0xB000
        assert (final.completed, final.failed) == (2, 1)
        assert list(final.failed_sop_instance_uids) == [missing.sop_instance_uid]
        assert received.uids == sent


async def test_get_cancel_mid_retrieve() -> None:
    """C-CANCEL during a C-GET: the current sub-operation ends, then Cancel with counts."""
    collector = Collector()
    closed = anyio.Event()

    async def handler(request: GetRequest) -> AsyncIterator[object]:
        try:
            yield len(ARCHIVE)
            for instance in ARCHIVE:
                yield instance
        finally:
            closed.set()

    async with pair(get=handler) as (_, _, assoc):
        responses = assoc.get(query("PATIENT", PatientID=""), model="patient", on_store=collector)
        final: RetrieveResponse | None = None
        with anyio.fail_after(LIMIT):
            async with responses:
                async for response in responses:
                    if response.status.is_pending and response.completed == 2:
                        await responses.cancel()
                    if not response.status.is_pending:
                        final = response
            await closed.wait()
        assert (await assoc.echo()).is_success
    assert final is not None
    assert final.status == 0xFE00
    assert final.completed is not None
    assert 2 <= final.completed < len(ARCHIVE)
    assert final.remaining == len(ARCHIVE) - final.completed
    assert len(collector.requests) == final.completed


async def test_get_scu_leaving_early_cancels() -> None:
    """``get_instances`` left after one instance: the SCP stops, the association lives."""
    closed = anyio.Event()
    requests: list[GetRequest] = []

    async def handler(request: GetRequest) -> AsyncIterator[object]:
        requests.append(request)
        try:
            for instance in ARCHIVE:
                yield instance
        finally:
            closed.set()

    async with pair(get=handler) as (_, _, assoc):
        with anyio.fail_after(LIMIT):
            async with assoc.get_instances(query("PATIENT", PatientID=""), model="patient") as got:
                async for _ in got:
                    break
            await closed.wait()
            assert (await assoc.echo()).is_success
    assert requests[0].cancelled
    assert got.response is not None
    assert got.response.status == 0xFE00
    assert requests[0].attempted < len(ARCHIVE)


async def test_get_handler_raising_and_invalid_status(caplog: pytest.LogCaptureFixture) -> None:
    """Raising mid-retrieve: 0xC411 with the counts so far; an invalid status: 0xC411."""

    async def raising(request: GetRequest) -> AsyncIterator[object]:
        yield ARCHIVE[0]
        raise RuntimeError("disk gone")

    async def invalid(request: GetRequest) -> AsyncIterator[object]:
        yield ARCHIVE[0]
        yield 0x1234, None

    async def refusing(request: GetRequest) -> AsyncIterator[object]:
        yield 0xA701, None

    results = []
    for handler in (raising, invalid, refusing):
        async with pair(get=handler) as (_, _, assoc):
            _, final = await retrieve_all(
                assoc.get(query("PATIENT", PatientID=""), model="patient", on_store=Collector())
            )
        results.append((int(final.status), final.completed))
    assert results == [(0xC411, 1), (0xC411, 1), (0xA701, 0)]
    assert any(r.exc_info and "disk gone" in str(r.exc_info[1]) for r in caplog.records)


async def test_get_peer_abort_ends_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """The SCU aborts while sub-operations run: the SCP ends the C-GET quietly."""
    caplog.set_level(logging.INFO)
    closed = anyio.Event()

    async def handler(request: GetRequest) -> AsyncIterator[object]:
        try:
            yield len(ARCHIVE)
            for instance in ARCHIVE:
                yield instance
        finally:
            closed.set()

    collector = Collector(delay=0.05)
    scp = make_scp(get=handler)
    async with served(scp) as server:
        async with connect(server) as assoc:

            async def run() -> None:
                with suppress(DicomNetworkError):
                    async for _ in assoc.get(
                        query("PATIENT", PatientID=""), model="patient", on_store=collector
                    ):
                        pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(LIMIT):
                    await collector.first.wait()
                await assoc.abort()
        with anyio.fail_after(LIMIT):
            await closed.wait()
        async with connect(server) as again:
            assert (await again.echo()).is_success
            matches, _ = await find_all(again, query("PATIENT", PatientID=""), "patient")
            assert len(matches) == 2
    assert len(collector.requests) < len(ARCHIVE)
    assert errors_in(caplog) == []


# ====================================================================== C-MOVE

MOVE_CASES = [
    pytest.param(
        sop_classes.PATIENT_ROOT_MOVE,
        query("PATIENT", PatientID=ROE.patient_id),
        set(ROE.instance_uids()),
        id="patient-root",
    ),
    pytest.param(
        sop_classes.STUDY_ROOT_MOVE,
        query("SERIES", StudyInstanceUID=DOE_CT.uid, SeriesInstanceUID=DOE_CT.series[1].uid),
        set(DOE_CT.series[1].instance_uids()),
        id="study-root",
    ),
    pytest.param(
        sop_classes.PATIENT_STUDY_ONLY_MOVE,
        query("STUDY", PatientID=DOE.patient_id, StudyInstanceUID=DOE_MR.uid),
        set(DOE_MR.instance_uids()),
        id="patient-study-only",
    ),
    pytest.param(
        sop_classes.COMPOSITE_INSTANCE_ROOT_MOVE,
        query("IMAGE", SOPInstanceUID=[ALL_INSTANCE_UIDS[0], ALL_INSTANCE_UIDS[-1]]),
        {ALL_INSTANCE_UIDS[0], ALL_INSTANCE_UIDS[-1]},
        id="composite-instance-root",
    ),
]


@pytest.mark.parametrize(("model", "identifier", "expected"), MOVE_CASES)
async def test_move_to_known_destination(
    model: str, identifier: Dataset, expected: set[str]
) -> None:
    """Each MOVE model: the destination (from ``known_aes``) receives the instances."""
    collector = Collector()
    scp = make_scp()
    async with destination(collector) as dest, served(scp) as server:
        scp.known_aes = {DEST_AET: (HOST, dest.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:
            pending, final = await retrieve_all(assoc.move(identifier, DEST_AET, model=model))
            message_id = final.command["MessageIDBeingRespondedTo"]
    assert collector.uids == expected
    assert final.status == 0x0000
    assert (final.completed, final.failed, final.warning) == (len(expected), 0, 0)
    assert [p.remaining for p in pending] == list(range(len(expected) - 1, 0, -1))
    for request in collector.requests:
        assert request.move_originator_ae_title == SCU_AET
        assert request.move_originator_message_id == message_id
        assert request.assoc.peer_ae_title == SCP_AET
        assert request.assoc.local_ae_title == DEST_AET


async def test_move_unknown_destination_connects_nowhere() -> None:
    """0xA801 for a destination not in ``known_aes``; nothing connects anywhere."""
    accepted: list[SocketStream] = []
    called: list[MoveRequest] = []

    async def handler(request: MoveRequest) -> AsyncIterator[object]:
        called.append(request)
        async for item in on_retrieve(request):
            yield item

    async def count(stream: SocketStream) -> None:
        accepted.append(stream)
        await stream.aclose()

    scp = make_scp(move=handler)
    listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    scp.known_aes = {"OTHER": (HOST, port)}  # type: ignore[attr-defined]
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, count)
        async with served(scp) as server, connect(server) as assoc:
            _, unknown = await retrieve_all(
                assoc.move(query("PATIENT", PatientID=DOE.patient_id), "NOBODY", model="patient")
            )
            await anyio.sleep(0.1)
            assert accepted == []
            assert called == []
            # The same request to the known (but refusing) AE does connect: 0xA702.
            _, refused = await retrieve_all(
                assoc.move(query("PATIENT", PatientID=DOE.patient_id), "OTHER", model="patient")
            )
        tg.cancel_scope.cancel()
    assert unknown.status == 0xA801
    assert unknown.status.is_failure
    assert (unknown.completed, unknown.failed) == (0, 0)
    assert len(accepted) == 1
    assert refused.status == 0xA702
    assert refused.failed == len(DOE.instance_uids())
    assert set(refused.failed_sop_instance_uids) == set(DOE.instance_uids())


async def test_move_destination_hook() -> None:
    """``move_destination_handler`` decides when set: an address, or None (0xA801)."""
    asked: list[tuple[str, str]] = []
    collector = Collector()
    scp = make_scp()
    async with destination(collector) as dest, served(scp) as server:

        async def hook(title: str, request: MoveRequest) -> tuple[str, int] | None:
            asked.append((title, request.requestor_ae_title))
            return (HOST, dest.port) if title == DEST_AET else None

        scp.move_destination_handler = hook  # type: ignore[attr-defined]
        scp.known_aes = {"ELSEWHERE": (HOST, dest.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:
            identifier = query("STUDY", StudyInstanceUID=DOE_MR.uid)
            _, moved = await retrieve_all(assoc.move(identifier, DEST_AET, model="study"))
            _, refused = await retrieve_all(assoc.move(identifier, "ELSEWHERE", model="study"))
    assert moved.status == 0x0000
    assert collector.uids == set(DOE_MR.instance_uids())
    assert refused.status == 0xA801
    assert asked == [(DEST_AET, SCU_AET), ("ELSEWHERE", SCU_AET)]


async def test_move_unaccepted_sop_class_fails_with_uid_list() -> None:
    """The destination accepts CT only: MR sub-operations fail, Warning 0xB000."""
    collector = Collector()
    scp = make_scp()
    async with destination(collector, (CT_IMAGE_STORAGE,)) as dest, served(scp) as server:
        scp.known_aes = {DEST_AET: (HOST, dest.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:
            _, final = await retrieve_all(
                assoc.move(query("PATIENT", PatientID=DOE.patient_id), DEST_AET, model="patient")
            )
    assert final.status == 0xB000
    assert collector.uids == set(DOE_CT.instance_uids())
    assert final.failed == len(DOE_MR.instance_uids())
    assert set(final.failed_sop_instance_uids) == set(DOE_MR.instance_uids())


async def test_move_cancel_mid_move() -> None:
    """C-CANCEL during a C-MOVE: Cancel with counts, the rest is never sent."""
    collector = Collector(delay=0.02)
    scp = make_scp()
    async with destination(collector) as dest, served(scp) as server:
        scp.known_aes = {DEST_AET: (HOST, dest.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:
            responses = assoc.move(query("PATIENT", PatientID=""), DEST_AET, model="patient")
            final: RetrieveResponse | None = None
            with anyio.fail_after(LIMIT):
                async with responses:
                    async for response in responses:
                        if response.status.is_pending and response.completed == 1:
                            await responses.cancel()
                        if not response.status.is_pending:
                            final = response
            assert (await assoc.echo()).is_success
        await until(lambda: not dest.associations)
    assert final is not None
    assert final.status == 0xFE00
    assert final.completed is not None
    assert 1 <= final.completed < len(ARCHIVE)
    assert final.remaining == len(ARCHIVE) - final.completed
    assert len(collector.requests) == final.completed


async def test_move_scu_leaving_the_loop_cancels() -> None:
    """``break`` out of the SCU's C-MOVE loop: the SCP stops sending, Cancel comes back."""
    collector = Collector(delay=0.02)
    requests: list[MoveRequest] = []

    async def handler(request: MoveRequest) -> AsyncIterator[object]:
        requests.append(request)
        async for item in on_retrieve(request):
            yield item

    scp = make_scp(move=handler)
    async with destination(collector) as dest, served(scp) as server:
        scp.known_aes = {DEST_AET: (HOST, dest.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:
            with anyio.fail_after(LIMIT):
                moving = assoc.move(query("PATIENT", PatientID=""), DEST_AET, model="patient")
                async with moving as responses:
                    async for _ in responses:
                        break
                assert (await assoc.echo()).is_success
        await until(lambda: not dest.associations)
    (request,) = requests
    assert request.cancelled
    assert 1 <= request.attempted < len(ARCHIVE)
    assert len(collector.requests) == request.attempted


async def test_move_handler_raising(caplog: pytest.LogCaptureFixture) -> None:
    """A C-MOVE handler raising: 0xC511, and no association to the destination."""

    async def handler(request: MoveRequest) -> AsyncIterator[object]:
        yield ARCHIVE[0]
        raise RuntimeError("index corrupt")

    collector = Collector()
    scp = make_scp(move=handler)
    async with destination(collector) as dest, served(scp) as server:
        scp.known_aes = {DEST_AET: (HOST, dest.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:
            _, final = await retrieve_all(
                assoc.move(query("PATIENT", PatientID=""), DEST_AET, model="patient")
            )
    assert final.status == 0xC511
    assert collector.requests == []
    assert any(r.exc_info and "index corrupt" in str(r.exc_info[1]) for r in caplog.records)


async def test_move_peer_abort_ends_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """The SCU aborts mid-move: the outgoing association is aborted, the SCP serves on."""
    caplog.set_level(logging.INFO)
    collector = Collector(delay=0.05)
    scp = make_scp()
    async with destination(collector) as dest, served(scp) as server:
        scp.known_aes = {DEST_AET: (HOST, dest.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:

            async def run() -> None:
                with suppress(DicomNetworkError):
                    async for _ in assoc.move(
                        query("PATIENT", PatientID=""), DEST_AET, model="patient"
                    ):
                        pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                with anyio.fail_after(LIMIT):
                    await collector.first.wait()
                await assoc.abort()
        await until(lambda: not dest.associations)
        received = len(collector.requests)
        await anyio.sleep(0.2)
        assert len(collector.requests) == received  # nothing more arrives
        async with connect(server) as again:
            assert (await again.echo()).is_success
            _, final = await retrieve_all(
                again.move(query("STUDY", StudyInstanceUID=DOE_MR.uid), DEST_AET, model="study")
            )
            assert final.status == 0x0000
    assert received < len(ARCHIVE)
    assert errors_in(caplog) == []


async def test_move_over_several_associations_for_many_sop_classes() -> None:
    """More SOP classes than fit in one association: several associations, all sent."""
    many = sop_classes.STORAGE_SOP_CLASSES[:130]
    instances = []
    for index, uid in enumerate(many):
        ds = Dataset()
        ds.SOPClassUID = uid
        ds.SOPInstanceUID = f"2.25.{1000 + index}"
        ds.PatientID = "MANY"
        instances.append(ds)

    async def handler(request: MoveRequest) -> list[Dataset]:
        return instances

    peers: set[int] = set()

    async def keep(request: StoreRequest) -> int:
        peers.add(request.assoc.id)
        return 0

    dest = AE(DEST_AET, supported_contexts=[*VERIFICATION, *storage_contexts(many)])
    dest.handle_dimse(CommandField.C_STORE_RQ, store_service(keep))
    scp = make_scp(move=handler)
    async with dest.serve(HOST, 0) as dest_server, served(scp) as server:
        scp.known_aes = {DEST_AET: (HOST, dest_server.port)}  # type: ignore[attr-defined]
        async with connect(server) as assoc:
            _, final = await retrieve_all(
                assoc.move(query("IMAGE", SOPInstanceUID=""), DEST_AET, model="composite")
            )
    assert final.status == 0x0000
    assert final.completed == len(many)
    assert len(peers) == 2


def test_contexts_helpers() -> None:
    """The SCP context helpers cover every C-FIND/C-MOVE/C-GET SOP class, and roles."""
    uids = [c.abstract_syntax for c in query_retrieve_contexts()]
    assert uids == list(sop_classes.QUERY_RETRIEVE_SOP_CLASSES)
    assert len(set(uids)) == len(uids)
    assert sop_classes.MODALITY_WORKLIST_FIND in sop_classes.FIND_SOP_CLASSES
    assert set(sop_classes.QR_SOP_CLASSES) <= set(uids)
    storage = retrieve_storage_contexts((CT_IMAGE_STORAGE,))
    assert [(c.abstract_syntax, c.scp_role) for c in storage] == [(CT_IMAGE_STORAGE, True)]
