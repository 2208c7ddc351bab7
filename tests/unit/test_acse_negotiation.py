"""Acceptor-side negotiation: request checks, contexts, roles and the operations window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aionetdicom.acse import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_BASELINE_8BIT,
    NegotiatedContext,
    Negotiation,
    OperationsWindow,
    PresentationContext,
    check_request,
    effective_window,
    interpret_acceptance,
    negotiate_contexts,
    negotiate_window,
    validate_contexts,
)
from aionetdicom.acse.acceptor import OPERATIONS_WINDOW_CAP
from aionetdicom.errors import ProtocolError
from aionetdicom.pdu import (
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AsynchronousOperationsWindow,
    PresentationContextAC,
    PresentationContextResult,
    PresentationContextRQ,
    RoleSelection,
    UserInformation,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
US = "1.2.840.10008.5.1.4.1.1.6.1"
R = PresentationContextResult


def _rq(**changes: object) -> AAssociateRQ:
    fields: dict[str, object] = {
        "called_ae_title": "STORESCP",
        "calling_ae_title": "MODALITY",
        "presentation_contexts": (PresentationContextRQ(1, CT, (IMPLICIT_VR_LITTLE_ENDIAN,)),),
    }
    fields.update(changes)
    return AAssociateRQ(**fields)  # type: ignore[arg-type]


# --- check_request ----------------------------------------------------------------------


def test_check_request_accepts_plain_request() -> None:
    assert check_request(_rq(), ae_title="STORESCP") is None
    assert check_request(_rq(protocol_version=0x0003), ae_title="STORESCP") is None


@pytest.mark.parametrize(
    ("rq", "kwargs", "triple"),
    [
        (_rq(protocol_version=0x0002), {}, (1, 2, 2)),
        (_rq(protocol_version=0x0000), {}, (1, 2, 2)),
        (_rq(application_context_name="1.2.3"), {}, (1, 1, 2)),
        (_rq(called_ae_title="OTHER"), {"require_called_ae_title": True}, (1, 1, 7)),
        (_rq(calling_ae_title="INTRUDER"), {"allowed_calling_ae_titles": ["MODALITY"]}, (1, 1, 3)),
        (_rq(calling_ae_title="MODALITY"), {"allowed_calling_ae_titles": []}, (1, 1, 3)),
    ],
)
def test_check_request_rejections(
    rq: AAssociateRQ, kwargs: dict[str, object], triple: tuple[int, int, int]
) -> None:
    rj = check_request(rq, ae_title="STORESCP", **kwargs)  # type: ignore[arg-type]
    assert rj == AAssociateRJ(*triple)


def test_check_request_order_version_before_context_name() -> None:
    rq = _rq(protocol_version=0, application_context_name="1.2.3", called_ae_title="X")
    rj = check_request(rq, ae_title="STORESCP", require_called_ae_title=True)
    assert rj == AAssociateRJ(1, 2, 2)
    rq = _rq(application_context_name="1.2.3", called_ae_title="X", calling_ae_title="Y")
    rj = check_request(
        rq, ae_title="STORESCP", require_called_ae_title=True, allowed_calling_ae_titles=()
    )
    assert rj == AAssociateRJ(1, 1, 2)
    rq = _rq(called_ae_title="X", calling_ae_title="Y")
    rj = check_request(
        rq, ae_title="STORESCP", require_called_ae_title=True, allowed_calling_ae_titles=()
    )
    assert rj == AAssociateRJ(1, 1, 7)


def test_check_request_ae_titles_compare_without_padding() -> None:
    rq = _rq(called_ae_title="STORESCP  ", calling_ae_title=" MODALITY")
    assert (
        check_request(
            rq,
            ae_title="STORESCP",
            require_called_ae_title=True,
            allowed_calling_ae_titles={"MODALITY   "},
        )
        is None
    )


def test_check_request_ignores_called_title_unless_required() -> None:
    assert check_request(_rq(called_ae_title="ANY"), ae_title="STORESCP") is None


# --- validate_contexts ------------------------------------------------------------------


def _pc(context_id: int, abstract: str = CT) -> PresentationContextRQ:
    return PresentationContextRQ(context_id, abstract, (IMPLICIT_VR_LITTLE_ENDIAN,))


def test_validate_contexts_accepts_valid() -> None:
    validate_contexts(_rq(presentation_contexts=(_pc(1), _pc(3), _pc(255))))
    validate_contexts(_rq(presentation_contexts=tuple(_pc(i) for i in range(1, 256, 2))))


@pytest.mark.parametrize(
    ("contexts", "message"),
    [
        ((), "no presentation context"),
        (tuple(_pc(1) for _ in range(129)), "129 presentation contexts"),
        ((_pc(1), _pc(2)), "ID 2 is not an odd"),
        ((_pc(0),), "ID 0 is not an odd"),
        ((_pc(257),), "ID 257 is not an odd"),
        ((_pc(3), _pc(5), _pc(3)), "ID 3 is proposed more than once"),
    ],
)
def test_validate_contexts_errors(
    contexts: tuple[PresentationContextRQ, ...], message: str
) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        validate_contexts(_rq(presentation_contexts=contexts))
    assert info.value.abort_reason == 6


# --- negotiate_contexts: results and transfer syntax choice -----------------------------


def test_every_result_code() -> None:
    proposed = [
        PresentationContextRQ(1, CT, (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)),
        PresentationContextRQ(3, US, (IMPLICIT_VR_LITTLE_ENDIAN,)),
        PresentationContextRQ(5, MR, (JPEG_BASELINE_8BIT,)),
        PresentationContextRQ(7, "1.2.3.4", (IMPLICIT_VR_LITTLE_ENDIAN,)),
    ]
    supported = [
        PresentationContext(CT),
        PresentationContext(US, scu_role=False, scp_role=True),
        PresentationContext(MR),
    ]
    outcome = negotiate_contexts(proposed, supported)
    assert outcome.ac_contexts == (
        PresentationContextAC(1, R.ACCEPTANCE, EXPLICIT_VR_LITTLE_ENDIAN),
        PresentationContextAC(3, R.USER_REJECTION, ""),
        PresentationContextAC(5, R.TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),
        PresentationContextAC(7, R.ABSTRACT_SYNTAX_NOT_SUPPORTED, ""),
    )
    assert [c.result for c in outcome.contexts] == [R.ACCEPTANCE, 1, 4, 3]
    # Result 2 (no reason) is what a requestor records for a context the AC left out.
    rq = AAssociateRQ("A", "B", tuple(proposed))
    ac = AAssociateAC("A", "B", outcome.ac_contexts[:1])
    assert [c.result for c in interpret_acceptance(rq, ac)] == [0, R.NO_REASON, 2, 2]


def test_our_preference_order_wins() -> None:
    proposed = [
        PresentationContextRQ(
            1, CT, (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)
        )
    ]
    ours = [PresentationContext(CT, (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN))]
    (answer,) = negotiate_contexts(proposed, ours).ac_contexts
    assert answer.transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
    ours = [PresentationContext(CT, (EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN))]
    (answer,) = negotiate_contexts(proposed, ours).ac_contexts
    assert answer.transfer_syntax == EXPLICIT_VR_BIG_ENDIAN


def test_a_context_we_only_send_on_prefers_uncompressed() -> None:
    """Requestor as Storage SCP only (C-GET): we pick an uncompressed syntax it offers
    before our compressed favourites, so every stored instance can go out; with the
    default roles our order stands."""
    jpeg = "1.2.840.10008.1.2.4.50"
    proposed = [PresentationContextRQ(1, CT, (jpeg, EXPLICIT_VR_LITTLE_ENDIAN))]
    ours = [PresentationContext(CT, (jpeg, EXPLICIT_VR_LITTLE_ENDIAN), scp_role=True)]
    as_sender = negotiate_contexts(proposed, ours, [RoleSelection(CT, False, True)])
    assert as_sender.ac_contexts[0].transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
    as_receiver = negotiate_contexts(proposed, ours)
    assert as_receiver.ac_contexts[0].transfer_syntax == jpeg
    only_jpeg = [PresentationContextRQ(1, CT, (jpeg,))]
    outcome = negotiate_contexts(only_jpeg, ours, [RoleSelection(CT, False, True)])
    assert outcome.ac_contexts[0].transfer_syntax == jpeg


def test_duplicate_supported_entries_merge_in_order() -> None:
    supported = [
        PresentationContext(CT, (JPEG_BASELINE_8BIT,)),
        PresentationContext(CT, (EXPLICIT_VR_LITTLE_ENDIAN, JPEG_BASELINE_8BIT)),
        PresentationContext(CT, (IMPLICIT_VR_LITTLE_ENDIAN,)),
    ]
    proposed = [
        PresentationContextRQ(1, CT, (IMPLICIT_VR_LITTLE_ENDIAN,)),
        PresentationContextRQ(3, CT, (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)),
        PresentationContextRQ(5, CT, (IMPLICIT_VR_LITTLE_ENDIAN, JPEG_BASELINE_8BIT)),
        PresentationContextRQ(7, CT, (EXPLICIT_VR_BIG_ENDIAN,)),
    ]
    answers = negotiate_contexts(proposed, supported).ac_contexts
    assert [a.transfer_syntax for a in answers] == [
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        JPEG_BASELINE_8BIT,
        "",
    ]
    assert answers[3].result == R.TRANSFER_SYNTAXES_NOT_SUPPORTED


def test_accept_any_abstract_syntax() -> None:
    proposed = [
        PresentationContextRQ(1, "1.2.3.4", (EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)),
        PresentationContextRQ(3, "1.2.3.5", (JPEG_BASELINE_8BIT,)),
        PresentationContextRQ(5, CT, (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN)),
    ]
    supported = [PresentationContext(CT, (IMPLICIT_VR_LITTLE_ENDIAN,))]
    outcome = negotiate_contexts(proposed, supported, accept_any_abstract_syntax=True)
    assert outcome.ac_contexts == (
        PresentationContextAC(1, R.ACCEPTANCE, IMPLICIT_VR_LITTLE_ENDIAN),
        PresentationContextAC(3, R.TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),
        PresentationContextAC(5, R.ACCEPTANCE, IMPLICIT_VR_LITTLE_ENDIAN),
    )
    outcome = negotiate_contexts(
        proposed[1:2],
        supported,
        accept_any_abstract_syntax=True,
        any_transfer_syntaxes=(JPEG_BASELINE_8BIT,),
    )
    assert outcome.ac_contexts == (PresentationContextAC(3, R.ACCEPTANCE, JPEG_BASELINE_8BIT),)


def test_negotiated_contexts_acceptor_view() -> None:
    proposed = [PresentationContextRQ(1, CT, (IMPLICIT_VR_LITTLE_ENDIAN,))]
    outcome = negotiate_contexts(proposed, [PresentationContext(CT)])
    assert outcome == Negotiation(
        (PresentationContextAC(1, R.ACCEPTANCE, IMPLICIT_VR_LITTLE_ENDIAN),),
        (),
        (NegotiatedContext(1, CT, IMPLICIT_VR_LITTLE_ENDIAN, R.ACCEPTANCE, True, False),),
    )


# --- negotiate_contexts: roles -----------------------------------------------------------


def _roles(
    ours: tuple[bool | None, bool | None], proposal: tuple[bool, bool] | None
) -> tuple[Negotiation, tuple[bool, bool]]:
    proposed = [PresentationContextRQ(1, CT, (IMPLICIT_VR_LITTLE_ENDIAN,))]
    selections = () if proposal is None else (RoleSelection(CT, *proposal),)
    outcome = negotiate_contexts(
        proposed, [PresentationContext(CT, scu_role=ours[0], scp_role=ours[1])], selections
    )
    (context,) = outcome.contexts
    return outcome, (context.scu_role, context.scp_role)


@pytest.mark.parametrize(
    ("ours", "proposal", "reply", "requestor_roles"),
    [
        # We allow both roles: the proposal is accepted as is.
        ((True, True), (True, True), (True, True), (True, True)),
        ((True, True), (False, True), (False, True), (False, True)),
        # We turn down the SCP role but keep the SCU one.
        ((True, False), (True, True), (True, False), (True, False)),
        # Unset allowances: SCU allowed, SCP not.
        ((None, True), (True, True), (True, True), (True, True)),
        ((True, None), (True, True), (True, False), (True, False)),
        # We never grant a role that was not proposed.
        ((True, True), (True, False), (True, False), (True, False)),
        # No role answer configured: no reply, default roles.
        ((None, None), (False, True), None, (True, False)),
        # Nothing proposed: no reply, default roles.
        ((True, True), None, None, (True, False)),
    ],
)
def test_role_negotiation(
    ours: tuple[bool | None, bool | None],
    proposal: tuple[bool, bool] | None,
    reply: tuple[bool, bool] | None,
    requestor_roles: tuple[bool, bool],
) -> None:
    outcome, roles = _roles(ours, proposal)
    assert outcome.role_replies == (() if reply is None else (RoleSelection(CT, *reply),))
    assert outcome.ac_contexts[0].result == R.ACCEPTANCE
    assert roles == requestor_roles


@pytest.mark.parametrize(
    ("ours", "proposal", "reply"),
    [
        # Requestor wants SCP only; we do not let it be SCP.
        ((True, False), (False, True), (False, False)),
        ((None, False), (False, True), (False, False)),
        # Requestor wants SCU only; we only allow SCP.
        ((False, True), (True, False), (False, False)),
        # Requestor proposes nothing; default SCU role is not allowed.
        ((False, True), None, None),
    ],
)
def test_role_negotiation_user_rejection(
    ours: tuple[bool | None, bool | None],
    proposal: tuple[bool, bool] | None,
    reply: tuple[bool, bool] | None,
) -> None:
    outcome, roles = _roles(ours, proposal)
    assert outcome.role_replies == (() if reply is None else (RoleSelection(CT, *reply),))
    assert outcome.ac_contexts == (PresentationContextAC(1, R.USER_REJECTION, ""),)
    assert roles == (False, False)


def test_role_reply_once_per_abstract_syntax_and_only_when_proposed() -> None:
    proposed = [
        PresentationContextRQ(1, CT, (EXPLICIT_VR_LITTLE_ENDIAN,)),
        PresentationContextRQ(3, CT, (IMPLICIT_VR_LITTLE_ENDIAN,)),
        PresentationContextRQ(5, MR, (IMPLICIT_VR_LITTLE_ENDIAN,)),
    ]
    supported = [
        PresentationContext(CT, scu_role=True, scp_role=True),
        PresentationContext(MR, scu_role=True, scp_role=True),
    ]
    selections = [RoleSelection(CT, True, True), RoleSelection(US, True, True)]
    outcome = negotiate_contexts(proposed, supported, selections)
    assert outcome.role_replies == (RoleSelection(CT, True, True),)
    assert [(c.scu_role, c.scp_role) for c in outcome.contexts] == [
        (True, True),
        (True, True),
        (True, False),
    ]


def test_no_role_reply_for_unsupported_abstract_syntax() -> None:
    proposed = [PresentationContextRQ(1, US, (IMPLICIT_VR_LITTLE_ENDIAN,))]
    outcome = negotiate_contexts(proposed, [], [RoleSelection(US, False, True)])
    assert outcome.role_replies == ()
    assert outcome.ac_contexts[0].result == R.ABSTRACT_SYNTAX_NOT_SUPPORTED


def test_merged_entries_allow_role_if_any_allows() -> None:
    supported = [
        PresentationContext(CT, (EXPLICIT_VR_LITTLE_ENDIAN,), scp_role=False),
        PresentationContext(CT, (IMPLICIT_VR_LITTLE_ENDIAN,), scp_role=True),
    ]
    proposed = [PresentationContextRQ(1, CT, (IMPLICIT_VR_LITTLE_ENDIAN,))]
    outcome = negotiate_contexts(proposed, supported, [RoleSelection(CT, False, True)])
    assert outcome.role_replies == (RoleSelection(CT, False, True),)
    assert outcome.ac_contexts[0].result == R.ACCEPTANCE


# --- asynchronous operations window -----------------------------------------------------

W = AsynchronousOperationsWindow


@pytest.mark.parametrize(
    ("proposed", "our_invoked", "our_performed", "reply"),
    [
        (None, 5, 5, None),
        # AC invoked limits the requestor's invocations = what we perform.
        (W(10, 3), 2, 4, W(4, 2)),
        (W(2, 1), 8, 8, W(2, 1)),
        (W(1, 1), 0, 0, W(1, 1)),
        # 0 proposed (unlimited): our limits decide; where both say 0 (unlimited) we
        # answer OPERATIONS_WINDOW_CAP, never 0.
        (W(0, 0), 3, 7, W(7, 3)),
        (W(0, 0), 0, 0, W(OPERATIONS_WINDOW_CAP, OPERATIONS_WINDOW_CAP)),
        (W(0, 5), 0, 2, W(2, 5)),
        (W(6, 0), 4, 0, W(6, 4)),
        (W(500, 300), 0, 0, W(OPERATIONS_WINDOW_CAP, OPERATIONS_WINDOW_CAP)),
        (W(500, 3), 0, 200, W(OPERATIONS_WINDOW_CAP, 3)),
    ],
)
def test_negotiate_window(
    proposed: AsynchronousOperationsWindow | None,
    our_invoked: int,
    our_performed: int,
    reply: AsynchronousOperationsWindow | None,
) -> None:
    answer = negotiate_window(
        proposed, maximum_invoked=our_invoked, maximum_performed=our_performed
    )
    assert answer == reply


@pytest.mark.parametrize("bad", [-1, 65536])
def test_negotiate_window_rejects_bad_caps(bad: int) -> None:
    with pytest.raises(ValueError, match="maximum_invoked"):
        negotiate_window(W(1, 1), maximum_invoked=bad, maximum_performed=1)
    with pytest.raises(ValueError, match="maximum_performed"):
        negotiate_window(None, maximum_invoked=1, maximum_performed=bad)


@pytest.mark.parametrize(
    ("rq", "ac", "requestor", "acceptor"),
    [
        (None, None, (1, 1), (1, 1)),
        (W(5, 5), None, (1, 1), (1, 1)),
        (None, W(5, 5), (1, 1), (1, 1)),
        (W(10, 3), W(4, 2), (4, 2), (2, 4)),
        (W(0, 0), W(0, 0), (0, 0), (0, 0)),
        (W(0, 0), W(7, 0), (7, 0), (0, 7)),
        # An acceptor granting more than proposed is held to the proposal.
        (W(2, 1), W(9, 9), (2, 1), (1, 2)),
    ],
)
def test_effective_window(
    rq: AsynchronousOperationsWindow | None,
    ac: AsynchronousOperationsWindow | None,
    requestor: tuple[int, int],
    acceptor: tuple[int, int],
) -> None:
    assert effective_window(rq, ac, requestor=True) == requestor
    assert effective_window(rq, ac, requestor=False) == OperationsWindow(*acceptor)


@given(
    st.tuples(st.integers(0, 20), st.integers(0, 20)),
    st.integers(0, 20),
    st.integers(0, 20),
)
def test_window_sides_mirror_each_other(
    proposal: tuple[int, int], our_invoked: int, our_performed: int
) -> None:
    rq = W(*proposal)
    ac = negotiate_window(rq, maximum_invoked=our_invoked, maximum_performed=our_performed)
    ours = effective_window(rq, ac, requestor=False)
    theirs = effective_window(rq, ac, requestor=True)
    assert ours.may_invoke == theirs.must_perform
    assert ours.must_perform == theirs.may_invoke
    unlimited = 10**9
    assert (ours.may_invoke or unlimited) <= (our_invoked or unlimited)
    assert (ours.must_perform or unlimited) <= (our_performed or unlimited)
    assert (theirs.may_invoke or unlimited) <= (proposal[0] or unlimited)
    assert (theirs.must_perform or unlimited) <= (proposal[1] or unlimited)


# --- property: acceptor answers and requestor reading agree ------------------------------

_ABSTRACT = st.sampled_from([CT, MR, US, "1.2.3", "1.2.4"])
_SYNTAXES = st.lists(
    st.sampled_from(
        [
            EXPLICIT_VR_LITTLE_ENDIAN,
            IMPLICIT_VR_LITTLE_ENDIAN,
            EXPLICIT_VR_BIG_ENDIAN,
            JPEG_BASELINE_8BIT,
            "1.2.840.10008.1.2.5",
        ]
    ),
    min_size=1,
    max_size=4,
    unique=True,
)
_ROLE = st.none() | st.booleans()
_SUPPORTED = st.builds(PresentationContext, _ABSTRACT, _SYNTAXES.map(tuple), _ROLE, _ROLE)
_OFFERED = st.sampled_from(
    [
        EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        "1.2.840.10008.1.2.4.70",
    ]
)
_PROPOSAL = st.tuples(_ABSTRACT, st.lists(_OFFERED, max_size=3))
_SELECTION = st.builds(RoleSelection, _ABSTRACT, st.booleans(), st.booleans())


@given(
    st.lists(_PROPOSAL, min_size=1, max_size=12),
    st.lists(_SUPPORTED, max_size=8),
    st.lists(_SELECTION, max_size=6),
    st.booleans(),
)
def test_negotiation_round_trip(
    proposals: list[tuple[str, list[str]]],
    supported: list[PresentationContext],
    selections: list[RoleSelection],
    accept_any: bool,
) -> None:
    proposed = tuple(
        PresentationContextRQ(2 * i + 1, abstract, tuple(syntaxes))
        for i, (abstract, syntaxes) in enumerate(proposals)
    )
    outcome = negotiate_contexts(
        proposed, supported, selections, accept_any_abstract_syntax=accept_any
    )
    assert [a.context_id for a in outcome.ac_contexts] == [p.context_id for p in proposed]
    ours = {ts for entry in supported for ts in entry.transfer_syntaxes}
    if accept_any:
        ours |= {EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN}
    for proposal, answer in zip(proposed, outcome.ac_contexts, strict=True):
        assert answer.result in set(R)
        if answer.accepted:
            assert answer.transfer_syntax in proposal.transfer_syntaxes
            assert answer.transfer_syntax in ours
        else:
            assert answer.transfer_syntax == ""
    replied = [reply.sop_class_uid for reply in outcome.role_replies]
    assert len(replied) == len(set(replied))

    rq = AAssociateRQ("SCP", "SCU", proposed, UserInformation(role_selections=tuple(selections)))
    ac = AAssociateAC(
        "SCP", "SCU", outcome.ac_contexts, UserInformation(role_selections=outcome.role_replies)
    )
    assert interpret_acceptance(rq, ac) == outcome.contexts
    for context in outcome.contexts:
        # An accepted context always leaves the requestor some role; a rejected one none.
        assert context.accepted == (context.scu_role or context.scp_role)
