"""Checks aionetdicom.ul.fsm against an independent transcription of PS3.8 Table 9-10."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aionetdicom.errors import LocalProtocolError
from aionetdicom.ul.fsm import (
    TRANSITIONS,
    Action,
    Event,
    InvalidTransition,
    State,
    StateMachine,
    action_for,
    format_table,
)

# PS3.8 Table 9-10, transcribed cell by cell: rows Evt1..Evt19, columns Sta1..Sta13.
# "-" is a cell the standard leaves empty.
TABLE_9_10 = """
        Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13
Evt1    AE-1  -     -     -     -     -     -     -     -     -     -     -     -
Evt2    -     -     -     AE-2  -     -     -     -     -     -     -     -     -
Evt3    -     AA-1  AA-8  -     AE-3  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt4    -     AA-1  AA-8  -     AE-4  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt5    AE-5  -     -     -     -     -     -     -     -     -     -     -     -
Evt6    -     AE-6  AA-8  -     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
Evt7    -     -     AE-7  -     -     -     -     -     -     -     -     -     -
Evt8    -     -     AE-8  -     -     -     -     -     -     -     -     -     -
Evt9    -     -     -     -     -     DT-1  -     AR-7  -     -     -     -     -
Evt10   -     AA-1  AA-8  -     AA-8  DT-2  AR-6  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt11   -     -     -     -     -     AR-1  -     -     -     -     -     -     -
Evt12   -     AA-1  AA-8  -     AA-8  AR-2  AR-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-6
Evt13   -     AA-1  AA-8  -     AA-8  AA-8  AR-3  AA-8  AA-8  AR-10 AR-3  AA-8  AA-6
Evt14   -     -     -     -     -     -     -     AR-4  AR-9  -     -     AR-4  -
Evt15   -     -     AA-1  AA-2  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  AA-1  -
Evt16   -     AA-2  AA-3  -     AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-3  AA-2
Evt17   -     AA-5  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AA-4  AR-5
Evt18   -     AA-2  -     -     -     -     -     -     -     -     -     -     AA-2
Evt19   -     AA-1  AA-8  -     AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-8  AA-7
"""

# PS3.8 Tables 9-6 to 9-9: the state each action ends in.
NEXT_STATES = {
    "AE-1": {4},
    "AE-2": {5},
    "AE-3": {6},
    "AE-4": {1},
    "AE-5": {2},
    "AE-6": {3, 13},
    "AE-7": {6},
    "AE-8": {13},
    "DT-1": {6},
    "DT-2": {6},
    "AR-1": {7},
    "AR-2": {8},
    "AR-3": {1},
    "AR-4": {13},
    "AR-5": {1},
    "AR-6": {7},
    "AR-7": {8},
    "AR-8": {9, 10},
    "AR-9": {11},
    "AR-10": {12},
    "AA-1": {13},
    "AA-2": {1},
    "AA-3": {1},
    "AA-4": {1},
    "AA-5": {1},
    "AA-6": {13},
    "AA-7": {13},
    "AA-8": {13},
}


def _parse(table: str) -> dict[tuple[int, int], str | None]:
    header, *rows = table.strip().splitlines()
    columns = [int(name.removeprefix("Sta")) for name in header.split()]
    assert columns == list(range(1, 14))
    cells: dict[tuple[int, int], str | None] = {}
    for line in rows:
        name, *values = line.split()
        event = int(name.removeprefix("Evt"))
        assert len(values) == 13, line
        for state, value in zip(columns, values, strict=True):
            cells[(state, event)] = None if value == "-" else value
    assert len(cells) == 13 * 19
    return cells


EXPECTED = _parse(TABLE_9_10)
CONNECTED = [s for s in State if s not in (State.STA1, State.STA4)]


@pytest.mark.parametrize(
    ("state", "event"),
    [(State(s), Event(e)) for s, e in sorted(EXPECTED)],
    ids=[f"Sta{s}-Evt{e}" for s, e in sorted(EXPECTED)],
)
def test_every_cell(state: State, event: Event) -> None:
    expected = EXPECTED[(state.value, event.value)]
    if expected is None:
        with pytest.raises(InvalidTransition) as info:
            action_for(state, event)
        assert info.value.state is state
        assert info.value.event is event
        assert (state, event) not in TRANSITIONS
    else:
        assert action_for(state, event) is Action(expected)
        assert TRANSITIONS[(state, event)] is Action(expected)


def test_transitions_hold_exactly_the_non_empty_cells() -> None:
    non_empty = {(State(s), Event(e)): Action(a) for (s, e), a in EXPECTED.items() if a}
    assert dict(TRANSITIONS) == non_empty
    assert len(TRANSITIONS) == 123


def test_transitions_are_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[(State.STA1, Event.EVT9)] = Action.DT_1  # type: ignore[index]


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_next_states(action: Action) -> None:
    assert action.next_states == frozenset(State(n) for n in NEXT_STATES[action.value])
    assert isinstance(action.next_states, frozenset)


def test_every_action_is_used_somewhere() -> None:
    assert set(TRANSITIONS.values()) == set(Action)
    assert set(NEXT_STATES) == {a.value for a in Action}


def test_enum_members_and_descriptions() -> None:
    assert [s.value for s in State] == list(range(1, 14))
    assert [e.value for e in Event] == list(range(1, 20))
    assert State.STA1.description == "Idle"
    assert "A-ASSOCIATE-RQ" in State.STA2.description
    assert Event.EVT9.description == "P-DATA request primitive"
    assert "ARTIM" in Event.EVT18.description
    assert "invalid PDU" in Event.EVT19.description
    for member in [*State, *Event, *Action]:
        assert member.description
    assert Action.AR_10.label == "AR-10"
    assert State.STA13.label == "Sta13"
    assert Event.EVT17.label == "Evt17"


@pytest.mark.parametrize("event", [Event.EVT3, Event.EVT4, Event.EVT6, Event.EVT13, Event.EVT19])
def test_unexpected_pdu_in_sta6_aborts_with_aa8(event: Event) -> None:
    assert action_for(State.STA6, event) is Action.AA_8


@pytest.mark.parametrize("state", CONNECTED, ids=lambda s: s.label)
def test_invalid_pdu_aborts_in_every_connected_state(state: State) -> None:
    action = action_for(state, Event.EVT19)
    assert action in {Action.AA_1, Action.AA_7, Action.AA_8}
    assert action.next_states == {State.STA13}


@pytest.mark.parametrize("state", [State.STA1, State.STA4])
def test_no_pdu_can_arrive_without_a_connection(state: State) -> None:
    for event in (Event.EVT3, Event.EVT4, Event.EVT6, Event.EVT10, Event.EVT12, Event.EVT13):
        with pytest.raises(InvalidTransition):
            action_for(state, event)
    with pytest.raises(InvalidTransition):
        action_for(state, Event.EVT19)


@pytest.mark.parametrize("state", [s for s in State if s is not State.STA1], ids=lambda s: s.label)
def test_transport_closed_returns_to_idle(state: State) -> None:
    action = action_for(state, Event.EVT17)
    expected = {State.STA2: Action.AA_5, State.STA13: Action.AR_5}.get(state, Action.AA_4)
    assert action is expected
    assert action.next_states == {State.STA1}


def test_transport_closed_in_idle_is_invalid() -> None:
    with pytest.raises(InvalidTransition):
        action_for(State.STA1, Event.EVT17)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.label)
def test_artim_expiry(state: State) -> None:
    if state in (State.STA2, State.STA13):
        assert action_for(state, Event.EVT18) is Action.AA_2
    else:
        with pytest.raises(InvalidTransition):
            action_for(state, Event.EVT18)


def test_abort_request_and_abort_pdu() -> None:
    assert action_for(State.STA4, Event.EVT15) is Action.AA_2
    for state in (State.STA1, State.STA2, State.STA13):
        with pytest.raises(InvalidTransition):
            action_for(state, Event.EVT15)
    for state in (State.STA3, *[State(n) for n in range(5, 13)]):
        assert action_for(state, Event.EVT15) is Action.AA_1
        assert action_for(state, Event.EVT16) is Action.AA_3
    assert action_for(State.STA2, Event.EVT16) is Action.AA_2
    assert action_for(State.STA13, Event.EVT16) is Action.AA_2


def test_sta13_ignores_or_answers_late_pdus() -> None:
    for event in (Event.EVT3, Event.EVT4, Event.EVT10, Event.EVT12, Event.EVT13):
        assert action_for(State.STA13, event) is Action.AA_6
    assert action_for(State.STA13, Event.EVT6) is Action.AA_7


def test_invalid_transition_message() -> None:
    with pytest.raises(InvalidTransition) as info:
        action_for(State.STA1, Event.EVT9)
    assert str(info.value) == "P-DATA request primitive (Evt9) is not valid in state Sta1 (Idle)"
    assert isinstance(info.value, LocalProtocolError)


def _walk(machine: StateMachine, steps: list[tuple[Event, Action, State]]) -> None:
    for event, action, state in steps:
        assert machine.fire(event) is action
        assert machine.pending is action
        machine.enter(state)
        assert machine.state is state
        assert machine.pending is None


def test_requestor_walk() -> None:
    machine = StateMachine()
    assert machine.state is State.STA1
    _walk(
        machine,
        [
            (Event.EVT1, Action.AE_1, State.STA4),
            (Event.EVT2, Action.AE_2, State.STA5),
            (Event.EVT3, Action.AE_3, State.STA6),
            (Event.EVT9, Action.DT_1, State.STA6),
            (Event.EVT10, Action.DT_2, State.STA6),
            (Event.EVT11, Action.AR_1, State.STA7),
            (Event.EVT10, Action.AR_6, State.STA7),
            (Event.EVT13, Action.AR_3, State.STA1),
        ],
    )


def test_acceptor_walk() -> None:
    machine = StateMachine()
    _walk(
        machine,
        [
            (Event.EVT5, Action.AE_5, State.STA2),
            (Event.EVT6, Action.AE_6, State.STA3),
            (Event.EVT7, Action.AE_7, State.STA6),
            (Event.EVT12, Action.AR_2, State.STA8),
            (Event.EVT9, Action.AR_7, State.STA8),
            (Event.EVT14, Action.AR_4, State.STA13),
            (Event.EVT17, Action.AR_5, State.STA1),
        ],
    )


def test_acceptor_rejects() -> None:
    machine = StateMachine()
    _walk(
        machine,
        [
            (Event.EVT5, Action.AE_5, State.STA2),
            (Event.EVT6, Action.AE_6, State.STA3),
            (Event.EVT8, Action.AE_8, State.STA13),
            (Event.EVT18, Action.AA_2, State.STA1),
        ],
    )


def test_provider_rejects_in_ae6() -> None:
    machine = StateMachine(State.STA2)
    assert machine.apply(Event.EVT6, State.STA13) is Action.AE_6
    assert machine.state is State.STA13


def test_release_collision_requestor() -> None:
    machine = StateMachine(State.STA6)
    _walk(
        machine,
        [
            (Event.EVT11, Action.AR_1, State.STA7),
            (Event.EVT12, Action.AR_8, State.STA9),
            (Event.EVT14, Action.AR_9, State.STA11),
            (Event.EVT13, Action.AR_3, State.STA1),
        ],
    )


def test_release_collision_acceptor() -> None:
    machine = StateMachine(State.STA6)
    _walk(
        machine,
        [
            (Event.EVT11, Action.AR_1, State.STA7),
            (Event.EVT12, Action.AR_8, State.STA10),
            (Event.EVT13, Action.AR_10, State.STA12),
            (Event.EVT14, Action.AR_4, State.STA13),
            (Event.EVT17, Action.AR_5, State.STA1),
        ],
    )


def test_apply_walks_with_single_next_states() -> None:
    machine = StateMachine()
    for event in (Event.EVT1, Event.EVT2, Event.EVT3, Event.EVT11, Event.EVT13):
        machine.apply(event)
    assert machine.state is State.STA1
    assert machine.pending is None


def test_apply_abort_paths() -> None:
    machine = StateMachine(State.STA6)
    assert machine.apply(Event.EVT19) is Action.AA_8
    assert machine.state is State.STA13
    assert machine.apply(Event.EVT10) is Action.AA_6
    assert machine.apply(Event.EVT16) is Action.AA_2
    assert machine.state is State.STA1


@pytest.mark.parametrize(("start", "event"), [(State.STA2, Event.EVT6), (State.STA7, Event.EVT12)])
def test_apply_needs_next_state_for_conditional_actions(start: State, event: Event) -> None:
    machine = StateMachine(start)
    with pytest.raises(LocalProtocolError, match="next_state"):
        machine.apply(event)
    assert machine.state is start
    assert machine.pending is None
    with pytest.raises(LocalProtocolError):
        machine.apply(event, State.STA6)
    assert machine.state is start
    assert machine.pending is None


def test_apply_refuses_wrong_explicit_next_state() -> None:
    machine = StateMachine(State.STA6)
    with pytest.raises(LocalProtocolError, match="AR-1"):
        machine.apply(Event.EVT11, State.STA8)
    assert machine.state is State.STA6
    assert machine.apply(Event.EVT11, State.STA7) is Action.AR_1
    assert machine.state is State.STA7


def test_enter_refuses_state_not_allowed() -> None:
    machine = StateMachine()
    machine.fire(Event.EVT1)
    with pytest.raises(LocalProtocolError, match="Sta5"):
        machine.enter(State.STA5)
    assert machine.state is State.STA1
    assert machine.pending is Action.AE_1
    machine.enter(State.STA4)
    assert machine.state is State.STA4


def test_enter_without_pending_action() -> None:
    machine = StateMachine()
    with pytest.raises(LocalProtocolError, match="no action is pending"):
        machine.enter(State.STA4)
    assert machine.state is State.STA1


def test_fire_invalid_event_leaves_machine_unchanged() -> None:
    machine = StateMachine()
    with pytest.raises(InvalidTransition):
        machine.fire(Event.EVT9)
    assert machine.state is State.STA1
    assert machine.pending is None
    with pytest.raises(InvalidTransition):
        machine.apply(Event.EVT9)
    assert machine.state is State.STA1


def test_fire_while_pending_is_refused() -> None:
    machine = StateMachine()
    machine.fire(Event.EVT1)
    with pytest.raises(LocalProtocolError, match="AE-1"):
        machine.fire(Event.EVT2)
    with pytest.raises(LocalProtocolError):
        machine.apply(Event.EVT2)
    assert machine.pending is Action.AE_1
    assert machine.state is State.STA1


def test_machine_keeps_no_history() -> None:
    machine = StateMachine()
    assert not hasattr(machine, "__dict__")
    assert not hasattr(machine, "history")
    assert "Sta1" in repr(machine)


def test_format_table() -> None:
    text = format_table()
    for state in State:
        assert state.label in text
        assert state.description in text
    for event in Event:
        assert event.label in text
    for action in Action:
        assert action.label in text
    grid = text.split("\n\n")[0]
    assert _parse(grid) == EXPECTED


@given(
    start=st.sampled_from(list(State)),
    steps=st.lists(st.tuples(st.sampled_from(list(Event)), st.integers(0, 1)), max_size=40),
)
def test_random_walks_stay_on_the_table(start: State, steps: list[tuple[Event, int]]) -> None:
    machine = StateMachine(start)
    for event, pick in steps:
        before = machine.state
        try:
            action = machine.fire(event)
        except InvalidTransition:
            assert machine.state is before
            assert machine.pending is None
            continue
        choices = sorted(action.next_states)
        machine.enter(choices[pick % len(choices)])
        assert machine.state in action.next_states
        assert machine.pending is None
