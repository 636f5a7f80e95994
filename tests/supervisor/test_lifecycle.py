"""The lifecycle tables of a worker process and of the pool: no clock, no I/O."""

from __future__ import annotations

import pytest

from supervisor.lifecycle import (
    POOL_TRANSITIONS,
    TRANSITIONS,
    Event,
    Lifecycle,
    PoolEvent,
    PoolLifecycle,
    PoolState,
    State,
    TransitionError,
)


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


# --- the pool's table ------------------------------------------------------------------------


def pool_walk(*events: PoolEvent) -> PoolState:
    lifecycle = PoolLifecycle()
    for event in events:
        lifecycle.fire(event)
    return lifecycle.state


@pytest.mark.parametrize(
    "events, end",
    [
        ((PoolEvent.ALL_READY,), PoolState.READY),
        ((PoolEvent.ALL_READY, PoolEvent.LOST), PoolState.DEGRADED),
        ((PoolEvent.ALL_READY, PoolEvent.LOST, PoolEvent.LOST, PoolEvent.ALL_READY), PoolState.READY),
        # A worker lost while others still start is refilled; the start goes on.
        ((PoolEvent.LOST, PoolEvent.ALL_READY), PoolState.READY),
        ((PoolEvent.ALL_READY, PoolEvent.RELOAD, PoolEvent.LOST, PoolEvent.ALL_READY), PoolState.RELOADING),
        ((PoolEvent.ALL_READY, PoolEvent.RELOAD, PoolEvent.DONE), PoolState.READY),
        ((PoolEvent.ALL_READY, PoolEvent.LOST, PoolEvent.SCALE, PoolEvent.DONE), PoolState.READY),
        ((PoolEvent.STOP, PoolEvent.LOST, PoolEvent.EXITED), PoolState.STOPPED),
        ((PoolEvent.ALL_READY, PoolEvent.RELOAD, PoolEvent.STOP, PoolEvent.EXITED), PoolState.STOPPED),
        ((PoolEvent.GIVE_UP,), PoolState.DOWN),  # a failed start
        ((PoolEvent.ALL_READY, PoolEvent.LOST, PoolEvent.GIVE_UP, PoolEvent.STOP, PoolEvent.EXITED), PoolState.DOWN),
    ],
)
def test_pool_paths(events, end):
    assert pool_walk(*events) is end


@pytest.mark.parametrize(
    "events, illegal",
    [
        ((PoolEvent.ALL_READY, PoolEvent.RELOAD), PoolEvent.RELOAD),  # one operation at a time
        ((PoolEvent.ALL_READY, PoolEvent.RELOAD), PoolEvent.SCALE),
        ((), PoolEvent.RELOAD),  # not before the pool has started
        ((PoolEvent.STOP,), PoolEvent.RELOAD),
        ((PoolEvent.STOP,), PoolEvent.GIVE_UP),
        ((PoolEvent.ALL_READY,), PoolEvent.EXITED),  # exiting is the end of a stop
    ],
)
def test_pool_refuses_and_stays(events, illegal):
    lifecycle = PoolLifecycle()
    for event in events:
        lifecycle.fire(event)
    before = lifecycle.state
    with pytest.raises(TransitionError):
        lifecycle.fire(illegal)
    assert lifecycle.state is before


def test_final_pool_states_are_final():
    for state in PoolState:
        if state.final:
            assert all(POOL_TRANSITIONS.get((state, event), state) is state for event in PoolEvent)


def test_every_live_pool_state_can_stop_and_only_stopping_exits():
    for state in PoolState:
        if not state.final:
            assert POOL_TRANSITIONS[state, PoolEvent.STOP] in (PoolState.STOPPING, PoolState.DOWN)
    assert {s for (s, e) in POOL_TRANSITIONS if e is PoolEvent.EXITED} == {PoolState.STOPPING, PoolState.DOWN}
