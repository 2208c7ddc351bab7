"""The DICOM Upper Layer state machine of PS3.8 section 9.2 as a pure, sans-I/O table.

It only says which action answers an event in a state and where that action may lead;
performing the action (sending PDUs, timers, closing sockets) is the caller's job.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Iterable, Mapping

from aionetdicom.errors import LocalProtocolError

__all__ = [
    "TRANSITIONS",
    "Action",
    "Event",
    "InvalidTransition",
    "State",
    "StateMachine",
    "action_for",
    "format_table",
]


class State(enum.IntEnum):
    """A state Sta1..Sta13 of the Upper Layer (PS3.8 Tables 9-1 to 9-5)."""

    STA1 = 1
    STA2 = 2
    STA3 = 3
    STA4 = 4
    STA5 = 5
    STA6 = 6
    STA7 = 7
    STA8 = 8
    STA9 = 9
    STA10 = 10
    STA11 = 11
    STA12 = 12
    STA13 = 13

    @property
    def label(self) -> str:
        """The standard's name for the state, e.g. ``"Sta6"``."""
        return f"Sta{self.value}"

    @property
    def description(self) -> str:
        """What the Upper Layer is doing or waiting for in this state."""
        return _STATE_DESCRIPTIONS[self]


_STATE_DESCRIPTIONS: dict[State, str] = {
    State.STA1: "Idle",
    State.STA2: "Transport connection open (awaiting A-ASSOCIATE-RQ PDU)",
    State.STA3: "Awaiting the local user's A-ASSOCIATE response primitive",
    State.STA4: "Awaiting the local transport service to finish opening the connection",
    State.STA5: "Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU",
    State.STA6: "Association established, ready for data transfer",
    State.STA7: "Awaiting A-RELEASE-RP PDU",
    State.STA8: "Awaiting the local user's A-RELEASE response primitive",
    State.STA9: "Release collision, requestor side: awaiting the local A-RELEASE response",
    State.STA10: "Release collision, acceptor side: awaiting A-RELEASE-RP PDU",
    State.STA11: "Release collision, requestor side: awaiting A-RELEASE-RP PDU",
    State.STA12: "Release collision, acceptor side: awaiting the local A-RELEASE response",
    State.STA13: "Awaiting transport connection close (association no longer exists)",
}


class Event(enum.IntEnum):
    """An event Evt1..Evt19 that drives the Upper Layer (rows of PS3.8 Table 9-10)."""

    EVT1 = 1
    EVT2 = 2
    EVT3 = 3
    EVT4 = 4
    EVT5 = 5
    EVT6 = 6
    EVT7 = 7
    EVT8 = 8
    EVT9 = 9
    EVT10 = 10
    EVT11 = 11
    EVT12 = 12
    EVT13 = 13
    EVT14 = 14
    EVT15 = 15
    EVT16 = 16
    EVT17 = 17
    EVT18 = 18
    EVT19 = 19

    @property
    def label(self) -> str:
        """The standard's name for the event, e.g. ``"Evt9"``."""
        return f"Evt{self.value}"

    @property
    def description(self) -> str:
        """What happened: a local primitive, a received PDU, or a transport/timer signal."""
        return _EVENT_DESCRIPTIONS[self]


_EVENT_DESCRIPTIONS: dict[Event, str] = {
    Event.EVT1: "A-ASSOCIATE request primitive (local user)",
    Event.EVT2: "Transport connect confirmation (local transport service)",
    Event.EVT3: "A-ASSOCIATE-AC PDU received",
    Event.EVT4: "A-ASSOCIATE-RJ PDU received",
    Event.EVT5: "Transport connection indication (local transport service)",
    Event.EVT6: "A-ASSOCIATE-RQ PDU received",
    Event.EVT7: "A-ASSOCIATE response primitive (accept)",
    Event.EVT8: "A-ASSOCIATE response primitive (reject)",
    Event.EVT9: "P-DATA request primitive",
    Event.EVT10: "P-DATA-TF PDU received",
    Event.EVT11: "A-RELEASE request primitive",
    Event.EVT12: "A-RELEASE-RQ PDU received",
    Event.EVT13: "A-RELEASE-RP PDU received",
    Event.EVT14: "A-RELEASE response primitive",
    Event.EVT15: "A-ABORT request primitive",
    Event.EVT16: "A-ABORT PDU received",
    Event.EVT17: "Transport connection closed indication (local transport service)",
    Event.EVT18: "ARTIM timer expired",
    Event.EVT19: "Unrecognized or invalid PDU received",
}


class Action(enum.Enum):
    """An action of PS3.8 Tables 9-6 to 9-9, with the state(s) it may lead to."""

    AE_1 = "AE-1"
    AE_2 = "AE-2"
    AE_3 = "AE-3"
    AE_4 = "AE-4"
    AE_5 = "AE-5"
    AE_6 = "AE-6"
    AE_7 = "AE-7"
    AE_8 = "AE-8"
    DT_1 = "DT-1"
    DT_2 = "DT-2"
    AR_1 = "AR-1"
    AR_2 = "AR-2"
    AR_3 = "AR-3"
    AR_4 = "AR-4"
    AR_5 = "AR-5"
    AR_6 = "AR-6"
    AR_7 = "AR-7"
    AR_8 = "AR-8"
    AR_9 = "AR-9"
    AR_10 = "AR-10"
    AA_1 = "AA-1"
    AA_2 = "AA-2"
    AA_3 = "AA-3"
    AA_4 = "AA-4"
    AA_5 = "AA-5"
    AA_6 = "AA-6"
    AA_7 = "AA-7"
    AA_8 = "AA-8"

    @property
    def label(self) -> str:
        """The standard's name for the action, e.g. ``"AR-8"``."""
        return str(self.value)

    @property
    def description(self) -> str:
        """What the Upper Layer must do when it takes this action."""
        return _ACTION_INFO[self][0]

    @property
    def next_states(self) -> frozenset[State]:
        """The states the action may lead to; more than one means the caller decides."""
        return _ACTION_INFO[self][1]


def _to(*states: State) -> frozenset[State]:
    return frozenset(states)


_ACTION_INFO: dict[Action, tuple[str, frozenset[State]]] = {
    Action.AE_1: ("Ask the local transport service to open a connection", _to(State.STA4)),
    Action.AE_2: ("Connection is up: send the A-ASSOCIATE-RQ PDU", _to(State.STA5)),
    Action.AE_3: ("Confirm to the local user that the peer accepted", _to(State.STA6)),
    Action.AE_4: (
        "Confirm to the local user that the peer rejected, then close the connection",
        _to(State.STA1),
    ),
    Action.AE_5: ("Accept the incoming connection and start the ARTIM timer", _to(State.STA2)),
    Action.AE_6: (
        "Stop the ARTIM timer; if the request is acceptable to the provider, pass it to the "
        "local user (Sta3), else send A-ASSOCIATE-RJ and start the ARTIM timer (Sta13)",
        _to(State.STA3, State.STA13),
    ),
    Action.AE_7: ("Send the A-ASSOCIATE-AC PDU", _to(State.STA6)),
    Action.AE_8: ("Send the A-ASSOCIATE-RJ PDU and start the ARTIM timer", _to(State.STA13)),
    Action.DT_1: ("Send a P-DATA-TF PDU", _to(State.STA6)),
    Action.DT_2: (
        "Hand the received data to the local user as a P-DATA indication",
        _to(State.STA6),
    ),
    Action.AR_1: ("Send the A-RELEASE-RQ PDU", _to(State.STA7)),
    Action.AR_2: (
        "Tell the local user the peer asks to release (A-RELEASE indication)",
        _to(State.STA8),
    ),
    Action.AR_3: (
        "Confirm the release to the local user, then close the connection",
        _to(State.STA1),
    ),
    Action.AR_4: ("Send the A-RELEASE-RP PDU and start the ARTIM timer", _to(State.STA13)),
    Action.AR_5: ("Stop the ARTIM timer", _to(State.STA1)),
    Action.AR_6: (
        "Hand data received while awaiting the release reply to the local user",
        _to(State.STA7),
    ),
    Action.AR_7: (
        "Send a P-DATA-TF PDU while the local release response is still outstanding",
        _to(State.STA8),
    ),
    Action.AR_8: (
        "Release collision: give the local user an A-RELEASE indication; the association "
        "requestor goes to Sta9, the acceptor to Sta10",
        _to(State.STA9, State.STA10),
    ),
    Action.AR_9: ("Send the A-RELEASE-RP PDU (collision, requestor side)", _to(State.STA11)),
    Action.AR_10: (
        "Confirm the release to the local user (collision, acceptor side)",
        _to(State.STA12),
    ),
    Action.AA_1: (
        "Send an A-ABORT PDU with service-user source and (re)start the ARTIM timer",
        _to(State.STA13),
    ),
    Action.AA_2: ("Stop the ARTIM timer if it runs and close the connection", _to(State.STA1)),
    Action.AA_3: (
        "Pass the peer's abort to the local user (A-ABORT if user-initiated, A-P-ABORT if "
        "provider-initiated) and close the connection",
        _to(State.STA1),
    ),
    Action.AA_4: (
        "Tell the local user the provider aborted (A-P-ABORT indication)",
        _to(State.STA1),
    ),
    Action.AA_5: ("Stop the ARTIM timer", _to(State.STA1)),
    Action.AA_6: ("Discard the PDU", _to(State.STA13)),
    Action.AA_7: ("Send an A-ABORT PDU", _to(State.STA13)),
    Action.AA_8: (
        "Send an A-ABORT PDU with service-provider source, give the local user an A-P-ABORT "
        "indication and start the ARTIM timer",
        _to(State.STA13),
    ),
}


def _each(states: Iterable[State], action: Action) -> dict[State, Action]:
    return dict.fromkeys(states, action)


_STA3_TO_STA12 = [State(n) for n in range(3, 13)]
_STA6_TO_STA12 = [State(n) for n in range(6, 13)]
_STA8_TO_STA12 = [State(n) for n in range(8, 13)]
_PDU_OUT_OF_PLACE = {State.STA3: Action.AA_8, State.STA5: Action.AA_8}

_ROWS: dict[Event, dict[State, Action]] = {
    Event.EVT1: {State.STA1: Action.AE_1},
    Event.EVT2: {State.STA4: Action.AE_2},
    Event.EVT3: {
        State.STA2: Action.AA_1,
        State.STA3: Action.AA_8,
        State.STA5: Action.AE_3,
        **_each(_STA6_TO_STA12, Action.AA_8),
        State.STA13: Action.AA_6,
    },
    Event.EVT4: {
        State.STA2: Action.AA_1,
        State.STA3: Action.AA_8,
        State.STA5: Action.AE_4,
        **_each(_STA6_TO_STA12, Action.AA_8),
        State.STA13: Action.AA_6,
    },
    Event.EVT5: {State.STA1: Action.AE_5},
    Event.EVT6: {
        State.STA2: Action.AE_6,
        **_PDU_OUT_OF_PLACE,
        **_each(_STA6_TO_STA12, Action.AA_8),
        State.STA13: Action.AA_7,
    },
    Event.EVT7: {State.STA3: Action.AE_7},
    Event.EVT8: {State.STA3: Action.AE_8},
    Event.EVT9: {State.STA6: Action.DT_1, State.STA8: Action.AR_7},
    Event.EVT10: {
        State.STA2: Action.AA_1,
        **_PDU_OUT_OF_PLACE,
        State.STA6: Action.DT_2,
        State.STA7: Action.AR_6,
        **_each(_STA8_TO_STA12, Action.AA_8),
        State.STA13: Action.AA_6,
    },
    Event.EVT11: {State.STA6: Action.AR_1},
    Event.EVT12: {
        State.STA2: Action.AA_1,
        **_PDU_OUT_OF_PLACE,
        State.STA6: Action.AR_2,
        State.STA7: Action.AR_8,
        **_each(_STA8_TO_STA12, Action.AA_8),
        State.STA13: Action.AA_6,
    },
    Event.EVT13: {
        State.STA2: Action.AA_1,
        **_PDU_OUT_OF_PLACE,
        State.STA6: Action.AA_8,
        State.STA7: Action.AR_3,
        State.STA8: Action.AA_8,
        State.STA9: Action.AA_8,
        State.STA10: Action.AR_10,
        State.STA11: Action.AR_3,
        State.STA12: Action.AA_8,
        State.STA13: Action.AA_6,
    },
    Event.EVT14: {State.STA8: Action.AR_4, State.STA9: Action.AR_9, State.STA12: Action.AR_4},
    Event.EVT15: {
        State.STA3: Action.AA_1,
        State.STA4: Action.AA_2,
        State.STA5: Action.AA_1,
        **_each(_STA6_TO_STA12, Action.AA_1),
    },
    Event.EVT16: {
        State.STA2: Action.AA_2,
        State.STA3: Action.AA_3,
        State.STA5: Action.AA_3,
        **_each(_STA6_TO_STA12, Action.AA_3),
        State.STA13: Action.AA_2,
    },
    Event.EVT17: {
        State.STA2: Action.AA_5,
        **_each(_STA3_TO_STA12, Action.AA_4),
        State.STA13: Action.AR_5,
    },
    Event.EVT18: {State.STA2: Action.AA_2, State.STA13: Action.AA_2},
    Event.EVT19: {
        State.STA2: Action.AA_1,
        **_PDU_OUT_OF_PLACE,
        **_each(_STA6_TO_STA12, Action.AA_8),
        State.STA13: Action.AA_7,
    },
}

#: The non-empty cells of PS3.8 Table 9-10, keyed by (state, event).
TRANSITIONS: Mapping[tuple[State, Event], Action] = types.MappingProxyType(
    {
        (state, event): action
        for event, row in sorted(_ROWS.items())
        for state, action in sorted(row.items())
    }
)


class InvalidTransition(LocalProtocolError):
    """The event has an empty cell in Table 9-10 for the current state: it must not happen."""

    def __init__(self, state: State, event: Event) -> None:
        self.state = state
        self.event = event
        super().__init__(
            f"{event.description} ({event.label}) is not valid in state "
            f"{state.label} ({state.description})"
        )


def action_for(state: State, event: Event) -> Action:
    """Return the action Table 9-10 prescribes for ``event`` in ``state``.

    Raises :class:`InvalidTransition` when the standard leaves the cell empty.
    """
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


class StateMachine:
    """Tracks the current state of one association; the caller performs the actions.

    :meth:`fire` looks up the action for an event and :meth:`enter` commits the state the
    action ended in, so that conditional outcomes (AE-6, AR-8) are decided by the caller.
    """

    __slots__ = ("_pending", "_state")

    def __init__(self, state: State = State.STA1) -> None:
        self._state = state
        self._pending: Action | None = None

    def __repr__(self) -> str:
        pending = self._pending.label if self._pending else None
        return f"<StateMachine {self._state.label} pending={pending}>"

    @property
    def state(self) -> State:
        """The current state; it changes only through :meth:`enter` or :meth:`apply`."""
        return self._state

    @property
    def pending(self) -> Action | None:
        """The action returned by the last :meth:`fire` that has not been entered yet."""
        return self._pending

    def fire(self, event: Event) -> Action:
        """Return the action for ``event`` in the current state and hold it as pending.

        Raises :class:`InvalidTransition` for an empty cell and :class:`LocalProtocolError`
        if an earlier action is still pending; the machine is unchanged in both cases.
        """
        self._check_idle(event)
        action = action_for(self._state, event)
        self._pending = action
        return action

    def _check_idle(self, event: Event) -> None:
        if self._pending is not None:
            raise LocalProtocolError(
                f"cannot handle {event.label}: action {self._pending.label} fired in "
                f"{self._state.label} has not entered its next state yet"
            )

    def enter(self, state: State) -> None:
        """Finish the pending action by moving to ``state``, which it must allow."""
        action = self._pending
        if action is None:
            raise LocalProtocolError(f"cannot enter {state.label}: no action is pending")
        if state not in action.next_states:
            allowed = ", ".join(s.label for s in sorted(action.next_states))
            raise LocalProtocolError(
                f"action {action.label} leads to {allowed}, not to {state.label}"
            )
        self._state = state
        self._pending = None

    def apply(self, event: Event, next_state: State | None = None) -> Action:
        """Fire ``event`` and enter the next state in one step; return the action.

        ``next_state`` is required when the action has several possible next states and
        must match otherwise. On any error the machine is left unchanged.
        """
        self._check_idle(event)
        action = action_for(self._state, event)
        if next_state is None:
            if len(action.next_states) != 1:
                options = " or ".join(s.label for s in sorted(action.next_states))
                raise LocalProtocolError(
                    f"action {action.label} leads to {options}: pass next_state to choose"
                )
            (next_state,) = action.next_states
        elif next_state not in action.next_states:
            allowed = ", ".join(s.label for s in sorted(action.next_states))
            raise LocalProtocolError(
                f"action {action.label} leads to {allowed}, not to {next_state.label}"
            )
        self._pending = action
        self.enter(next_state)
        return action


def format_table() -> str:
    """Render Table 9-10 as text (rows: events, columns: states) with a legend, for docs."""
    states = list(State)
    width = max(len(a.label) for a in Action) + 1
    head_width = max(len(e.label) for e in Event) + 2
    lines = [" " * head_width + "".join(s.label.ljust(width) for s in states).rstrip()]
    for event in Event:
        cells = (TRANSITIONS.get((s, event)) for s in states)
        row = "".join((a.label if a else "-").ljust(width) for a in cells)
        lines.append((event.label.ljust(head_width) + row).rstrip())
    lines.append("")
    lines.extend(f"{s.label:<6} {s.description}" for s in states)
    lines.append("")
    lines.extend(f"{e.label:<6} {e.description}" for e in Event)
    lines.append("")
    lines.extend(
        f"{a.label:<6} {a.description} -> {', '.join(s.label for s in sorted(a.next_states))}"
        for a in Action
    )
    return "\n".join(lines)
