"""DIMSE-N as SCP: one service for every ``N-*`` request, handlers per SOP class, and helpers
for the service classes built on DIMSE-N (PS3.4 J, F, CC, H, EE, DD, S, R, P).

:func:`serve_normalized` is the AE's service for N-EVENT-REPORT, N-GET, N-SET,
N-ACTION, N-CREATE and N-DELETE requests. It finds the application's handler in the
AE's handler registry (``ae.handlers``) under the request's service and SOP class and
sends the ``N-*-RSP`` with what the handler returns::

    async def get_printer(request: NRequest) -> HandlerResult:
        if request.sop_instance_uid != PRINTER_INSTANCE:
            return 0x0112                                  # No such SOP instance
        return 0x0000, printer_status_dataset()

    ae.handlers.register(Service.N_GET, get_printer, sop_class=PRINTER)

Handler contract: ``async def handler(request: NRequest) -> HandlerResult``, where the
result is a status, ``(status, dataset)``, or for N-CREATE ``(status, dataset, uid)``
naming the instance the handler created when the requestor gave no instance UID (the
request then carries a fresh UID in ``request.sop_instance_uid`` that the handler may
simply use). Statuses pass through :func:`checked_status`; a handler that raises gets
0x0110 (Processing failure) sent and its exception logged. N-EVENT-REPORT handlers get
an :class:`EventReportRequest` (the same, with ``event_information``).

Which handler: the one registered for the command's SOP class (Requested or Affected
SOP Class UID); else, when that class travels on a context negotiated for another
abstract syntax that carries it (a print management meta SOP class, a UPS SOP class,
PS3.4 H and CC.3.1), the one registered for the context's abstract syntax; else
the service-wide one. On UPS contexts the negotiated UPS SOP class is looked up before
UPS Push, which every UPS request names (see :func:`find_handler`). Without a handler
the request is refused:

* 0x0118 No such SOP class, when the command's SOP class is not one the presentation
  context carries;
* 0x0211 Unrecognized operation, when the SOP class fits the context but nothing here
  performs this operation on it (not an operation agreed between the DIMSE service
  users), which is also what the AE answers for a request it has no service for;
* 0x0112 No such SOP instance, when a request other than N-CREATE names no instance.

These are general statuses of PS3.7 Annex C that every DIMSE-N service may return.

:class:`StorageCommitmentSCP` implements the SCP of the Storage Commitment Push Model
(PS3.4 J) on top: it answers N-ACTION at once and reports the result with
N-EVENT-REPORT later, on the same association when it is still open, otherwise on a
new association to the requestor found in ``ae.known_aes``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from aionetdicom.acse.contexts import PresentationContext, is_valid_uid
from aionetdicom.dimse.status import Status
from aionetdicom.errors import DicomNetworkError
from aionetdicom.handlers import Handler, HandlerRegistry, Service
from aionetdicom.services.normalized import (
    EventReportRequest,
    HandlerResult,
    NRequest,
    answer_request,
)
from aionetdicom.sop_classes import (
    PRINT_MANAGEMENT_META_MEMBERS,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_COMMITMENT_PUSH_INSTANCE,
    UPS_N_SOP_CLASSES,
    UPS_PUSH,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from aionetdicom.ae import AE
    from aionetdicom.association import Association
    from aionetdicom.dimse.fragments import AssembledMessage

__all__ = [
    "NORMALIZED_SERVICES",
    "NO_SUCH_SOP_CLASS",
    "NO_SUCH_SOP_INSTANCE",
    "UNRECOGNIZED_OPERATION",
    "CommitFunction",
    "CommitmentEvent",
    "CommitmentReport",
    "FailedReference",
    "Reference",
    "StorageCommitmentSCP",
    "UPSAction",
    "UPSEvent",
    "commitment_result",
    "find_handler",
    "handler_registry",
    "known_aes",
    "serve_normalized",
    "sop_class_fits_context",
]

logger = logging.getLogger("aionetdicom.services")

#: The DIMSE-N services :func:`serve_normalized` answers.
NORMALIZED_SERVICES = frozenset(
    {
        Service.N_EVENT_REPORT,
        Service.N_GET,
        Service.N_SET,
        Service.N_ACTION,
        Service.N_CREATE,
        Service.N_DELETE,
    }
)

NO_SUCH_SOP_INSTANCE = 0x0112
NO_SUCH_SOP_CLASS = 0x0118
UNRECOGNIZED_OPERATION = 0x0211
_NO_SUCH_ACTION = 0x0123
_INVALID_ARGUMENT_VALUE = 0x0115
_PROCESSING_FAILURE = 0x0110


class UPSAction(enum.IntEnum):
    """Action Type IDs of the UPS N-ACTIONs (PS3.4 CC.2)."""

    CHANGE_STATE = 1
    REQUEST_CANCEL = 2
    SUBSCRIBE = 3
    UNSUBSCRIBE = 4
    SUSPEND_GLOBAL_SUBSCRIPTION = 5


class UPSEvent(enum.IntEnum):
    """Event Type IDs of the UPS N-EVENT-REPORTs (PS3.4 CC.2.4)."""

    STATE_REPORT = 1
    CANCEL_REQUESTED = 2
    PROGRESS_REPORT = 3
    SCP_STATUS_CHANGE = 4
    ASSIGNED = 5


class CommitmentEvent(enum.IntEnum):
    """Event Type IDs of the storage commitment result (PS3.4 J.3.3)."""

    SUCCESS = 1
    FAILURES_EXIST = 2


# --------------------------------------------------------------------------- dispatch


def handler_registry(ae: object) -> HandlerRegistry | None:
    """The AE's handler registry (``ae.handlers``), or None when it has none."""
    registry = getattr(ae, "handlers", None)
    return registry if isinstance(registry, HandlerRegistry) else None


def sop_class_fits_context(sop_class: str, abstract_syntax: str) -> bool:
    """True when a command naming ``sop_class`` may travel on a context for ``abstract_syntax``.

    The same UID, a SOP class of the print management meta SOP class negotiated (PS3.4
    H), or the UPS Push SOP class (of every UPS instance, CC.3.1) on a UPS context.
    """
    if not sop_class:
        return False
    if sop_class == abstract_syntax:
        return True
    if sop_class in PRINT_MANAGEMENT_META_MEMBERS.get(abstract_syntax, ()):
        return True
    return sop_class == UPS_PUSH and abstract_syntax in UPS_N_SOP_CLASSES


def find_handler(
    registry: HandlerRegistry, service: Service, sop_class: str, abstract_syntax: str
) -> Handler | None:
    """The handler for a request of ``service`` naming ``sop_class`` on a context for
    ``abstract_syntax``.

    The handler registered for the SOP class comes first, then (when the class fits
    the context) the one for the context's abstract syntax, then the service-wide one.
    On a UPS context the order of the first two is reversed: every UPS request names
    the UPS Push SOP class (PS3.4 CC.3.1), so the negotiated UPS SOP class is what tells
    a subscription (Watch) from a state change (Pull) or a cancel request (Push).
    """
    service_wide = registry.lookup(service)
    fits = sop_class_fits_context(sop_class, abstract_syntax)
    candidates = [sop_class] if sop_class else []
    if fits and abstract_syntax != sop_class:
        if abstract_syntax in UPS_N_SOP_CLASSES:
            candidates.insert(0, abstract_syntax)
        else:
            candidates.append(abstract_syntax)
    for uid in candidates:
        handler = registry.lookup(service, uid)
        if handler is not None and handler is not service_wide:
            return handler
    return service_wide if fits else None


def _refusal(status: int) -> Callable[[NRequest], Awaitable[HandlerResult]]:
    async def refuse(request: NRequest) -> HandlerResult:
        return status

    return refuse


async def serve_normalized(assoc: Association, message: AssembledMessage) -> None:
    """The AE's service for every DIMSE-N request: find the handler, send its answer.

    For ``AE.handle_dimse(CommandField.N_GET_RQ, serve_normalized)`` and the other five
    ``N-*`` request command fields; see the module documentation for the rules.
    """
    field = message.command.get("CommandField")
    service = Service.for_request(field) if isinstance(field, int) else None
    if service is None or service not in NORMALIZED_SERVICES:
        assoc.log.warning(
            "association #%d: serve_normalized got a non-DIMSE-N request %r",
            assoc.id,
            message.command,
        )
        return
    kind = EventReportRequest if service is Service.N_EVENT_REPORT else NRequest
    request = kind.from_message(assoc, message)
    abstract_syntax = request.context.abstract_syntax
    registry = handler_registry(assoc.ae)
    handler = (
        None
        if registry is None
        else find_handler(registry, service, request.sop_class_uid, abstract_syntax)
    )
    if handler is None:
        fits = sop_class_fits_context(request.sop_class_uid, abstract_syntax)
        refusal = UNRECOGNIZED_OPERATION if fits else NO_SUCH_SOP_CLASS
        assoc.log.info(
            "association #%d: no %s handler for SOP class %r on a context for %s; answering 0x%04X",
            assoc.id,
            service.value,
            request.sop_class_uid,
            abstract_syntax,
            refusal,
        )
        await answer_request(_refusal(refusal), request)
    elif not request.sop_instance_uid:
        assoc.log.info(
            "association #%d: %s names no SOP instance; answering 0x%04X",
            assoc.id,
            service.value,
            NO_SUCH_SOP_INSTANCE,
        )
        await answer_request(_refusal(NO_SUCH_SOP_INSTANCE), request)
    else:
        await answer_request(handler, request)


# --------------------------------------------------------------------------- storage commitment

#: A SOP instance committed: (SOP Class UID, SOP Instance UID).
Reference = tuple[str, str]
#: A SOP instance not committed: (SOP Class UID, SOP Instance UID, Failure Reason), the
#: reason one of PS3.3 C.14.1.1 (0x0110, 0x0112, 0x0119, 0x0122, 0x0131, 0x0213).
FailedReference = tuple[str, str, int]
#: The application's commitment: ``(transaction_uid, referenced_sop_sequence)`` to
#: ``(committed, failed)``. It may take as long as the instances need to be safe.
CommitFunction = Callable[
    [str, Sequence["Dataset"]],
    Awaitable[tuple[Sequence[Reference], Sequence[FailedReference]]],
]
#: Called with every :class:`CommitmentReport`, delivered or not.
ReportCallback = Callable[["CommitmentReport"], Awaitable[None]]


@dataclass(frozen=True)
class CommitmentReport:
    """What became of one storage commitment result (N-EVENT-REPORT)."""

    transaction_uid: str
    #: The AE title of the commitment requestor, whom the report is for.
    requestor: str
    event_type_id: int
    event_information: Dataset
    #: True when sent on the association that carried the N-ACTION.
    same_association: bool
    #: The requestor's N-EVENT-REPORT-RSP status; None when the report was not delivered.
    status: Status | None
    #: Why the report was not delivered.
    error: str | None = None

    @property
    def delivered(self) -> bool:
        """True when the requestor answered the N-EVENT-REPORT."""
        return self.status is not None


def known_aes(ae: object) -> Mapping[str, tuple[str, int]]:
    """The AE's table of peers it may open associations to: ``ae.known_aes``, a mapping
    of AE title to (host, port); empty when the AE has none."""
    table = getattr(ae, "known_aes", None)
    return table if isinstance(table, Mapping) else {}


def commitment_result(
    transaction_uid: str, committed: Sequence[Reference], failed: Sequence[FailedReference]
) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) of a storage commitment result (PS3.4 J.3.3.1):
    1 with the Referenced SOP Sequence when every instance is committed, otherwise 2 with
    the Failed SOP Sequence (and the Referenced SOP Sequence if any was committed)."""
    from pydicom.dataset import Dataset

    info = Dataset()
    info.TransactionUID = transaction_uid
    if committed:
        items = []
        for sop_class, sop_instance in committed:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            items.append(item)
        info.ReferencedSOPSequence = items
    if not failed:
        return CommitmentEvent.SUCCESS, info
    failures = []
    for sop_class, sop_instance, reason in failed:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        item.FailureReason = reason
        failures.append(item)
    info.FailedSOPSequence = failures
    return CommitmentEvent.FAILURES_EXIST, info


def _requested_references(request: NRequest) -> tuple[str, list[Dataset], list[Reference]] | int:
    """(transaction UID, Referenced SOP Sequence items, their UIDs) of an N-ACTION, or
    the refusal status when its Action Information is not a commitment request."""
    info = request.dataset
    if info is None:
        return _INVALID_ARGUMENT_VALUE
    transaction_uid = str(info.get("TransactionUID", "") or "")
    items = list(info.get("ReferencedSOPSequence", None) or [])
    if not is_valid_uid(transaction_uid) or not items:
        return _INVALID_ARGUMENT_VALUE
    references = []
    for item in items:
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "")
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "")
        if not (is_valid_uid(sop_class) and is_valid_uid(sop_instance)):
            return _INVALID_ARGUMENT_VALUE
        references.append((sop_class, sop_instance))
    return transaction_uid, items, references


def _complete(
    references: Sequence[Reference],
    committed: Sequence[Reference],
    failed: Sequence[FailedReference],
) -> tuple[list[Reference], list[FailedReference]]:
    """Check the commit function's answer; every requested instance lands in one list."""
    done = [(str(c), str(i)) for c, i in committed]
    failures = [(str(c), str(i), int(r)) for c, i, r in failed]
    answered = set(done) | {(c, i) for c, i, _ in failures}
    missing = [ref for ref in references if ref not in answered]
    if missing:
        logger.warning(
            "storage commitment: %d requested instance(s) neither committed nor failed; "
            "reporting them as failed (0x0110)",
            len(missing),
        )
        failures.extend((c, i, _PROCESSING_FAILURE) for c, i in missing)
    return done, failures


class StorageCommitmentSCP:
    """The SCP of the Storage Commitment Push Model SOP Class (PS3.4 J.3).

    ``commit(transaction_uid, referenced_sop_sequence)`` is the application's work: it
    returns ``(committed, failed)`` with (class, instance) and (class, instance, failure
    reason) tuples. Used as an async context manager, the helper registers its N-ACTION
    handler in ``ae.handlers`` for the commitment SOP class and runs the reports::

        async with StorageCommitmentSCP(ae, commit), ae.serve("0.0.0.0", 11112) as server:
            await server.wait_closed()

    An N-ACTION (Action Type 1 on the well-known instance) with a Transaction UID and a
    Referenced SOP Sequence is answered Success at once; anything else is refused
    (0x0123 No such action, 0x0112 No such SOP instance, 0x0115 Invalid argument
    value). After the response, ``commit`` runs and the result (Event Type 1, or 2 when
    failures exist) goes to the requestor by N-EVENT-REPORT: on the same association
    while it is open, otherwise on a new association to the requestor's AE title looked
    up in ``ae.known_aes`` (title -> (host, port)). There the SCP is the association
    requestor and proposes itself as SCP of the commitment class by SCP/SCU role
    selection (SCU 0, SCP 1: PS3.4 J.3.3.1.3, PS3.7 D.3.3.4); if the requestor does not
    accept that role, nothing is sent. A report is tried once per association kind; a
    requestor may see a report twice when the first association failed after sending.
    ``commit`` raising reports every instance failed with 0x0110. Each outcome goes to
    ``on_report``. Leaving the block waits for reports under way.
    """

    def __init__(
        self, ae: AE, commit: CommitFunction, *, on_report: ReportCallback | None = None
    ) -> None:
        self.ae = ae
        self.commit = commit
        self.on_report = on_report
        self._task_group: TaskGroup | None = None

    def _registry(self) -> HandlerRegistry:
        registry = handler_registry(self.ae)
        if registry is None:
            raise RuntimeError(f"{self.ae!r} has no handler registry (ae.handlers)")
        return registry

    async def __aenter__(self) -> StorageCommitmentSCP:
        registry = self._registry()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        registry.register(Service.N_ACTION, self.handle_action, sop_class=STORAGE_COMMITMENT_PUSH)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        registry = self._registry()
        if registry.lookup(Service.N_ACTION, STORAGE_COMMITMENT_PUSH) == self.handle_action:
            registry.unregister(Service.N_ACTION, sop_class=STORAGE_COMMITMENT_PUSH)
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        return await task_group.__aexit__(exc_type, exc, traceback)

    async def handle_action(self, request: NRequest) -> HandlerResult:
        """The N-ACTION handler: check the request, start the commitment, answer."""
        if request.action_type_id != 1:
            return _NO_SUCH_ACTION
        if request.sop_instance_uid != STORAGE_COMMITMENT_PUSH_INSTANCE:
            return NO_SUCH_SOP_INSTANCE
        parsed = _requested_references(request)
        if isinstance(parsed, int):
            return parsed
        if self._task_group is None:
            raise RuntimeError("StorageCommitmentSCP is not running (use it with async with)")
        self._task_group.start_soon(self._commit_and_report, request, *parsed)
        return 0x0000

    async def _commit_and_report(
        self,
        request: NRequest,
        transaction_uid: str,
        items: list[Dataset],
        references: list[Reference],
    ) -> None:
        assoc = request.assoc
        requestor = assoc.peer_ae_title
        if await request.wait_answered() != 0x0000:
            return  # the requestor never learnt that we took the request on
        try:
            committed, failed = await self.commit(transaction_uid, items)
            done, failures = _complete(references, committed, failed)
        except Exception:
            logger.exception(
                "storage commitment %s: commit function failed; reporting every instance "
                "failed (0x0110)",
                transaction_uid,
            )
            done, failures = [], [(c, i, _PROCESSING_FAILURE) for c, i in references]
        event_type, info = commitment_result(transaction_uid, done, failures)
        report = await self.send_report(requestor, transaction_uid, event_type, info, assoc)
        if self.on_report is not None:
            try:
                await self.on_report(report)
            except Exception:
                logger.exception("storage commitment %s: on_report raised", transaction_uid)

    async def send_report(
        self,
        requestor: str,
        transaction_uid: str,
        event_type_id: int,
        event_information: Dataset,
        assoc: Association | None = None,
    ) -> CommitmentReport:
        """Send a commitment result to ``requestor``: on ``assoc`` if it is open, else on
        a new association (see the class documentation). Never raises network errors."""

        def outcome(same: bool, status: Status | None, error: str | None) -> CommitmentReport:
            if error is not None:
                logger.warning(
                    "storage commitment %s: result not delivered to %s: %s",
                    transaction_uid,
                    requestor,
                    error,
                )
            return CommitmentReport(
                transaction_uid, requestor, event_type_id, event_information, same, status, error
            )

        if assoc is not None and assoc.is_established:
            try:
                response = await assoc.n_event_report(
                    STORAGE_COMMITMENT_PUSH,
                    STORAGE_COMMITMENT_PUSH_INSTANCE,
                    event_type_id,
                    event_information,
                )
                return outcome(True, response.status, None)
            except DicomNetworkError as exc:
                logger.info(
                    "storage commitment %s: the requestor's association failed (%s); "
                    "opening a new one",
                    transaction_uid,
                    exc,
                )
        address = known_aes(self.ae).get(requestor)
        if address is None:
            return outcome(False, None, f"{requestor!r} is not in ae.known_aes")
        host, port = address
        proposal = PresentationContext(STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)
        try:
            async with self.ae.associate(
                host, port, called_ae_title=requestor, contexts=[proposal]
            ) as new:
                context = new.context_for(STORAGE_COMMITMENT_PUSH)
                if not context.scp_role:
                    return outcome(
                        False,
                        None,
                        "the requestor did not accept us as SCP of the storage commitment "
                        "SOP class (SCP/SCU role selection, PS3.4 J.3.3.1.3)",
                    )
                response = await new.n_event_report(
                    STORAGE_COMMITMENT_PUSH,
                    STORAGE_COMMITMENT_PUSH_INSTANCE,
                    event_type_id,
                    event_information,
                )
        except (DicomNetworkError, OSError) as exc:
            return outcome(False, None, f"{host}:{port}: {exc}")
        return outcome(False, response.status, None)
