"""Requestor-side negotiation: presentation context values, proposals, reading the AC."""

from __future__ import annotations

import pytest

from aionetdicom.acse import (
    DEFAULT_TRANSFER_SYNTAXES,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION,
    VERIFICATION_SOP_CLASS,
    NegotiatedContext,
    PresentationContext,
    interpret_acceptance,
    is_valid_uid,
    negotiated_maximum_length,
    propose,
)
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu import (
    AAssociateAC,
    AAssociateRQ,
    PresentationContextAC,
    PresentationContextResult,
    RoleSelection,
    UserInformation,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


# --- PresentationContext / NegotiatedContext ---------------------------------------------


def test_presentation_context_defaults() -> None:
    context = PresentationContext(CT)
    assert context.transfer_syntaxes == DEFAULT_TRANSFER_SYNTAXES
    assert DEFAULT_TRANSFER_SYNTAXES == ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert context.scu_role is None
    assert context.scp_role is None


def test_presentation_context_list_becomes_tuple() -> None:
    context = PresentationContext(CT, [IMPLICIT_VR_LITTLE_ENDIAN])  # type: ignore[arg-type]
    assert context.transfer_syntaxes == (IMPLICIT_VR_LITTLE_ENDIAN,)


def test_verification_constant() -> None:
    assert len(VERIFICATION) == 1
    assert VERIFICATION[0] == PresentationContext(VERIFICATION_SOP_CLASS)
    assert VERIFICATION_SOP_CLASS == "1.2.840.10008.1.1"


@pytest.mark.parametrize(
    ("abstract", "syntaxes", "message"),
    [
        ("", DEFAULT_TRANSFER_SYNTAXES, "must not be empty"),
        (CT, (), "no transfer syntax"),
        ("1.2.03", DEFAULT_TRANSFER_SYNTAXES, "not a valid UID"),
        ("1.2.", DEFAULT_TRANSFER_SYNTAXES, "not a valid UID"),
        ("1..2", DEFAULT_TRANSFER_SYNTAXES, "not a valid UID"),
        ("1.2.a", DEFAULT_TRANSFER_SYNTAXES, "not a valid UID"),
        (" 1.2", DEFAULT_TRANSFER_SYNTAXES, "not a valid UID"),
        ("1." + "2" * 63, DEFAULT_TRANSFER_SYNTAXES, "not a valid UID"),
        (CT, ("1.2.840.10008.1.2.01",), "not a valid UID"),
        (CT, ("",), "must not be empty"),
        (CT, (IMPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN), "duplicate"),
    ],
)
def test_presentation_context_validation(
    abstract: str, syntaxes: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PresentationContext(abstract, syntaxes)


def test_presentation_context_rejects_single_string() -> None:
    with pytest.raises(TypeError, match="not a string"):
        PresentationContext(CT, IMPLICIT_VR_LITTLE_ENDIAN)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("0", True),
        ("1.0.3", True),
        ("1.2.840.10008.1.2.4.50", True),
        ("1." + "2" * 62, True),
        ("1." + "2" * 63, False),
        ("01.2", False),
        ("1.2.00", False),
        ("", False),
        ("1.2.3\x00", False),
    ],
)
def test_is_valid_uid(uid: str, valid: bool) -> None:
    assert is_valid_uid(uid) is valid


def test_negotiated_context_accepted() -> None:
    ok = NegotiatedContext(
        1, CT, IMPLICIT_VR_LITTLE_ENDIAN, PresentationContextResult.ACCEPTANCE, True, False
    )
    rejected = NegotiatedContext(3, CT, "", PresentationContextResult.USER_REJECTION, False, False)
    assert ok.accepted
    assert not rejected.accepted


# --- propose ----------------------------------------------------------------------------


def test_propose_assigns_odd_ids_in_order() -> None:
    contexts, roles = propose(
        [PresentationContext(CT), PresentationContext(MR, (EXPLICIT_VR_LITTLE_ENDIAN,))]
    )
    assert [c.context_id for c in contexts] == [1, 3]
    assert contexts[0].abstract_syntax == CT
    assert contexts[0].transfer_syntaxes == DEFAULT_TRANSFER_SYNTAXES
    assert contexts[1].transfer_syntaxes == (EXPLICIT_VR_LITTLE_ENDIAN,)
    assert roles == ()


def test_propose_128_contexts_reaches_id_255() -> None:
    contexts, _ = propose([PresentationContext(CT)] * 128)
    assert contexts[-1].context_id == 255
    assert len({c.context_id for c in contexts}) == 128


def test_propose_rejects_empty_and_too_many() -> None:
    with pytest.raises(ValueError, match="at least one"):
        propose([])
    with pytest.raises(ValueError, match="129 presentation contexts"):
        propose([PresentationContext(CT)] * 129)


def test_propose_role_selection_defaults_unset_role() -> None:
    _, roles = propose(
        [
            PresentationContext(CT, scp_role=True),
            PresentationContext(MR, scu_role=False),
            PresentationContext(VERIFICATION_SOP_CLASS),
        ]
    )
    assert roles == (RoleSelection(CT, True, True), RoleSelection(MR, False, False))


def test_propose_one_role_selection_per_abstract_syntax() -> None:
    _, roles = propose(
        [
            PresentationContext(CT, (EXPLICIT_VR_LITTLE_ENDIAN,), scu_role=False, scp_role=True),
            PresentationContext(CT, (IMPLICIT_VR_LITTLE_ENDIAN,), scu_role=False, scp_role=True),
            PresentationContext(CT, (EXPLICIT_VR_BIG_ENDIAN,)),
        ]
    )
    assert roles == (RoleSelection(CT, False, True),)


def test_propose_conflicting_roles() -> None:
    with pytest.raises(ValueError, match="conflicting roles"):
        propose(
            [
                PresentationContext(CT, scu_role=True, scp_role=True),
                PresentationContext(CT, scp_role=False),
            ]
        )


# --- interpret_acceptance ---------------------------------------------------------------


def _rq(
    *contexts: PresentationContext, roles: tuple[RoleSelection, ...] | None = None
) -> AAssociateRQ:
    proposals, proposed_roles = propose(contexts)
    return AAssociateRQ(
        "PEER",
        "ME",
        proposals,
        UserInformation(
            maximum_length=16384,
            role_selections=proposed_roles if roles is None else roles,
        ),
    )


def _ac(*answers: PresentationContextAC, roles: tuple[RoleSelection, ...] = ()) -> AAssociateAC:
    return AAssociateAC("PEER", "ME", answers, UserInformation(role_selections=roles))


ACCEPT = PresentationContextResult.ACCEPTANCE


def test_interpret_acceptance_in_proposal_order() -> None:
    rq = _rq(PresentationContext(CT), PresentationContext(MR))
    ac = _ac(
        PresentationContextAC(3, PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED),
        PresentationContextAC(1, ACCEPT, IMPLICIT_VR_LITTLE_ENDIAN),
    )
    first, second = interpret_acceptance(rq, ac)
    assert first == NegotiatedContext(1, CT, IMPLICIT_VR_LITTLE_ENDIAN, ACCEPT, True, False)
    assert second == NegotiatedContext(
        3, MR, "", PresentationContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, False, False
    )
    assert isinstance(second.result, PresentationContextResult)


def test_interpret_acceptance_ignores_ts_of_rejected_context() -> None:
    rq = _rq(PresentationContext(CT))
    ac = _ac(PresentationContextAC(1, 4, "9.9.9"))
    (context,) = interpret_acceptance(rq, ac)
    assert context.result == PresentationContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED
    assert context.transfer_syntax == ""


def test_interpret_acceptance_missing_answer_is_no_reason() -> None:
    rq = _rq(PresentationContext(CT), PresentationContext(MR))
    ac = _ac(PresentationContextAC(1, ACCEPT, EXPLICIT_VR_LITTLE_ENDIAN))
    _, missing = interpret_acceptance(rq, ac)
    assert missing.result == PresentationContextResult.NO_REASON
    assert not missing.accepted


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (PresentationContextAC(5, ACCEPT, IMPLICIT_VR_LITTLE_ENDIAN), "not proposed"),
        (PresentationContextAC(2, ACCEPT, IMPLICIT_VR_LITTLE_ENDIAN), "not proposed"),
        (PresentationContextAC(1, ACCEPT, EXPLICIT_VR_BIG_ENDIAN), "not proposed for it"),
        (PresentationContextAC(1, ACCEPT, ""), "not proposed for it"),
        (PresentationContextAC(1, 7), "unknown result 7"),
    ],
)
def test_interpret_acceptance_protocol_errors(answer: PresentationContextAC, message: str) -> None:
    rq = _rq(PresentationContext(CT), PresentationContext(MR))
    with pytest.raises(ProtocolError, match=message) as info:
        interpret_acceptance(rq, _ac(answer))
    assert info.value.abort_reason == 6


def test_interpret_acceptance_duplicate_answer() -> None:
    rq = _rq(PresentationContext(CT))
    answer = PresentationContextAC(1, ACCEPT, IMPLICIT_VR_LITTLE_ENDIAN)
    with pytest.raises(ProtocolError, match="twice") as info:
        interpret_acceptance(rq, _ac(answer, answer))
    assert info.value.abort_reason == 6


@pytest.mark.parametrize(
    ("proposed", "reply", "expected"),
    [
        # Acceptor accepts both proposed roles.
        ((True, True), (True, True), (True, True)),
        # Acceptor turns down the SCP proposal.
        ((True, True), (True, False), (True, False)),
        # SCP only, accepted.
        ((False, True), (False, True), (False, True)),
        # Acceptor "accepts" roles we never proposed: ignored.
        ((False, True), (True, True), (False, True)),
        ((True, False), (True, True), (True, False)),
        # Everything turned down: the requestor has no role.
        ((False, True), (False, False), (False, False)),
        # No reply: default roles, whatever we proposed.
        ((False, True), None, (True, False)),
        ((True, True), None, (True, False)),
    ],
)
def test_interpret_acceptance_roles(
    proposed: tuple[bool, bool],
    reply: tuple[bool, bool] | None,
    expected: tuple[bool, bool],
) -> None:
    rq = _rq(PresentationContext(CT, scu_role=proposed[0], scp_role=proposed[1]))
    replies = () if reply is None else (RoleSelection(CT, *reply),)
    ac = _ac(PresentationContextAC(1, ACCEPT, IMPLICIT_VR_LITTLE_ENDIAN), roles=replies)
    (context,) = interpret_acceptance(rq, ac)
    assert (context.scu_role, context.scp_role) == expected


def test_interpret_acceptance_reply_without_proposal_is_ignored() -> None:
    rq = _rq(PresentationContext(CT))
    ac = _ac(
        PresentationContextAC(1, ACCEPT, IMPLICIT_VR_LITTLE_ENDIAN),
        roles=(RoleSelection(CT, False, True),),
    )
    (context,) = interpret_acceptance(rq, ac)
    assert (context.scu_role, context.scp_role) == (True, False)


def test_interpret_acceptance_roles_apply_per_abstract_syntax() -> None:
    rq = _rq(
        PresentationContext(CT, (EXPLICIT_VR_LITTLE_ENDIAN,), scu_role=True, scp_role=True),
        PresentationContext(CT, (IMPLICIT_VR_LITTLE_ENDIAN,)),
        PresentationContext(MR, scu_role=True, scp_role=True),
    )
    ac = _ac(
        PresentationContextAC(1, ACCEPT, EXPLICIT_VR_LITTLE_ENDIAN),
        PresentationContextAC(3, ACCEPT, IMPLICIT_VR_LITTLE_ENDIAN),
        PresentationContextAC(5, ACCEPT, IMPLICIT_VR_LITTLE_ENDIAN),
        roles=(RoleSelection(CT, True, True),),
    )
    roles = [(c.scu_role, c.scp_role) for c in interpret_acceptance(rq, ac)]
    assert roles == [(True, True), (True, True), (True, False)]


# --- negotiated_maximum_length ------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "cap", "expected"),
    [
        (None, 65536, 65536),
        (0, 65536, 65536),
        (16384, 65536, 16384),
        (1_000_000, 65536, 65536),
        (65536, 65536, 65536),
    ],
)
def test_negotiated_maximum_length(peer: int | None, cap: int, expected: int) -> None:
    assert negotiated_maximum_length(peer, cap) == expected


def test_negotiated_maximum_length_needs_positive_cap() -> None:
    with pytest.raises(ValueError, match="positive"):
        negotiated_maximum_length(16384, 0)
