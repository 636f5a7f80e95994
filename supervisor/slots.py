"""A slot: one place in the pool, filled by one process at a time (two while it is replaced).

A pool of N workers has N slots. A slot keeps its index for the pool's whole life and counts
its generations and restarts; its state is its table's (``supervisor.lifecycle``:
EMPTY, STARTING, SERVING, REPLACING, BACKOFF, FAILED, RETIRED), and beside the state it holds
only what that state refers to: the process it counts on (``current``), the replacement that
starts beside it (``incoming``, while REPLACING) and when its next process is due (``due``, in
BACKOFF).
"""

from __future__ import annotations

import dataclasses

from ipc.messages import WorkerStatus

from .lifecycle import SlotEvent, SlotLifecycle, SlotState
from .policy import Restarts
from .workers import WorkerProcess


@dataclasses.dataclass(eq=False)
class Slot:
    index: int
    restarts: Restarts
    lifecycle: SlotLifecycle = dataclasses.field(default_factory=SlotLifecycle)
    #: Processes spawned into it so far.
    generation: int = 0
    #: The process it counts on to serve (or to start serving); None while one is spawned or due.
    current: WorkerProcess | None = None
    #: Its replacement while it starts (REPLACING); None while it is being spawned.
    incoming: WorkerProcess | None = None
    #: When its next process is due (on the pool's clock), in BACKOFF.
    due: float | None = None
    #: When its first worker became ready: until then a failure is a failed start (the pool's,
    #: or a scale's), not a loss to heal.
    served_at: float | None = None
    #: Every process of it not reaped yet: the current one, its replacement, those draining away.
    processes: list[WorkerProcess] = dataclasses.field(default_factory=list)

    @property
    def state(self) -> SlotState:
        return self.lifecycle.state

    @property
    def serving(self) -> bool:
        return self.state in (SlotState.SERVING, SlotState.REPLACING)

    @property
    def live(self) -> bool:
        """Not failed nor retired: it is, or will again be, filled."""
        return self.state not in (SlotState.FAILED, SlotState.RETIRED)

    def fire(self, event: SlotEvent, due: float | None = None) -> None:
        """Move by the table; ``due``: when the next process is due, for a move into BACKOFF."""
        self.lifecycle.fire(event)
        self.due = due if self.state is SlotState.BACKOFF else None

    def status(self, now: float) -> list[WorkerStatus]:
        rows = [process.status(now, self.restarts.count) for process in self.processes]
        if self.state is SlotState.BACKOFF and self.due is not None:
            rows.append(
                WorkerStatus(
                    slot=self.index,
                    generation=self.generation,
                    pid=None,
                    state="restarting",
                    restarts=self.restarts.count,
                    reason=f"replacement due in {max(0.0, self.due - now):.1f}s",
                )
            )
        return rows
