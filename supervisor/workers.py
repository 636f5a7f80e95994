"""What the pool knows of one worker process (gunicorn's arbiter, supervisord's process record).

Each process spawned into a slot is a new :class:`WorkerProcess`, dropped from its slot once it
has exited and been reaped. Its state is its lifecycle table's (``supervisor.lifecycle``); the
rest is what it said and what was done to it, for the health policy and for ``status``.
"""

from __future__ import annotations

import dataclasses
import signal
from typing import TYPE_CHECKING

from ipc.messages import Heartbeat, Stopped, WorkerStatus

from .lifecycle import Event, Lifecycle, State
from .spawn import ProcessHandle

if TYPE_CHECKING:
    from .channel import Channel


@dataclasses.dataclass(eq=False)
class WorkerProcess:
    """One spawned process of a slot."""

    slot: int
    generation: int
    handle: ProcessHandle
    spawned_at: float
    lifecycle: Lifecycle = dataclasses.field(default_factory=Lifecycle)
    #: Its control channel, once it has joined and until the connection ends.
    channel: Channel | None = None
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
    #: Recycled once it has answered this many requests (--max-requests plus its jitter).
    request_limit: int | None = None
    #: Replacements tried for recycling it that could not start, and when to try again.
    recycle_failures: int = 0
    recycle_after: float = 0.0

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
    def starting(self) -> bool:
        return self.state in (State.SPAWNED, State.CONNECTED)

    @property
    def ended_cleanly(self) -> bool:
        """It drained and exited 0 dropping nothing, or it never served: nothing was lost."""
        if self.ready_at is None:
            return True
        return self.state is State.STOPPED and not (self.report and self.report.dropped)

    @property
    def drained(self) -> bool:
        """It stopped as asked, having finished every request it held."""
        report = self.report
        return self.exit_code == 0 and self.state is not State.KILLED and (report is None or not report.dropped)

    def fire(self, event: Event) -> None:
        self.lifecycle.fire(event)

    def set_deadline(self, at: float, reason: str) -> None:
        """Kill it at ``at`` unless an earlier deadline already stands."""
        if self.deadline is None or at < self.deadline:
            self.deadline, self.deadline_reason = at, reason

    def exit_detail(self, code: int) -> str:
        """How it ended, in words that hold whatever the platform reports."""
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        if code == 0 and self.report is None and self.ready_at is not None:
            # A worker that ends by itself says so first (Stopped). Ended from outside, Windows
            # reports whatever code the killer gave TerminateProcess: taskkill /F under Wine
            # gives 0, which read "exited with code 0" as if nothing were wrong.
            return "it ended without saying why (exit code 0)"
        return f"exit code {code}"

    def how_it_ended(self) -> str:
        """One line for a reload's or a scale's report."""
        pid = f"pid {self.pid}"
        if self.state is State.KILLED:
            return f"{pid} killed ({self.reason or 'by the supervisor'})"
        if self.exit_code not in (0, None):
            return f"{pid} exited with code {self.exit_code}"
        if self.ready_at is not None and self.report is None:
            return f"{pid} {self.exit_detail(0)}"
        if self.ready_at is None:
            return f"{pid} stopped before it was ready"
        dropped = self.report.dropped if self.report is not None else 0
        return f"{pid} drained and stopped" + (f", dropping {dropped} requests" if dropped else "")

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
