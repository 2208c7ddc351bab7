"""Verification service class (PS3.4 Annex A): C-ECHO as SCU and SCP.

As SCP (:func:`serve_echo`, the AE's default C-ECHO service) the answer is Success, or
the status of the handler registered with ``@ae.on_echo`` (looked up in
``assoc.ae.handlers``, per SOP class if one was given). A status the C-ECHO response
cannot carry (:func:`~aionetdicom.services.status_rules.checked_status`), or a handler
that raised, gives 0x0110 Processing failure
(:data:`~aionetdicom.services.status_rules.FAILURE_FOR`), with a warning or the
traceback in the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aionetdicom.acse.contexts import VERIFICATION_SOP_CLASS
from aionetdicom.dimse.command_set import Command, CommandField, make_command
from aionetdicom.dimse.fragments import AssembledMessage
from aionetdicom.dimse.status import Status
from aionetdicom.handlers import Service
from aionetdicom.services.status_rules import FAILURE_FOR, checked_status

if TYPE_CHECKING:
    from aionetdicom.association import Association

#: C-ECHO status when the local echo handler raised: processing failure (PS3.7 C.4.1).
PROCESSING_FAILURE = FAILURE_FOR[Service.C_ECHO]


@dataclass(frozen=True, slots=True)
class EchoRequest:
    """A C-ECHO request received by an SCP, as handed to its echo handler."""

    assoc: Association
    context_id: int
    command: Command

    @property
    def message_id(self) -> int:
        """The request's Message ID."""
        value = self.command.get("MessageID")
        return value if isinstance(value, int) else 0


async def echo(assoc: Association, *, timeout: float | None = None) -> Status:
    """Send C-ECHO on ``assoc`` and return the peer's status."""
    context = assoc.context_for(VERIFICATION_SOP_CLASS)
    command = make_command(
        CommandField.C_ECHO_RQ,
        MessageID=assoc.next_message_id(),
        AffectedSOPClassUID=VERIFICATION_SOP_CLASS,
    )
    message_id = command["MessageID"]
    assert isinstance(message_id, int)
    async with assoc.expect_responses(message_id) as responses:
        await assoc.send_message(context.context_id, command)
        response = await assoc.receive_response(responses, "C-ECHO response", timeout)
    status = response.command.get("Status")
    return Status(status if isinstance(status, int) else PROCESSING_FAILURE)


async def serve_echo(assoc: Association, message: AssembledMessage) -> None:
    """Answer a C-ECHO request with the status of the AE's echo handler (Success by default)."""
    command = message.command
    status = 0x0000
    sop_class = command.get("AffectedSOPClassUID")
    handler = assoc.ae.handlers.lookup(
        Service.C_ECHO, sop_class if isinstance(sop_class, str) else None
    )
    if handler is not None:
        try:
            result = await handler(EchoRequest(assoc, message.context_id, command))
        except Exception:
            assoc.log.exception(
                "association #%d: echo handler raised; answering 0x%04X",
                assoc.id,
                PROCESSING_FAILURE,
            )
            status = PROCESSING_FAILURE
        else:
            status = checked_status(
                Service.C_ECHO, result, where=f"association #{assoc.id}: echo handler"
            )
    response = make_command(
        CommandField.C_ECHO_RSP,
        MessageIDBeingRespondedTo=command.get("MessageID", 0),
        AffectedSOPClassUID=command.get("AffectedSOPClassUID", VERIFICATION_SOP_CLASS),
        Status=status,
    )
    await assoc.send_message(message.context_id, response)
