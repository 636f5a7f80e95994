"""What the pool knows of its slots and their processes (gunicorn's arbiter, supervisord).

A pool of N workers has N :class:`Slot`\\s. A slot keeps its index for the pool's whole life
and counts its generations and restarts; each process spawned into it is a new
:class:`WorkerProcess` record, and is dropped from the slot once it has exited and been
reaped. A reload, a respawn or a scale step is a change of a slot's process, never of the
pool's shape.
"""

from __future__ import annotations

import dataclasses

import anyio
from anyio.streams.memory import MemoryObjectSendStream

import ipc
from ipc.messages import Heartbeat, Stopped, WorkerStatus

from .lifecycle import Lifecycle, State
from .policy import Restarts
from .spawn import ProcessHandle


@dataclasses.dataclass(eq=False)
class WorkerProcess:
    """One spawned process of a slot."""

    slot: int
    generation: int
    handle: ProcessHandle
    spawned_at: float
    lifecycle: Lifecycle = dataclasses.field(default_factory=Lifecycle)
    #: Its control connection, and the queue of messages going out on it, once it has joined.
    connection: ipc.Connection | None = None
    outbox: MemoryObjectSendStream[ipc.Message] | None = None
    ready_at: float | None = None
    #: When the supervisor last heard anything from it.
    last_heard: float | None = None
    heartbeat: Heartbeat | None = None
    exit_code: int | None = None
    ended_at: float | None = None
    #: How its drain ended, in its own words.
    report: Stopped | None = None
    #: Why it failed or was killed, in a few words, and as one word for the metrics.
    reason: str | None = None
    cause: str | None = None
    #: It told us itself why it could not go on (an Error message): its models will not load.
    said_why: bool = False
    #: Killed at this time (on the pool's clock) unless it has exited by then, for ``deadline_reason``.
    deadline: float | None = None
    deadline_reason: str = ""
    #: Its slot no longer counts on it (it is being replaced or drained away): when it ends,
    #: the slot is not refilled.
    retiring: bool = False
    #: Recycled once it has answered this many requests (--max-requests plus its jitter).
    request_limit: int | None = None
    #: Replacements tried for recycling it that could not start, and when to try again.
    recycle_failures: int = 0
    recycle_after: float = 0.0
    #: Set when its control connection has ended.
    disconnected: anyio.Event = dataclasses.field(default_factory=anyio.Event)

    @property
    def state(self) -> State:
        return self.lifecycle.state

    @property
    def pid(self) -> int:
        return self.handle.pid

    @property
    def running(self) -> bool:
        return self.exit_code is None

    @property
    def ended_cleanly(self) -> bool:
        """It drained and exited 0 dropping nothing, or it never served: nothing was lost."""
        if self.ready_at is None:
            return True
        return self.state is State.STOPPED and not (self.report and self.report.dropped)

    def set_deadline(self, at: float, reason: str) -> None:
        """Kill it at ``at`` unless an earlier deadline already stands."""
        if self.deadline is None or at < self.deadline:
            self.deadline, self.deadline_reason = at, reason

    def status(self, now: float, restarts: int) -> WorkerStatus:
        report = self.report
        return WorkerStatus(
            slot=self.slot,
            generation=self.generation,
            pid=self.pid,
            state=self.state.value,
            uptime=round((self.ended_at or now) - self.spawned_at, 3),
            restarts=restarts,
            in_flight=self.heartbeat.in_flight if self.heartbeat and self.running else 0,
            heartbeat_age=round(now - self.last_heard, 3) if self.last_heard is not None and self.running else None,
            rss=self.heartbeat.rss if self.heartbeat and self.running else 0,
            exit_code=self.exit_code,
            completed=report.completed if report else None,
            dropped=report.dropped if report else None,
            served=report.served if report else None,
            reason=self.reason,
        )


@dataclasses.dataclass(eq=False)
class Slot:
    """One place in the pool, filled by one process at a time (two while it is replaced)."""

    index: int
    restarts: Restarts
    generation: int = 0
    #: The process this slot counts on to serve (or to start serving); None while it waits to
    #: be refilled.
    current: WorkerProcess | None = None
    #: Its replacement while it starts (a reload, a recycling): it becomes ``current`` once
    #: ready, and only then does the old one drain.
    incoming: WorkerProcess | None = None
    #: A replacement is under way: one at a time per slot.
    replacing: bool = False
    #: It has had a ready worker: until then, a failure is a failed start (the pool's, or a
    #: scale's), not a loss to heal.
    ever_ready: bool = False
    #: Every process of this slot that has not been reaped yet: the current one, and those
    #: draining away.
    processes: list[WorkerProcess] = dataclasses.field(default_factory=list)
    #: When a lost worker's replacement is due (on the pool's clock), during its backoff.
    respawn_at: float | None = None

    @property
    def serving(self) -> bool:
        return self.current is not None and self.current.state is State.READY

    def status(self, now: float) -> list[WorkerStatus]:
        rows = [process.status(now, self.restarts.count) for process in self.processes]
        if self.respawn_at is not None and self.current is None:
            rows.append(
                WorkerStatus(
                    slot=self.index,
                    generation=self.generation,
                    pid=None,
                    state="restarting",
                    restarts=self.restarts.count,
                    reason=f"replacement due in {max(0.0, self.respawn_at - now):.1f}s",
                )
            )
        return rows
