"""Association-acceptor (SCP) side of negotiation: vet the request and build the answers.

Pure functions over PDU values (sans-I/O); PS3.8 9.3.2-9.3.4 and PS3.7 Annex D.3.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from aionetdicom.acse.contexts import (
    DEFAULT_TRANSFER_SYNTAXES,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NegotiatedContext,
    PresentationContext,
)
from aionetdicom.acse.requestor import MAX_PRESENTATION_CONTEXTS, check_maximum_length
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu.constants import (
    APPLICATION_CONTEXT_NAME,
    AbortReason,
    ACSERejectReason,
    PresentationContextResult,
    RejectResult,
    RejectSource,
    UserRejectReason,
)
from aionetdicom.pdu.items import (
    AsynchronousOperationsWindow,
    PresentationContextAC,
    PresentationContextRQ,
    RoleSelection,
)
from aionetdicom.pdu.pdus import AAssociateRJ, AAssociateRQ

_INVALID_VALUE = int(AbortReason.INVALID_PDU_PARAMETER_VALUE)
_MAX_WINDOW = 0xFFFF
#: Our own bound on outstanding operations where a window says 0 (unlimited): the
#: most we answer in an A-ASSOCIATE-AC, and the most we run or invoke at once.
OPERATIONS_WINDOW_CAP = 128


def check_request(
    rq: AAssociateRQ,
    *,
    ae_title: str,
    require_called_ae_title: bool = False,
    allowed_calling_ae_titles: Collection[str] | None = None,
) -> AAssociateRJ | None:
    """The A-ASSOCIATE-RJ this request deserves (PS3.8 9.3.4), or None when acceptable.

    Checked in order: protocol version, application context, called AE, calling AE.
    AE titles are compared without their space padding.
    """
    if not rq.protocol_version & 0x0001:
        return AAssociateRJ(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_PROVIDER_ACSE,
            ACSERejectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
        )
    if rq.application_context_name != APPLICATION_CONTEXT_NAME:
        return AAssociateRJ(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            UserRejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED,
        )
    if require_called_ae_title and rq.called_ae_title.strip(" ") != ae_title.strip(" "):
        return AAssociateRJ(
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            UserRejectReason.CALLED_AE_NOT_RECOGNIZED,
        )
    if allowed_calling_ae_titles is not None:
        allowed = {title.strip(" ") for title in allowed_calling_ae_titles}
        if rq.calling_ae_title.strip(" ") not in allowed:
            return AAssociateRJ(
                RejectResult.PERMANENT,
                RejectSource.SERVICE_USER,
                UserRejectReason.CALLING_AE_NOT_RECOGNIZED,
            )
    return None


def validate_contexts(rq: AAssociateRQ) -> None:
    """Raise ProtocolError (abort reason 6) when the proposed contexts are malformed, or
    the maximum length announced cannot carry a PDV (1 to 6 bytes).

    PS3.8 9.3.4 has no reject reason for a malformed proposal, so the server answers it
    with A-ABORT invalid-PDU-parameter-value instead of an A-ASSOCIATE-RJ.
    """
    check_maximum_length(rq.user_information.maximum_length, "A-ASSOCIATE-RQ")
    contexts = rq.presentation_contexts
    if not contexts:
        raise ProtocolError(
            "A-ASSOCIATE-RQ proposes no presentation context", abort_reason=_INVALID_VALUE
        )
    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        raise ProtocolError(
            f"A-ASSOCIATE-RQ proposes {len(contexts)} presentation contexts; "
            f"at most {MAX_PRESENTATION_CONTEXTS} are possible",
            abort_reason=_INVALID_VALUE,
        )
    seen: set[int] = set()
    for context in contexts:
        context_id = context.context_id
        if not 1 <= context_id <= 255 or context_id % 2 == 0:
            raise ProtocolError(
                f"presentation context ID {context_id} is not an odd number from 1 to 255",
                abort_reason=_INVALID_VALUE,
            )
        if context_id in seen:
            raise ProtocolError(
                f"presentation context ID {context_id} is proposed more than once",
                abort_reason=_INVALID_VALUE,
            )
        seen.add(context_id)


@dataclass(frozen=True, slots=True)
class Negotiation:
    """What to put in the A-ASSOCIATE-AC and what the association will then allow."""

    ac_contexts: tuple[PresentationContextAC, ...]
    role_replies: tuple[RoleSelection, ...]
    contexts: tuple[NegotiatedContext, ...]


@dataclass(frozen=True, slots=True)
class _Capability:
    """Our merged support for one abstract syntax."""

    transfer_syntaxes: tuple[str, ...]
    scu_role: bool | None
    scp_role: bool | None


def _merge_role(first: bool | None, second: bool | None) -> bool | None:
    # Allowed if any entry allows it; None only when no entry says anything.
    if first is None:
        return second
    if second is None:
        return first
    return first or second


def _capabilities(supported: Sequence[PresentationContext]) -> dict[str, _Capability]:
    merged: dict[str, _Capability] = {}
    for entry in supported:
        known = merged.get(entry.abstract_syntax)
        if known is None:
            merged[entry.abstract_syntax] = _Capability(
                entry.transfer_syntaxes, entry.scu_role, entry.scp_role
            )
            continue
        extra = tuple(ts for ts in entry.transfer_syntaxes if ts not in known.transfer_syntaxes)
        merged[entry.abstract_syntax] = _Capability(
            known.transfer_syntaxes + extra,
            _merge_role(known.scu_role, entry.scu_role),
            _merge_role(known.scp_role, entry.scp_role),
        )
    return merged


def _role_reply(proposal: RoleSelection | None, capability: _Capability) -> RoleSelection | None:
    """Our answer to the requestor's role proposal, or None to leave the default roles."""
    if proposal is None or (capability.scu_role is None and capability.scp_role is None):
        return None
    allow_scu = True if capability.scu_role is None else capability.scu_role
    allow_scp = False if capability.scp_role is None else capability.scp_role
    return RoleSelection(
        proposal.sop_class_uid, proposal.scu_role and allow_scu, proposal.scp_role and allow_scp
    )


def _requestor_roles(reply: RoleSelection | None, capability: _Capability) -> tuple[bool, bool]:
    if reply is not None:
        return reply.scu_role, reply.scp_role
    # Default roles (PS3.7 D.3.3.4): requestor SCU only, if we allow it that role.
    return (capability.scu_role is not False, False)


def negotiate_contexts(
    proposed: Sequence[PresentationContextRQ],
    supported: Sequence[PresentationContext],
    role_selections: Sequence[RoleSelection] = (),
    *,
    accept_any_abstract_syntax: bool = False,
    any_transfer_syntaxes: Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
) -> Negotiation:
    """Answer every proposed context (PS3.8 9.3.3.2) and the role proposals (PS3.7 D.3.3.4).

    The transfer syntax chosen is the first of OUR list the requestor offered. A context
    whose roles leave the requestor neither SCU nor SCP is rejected by the user (1).
    """
    capabilities = _capabilities(supported)
    any_capability = _Capability(tuple(any_transfer_syntaxes), None, None)
    proposals: dict[str, RoleSelection] = {}
    for selection in role_selections:
        proposals.setdefault(selection.sop_class_uid, selection)
    replies: dict[str, RoleSelection | None] = {}
    answers: list[PresentationContextAC] = []
    outcomes: list[NegotiatedContext] = []
    for context in proposed:
        uid = context.abstract_syntax
        capability = capabilities.get(uid)
        if capability is None and accept_any_abstract_syntax:
            capability = any_capability
        syntax = ""
        scu = scp = False
        if capability is None:
            result = PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED
        else:
            if uid not in replies:
                replies[uid] = _role_reply(proposals.get(uid), capability)
            offered = context.transfer_syntaxes
            scu, scp = _requestor_roles(replies[uid], capability)
            ours = capability.transfer_syntaxes
            if scp and not scu:
                # We only send on this context (C-GET sub-operations): an uncompressed
                # syntax lets us send whatever we hold, converting if need be.
                ours = _uncompressed_first(ours)
            chosen = next((ts for ts in ours if ts in offered), None)
            if chosen is None:
                result = PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED
            elif not (scu or scp):
                result = PresentationContextResult.USER_REJECTION
            else:
                result = PresentationContextResult.ACCEPTANCE
                syntax = chosen
        if result != PresentationContextResult.ACCEPTANCE:
            scu = scp = False
        answers.append(PresentationContextAC(context.context_id, result, syntax))
        outcomes.append(NegotiatedContext(context.context_id, uid, syntax, result, scu, scp))
    role_replies = tuple(reply for reply in replies.values() if reply is not None)
    return Negotiation(tuple(answers), role_replies, tuple(outcomes))


_UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN)


def _uncompressed_first(syntaxes: Sequence[str]) -> tuple[str, ...]:
    plain = tuple(ts for ts in _UNCOMPRESSED if ts in syntaxes)
    return plain + tuple(ts for ts in syntaxes if ts not in plain)


def _check_window_cap(value: int, what: str) -> None:
    if not 0 <= value <= _MAX_WINDOW:
        raise ValueError(f"{what} must be 0 (unlimited) to {_MAX_WINDOW}, not {value}")


def _min_limit(first: int, second: int) -> int:
    """The tighter of two window limits where 0 means unlimited."""
    if first == 0:
        return second
    if second == 0:
        return first
    return min(first, second)


def negotiate_window(
    proposed: AsynchronousOperationsWindow | None,
    *,
    maximum_invoked: int,
    maximum_performed: int,
) -> AsynchronousOperationsWindow | None:
    """Our A-ASSOCIATE-AC answer to the requestor's window (PS3.7 D.3.3.3), or None.

    Both AC values limit the REQUESTOR: invoked = operations it may invoke (we perform
    them, so capped by our ``maximum_performed``); performed = operations it must perform
    (we invoke them, capped by our ``maximum_invoked``). Each is at most the proposed
    value; 0 means unlimited on either side, but we never answer more than
    :data:`OPERATIONS_WINDOW_CAP` (nor 0). No proposal: no answer, both windows are 1.
    """
    _check_window_cap(maximum_invoked, "maximum_invoked")
    _check_window_cap(maximum_performed, "maximum_performed")
    if proposed is None:
        return None
    return AsynchronousOperationsWindow(
        _min_limit(_min_limit(proposed.maximum_invoked, maximum_performed), OPERATIONS_WINDOW_CAP),
        _min_limit(_min_limit(proposed.maximum_performed, maximum_invoked), OPERATIONS_WINDOW_CAP),
    )


class OperationsWindow(NamedTuple):
    """Outstanding-operation limits for one side of an association; 0 means unlimited."""

    #: How many operations we may have invoked and not yet answered.
    may_invoke: int
    #: How many operations the peer may have outstanding at us.
    must_perform: int


def effective_window(
    rq_window: AsynchronousOperationsWindow | None,
    ac_window: AsynchronousOperationsWindow | None,
    *,
    requestor: bool,
) -> OperationsWindow:
    """The window in force for the requestor (``requestor=True``) or the acceptor.

    Per PS3.7 D.3.3.3 the AC item gives the requestor's limits (invoked, performed),
    each no more than proposed; the acceptor's are the same pair swapped. Without both
    items the synchronous default (1, 1) applies; 0 means unlimited.
    """
    if rq_window is None or ac_window is None:
        return OperationsWindow(1, 1)
    invoked = _min_limit(rq_window.maximum_invoked, ac_window.maximum_invoked)
    performed = _min_limit(rq_window.maximum_performed, ac_window.maximum_performed)
    if requestor:
        return OperationsWindow(invoked, performed)
    return OperationsWindow(performed, invoked)
