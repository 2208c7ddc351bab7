"""The DIMSE-N operations (PS3.7 10.1, 10.3) as SCU, and the SCP side of each.

SCU: ``Association.n_get / n_set / n_action / n_create / n_delete / n_event_report``
each send one request and return an :class:`NResponse` (status, decoded data set, the
response command). Statuses are values, never exceptions: a failure such as 0x0112
(No such SOP instance) comes back as a :class:`Status` whose category is FAILURE.

The SOP classes of the print management service class (PS3.4 Annex H) travel on the
presentation context of a Meta SOP Class: pass it as ``meta_sop_class`` and the request
goes on that context while its command still names the SOP class itself::

    film_session = "1.2.840.10008.5.1.1.1"
    grayscale_meta = "1.2.840.10008.5.1.1.9"
    created = await assoc.n_create(film_session, attributes=ds, meta_sop_class=grayscale_meta)
    uid = created.affected_sop_instance_uid        # assigned by the SCP

N-EVENT-REPORT requests that reach an SCU on its own association (storage commitment
results, print job and printer events, …) go to a handler registered per association
or for every association of an AE::

    @assoc.on_event_report
    async def on_report(request: EventReportRequest) -> int:
        results = request.event_information          # decoded on first use
        return 0x0000

    ae.handle_dimse(CommandField.N_EVENT_REPORT_RQ, event_report_service(on_report))

The command builders (:func:`n_get_request` … :func:`n_response`) are pure functions
that validate their input and build the command set without any I/O.

SCP: :func:`n_service` turns ``handler(request: NRequest) -> status | (status, dataset)``
into a request handler for ``AE.handle_dimse`` that answers with the matching ``N-*-RSP``;
:mod:`aionetdicom.services.normalized_scp` finds handlers per SOP class in the AE's
handler registry and adds the service-class helpers (storage commitment, …).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union, cast

import anyio

from aionetdicom.acse.contexts import NegotiatedContext, is_valid_uid
from aionetdicom.datasets import DatasetError, decode_dataset, encode_dataset
from aionetdicom.dimse.command_set import Command, CommandField, CommandValue, make_command
from aionetdicom.dimse.status import Status
from aionetdicom.errors import ProtocolError
from aionetdicom.handlers import Service
from aionetdicom.services.status_rules import FAILURE_FOR, checked_status

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from aionetdicom.association import Association, RequestHandler
    from aionetdicom.dimse.fragments import AssembledMessage

__all__ = [
    "N_REQUESTS",
    "PROCESSING_FAILURE",
    "AttributeIdentifier",
    "EventReportHandler",
    "EventReportRequest",
    "HandlerResult",
    "NHandler",
    "NRequest",
    "NResponse",
    "NormalizedOperations",
    "answer_request",
    "attribute_tag",
    "attribute_tags",
    "event_report_service",
    "n_action_request",
    "n_create_request",
    "n_delete_request",
    "n_event_report_request",
    "n_get_request",
    "n_response",
    "n_service",
    "n_set_request",
]

#: Status sent when a local handler raised or gave an unusable result (PS3.7 C.4.2).
PROCESSING_FAILURE = 0x0110
#: Largest size a received deflated N-service data set may inflate to.
MAX_INFLATED_LENGTH = 64 * 1024 * 1024

#: The DIMSE-N request command fields.
N_REQUESTS: frozenset[CommandField] = frozenset(
    {
        CommandField.N_EVENT_REPORT_RQ,
        CommandField.N_GET_RQ,
        CommandField.N_SET_RQ,
        CommandField.N_ACTION_RQ,
        CommandField.N_CREATE_RQ,
        CommandField.N_DELETE_RQ,
    }
)
# Requests whose SOP class/instance travel as Affected (the others use Requested).
_AFFECTED_IN_REQUEST = frozenset({CommandField.N_EVENT_REPORT_RQ, CommandField.N_CREATE_RQ})

#: One attribute for an N-GET: a tag as int (``0x00100010``), as (group, element), or a
#: DICOM keyword (``"PatientName"``).
AttributeIdentifier = Union[int, tuple[int, int], str]
#: What a handler returns: a status, or a status and the data set to send with it; for
#: N-CREATE also (status, data set, UID of the instance created) when the requestor
#: named no instance and the handler chose the UID itself.
HandlerResult = Union[
    int, tuple[int, Union["Dataset", None]], tuple[int, Union["Dataset", None], str]
]
#: An SCP-side handler of DIMSE-N requests (see :func:`n_service`).
NHandler = Callable[["NRequest"], Awaitable[HandlerResult]]
#: A handler of N-EVENT-REPORT requests received (see :func:`event_report_service`).
EventReportHandler = Callable[["EventReportRequest"], Awaitable[HandlerResult]]


# --------------------------------------------------------------------------- validation


def _check_uid(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not is_valid_uid(value):
        raise ValueError(
            f"{what} {value!r} is not a valid UID (digits and dots, at most 64 characters)"
        )
    return value


def _check_us(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} does not fit in 16 bits (0..0xFFFF)")
    return value


def _check_dataset(value: object, what: str, *, required: bool = False) -> Dataset | None:
    from pydicom.dataset import Dataset

    if value is None:
        if required:
            raise ValueError(f"{what} is required")
        return None
    if not isinstance(value, Dataset):
        raise TypeError(f"{what} must be a pydicom Dataset, not {type(value).__name__}")
    if required and len(value) == 0:
        raise ValueError(f"{what} must hold at least one attribute")
    return value


def attribute_tag(identifier: object) -> int:
    """The tag (``group << 16 | element``) of one N-GET attribute identifier.

    Takes an int tag, a (group, element) pair or a DICOM keyword; raises TypeError or
    ValueError with the reason otherwise.
    """
    if isinstance(identifier, bool):
        raise TypeError("an attribute identifier must be a tag or keyword, not a bool")
    if isinstance(identifier, int):
        if not 0 <= identifier <= 0xFFFF_FFFF:
            raise ValueError(f"attribute tag {identifier:#x} does not fit in 32 bits")
        return int(identifier)
    if isinstance(identifier, str):
        from pydicom.datadict import tag_for_keyword

        tag = tag_for_keyword(identifier)
        if tag is None:
            raise ValueError(f"{identifier!r} is not a DICOM attribute keyword")
        return int(tag)
    if isinstance(identifier, tuple):
        if len(identifier) != 2:
            raise ValueError(f"attribute tag {identifier!r} must be a (group, element) pair")
        group, element = identifier
        for part in identifier:
            if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part <= 0xFFFF:
                raise ValueError(f"attribute tag {identifier!r}: {part!r} is not a 16-bit int")
        return int(group) << 16 | int(element)
    raise TypeError(
        "an attribute identifier must be an int tag, a (group, element) tuple or a "
        f"keyword, not {type(identifier).__name__}"
    )


def attribute_tags(identifiers: Sequence[AttributeIdentifier]) -> tuple[int, ...]:
    """The tags of an N-GET Attribute Identifier List, in the order given."""
    if isinstance(identifiers, (str, bytes)):
        raise TypeError("attributes must be a sequence of identifiers, not a single string")
    return tuple(attribute_tag(each) for each in identifiers)


# --------------------------------------------------------------------------- builders


def n_get_request(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    attributes: Sequence[AttributeIdentifier] = (),
) -> Command:
    """N-GET-RQ (PS3.7 10.3.2.1); an empty ``attributes`` asks for every attribute."""
    tags = attribute_tags(attributes)
    elements: dict[str, CommandValue] = {
        "MessageID": _check_us(message_id, "message ID"),
        "RequestedSOPClassUID": _check_uid(sop_class_uid, "SOP class UID"),
        "RequestedSOPInstanceUID": _check_uid(sop_instance_uid, "SOP instance UID"),
    }
    if tags:
        elements["AttributeIdentifierList"] = tags
    return make_command(CommandField.N_GET_RQ, has_dataset=False, **elements)


def n_set_request(message_id: int, sop_class_uid: str, sop_instance_uid: str) -> Command:
    """N-SET-RQ (PS3.7 10.3.3.1); the Modification List data set always follows."""
    return make_command(
        CommandField.N_SET_RQ,
        has_dataset=True,
        MessageID=_check_us(message_id, "message ID"),
        RequestedSOPClassUID=_check_uid(sop_class_uid, "SOP class UID"),
        RequestedSOPInstanceUID=_check_uid(sop_instance_uid, "SOP instance UID"),
    )


def n_action_request(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    action_type_id: int,
    *,
    has_dataset: bool = False,
) -> Command:
    """N-ACTION-RQ (PS3.7 10.3.4.1); ``has_dataset`` when Action Information follows."""
    return make_command(
        CommandField.N_ACTION_RQ,
        has_dataset=has_dataset,
        MessageID=_check_us(message_id, "message ID"),
        RequestedSOPClassUID=_check_uid(sop_class_uid, "SOP class UID"),
        RequestedSOPInstanceUID=_check_uid(sop_instance_uid, "SOP instance UID"),
        ActionTypeID=_check_us(action_type_id, "action type ID"),
    )


def n_create_request(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str | None = None,
    *,
    has_dataset: bool = False,
) -> Command:
    """N-CREATE-RQ (PS3.7 10.3.5.1); without an instance UID the SCP assigns one."""
    elements: dict[str, CommandValue] = {
        "MessageID": _check_us(message_id, "message ID"),
        "AffectedSOPClassUID": _check_uid(sop_class_uid, "SOP class UID"),
    }
    if sop_instance_uid is not None:
        elements["AffectedSOPInstanceUID"] = _check_uid(sop_instance_uid, "SOP instance UID")
    return make_command(CommandField.N_CREATE_RQ, has_dataset=has_dataset, **elements)


def n_delete_request(message_id: int, sop_class_uid: str, sop_instance_uid: str) -> Command:
    """N-DELETE-RQ (PS3.7 10.3.6.1); never has a data set."""
    return make_command(
        CommandField.N_DELETE_RQ,
        MessageID=_check_us(message_id, "message ID"),
        RequestedSOPClassUID=_check_uid(sop_class_uid, "SOP class UID"),
        RequestedSOPInstanceUID=_check_uid(sop_instance_uid, "SOP instance UID"),
    )


def n_event_report_request(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    event_type_id: int,
    *,
    has_dataset: bool = False,
) -> Command:
    """N-EVENT-REPORT-RQ (PS3.7 10.3.1.1); ``has_dataset`` when Event Information follows."""
    return make_command(
        CommandField.N_EVENT_REPORT_RQ,
        has_dataset=has_dataset,
        MessageID=_check_us(message_id, "message ID"),
        AffectedSOPClassUID=_check_uid(sop_class_uid, "SOP class UID"),
        AffectedSOPInstanceUID=_check_uid(sop_instance_uid, "SOP instance UID"),
        EventTypeID=_check_us(event_type_id, "event type ID"),
    )


def _text(command: Command, keyword: str) -> str | None:
    value = command.get(keyword)
    return value if isinstance(value, str) and value else None


def _number(command: Command, keyword: str) -> int | None:
    value = command.get(keyword)
    return value if isinstance(value, int) else None


def _request_field(command: Command) -> CommandField:
    value = command.get("CommandField")
    if isinstance(value, int) and value in N_REQUESTS:
        return CommandField(value)
    raise ValueError(f"not a DIMSE-N request: CommandField {value!r}")


def _request_uids(command: Command) -> tuple[str | None, str | None]:
    """(SOP class, SOP instance) of an N request, Requested or Affected as its kind uses."""
    if _request_field(command) in _AFFECTED_IN_REQUEST:
        return _text(command, "AffectedSOPClassUID"), _text(command, "AffectedSOPInstanceUID")
    return _text(command, "RequestedSOPClassUID"), _text(command, "RequestedSOPInstanceUID")


def n_response(
    request: Command,
    status: int,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    has_dataset: bool = False,
) -> Command:
    """The ``N-*-RSP`` answering ``request`` (PS3.7 10.3), with ``status``.

    Affected SOP Class/Instance UID default to those the request names; Event Type ID
    and Action Type ID are echoed from the request when it has them.
    """
    rq_field = _request_field(request)
    request_class, request_instance = _request_uids(request)
    elements: dict[str, CommandValue] = {
        "MessageIDBeingRespondedTo": _number(request, "MessageID") or 0,
        "Status": _check_us(status, "status"),
    }
    sop_class = sop_class_uid if sop_class_uid is not None else request_class
    if sop_class is not None:
        elements["AffectedSOPClassUID"] = _check_uid(sop_class, "SOP class UID")
    instance = sop_instance_uid if sop_instance_uid is not None else request_instance
    if instance is not None:
        elements["AffectedSOPInstanceUID"] = _check_uid(instance, "SOP instance UID")
    for keyword in ("EventTypeID", "ActionTypeID"):
        value = _number(request, keyword)
        if value is not None:
            elements[keyword] = value
    return make_command(rq_field | 0x8000, has_dataset=has_dataset, **elements)


# --------------------------------------------------------------------------- SCU side


@dataclass(frozen=True)
class NResponse:
    """The outcome of a DIMSE-N operation; unpacks as ``status, dataset``.

    ``affected_sop_class_uid`` and ``affected_sop_instance_uid`` are the response's,
    else those of the request (for N-CREATE without an instance UID: the UID the SCP
    assigned, None if it named none). ``event_type_id`` / ``action_type_id`` are the
    response's, else the request's, for N-EVENT-REPORT / N-ACTION.
    """

    status: Status
    #: The decoded Attribute List, Event Reply or Action Reply, if the peer sent one.
    dataset: Dataset | None
    #: The response command set as received.
    command: Command
    affected_sop_class_uid: str | None = None
    affected_sop_instance_uid: str | None = None
    event_type_id: int | None = None
    action_type_id: int | None = None

    def __iter__(self) -> Iterator[Any]:
        yield self.status
        yield self.dataset

    @property
    def message_id_being_responded_to(self) -> int | None:
        """The Message ID of the request this answers."""
        return _number(self.command, "MessageIDBeingRespondedTo")


def _first(value: int | None, fallback: int | None) -> int | None:
    return fallback if value is None else value


def _interpret(
    request: Command, context: NegotiatedContext, message: AssembledMessage
) -> NResponse:
    rq_field = _request_field(request)
    expected = CommandField(rq_field | 0x8000)
    command = message.command
    got = command.get("CommandField")
    if got != expected:
        raise ProtocolError(f"expected an {expected.label} but the peer answered with {got!r}")
    status_value = command.get("Status")
    if not isinstance(status_value, int):
        raise ProtocolError(f"the peer's {expected.label} has no Status")
    status = Status(status_value, rq_field.label.removesuffix("-RQ"))
    dataset = None
    if command.has_dataset and message.dataset:
        try:
            dataset = decode_dataset(
                message.dataset, context.transfer_syntax, inflate_limit=MAX_INFLATED_LENGTH
            )
        except DatasetError as exc:
            raise DatasetError(
                f"the {expected.label} (status {status!r}) carries an undecodable data set: {exc}"
            ) from exc
    request_class, request_instance = _request_uids(request)
    return NResponse(
        status=status,
        dataset=dataset,
        command=command,
        affected_sop_class_uid=_text(command, "AffectedSOPClassUID") or request_class,
        affected_sop_instance_uid=_text(command, "AffectedSOPInstanceUID") or request_instance,
        event_type_id=_first(_number(command, "EventTypeID"), _number(request, "EventTypeID")),
        action_type_id=_first(_number(command, "ActionTypeID"), _number(request, "ActionTypeID")),
    )


class NormalizedOperations:
    """DIMSE-N methods of :class:`Association` (mixed into it).

    Each takes ``meta_sop_class`` (the presentation context to use, for SOP classes
    negotiated through a Meta SOP Class) and ``timeout`` (seconds to wait for the
    response instead of the association's DIMSE timeout; on expiry the association is
    aborted and :class:`DIMSETimeout` raised). A SOP class without an accepted context
    raises :class:`NegotiationError` before anything is sent.
    """

    def _as_association(self) -> Association:
        # The mixin is only ever used as a base of Association.
        return cast("Association", self)

    async def _n_operation(
        self,
        command: Command,
        meta_sop_class: str | None,
        dataset: Dataset | None,
        timeout: float | None,
    ) -> NResponse:
        """Send ``command`` (built with a placeholder Message ID) and await its response."""
        assoc = self._as_association()
        sop_class, _ = _request_uids(command)
        if meta_sop_class is not None:
            _check_uid(meta_sop_class, "meta SOP class UID")
        assert sop_class is not None
        context = assoc.context_for(meta_sop_class or sop_class)
        data = None if dataset is None else encode_dataset(dataset, context.transfer_syntax)
        message_id = assoc.next_message_id()
        command["MessageID"] = message_id
        what = CommandField(_request_field(command) | 0x8000).label
        async with assoc.expect_responses(message_id) as responses:
            await assoc.send_message(context.context_id, command, data)
            message = await assoc.receive_response(responses, what, timeout)
        return _interpret(command, context, message)

    async def n_get(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        attributes: Sequence[AttributeIdentifier] = (),
        *,
        meta_sop_class: str | None = None,
        timeout: float | None = None,
    ) -> NResponse:
        """N-GET: the values of ``attributes`` (tags or keywords; none = all) of an instance."""
        command = n_get_request(0, sop_class_uid, sop_instance_uid, attributes)
        return await self._n_operation(command, meta_sop_class, None, timeout)

    async def n_set(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        modification: Dataset,
        *,
        meta_sop_class: str | None = None,
        timeout: float | None = None,
    ) -> NResponse:
        """N-SET: change an instance's attributes to the values in ``modification``."""
        _check_dataset(modification, "modification list", required=True)
        command = n_set_request(0, sop_class_uid, sop_instance_uid)
        return await self._n_operation(command, meta_sop_class, modification, timeout)

    async def n_action(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        action_type_id: int,
        action_information: Dataset | None = None,
        *,
        meta_sop_class: str | None = None,
        timeout: float | None = None,
    ) -> NResponse:
        """N-ACTION: ask the peer to perform action ``action_type_id`` on an instance."""
        info = _check_dataset(action_information, "action information")
        command = n_action_request(
            0, sop_class_uid, sop_instance_uid, action_type_id, has_dataset=info is not None
        )
        return await self._n_operation(command, meta_sop_class, info, timeout)

    async def n_create(
        self,
        sop_class_uid: str,
        sop_instance_uid: str | None = None,
        attributes: Dataset | None = None,
        *,
        meta_sop_class: str | None = None,
        timeout: float | None = None,
    ) -> NResponse:
        """N-CREATE: create an instance; its UID is the response's ``affected_sop_instance_uid``.

        Without ``sop_instance_uid`` the SCP assigns the UID.
        """
        values = _check_dataset(attributes, "attribute list")
        command = n_create_request(
            0, sop_class_uid, sop_instance_uid, has_dataset=values is not None
        )
        return await self._n_operation(command, meta_sop_class, values, timeout)

    async def n_delete(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        *,
        meta_sop_class: str | None = None,
        timeout: float | None = None,
    ) -> NResponse:
        """N-DELETE: delete an instance."""
        command = n_delete_request(0, sop_class_uid, sop_instance_uid)
        return await self._n_operation(command, meta_sop_class, None, timeout)

    async def n_event_report(
        self,
        sop_class_uid: str,
        sop_instance_uid: str,
        event_type_id: int,
        event_information: Dataset | None = None,
        *,
        meta_sop_class: str | None = None,
        timeout: float | None = None,
    ) -> NResponse:
        """N-EVENT-REPORT: report event ``event_type_id`` of an instance to the peer.

        Either side of an association may send it, e.g. a storage commitment SCP
        reporting results on the association the SCU opened.
        """
        info = _check_dataset(event_information, "event information")
        command = n_event_report_request(
            0, sop_class_uid, sop_instance_uid, event_type_id, has_dataset=info is not None
        )
        return await self._n_operation(command, meta_sop_class, info, timeout)

    def on_event_report(self, handler: EventReportHandler) -> EventReportHandler:
        """Answer the N-EVENT-REPORT requests the peer sends on this association.

        Usable as a decorator. It takes precedence over the AE's handler, which an
        application sets for all its associations with
        ``ae.handle_dimse(CommandField.N_EVENT_REPORT_RQ, event_report_service(handler))``.
        Without either, the AE answers 0x0211 (Unrecognized operation).
        """
        assoc = self._as_association()
        assoc.request_handlers[CommandField.N_EVENT_REPORT_RQ] = event_report_service(handler)
        return handler


# --------------------------------------------------------------------------- received


def _context_of(assoc: Association, context_id: int) -> NegotiatedContext:
    for context in assoc.contexts:
        if context.context_id == context_id and context.accepted:
            return context
    raise ProtocolError(f"message on presentation context {context_id}, which is not accepted")


def _decode_received(raw: bytes | None, context: NegotiatedContext) -> Dataset | None:
    if not raw:
        return None
    return decode_dataset(raw, context.transfer_syntax, inflate_limit=MAX_INFLATED_LENGTH)


_R = TypeVar("_R", bound="NRequest")


@dataclass(eq=False)
class NRequest:
    """A DIMSE-N request received by an SCP, as handed to its handler.

    ``sop_class_uid`` / ``sop_instance_uid`` are the Requested or Affected UIDs,
    whichever the request kind carries. For an N-CREATE without an instance UID,
    ``sop_instance_uid`` is a fresh UID (``instance_uid_assigned`` is True): the handler
    creates the instance under it, or returns ``(status, dataset, uid)`` to name the UID
    it chose instead; the response names the created instance.

    A handler may set ``error_comment`` and ``error_id`` before it returns a status
    other than Success: they travel in the response as Error Comment (0000,0902) and
    Error ID (0000,0903), as some service classes require (e.g. PS3.4 F.7.2.2.4).
    """

    assoc: Association
    context: NegotiatedContext
    command: Command
    #: The data set bytes as received, in the context's transfer syntax.
    raw_dataset: bytes | None
    sop_class_uid: str
    sop_instance_uid: str
    instance_uid_assigned: bool = False
    #: Error Comment (0000,0902) for a non-Success response (ASCII, cut to 64 characters).
    error_comment: str | None = None
    #: Error ID (0000,0903) for a non-Success response.
    error_id: int | None = None
    #: The status of the response once it was sent; None before, or if sending failed.
    answered_status: int | None = field(default=None, init=False)
    _decoded: list[Dataset | None] = field(default_factory=list, init=False, repr=False)
    _answered: anyio.Event | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_message(cls: type[_R], assoc: Association, message: AssembledMessage) -> _R:
        """Wrap a received ``N-*-RQ`` message."""
        context = _context_of(assoc, message.context_id)
        sop_class, instance = _request_uids(message.command)
        assigned = False
        if instance is None and _request_field(message.command) is CommandField.N_CREATE_RQ:
            from pydicom.uid import generate_uid

            instance = str(generate_uid(prefix=None))
            assigned = True
        raw = message.dataset if message.command.has_dataset else None
        return cls(assoc, context, message.command, raw, sop_class or "", instance or "", assigned)

    @property
    def command_field(self) -> CommandField:
        """Which DIMSE-N request this is (``CommandField.N_GET_RQ`` …)."""
        return _request_field(self.command)

    @property
    def service(self) -> Service:
        """Which DIMSE-N service this is (``Service.N_GET`` …)."""
        service = Service.for_request(self.command_field)
        assert service is not None
        return service

    @property
    def message_id(self) -> int:
        """The request's Message ID."""
        return _number(self.command, "MessageID") or 0

    @property
    def attribute_identifiers(self) -> tuple[int, ...]:
        """N-GET: the requested tags (empty: every attribute)."""
        value = self.command.get("AttributeIdentifierList", ())
        return value if isinstance(value, tuple) else ()

    @property
    def action_type_id(self) -> int | None:
        """N-ACTION: the Action Type ID."""
        return _number(self.command, "ActionTypeID")

    @property
    def event_type_id(self) -> int | None:
        """N-EVENT-REPORT: the Event Type ID."""
        return _number(self.command, "EventTypeID")

    @property
    def dataset(self) -> Dataset | None:
        """The request's data set (decoded on first use; DatasetError if malformed)."""
        if not self._decoded:
            self._decoded.append(_decode_received(self.raw_dataset, self.context))
        return self._decoded[0]

    async def wait_answered(self) -> int | None:
        """Wait until the response was sent (or failed to be); return ``answered_status``.

        For work a handler starts that must follow its response, such as a storage
        commitment result that the requestor expects after the N-ACTION-RSP.
        """
        if self._answered is None:
            self._answered = anyio.Event()
        await self._answered.wait()
        return self.answered_status

    def _mark_answered(self, status: int | None) -> None:
        self.answered_status = status
        if self._answered is None:
            self._answered = anyio.Event()
        self._answered.set()


@dataclass(eq=False)
class EventReportRequest(NRequest):
    """An N-EVENT-REPORT request received, as handed to an :data:`EventReportHandler`.

    The same as :class:`NRequest`, with the names PS3.7 10.1.1 uses.
    """

    @property
    def affected_sop_class_uid(self) -> str:
        """The Affected SOP Class UID (also ``sop_class_uid``)."""
        return self.sop_class_uid

    @property
    def affected_sop_instance_uid(self) -> str:
        """The Affected SOP Instance UID (also ``sop_instance_uid``)."""
        return self.sop_instance_uid

    @property
    def event_information(self) -> Dataset | None:
        """The Event Information (decoded on first use; DatasetError if malformed)."""
        return self.dataset


def _check_result(result: object, *, creating: bool) -> tuple[int, Dataset | None, str | None]:
    """(status, reply data set, created instance UID) of a handler's result, or raise."""
    if isinstance(result, tuple):
        if creating and len(result) == 3:
            status, dataset, uid = result
            return (
                _check_us(status, "status"),
                _check_dataset(dataset, "reply data set"),
                _check_uid(uid, "created SOP instance UID"),
            )
        if len(result) != 2:
            shapes = "status, (status, dataset)"
            if creating:
                shapes += " or (status, dataset, instance UID)"
            raise TypeError(f"a handler must return {shapes}, not {result!r}")
        status, dataset = result
        return _check_us(status, "status"), _check_dataset(dataset, "reply data set"), None
    return _check_us(result, "status"), None, None


async def answer_request(
    handler: Callable[[Any], Awaitable[HandlerResult]], request: NRequest
) -> None:
    """Run ``handler(request)`` and send the ``N-*-RSP`` with what it returned.

    The status goes through :func:`checked_status` (a status the service does not
    allow becomes 0x0110 Processing failure); a handler that raises or returns
    something unusable gets 0x0110 sent and its exception logged. The response names
    the Affected SOP Class/Instance UID and carries the reply data set in the context's
    transfer syntax.
    """
    assoc = request.assoc
    service = request.service
    label = service.value
    failure = FAILURE_FOR[service]
    context = request.context
    try:
        status, reply, created = _check_result(
            await handler(request), creating=service is Service.N_CREATE
        )
        if created is not None and created != request.sop_instance_uid:
            if not request.instance_uid_assigned:
                raise ValueError(
                    f"the requestor named instance {request.sop_instance_uid}; the handler "
                    f"may not create {created} instead"
                )
            request.sop_instance_uid = created
    except Exception:
        assoc.log.exception(
            "association #%d: %s handler raised or returned an unusable result; answering 0x%04X",
            assoc.id,
            label,
            failure,
        )
        status, reply = failure, None
    status = checked_status(service, status, where=f"{label} handler")
    data = None
    if reply is not None:
        try:
            data = encode_dataset(reply, context.transfer_syntax)
        except DatasetError:
            assoc.log.exception(
                "association #%d: %s reply data set cannot be encoded", assoc.id, label
            )
            status, data = failure, None
    instance: str | None = request.sop_instance_uid or None
    if request.instance_uid_assigned and Status(status).is_failure:
        instance = None  # a failed N-CREATE names no instance the SCP made up
    try:
        response = n_response(
            request.command,
            status,
            sop_class_uid=request.sop_class_uid or None,
            sop_instance_uid=instance,
            has_dataset=data is not None,
        )
        if status != 0x0000:
            if request.error_comment is not None:
                response["ErrorComment"] = request.error_comment[:64]
            if request.error_id is not None:
                response["ErrorID"] = _check_us(request.error_id, "error ID")
    except (TypeError, ValueError):
        assoc.log.exception("association #%d: cannot build the %s response", assoc.id, label)
        response, data = n_response(request.command, failure), None
    sent: int | None = None
    try:
        await assoc.send_message(context.context_id, response, data)
        sent = _number(response, "Status")
    finally:
        request._mark_answered(sent)


def n_service(handler: NHandler) -> RequestHandler:
    """An SCP request handler (for ``AE.handle_dimse``) of the DIMSE-N requests.

    ``handler(request: NRequest)`` returns a status, or (status, data set), or for
    N-CREATE (status, data set, created instance UID); the service answers with the
    matching ``N-*-RSP`` (see :func:`answer_request`). Most applications register handlers
    per SOP class in the AE's handler registry instead, served by
    :func:`aionetdicom.services.normalized_scp.serve_normalized`.
    """

    async def serve(assoc: Association, message: AssembledMessage) -> None:
        try:
            _request_field(message.command)
        except ValueError:
            assoc.log.warning(
                "association #%d: n_service got a non-DIMSE-N request %r", assoc.id, message.command
            )
            return
        await answer_request(handler, NRequest.from_message(assoc, message))

    return serve


def event_report_service(handler: EventReportHandler) -> RequestHandler:
    """A request handler answering N-EVENT-REPORT-RQ with the status ``handler`` returns.

    Register it on one association with ``assoc.on_event_report(handler)`` or for every
    association of an AE with
    ``ae.handle_dimse(CommandField.N_EVENT_REPORT_RQ, event_report_service(handler))``.
    ``handler`` returns a status or (status, Event Reply data set); if it raises,
    0x0110 (Processing failure) is sent and the exception logged.
    """

    async def serve(assoc: Association, message: AssembledMessage) -> None:
        await answer_request(handler, EventReportRequest.from_message(assoc, message))

    return serve
