"""Query/retrieve without a network: model names, contexts, responses, findscu's keys."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from aionetdicom import LocalProtocolError, sop_classes
from aionetdicom.acse.contexts import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    is_valid_uid,
)
from aionetdicom.acse.requestor import MAX_PRESENTATION_CONTEXTS
from aionetdicom.apps import __main__ as dispatcher
from aionetdicom.apps import common, findscu, getscu, movescu
from aionetdicom.datasets import encode_dataset
from aionetdicom.dimse.command_set import CommandField, make_command
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.dimse.status import StatusCategory
from aionetdicom.services import query_retrieve as qr
from aionetdicom.services.query_retrieve import (
    DEFAULT_RETRIEVE_STORAGE_CLASSES,
    FindResponse,
    ReceivedInstances,
    failed_uid_list,
    find_response,
    query_model,
    retrieve_contexts,
    retrieve_response,
)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

# ---------------------------------------------------------------------- model names


@pytest.mark.parametrize(
    ("name", "operation", "uid"),
    [
        ("patient", "find", sop_classes.PATIENT_ROOT_FIND),
        ("patient", "move", sop_classes.PATIENT_ROOT_MOVE),
        ("patient", "get", sop_classes.PATIENT_ROOT_GET),
        ("study", "find", sop_classes.STUDY_ROOT_FIND),
        ("study", "move", sop_classes.STUDY_ROOT_MOVE),
        ("study", "get", sop_classes.STUDY_ROOT_GET),
        ("patient-study", "find", sop_classes.PATIENT_STUDY_ONLY_FIND),
        ("psonly", "move", sop_classes.PATIENT_STUDY_ONLY_MOVE),
        ("Patient_Study_Only", "get", sop_classes.PATIENT_STUDY_ONLY_GET),
        ("worklist", "find", sop_classes.MODALITY_WORKLIST_FIND),
        ("MWL", "find", sop_classes.MODALITY_WORKLIST_FIND),
        ("composite", "move", sop_classes.COMPOSITE_INSTANCE_ROOT_MOVE),
        ("composite", "get", sop_classes.COMPOSITE_INSTANCE_ROOT_GET),
        (
            "composite-nobulk",
            "get",
            sop_classes.COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET,
        ),
        ("  Study Root ", "find", sop_classes.STUDY_ROOT_FIND),
    ],
)
def test_model_names_map_to_uids(name: str, operation: Any, uid: str) -> None:
    assert query_model(name, operation) == uid


@pytest.mark.parametrize(
    ("uid", "operation"),
    [
        (sop_classes.STUDY_ROOT_FIND, "find"),
        (sop_classes.PATIENT_ROOT_GET, "get"),
        (sop_classes.COMPOSITE_INSTANCE_ROOT_MOVE, "move"),
        ("1.2.3.4.5", "find"),  # private models pass through
    ],
)
def test_uids_pass_through(uid: str, operation: Any) -> None:
    assert query_model(uid, operation) == uid


@pytest.mark.parametrize(
    ("model", "operation", "message"),
    [
        (sop_classes.STUDY_ROOT_MOVE, "find", "study model for C-MOVE, not for C-FIND"),
        (sop_classes.PATIENT_ROOT_FIND, "get", "patient model for C-FIND, not for C-GET"),
        ("worklist", "get", "worklist model has no C-GET"),
        ("composite", "find", "composite model has no C-FIND"),
        ("composite-nobulk", "move", "composite-nobulk model has no C-MOVE"),
        ("instance", "find", "unknown query/retrieve model 'instance'"),
        ("1.2.03", "find", "not a valid UID"),
    ],
)
def test_bad_models_are_value_errors(model: str, operation: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        query_model(model, operation)


def test_bad_operation_and_type() -> None:
    with pytest.raises(ValueError, match="operation must be"):
        query_model("study", cast(Any, "store"))
    with pytest.raises(TypeError, match="model must be a str"):
        query_model(cast(Any, 42), "find")


# ---------------------------------------------------------------------- retrieve contexts


def test_default_storage_classes_are_current_unique_and_fit() -> None:
    from pydicom._uid_dict import UID_dictionary

    classes = DEFAULT_RETRIEVE_STORAGE_CLASSES
    assert 110 <= len(classes) <= MAX_PRESENTATION_CONTEXTS - 3
    assert len(set(classes)) == len(classes)
    assert all(is_valid_uid(uid) for uid in classes)
    assert all(UID_dictionary[uid][3] == "" for uid in classes)  # none retired
    assert {CT_IMAGE_STORAGE, DX_FOR_PRESENTATION} <= set(classes)


def test_retrieve_contexts_propose_the_scp_role_for_storage() -> None:
    contexts = retrieve_contexts([sop_classes.STUDY_ROOT_GET, "patient"])
    assert len(contexts) <= MAX_PRESENTATION_CONTEXTS
    assert [c.abstract_syntax for c in contexts[:2]] == [
        sop_classes.STUDY_ROOT_GET,
        sop_classes.PATIENT_ROOT_GET,
    ]
    assert all(c.scu_role is None and c.scp_role is None for c in contexts[:2])
    storage = contexts[2:]
    assert [c.abstract_syntax for c in storage] == list(
        DEFAULT_RETRIEVE_STORAGE_CLASSES[: len(storage)]
    )
    assert all(c.scu_role is False and c.scp_role is True for c in storage)
    assert all(
        c.transfer_syntaxes == (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
        for c in contexts
    )


def test_retrieve_contexts_with_a_given_list() -> None:
    contexts = retrieve_contexts(
        "study",
        [CT_IMAGE_STORAGE, CT_IMAGE_STORAGE, DX_FOR_PRESENTATION],
        transfer_syntaxes=[EXPLICIT_VR_BIG_ENDIAN],
    )
    assert [(c.abstract_syntax, c.transfer_syntaxes) for c in contexts] == [
        (sop_classes.STUDY_ROOT_GET, (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)),
        (CT_IMAGE_STORAGE, (EXPLICIT_VR_BIG_ENDIAN,)),
        (DX_FOR_PRESENTATION, (EXPLICIT_VR_BIG_ENDIAN,)),
    ]


def test_retrieve_contexts_refuse_more_than_128() -> None:
    too_many = [f"1.2.3.{n}" for n in range(MAX_PRESENTATION_CONTEXTS)]
    with pytest.raises(ValueError, match="129 presentation contexts"):
        retrieve_contexts("study", too_many)
    assert len(retrieve_contexts("study", too_many[:127])) == MAX_PRESENTATION_CONTEXTS


# ---------------------------------------------------------------------- responses


def _message(
    field: int, dataset: Dataset | None = None, syntax: str = EXPLICIT_VR_LITTLE_ENDIAN, **cmd: Any
) -> AssembledMessage:
    command = make_command(
        field, has_dataset=dataset is not None, MessageIDBeingRespondedTo=7, **cmd
    )
    data = None if dataset is None else encode_dataset(dataset, syntax)
    return AssembledMessage(1, command, data)


@pytest.mark.parametrize("syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
def test_find_response_decodes_the_identifier(syntax: str) -> None:
    match = Dataset()
    match.PatientName = "DOE^JOHN"
    match.StudyInstanceUID = "1.2.3"
    response = find_response(_message(0x8020, match, syntax, Status=0xFF00), syntax)
    assert isinstance(response, FindResponse)
    status, identifier = response
    assert status == 0xFF00
    assert status.is_pending
    assert status.description.startswith("Pending: matches are continuing")
    assert identifier is not None
    assert identifier.PatientName == "DOE^JOHN"
    assert identifier.StudyInstanceUID == "1.2.3"
    assert response.command["MessageIDBeingRespondedTo"] == 7


def test_find_response_final_and_missing_status() -> None:
    final = find_response(_message(0x8020, Status=0x0000), EXPLICIT_VR_LITTLE_ENDIAN)
    assert (final.status, final.identifier) == (0x0000, None)
    broken = find_response(_message(0x8020), EXPLICIT_VR_LITTLE_ENDIAN)
    assert broken.status == 0x0110
    assert broken.status.is_failure


def test_retrieve_response_counts() -> None:
    pending = retrieve_response(
        _message(
            0x8021,
            Status=0xFF00,
            NumberOfRemainingSuboperations=3,
            NumberOfCompletedSuboperations=2,
            NumberOfFailedSuboperations=1,
            NumberOfWarningSuboperations=0,
        ),
        EXPLICIT_VR_LITTLE_ENDIAN,
    )
    assert (pending.remaining, pending.completed, pending.failed, pending.warning) == (3, 2, 1, 0)
    assert pending.failed_sop_instance_uids == ()
    assert pending.status.description == "Sub-operations are continuing"
    refused = retrieve_response(_message(0x8021, Status=0xA801), EXPLICIT_VR_LITTLE_ENDIAN)
    assert (refused.remaining, refused.completed, refused.failed, refused.warning) == (
        None,
        None,
        None,
        None,
    )
    assert refused.status.category is StatusCategory.FAILURE
    assert refused.status.description == "Refused: move destination unknown"
    get = retrieve_response(_message(0x8010, Status=0xA801), EXPLICIT_VR_LITTLE_ENDIAN, "C-GET")
    assert get.status.service == "C-GET"


@pytest.mark.parametrize("syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
def test_retrieve_response_failed_uid_list(syntax: str) -> None:
    identifier = Dataset()
    identifier.FailedSOPInstanceUIDList = ["1.2.3.4", "1.2.3.5"]
    final = retrieve_response(
        _message(
            0x8010,
            identifier,
            syntax,
            Status=0xB000,
            NumberOfCompletedSuboperations=5,
            NumberOfFailedSuboperations=2,
            NumberOfWarningSuboperations=0,
        ),
        syntax,
        "C-GET",
    )
    assert final.failed_sop_instance_uids == ("1.2.3.4", "1.2.3.5")
    assert final.status.is_warning
    assert (final.completed, final.failed) == (5, 2)
    assert final.identifier is not None


def test_failed_uid_list_shapes() -> None:
    assert failed_uid_list(None) == ()
    ds = Dataset()
    assert failed_uid_list(ds) == ()
    ds.FailedSOPInstanceUIDList = ""
    assert failed_uid_list(ds) == ()
    ds.FailedSOPInstanceUIDList = "1.2.3"
    assert failed_uid_list(ds) == ("1.2.3",)
    ds.FailedSOPInstanceUIDList = MultiValue(str, ["1.2", "1.3"])
    assert failed_uid_list(ds) == ("1.2", "1.3")


def test_find_response_is_frozen() -> None:
    response = find_response(_message(0x8020, Status=0), EXPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(AttributeError):
        response.status = cast(Any, 1)  # type: ignore[misc]


# ---------------------------------------------------------------------- one C-GET at a time


def _fake_association() -> Any:
    return SimpleNamespace(_running_get=None, request_handlers={})


async def _handler(assoc: Any, message: Any) -> None:  # pragma: no cover - never called
    return None


async def _on_store(request: Any) -> int:  # pragma: no cover - never called
    return 0


def test_get_slot_installs_and_restores_the_store_handler() -> None:
    assoc = _fake_association()
    field = int(CommandField.C_STORE_RQ)
    assoc.request_handlers[field] = _handler
    first = qr._GetSlot(assoc, _on_store)
    first.message_id = 3
    first.start()
    installed = assoc.request_handlers[field]
    assert installed is not _handler
    second = qr._GetSlot(assoc, _on_store)
    with pytest.raises(LocalProtocolError, match=r"message ID 3\) is already running"):
        second.start()
    second.finish()  # the refused one must not remove the running one's handler
    assert assoc.request_handlers[field] is installed
    assert assoc._running_get is first
    first.finish()
    assert assoc.request_handlers[field] is _handler
    assert assoc._running_get is None
    first.finish()  # idempotent
    assert assoc.request_handlers[field] is _handler


def test_get_slot_without_handler_still_blocks_a_second_get() -> None:
    assoc = _fake_association()
    first = qr._GetSlot(assoc, None)
    first.start()
    assert assoc.request_handlers == {}
    with pytest.raises(LocalProtocolError):
        qr._GetSlot(assoc, _on_store).start()
    first.finish()
    other = qr._GetSlot(assoc, _on_store)
    other.start()
    assert list(assoc.request_handlers) == [int(CommandField.C_STORE_RQ)]
    other.finish()
    assert assoc.request_handlers == {}


# ---------------------------------------------------------------------- get_instances


async def test_received_instances_answer_when_the_consumer_moves_on() -> None:
    instances = ReceivedInstances()
    first, second = cast(Any, object()), cast(Any, object())
    answers: list[int] = []

    async def store(request: Any) -> None:
        answers.append(await instances._on_store(request))

    async with anyio.create_task_group() as tg:
        tg.start_soon(store, first)
        assert await instances.__anext__() is first
        await anyio.wait_all_tasks_blocked()
        assert answers == []  # held by the consumer: no C-STORE-RSP yet
        tg.start_soon(store, second)
        assert await instances.__anext__() is second  # asking again answers the first
        await anyio.wait_all_tasks_blocked()
        assert answers == [0x0000]
        instances._send.close()  # the C-GET ended
        with pytest.raises(StopAsyncIteration):
            await instances.__anext__()
    assert answers == [0x0000, 0x0000]
    assert instances.received == 2


async def test_received_instances_closed_early() -> None:
    instances = ReceivedInstances()
    held, waiting = cast(Any, object()), cast(Any, object())
    answers: dict[str, int] = {}

    async def store(name: str, request: Any) -> None:
        answers[name] = await instances._on_store(request)

    async with anyio.create_task_group() as tg:
        tg.start_soon(store, "held", held)
        assert await instances.__anext__() is held
        tg.start_soon(store, "waiting", waiting)
        await anyio.wait_all_tasks_blocked()
        instances._close(consumer_ok=False)  # the consumer's block raised
    assert answers == {
        "held": qr.STORE_CONSUMER_FAILED,
        "waiting": qr.STORE_NOT_TAKEN,
    }
    assert await instances._on_store(cast(Any, object())) == qr.STORE_NOT_TAKEN


async def test_received_instances_raise_the_operation_error() -> None:
    instances = ReceivedInstances()
    instances._error = LocalProtocolError("boom")
    instances._send.close()
    with pytest.raises(LocalProtocolError, match="boom"):
        await instances.__anext__()
    assert instances._error_raised  # so leaving the block does not raise it again


# ---------------------------------------------------------------------- findscu keys


@pytest.mark.parametrize(
    ("text", "tag", "value"),
    [
        ("PatientName=A*", 0x00100010, "A*"),
        ("0010,0010=A*", 0x00100010, "A*"),
        ("(0010,0010)=A*", 0x00100010, "A*"),
        ("00100010=A*", 0x00100010, "A*"),
        ("(0008,0018)=1.2.3.4", 0x00080018, "1.2.3.4"),
        ("StudyDate", 0x00080020, None),
        ("StudyDate=", 0x00080020, None),
        ("StudyDate=20200101-20201231", 0x00080020, "20200101-20201231"),
        ("ModalitiesInStudy=CT\\MR", 0x00080061, "CT\\MR"),
    ],
)
def test_parse_key(text: str, tag: int, value: str | None) -> None:
    key = findscu.parse_key(text)
    assert key.path == (findscu.PathPart(tag, None),)
    assert key.value == value


def test_build_query_sets_values_return_keys_and_numbers() -> None:
    ds = findscu.build_query(
        [
            "QueryRetrieveLevel=SERIES",
            "PatientName=DOE*",
            "StudyDate",
            "SeriesNumber=3",
            "ModalitiesInStudy=CT\\MR",
            "(0028,0010)=512",
            "PatientName=ROE*",  # later keys win
        ]
    )
    assert ds.QueryRetrieveLevel == "SERIES"
    assert ds.PatientName == "ROE*"
    assert "StudyDate" in ds
    assert ds.StudyDate == ""
    assert ds.SeriesNumber == 3
    assert list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.Rows == 512
    assert ds["Rows"].VR == "US"


def test_build_query_sequences() -> None:
    ds = findscu.build_query(
        [
            "ScheduledProcedureStepSequence[0].Modality=CT",
            "(0040,0100)[0].(0040,0002)=20240101",
            "(0040,0100)[0].ScheduledStationAETitle",
            "ReferencedStudySequence",
            "ScheduledProtocolCodeSequence[1]",
        ]
    )
    (item,) = ds.ScheduledProcedureStepSequence
    assert item.Modality == "CT"
    assert item.ScheduledProcedureStepStartDate == "20240101"
    assert "ScheduledStationAETitle" in item
    assert item.ScheduledStationAETitle == ""
    assert ds["ReferencedStudySequence"].VR == "SQ"
    assert len(ds.ReferencedStudySequence) == 0
    assert len(ds.ScheduledProtocolCodeSequence) == 2
    encoded = encode_dataset(ds, EXPLICIT_VR_LITTLE_ENDIAN)  # it is a valid dataset
    assert encoded


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NoSuchKeyword=1", "unknown attribute keyword 'NoSuchKeyword'"),
        ("=1", "names no attribute"),
        ("0010-0010=1", "cannot read '0010-0010'"),
        ("(0010,0010=1", "cannot read"),
        ("ScheduledProcedureStepSequence.Modality=CT", "needs an item index"),
        ("PatientName[0]", "only a sequence takes an item index"),
        ("PatientName[0].Modality=CT", "is not a sequence"),
        ("ReferencedStudySequence=1", "a sequence takes no value"),
        ("ReferencedStudySequence[0]=1", "a sequence item takes no value"),
        ("Rows=abc", "'abc' is not a valid US value"),
        ("(0009,1001)=x", "not in the data dictionary"),
        ("PixelData=1", "cannot give a value of VR"),
        ("ScheduledProcedureStepSequence[5000].Modality=CT", "too large"),
    ],
)
def test_bad_keys(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        findscu.build_query([text])


def test_query_file_with_keys_on_top(tmp_path: Path) -> None:
    base = Dataset()
    base.QueryRetrieveLevel = "STUDY"
    base.PatientID = "QR001"
    base.StudyInstanceUID = ""
    path = tmp_path / "q.dcm"
    base.save_as(path, implicit_vr=False, little_endian=True)
    args = findscu.build_parser().parse_args(
        ["host", "104", str(path), "-k", "PatientID=QR002", "-k", "StudyDate"]
    )
    (ds,) = findscu.queries(args)
    assert ds.PatientID == "QR002"
    assert ds.QueryRetrieveLevel == "STUDY"
    assert "StudyDate" in ds
    assert "StudyInstanceUID" in ds


def test_queries_errors(tmp_path: Path) -> None:
    parser = findscu.build_parser()
    with pytest.raises(common.AppError, match="no query") as caught:
        findscu.queries(parser.parse_args(["host", "104"]))
    assert caught.value.code == 2
    with pytest.raises(common.AppError, match="unknown attribute keyword") as caught:
        findscu.queries(parser.parse_args(["host", "104", "-k", "Nope=1"]))
    assert caught.value.code == 2
    with pytest.raises(common.AppError, match="cannot read query file"):
        findscu.queries(parser.parse_args(["host", "104", str(tmp_path / "missing.dcm")]))


# ---------------------------------------------------------------------- command lines


def test_findscu_options() -> None:
    parser = findscu.build_parser()
    args = parser.parse_args(["host", "104", "-k", "PatientID=1"])
    assert (args.model, args.calling_aet, args.cancel, args.extract) == (
        "patient",
        "FINDSCU",
        None,
        False,
    )
    assert args.output_directory == Path(".")
    for flag, model in [("-W", "worklist"), ("-S", "study"), ("-O", "patient-study")]:
        assert parser.parse_args(["host", "104", flag]).model == model
    args = parser.parse_args(["host", "104", "--cancel", "2", "-X", "-od", "out"])
    assert (args.cancel, args.extract, args.output_directory) == (2, True, Path("out"))
    with pytest.raises(SystemExit):
        parser.parse_args(["host", "104", "-S", "-P"])


def test_getscu_and_movescu_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = getscu.build_parser().parse_args(["host", "104", "-S", "-od", "in"])
    assert (args.model, args.output_directory, args.calling_aet) == ("study", Path("in"), "GETSCU")
    with pytest.raises(SystemExit):
        getscu.build_parser().parse_args(["host", "104", "-W"])  # no worklist retrieve
    parser = movescu.build_parser()
    args = parser.parse_args(["host", "104", "-aem", "DEST", "+P", "11113"])
    assert (args.move_destination, args.store_port, args.model) == ("DEST", 11113, "patient")
    args = parser.parse_args(["host", "104", "--move", "DEST", "--port", "0"])
    assert args.store_port == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["host", "104"])
    assert "-aem/--move" in capsys.readouterr().err


def test_apps_are_registered() -> None:
    apps = {"findscu": findscu, "getscu": getscu, "movescu": movescu}
    for name, module in apps.items():
        assert dispatcher.load_app(name) is module.main
