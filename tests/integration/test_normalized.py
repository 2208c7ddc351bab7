"""DIMSE-N operations through real associations on 127.0.0.1, ours on both sides.

The SCP is our own AE with ``n_service`` handlers that record the exact command each
request carried, so every test checks what went over the wire (Requested vs Affected
UIDs, Attribute Identifier List, Action/Event Type ID, Message IDs, data set type) as
well as the :class:`NResponse` the SCU got back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest
from pydicom.dataset import Dataset

from aionetdicom import (
    AE,
    Association,
    DIMSETimeout,
    NegotiationError,
    Server,
    StatusCategory,
)
from aionetdicom.contexts import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    PresentationContext,
)
from aionetdicom.dimse.command_set import NO_DATASET, Command, CommandField
from aionetdicom.services.normalized import (
    EventReportRequest,
    HandlerResult,
    NRequest,
    NResponse,
    event_report_service,
    n_service,
)
from aionetdicom.sop_classes import MODALITY_PERFORMED_PROCEDURE_STEP, STORAGE_COMMITMENT_PUSH

HOST = "127.0.0.1"
GRAYSCALE_PRINT_META = "1.2.840.10008.5.1.1.9"
BASIC_FILM_SESSION = "1.2.840.10008.5.1.1.1"
PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"
PRINT_JOB = "1.2.840.10008.5.1.1.14"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MPPS_UID = "1.2.826.0.1.3680043.9.7777.1"

NHandlerFn = Callable[[NRequest], Awaitable[HandlerResult]]


def make_ae(title: str, **settings: object) -> AE:
    """An AE with timeouts small enough for tests (overridable)."""
    defaults: dict[str, object] = {
        "acse_timeout": 3.0,
        "dimse_timeout": 3.0,
        "network_timeout": 5.0,
        "connect_timeout": 3.0,
    }
    defaults.update(settings)
    return AE(title, **defaults)  # type: ignore[arg-type]


@dataclass
class Seen:
    """What an SCP handler received: the command, its context and its data set."""

    command: Command
    context_id: int
    dataset: Dataset | None
    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class RecordingSCP:
    """Our AE as an SCP, recording every DIMSE-N request before its handler answers."""

    ae: AE
    seen: list[Seen] = field(default_factory=list)

    def on(self, command_field: CommandField, handler: NHandlerFn) -> None:
        async def recording(request: NRequest) -> HandlerResult:
            self.seen.append(
                Seen(
                    request.command.copy(),
                    request.context.context_id,
                    request.dataset,
                    request.sop_class_uid,
                    request.sop_instance_uid,
                )
            )
            return await handler(request)

        self.ae.handle_dimse(command_field, n_service(recording))

    def last(self) -> Seen:
        return self.seen[-1]


def make_scp(*abstract_syntaxes: str, **settings: object) -> RecordingSCP:
    ae = make_ae("N-SCP", **settings)
    for syntax in abstract_syntaxes:
        ae.add_supported_context(syntax)
    return RecordingSCP(ae)


@asynccontextmanager
async def connected(
    scp: RecordingSCP,
    *syntaxes: str,
    scu: AE | None = None,
    transfer_syntaxes: tuple[str, ...] = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN),
    operations_window: tuple[int, int] | None = None,
) -> AsyncIterator[tuple[Association, Server]]:
    """Serve ``scp`` on a free port and associate to it proposing ``syntaxes``."""
    scu = scu or make_ae("N-SCU")
    contexts = [PresentationContext(s, transfer_syntaxes) for s in syntaxes]
    async with (
        scp.ae.serve(HOST, 0) as server,
        scu.associate(
            HOST,
            server.port,
            called_ae_title="N-SCP",
            contexts=contexts,
            operations_window=operations_window,
        ) as assoc,
    ):
        yield assoc, server


def server_side(server: Server) -> Association:
    (assoc,) = server.associations
    return assoc


def assert_request_uids(
    command: Command, kind: str, sop_class_uid: str, sop_instance_uid: str | None
) -> None:
    """``kind`` "Requested" or "Affected" carries the UIDs, the other kind is absent."""
    other = "Affected" if kind == "Requested" else "Requested"
    assert command[f"{kind}SOPClassUID"] == sop_class_uid
    if sop_instance_uid is None:
        assert f"{kind}SOPInstanceUID" not in command
    else:
        assert command[f"{kind}SOPInstanceUID"] == sop_instance_uid
    assert f"{other}SOPClassUID" not in command
    assert f"{other}SOPInstanceUID" not in command


def printer_attributes() -> Dataset:
    ds = Dataset()
    ds.PrinterStatus = "NORMAL"
    ds.PrinterStatusInfo = "NORMAL"
    ds.PrinterName = "LASER-1"
    return ds


# --------------------------------------------------------------------------- N-GET


@pytest.mark.parametrize("transfer_syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
async def test_n_get_printer_through_the_print_meta_sop_class(transfer_syntax: str) -> None:
    scp = make_scp(GRAYSCALE_PRINT_META)

    async def on_get(request: NRequest) -> HandlerResult:
        if request.sop_instance_uid != PRINTER_INSTANCE:
            return 0x0112
        return 0x0000, printer_attributes()

    scp.on(CommandField.N_GET_RQ, on_get)
    async with connected(scp, GRAYSCALE_PRINT_META, transfer_syntaxes=(transfer_syntax,)) as (
        assoc,
        _,
    ):
        response = await assoc.n_get(
            PRINTER,
            PRINTER_INSTANCE,
            ["PrinterStatus", (0x2110, 0x0020), 0x2110_0030],
            meta_sop_class=GRAYSCALE_PRINT_META,
        )
        context = assoc.context_for(GRAYSCALE_PRINT_META)

    assert context.transfer_syntax == transfer_syntax
    seen = scp.last()
    command = seen.command
    assert command["CommandField"] == CommandField.N_GET_RQ
    assert_request_uids(command, "Requested", PRINTER, PRINTER_INSTANCE)
    assert command["AttributeIdentifierList"] == (0x2110_0010, 0x2110_0020, 0x2110_0030)
    assert command["CommandDataSetType"] == NO_DATASET
    assert seen.context_id == context.context_id
    assert seen.dataset is None

    assert isinstance(response, NResponse)
    status, dataset = response
    assert status == 0x0000
    assert status.category is StatusCategory.SUCCESS
    assert dataset is not None
    assert dataset.PrinterStatus == "NORMAL"
    assert dataset.PrinterStatusInfo == "NORMAL"
    assert dataset.PrinterName == "LASER-1"
    assert response.command["CommandField"] == CommandField.N_GET_RSP
    assert response.command["MessageIDBeingRespondedTo"] == command["MessageID"]
    assert response.message_id_being_responded_to == command["MessageID"]
    assert response.command["AffectedSOPClassUID"] == PRINTER
    assert response.affected_sop_class_uid == PRINTER
    assert response.affected_sop_instance_uid == PRINTER_INSTANCE


async def test_n_get_without_attributes_sends_no_identifier_list() -> None:
    scp = make_scp(GRAYSCALE_PRINT_META)

    async def on_get(request: NRequest) -> HandlerResult:
        return 0x0000, printer_attributes() if not request.attribute_identifiers else None

    scp.on(CommandField.N_GET_RQ, on_get)
    async with connected(scp, GRAYSCALE_PRINT_META) as (assoc, _):
        status, dataset = await assoc.n_get(
            PRINTER, PRINTER_INSTANCE, meta_sop_class=GRAYSCALE_PRINT_META
        )
    assert "AttributeIdentifierList" not in scp.last().command
    assert status.is_success
    assert dataset is not None
    assert dataset.PrinterName == "LASER-1"


async def test_concurrent_n_gets_are_routed_by_message_id() -> None:
    scp = make_scp(GRAYSCALE_PRINT_META, maximum_operations_performed=2)
    second_arrived = anyio.Event()
    first = "1.2.826.0.1.3680043.9.7777.10"
    second = "1.2.826.0.1.3680043.9.7777.20"

    async def on_get(request: NRequest) -> HandlerResult:
        if request.sop_instance_uid == first:
            # Answer the first request only after the second: responses cross.
            with anyio.fail_after(3):
                await second_arrived.wait()
        else:
            second_arrived.set()
        ds = Dataset()
        ds.PrinterName = request.sop_instance_uid.rsplit(".", 1)[1]
        return 0x0000, ds

    scp.on(CommandField.N_GET_RQ, on_get)
    results: dict[str, NResponse] = {}
    async with connected(scp, GRAYSCALE_PRINT_META, operations_window=(2, 2)) as (assoc, _):

        async def get(uid: str) -> None:
            results[uid] = await assoc.n_get(PRINTER, uid, meta_sop_class=GRAYSCALE_PRINT_META)

        async with anyio.create_task_group() as tg:
            tg.start_soon(get, first)
            await anyio.sleep(0.05)
            tg.start_soon(get, second)

    ids = {s.sop_instance_uid: s.command["MessageID"] for s in scp.seen}
    assert ids[first] != ids[second]
    for uid, name in ((first, "10"), (second, "20")):
        response = results[uid]
        assert response.status == 0
        assert response.dataset is not None
        assert response.dataset.PrinterName == name
        assert response.affected_sop_instance_uid == uid
        assert response.message_id_being_responded_to == ids[uid]


# --------------------------------------------------------------------------- print session


async def test_print_session_create_set_print_delete_via_meta_context() -> None:
    scp = make_scp(GRAYSCALE_PRINT_META)
    sessions: dict[str, Dataset] = {}

    async def on_create(request: NRequest) -> HandlerResult:
        assert request.dataset is not None
        sessions[request.sop_instance_uid] = request.dataset
        return 0x0000, request.dataset

    async def on_set(request: NRequest) -> HandlerResult:
        session = sessions.get(request.sop_instance_uid)
        if session is None:
            return 0x0112
        assert request.dataset is not None
        session.update(request.dataset)
        return 0x0000

    async def on_action(request: NRequest) -> HandlerResult:
        if request.action_type_id != 1:
            return 0x0123
        job = Dataset()
        job.ReferencedSOPClassUID = PRINT_JOB
        job.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.9.7777.99"
        reply = Dataset()
        reply.ReferencedPrintJobSequence = [job]
        return 0x0000, reply

    async def on_delete(request: NRequest) -> HandlerResult:
        return 0x0000 if sessions.pop(request.sop_instance_uid, None) is not None else 0x0112

    scp.on(CommandField.N_CREATE_RQ, on_create)
    scp.on(CommandField.N_SET_RQ, on_set)
    scp.on(CommandField.N_ACTION_RQ, on_action)
    scp.on(CommandField.N_DELETE_RQ, on_delete)

    attributes = Dataset()
    attributes.NumberOfCopies = "1"
    attributes.FilmDestination = "MAGAZINE"
    async with connected(scp, GRAYSCALE_PRINT_META) as (assoc, _):
        meta_context = assoc.context_for(GRAYSCALE_PRINT_META).context_id
        with pytest.raises(NegotiationError, match=BASIC_FILM_SESSION):
            await assoc.n_create(BASIC_FILM_SESSION, attributes=attributes)
        assert scp.seen == []

        created = await assoc.n_create(
            BASIC_FILM_SESSION, attributes=attributes, meta_sop_class=GRAYSCALE_PRINT_META
        )
        create_seen = scp.last()

        modification = Dataset()
        modification.NumberOfCopies = "2"
        session_uid = created.affected_sop_instance_uid
        assert session_uid is not None
        updated = await assoc.n_set(
            BASIC_FILM_SESSION, session_uid, modification, meta_sop_class=GRAYSCALE_PRINT_META
        )
        set_seen = scp.last()
        printed = await assoc.n_action(
            BASIC_FILM_SESSION, session_uid, 1, meta_sop_class=GRAYSCALE_PRINT_META
        )
        action_seen = scp.last()
        deleted = await assoc.n_delete(
            BASIC_FILM_SESSION, session_uid, meta_sop_class=GRAYSCALE_PRINT_META
        )
        delete_seen = scp.last()
        deleted_again = await assoc.n_delete(
            BASIC_FILM_SESSION, session_uid, meta_sop_class=GRAYSCALE_PRINT_META
        )

    # N-CREATE: Affected SOP Class, no instance UID, the SCP assigned one.
    command = create_seen.command
    assert command["CommandField"] == CommandField.N_CREATE_RQ
    assert_request_uids(command, "Affected", BASIC_FILM_SESSION, None)
    assert command["CommandDataSetType"] != NO_DATASET
    assert create_seen.context_id == meta_context
    assert create_seen.dataset is not None
    assert create_seen.dataset.FilmDestination == "MAGAZINE"
    assert created.status == 0x0000
    assert session_uid == create_seen.sop_instance_uid
    assert session_uid.startswith("2.25.")
    assert created.command["AffectedSOPInstanceUID"] == session_uid
    assert created.affected_sop_class_uid == BASIC_FILM_SESSION
    assert created.dataset is not None
    assert created.dataset.NumberOfCopies == "1"

    # N-SET: Requested UIDs and the modification list.
    command = set_seen.command
    assert command["CommandField"] == CommandField.N_SET_RQ
    assert_request_uids(command, "Requested", BASIC_FILM_SESSION, session_uid)
    assert command["CommandDataSetType"] != NO_DATASET
    assert set_seen.context_id == meta_context
    assert set_seen.dataset is not None
    assert set_seen.dataset.NumberOfCopies == "2"
    assert updated.status == 0x0000
    assert updated.dataset is None
    assert updated.affected_sop_instance_uid == session_uid

    # N-ACTION print: Action Type ID 1, no action information, reply with the print job.
    command = action_seen.command
    assert command["CommandField"] == CommandField.N_ACTION_RQ
    assert_request_uids(command, "Requested", BASIC_FILM_SESSION, session_uid)
    assert command["ActionTypeID"] == 1
    assert command["CommandDataSetType"] == NO_DATASET
    assert printed.status == 0x0000
    assert printed.action_type_id == 1
    assert printed.command["ActionTypeID"] == 1
    assert printed.dataset is not None
    assert printed.dataset.ReferencedPrintJobSequence[0].ReferencedSOPClassUID == PRINT_JOB

    # N-DELETE: Requested UIDs, no data set; the second one finds nothing.
    command = delete_seen.command
    assert command["CommandField"] == CommandField.N_DELETE_RQ
    assert_request_uids(command, "Requested", BASIC_FILM_SESSION, session_uid)
    assert command["CommandDataSetType"] == NO_DATASET
    assert deleted.status == 0x0000
    assert deleted.command["CommandField"] == CommandField.N_DELETE_RSP
    assert deleted_again.status == 0x0112
    assert deleted_again.status.category is StatusCategory.FAILURE
    assert not sessions


# --------------------------------------------------------------------------- MPPS


async def test_mpps_create_then_set_and_failure_statuses() -> None:
    scp = make_scp(MODALITY_PERFORMED_PROCEDURE_STEP)
    steps: dict[str, Dataset] = {}

    async def on_create(request: NRequest) -> HandlerResult:
        if request.sop_instance_uid in steps:
            return 0x0111
        assert request.dataset is not None
        steps[request.sop_instance_uid] = request.dataset
        return 0x0000

    async def on_set(request: NRequest) -> HandlerResult:
        step = steps.get(request.sop_instance_uid)
        if step is None:
            return 0x0112
        assert request.dataset is not None
        step.update(request.dataset)
        return 0x0000, step

    scp.on(CommandField.N_CREATE_RQ, on_create)
    scp.on(CommandField.N_SET_RQ, on_set)

    in_progress = Dataset()
    in_progress.PerformedProcedureStepStatus = "IN PROGRESS"
    in_progress.PerformedStationAETitle = "MODALITY1"
    completed = Dataset()
    completed.PerformedProcedureStepStatus = "COMPLETED"
    async with connected(scp, MODALITY_PERFORMED_PROCEDURE_STEP) as (assoc, _):
        created = await assoc.n_create(MODALITY_PERFORMED_PROCEDURE_STEP, MPPS_UID, in_progress)
        create_seen = scp.last()
        duplicate = await assoc.n_create(MODALITY_PERFORMED_PROCEDURE_STEP, MPPS_UID, in_progress)
        updated = await assoc.n_set(MODALITY_PERFORMED_PROCEDURE_STEP, MPPS_UID, completed)
        set_seen = scp.last()
        unknown = await assoc.n_set(
            MODALITY_PERFORMED_PROCEDURE_STEP, "1.2.826.0.1.3680043.9.7777.404", completed
        )
        context_id = assoc.context_for(MODALITY_PERFORMED_PROCEDURE_STEP).context_id

    assert_request_uids(
        create_seen.command, "Affected", MODALITY_PERFORMED_PROCEDURE_STEP, MPPS_UID
    )
    assert create_seen.context_id == context_id
    assert created.status == 0x0000
    assert created.dataset is None
    assert created.affected_sop_instance_uid == MPPS_UID
    assert created.command["AffectedSOPInstanceUID"] == MPPS_UID

    assert duplicate.status == 0x0111
    assert duplicate.status.is_failure
    assert duplicate.status.category is StatusCategory.FAILURE

    assert_request_uids(set_seen.command, "Requested", MODALITY_PERFORMED_PROCEDURE_STEP, MPPS_UID)
    assert updated.status == 0x0000
    assert updated.dataset is not None
    assert updated.dataset.PerformedProcedureStepStatus == "COMPLETED"
    assert updated.dataset.PerformedStationAETitle == "MODALITY1"
    assert steps[MPPS_UID].PerformedProcedureStepStatus == "COMPLETED"

    assert unknown.status == 0x0112
    assert unknown.status.category is StatusCategory.FAILURE
    assert unknown.dataset is None
    ids = [s.command["MessageID"] for s in scp.seen]
    assert len(set(ids)) == len(ids) == 4


async def test_handler_exception_answers_processing_failure() -> None:
    scp = make_scp(MODALITY_PERFORMED_PROCEDURE_STEP)

    async def broken(request: NRequest) -> HandlerResult:
        raise RuntimeError("database is down")

    scp.on(CommandField.N_SET_RQ, broken)
    modification = Dataset()
    modification.PerformedProcedureStepStatus = "DISCONTINUED"
    async with connected(scp, MODALITY_PERFORMED_PROCEDURE_STEP) as (assoc, _):
        response = await assoc.n_set(MODALITY_PERFORMED_PROCEDURE_STEP, MPPS_UID, modification)
        assert assoc.is_established
        # The association survives the failure.
        again = await assoc.n_set(MODALITY_PERFORMED_PROCEDURE_STEP, MPPS_UID, modification)
    assert response.status == 0x0110
    assert response.status.category is StatusCategory.FAILURE
    assert again.status == 0x0110
    assert len(scp.seen) == 2


# --------------------------------------------------------------------------- N-EVENT-REPORT


def commitment_request(transaction_uid: str) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    refs = []
    for n in (1, 2):
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.9.7777.3.{n}"
        refs.append(item)
    ds.ReferencedSOPSequence = refs
    return ds


async def test_storage_commitment_result_arrives_on_the_same_association() -> None:
    scp = make_scp(STORAGE_COMMITMENT_PUSH)
    transaction_uid = "1.2.826.0.1.3680043.9.7777.500"
    reports: list[EventReportRequest] = []
    got_report = anyio.Event()
    scp_result: list[NResponse] = []
    scp_done = anyio.Event()

    async with anyio.create_task_group() as tg:

        async def send_result(assoc: Association, request: Dataset) -> None:
            # The SCP, as association acceptor, reports the commitment result.
            result = Dataset()
            result.TransactionUID = request.TransactionUID
            result.ReferencedSOPSequence = request.ReferencedSOPSequence
            response = await assoc.n_event_report(
                STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE, 1, result
            )
            scp_result.append(response)
            scp_done.set()

        async def on_action(request: NRequest) -> HandlerResult:
            assert request.action_type_id == 1
            assert request.dataset is not None
            tg.start_soon(send_result, request.assoc, request.dataset)
            return 0x0000

        scp.on(CommandField.N_ACTION_RQ, on_action)

        async with connected(scp, STORAGE_COMMITMENT_PUSH) as (assoc, _):

            @assoc.on_event_report
            async def on_report(request: EventReportRequest) -> int:
                assert request.event_information is not None
                reports.append(request)
                got_report.set()
                return 0x0000

            response = await assoc.n_action(
                STORAGE_COMMITMENT_PUSH,
                COMMITMENT_INSTANCE,
                1,
                commitment_request(transaction_uid),
            )
            with anyio.fail_after(3):
                await got_report.wait()
                await scp_done.wait()
            scu_context = assoc.context_for(STORAGE_COMMITMENT_PUSH)

    # The N-ACTION the SCP received.
    seen = scp.last()
    assert seen.command["CommandField"] == CommandField.N_ACTION_RQ
    assert_request_uids(seen.command, "Requested", STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE)
    assert seen.command["ActionTypeID"] == 1
    assert seen.command["CommandDataSetType"] != NO_DATASET
    assert seen.dataset is not None
    assert seen.dataset.TransactionUID == transaction_uid
    assert len(seen.dataset.ReferencedSOPSequence) == 2
    assert response.status == 0x0000
    assert response.action_type_id == 1

    # The N-EVENT-REPORT the SCU's handler received on the same association.
    (report,) = reports
    assert report.assoc is assoc
    assert report.context.context_id == scu_context.context_id
    assert report.event_type_id == 1
    assert report.affected_sop_class_uid == STORAGE_COMMITMENT_PUSH
    assert report.affected_sop_instance_uid == COMMITMENT_INSTANCE
    assert report.command["CommandField"] == CommandField.N_EVENT_REPORT_RQ
    assert report.command["EventTypeID"] == 1
    assert "RequestedSOPClassUID" not in report.command
    info = report.event_information
    assert info is not None
    assert info.TransactionUID == transaction_uid
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [
        "1.2.826.0.1.3680043.9.7777.3.1",
        "1.2.826.0.1.3680043.9.7777.3.2",
    ]

    # The SCU's N-EVENT-REPORT-RSP reached the SCP.
    (result,) = scp_result
    assert result.status == 0x0000
    assert result.command["CommandField"] == CommandField.N_EVENT_REPORT_RSP
    assert result.message_id_being_responded_to == report.message_id
    assert result.event_type_id == 1
    assert result.command["EventTypeID"] == 1
    assert result.affected_sop_class_uid == STORAGE_COMMITMENT_PUSH
    assert result.affected_sop_instance_uid == COMMITMENT_INSTANCE


async def test_event_report_handler_registered_on_the_ae_replies_with_a_dataset() -> None:
    scp = make_scp(STORAGE_COMMITMENT_PUSH)
    scu = make_ae("N-SCU")
    received: list[EventReportRequest] = []

    async def on_report(request: EventReportRequest) -> HandlerResult:
        received.append(request)
        reply = Dataset()
        reply.TransactionUID = request.event_information.TransactionUID  # type: ignore[union-attr]
        return 0x0000, reply

    scu.handle_dimse(CommandField.N_EVENT_REPORT_RQ, event_report_service(on_report))
    info = Dataset()
    info.TransactionUID = "1.2.826.0.1.3680043.9.7777.600"
    async with connected(scp, STORAGE_COMMITMENT_PUSH, scu=scu) as (_, server):
        result = await server_side(server).n_event_report(
            STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE, 2, info
        )
    (request,) = received
    assert request.event_type_id == 2
    assert result.status == 0x0000
    assert result.event_type_id == 2
    assert result.dataset is not None
    assert result.dataset.TransactionUID == "1.2.826.0.1.3680043.9.7777.600"


async def test_event_report_handler_failures_reach_the_reporter() -> None:
    scp = make_scp(STORAGE_COMMITMENT_PUSH)
    info = Dataset()
    info.TransactionUID = "1.2.826.0.1.3680043.9.7777.700"
    async with connected(scp, STORAGE_COMMITMENT_PUSH) as (assoc, server):
        reporter = server_side(server)
        # Nobody registered: the AE answers Unrecognized operation.
        unhandled = await reporter.n_event_report(
            STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE, 1, info
        )

        async def broken(request: EventReportRequest) -> int:
            raise RuntimeError("cannot store the result")

        assoc.on_event_report(broken)
        raised = await reporter.n_event_report(
            STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE, 1, info
        )

        async def refuse(request: EventReportRequest) -> int:
            return 0x0113  # No such event type

        assoc.on_event_report(refuse)
        refused = await reporter.n_event_report(
            STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE, 9, info
        )
        assert assoc.is_established
    assert unhandled.status == 0x0211
    assert raised.status == 0x0110
    assert refused.status == 0x0113
    for response in (unhandled, raised, refused):
        assert response.status.category is StatusCategory.FAILURE
    assert refused.event_type_id == 9


async def test_n_event_report_from_requestor_to_scp() -> None:
    scp = make_scp(STORAGE_COMMITMENT_PUSH)

    async def on_report(request: NRequest) -> HandlerResult:
        assert request.event_type_id == 3
        return 0x0000

    scp.on(CommandField.N_EVENT_REPORT_RQ, on_report)
    async with connected(scp, STORAGE_COMMITMENT_PUSH) as (assoc, _):
        bare = await assoc.n_event_report(STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE, 3)
        bare_seen = scp.last()
        info = Dataset()
        info.TransactionUID = "1.2.826.0.1.3680043.9.7777.800"
        full = await assoc.n_event_report(STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE, 3, info)
        full_seen = scp.last()

    for seen in (bare_seen, full_seen):
        command = seen.command
        assert command["CommandField"] == CommandField.N_EVENT_REPORT_RQ
        assert_request_uids(command, "Affected", STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE)
        assert command["EventTypeID"] == 3
    assert bare_seen.command["CommandDataSetType"] == NO_DATASET
    assert bare_seen.dataset is None
    assert full_seen.command["CommandDataSetType"] != NO_DATASET
    assert full_seen.dataset is not None
    assert full_seen.dataset.TransactionUID == "1.2.826.0.1.3680043.9.7777.800"
    assert bare.status == full.status == 0x0000
    assert full.event_type_id == 3
    assert full.command["EventTypeID"] == 3


# --------------------------------------------------------------------------- errors


async def test_unaccepted_sop_class_raises_negotiation_error_before_sending() -> None:
    scp = make_scp()  # Verification only.

    async def answer(request: NRequest) -> HandlerResult:
        return 0x0000

    for command_field in (CommandField.N_CREATE_RQ, CommandField.N_GET_RQ):
        scp.on(command_field, answer)
    async with connected(scp, VERIFICATION_SOP_CLASS, MODALITY_PERFORMED_PROCEDURE_STEP) as (
        assoc,
        _,
    ):
        with pytest.raises(NegotiationError, match="accepted no presentation context"):
            await assoc.n_create(MODALITY_PERFORMED_PROCEDURE_STEP, MPPS_UID)
        with pytest.raises(NegotiationError, match="was proposed"):
            await assoc.n_get(PRINTER, PRINTER_INSTANCE, meta_sop_class=GRAYSCALE_PRINT_META)
        assert (await assoc.echo()) == 0x0000
    assert scp.seen == []


async def test_invalid_arguments_raise_before_anything_is_sent() -> None:
    scp = make_scp(MODALITY_PERFORMED_PROCEDURE_STEP)

    async def answer(request: NRequest) -> HandlerResult:
        return 0x0000

    for command_field in (CommandField.N_GET_RQ, CommandField.N_SET_RQ, CommandField.N_ACTION_RQ):
        scp.on(command_field, answer)
    mpps = MODALITY_PERFORMED_PROCEDURE_STEP
    async with connected(scp, mpps) as (assoc, _):
        with pytest.raises(ValueError, match="not a valid UID"):
            await assoc.n_get(mpps, "1.2.03")
        with pytest.raises(ValueError, match="not a DICOM attribute keyword"):
            await assoc.n_get(mpps, MPPS_UID, ["NoSuchKeyword"])
        with pytest.raises(TypeError, match="single string"):
            await assoc.n_get(mpps, MPPS_UID, "PatientName")
        with pytest.raises(ValueError, match="required"):
            await assoc.n_set(mpps, MPPS_UID, None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one attribute"):
            await assoc.n_set(mpps, MPPS_UID, Dataset())
        with pytest.raises(ValueError, match="16 bits"):
            await assoc.n_action(mpps, MPPS_UID, 0x10000)
        with pytest.raises(TypeError, match="pydicom Dataset"):
            await assoc.n_action(mpps, MPPS_UID, 1, {"TransactionUID": "1.2"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="meta SOP class UID"):
            await assoc.n_get(mpps, MPPS_UID, meta_sop_class="not-a-uid")
        response = await assoc.n_get(mpps, MPPS_UID, [(0x0040, 0x0252)])
    assert response.status == 0x0000
    (seen,) = scp.seen
    assert seen.command["AttributeIdentifierList"] == (0x0040_0252,)


async def test_dimse_timeout_when_the_scp_never_answers() -> None:
    scp = make_scp(GRAYSCALE_PRINT_META)
    handler_started = anyio.Event()
    handler_cancelled = anyio.Event()

    async def stalls(request: NRequest) -> HandlerResult:
        handler_started.set()
        try:
            await anyio.sleep(30)
        finally:
            handler_cancelled.set()
        return 0x0000

    scp.on(CommandField.N_GET_RQ, stalls)
    scu = make_ae("N-SCU", dimse_timeout=0.3)
    started = anyio.current_time()
    async with connected(scp, GRAYSCALE_PRINT_META, scu=scu) as (assoc, _):
        with pytest.raises(DIMSETimeout, match="N-GET-RSP"):
            await assoc.n_get(PRINTER, PRINTER_INSTANCE, meta_sop_class=GRAYSCALE_PRINT_META)
        elapsed = anyio.current_time() - started
        assert not assoc.is_established
        with anyio.fail_after(3):
            await assoc.wait_closed()
            await handler_cancelled.wait()  # the SCP side ended too, cancelling the handler
    assert handler_started.is_set()
    assert 0.25 <= elapsed < 3
