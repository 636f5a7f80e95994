"""The worker lifecycle table: no clock, no I/O."""

from __future__ import annotations

import pytest

from supervisor.lifecycle import TRANSITIONS, Event, Lifecycle, State, TransitionError


def walk(*events: Event) -> State:
    lifecycle = Lifecycle()
    for event in events:
        lifecycle.fire(event)
    return lifecycle.state


def test_the_happy_path():
    assert walk(Event.HELLO, Event.READY, Event.STOP, Event.EXITED) is State.STOPPED


@pytest.mark.parametrize(
    "events, end",
    [
        ((Event.EXITED,), State.FAILED),  # died before it said hello
        ((Event.HELLO, Event.CRASHED), State.FAILED),  # e.g. a model that would not load
        ((Event.HELLO, Event.READY, Event.CRASHED), State.FAILED),
        ((Event.HELLO, Event.READY, Event.STOP, Event.CRASHED), State.FAILED),
        ((Event.HELLO, Event.READY, Event.STOP, Event.KILL, Event.CRASHED), State.KILLED),
        ((Event.STOP, Event.EXITED), State.STOPPED),  # stopped while starting
        ((Event.HELLO, Event.READY, Event.KILL), State.KILLED),  # forced
    ],
)
def test_other_endings(events, end):
    assert walk(*events) is end


def test_an_illegal_event_raises_and_leaves_the_state_alone():
    lifecycle = Lifecycle()
    lifecycle.fire(Event.HELLO)
    with pytest.raises(TransitionError, match="CONNECTED on HELLO"):
        lifecycle.fire(Event.HELLO)
    assert lifecycle.state is State.CONNECTED


def test_final_states_are_final():
    for state in State:
        if not state.alive:
            assert all((state, event) not in TRANSITIONS or TRANSITIONS[state, event] is state for event in Event)


def test_every_live_state_can_be_killed():
    for state in State:
        if state.alive:
            assert TRANSITIONS[state, Event.KILL] is State.KILLED
