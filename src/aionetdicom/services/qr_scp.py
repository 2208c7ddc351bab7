"""C-FIND, C-GET and C-MOVE as SCP: Query/Retrieve (PS3.4 Annex C) and every service
built on C-FIND (worklist, relevant patient information, hanging protocols, color
palettes, implant templates, defined procedure protocols, protocol approval, product
characteristics, substance approval, inventories).

The services here do the protocol; the application's handler does the matching
(PS3.4 C.2.2 is the handler's business). :func:`serve_find`, :func:`serve_get` and
:func:`serve_move` are DIMSE request handlers (``async (assoc, message) -> None``); each
finds the application's handler with ``assoc.ae.handlers.lookup(service, sop_class)``,
calls it with a :class:`FindRequest`, :class:`GetRequest` or :class:`MoveRequest`, and
sends every response itself. No handler for the SOP class: 0x0122 (SOP class not
supported). A request without an identifier: 0xA900 (identifier does not match SOP
class); one whose identifier cannot be decoded (malformed, sequences nested too deep):
0xC310, 0xC410 or 0xC510 (unable to process); one inflating past the AE's
``maximum_dataset_size``: 0xA700 (C-FIND) or 0xA701. The handler is not called for them.

Handlers
========

A handler takes the request and returns an async iterable, usually by being an async
generator. It may also be a coroutine function returning an (async) iterable, or a
plain function returning a list.

**C-FIND** yields the matches, one at a time; each becomes a Pending (0xFF00) response
as soon as it is yielded, its identifier encoded in the presentation context's
transfer syntax (nothing is collected first)::

    scp = AE("QR_SCP", supported_contexts=[*VERIFICATION, *query_retrieve_contexts()])

    @scp.on_find                     # or @scp.on_find(sop_class=MODALITY_WORKLIST_FIND)
    async def on_find(request: FindRequest):
        async for row in db.search(request.identifier, level=request.query_level):
            yield row_to_dataset(row)        # Pending 0xFF00
        # returning: final Success 0x0000

A yielded ``(status, identifier)`` pair chooses the status: ``(0xFF01, ds)`` is a
Pending response (optional keys not supported); any other status ends the operation
with that final status (the identifier is not sent), e.g. ``yield 0xA700, None``.
Statuses go through :func:`~aionetdicom.services.status_rules.checked_status`: one the
service does not allow becomes 0xC311, as does a handler raising (its traceback is
logged) or a Pending status without a Dataset.

**C-GET** yields the instances to send back on the same association, each a pydicom
Dataset, the path of a DICOM file, the bytes of one, or a :class:`StoredInstance` (a
path whose SOP class, instance and transfer syntax the handler already knows). Yield
an ``int`` first (or set ``request.total``) to say how many instances there will be,
so that Pending responses carry the number of remaining sub-operations; a handler
returning a list gets it from the list's length. Without it the Pending responses
leave Remaining out::

    scp.supported_contexts += retrieve_storage_contexts()   # the requestor's SCP role

    @scp.on_get
    async def on_get(request: GetRequest):
        paths = await db.paths_for(request.identifier)
        yield len(paths)
        for path in paths:
            yield path

Each instance is sent with C-STORE (``assoc.store``, which picks the presentation
context). An instance whose SOP class and transfer syntax the requestor did not accept
with the Storage SCP role, that cannot be read, or whose C-STORE fails counts as a
failed sub-operation and its SOP Instance UID goes into the Failed SOP Instance UID
List. A Pending response follows every sub-operation. The final status (PS3.4
C.4.3.2, C.4.3.3): Success 0x0000 when nothing failed or warned; 0xA702 (Refused: out
of resources, unable to perform sub-operations) when every sub-operation failed, since
Failure or Refused tells the SCU that all of them were unsuccessful; Warning 0xB000
otherwise. A ``(status, None)`` pair ends the operation with that status (checked);
a handler raising gives 0xC411.

**C-MOVE** handlers are C-GET handlers; the instances go to the Move Destination over
a new association from this AE (calling AE title: ours; called: the destination).
The destination's address comes from ``ae.move_destination_handler(ae_title, request)``
when the AE has one (an async callable returning ``(host, port)`` or None), otherwise
from ``ae.known_aes`` (a mapping of AE title to ``(host, port)``). An unknown
destination is answered with 0xA801 before the handler is called, and nothing is
connected to::

    scp.known_aes = {"STORE_SCP": ("10.0.0.7", 11112)}
    scp.on_move(on_get)              # the same handler serves C-MOVE

All instances are collected and identified first (a file's meta header only; not
for a :class:`StoredInstance`) to
propose the right storage presentation contexts; more than 128 SOP classes go over
several associations one after the other. If the destination cannot be
reached or refuses the association, each of its instances is a failed sub-operation
(PS3.4 C.4.2.3.1: failing to negotiate a context is a failed sub-operation), so the
final status is 0xA702 when all of them failed. Sub-operations carry Move Originator
AE Title and Message ID; statuses as for C-GET, 0xC511 for a handler raising.

C-CANCEL
========

The association's reader sets ``request.cancel_event`` when a C-CANCEL-RQ names the
request; ``request.cancelled`` and ``await request.wait_cancelled()`` let a handler
notice. The services stop pulling from the handler at once (a handler waiting inside
its generator is cancelled there, and the generator is closed with ``aclose``), let a
running C-STORE sub-operation finish, and answer Cancel 0xFE00 (with the counts for
C-GET and C-MOVE, Remaining being the sub-operations not started, when known).

A peer that aborts the association mid-operation ends it quietly: the generator is
closed, an outgoing C-MOVE association is aborted, and the log says so at INFO level.
"""

from __future__ import annotations

import inspect
import io
import os
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence, Sized
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import anyio

from aionetdicom import sop_classes
from aionetdicom.acse.contexts import (
    DEFAULT_TRANSFER_SYNTAXES,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NegotiatedContext,
    PresentationContext,
)
from aionetdicom.datasets import (
    DatasetError,
    DatasetTooLarge,
    decode_dataset,
    encode_dataset,
    read_file_meta,
)
from aionetdicom.dimse.command_set import (
    Command,
    CommandField,
    Priority,
    command_priority,
    make_command,
    set_if_valid,
)
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.dimse.status import Status, StatusCategory
from aionetdicom.errors import DicomNetworkError, NegotiationError
from aionetdicom.handlers import Service
from aionetdicom.services.status_rules import FAILURE_FOR, checked_status
from aionetdicom.services.storage import MAX_PRESENTATION_CONTEXTS, plan_contexts

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from aionetdicom.association import Association

__all__ = [
    "ALL_SUBOPERATIONS_FAILED",
    "CANCEL",
    "IDENTIFIER_DOES_NOT_MATCH",
    "MOVE_DESTINATION_UNKNOWN",
    "PENDING",
    "SOP_CLASS_NOT_SUPPORTED",
    "SUBOPERATIONS_WARNING",
    "EncodedIdentifier",
    "FindRequest",
    "GetRequest",
    "MoveRequest",
    "QueryRetrieveRequest",
    "RetrieveRequest",
    "StoredInstance",
    "query_retrieve_contexts",
    "retrieve_storage_contexts",
    "serve_find",
    "serve_get",
    "serve_move",
]

#: Pending: a match (C-FIND) or a progress report (C-GET, C-MOVE).
PENDING = 0xFF00
#: Matching or sub-operations terminated by a C-CANCEL (PS3.4 C.4.1.1.4, C.4.2.1.5).
CANCEL = 0xFE00
#: No handler for the SOP class: Refused, SOP class not supported (PS3.7 C.5.11).
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: The request has no identifier: Error, identifier does not match SOP class.
IDENTIFIER_DOES_NOT_MATCH = 0xA900
#: Warning: sub-operations complete, one or more failures or warnings (Tables C.4-2/3).
SUBOPERATIONS_WARNING = 0xB000
#: Every sub-operation failed: Refused, out of resources, unable to perform
#: sub-operations (the SCU reads Failure or Refused as "all unsuccessful", C.4.2.2.1).
ALL_SUBOPERATIONS_FAILED = 0xA702
#: C-MOVE: Refused, move destination unknown (PS3.4 Table C.4-2).
MOVE_DESTINATION_UNKNOWN = 0xA801

#: A deflated request identifier is not inflated beyond this many bytes (nor beyond
#: the AE's ``maximum_dataset_size``).
IDENTIFIER_INFLATE_LIMIT = 64 * 1024 * 1024
#: An identifier that cannot be decoded: "Failed: Unable to process" (Cxxx), the
#: decode-failure codes next to the handler-failure ones of FAILURE_FOR.
UNDECODABLE_IDENTIFIER = {
    Service.C_FIND: 0xC310,
    Service.C_GET: 0xC410,
    Service.C_MOVE: 0xC510,
}
#: An identifier that inflates past the limit: Refused, out of resources (PS3.4 C.4).
IDENTIFIER_TOO_LARGE = {
    Service.C_FIND: 0xA700,
    Service.C_GET: 0xA701,
    Service.C_MOVE: 0xA701,
}
#: Seconds a handler's generator gets to run its cleanup when it is closed.
CLOSE_GRACE = 5.0

_PENDING_FIND = frozenset({0xFF00, 0xFF01})
_RESPONSE_FIELDS = {
    Service.C_FIND: CommandField.C_FIND_RSP,
    Service.C_GET: CommandField.C_GET_RSP,
    Service.C_MOVE: CommandField.C_MOVE_RSP,
}
_ENCODINGS = {
    (True, True): IMPLICIT_VR_LITTLE_ENDIAN,
    (False, True): EXPLICIT_VR_LITTLE_ENDIAN,
    (False, False): EXPLICIT_VR_BIG_ENDIAN,
}


# ====================================================================== contexts


def query_retrieve_contexts(
    sop_class_uids: Iterable[str] = sop_classes.QUERY_RETRIEVE_SOP_CLASSES,
    transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
) -> list[PresentationContext]:
    """Contexts an SCP supports for C-FIND/C-GET/C-MOVE SOP classes (default: all of them).

    Pass them to ``AE(supported_contexts=...)`` or one by one to
    ``ae.add_supported_context``. See :mod:`aionetdicom.sop_classes` for narrower lists
    (``QR_SOP_CLASSES``, ``FIND_SOP_CLASSES``, ``GET_SOP_CLASSES`` ...).
    """
    return [PresentationContext(uid, tuple(transfer_syntaxes)) for uid in sop_class_uids]


def retrieve_storage_contexts(
    storage_sop_classes: Iterable[str] = sop_classes.STORAGE_SOP_CLASSES,
    transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
) -> list[PresentationContext]:
    """Storage contexts a C-GET SCP supports so the requestor may take the Storage SCP role.

    A C-GET requestor proposes the storage SOP classes with SCP/SCU role selection
    (PS3.7 D.3.3.4); these capabilities accept its SCP role, without which no C-STORE
    sub-operation can be sent back to it.
    """
    return [
        PresentationContext(uid, tuple(transfer_syntaxes), scp_role=True)
        for uid in storage_sop_classes
    ]


# ====================================================================== requests


class QueryRetrieveRequest:
    """A C-FIND, C-GET or C-MOVE request received; what the handler gets.

    ``identifier`` is decoded (with pydicom) on first access; ``raw_identifier`` holds
    the bytes as received, in the presentation context's transfer syntax.
    """

    service: ClassVar[Service]

    def __init__(
        self,
        assoc: Association,
        context: NegotiatedContext,
        command: Command,
        raw_identifier: bytes | None,
        cancel_event: anyio.Event | None = None,
    ) -> None:
        self.assoc = assoc
        self.context = context
        self.command = command
        self.raw_identifier = raw_identifier
        self.cancel_event = anyio.Event() if cancel_event is None else cancel_event
        self._identifier: Dataset | None = None

    def __repr__(self) -> str:
        name = sop_classes.sop_class_name(self.sop_class_uid)
        return f"<{type(self).__name__} message {self.message_id} {name}>"

    @property
    def message_id(self) -> int:
        """The request's Message ID."""
        value = self.command.get("MessageID")
        return value if isinstance(value, int) else 0

    @property
    def sop_class_uid(self) -> str:
        """Affected SOP Class UID: the information model ("" when missing)."""
        value = self.command.get("AffectedSOPClassUID")
        return value if isinstance(value, str) else ""

    @property
    def priority(self) -> int:
        """Priority of the request (a :class:`Priority` when it is a valid one)."""
        return command_priority(self.command)

    @property
    def transfer_syntax(self) -> str:
        """The transfer syntax of the identifiers, request and responses alike."""
        return self.context.transfer_syntax

    @property
    def requestor_ae_title(self) -> str:
        """The AE title of the peer that sent the request."""
        return self.assoc.peer_ae_title

    @property
    def identifier(self) -> Dataset:
        """The request identifier, decoded on first access (raises DatasetError)."""
        if self._identifier is None:
            if self.raw_identifier is None:
                raise DatasetError("the request has no identifier")
            limit = getattr(self.assoc.ae, "maximum_dataset_size", None)
            self._identifier = decode_dataset(
                self.raw_identifier,
                self.transfer_syntax,
                inflate_limit=min(limit or IDENTIFIER_INFLATE_LIMIT, IDENTIFIER_INFLATE_LIMIT),
            )
        return self._identifier

    @property
    def query_level(self) -> str | None:
        """Query/Retrieve Level (0008,0052) of the identifier, None when absent."""
        value = self.identifier.get("QueryRetrieveLevel")
        return str(value).strip() if value else None

    @property
    def cancelled(self) -> bool:
        """True once the peer sent C-CANCEL for this request."""
        return self.cancel_event.is_set()

    async def wait_cancelled(self) -> None:
        """Return when the peer sends C-CANCEL for this request."""
        await self.cancel_event.wait()


class FindRequest(QueryRetrieveRequest):
    """A C-FIND request received (PS3.4 C.4.1)."""

    service = Service.C_FIND


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """A file to send whose identity is already known (from an index, say).

    C-GET and C-MOVE handlers may yield these instead of paths: the SCP then plans
    the presentation contexts without opening every file first.
    """

    path: str | os.PathLike[str]
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


class RetrieveRequest(QueryRetrieveRequest):
    """A C-GET or C-MOVE request received, with the progress of its sub-operations."""

    def __init__(
        self,
        assoc: Association,
        context: NegotiatedContext,
        command: Command,
        raw_identifier: bytes | None,
        cancel_event: anyio.Event | None = None,
    ) -> None:
        super().__init__(assoc, context, command, raw_identifier, cancel_event)
        #: How many sub-operations there are in all, when the handler said so.
        self.total: int | None = None
        #: Sub-operations that completed with Success, with a Warning, and failed.
        self.completed = 0
        self.warning = 0
        self.failed = 0
        #: SOP Instance UIDs of the failed sub-operations (where known).
        self.failed_sop_instance_uids: list[str] = []

    @property
    def attempted(self) -> int:
        """Sub-operations done so far, whatever their outcome."""
        return self.completed + self.warning + self.failed

    @property
    def remaining(self) -> int | None:
        """Sub-operations not started yet; None while the total is unknown."""
        if self.total is None:
            return None
        return max(self.total - self.attempted, 0)

    def _record(self, category: StatusCategory, sop_instance_uid: str | None) -> None:
        if category is StatusCategory.SUCCESS:
            self.completed += 1
        elif category is StatusCategory.WARNING:
            self.warning += 1
        else:
            self.failed += 1
            if sop_instance_uid:
                self.failed_sop_instance_uids.append(sop_instance_uid)

    def _final_status(self) -> int:
        if not self.failed and not self.warning:
            return 0x0000
        if self.failed and not self.completed and not self.warning:
            return ALL_SUBOPERATIONS_FAILED
        return SUBOPERATIONS_WARNING


class GetRequest(RetrieveRequest):
    """A C-GET request received (PS3.4 C.4.3): instances go back on this association."""

    service = Service.C_GET


class MoveRequest(RetrieveRequest):
    """A C-MOVE request received (PS3.4 C.4.2): instances go to ``destination``."""

    service = Service.C_MOVE

    def __init__(
        self,
        assoc: Association,
        context: NegotiatedContext,
        command: Command,
        raw_identifier: bytes | None,
        cancel_event: anyio.Event | None = None,
    ) -> None:
        super().__init__(assoc, context, command, raw_identifier, cancel_event)
        #: Where the destination was found to be (set before the handler is called).
        self.destination_address: tuple[str, int] | None = None
        #: The TLS context for the destination (None: plain TCP).
        self.destination_ssl_context: ssl.SSLContext | None = None

    @property
    def destination(self) -> str:
        """Move Destination (0000,0600): the AE title to send the instances to."""
        value = self.command.get("MoveDestination")
        return value.strip() if isinstance(value, str) else ""


# ====================================================================== plumbing


class _Stop:
    """Sentinels :meth:`_Puller.next` returns instead of an item."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_END = _Stop("END")
_CANCELLED = _Stop("CANCELLED")


class _HandlerError(Exception):
    """The handler raised (already logged); the operation ends with a failure."""


async def _iterate(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def _open(request: QueryRetrieveRequest, handler: Any) -> AsyncIterator[Any]:
    """Call the handler and return an async iterator over what it yields."""
    from pydicom.dataset import Dataset

    result = handler(request)
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return _iterate(())
    if hasattr(result, "__aiter__"):
        iterator: AsyncIterator[Any] = result.__aiter__()
        return iterator
    if isinstance(result, (Dataset, str, bytes, bytearray, os.PathLike)):
        return _iterate((result,))
    if isinstance(result, Iterable):
        if isinstance(request, RetrieveRequest) and isinstance(result, Sized):
            request.total = len(result)
        return _iterate(result)
    raise TypeError(
        f"a {request.service.value} handler must return an (async) iterable, "
        f"not {type(result).__name__}"
    )


class _Puller:
    """Takes items from the handler; a C-CANCEL interrupts a pull that is waiting."""

    def __init__(self, request: QueryRetrieveRequest, items: AsyncIterator[Any]) -> None:
        self.request = request
        self.items = items
        self._scope: anyio.CancelScope | None = None

    async def watch(self) -> None:
        await self.request.cancel_event.wait()
        if self._scope is not None:
            self._scope.cancel()

    async def next(self) -> Any:
        """The next item, or ``_END`` / ``_CANCELLED``; raises _HandlerError."""
        request = self.request
        if request.cancelled:
            return _CANCELLED
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                return await self.items.__anext__()
            except StopAsyncIteration:
                return _END
            except Exception as exc:
                if request.cancelled:
                    return _CANCELLED
                request.assoc.log.error(
                    "association #%d: %s handler raised",
                    request.assoc.id,
                    request.service.value,
                    exc_info=exc,
                )
                raise _HandlerError(str(exc)) from exc
            finally:
                self._scope = None
        return _CANCELLED

    async def close(self) -> None:
        """Close the handler's generator (its ``finally`` blocks run), bounded in time."""
        aclose = getattr(self.items, "aclose", None)
        if aclose is None:
            return
        with anyio.move_on_after(CLOSE_GRACE, shield=True):
            try:
                await aclose()
            except Exception:
                self.request.assoc.log.warning(
                    "association #%d: closing the %s handler raised",
                    self.request.assoc.id,
                    self.request.service.value,
                    exc_info=True,
                )


async def _respond(
    request: QueryRetrieveRequest,
    status: int,
    identifier: bytes | None = None,
    *,
    comment: str = "",
    counts: bool = False,
    remaining: int | None = None,
) -> None:
    command = make_command(
        _RESPONSE_FIELDS[request.service], has_dataset=identifier is not None, Status=status
    )
    set_if_valid(command, "MessageIDBeingRespondedTo", request.message_id)
    set_if_valid(command, "AffectedSOPClassUID", request.sop_class_uid or None)
    if counts and isinstance(request, RetrieveRequest):
        if remaining is not None:
            command["NumberOfRemainingSuboperations"] = min(remaining, 0xFFFF)
        command["NumberOfCompletedSuboperations"] = min(request.completed, 0xFFFF)
        command["NumberOfFailedSuboperations"] = min(request.failed, 0xFFFF)
        command["NumberOfWarningSuboperations"] = min(request.warning, 0xFFFF)
    if comment and Status(status).is_failure:
        set_if_valid(command, "ErrorComment", comment[:64])
    await request.assoc.send_message(request.context.context_id, command, identifier)


def _begin(
    assoc: Association, message: AssembledMessage, kind: type[QueryRetrieveRequest]
) -> QueryRetrieveRequest | None:
    context = next((c for c in assoc.contexts if c.context_id == message.context_id), None)
    if context is None:  # the reader only passes messages on accepted contexts
        assoc.log.warning("association #%d: request on unknown context", assoc.id)
        return None
    command = message.command
    message_id = command.get("MessageID")
    events: dict[int, anyio.Event] = getattr(assoc, "_cancel_requests", {})
    event = events.get(message_id) if isinstance(message_id, int) else None
    if event is None:
        event = anyio.Event()
        if isinstance(message_id, int):
            events[message_id] = event
    raw = message.dataset if command.has_dataset and message.dataset else None
    return kind(assoc, context, command, raw, event)


def _end(request: QueryRetrieveRequest) -> None:
    events: dict[int, anyio.Event] = getattr(request.assoc, "_cancel_requests", {})
    if events.get(request.message_id) is request.cancel_event:
        del events[request.message_id]


def _lookup(request: QueryRetrieveRequest) -> Any:
    registry = getattr(request.assoc.ae, "handlers", None)
    if registry is None:
        return None
    return registry.lookup(request.service, request.sop_class_uid or None)


async def _refuse_early(request: QueryRetrieveRequest) -> Any:
    """The handler, or None after answering a request that cannot be served."""
    assoc = request.assoc
    handler = _lookup(request)
    if handler is None:
        assoc.log.warning(
            "association #%d: no %s handler for %s; answering 0x%04X",
            assoc.id,
            request.service.value,
            request.sop_class_uid,
            SOP_CLASS_NOT_SUPPORTED,
        )
        await _respond(request, SOP_CLASS_NOT_SUPPORTED, counts=True)
        return None
    if request.raw_identifier is None:
        assoc.log.warning(
            "association #%d: %s request without identifier", assoc.id, request.service.value
        )
        await _respond(
            request, IDENTIFIER_DOES_NOT_MATCH, comment="Request has no identifier", counts=True
        )
        return None
    try:
        request.identifier  # noqa: B018 - decoded now, so a bad one never reaches the handler
    except DatasetError as exc:
        too_large = isinstance(exc, DatasetTooLarge)
        status = (IDENTIFIER_TOO_LARGE if too_large else UNDECODABLE_IDENTIFIER)[request.service]
        assoc.log.warning(
            "association #%d: %s identifier refused (0x%04X): %s",
            assoc.id,
            request.service.value,
            status,
            exc,
        )
        comment = "Identifier too large" if too_large else "Identifier cannot be decoded"
        await _respond(request, status, comment=comment, counts=True)
        return None
    return handler


async def _serve(
    assoc: Association,
    message: AssembledMessage,
    kind: type[QueryRetrieveRequest],
    run: Any,
) -> None:
    request = _begin(assoc, message, kind)
    if request is None:
        return
    try:
        handler = await _refuse_early(request)
        if handler is not None:
            await run(request, handler)
    except DicomNetworkError as exc:
        assoc.log.info(
            "association #%d: %s (message %d) ended: %s",
            assoc.id,
            request.service.value,
            request.message_id,
            exc,
        )
    except anyio.get_cancelled_exc_class():
        if not assoc.is_established:
            assoc.log.info(
                "association #%d: %s (message %d) stopped: the association ended",
                assoc.id,
                request.service.value,
                request.message_id,
            )
        raise
    finally:
        _end(request)


async def _pull_with_watch(puller: _Puller, body: Any) -> Any:
    """Run ``body()`` while a watcher turns a C-CANCEL into an interrupted pull."""
    outcome: Any = None
    error: DicomNetworkError | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(puller.watch)
            try:
                outcome = await body()
            except DicomNetworkError as exc:
                error = exc
            finally:
                tg.cancel_scope.cancel()
    finally:
        await puller.close()
    if error is not None:
        raise error
    return outcome


# ====================================================================== C-FIND


@dataclass(frozen=True, slots=True)
class EncodedIdentifier:
    """A C-FIND match already encoded (a handler that writes its responses itself,
    like the index of ``qrscp``): sent as it is when ``transfer_syntax`` is the
    request's, decoded and re-encoded otherwise."""

    data: bytes
    transfer_syntax: str


def _find_item(item: Any) -> tuple[object, Dataset | EncodedIdentifier | None]:
    from pydicom.dataset import Dataset

    if isinstance(item, (Dataset, EncodedIdentifier)):
        return PENDING, item
    if isinstance(item, tuple) and len(item) == 2:
        status, identifier = item
        known = isinstance(identifier, (Dataset, EncodedIdentifier))
        return status, identifier if known else None
    if isinstance(item, int) and not isinstance(item, bool):
        return item, None
    return item, None


async def _run_find(request: QueryRetrieveRequest, handler: Any) -> None:
    assoc = request.assoc
    failure = FAILURE_FOR[Service.C_FIND]
    try:
        items = await _open(request, handler)
    except Exception:
        assoc.log.exception("association #%d: C-FIND handler raised", assoc.id)
        await _respond(request, failure, comment="C-FIND handler failed")
        return
    puller = _Puller(request, items)

    async def stream() -> tuple[int, str]:
        matches = 0
        while True:
            try:
                item = await puller.next()
            except _HandlerError:
                return failure, "C-FIND handler failed"
            if item is _END:
                return 0x0000, ""
            if item is _CANCELLED:
                assoc.log.info(
                    "association #%d: C-FIND cancelled after %d matches", assoc.id, matches
                )
                return CANCEL, ""
            status, identifier = _find_item(item)
            if isinstance(status, int) and status in _PENDING_FIND:
                if identifier is None:
                    assoc.log.warning(
                        "association #%d: C-FIND handler yielded Pending 0x%04X without a "
                        "Dataset (%r); answering 0x%04X",
                        assoc.id,
                        status,
                        item,
                        failure,
                    )
                    return failure, "Pending response without identifier"
                try:
                    data = _encoded_match(identifier, request.transfer_syntax)
                except DatasetError as exc:
                    assoc.log.warning(
                        "association #%d: C-FIND match cannot be encoded: %s", assoc.id, exc
                    )
                    return failure, "Match cannot be encoded"
                await _respond(request, status, data)
                matches += 1
                continue
            final = checked_status(Service.C_FIND, status, final=True, where="C-FIND handler")
            return final, "Invalid status from handler" if final != status else ""

    status, comment = await _pull_with_watch(puller, stream)
    await _respond(request, status, comment=comment)


def _encoded_match(identifier: Dataset | EncodedIdentifier, transfer_syntax: str) -> bytes:
    if not isinstance(identifier, EncodedIdentifier):
        return encode_dataset(identifier, transfer_syntax)
    if identifier.transfer_syntax == transfer_syntax:
        return identifier.data
    return encode_dataset(
        decode_dataset(identifier.data, identifier.transfer_syntax), transfer_syntax
    )


async def serve_find(assoc: Association, message: AssembledMessage) -> None:
    """Serve one C-FIND-RQ with the AE's C-FIND handler for its SOP class."""
    await _serve(assoc, message, FindRequest, _run_find)


# ====================================================================== C-GET / C-MOVE


def _identify(source: Any) -> tuple[str, str, str | None]:
    """(SOP Class UID, SOP Instance UID, transfer syntax or None) of an instance to send.

    Blocking for a path (reads the meta header); raises DatasetError, OSError,
    TypeError or ValueError when the instance cannot be sent.
    """
    from pydicom.dataset import Dataset

    if isinstance(source, Dataset):
        meta = getattr(source, "file_meta", None)

        def uid(keyword: str, meta_keyword: str) -> str:
            value = source.get(keyword) or (meta.get(meta_keyword) if meta is not None else None)
            if not value:
                raise ValueError(f"the dataset has no {keyword}")
            return str(value)

        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        if not syntax:
            implicit, little = source.original_encoding
            if implicit is not None and little is not None:
                syntax = _ENCODINGS.get((bool(implicit), bool(little)))
        return (
            uid("SOPClassUID", "MediaStorageSOPClassUID"),
            uid("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
            str(syntax) if syntax else None,
        )
    if isinstance(source, (bytes, bytearray, memoryview)):
        file_meta = read_file_meta(io.BytesIO(bytes(source)))
    elif isinstance(source, (str, os.PathLike)):
        file_meta = read_file_meta(source)
    else:
        raise TypeError(
            "a retrieve handler yields Datasets, paths or bytes of DICOM files, "
            f"not {type(source).__name__}"
        )
    return file_meta.sop_class_uid, file_meta.sop_instance_uid, file_meta.transfer_syntax


async def _instance_uid(source: Any) -> str | None:
    """The SOP Instance UID of ``source`` if it can be found, for the failed list."""
    if isinstance(source, StoredInstance):
        return source.sop_instance_uid
    try:
        if isinstance(source, (str, os.PathLike)):
            return (await anyio.to_thread.run_sync(_identify, source))[1]
        return _identify(source)[1]
    except (DatasetError, OSError, TypeError, ValueError, AttributeError):
        return None


def _failed_list(request: RetrieveRequest) -> bytes | None:
    """The response identifier: Failed SOP Instance UID List (0008,0058), if any failed."""
    if not request.failed_sop_instance_uids:
        return None
    from pydicom.dataset import Dataset

    ds = Dataset()
    uids = request.failed_sop_instance_uids
    ds.FailedSOPInstanceUIDList = uids[0] if len(uids) == 1 else list(uids)
    try:
        return encode_dataset(ds, request.transfer_syntax)
    except DatasetError as exc:
        request.assoc.log.warning(
            "association #%d: cannot encode the Failed SOP Instance UID List: %s",
            request.assoc.id,
            exc,
        )
        return None


async def _final(request: RetrieveRequest, status: int, comment: str = "") -> None:
    """Send the final C-GET/C-MOVE response with the counts (and the failed list)."""
    remaining = request.remaining if status == CANCEL else None
    identifier = None if status == 0x0000 else _failed_list(request)
    await _respond(request, status, identifier, comment=comment, counts=True, remaining=remaining)


async def _progress(request: RetrieveRequest) -> None:
    await _respond(request, PENDING, counts=True, remaining=request.remaining)


def _sub_priority(request: RetrieveRequest) -> int:
    """C-STORE sub-operations use the priority of the retrieve (PS3.4 C.4.2.1.2)."""
    priority = request.priority
    return priority if priority in (0, 1, 2) else int(Priority.MEDIUM)


def _control(request: RetrieveRequest, item: Any) -> tuple[bool, int | None, str]:
    """Handle an item that is not an instance: (handled, final status or None, comment)."""
    if isinstance(item, bool):
        return False, None, ""
    if isinstance(item, int):
        if item < 0:
            request.assoc.log.warning(
                "association #%d: %s handler gave a negative total %d; ignored",
                request.assoc.id,
                request.service.value,
                item,
            )
        else:
            request.total = item
        return True, None, ""
    if isinstance(item, tuple) and len(item) == 2:
        where = f"{request.service.value} handler"
        status = checked_status(request.service, item[0], final=True, where=where)
        return True, status, "Invalid status from handler" if status != item[0] else ""
    return False, None, ""


async def _run_get(request: QueryRetrieveRequest, handler: Any) -> None:
    assert isinstance(request, GetRequest)
    assoc = request.assoc
    failure = FAILURE_FOR[Service.C_GET]
    try:
        items = await _open(request, handler)
    except Exception:
        assoc.log.exception("association #%d: C-GET handler raised", assoc.id)
        await _final(request, failure, "C-GET handler failed")
        return
    puller = _Puller(request, items)

    async def run() -> tuple[int, str]:
        while True:
            try:
                item = await puller.next()
            except _HandlerError:
                return failure, "C-GET handler failed"
            if item is _END:
                return request._final_status(), ""
            if item is _CANCELLED:
                return CANCEL, ""
            handled, final, comment = _control(request, item)
            if final is not None:
                return final, comment
            if handled:
                continue
            await _get_one(request, item)
            if request.cancelled:
                return CANCEL, ""
            if request.remaining != 0:
                await _progress(request)

    status, comment = await _pull_with_watch(puller, run)
    if status == CANCEL:
        assoc.log.info(
            "association #%d: C-GET cancelled after %d sub-operations",
            assoc.id,
            request.attempted,
        )
    await _final(request, status, comment)


async def _get_one(request: GetRequest, item: Any) -> None:
    """Send one instance back with C-STORE on the request's association and count it."""
    assoc = request.assoc
    source = item.path if isinstance(item, StoredInstance) else item
    try:
        status = await assoc.store(source, priority=_sub_priority(request))
    except NegotiationError as exc:
        assoc.log.info("association #%d: C-GET sub-operation not possible: %s", assoc.id, exc)
        request._record(StatusCategory.FAILURE, await _instance_uid(item))
        return
    except (DatasetError, OSError, TypeError, ValueError) as exc:
        assoc.log.warning("association #%d: C-GET instance not sent: %s", assoc.id, exc)
        request._record(StatusCategory.FAILURE, await _instance_uid(item))
        return
    category = status.category
    if category is StatusCategory.FAILURE or category is StatusCategory.CANCEL:
        request._record(StatusCategory.FAILURE, await _instance_uid(item))
    else:
        request._record(category, None)


async def serve_get(assoc: Association, message: AssembledMessage) -> None:
    """Serve one C-GET-RQ: C-STORE what the AE's C-GET handler yields back to the peer."""
    await _serve(assoc, message, GetRequest, _run_get)


# ---------------------------------------------------------------------- C-MOVE


@dataclass(slots=True)
class _Outgoing:
    """An instance to move: what the handler yielded and what it is."""

    source: Any
    sop_class_uid: str = ""
    sop_instance_uid: str | None = None
    transfer_syntax: str | None = None
    problem: str = ""

    @classmethod
    def of(cls, item: Any) -> _Outgoing:
        if isinstance(item, StoredInstance):
            return cls(item.path, item.sop_class_uid, item.sop_instance_uid, item.transfer_syntax)
        return cls(item)


def _identify_all(outgoing: list[_Outgoing]) -> None:
    for each in outgoing:
        if each.sop_instance_uid is not None:
            continue
        try:
            each.sop_class_uid, each.sop_instance_uid, each.transfer_syntax = _identify(each.source)
        except (DatasetError, OSError, TypeError, ValueError, AttributeError) as exc:
            each.problem = str(exc) or type(exc).__name__


def _batches(outgoing: list[_Outgoing]) -> list[tuple[list[PresentationContext], list[_Outgoing]]]:
    """Instances grouped so that each group's contexts fit in one association."""
    by_class: dict[str, list[_Outgoing]] = {}
    for each in outgoing:
        by_class.setdefault(each.sop_class_uid, []).append(each)
    classes = list(by_class)
    batches = []
    for start in range(0, len(classes), MAX_PRESENTATION_CONTEXTS):
        group = classes[start : start + MAX_PRESENTATION_CONTEXTS]
        found: dict[str, list[str]] = {}
        members: list[_Outgoing] = []
        for uid in group:
            syntaxes = found.setdefault(uid, [])
            for each in by_class[uid]:
                members.append(each)
                if each.transfer_syntax and each.transfer_syntax not in syntaxes:
                    syntaxes.append(each.transfer_syntax)
        batches.append((plan_contexts(found), members))
    return batches


def _address(value: object) -> tuple[str, int, ssl.SSLContext | None] | None:
    """(host, port, ssl_context or None) from (host, port) or (host, port, ssl_context)."""
    if (
        isinstance(value, (tuple, list))
        and len(value) in (2, 3)
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
        and 0 < value[1] < 65536
    ):
        context = value[2] if len(value) == 3 else None
        if context is None or isinstance(context, ssl.SSLContext):
            return value[0], value[1], context
    return None


async def _resolve(request: MoveRequest) -> tuple[str, int, ssl.SSLContext | None] | None:
    """The destination's (host, port, TLS context or None): the AE's hook if it has
    one, else ``known_aes``.

    Raises _HandlerError when the hook raised.
    """
    ae = request.assoc.ae
    title = request.destination
    hook = getattr(ae, "move_destination_handler", None)
    if hook is not None:
        try:
            answer = hook(title, request)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:
            request.assoc.log.exception(
                "association #%d: move destination handler raised", request.assoc.id
            )
            raise _HandlerError(str(exc)) from exc
    else:
        known = getattr(ae, "known_aes", None)
        answer = None
        if isinstance(known, Mapping) and title:
            answer = known.get(title)
            if answer is None:
                answer = next(
                    (v for k, v in known.items() if isinstance(k, str) and k.strip() == title),
                    None,
                )
    if answer is None:
        return None
    address = _address(answer)
    if address is None:
        request.assoc.log.warning(
            "association #%d: move destination %r resolved to %r, not (host, port[, tls])",
            request.assoc.id,
            title,
            answer,
        )
    return address


def _originator(request: MoveRequest) -> tuple[str | None, int | None]:
    from aionetdicom.ae import validate_ae_title

    try:
        return validate_ae_title(request.requestor_ae_title), request.message_id
    except (TypeError, ValueError):
        return None, None


async def _run_move(request: QueryRetrieveRequest, handler: Any) -> None:
    assert isinstance(request, MoveRequest)
    assoc = request.assoc
    failure = FAILURE_FOR[Service.C_MOVE]
    try:
        address = await _resolve(request)
    except _HandlerError:
        await _final(request, failure, "Move destination handler failed")
        return
    if address is None:
        assoc.log.warning(
            "association #%d: C-MOVE destination %r is unknown; answering 0x%04X",
            assoc.id,
            request.destination,
            MOVE_DESTINATION_UNKNOWN,
        )
        await _final(request, MOVE_DESTINATION_UNKNOWN, "Move destination unknown")
        return
    request.destination_address = address[:2]
    request.destination_ssl_context = address[2]
    try:
        items = await _open(request, handler)
    except Exception:
        assoc.log.exception("association #%d: C-MOVE handler raised", assoc.id)
        await _final(request, failure, "C-MOVE handler failed")
        return
    puller = _Puller(request, items)

    async def collect() -> tuple[list[_Outgoing], int | None, str]:
        outgoing: list[_Outgoing] = []
        while True:
            try:
                item = await puller.next()
            except _HandlerError:
                return outgoing, failure, "C-MOVE handler failed"
            if item is _END:
                return outgoing, None, ""
            if item is _CANCELLED:
                return outgoing, CANCEL, ""
            handled, final, comment = _control(request, item)
            if final is not None:
                return outgoing, final, comment
            if not handled:
                outgoing.append(_Outgoing.of(item))

    outgoing, status, comment = await _pull_with_watch(puller, collect)
    if status is not None:
        if status == CANCEL:
            request.total = len(outgoing)
        await _final(request, status, comment)
        return
    request.total = len(outgoing)
    unknown = (each for each in outgoing if each.sop_instance_uid is None)
    if any(isinstance(each.source, (str, os.PathLike)) for each in unknown):
        await anyio.to_thread.run_sync(_identify_all, outgoing)
    else:
        _identify_all(outgoing)
    sendable = []
    for each in outgoing:
        if each.problem:
            assoc.log.warning(
                "association #%d: C-MOVE instance not sent: %s", assoc.id, each.problem
            )
            request._record(StatusCategory.FAILURE, each.sop_instance_uid)
        else:
            sendable.append(each)
    for contexts, members in _batches(sendable):
        if request.cancelled:
            break
        await _move_batch(request, address[:2], contexts, members)
    if request.cancelled and request.remaining:
        assoc.log.info(
            "association #%d: C-MOVE cancelled after %d sub-operations",
            assoc.id,
            request.attempted,
        )
        await _final(request, CANCEL)
        return
    await _final(request, request._final_status())


async def _move_batch(
    request: MoveRequest,
    address: tuple[str, int],
    contexts: list[PresentationContext],
    members: list[_Outgoing],
) -> None:
    """Send ``members`` over one new association to the destination."""
    assoc = request.assoc
    host, port = address
    originator, originator_id = _originator(request)
    async with AsyncExitStack() as stack:
        try:
            out = await stack.enter_async_context(
                assoc.ae.associate(
                    host,
                    port,
                    called_ae_title=request.destination,
                    contexts=contexts,
                    ssl_context=request.destination_ssl_context,
                )
            )
        except (DicomNetworkError, OSError, ValueError) as exc:
            assoc.log.warning(
                "association #%d: C-MOVE destination %s at %s:%d not reached: %s",
                assoc.id,
                request.destination,
                host,
                port,
                exc,
            )
            for each in members:
                request._record(StatusCategory.FAILURE, each.sop_instance_uid)
            if request.remaining:
                await _progress(request)
            return
        for each in members:
            if request.cancelled:
                return
            try:
                status = await out.store(
                    each.source,
                    priority=_sub_priority(request),
                    move_originator_ae_title=originator,
                    move_originator_message_id=originator_id,
                )
            except (NegotiationError, DatasetError, OSError, TypeError, ValueError) as exc:
                assoc.log.info("association #%d: C-MOVE sub-operation failed: %s", assoc.id, exc)
                request._record(StatusCategory.FAILURE, each.sop_instance_uid)
            except DicomNetworkError as exc:
                if not assoc.is_established:
                    raise
                # The destination went away: the rest of this batch fails.
                assoc.log.warning(
                    "association #%d: C-MOVE destination association lost: %s", assoc.id, exc
                )
                index = members.index(each)
                for rest in members[index:]:
                    request._record(StatusCategory.FAILURE, rest.sop_instance_uid)
                return
            else:
                category = status.category
                if category in (StatusCategory.SUCCESS, StatusCategory.WARNING):
                    request._record(category, None)
                else:
                    request._record(StatusCategory.FAILURE, each.sop_instance_uid)
            if request.remaining:
                await _progress(request)


async def serve_move(assoc: Association, message: AssembledMessage) -> None:
    """Serve one C-MOVE-RQ: C-STORE what the AE's C-MOVE handler yields to the destination."""
    await _serve(assoc, message, MoveRequest, _run_move)
