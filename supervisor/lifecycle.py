"""Lifecycles as transition tables (h11's ``_state.py`` shape): one per worker process, one for
the pool.

A worker process::

    SPAWNED --hello--> CONNECTED --ready--> READY
       |                   |                  |
       +-------------------+------stop--------+--> DRAINING --exited--> STOPPED
       |                   |                  |        |
       +--exited/crashed---+------------------+        +--crashed--> FAILED
                         FAILED                        +--kill-----> KILLED

The pool::

    STARTING --all_ready--> READY <--all_ready-- DEGRADED
                            |  ^  \\--lost--------^    ^
                  reload/scale  done                  |
                            v  |                      |
                       RELOADING / SCALING --lost-----+ (stays: the operation goes on)

    any of those --stop--> STOPPING --exited--> STOPPED
    any of those --give_up--> DOWN  (a crash loop, a failed start: exits non-zero)

Events arrive from outside (a message, a process's exit, a deadline passing); the tables have
no clock. An event with no entry is an error and leaves the state unchanged. After ``done``,
the pool states its health again (``lost`` or ``all_ready``), so the tables need not know it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, TypeVar


class State(enum.Enum):
    """A worker process's state."""

    SPAWNED = "spawned"
    CONNECTED = "connected"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"
    KILLED = "killed"

    @property
    def alive(self) -> bool:
        return self not in (State.STOPPED, State.FAILED, State.KILLED)


class Event(enum.Enum):
    HELLO = "hello"
    READY = "ready"
    STOP = "stop"
    #: The process exited with code 0.
    EXITED = "exited"
    #: The process exited with another code.
    CRASHED = "crashed"
    #: We killed it: hung, never ready, broke the protocol, or a stop ran out of time.
    KILL = "kill"


_BEFORE_DRAIN = (State.SPAWNED, State.CONNECTED, State.READY)

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.SPAWNED, Event.HELLO): State.CONNECTED,
    (State.CONNECTED, Event.READY): State.READY,
    **{(state, Event.STOP): State.DRAINING for state in _BEFORE_DRAIN},
    **{(state, Event.EXITED): State.FAILED for state in _BEFORE_DRAIN},
    **{(state, Event.CRASHED): State.FAILED for state in _BEFORE_DRAIN},
    (State.DRAINING, Event.EXITED): State.STOPPED,
    (State.DRAINING, Event.CRASHED): State.FAILED,
    **{(state, Event.KILL): State.KILLED for state in (*_BEFORE_DRAIN, State.DRAINING)},
    # A killed process still exits, later; it stays KILLED.
    (State.KILLED, Event.EXITED): State.KILLED,
    (State.KILLED, Event.CRASHED): State.KILLED,
}


class PoolState(enum.Enum):
    #: Not every slot has had a ready worker yet.
    STARTING = "starting"
    #: Every slot has a ready worker.
    READY = "ready"
    #: A slot lost its worker; it is being refilled.
    DEGRADED = "degraded"
    #: A rolling reload replaces the workers slot by slot.
    RELOADING = "reloading"
    #: Slots are being added, or drained and removed.
    SCALING = "scaling"
    #: Draining every worker, on request.
    STOPPING = "stopping"
    STOPPED = "stopped"
    #: Gave up: a crash loop, or workers that could not start. Ends with a non-zero exit.
    DOWN = "down"

    @property
    def final(self) -> bool:
        return self in (PoolState.STOPPED, PoolState.DOWN)


class PoolEvent(enum.Enum):
    #: Every slot now has a ready worker.
    ALL_READY = "all_ready"
    #: A slot lost its worker (exit, crash, hang, or one that broke the protocol).
    LOST = "lost"
    RELOAD = "reload"
    SCALE = "scale"
    #: The reload or scale has ended (done, failed or cut short).
    DONE = "done"
    STOP = "stop"
    GIVE_UP = "give_up"
    #: Every process of the pool has exited.
    EXITED = "exited"


_SERVING = (PoolState.STARTING, PoolState.READY, PoolState.DEGRADED, PoolState.RELOADING, PoolState.SCALING)
_OPERATING = (PoolState.RELOADING, PoolState.SCALING)

POOL_TRANSITIONS: dict[tuple[PoolState, PoolEvent], PoolState] = {
    (PoolState.STARTING, PoolEvent.ALL_READY): PoolState.READY,
    # A worker that was ready and is lost while others still start: heal it, start on.
    (PoolState.STARTING, PoolEvent.LOST): PoolState.STARTING,
    (PoolState.READY, PoolEvent.ALL_READY): PoolState.READY,
    (PoolState.READY, PoolEvent.LOST): PoolState.DEGRADED,
    (PoolState.DEGRADED, PoolEvent.LOST): PoolState.DEGRADED,
    (PoolState.DEGRADED, PoolEvent.ALL_READY): PoolState.READY,
    **{(state, PoolEvent.RELOAD): PoolState.RELOADING for state in (PoolState.READY, PoolState.DEGRADED)},
    **{(state, PoolEvent.SCALE): PoolState.SCALING for state in (PoolState.READY, PoolState.DEGRADED)},
    # A reload or scale goes on through losses: its own steps refill the slots.
    **{(state, PoolEvent.LOST): state for state in _OPERATING},
    **{(state, PoolEvent.ALL_READY): state for state in _OPERATING},
    **{(state, PoolEvent.DONE): PoolState.READY for state in _OPERATING},
    **{(state, PoolEvent.STOP): PoolState.STOPPING for state in (*_SERVING, PoolState.STOPPING)},
    **{(state, PoolEvent.GIVE_UP): PoolState.DOWN for state in (*_SERVING, PoolState.DOWN)},
    # While stopping or down, workers come and go without changing what the pool is doing.
    **{
        (state, event): state
        for state in (PoolState.STOPPING, PoolState.DOWN)
        for event in (PoolEvent.LOST, PoolEvent.ALL_READY, PoolEvent.DONE)
    },
    (PoolState.STOPPING, PoolEvent.EXITED): PoolState.STOPPED,
    (PoolState.DOWN, PoolEvent.EXITED): PoolState.DOWN,
    (PoolState.DOWN, PoolEvent.STOP): PoolState.DOWN,
}

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class TransitionError(Exception):
    def __init__(self, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"no transition from {state.name} on {event.name}")
        self.state = state
        self.event = event


class Machine(Generic[S, E]):
    """A state and the table that moves it; ``fire`` moves it by the table or raises."""

    def __init__(self, table: Mapping[tuple[S, E], S], initial: S) -> None:
        self._table = table
        self.state = initial

    def fire(self, event: E) -> S:
        try:
            self.state = self._table[self.state, event]
        except KeyError:
            raise TransitionError(self.state, event) from None
        return self.state


class Lifecycle(Machine[State, Event]):
    """One worker process's state."""

    def __init__(self) -> None:
        super().__init__(TRANSITIONS, State.SPAWNED)


class PoolLifecycle(Machine[PoolState, PoolEvent]):
    """The pool's state."""

    def __init__(self) -> None:
        super().__init__(POOL_TRANSITIONS, PoolState.STARTING)
