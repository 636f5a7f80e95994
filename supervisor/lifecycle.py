"""Lifecycles as transition tables (h11's ``_state.py`` shape): a worker process's, a slot's, and
the pool's.

Every legal (state, event) pair is written out below, self-loops included; anything else is an
error that leaves the state unchanged (:class:`TransitionError`). The tables have no clock and
no I/O: events arrive from outside (a message, a process's exit, a deadline passing).

A worker process::

    SPAWNED --hello--> CONNECTED --ready--> READY
       |                   |                  |
       +-------------------+------stop--------+--> DRAINING --exited--> STOPPED
       |                   |                  |        |
       +--exited/crashed---+------------------+        +--crashed--> FAILED
                         FAILED                        +--kill-----> KILLED

A slot (one place in the pool, filled by one process at a time, two while it is replaced)::

    EMPTY --spawn--> STARTING --ready--> SERVING --replace--> REPLACING --take_over/abandon--> SERVING
                      |  ^                 |                     |
              refused/lost  spawn     lost |          promote: the old one was lost, the new
                      v  |                 v                     one takes the slot (STARTING)
                     BACKOFF <-------------+
    any live state --fail--> FAILED (its workers cannot start: a crash loop, a failed start)
    any state --retire--> RETIRED (scaled away, or the pool stops: nothing more is spawned in it)

The pool::

    STARTING --all_ready--> READY <--all_ready-- DEGRADED
                            |  ^  \\--lost--------^    ^
                  reload/scale  done                  |
                            v  |                      |
                       RELOADING / SCALING --lost-----+ (stays: the operation goes on)

    any of those --stop--> STOPPING --exited--> STOPPED
    any of those --give_up--> DOWN  (a crash loop, a failed start: exits non-zero)

After ``done`` the pool states its health again (``lost`` or ``all_ready``), so the tables need
not know it.
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


TRANSITIONS: dict[State, dict[Event, State]] = {
    State.SPAWNED: {
        Event.HELLO: State.CONNECTED,
        Event.STOP: State.DRAINING,
        Event.EXITED: State.FAILED,
        Event.CRASHED: State.FAILED,
        Event.KILL: State.KILLED,
    },
    State.CONNECTED: {
        Event.READY: State.READY,
        Event.STOP: State.DRAINING,
        Event.EXITED: State.FAILED,
        Event.CRASHED: State.FAILED,
        Event.KILL: State.KILLED,
    },
    State.READY: {
        Event.STOP: State.DRAINING,
        Event.EXITED: State.FAILED,
        Event.CRASHED: State.FAILED,
        Event.KILL: State.KILLED,
    },
    State.DRAINING: {
        # A Ready the worker sent before it read its Stop; a second Stop (the pool's own, for
        # a worker already draining away).
        Event.READY: State.DRAINING,
        Event.STOP: State.DRAINING,
        Event.EXITED: State.STOPPED,
        Event.CRASHED: State.FAILED,
        Event.KILL: State.KILLED,
    },
    # A killed process still exits, later; a Ready may cross the kill.
    State.KILLED: {Event.READY: State.KILLED, Event.EXITED: State.KILLED, Event.CRASHED: State.KILLED},
    State.STOPPED: {},
    State.FAILED: {},
}


class SlotState(enum.Enum):
    #: Nothing spawned in it yet.
    EMPTY = "empty"
    #: Its process is being spawned, or starts (not ready yet).
    STARTING = "starting"
    #: Its process is ready.
    SERVING = "serving"
    #: Its process serves while a replacement starts (a reload, recycling): the new one takes
    #: the slot once ready, and only then does the old one drain.
    REPLACING = "replacing"
    #: Its worker was lost (or the system refused a process): the next is due after a backoff.
    BACKOFF = "backoff"
    #: Its workers cannot start (a crash loop, a failed start): nothing more is spawned in it.
    FAILED = "failed"
    #: Scaled away, or the pool stops: its processes drain, nothing more is spawned in it.
    RETIRED = "retired"


class SlotEvent(enum.Enum):
    #: A process for the slot is being spawned.
    SPAWN = "spawn"
    #: The system refused that process.
    REFUSED = "refused"
    #: Its process is ready.
    READY = "ready"
    #: Its process was lost; a new one after the backoff (which may be none).
    LOST = "lost"
    #: A replacement is being started beside its process.
    REPLACE = "replace"
    #: The replacement is ready: it takes the slot, the old process drains away.
    TAKE_OVER = "take_over"
    #: The replacement did not become ready: the old process serves on.
    ABANDON = "abandon"
    #: The old process was lost while its replacement started: the replacement takes the slot.
    PROMOTE = "promote"
    FAIL = "fail"
    RETIRE = "retire"


SLOT_TRANSITIONS: dict[SlotState, dict[SlotEvent, SlotState]] = {
    SlotState.EMPTY: {SlotEvent.SPAWN: SlotState.STARTING, SlotEvent.RETIRE: SlotState.RETIRED},
    SlotState.STARTING: {
        SlotEvent.READY: SlotState.SERVING,
        SlotEvent.REFUSED: SlotState.BACKOFF,
        SlotEvent.LOST: SlotState.BACKOFF,
        SlotEvent.FAIL: SlotState.FAILED,
        SlotEvent.RETIRE: SlotState.RETIRED,
    },
    SlotState.SERVING: {
        SlotEvent.REPLACE: SlotState.REPLACING,
        SlotEvent.LOST: SlotState.BACKOFF,
        SlotEvent.FAIL: SlotState.FAILED,
        SlotEvent.RETIRE: SlotState.RETIRED,
    },
    SlotState.REPLACING: {
        SlotEvent.TAKE_OVER: SlotState.SERVING,
        SlotEvent.ABANDON: SlotState.SERVING,
        SlotEvent.PROMOTE: SlotState.STARTING,
        SlotEvent.LOST: SlotState.BACKOFF,
        SlotEvent.FAIL: SlotState.FAILED,
        SlotEvent.RETIRE: SlotState.RETIRED,
    },
    SlotState.BACKOFF: {
        SlotEvent.SPAWN: SlotState.STARTING,
        SlotEvent.FAIL: SlotState.FAILED,
        SlotEvent.RETIRE: SlotState.RETIRED,
    },
    SlotState.FAILED: {SlotEvent.RETIRE: SlotState.RETIRED},
    SlotState.RETIRED: {SlotEvent.RETIRE: SlotState.RETIRED},
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

    @property
    def ending(self) -> bool:
        """Stopping or stopped, or given up: no new process is spawned."""
        return self in (PoolState.STOPPING, PoolState.STOPPED, PoolState.DOWN)


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


POOL_TRANSITIONS: dict[PoolState, dict[PoolEvent, PoolState]] = {
    PoolState.STARTING: {
        PoolEvent.ALL_READY: PoolState.READY,
        # A worker that was ready and is lost while others still start: heal it, start on.
        PoolEvent.LOST: PoolState.STARTING,
        PoolEvent.STOP: PoolState.STOPPING,
        PoolEvent.GIVE_UP: PoolState.DOWN,
    },
    PoolState.READY: {
        PoolEvent.ALL_READY: PoolState.READY,
        PoolEvent.LOST: PoolState.DEGRADED,
        PoolEvent.RELOAD: PoolState.RELOADING,
        PoolEvent.SCALE: PoolState.SCALING,
        PoolEvent.STOP: PoolState.STOPPING,
        PoolEvent.GIVE_UP: PoolState.DOWN,
    },
    PoolState.DEGRADED: {
        PoolEvent.ALL_READY: PoolState.READY,
        PoolEvent.LOST: PoolState.DEGRADED,
        PoolEvent.RELOAD: PoolState.RELOADING,
        PoolEvent.SCALE: PoolState.SCALING,
        PoolEvent.STOP: PoolState.STOPPING,
        PoolEvent.GIVE_UP: PoolState.DOWN,
    },
    # A reload or scale goes on through losses: its own steps refill the slots.
    PoolState.RELOADING: {
        PoolEvent.ALL_READY: PoolState.RELOADING,
        PoolEvent.LOST: PoolState.RELOADING,
        PoolEvent.DONE: PoolState.READY,
        PoolEvent.STOP: PoolState.STOPPING,
        PoolEvent.GIVE_UP: PoolState.DOWN,
    },
    PoolState.SCALING: {
        PoolEvent.ALL_READY: PoolState.SCALING,
        PoolEvent.LOST: PoolState.SCALING,
        PoolEvent.DONE: PoolState.READY,
        PoolEvent.STOP: PoolState.STOPPING,
        PoolEvent.GIVE_UP: PoolState.DOWN,
    },
    # While stopping or down, workers come and go without changing what the pool is doing.
    PoolState.STOPPING: {
        PoolEvent.ALL_READY: PoolState.STOPPING,
        PoolEvent.LOST: PoolState.STOPPING,
        PoolEvent.DONE: PoolState.STOPPING,
        PoolEvent.STOP: PoolState.STOPPING,
        PoolEvent.EXITED: PoolState.STOPPED,
    },
    PoolState.DOWN: {
        PoolEvent.ALL_READY: PoolState.DOWN,
        PoolEvent.LOST: PoolState.DOWN,
        PoolEvent.DONE: PoolState.DOWN,
        PoolEvent.STOP: PoolState.DOWN,
        PoolEvent.GIVE_UP: PoolState.DOWN,
        PoolEvent.EXITED: PoolState.DOWN,
    },
    PoolState.STOPPED: {},
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

    def __init__(self, table: Mapping[S, Mapping[E, S]], initial: S) -> None:
        self._table = table
        self.state = initial

    def allows(self, event: E) -> bool:
        return event in self._table[self.state]

    def fire(self, event: E) -> S:
        try:
            self.state = self._table[self.state][event]
        except KeyError:
            raise TransitionError(self.state, event) from None
        return self.state


class Lifecycle(Machine[State, Event]):
    """One worker process's state."""

    def __init__(self) -> None:
        super().__init__(TRANSITIONS, State.SPAWNED)


class SlotLifecycle(Machine[SlotState, SlotEvent]):
    """One slot's state."""

    def __init__(self) -> None:
        super().__init__(SLOT_TRANSITIONS, SlotState.EMPTY)


class PoolLifecycle(Machine[PoolState, PoolEvent]):
    """The pool's state."""

    def __init__(self) -> None:
        super().__init__(POOL_TRANSITIONS, PoolState.STARTING)
