"""Association-requestor (SCU) side of negotiation: build the proposal, read the answer.

Pure functions over PDU values (sans-I/O); PS3.8 9.3.2-9.3.3 and PS3.7 Annex D.3.
"""

from __future__ import annotations

from collections.abc import Sequence

from aionetdicom.acse.contexts import NegotiatedContext, PresentationContext
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu.constants import AbortReason, PresentationContextResult
from aionetdicom.pdu.items import PresentationContextAC, PresentationContextRQ, RoleSelection
from aionetdicom.pdu.pdus import AAssociateAC, AAssociateRQ

#: Odd context IDs 1..255 allow at most 128 presentation contexts (PS3.8 9.3.2.2).
MAX_PRESENTATION_CONTEXTS = 128
#: The smallest useful maximum length (PS3.8 D.1): a PDV item header (6 bytes) plus
#: one byte of data. 1-6 leave no room for any data; 0 means no limit.
MIN_MAXIMUM_LENGTH = 7

_INVALID_VALUE = int(AbortReason.INVALID_PDU_PARAMETER_VALUE)
_DEFAULT_ROLES = (True, False)
_RESULTS = frozenset(int(result) for result in PresentationContextResult)


def propose(
    contexts: Sequence[PresentationContext],
) -> tuple[tuple[PresentationContextRQ, ...], tuple[RoleSelection, ...]]:
    """Number the contexts 1, 3, 5, ... and collect one role selection per abstract syntax.

    A role left None next to a set one defaults to SCU True / SCP False. Role selection is
    per abstract syntax on the wire, so contexts sharing one must not disagree.
    """
    if not contexts:
        raise ValueError("at least one presentation context must be proposed")
    if len(contexts) > MAX_PRESENTATION_CONTEXTS:
        raise ValueError(
            f"{len(contexts)} presentation contexts proposed; at most "
            f"{MAX_PRESENTATION_CONTEXTS} fit in the odd context IDs 1-255"
        )
    proposals = tuple(
        PresentationContextRQ(2 * index + 1, context.abstract_syntax, context.transfer_syntaxes)
        for index, context in enumerate(contexts)
    )
    roles: dict[str, tuple[bool, bool]] = {}
    for context in contexts:
        if context.scu_role is None and context.scp_role is None:
            continue
        wanted = (
            True if context.scu_role is None else context.scu_role,
            False if context.scp_role is None else context.scp_role,
        )
        previous = roles.setdefault(context.abstract_syntax, wanted)
        if previous != wanted:
            raise ValueError(
                f"conflicting roles proposed for {context.abstract_syntax}: "
                f"(scu={previous[0]}, scp={previous[1]}) and (scu={wanted[0]}, scp={wanted[1]})"
            )
    selections = tuple(RoleSelection(uid, scu, scp) for uid, (scu, scp) in roles.items())
    return proposals, selections


def check_maximum_length(maximum_length: int | None, what: str) -> None:
    """Raise ProtocolError (abort reason 6) for a maximum length of 1 to 6 bytes, which
    leaves no room for a PDV carrying data, so that no message could ever be sent."""
    if maximum_length and maximum_length < MIN_MAXIMUM_LENGTH:
        raise ProtocolError(
            f"{what} announces a maximum PDU length of {maximum_length} bytes, too small "
            f"for any PDV (at least {MIN_MAXIMUM_LENGTH}, or 0 for no limit)",
            abort_reason=_INVALID_VALUE,
        )


def _first_by_uid(selections: Sequence[RoleSelection]) -> dict[str, RoleSelection]:
    by_uid: dict[str, RoleSelection] = {}
    for selection in selections:
        by_uid.setdefault(selection.sop_class_uid, selection)
    return by_uid


def _index_answers(rq: AAssociateRQ, ac: AAssociateAC) -> dict[int, PresentationContextAC]:
    proposed = {context.context_id: context for context in rq.presentation_contexts}
    answers: dict[int, PresentationContextAC] = {}
    for answer in ac.presentation_contexts:
        context_id = answer.context_id
        if context_id not in proposed:
            raise ProtocolError(
                f"A-ASSOCIATE-AC answers presentation context {context_id}, which was not proposed",
                abort_reason=_INVALID_VALUE,
            )
        if context_id in answers:
            raise ProtocolError(
                f"A-ASSOCIATE-AC answers presentation context {context_id} twice",
                abort_reason=_INVALID_VALUE,
            )
        if answer.result not in _RESULTS:
            raise ProtocolError(
                f"A-ASSOCIATE-AC gives unknown result {answer.result} "
                f"for presentation context {context_id}",
                abort_reason=_INVALID_VALUE,
            )
        if answer.accepted and answer.transfer_syntax not in proposed[context_id].transfer_syntaxes:
            raise ProtocolError(
                f"A-ASSOCIATE-AC accepts presentation context {context_id} with transfer "
                f"syntax {answer.transfer_syntax!r}, which was not proposed for it",
                abort_reason=_INVALID_VALUE,
            )
        answers[context_id] = answer
    return answers


def _requestor_roles(
    abstract_syntax: str,
    proposals: dict[str, RoleSelection],
    replies: dict[str, RoleSelection],
) -> tuple[bool, bool]:
    # PS3.7 D.3.3.4: a reply only confirms what was proposed; no reply means default roles.
    proposal = proposals.get(abstract_syntax)
    reply = replies.get(abstract_syntax)
    if proposal is None or reply is None:
        return _DEFAULT_ROLES
    return (proposal.scu_role and reply.scu_role, proposal.scp_role and reply.scp_role)


def interpret_acceptance(rq: AAssociateRQ, ac: AAssociateAC) -> tuple[NegotiatedContext, ...]:
    """The negotiated contexts, in proposal order, from our request and the peer's answer.

    Raises ProtocolError (abort reason 6) when the answer names a context or a transfer
    syntax we never proposed, or its maximum length cannot carry a PDV; an unanswered
    context counts as rejected with no reason.
    """
    check_maximum_length(ac.user_information.maximum_length, "A-ASSOCIATE-AC")
    answers = _index_answers(rq, ac)
    proposals = _first_by_uid(rq.user_information.role_selections)
    replies = _first_by_uid(ac.user_information.role_selections)
    negotiated: list[NegotiatedContext] = []
    for context in rq.presentation_contexts:
        answer = answers.get(context.context_id)
        result = (
            PresentationContextResult.NO_REASON
            if answer is None
            else PresentationContextResult(answer.result)
        )
        if result == PresentationContextResult.ACCEPTANCE and answer is not None:
            scu, scp = _requestor_roles(context.abstract_syntax, proposals, replies)
            syntax = answer.transfer_syntax
        else:
            scu, scp, syntax = False, False, ""
        negotiated.append(
            NegotiatedContext(context.context_id, context.abstract_syntax, syntax, result, scu, scp)
        )
    return tuple(negotiated)


def negotiated_maximum_length(peer_maximum_length: int | None, cap: int) -> int:
    """The largest P-DATA-TF PDU length we may send: the peer's limit bounded by ``cap``.

    Per PS3.8 Annex D.1 the peer's maximum-length-received bounds the variable field of
    the P-DATA-TF PDUs it receives (the PDU-length value), so each PDV item inside still
    costs a 6-byte header (4 length, 1 context ID, 1 control). 0 or absent: no limit.
    """
    if cap < 1:
        raise ValueError(f"maximum length cap must be positive, not {cap}")
    if not peer_maximum_length:
        return cap
    return min(peer_maximum_length, cap)
