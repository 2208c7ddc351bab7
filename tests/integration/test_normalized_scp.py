"""DIMSE-N as SCP through real associations on 127.0.0.1, ours on both sides.

The SCP answers every N-* request with ``serve_normalized``, which finds the handler
registered in ``ae.handlers`` per service and SOP class. Handlers record what they
received, so each test checks the request fields the handler saw (service, SOP class
and instance, context, type IDs, data set) as well as what the SCU got back (status,
data set, response command). The service-class helpers (storage commitment) run
against an SCU that is our own AE using ``n_action`` and receiving N-EVENT-REPORTs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from pydicom.dataset import Dataset

from aionetdicom import AE, Association, Server, StatusCategory
from aionetdicom.contexts import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    PresentationContext,
)
from aionetdicom.dimse.command_set import NO_DATASET, Command, CommandField, make_command
from aionetdicom.handlers import HandlerRegistry, Service
from aionetdicom.services.normalized import HandlerResult, NRequest, NResponse
from aionetdicom.services.normalized_scp import (
    CommitmentEvent,
    CommitmentReport,
    StorageCommitmentSCP,
    UPSAction,
    UPSEvent,
    find_handler,
    handler_registry,
    serve_normalized,
    sop_class_fits_context,
)
from aionetdicom.sop_classes import (
    BASIC_COLOR_IMAGE_BOX,
    BASIC_FILM_BOX,
    BASIC_FILM_SESSION,
    BASIC_GRAYSCALE_IMAGE_BOX,
    BASIC_GRAYSCALE_PRINT_MANAGEMENT_META,
    DISPLAY_SYSTEM,
    DISPLAY_SYSTEM_INSTANCE,
    INSTANCE_AVAILABILITY_NOTIFICATION,
    MEDIA_CREATION_MANAGEMENT,
    MODALITY_PERFORMED_PROCEDURE_STEP,
    PRINT_JOB,
    PRINTER,
    PRINTER_INSTANCE,
    PROCEDURAL_EVENT_LOGGING,
    PROCEDURAL_EVENT_LOGGING_INSTANCE,
    RT_CONVENTIONAL_MACHINE_VERIFICATION,
    RT_ION_MACHINE_VERIFICATION,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    SUBSTANCE_ADMINISTRATION_LOGGING,
    SUBSTANCE_ADMINISTRATION_LOGGING_INSTANCE,
    UPS_EVENT,
    UPS_PULL,
    UPS_PUSH,
    UPS_WATCH,
)

HOST = "127.0.0.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_ROOT = "1.2.826.0.1.3680043.9.7777.42"
N_REQUEST_FIELDS = (
    CommandField.N_EVENT_REPORT_RQ,
    CommandField.N_GET_RQ,
    CommandField.N_SET_RQ,
    CommandField.N_ACTION_RQ,
    CommandField.N_CREATE_RQ,
    CommandField.N_DELETE_RQ,
)

Handler = Callable[[NRequest], Awaitable[HandlerResult]]


def uid(*parts: int) -> str:
    return ".".join([UID_ROOT, *map(str, parts)])


def dataset(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def make_ae(title: str, *abstract_syntaxes: str, **settings: Any) -> AE:
    """An AE with short timeouts whose DIMSE-N requests go to ``serve_normalized``."""
    defaults: dict[str, Any] = {
        "acse_timeout": 3.0,
        "dimse_timeout": 3.0,
        "network_timeout": 5.0,
        "connect_timeout": 3.0,
    }
    defaults.update(settings)
    ae = AE(title, **defaults)
    for syntax in abstract_syntaxes:
        ae.add_supported_context(syntax)
    if handler_registry(ae) is None:
        ae.handlers = HandlerRegistry()  # type: ignore[attr-defined]
    for command_field in N_REQUEST_FIELDS:
        ae.handle_dimse(command_field, serve_normalized)
    return ae


def registry(ae: AE) -> HandlerRegistry:
    found = handler_registry(ae)
    assert found is not None
    return found


@dataclass
class Seen:
    """What one handler received."""

    name: str
    service: Service
    sop_class_uid: str
    sop_instance_uid: str
    abstract_syntax: str
    command: Command
    dataset: Dataset | None
    assoc: Association

    @property
    def action_type_id(self) -> Any:
        return self.command.get("ActionTypeID")

    @property
    def event_type_id(self) -> Any:
        return self.command.get("EventTypeID")


@dataclass
class Recorder:
    """Registers handlers that record each request before answering it."""

    seen: list[Seen] = field(default_factory=list)

    def register(
        self,
        ae: AE,
        service: Service,
        answer: Handler | int,
        *,
        sop_class: str | None = None,
        name: str | None = None,
    ) -> None:
        label = name or f"{service.value}:{sop_class}"

        async def handler(request: NRequest) -> HandlerResult:
            self.seen.append(
                Seen(
                    label,
                    request.service,
                    request.sop_class_uid,
                    request.sop_instance_uid,
                    request.context.abstract_syntax,
                    request.command.copy(),
                    request.dataset,
                    request.assoc,
                )
            )
            if isinstance(answer, int):
                return answer
            return await answer(request)

        registry(ae).register(service, handler, sop_class=sop_class)

    def names(self) -> list[str]:
        return [s.name for s in self.seen]

    def last(self) -> Seen:
        return self.seen[-1]


def contexts_for(syntaxes: Sequence[str | PresentationContext]) -> list[PresentationContext]:
    return [
        s
        if isinstance(s, PresentationContext)
        else PresentationContext(s, (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN))
        for s in syntaxes
    ]


@asynccontextmanager
async def connected(
    scp: AE, *syntaxes: str | PresentationContext, scu: AE | None = None
) -> AsyncIterator[tuple[Association, Server]]:
    """Serve ``scp`` on a free port and associate to it proposing ``syntaxes``."""
    scu = scu or make_ae("N-SCU")
    async with (
        scp.serve(HOST, 0) as server,
        scu.associate(
            HOST, server.port, called_ae_title=scp.ae_title, contexts=contexts_for(syntaxes)
        ) as assoc,
    ):
        yield assoc, server


def server_side(server: Server) -> Association:
    (assoc,) = server.associations
    return assoc


# --------------------------------------------------------------------------- dispatch


def test_sop_class_fits_context_rules() -> None:
    meta = BASIC_GRAYSCALE_PRINT_MANAGEMENT_META
    assert sop_class_fits_context(
        MODALITY_PERFORMED_PROCEDURE_STEP, MODALITY_PERFORMED_PROCEDURE_STEP
    )
    assert sop_class_fits_context(BASIC_FILM_SESSION, meta)
    assert sop_class_fits_context(BASIC_GRAYSCALE_IMAGE_BOX, meta)
    assert not sop_class_fits_context(BASIC_COLOR_IMAGE_BOX, meta)
    assert sop_class_fits_context(UPS_PUSH, UPS_WATCH)
    assert not sop_class_fits_context(UPS_WATCH, UPS_PULL)
    assert not sop_class_fits_context(PRINTER, MODALITY_PERFORMED_PROCEDURE_STEP)
    assert not sop_class_fits_context("", PRINTER)


def test_find_handler_order() -> None:
    handlers = HandlerRegistry()

    async def wide(request: NRequest) -> int:
        return 0

    async def printer(request: NRequest) -> int:
        return 0

    async def meta(request: NRequest) -> int:
        return 0

    async def watch(request: NRequest) -> int:
        return 0

    async def push(request: NRequest) -> int:
        return 0

    grayscale = BASIC_GRAYSCALE_PRINT_MANAGEMENT_META
    handlers.register(Service.N_GET, wide)
    handlers.register(Service.N_GET, printer, sop_class=PRINTER)
    handlers.register(Service.N_GET, meta, sop_class=grayscale)
    handlers.register(Service.N_ACTION, watch, sop_class=UPS_WATCH)
    handlers.register(Service.N_ACTION, push, sop_class=UPS_PUSH)
    # Meta SOP class: the command's SOP class first, then the meta class, then service-wide.
    assert find_handler(handlers, Service.N_GET, PRINTER, grayscale) is printer
    assert find_handler(handlers, Service.N_GET, BASIC_FILM_SESSION, grayscale) is meta
    assert find_handler(handlers, Service.N_GET, DISPLAY_SYSTEM, DISPLAY_SYSTEM) is wide
    # A SOP class foreign to the context reaches only a handler registered for it.
    assert find_handler(handlers, Service.N_GET, PRINTER, DISPLAY_SYSTEM) is printer
    assert find_handler(handlers, Service.N_GET, DISPLAY_SYSTEM, PRINTER) is None
    # UPS: the command always names UPS Push, the negotiated UPS SOP class decides first.
    assert find_handler(handlers, Service.N_ACTION, UPS_PUSH, UPS_WATCH) is watch
    assert find_handler(handlers, Service.N_ACTION, UPS_PUSH, UPS_PULL) is push
    assert find_handler(handlers, Service.N_ACTION, UPS_PUSH, UPS_PUSH) is push
    assert find_handler(handlers, Service.N_DELETE, UPS_PUSH, UPS_PUSH) is None


async def test_handlers_are_found_per_sop_class_then_context_then_service_wide() -> None:
    grayscale = BASIC_GRAYSCALE_PRINT_MANAGEMENT_META
    scp = make_ae("N-SCP", grayscale, DISPLAY_SYSTEM)
    recorder = Recorder()
    recorder.register(
        scp,
        Service.N_GET,
        lambda r: _reply(PrinterStatus="NORMAL"),
        sop_class=PRINTER,
        name="printer",
    )
    recorder.register(
        scp,
        Service.N_GET,
        lambda r: _reply(NumberOfCopies="3"),
        sop_class=grayscale,
        name="meta",
    )
    recorder.register(
        scp, Service.N_GET, lambda r: _reply(Manufacturer="ACME"), name="service-wide"
    )
    async with connected(scp, grayscale, DISPLAY_SYSTEM) as (assoc, _):
        printer = await assoc.n_get(
            PRINTER, PRINTER_INSTANCE, ["PrinterStatus"], meta_sop_class=grayscale
        )
        session = await assoc.n_get(BASIC_FILM_SESSION, uid(1), meta_sop_class=grayscale)
        display = await assoc.n_get(DISPLAY_SYSTEM, DISPLAY_SYSTEM_INSTANCE, ["Manufacturer"])

    assert recorder.names() == ["printer", "meta", "service-wide"]
    first, second, third = recorder.seen
    assert (first.service, first.sop_class_uid, first.sop_instance_uid) == (
        Service.N_GET,
        PRINTER,
        PRINTER_INSTANCE,
    )
    assert first.abstract_syntax == grayscale
    assert first.command["AttributeIdentifierList"] == (0x2110_0010,)
    assert (second.sop_class_uid, second.sop_instance_uid) == (BASIC_FILM_SESSION, uid(1))
    assert "AttributeIdentifierList" not in second.command
    assert (third.sop_class_uid, third.abstract_syntax) == (DISPLAY_SYSTEM, DISPLAY_SYSTEM)
    for response, keyword, value in (
        (printer, "PrinterStatus", "NORMAL"),
        (session, "NumberOfCopies", "3"),
        (display, "Manufacturer", "ACME"),
    ):
        assert response.status == 0x0000
        assert response.dataset is not None
        assert response.dataset.get(keyword) == value
    assert session.affected_sop_class_uid == BASIC_FILM_SESSION
    assert session.command["AffectedSOPInstanceUID"] == uid(1)


async def _reply(**values: Any) -> HandlerResult:
    return 0x0000, dataset(**values)


async def test_refusals_without_a_handler() -> None:
    mpps = MODALITY_PERFORMED_PROCEDURE_STEP
    scp = make_ae("N-SCP", mpps)
    recorder = Recorder()
    # Only a service-wide N-GET handler: it serves MPPS, never a foreign SOP class.
    recorder.register(scp, Service.N_GET, 0x0000, name="wide-get")
    async with connected(scp, mpps) as (assoc, _):
        no_operation = await assoc.n_delete(mpps, uid(2))
        foreign = await assoc.n_get(PRINTER, PRINTER_INSTANCE, meta_sop_class=mpps)
        context = assoc.context_for(mpps)
        no_instance = await assoc.send_request(
            context,
            make_command(
                CommandField.N_GET_RQ, MessageID=assoc.next_message_id(), RequestedSOPClassUID=mpps
            ),
        )
        served = await assoc.n_get(mpps, uid(3))
        assert assoc.is_established

    assert no_operation.status == 0x0211  # Unrecognized operation (PS3.7 C.5)
    assert no_operation.command["CommandField"] == CommandField.N_DELETE_RSP
    assert no_operation.affected_sop_instance_uid == uid(2)
    assert foreign.status == 0x0118  # No such SOP class
    assert foreign.affected_sop_class_uid == PRINTER
    assert no_instance.command["Status"] == 0x0112  # No such SOP instance
    assert no_instance.command["CommandField"] == CommandField.N_GET_RSP
    assert served.status == 0x0000
    for response in (no_operation, foreign):
        assert response.status.category is StatusCategory.FAILURE
    # The service-wide handler saw only the request for the context's own SOP class.
    assert [(s.name, s.sop_class_uid, s.sop_instance_uid) for s in recorder.seen] == [
        ("wide-get", mpps, uid(3))
    ]


async def test_without_a_registry_every_request_is_refused() -> None:
    scp = make_ae("N-SCP", DISPLAY_SYSTEM)
    scp.handlers = None  # type: ignore[assignment]
    async with connected(scp, DISPLAY_SYSTEM) as (assoc, _):
        response = await assoc.n_get(DISPLAY_SYSTEM, DISPLAY_SYSTEM_INSTANCE)
    assert response.status == 0x0211


async def test_handler_failures_answer_processing_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scp = make_ae("N-SCP", DISPLAY_SYSTEM)
    outcomes: list[Any] = [
        RuntimeError("display database is down"),
        0xFF00,  # a Pending status, which N-SET does not have
        (0x0000, "not a dataset"),
        (0x0106, None),
    ]

    async def on_set(request: NRequest) -> HandlerResult:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    registry(scp).register(Service.N_SET, on_set, sop_class=DISPLAY_SYSTEM)
    modification = dataset(Manufacturer="ACME")
    with caplog.at_level(logging.WARNING):
        async with connected(scp, DISPLAY_SYSTEM) as (assoc, _):
            statuses = [
                (await assoc.n_set(DISPLAY_SYSTEM, DISPLAY_SYSTEM_INSTANCE, modification)).status
                for _ in range(4)
            ]
            assert assoc.is_established
    assert statuses == [0x0110, 0x0110, 0x0110, 0x0106]
    assert "handler raised" in caplog.text
    assert "display database is down" in caplog.text
    assert "0xFF00" in caplog.text


async def test_n_create_instance_uid_assigned_returned_or_refused() -> None:
    grayscale = BASIC_GRAYSCALE_PRINT_MANAGEMENT_META
    scp = make_ae("N-SCP", grayscale)
    chosen = uid(10, 1)
    outcomes: list[Any] = [
        (0x0000, None, chosen),  # the SCP picks its own UID
        0x0000,  # the SCP keeps the UID serve_normalized proposed
        (0x0000, None, uid(10, 3)),  # the requestor named one: a different UID is a bug
        0x0213,  # a failure names no instance the SCP made up
    ]
    recorder = Recorder()

    async def on_create(request: NRequest) -> HandlerResult:
        return outcomes.pop(0)  # type: ignore[no-any-return]

    recorder.register(scp, Service.N_CREATE, on_create, sop_class=BASIC_FILM_SESSION)
    attributes = dataset(NumberOfCopies="1")
    async with connected(scp, grayscale) as (assoc, _):

        async def create(instance: str | None) -> NResponse:
            return await assoc.n_create(
                BASIC_FILM_SESSION, instance, attributes, meta_sop_class=grayscale
            )

        returned = await create(None)
        proposed = await create(None)
        conflicting = await create(uid(10, 2))
        failed = await create(None)

    assert returned.status == 0x0000
    assert returned.command["AffectedSOPInstanceUID"] == chosen
    assert proposed.status == 0x0000
    assert proposed.affected_sop_instance_uid == recorder.seen[1].sop_instance_uid
    assert proposed.affected_sop_instance_uid.startswith("2.25.")  # type: ignore[union-attr]
    assert conflicting.status == 0x0110
    assert conflicting.command["AffectedSOPInstanceUID"] == uid(10, 2)
    assert failed.status == 0x0213
    assert "AffectedSOPInstanceUID" not in failed.command
    for seen in recorder.seen:
        assert seen.command["CommandField"] == CommandField.N_CREATE_RQ
        assert seen.dataset is not None
        assert seen.dataset.NumberOfCopies == "1"


# --------------------------------------------------------------------------- storage commitment


def commitment_request(transaction_uid: str, count: int = 2) -> Dataset:
    items = [
        dataset(ReferencedSOPClassUID=CT_IMAGE_STORAGE, ReferencedSOPInstanceUID=uid(20, n))
        for n in range(1, count + 1)
    ]
    return dataset(TransactionUID=transaction_uid, ReferencedSOPSequence=items)


@dataclass
class CommitmentScene:
    """The requestor's view: N-EVENT-REPORTs received and the SCP's report outcomes."""

    reports: list[Seen] = field(default_factory=list)
    outcomes: list[CommitmentReport] = field(default_factory=list)
    commits: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    got_report: anyio.Event = field(default_factory=anyio.Event)
    got_outcome: anyio.Event = field(default_factory=anyio.Event)
    #: (is requestor, requestor's SCU role, requestor's SCP role, peer AE title) of the
    #: association the last report came on.
    roles: tuple[bool, bool, bool, str] | None = None

    def listen(self, scu: AE) -> None:
        async def on_result(request: NRequest) -> HandlerResult:
            self.reports.append(
                Seen(
                    "result",
                    request.service,
                    request.sop_class_uid,
                    request.sop_instance_uid,
                    request.context.abstract_syntax,
                    request.command.copy(),
                    request.dataset,
                    request.assoc,
                )
            )
            # The roles negotiated on the association this report came on.
            self.roles = (
                request.assoc.is_requestor,
                request.context.scu_role,
                request.context.scp_role,
                request.assoc.peer_ae_title,
            )
            self.got_report.set()
            return 0x0000

        registry(scu).register(Service.N_EVENT_REPORT, on_result, sop_class=STORAGE_COMMITMENT_PUSH)

    async def on_report(self, report: CommitmentReport) -> None:
        self.outcomes.append(report)
        self.got_outcome.set()

    def recording(self, commit: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def recorded(transaction_uid: str, items: Sequence[Dataset]) -> Any:
            refs = [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in items]
            self.commits.append((transaction_uid, refs))
            return await commit(transaction_uid, items)

        return recorded


async def test_storage_commitment_result_on_the_same_association() -> None:
    scp = make_ae("COMMIT-SCP", STORAGE_COMMITMENT_PUSH)
    scu = make_ae("COMMIT-SCU")
    scene = CommitmentScene()
    scene.listen(scu)
    transaction = uid(21)

    async def commit(transaction_uid: str, items: Sequence[Dataset]) -> Any:
        return [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in items], []

    helper = StorageCommitmentSCP(scp, scene.recording(commit), on_report=scene.on_report)
    async with helper:
        assert registry(scp).lookup(Service.N_ACTION, STORAGE_COMMITMENT_PUSH) is not None
        async with connected(scp, STORAGE_COMMITMENT_PUSH, scu=scu) as (assoc, _):
            response = await assoc.n_action(
                STORAGE_COMMITMENT_PUSH,
                STORAGE_COMMITMENT_PUSH_INSTANCE,
                1,
                commitment_request(transaction),
            )
            with anyio.fail_after(3):
                await scene.got_report.wait()
                await scene.got_outcome.wait()
    assert registry(scp).lookup(Service.N_ACTION, STORAGE_COMMITMENT_PUSH) is None

    assert response.status == 0x0000
    assert response.action_type_id == 1
    assert scene.commits == [
        (transaction, [(CT_IMAGE_STORAGE, uid(20, 1)), (CT_IMAGE_STORAGE, uid(20, 2))])
    ]
    (report,) = scene.reports
    assert report.assoc is assoc
    assert report.service is Service.N_EVENT_REPORT
    assert report.event_type_id == CommitmentEvent.SUCCESS == 1
    assert (report.sop_class_uid, report.sop_instance_uid) == (
        STORAGE_COMMITMENT_PUSH,
        STORAGE_COMMITMENT_PUSH_INSTANCE,
    )
    info = report.dataset
    assert info is not None
    assert info.TransactionUID == transaction
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [
        uid(20, 1),
        uid(20, 2),
    ]
    assert "FailedSOPSequence" not in info
    (outcome,) = scene.outcomes
    assert outcome.same_association
    assert outcome.delivered
    assert outcome.status == 0x0000
    assert outcome.error is None
    assert (outcome.requestor, outcome.transaction_uid) == ("COMMIT-SCU", transaction)
    assert outcome.event_type_id == 1


async def test_storage_commitment_failures_and_a_failing_commit_function() -> None:
    scp = make_ae("COMMIT-SCP", STORAGE_COMMITMENT_PUSH)
    scu = make_ae("COMMIT-SCU")
    scene = CommitmentScene()
    scene.listen(scu)
    answers: list[Any] = [
        ([(CT_IMAGE_STORAGE, uid(20, 1))], [(CT_IMAGE_STORAGE, uid(20, 2), 0x0112)]),
        RuntimeError("archive offline"),
    ]

    async def commit(transaction_uid: str, items: Sequence[Dataset]) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with (
        StorageCommitmentSCP(scp, commit, on_report=scene.on_report),
        connected(scp, STORAGE_COMMITMENT_PUSH, scu=scu) as (assoc, _),
    ):
        for n in (22, 23):
            scene.got_outcome = anyio.Event()
            response = await assoc.n_action(
                STORAGE_COMMITMENT_PUSH,
                STORAGE_COMMITMENT_PUSH_INSTANCE,
                1,
                commitment_request(uid(n)),
            )
            assert response.status == 0x0000
            with anyio.fail_after(3):
                await scene.got_outcome.wait()

    partial, broken = (r.dataset for r in scene.reports)
    assert [r.event_type_id for r in scene.reports] == [2, 2]
    assert partial is not None
    assert partial.TransactionUID == uid(22)
    assert [i.ReferencedSOPInstanceUID for i in partial.ReferencedSOPSequence] == [uid(20, 1)]
    (failure,) = partial.FailedSOPSequence
    assert (failure.ReferencedSOPInstanceUID, failure.FailureReason) == (uid(20, 2), 0x0112)
    assert failure.ReferencedSOPClassUID == CT_IMAGE_STORAGE
    assert broken is not None
    assert broken.TransactionUID == uid(23)
    assert "ReferencedSOPSequence" not in broken
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in broken.FailedSOPSequence] == [
        (uid(20, 1), 0x0110),
        (uid(20, 2), 0x0110),
    ]
    assert [o.delivered and o.same_association for o in scene.outcomes] == [True, True]


async def test_storage_commitment_result_on_a_new_association_after_release() -> None:
    scp = make_ae("COMMIT-SCP", STORAGE_COMMITMENT_PUSH)
    scu = make_ae("COMMIT-SCU")
    # The requestor accepts the commitment SCP as SCP of the SOP class (PS3.4 J.3.3.1.3).
    scu.add_supported_context(STORAGE_COMMITMENT_PUSH, scp_role=True)
    scene = CommitmentScene()
    scene.listen(scu)
    released = anyio.Event()
    transaction = uid(24)

    async def commit(transaction_uid: str, items: Sequence[Dataset]) -> Any:
        await released.wait()
        return [(CT_IMAGE_STORAGE, uid(20, 2))], [(CT_IMAGE_STORAGE, uid(20, 1), 0x0213)]

    async with scu.serve(HOST, 0) as scu_server:
        scp.known_aes = {"COMMIT-SCU": (HOST, scu_server.port)}
        async with StorageCommitmentSCP(scp, scene.recording(commit), on_report=scene.on_report):
            async with connected(scp, STORAGE_COMMITMENT_PUSH, scu=scu) as (assoc, server):
                response = await assoc.n_action(
                    STORAGE_COMMITMENT_PUSH,
                    STORAGE_COMMITMENT_PUSH_INSTANCE,
                    1,
                    commitment_request(transaction),
                )
                original = assoc
                scp_side = server_side(server)
            assert not scp_side.is_established
            released.set()
            with anyio.fail_after(5):
                await scene.got_report.wait()
                await scene.got_outcome.wait()

    assert response.status == 0x0000
    assert len(scene.commits) == 1
    (report,) = scene.reports
    assert report.assoc is not original
    # On the new association the commitment SCP is the requestor, in the SCP role only.
    assert scene.roles == (False, False, True, "COMMIT-SCP")
    assert report.abstract_syntax == STORAGE_COMMITMENT_PUSH
    assert report.event_type_id == CommitmentEvent.FAILURES_EXIST
    info = report.dataset
    assert info is not None
    assert info.TransactionUID == transaction
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [uid(20, 2)]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [
        (uid(20, 1), 0x0213)
    ]
    (outcome,) = scene.outcomes
    assert outcome.delivered
    assert not outcome.same_association
    assert outcome.status == 0x0000
    assert outcome.requestor == "COMMIT-SCU"


@pytest.mark.parametrize("problem", ["role not accepted", "unknown AE"])
async def test_storage_commitment_result_not_deliverable(problem: str) -> None:
    scp = make_ae("COMMIT-SCP", STORAGE_COMMITMENT_PUSH)
    # Supports the commitment class but not with the requestor as its SCP.
    scu = make_ae("COMMIT-SCU", STORAGE_COMMITMENT_PUSH)
    scene = CommitmentScene()
    scene.listen(scu)
    released = anyio.Event()

    async def commit(transaction_uid: str, items: Sequence[Dataset]) -> Any:
        await released.wait()
        return [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in items], []

    async with scu.serve(HOST, 0) as scu_server:
        known = {"COMMIT-SCU": (HOST, scu_server.port)} if problem == "role not accepted" else {}
        scp.known_aes = known  # type: ignore[attr-defined]
        async with StorageCommitmentSCP(scp, commit, on_report=scene.on_report):
            async with connected(scp, STORAGE_COMMITMENT_PUSH, scu=scu) as (assoc, _):
                response = await assoc.n_action(
                    STORAGE_COMMITMENT_PUSH,
                    STORAGE_COMMITMENT_PUSH_INSTANCE,
                    1,
                    commitment_request(uid(25)),
                )
            released.set()
            with anyio.fail_after(5):
                await scene.got_outcome.wait()

    assert response.status == 0x0000
    assert scene.reports == []
    (outcome,) = scene.outcomes
    assert not outcome.delivered
    assert not outcome.same_association
    assert outcome.status is None
    assert outcome.event_type_id == 1
    assert outcome.error is not None
    expected = "role selection" if problem == "role not accepted" else "not in ae.known_aes"
    assert expected in outcome.error


async def test_storage_commitment_refuses_malformed_requests() -> None:
    scp = make_ae("COMMIT-SCP", STORAGE_COMMITMENT_PUSH)
    scene = CommitmentScene()

    async def commit(transaction_uid: str, items: Sequence[Dataset]) -> Any:
        return [], []

    no_uids = commitment_request(uid(26))
    del no_uids.TransactionUID
    bad_item = commitment_request(uid(27))
    del bad_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    instance = STORAGE_COMMITMENT_PUSH_INSTANCE
    async with (
        StorageCommitmentSCP(scp, scene.recording(commit), on_report=scene.on_report),
        connected(scp, STORAGE_COMMITMENT_PUSH) as (assoc, _),
    ):
        results = [
            await assoc.n_action(STORAGE_COMMITMENT_PUSH, instance, 2, commitment_request(uid(28))),
            await assoc.n_action(STORAGE_COMMITMENT_PUSH, uid(29), 1, commitment_request(uid(29))),
            await assoc.n_action(STORAGE_COMMITMENT_PUSH, instance, 1, no_uids),
            await assoc.n_action(STORAGE_COMMITMENT_PUSH, instance, 1, bad_item),
            await assoc.n_action(STORAGE_COMMITMENT_PUSH, instance, 1),
        ]
        await anyio.sleep(0.1)
    assert [r.status for r in results] == [0x0123, 0x0112, 0x0115, 0x0115, 0x0115]
    assert scene.commits == []
    assert scene.outcomes == []


# --------------------------------------------------------------------------- MPPS


async def test_mpps_in_memory_store_create_set_and_final_state() -> None:
    mpps = MODALITY_PERFORMED_PROCEDURE_STEP
    scp = make_ae("MPPS-SCP", mpps)
    steps: dict[str, Dataset] = {}
    recorder = Recorder()

    async def on_create(request: NRequest) -> HandlerResult:
        if request.sop_instance_uid in steps:
            return 0x0111  # Duplicate SOP instance
        assert request.dataset is not None
        if request.dataset.PerformedProcedureStepStatus != "IN PROGRESS":
            return 0x0106  # Invalid attribute value
        steps[request.sop_instance_uid] = request.dataset
        return 0x0000

    async def on_set(request: NRequest) -> HandlerResult:
        step = steps.get(request.sop_instance_uid)
        if step is None:
            return 0x0112
        if step.PerformedProcedureStepStatus != "IN PROGRESS":
            request.error_comment = "Performed Procedure Step Object may no longer be updated"
            request.error_id = 0xA710  # PS3.4 F.7.2.2.4
            return 0x0110
        assert request.dataset is not None
        step.update(request.dataset)
        return 0x0000, step

    recorder.register(scp, Service.N_CREATE, on_create, sop_class=mpps, name="create")
    recorder.register(scp, Service.N_SET, on_set, sop_class=mpps, name="set")
    step_uid = uid(30)
    async with connected(scp, mpps) as (assoc, _):
        created = await assoc.n_create(
            mpps, step_uid, dataset(PerformedProcedureStepStatus="IN PROGRESS", Modality="CT")
        )
        duplicate = await assoc.n_create(
            mpps, step_uid, dataset(PerformedProcedureStepStatus="IN PROGRESS")
        )
        completed = await assoc.n_set(
            mpps, step_uid, dataset(PerformedProcedureStepStatus="COMPLETED")
        )
        too_late = await assoc.n_set(
            mpps, step_uid, dataset(PerformedProcedureStepStatus="DISCONTINUED")
        )
        unknown = await assoc.n_set(
            mpps, uid(31), dataset(PerformedProcedureStepStatus="COMPLETED")
        )
        not_agreed = await assoc.n_get(mpps, step_uid)  # the MPPS SOP class has no N-GET

    assert created.status == 0x0000
    assert created.affected_sop_instance_uid == step_uid
    assert duplicate.status == 0x0111
    assert completed.status == 0x0000
    assert completed.dataset is not None
    assert completed.dataset.PerformedProcedureStepStatus == "COMPLETED"
    assert completed.dataset.Modality == "CT"
    assert "ErrorComment" not in completed.command
    assert too_late.status == 0x0110
    assert too_late.command["ErrorID"] == 0xA710
    assert too_late.command["ErrorComment"].startswith("Performed Procedure Step Object")
    assert unknown.status == 0x0112
    assert "ErrorID" not in unknown.command
    assert not_agreed.status == 0x0211
    assert steps[step_uid].PerformedProcedureStepStatus == "COMPLETED"
    assert recorder.names() == ["create", "create", "set", "set", "set"]
    create_seen = recorder.seen[0]
    assert create_seen.command["AffectedSOPInstanceUID"] == step_uid
    assert "RequestedSOPClassUID" not in create_seen.command
    set_seen = recorder.seen[2]
    assert set_seen.command["RequestedSOPInstanceUID"] == step_uid
    assert set_seen.command["CommandDataSetType"] != NO_DATASET


# --------------------------------------------------------------------------- UPS


async def test_ups_push_watch_pull_and_event_report_to_the_subscriber() -> None:
    scp = make_ae("UPS-SCP", UPS_PUSH, UPS_WATCH, UPS_PULL, UPS_EVENT)
    scu = make_ae("UPS-SCU")
    recorder = Recorder()
    workitems: dict[str, Dataset] = {}
    subscribers: dict[str, set[str]] = {}
    received = Recorder()
    got_report = anyio.Event()

    async def on_report(request: NRequest) -> HandlerResult:
        got_report.set()
        return 0x0000

    received.register(scu, Service.N_EVENT_REPORT, on_report, sop_class=UPS_EVENT, name="report")

    async with anyio.create_task_group() as tg:

        async def create(request: NRequest) -> HandlerResult:
            assert request.dataset is not None
            if request.dataset.ProcedureStepState != "SCHEDULED":
                return 0xC309  # PS3.4 CC.2.5: the UPS state was not SCHEDULED
            workitems[request.sop_instance_uid] = request.dataset
            return 0x0000

        async def report_state(request: NRequest) -> None:
            # CC.2.4.3: after a subscription, the current state goes to the subscriber.
            if await request.wait_answered() != 0x0000:
                return
            item = workitems[request.sop_instance_uid]
            info = dataset(
                ProcedureStepState=item.ProcedureStepState,
                InputReadinessState=item.InputReadinessState,
            )
            await request.assoc.n_event_report(
                UPS_PUSH,
                request.sop_instance_uid,
                UPSEvent.STATE_REPORT,
                info,
                meta_sop_class=UPS_EVENT,
            )

        async def watch(request: NRequest) -> HandlerResult:
            if request.action_type_id != UPSAction.SUBSCRIBE:
                return 0x0123
            assert request.dataset is not None
            subscribers.setdefault(request.sop_instance_uid, set()).add(request.dataset.ReceivingAE)
            tg.start_soon(report_state, request)
            return 0x0000

        async def pull(request: NRequest) -> HandlerResult:
            if request.action_type_id != UPSAction.CHANGE_STATE:
                return 0x0123  # No such action on the Pull SOP class
            assert request.dataset is not None
            item = workitems[request.sop_instance_uid]
            item.ProcedureStepState = request.dataset.ProcedureStepState
            item.TransactionUID = request.dataset.TransactionUID
            return 0x0000

        async def push_action(request: NRequest) -> HandlerResult:
            assert request.action_type_id == UPSAction.REQUEST_CANCEL
            return 0x0000

        async def get(request: NRequest) -> HandlerResult:
            item = workitems[request.sop_instance_uid]
            reply = Dataset()
            for tag in request.attribute_identifiers:
                reply[tag] = item[tag]
            return 0x0000, reply

        async def set_(request: NRequest) -> HandlerResult:
            item = workitems[request.sop_instance_uid]
            assert request.dataset is not None
            if request.dataset.get("TransactionUID") != item.get("TransactionUID"):
                return 0xC301  # CC.2.6.4: the correct Transaction UID was not provided
            item.update(request.dataset)
            return 0x0000

        recorder.register(scp, Service.N_CREATE, create, sop_class=UPS_PUSH, name="create")
        recorder.register(scp, Service.N_ACTION, watch, sop_class=UPS_WATCH, name="watch")
        recorder.register(scp, Service.N_ACTION, pull, sop_class=UPS_PULL, name="pull")
        recorder.register(scp, Service.N_ACTION, push_action, sop_class=UPS_PUSH, name="push")
        recorder.register(scp, Service.N_GET, get, sop_class=UPS_PUSH, name="get")
        recorder.register(scp, Service.N_SET, set_, sop_class=UPS_PUSH, name="set")

        ups = uid(40)
        transaction = uid(41)
        item = dataset(ProcedureStepState="SCHEDULED", InputReadinessState="READY")
        async with connected(scp, UPS_PUSH, UPS_WATCH, UPS_PULL, UPS_EVENT, scu=scu) as (
            assoc,
            _,
        ):
            created = await assoc.n_create(UPS_PUSH, ups, item)
            wrong_state = await assoc.n_create(
                UPS_PUSH, uid(42), dataset(ProcedureStepState="IN PROGRESS")
            )
            subscribed = await assoc.n_action(
                UPS_PUSH,
                ups,
                UPSAction.SUBSCRIBE,
                dataset(ReceivingAE="UPS-SCU", DeletionLock="FALSE"),
                meta_sop_class=UPS_WATCH,
            )
            with anyio.fail_after(3):
                await got_report.wait()
            subscribe_on_pull = await assoc.n_action(
                UPS_PUSH, ups, UPSAction.SUBSCRIBE, meta_sop_class=UPS_PULL
            )
            claimed = await assoc.n_action(
                UPS_PUSH,
                ups,
                UPSAction.CHANGE_STATE,
                dataset(ProcedureStepState="IN PROGRESS", TransactionUID=transaction),
                meta_sop_class=UPS_PULL,
            )
            state = await assoc.n_get(
                UPS_PUSH, ups, ["ProcedureStepState", "TransactionUID"], meta_sop_class=UPS_PULL
            )
            progress = dataset(ProcedureStepLabel="half way", TransactionUID=transaction)
            updated = await assoc.n_set(UPS_PUSH, ups, progress, meta_sop_class=UPS_PULL)
            refused = await assoc.n_set(
                UPS_PUSH, ups, dataset(ProcedureStepLabel="x"), meta_sop_class=UPS_PULL
            )
            cancel = await assoc.n_action(UPS_PUSH, ups, UPSAction.REQUEST_CANCEL)

    assert (created.status, wrong_state.status) == (0x0000, 0xC309)
    assert (subscribed.status, subscribe_on_pull.status) == (0x0000, 0x0123)
    assert (claimed.status, updated.status, refused.status, cancel.status) == (0, 0, 0xC301, 0)
    assert state.dataset is not None
    assert state.dataset.ProcedureStepState == "IN PROGRESS"
    assert state.dataset.TransactionUID == transaction
    assert subscribers == {ups: {"UPS-SCU"}}
    assert workitems[ups].ProcedureStepLabel == "half way"
    assert recorder.names() == [
        "create",
        "create",
        "watch",
        "pull",
        "pull",
        "get",
        "set",
        "set",
        "push",
    ]
    # Every request names the UPS Push SOP class, on the context of the UPS SOP class used.
    assert {s.sop_class_uid for s in recorder.seen} == {UPS_PUSH}
    assert [s.abstract_syntax for s in recorder.seen] == [
        UPS_PUSH,
        UPS_PUSH,
        UPS_WATCH,
        UPS_PULL,
        UPS_PULL,
        UPS_PULL,
        UPS_PULL,
        UPS_PULL,
        UPS_PUSH,
    ]
    watch_seen = recorder.seen[2]
    assert watch_seen.command["RequestedSOPClassUID"] == UPS_PUSH
    assert watch_seen.action_type_id == 3
    # The state report the subscriber received, on its UPS Event context.
    (report,) = received.seen
    assert report.event_type_id == UPSEvent.STATE_REPORT
    assert (report.sop_class_uid, report.sop_instance_uid) == (UPS_PUSH, ups)
    assert report.abstract_syntax == UPS_EVENT
    assert report.command["AffectedSOPClassUID"] == UPS_PUSH
    assert report.assoc.is_requestor
    assert report.dataset is not None
    assert report.dataset.ProcedureStepState == "SCHEDULED"
    assert report.dataset.InputReadinessState == "READY"


# --------------------------------------------------------------------------- print management


async def test_print_session_through_the_grayscale_meta_sop_class() -> None:
    meta = BASIC_GRAYSCALE_PRINT_MANAGEMENT_META
    scp = make_ae("PRINT-SCP", meta)
    scu = make_ae("PRINT-SCU")
    recorder = Recorder()
    printer_events = Recorder()
    objects: dict[str, Dataset] = {}
    film_box_uid = uid(50, 1)
    image_box_uids = [uid(50, 2), uid(50, 3)]

    async def create_session(request: NRequest) -> HandlerResult:
        assert request.instance_uid_assigned
        session_uid = uid(50, 0)
        objects[session_uid] = request.dataset or Dataset()
        return 0x0000, None, session_uid

    async def create_film_box(request: NRequest) -> HandlerResult:
        assert request.dataset is not None
        objects[film_box_uid] = request.dataset
        reply = Dataset()
        reply.ImageDisplayFormat = request.dataset.ImageDisplayFormat
        reply.ReferencedImageBoxSequence = [
            dataset(ReferencedSOPClassUID=BASIC_GRAYSCALE_IMAGE_BOX, ReferencedSOPInstanceUID=u)
            for u in image_box_uids
        ]
        return 0x0000, reply, film_box_uid

    async def set_image_box(request: NRequest) -> HandlerResult:
        if request.sop_instance_uid not in image_box_uids:
            return 0x0112
        assert request.dataset is not None
        objects[request.sop_instance_uid] = request.dataset
        return 0x0000

    async def print_film_box(request: NRequest) -> HandlerResult:
        if request.action_type_id != 1:
            return 0x0123
        job = dataset(ReferencedSOPClassUID=PRINT_JOB, ReferencedSOPInstanceUID=uid(50, 9))
        return 0x0000, dataset(ReferencedPrintJobSequence=[job])

    async def delete(request: NRequest) -> HandlerResult:
        return 0x0000 if objects.pop(request.sop_instance_uid, None) is not None else 0x0112

    async def printer_status(request: NRequest) -> HandlerResult:
        return 0x0000, dataset(PrinterStatus="NORMAL", PrinterStatusInfo="NORMAL")

    recorder.register(scp, Service.N_GET, printer_status, sop_class=PRINTER, name="printer")
    recorder.register(
        scp, Service.N_CREATE, create_session, sop_class=BASIC_FILM_SESSION, name="session"
    )
    recorder.register(
        scp, Service.N_CREATE, create_film_box, sop_class=BASIC_FILM_BOX, name="film box"
    )
    recorder.register(
        scp, Service.N_SET, set_image_box, sop_class=BASIC_GRAYSCALE_IMAGE_BOX, name="image box"
    )
    recorder.register(scp, Service.N_ACTION, print_film_box, sop_class=BASIC_FILM_BOX, name="print")
    recorder.register(scp, Service.N_DELETE, delete, sop_class=meta, name="delete")
    printer_events.register(
        scu, Service.N_EVENT_REPORT, 0x0000, sop_class=PRINTER, name="printer event"
    )

    pixels = Dataset()
    pixels.Rows = 2
    pixels.Columns = 2
    async with connected(scp, meta, scu=scu) as (assoc, server):

        async def call(operation: str, *args: Any, **kwargs: Any) -> NResponse:
            method = getattr(assoc, operation)
            return await method(*args, meta_sop_class=meta, **kwargs)  # type: ignore[no-any-return]

        status = await call("n_get", PRINTER, PRINTER_INSTANCE, ["PrinterStatus"])
        session = await call("n_create", BASIC_FILM_SESSION, None, dataset(NumberOfCopies="1"))
        film_box = await call(
            "n_create",
            BASIC_FILM_BOX,
            None,
            dataset(
                ImageDisplayFormat="STANDARD\\1,2",
                ReferencedFilmSessionSequence=[
                    dataset(
                        ReferencedSOPClassUID=BASIC_FILM_SESSION,
                        ReferencedSOPInstanceUID=session.affected_sop_instance_uid,
                    )
                ],
            ),
        )
        boxes = film_box.dataset.ReferencedImageBoxSequence  # type: ignore[union-attr]
        image = dataset(ImageBoxPosition=1, BasicGrayscaleImageSequence=[pixels])
        image_set = await call(
            "n_set", BASIC_GRAYSCALE_IMAGE_BOX, boxes[0].ReferencedSOPInstanceUID, image
        )
        color_set = await call(
            "n_set", BASIC_COLOR_IMAGE_BOX, boxes[1].ReferencedSOPInstanceUID, image
        )
        printed = await call("n_action", BASIC_FILM_BOX, film_box_uid, 1)
        deleted = await call("n_delete", BASIC_FILM_BOX, film_box_uid)
        event = await server_side(server).n_event_report(
            PRINTER, PRINTER_INSTANCE, 1, meta_sop_class=meta
        )

    assert status.dataset is not None
    assert status.dataset.PrinterStatus == "NORMAL"
    assert session.status == 0x0000
    assert session.affected_sop_instance_uid == uid(50, 0)
    assert film_box.status == 0x0000
    assert film_box.affected_sop_instance_uid == film_box_uid
    assert [b.ReferencedSOPInstanceUID for b in boxes] == image_box_uids
    assert image_set.status == 0x0000
    assert objects[image_box_uids[0]].BasicGrayscaleImageSequence[0].Rows == 2
    assert color_set.status == 0x0118  # a color image box is no part of the grayscale meta class
    assert printed.status == 0x0000
    assert printed.dataset is not None
    assert printed.dataset.ReferencedPrintJobSequence[0].ReferencedSOPClassUID == PRINT_JOB
    assert deleted.status == 0x0000
    assert film_box_uid not in objects
    assert event.status == 0x0000
    assert event.event_type_id == 1
    assert recorder.names() == ["printer", "session", "film box", "image box", "print", "delete"]
    assert {s.abstract_syntax for s in recorder.seen} == {meta}
    assert [s.sop_class_uid for s in recorder.seen] == [
        PRINTER,
        BASIC_FILM_SESSION,
        BASIC_FILM_BOX,
        BASIC_GRAYSCALE_IMAGE_BOX,
        BASIC_FILM_BOX,
        BASIC_FILM_BOX,
    ]
    film_box_seen = recorder.seen[2]
    assert film_box_seen.dataset is not None
    assert film_box_seen.dataset.ReferencedFilmSessionSequence[0].ReferencedSOPInstanceUID == uid(
        50, 0
    )
    (printer_event,) = printer_events.seen
    assert (printer_event.sop_class_uid, printer_event.sop_instance_uid) == (
        PRINTER,
        PRINTER_INSTANCE,
    )
    assert printer_event.event_type_id == 1
    assert printer_event.abstract_syntax == meta


# --------------------------------------------------------------------------- other N classes


@dataclass(frozen=True)
class Op:
    """One DIMSE-N operation of a scenario; ``instance`` None in N-CREATE lets the SCP
    assign it, CREATED uses the instance the scenario's N-CREATE made."""

    service: Service
    instance: str | None
    type_id: int | None = None
    attributes: tuple[str, ...] = ()
    data: dict[str, Any] | None = None
    reply: dict[str, Any] | None = None


CREATED = "created"

SCENARIOS: dict[str, tuple[str, list[Op]]] = {
    "display system (EE)": (
        DISPLAY_SYSTEM,
        [
            Op(
                Service.N_GET,
                DISPLAY_SYSTEM_INSTANCE,
                attributes=("Manufacturer", "ManufacturerModelName"),
                reply={"Manufacturer": "ACME", "ManufacturerModelName": "QA-1"},
            ),
            Op(Service.N_SET, DISPLAY_SYSTEM_INSTANCE, data={"Manufacturer": "ACME2"}),
        ],
    ),
    "RT conventional machine verification (DD)": (
        RT_CONVENTIONAL_MACHINE_VERIFICATION,
        [
            Op(Service.N_CREATE, uid(60), data={"PatientID": "RT1"}),
            Op(Service.N_SET, uid(60), data={"TreatmentVerificationStatus": "VERIFIED"}),
            Op(
                Service.N_GET,
                uid(60),
                attributes=("TreatmentVerificationStatus",),
                reply={"TreatmentVerificationStatus": "VERIFIED"},
            ),
            Op(Service.N_ACTION, uid(60), type_id=1),
            Op(Service.N_EVENT_REPORT, uid(60), type_id=1, data={"PatientID": "RT1"}),
            Op(Service.N_DELETE, uid(60)),
        ],
    ),
    "RT ion machine verification (DD)": (
        RT_ION_MACHINE_VERIFICATION,
        [Op(Service.N_CREATE, uid(61), data={"PatientID": "ION1"})],
    ),
    "media creation management (S)": (
        MEDIA_CREATION_MANAGEMENT,
        [
            Op(Service.N_CREATE, None, data={"LabelText": "STUDY CD"}),
            Op(Service.N_ACTION, CREATED, type_id=1, data={"RequestPriority": "HIGH"}),
            Op(
                Service.N_GET,
                CREATED,
                attributes=("ExecutionStatus",),
                reply={"ExecutionStatus": "IDLE"},
            ),
        ],
    ),
    "instance availability notification (R)": (
        INSTANCE_AVAILABILITY_NOTIFICATION,
        [Op(Service.N_CREATE, uid(62), data={"StudyInstanceUID": uid(63)})],
    ),
    "procedural event logging (P)": (
        PROCEDURAL_EVENT_LOGGING,
        [
            Op(
                Service.N_ACTION,
                PROCEDURAL_EVENT_LOGGING_INSTANCE,
                type_id=1,
                data={"StudyInstanceUID": uid(64)},
            )
        ],
    ),
    "substance administration logging (P)": (
        SUBSTANCE_ADMINISTRATION_LOGGING,
        [
            Op(
                Service.N_ACTION,
                SUBSTANCE_ADMINISTRATION_LOGGING_INSTANCE,
                type_id=1,
                data={"PatientID": "P1"},
            )
        ],
    ),
}


async def perform(sender: Association, sop_class: str, op: Op, instance: str | None) -> NResponse:
    data = None if op.data is None else dataset(**op.data)
    if op.service is Service.N_GET:
        assert instance is not None
        return await sender.n_get(sop_class, instance, list(op.attributes))
    if op.service is Service.N_SET:
        assert instance is not None
        assert data is not None
        return await sender.n_set(sop_class, instance, data)
    if op.service is Service.N_ACTION:
        assert instance is not None
        assert op.type_id is not None
        return await sender.n_action(sop_class, instance, op.type_id, data)
    if op.service is Service.N_CREATE:
        return await sender.n_create(sop_class, instance, data)
    if op.service is Service.N_DELETE:
        assert instance is not None
        return await sender.n_delete(sop_class, instance)
    assert instance is not None
    assert op.type_id is not None
    return await sender.n_event_report(sop_class, instance, op.type_id, data)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_dispatch_per_sop_class_of_the_other_n_service_classes(scenario: str) -> None:
    sop_class, ops = SCENARIOS[scenario]
    scp = make_ae("N-SCP", sop_class)
    scu = make_ae("N-SCU")
    recorder = Recorder()
    # Decoys: a handler for another SOP class must never be chosen.
    decoy = Recorder()
    for service in Service:
        if service.value.startswith("N-"):
            decoy.register(scp, service, 0x0110, sop_class=PRINTER, name="decoy")
            decoy.register(scu, service, 0x0110, sop_class=PRINTER, name="decoy")
    replies = {op.service: op.reply for op in ops}

    async def answer(request: NRequest) -> HandlerResult:
        reply = replies.get(request.service)
        return 0x0000 if reply is None else (0x0000, dataset(**reply))

    for service in {op.service for op in ops}:
        # N-EVENT-REPORTs of these classes go from the SCP to the SCU.
        owner = scu if service is Service.N_EVENT_REPORT else scp
        recorder.register(owner, service, answer, sop_class=sop_class, name=service.value)

    responses: list[NResponse] = []
    created: str | None = None
    async with connected(scp, sop_class, scu=scu) as (assoc, server):
        for op in ops:
            sender = server_side(server) if op.service is Service.N_EVENT_REPORT else assoc
            instance = created if op.instance == CREATED else op.instance
            response = await perform(sender, sop_class, op, instance)
            if op.service is Service.N_CREATE:
                created = response.affected_sop_instance_uid
            responses.append(response)

    assert decoy.seen == []
    assert [s.service for s in recorder.seen] == [op.service for op in ops]
    for op, seen, response in zip(ops, recorder.seen, responses, strict=True):
        expected_instance = created if op.instance in (None, CREATED) else op.instance
        assert seen.sop_class_uid == sop_class
        assert seen.abstract_syntax == sop_class
        assert seen.sop_instance_uid == expected_instance
        assert response.status == 0x0000
        assert response.status.category is StatusCategory.SUCCESS
        assert response.affected_sop_class_uid == sop_class
        assert response.affected_sop_instance_uid == expected_instance
        assert response.message_id_being_responded_to == seen.command["MessageID"]
        if op.service is Service.N_ACTION:
            assert seen.action_type_id == op.type_id
            assert response.action_type_id == op.type_id
        if op.service is Service.N_EVENT_REPORT:
            assert seen.event_type_id == op.type_id
            assert response.event_type_id == op.type_id
            # Received by the SCU on the association it requested.
            assert seen.assoc.is_requestor
            assert seen.assoc.peer_ae_title == "N-SCP"
        if op.attributes:
            assert len(seen.command["AttributeIdentifierList"]) == len(op.attributes)
        if op.data is None:
            assert seen.dataset is None
        else:
            assert seen.dataset is not None
            for keyword, value in op.data.items():
                assert seen.dataset.get(keyword) == value
        if op.reply is None:
            assert response.dataset is None
        else:
            assert response.dataset is not None
            for keyword, value in op.reply.items():
                assert response.dataset.get(keyword) == value
    if created is not None and any(op.instance is None for op in ops):
        assert created.startswith("2.25.")
