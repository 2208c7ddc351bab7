"""The C-STORE SCP of an AE: each C-STORE-RQ goes to the store handler for its SOP class.

:func:`serve_store` is the AE's default C-STORE service. It looks the handler up in
``assoc.ae.handlers`` by the request's Affected SOP Class UID (a handler registered
for that SOP class, else the one for every SOP class), hands it a
:class:`~aionetdicom.services.storage.StoreRequest` and answers with the status it
returns. The statuses the service chooses itself:

* no handler for the SOP class: 0x0122 "Refused: SOP Class not supported". PS3.4
  B.2.3 (Table B.2-1) defines only the Storage-specific codes (A7xx, A9xx, Cxxx,
  B000/B006/B007) and leaves the general ones to PS3.7, whose C-STORE status
  (9.1.1.1.9, Annex C) includes 0x0122 for exactly this; 0x0211 "Unrecognized
  operation" would claim that C-STORE itself is unknown. A warning is logged;
* the handler returned something that is not a valid C-STORE status
  (:func:`~aionetdicom.services.status_rules.checked_status`), or raised: the
  standard failure of the service, :data:`FAILURE_FOR[Service.C_STORE]
  <aionetdicom.services.status_rules.FAILURE_FOR>` (0xC211, in the Cxxx "Error:
  Cannot understand" range), with the traceback in the log;
* the handler raised :class:`~aionetdicom.services.storage.InvalidSOPInstanceUID`
  (``save_to`` with a UID that cannot name a file): 0x0117 "Invalid SOP Instance";
  a full disk (``ENOSPC``, ``EDQUOT``) or ``MemoryError``: 0xA700 "Refused: Out of
  Resources";
* the handler raised :class:`~aionetdicom.services.storage.DatasetMismatch`
  (``save_to``/``verify_uids``: the data set's SOP Class/Instance UIDs are not the
  command's): 0xA900 "Error: Data Set does not match SOP Class";
* the request carries no data set: the standard failure, Error Comment "No data set";
* the handler raised :class:`~aionetdicom.datasets.DatasetError` (the data set cannot
  be decoded, e.g. sequences nested too deep): the standard failure 0xC211, in the
  range "Error: Cannot understand"; :class:`~aionetdicom.datasets.DatasetTooLarge` (a
  Deflated data set inflating past ``AE.maximum_dataset_size``): 0xA700 "Refused: Out
  of Resources". Both are the peer's doing, so they are logged as warnings, without a
  traceback.

A streaming handler (``@ae.on_store(streaming=True)``) runs while the data set arrives;
the response is sent only once all of it has been received.

A handler that runs past ``AE.handler_timeout`` is cancelled by the association and
answered with 0xC211 (see :mod:`aionetdicom.association`).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from aionetdicom.datasets import DatasetError, DatasetTooLarge
from aionetdicom.dimse.command_set import Command, CommandField, make_command, set_if_valid
from aionetdicom.dimse.status import Status
from aionetdicom.errors import DicomNetworkError
from aionetdicom.handlers import Service
from aionetdicom.services.status_rules import FAILURE_FOR, checked_status
from aionetdicom.services.storage import (
    DATASET_MISMATCH,
    INVALID_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    DatasetMismatch,
    InvalidSOPInstanceUID,
    StoreHandler,
    StoreRequest,
)

if TYPE_CHECKING:
    from aionetdicom.acse.contexts import NegotiatedContext
    from aionetdicom.association import Association, RequestHandler
    from aionetdicom.dimse.fragments import AssembledMessage

__all__ = [
    "SOP_CLASS_NOT_SUPPORTED",
    "STORE_FAILURE",
    "answer_store",
    "handler_service",
    "serve_store",
]

#: "Refused: SOP Class not supported" (PS3.7 Annex C): no handler for the SOP class.
SOP_CLASS_NOT_SUPPORTED = 0x0122
#: The standard C-STORE failure: the handler raised, overran or gave no valid status.
STORE_FAILURE = FAILURE_FOR[Service.C_STORE]

_OUT_OF_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _failure_for(assoc: Association, exc: Exception, message_id: int) -> tuple[int, str]:
    """The status and Error Comment for an exception a store handler raised."""
    if isinstance(exc, InvalidSOPInstanceUID):
        assoc.log.warning("association #%d: C-STORE refused: %s", assoc.id, exc)
        return INVALID_SOP_INSTANCE, "Invalid SOP Instance UID"
    if isinstance(exc, DatasetMismatch):
        assoc.log.warning("association #%d: C-STORE refused: %s", assoc.id, exc)
        return DATASET_MISMATCH, "Data Set does not match SOP Class"
    if isinstance(exc, DatasetTooLarge):
        assoc.log.warning("association #%d: C-STORE refused: %s", assoc.id, exc)
        return OUT_OF_RESOURCES, "Data set too large"
    if isinstance(exc, DatasetError):
        assoc.log.warning("association #%d: C-STORE data set not understood: %s", assoc.id, exc)
        return STORE_FAILURE, "Data set cannot be decoded"
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _OUT_OF_SPACE):
        assoc.log.error("association #%d: C-STORE out of resources: %s", assoc.id, exc)
        return OUT_OF_RESOURCES, "Out of resources"
    if isinstance(exc, DicomNetworkError) and not assoc.is_established:
        # The association ended under the handler (e.g. aborted while a streamed data
        # set arrived): nothing will be answered, and it is no fault of the handler.
        assoc.log.info("association #%d: C-STORE not completed: %s", assoc.id, exc)
        return STORE_FAILURE, "The association ended"
    assoc.log.exception(
        "association #%d: store handler raised (message ID %d); answering 0x%04X",
        assoc.id,
        message_id,
        STORE_FAILURE,
    )
    return STORE_FAILURE, "Storage handler failed"


def _text(command: Command, keyword: str) -> str:
    value = command.get(keyword)
    return value if isinstance(value, str) else ""


async def serve_store(assoc: Association, message: AssembledMessage) -> None:
    """Answer one C-STORE-RQ with the status of the AE's handler for its SOP class."""
    command = message.command
    context = _context_of(assoc, message)
    sop_class = _text(command, "AffectedSOPClassUID")
    if not sop_class and context is not None:
        sop_class = context.abstract_syntax
    elif context is not None and sop_class != context.abstract_syntax:
        assoc.log.warning(
            "association #%d: C-STORE-RQ for %s on the presentation context of %s",
            assoc.id,
            sop_class,
            context.abstract_syntax,
        )
    handler = assoc.ae.handlers.lookup(Service.C_STORE, sop_class or None)
    await answer_store(assoc, message, handler)


def _context_of(assoc: Association, message: AssembledMessage) -> NegotiatedContext | None:
    return next((c for c in assoc.contexts if c.context_id == message.context_id), None)


async def answer_store(
    assoc: Association, message: AssembledMessage, handler: StoreHandler | None
) -> None:
    """Run ``handler`` for a C-STORE-RQ and send the C-STORE-RSP with its status.

    The response goes out only after the whole data set arrived (a streaming handler
    may return early; the rest is then read and dropped).
    """
    command = message.command
    message_id = command.get("MessageID")
    message_id = message_id if isinstance(message_id, int) else 0
    context = _context_of(assoc, message)
    comment = ""
    request: StoreRequest | None = None
    if handler is None:
        assoc.log.warning(
            "association #%d: no store handler for SOP class %s; answering 0x%04X "
            "(SOP class not supported)",
            assoc.id,
            _text(command, "AffectedSOPClassUID") or "(none)",
            SOP_CLASS_NOT_SUPPORTED,
        )
        status, comment = SOP_CLASS_NOT_SUPPORTED, "No handler for this SOP Class"
    elif (message.dataset is None and message.stream is None) or context is None:
        assoc.log.warning("association #%d: C-STORE-RQ without a data set", assoc.id)
        status, comment = STORE_FAILURE, "No data set"
    else:
        request = StoreRequest(assoc, context, command, message.dataset, stream=message.stream)
        try:
            result = await handler(request)
        except Exception as exc:
            status, comment = _failure_for(assoc, exc, message_id)
        else:
            status = checked_status(
                Service.C_STORE, result, where=f"association #{assoc.id}: store handler"
            )
            if status == STORE_FAILURE and result != STORE_FAILURE:
                comment = "Storage handler gave no valid status"
    if message.stream is not None and not message.stream.complete:
        message.stream.discard()
        await message.stream.wait_finished()
    response = make_command(CommandField.C_STORE_RSP, Status=status)
    set_if_valid(response, "MessageIDBeingRespondedTo", message_id)
    set_if_valid(response, "AffectedSOPClassUID", command.get("AffectedSOPClassUID"))
    set_if_valid(response, "AffectedSOPInstanceUID", command.get("AffectedSOPInstanceUID"))
    if comment and Status(status).is_failure:
        response["ErrorComment"] = comment
    await assoc.send_message(message.context_id, response)


def handler_service(handler: StoreHandler, *, streaming: bool = False) -> RequestHandler:
    """A DIMSE request handler (for ``handle_dimse`` or ``assoc.request_handlers``)
    answering every C-STORE-RQ with ``handler``; see :func:`answer_store`."""

    async def serve(assoc: Association, message: AssembledMessage) -> None:
        await answer_store(assoc, message, handler)

    if streaming:
        serve.accepts_stream = _always  # type: ignore[attr-defined]
    return serve


def _always(assoc: Association, command: Command) -> bool:
    return True
