"""The lifecycle tables of a worker process, a slot and the pool: no clock, no I/O."""

from __future__ import annotations

import enum

import pytest

from supervisor.lifecycle import (
    POOL_TRANSITIONS,
    SLOT_TRANSITIONS,
    TRANSITIONS,
    Event,
    Lifecycle,
    Machine,
    PoolEvent,
    PoolLifecycle,
    PoolState,
    SlotEvent,
    SlotLifecycle,
    SlotState,
    State,
    TransitionError,
)

TABLES = [
    (TRANSITIONS, State, Event),
    (SLOT_TRANSITIONS, SlotState, SlotEvent),
    (POOL_TRANSITIONS, PoolState, PoolEvent),
]


@pytest.mark.parametrize("table, states, events", TABLES)
def test_every_pair_either_moves_by_the_table_or_raises_and_stays(table, states, events):
    """Strict tables: the walk covers every (state, event) pair there is."""
    assert set(table) == set(states), "every state has its row, an empty one if it is final"
    for state in states:
        for event in events:
            machine: Machine[enum.Enum, enum.Enum] = Machine(table, state)
            assert machine.allows(event) is (event in table[state])
            if event in table[state]:
                assert machine.fire(event) is table[state][event]
            else:
                with pytest.raises(TransitionError, match=f"{state.name} on {event.name}"):
                    machine.fire(event)
                assert machine.state is state


@pytest.mark.parametrize("table, states, events", TABLES)
def test_every_state_is_reachable_from_the_first(table, states, events):
    first = next(iter(states))
    seen, frontier = {first}, [first]
    while frontier:
        for after in table[frontier.pop()].values():
            if after not in seen:
                seen.add(after)
                frontier.append(after)
    assert seen == set(states)


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
            assert all(after is state for after in TRANSITIONS[state].values())


def test_every_live_state_can_be_killed():
    for state in State:
        if state.alive:
            assert TRANSITIONS[state][Event.KILL] is State.KILLED


# --- a slot's table ----------------------------------------------------------------------------


def slot_walk(*events: SlotEvent) -> SlotState:
    lifecycle = SlotLifecycle()
    for event in events:
        lifecycle.fire(event)
    return lifecycle.state


@pytest.mark.parametrize(
    "events, end",
    [
        ((SlotEvent.SPAWN, SlotEvent.READY), SlotState.SERVING),
        # Lost, backed off, refilled.
        ((SlotEvent.SPAWN, SlotEvent.READY, SlotEvent.LOST, SlotEvent.SPAWN, SlotEvent.READY), SlotState.SERVING),
        ((SlotEvent.SPAWN, SlotEvent.REFUSED, SlotEvent.SPAWN), SlotState.STARTING),
        # A replacement takes over, or is abandoned; the old one lost meanwhile hands it the slot.
        ((SlotEvent.SPAWN, SlotEvent.READY, SlotEvent.REPLACE, SlotEvent.TAKE_OVER), SlotState.SERVING),
        ((SlotEvent.SPAWN, SlotEvent.READY, SlotEvent.REPLACE, SlotEvent.ABANDON), SlotState.SERVING),
        ((SlotEvent.SPAWN, SlotEvent.READY, SlotEvent.REPLACE, SlotEvent.PROMOTE, SlotEvent.READY), SlotState.SERVING),
        ((SlotEvent.SPAWN, SlotEvent.FAIL, SlotEvent.RETIRE), SlotState.RETIRED),
        ((SlotEvent.RETIRE, SlotEvent.RETIRE), SlotState.RETIRED),
    ],
)
def test_slot_paths(events, end):
    assert slot_walk(*events) is end


def test_a_slot_claimed_for_a_replacement_cannot_be_claimed_again_nor_spawned_into():
    """Recycling claims a slot when it decides, not later: a loss in between moves the slot to
    BACKOFF, and the replacement's own spawn no longer fits it (found in review: a loss between
    the decision and the act was refilled at once, skipping the crash-loop backoff)."""
    lifecycle = SlotLifecycle()
    for event in (SlotEvent.SPAWN, SlotEvent.READY, SlotEvent.REPLACE):
        lifecycle.fire(event)
    assert not lifecycle.allows(SlotEvent.REPLACE)
    assert not lifecycle.allows(SlotEvent.SPAWN)
    lifecycle.fire(SlotEvent.LOST)
    assert lifecycle.state is SlotState.BACKOFF and not lifecycle.allows(SlotEvent.REPLACE)


def test_nothing_is_spawned_into_a_failed_or_retired_slot():
    for state in (SlotState.FAILED, SlotState.RETIRED):
        assert set(SLOT_TRANSITIONS[state]) == {SlotEvent.RETIRE}


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
            assert all(after is state for after in POOL_TRANSITIONS[state].values())


def test_every_live_pool_state_can_stop_and_only_stopping_exits():
    for state in PoolState:
        if not state.final:
            assert POOL_TRANSITIONS[state][PoolEvent.STOP] in (PoolState.STOPPING, PoolState.DOWN)
    exits = {state for state, row in POOL_TRANSITIONS.items() if PoolEvent.EXITED in row}
    assert exits == {PoolState.STOPPING, PoolState.DOWN}
