"""DIMSE-N command building and the SCP-side services, without any network I/O.

The builders are checked element by element against PS3.7 10.3 (which requests carry
Requested and which Affected UIDs, Attribute Identifier List, Action/Event Type ID,
Command Data Set Type), and byte for byte where the encoding is easy to get wrong.
The services run against a stub association that records what would be sent.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aionetdicom.acse.contexts import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NegotiatedContext,
)
from aionetdicom.datasets import decode_dataset, encode_dataset
from aionetdicom.dimse.command_set import (
    DATASET_PRESENT,
    NO_DATASET,
    Command,
    CommandField,
    decode_command,
    encode_command,
    make_command,
)
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.dimse.status import Status, StatusCategory
from aionetdicom.pdu.constants import PresentationContextResult
from aionetdicom.services.normalized import (
    EventReportRequest,
    HandlerResult,
    NRequest,
    NResponse,
    attribute_tag,
    attribute_tags,
    event_report_service,
    n_action_request,
    n_create_request,
    n_delete_request,
    n_event_report_request,
    n_get_request,
    n_response,
    n_service,
    n_set_request,
)

PRINTER = "1.2.840.10008.5.1.1.16"
PRINTER_INSTANCE = "1.2.840.10008.5.1.1.17"
FILM_SESSION = "1.2.840.10008.5.1.1.1"
COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
MPPS = "1.2.840.10008.3.1.2.3.3"
UID = "1.2.826.0.1.3680043.9.7777.1"


# --------------------------------------------------------------------------- requests


def test_n_get_request_elements() -> None:
    command = n_get_request(7, PRINTER, PRINTER_INSTANCE, ["PrinterStatus", (0x2110, 0x20)])
    assert command == {
        "CommandField": 0x0110,
        "CommandDataSetType": NO_DATASET,
        "MessageID": 7,
        "RequestedSOPClassUID": PRINTER,
        "RequestedSOPInstanceUID": PRINTER_INSTANCE,
        "AttributeIdentifierList": (0x2110_0010, 0x2110_0020),
    }


def test_n_get_request_attribute_list_is_encoded_group_then_element() -> None:
    command = n_get_request(1, PRINTER, PRINTER_INSTANCE, [0x2110_0010, 0x0008_0018])
    encoded = encode_command(command)
    # (0000,1005) AT, length 8: (2110,0010) then (0008,0018), each as two LE uint16.
    element = b"\x00\x00\x05\x10\x08\x00\x00\x00" + b"\x10\x21\x10\x00\x08\x00\x18\x00"
    assert element in encoded
    assert decode_command(encoded) == command


def test_n_get_request_without_attributes_omits_the_list() -> None:
    command = n_get_request(1, PRINTER, PRINTER_INSTANCE)
    assert "AttributeIdentifierList" not in command
    assert command["CommandDataSetType"] == NO_DATASET


def test_n_set_request_elements() -> None:
    assert n_set_request(3, FILM_SESSION, UID) == {
        "CommandField": 0x0120,
        "CommandDataSetType": DATASET_PRESENT,
        "MessageID": 3,
        "RequestedSOPClassUID": FILM_SESSION,
        "RequestedSOPInstanceUID": UID,
    }


@pytest.mark.parametrize("has_dataset", [False, True])
def test_n_action_request_elements(has_dataset: bool) -> None:
    command = n_action_request(4, COMMITMENT, COMMITMENT_INSTANCE, 1, has_dataset=has_dataset)
    assert command == {
        "CommandField": 0x0130,
        "CommandDataSetType": DATASET_PRESENT if has_dataset else NO_DATASET,
        "MessageID": 4,
        "RequestedSOPClassUID": COMMITMENT,
        "RequestedSOPInstanceUID": COMMITMENT_INSTANCE,
        "ActionTypeID": 1,
    }


def test_n_create_request_with_and_without_instance_uid() -> None:
    assert n_create_request(5, MPPS, UID, has_dataset=True) == {
        "CommandField": 0x0140,
        "CommandDataSetType": DATASET_PRESENT,
        "MessageID": 5,
        "AffectedSOPClassUID": MPPS,
        "AffectedSOPInstanceUID": UID,
    }
    assert n_create_request(6, FILM_SESSION) == {
        "CommandField": 0x0140,
        "CommandDataSetType": NO_DATASET,
        "MessageID": 6,
        "AffectedSOPClassUID": FILM_SESSION,
    }


def test_n_delete_request_elements() -> None:
    assert n_delete_request(8, FILM_SESSION, UID) == {
        "CommandField": 0x0150,
        "CommandDataSetType": NO_DATASET,
        "MessageID": 8,
        "RequestedSOPClassUID": FILM_SESSION,
        "RequestedSOPInstanceUID": UID,
    }


def test_n_event_report_request_elements() -> None:
    command = n_event_report_request(9, COMMITMENT, COMMITMENT_INSTANCE, 2, has_dataset=True)
    assert command == {
        "CommandField": 0x0100,
        "CommandDataSetType": DATASET_PRESENT,
        "MessageID": 9,
        "AffectedSOPClassUID": COMMITMENT,
        "AffectedSOPInstanceUID": COMMITMENT_INSTANCE,
        "EventTypeID": 2,
    }
    assert decode_command(encode_command(command)) == command


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: n_get_request(1, "1.2.3.", UID), ValueError, "SOP class UID"),
        (lambda: n_get_request(1, PRINTER, ""), ValueError, "SOP instance UID"),
        (lambda: n_get_request(1, PRINTER, "1." + "2" * 70), ValueError, "not a valid UID"),
        (lambda: n_set_request(1, PRINTER, 1.5), TypeError, "must be a str"),
        (lambda: n_delete_request(0x10000, PRINTER, UID), ValueError, "message ID"),
        (lambda: n_action_request(1, PRINTER, UID, -1), ValueError, "action type ID"),
        (lambda: n_action_request(1, PRINTER, UID, True), TypeError, "action type ID"),
        (lambda: n_event_report_request(1, PRINTER, UID, 0x10000), ValueError, "event type"),
        (lambda: n_create_request(1, MPPS, "01.2"), ValueError, "SOP instance UID"),
        (lambda: n_get_request(1, PRINTER, UID, "PatientName"), TypeError, "single string"),
    ],
)
def test_builders_reject_bad_input(build: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


# --------------------------------------------------------------------------- attributes


@pytest.mark.parametrize(
    ("identifier", "tag"),
    [
        (0x0010_0010, 0x0010_0010),
        ((0x0010, 0x0020), 0x0010_0020),
        ("PatientName", 0x0010_0010),
        ("PrinterStatusInfo", 0x2110_0020),
        (0xFFFF_FFFF, 0xFFFF_FFFF),
    ],
)
def test_attribute_tag_accepts_ints_pairs_and_keywords(identifier: Any, tag: int) -> None:
    assert attribute_tag(identifier) == tag


@pytest.mark.parametrize(
    ("identifier", "error"),
    [
        (True, TypeError),
        (-1, ValueError),
        (0x1_0000_0000, ValueError),
        ((0x10,), ValueError),
        ((0x10, 0x10000), ValueError),
        ((0x10, "x"), ValueError),
        ("NotAKeyword", ValueError),
        (1.0, TypeError),
        (None, TypeError),
    ],
)
def test_attribute_tag_rejects(identifier: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        attribute_tag(identifier)


def test_attribute_tags_keeps_order() -> None:
    assert attribute_tags(["PatientID", 0x0010_0010, (0x0008, 0x0018)]) == (
        0x0010_0020,
        0x0010_0010,
        0x0008_0018,
    )
    assert attribute_tags(()) == ()


# --------------------------------------------------------------------------- responses


@pytest.mark.parametrize(
    ("request_command", "response_field"),
    [
        (n_get_request(11, PRINTER, PRINTER_INSTANCE), 0x8110),
        (n_set_request(11, PRINTER, PRINTER_INSTANCE), 0x8120),
        (n_delete_request(11, PRINTER, PRINTER_INSTANCE), 0x8150),
        (n_create_request(11, PRINTER, PRINTER_INSTANCE), 0x8140),
    ],
)
def test_n_response_names_the_affected_instance(
    request_command: Command, response_field: int
) -> None:
    response = n_response(request_command, 0x0000)
    assert response == {
        "CommandField": response_field,
        "CommandDataSetType": NO_DATASET,
        "MessageIDBeingRespondedTo": 11,
        "Status": 0x0000,
        "AffectedSOPClassUID": PRINTER,
        "AffectedSOPInstanceUID": PRINTER_INSTANCE,
    }


def test_n_response_echoes_action_and_event_type() -> None:
    action = n_action_request(12, COMMITMENT, COMMITMENT_INSTANCE, 1)
    response = n_response(action, 0x0000, has_dataset=True)
    assert response["CommandField"] == CommandField.N_ACTION_RSP
    assert response["ActionTypeID"] == 1
    assert response["CommandDataSetType"] == DATASET_PRESENT
    assert "EventTypeID" not in response
    report = n_event_report_request(13, COMMITMENT, COMMITMENT_INSTANCE, 2)
    response = n_response(report, 0x0113)
    assert response["CommandField"] == CommandField.N_EVENT_REPORT_RSP
    assert response["EventTypeID"] == 2
    assert response["Status"] == 0x0113
    assert "ActionTypeID" not in response


def test_n_response_overrides_and_rejects_non_n_requests() -> None:
    create = n_create_request(14, FILM_SESSION)
    response = n_response(create, 0x0000, sop_instance_uid=UID)
    assert response["AffectedSOPInstanceUID"] == UID
    assert "AffectedSOPInstanceUID" not in n_response(create, 0x0110)
    echo = make_command(CommandField.C_ECHO_RQ, MessageID=1)
    with pytest.raises(ValueError, match="not a DIMSE-N request"):
        n_response(echo, 0x0000)
    with pytest.raises(ValueError, match="status"):
        n_response(create, 0x10000)


def test_nresponse_unpacks_as_status_and_dataset() -> None:
    ds = Dataset()
    ds.PrinterName = "P"
    response = NResponse(Status(0x0112), ds, Command(), "1.2", "1.2.3")
    status, dataset = response
    assert status == 0x0112
    assert status.category is StatusCategory.FAILURE
    assert dataset is ds
    with pytest.raises(dataclasses.FrozenInstanceError):
        response.status = Status(0)  # type: ignore[misc]


# --------------------------------------------------------------------------- services


class StubAssociation:
    """Just enough of an Association for the services: contexts, a log, send_message."""

    def __init__(self, abstract_syntax: str, transfer_syntax: str) -> None:
        self.id = 1
        self.log = logging.LoggerAdapter(logging.getLogger("test.normalized"), {})
        self.contexts = (
            NegotiatedContext(
                3,
                abstract_syntax,
                transfer_syntax,
                PresentationContextResult.ACCEPTANCE,
                True,
                False,
            ),
        )
        self.sent: list[tuple[int, Command, bytes | None]] = []

    async def send_message(
        self, context_id: int, command: Command, dataset: bytes | memoryview | None = None
    ) -> None:
        self.sent.append((context_id, command, None if dataset is None else bytes(dataset)))


def message(command: Command, dataset: Dataset | None, transfer_syntax: str) -> AssembledMessage:
    raw = None if dataset is None else encode_dataset(dataset, transfer_syntax)
    return AssembledMessage(3, command, raw)


async def test_n_service_answers_with_dataset_in_the_context_transfer_syntax() -> None:
    stub = StubAssociation(PRINTER, IMPLICIT_VR_LITTLE_ENDIAN)
    requests: list[NRequest] = []

    async def handler(request: NRequest) -> HandlerResult:
        requests.append(request)
        reply = Dataset()
        reply.PrinterName = "LASER"
        return 0x0000, reply

    service = n_service(handler)
    command = n_get_request(21, PRINTER, PRINTER_INSTANCE, ["PrinterName"])
    await service(stub, message(command, None, IMPLICIT_VR_LITTLE_ENDIAN))  # type: ignore[arg-type]
    (request,) = requests
    assert request.command_field is CommandField.N_GET_RQ
    assert request.message_id == 21
    assert request.sop_class_uid == PRINTER
    assert request.sop_instance_uid == PRINTER_INSTANCE
    assert request.attribute_identifiers == (0x2110_0030,)
    assert request.dataset is None
    (context_id, response, data) = stub.sent[0]
    assert context_id == 3
    assert response["CommandField"] == CommandField.N_GET_RSP
    assert response["MessageIDBeingRespondedTo"] == 21
    assert response["AffectedSOPInstanceUID"] == PRINTER_INSTANCE
    assert response["CommandDataSetType"] != NO_DATASET
    assert data is not None
    # Implicit VR: tag, 4-byte length, value; no VR characters.
    assert data[:8] == b"\x10\x21\x30\x00\x06\x00\x00\x00"
    assert decode_dataset(data, IMPLICIT_VR_LITTLE_ENDIAN).PrinterName == "LASER"


async def test_n_service_assigns_an_instance_uid_to_n_create() -> None:
    stub = StubAssociation(FILM_SESSION, EXPLICIT_VR_LITTLE_ENDIAN)
    outcomes = iter([0x0000, 0x0106])
    seen: list[NRequest] = []

    async def handler(request: NRequest) -> HandlerResult:
        seen.append(request)
        return next(outcomes)

    service = n_service(handler)
    attributes = Dataset()
    attributes.NumberOfCopies = "1"
    command = n_create_request(22, FILM_SESSION, has_dataset=True)
    for _ in range(2):
        await service(stub, message(command, attributes, EXPLICIT_VR_LITTLE_ENDIAN))  # type: ignore[arg-type]
    first, second = seen
    assert first.instance_uid_assigned
    assert first.sop_instance_uid.startswith("2.25.")
    assert first.sop_instance_uid != second.sop_instance_uid
    assert first.dataset is not None
    assert first.dataset.NumberOfCopies == "1"
    success, failure = (sent[1] for sent in stub.sent)
    assert success["AffectedSOPInstanceUID"] == first.sop_instance_uid
    assert success["AffectedSOPClassUID"] == FILM_SESSION
    # A failed N-CREATE names no instance the SCP made up.
    assert failure["Status"] == 0x0106
    assert "AffectedSOPInstanceUID" not in failure


@pytest.mark.parametrize(
    "outcome",
    [RuntimeError("boom"), "0", 0x10000, (0, "not a dataset"), (0, None, None)],
)
async def test_n_service_bad_handler_gives_processing_failure(
    outcome: object, caplog: pytest.LogCaptureFixture
) -> None:
    stub = StubAssociation(MPPS, EXPLICIT_VR_LITTLE_ENDIAN)

    async def handler(request: NRequest) -> Any:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with caplog.at_level(logging.ERROR, logger="test.normalized"):
        await n_service(handler)(  # type: ignore[arg-type]
            stub, message(n_delete_request(23, MPPS, UID), None, EXPLICIT_VR_LITTLE_ENDIAN)
        )
    (_, response, data) = stub.sent[0]
    assert response["Status"] == 0x0110
    assert response["CommandField"] == CommandField.N_DELETE_RSP
    assert data is None
    assert "handler raised" in caplog.text


async def test_event_report_service_hands_over_the_event_information() -> None:
    stub = StubAssociation(COMMITMENT, EXPLICIT_VR_LITTLE_ENDIAN)
    received: list[EventReportRequest] = []

    async def handler(request: EventReportRequest) -> HandlerResult:
        received.append(request)
        return 0x0000

    info = Dataset()
    info.TransactionUID = UID
    command = n_event_report_request(24, COMMITMENT, COMMITMENT_INSTANCE, 1, has_dataset=True)
    service = event_report_service(handler)
    await service(stub, message(command, info, EXPLICIT_VR_LITTLE_ENDIAN))  # type: ignore[arg-type]
    (request,) = received
    assert request.event_type_id == 1
    assert request.message_id == 24
    assert request.affected_sop_class_uid == COMMITMENT
    assert request.affected_sop_instance_uid == COMMITMENT_INSTANCE
    assert request.event_information is not None
    assert request.event_information.TransactionUID == UID
    assert request.event_information is request.event_information  # decoded once
    (_, response, data) = stub.sent[0]
    assert response == {
        "CommandField": 0x8100,
        "CommandDataSetType": NO_DATASET,
        "MessageIDBeingRespondedTo": 24,
        "Status": 0x0000,
        "AffectedSOPClassUID": COMMITMENT,
        "AffectedSOPInstanceUID": COMMITMENT_INSTANCE,
        "EventTypeID": 1,
    }
    assert data is None
