"""A worker's lifecycle, as one transition table (h11's ``_state.py`` shape).

::

    SPAWNED --hello--> CONNECTED --ready--> READY
       |                   |                  |
       +-------------------+------stop--------+--> DRAINING --exited--> STOPPED
       |                   |                  |        |
       +--exited/crashed---+------------------+        +--crashed--> FAILED
                         FAILED                        +--kill-----> KILLED

Events arrive from outside (a message, the process's exit, a deadline passing); the table
has no clock. An event with no entry is an error and leaves the state unchanged. Room is left
for what comes next: heartbeat timeouts (``hung``), respawn with backoff, recycling.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
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
    #: We killed it: the grace period ran out, or the stop was forced.
    KILL = "kill"


_LIVE_BEFORE_DRAIN = (State.SPAWNED, State.CONNECTED, State.READY)

TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.SPAWNED, Event.HELLO): State.CONNECTED,
    (State.CONNECTED, Event.READY): State.READY,
    **{(state, Event.STOP): State.DRAINING for state in _LIVE_BEFORE_DRAIN},
    **{(state, Event.EXITED): State.FAILED for state in _LIVE_BEFORE_DRAIN},
    **{(state, Event.CRASHED): State.FAILED for state in _LIVE_BEFORE_DRAIN},
    (State.DRAINING, Event.EXITED): State.STOPPED,
    (State.DRAINING, Event.CRASHED): State.FAILED,
    **{(state, Event.KILL): State.KILLED for state in (*_LIVE_BEFORE_DRAIN, State.DRAINING)},
    # A killed process still exits, later; it stays KILLED.
    (State.KILLED, Event.EXITED): State.KILLED,
    (State.KILLED, Event.CRASHED): State.KILLED,
}


class TransitionError(Exception):
    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"no transition from {state.name} on {event.name}")
        self.state = state
        self.event = event


class Lifecycle:
    """The state of one worker; ``fire`` moves it by the table or raises."""

    def __init__(self) -> None:
        self.state = State.SPAWNED

    def fire(self, event: Event) -> State:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise TransitionError(self.state, event) from None
        return self.state
