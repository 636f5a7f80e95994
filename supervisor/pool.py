"""The pool: its slots, the processes that fill them, and the rules that keep them filled.

:func:`open_pool` is the only way to have one, and it owns everything it starts: every task
(each process's watcher, each worker's control channel, the watchdog, a reload or a scale) runs
in its task group, and its exit kills and reaps every process it spawned, whatever ended it
(trio's open-process-then-kill shape). A graceful end is :meth:`Pool.stop`, which drains first.

The pool glues parts that each own one idea, and decides nothing itself that a table can:

- ``lifecycle``: the transition tables of a process, a slot and the pool (strict: an illegal
  event raises);
- ``health``: the clock-free policy; the watchdog asks it what to do every tick, and the pool
  asks it what a lost process means (a failed start, a crash loop, a loss to heal);
- ``channel``: each worker's control connection; ``replace``: a slot's new process taking over
  from its old one; ``operations``: reload and scale, run by the pool for whoever asked.

Every change bumps ``Pool.changed``: waiting is "until this predicate holds". Only the watchdog
ticks, since deadlines and heartbeats are about time passing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import anyio.lowlevel

import ipc
from ipc.contract.repository import LayoutError
from ipc.contract.settings import WorkerSettings
from ipc.messages import Hello, Stop, WorkerStatus

from .balance import Balancer
from .channel import Channel
from .launcher import Launcher
from .lifecycle import Event, PoolEvent, PoolLifecycle, PoolState, SlotEvent, SlotState, State
from .operations import Operation, Operations
from .policy import RestartRules, Restarts, Timeouts
from .quarantine import Quarantine
from .replace import take_over
from .settings import Settings
from .slots import Slot
from .spawn import Spawner
from .stats import Counters
from .watchdog import Watchdog
from .workers import WorkerProcess

logger = logging.getLogger("supervisor")


@asynccontextmanager
async def open_pool(
    settings: Settings, spawner: Spawner, control_address: str, timeouts: Timeouts | None = None
) -> AsyncIterator[Pool]:
    """A pool of ``settings.pool.workers`` workers, spawned at once; see :class:`Pool`.

    On exit, whatever caused it, every process still running is killed and reaped.
    """
    async with anyio.create_task_group() as task_group:
        pool = Pool(settings, spawner, control_address, timeouts or Timeouts(), task_group)
        try:
            await pool.start()
            yield pool
        finally:
            with anyio.CancelScope(shield=True):
                await pool.launcher.reap_all()
            pool.launcher.close()
            task_group.cancel_scope.cancel()


class Pool:
    def __init__(
        self,
        settings: Settings,
        spawner: Spawner,
        control_address: str,
        timeouts: Timeouts,
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        self.settings = settings
        self.timeouts = timeouts
        self.task_group = task_group
        pool = settings.pool
        self.rules = RestartRules(
            pool.max_restarts, pool.restart_window, timeouts.backoff_base, timeouts.backoff_max, timeouts.healthy_after
        )
        self.slots = [Slot(index, Restarts(self.rules)) for index in range(pool.workers)]
        self.lifecycle = PoolLifecycle()
        self.launcher = Launcher(self, spawner, control_address)
        self.counters = Counters(self)
        self.operations = Operations(self)
        self.quarantine = Quarantine()
        self.watchdog = Watchdog(self)
        self.balancer = Balancer(self)
        #: Workers lost, by slot and cause (crashed, exited, hung, failed_start, protocol, spawn...).
        self.losses: dict[tuple[int, str], int] = {}
        #: Workers recycled, by why (requests, memory).
        self.recycled: dict[str, int] = {}
        #: Why the pool gave up, and whether it was before it had ever been ready.
        self.failure: str | None = None
        self.failed_to_start = False
        #: The processes that ended during the stop, with their slot's restarts: the stop's report.
        self.ended: list[tuple[WorkerProcess, int]] = []
        self._changed = anyio.Event()

    # --- state and waiting -------------------------------------------------------------------

    @property
    def state(self) -> PoolState:
        return self.lifecycle.state

    @property
    def worker_settings(self) -> WorkerSettings:
        return self.launcher.worker_settings

    @property
    def operation(self) -> Operation | None:
        return self.operations.current

    def changed(self) -> None:
        """Make every ``wait_until`` look at its predicate again."""
        self._changed.set()
        self._changed = anyio.Event()

    wake = changed

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def fire(self, event: PoolEvent) -> None:
        before = self.state
        if self.lifecycle.fire(event) is not before:
            logger.debug("pool: %s -> %s", before.value, self.state.value)
        self.changed()

    def broadcast(self, message: ipc.Message) -> None:
        """Tell every worker that has joined."""
        for process in self.processes():
            if process.channel is not None:
                process.channel.post(message)

    def now(self) -> float:
        return anyio.current_time()

    def processes(self) -> list[WorkerProcess]:
        return [process for slot in self.slots for process in slot.processes]

    def status(self) -> list[WorkerStatus]:
        now = self.now()
        return [row for slot in self.slots for row in slot.status(now)]

    # --- starting, healing -------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.launcher.pin_models()
        except (LayoutError, OSError):
            pass  # none pinned: each worker says what is wrong with the repository as it loads it
        self.task_group.start_soon(self._spawn_all)
        self.task_group.start_soon(self.watchdog.run)

    async def _spawn_all(self) -> None:
        """Each slot's first process, one at a time: a large pool's first workers are greeted,
        and a ``stop`` heard, while the rest are spawned."""
        for slot in self.slots:
            if self.state.ending:
                return
            if slot.state is SlotState.EMPTY:
                slot.fire(SlotEvent.SPAWN)
                await self.launcher.spawn(slot)
            await anyio.lowlevel.checkpoint()

    def exited(self, slot: Slot, process: WorkerProcess, code: int) -> None:
        """``process`` of ``slot`` has exited with ``code`` and been reaped."""
        was = process.state
        process.ended_at = self.now()
        process.fire(Event.EXITED if code == 0 else Event.CRASHED)
        self.counters.retire(process)
        slot.processes.remove(process)
        if self.state.ending:
            self.ended.append((process, slot.restarts.count))
        if slot.incoming is process:
            slot.incoming = None
            self.watchdog.lost(slot, process, code, replacement=True)
        elif slot.current is process and slot.live:
            slot.current = None
            if was is not State.KILLED and process.ready_at is not None and not self.state.ending:
                logger.error(
                    "worker %d (pid %d) exited unexpectedly: %s", slot.index, process.pid, process.exit_detail(code)
                )
            self.watchdog.lost(slot, process, code)
        elif code != 0 and was is not State.KILLED and not self.state.ending:
            logger.error("worker %d (pid %d) exited with code %d while draining away", slot.index, process.pid, code)
        self.check_health()

    def respawn(self, slot: Slot) -> None:
        """Refill ``slot`` (in BACKOFF) now."""
        slot.fire(SlotEvent.SPAWN)
        self.task_group.start_soon(self.launcher.spawn, slot)

    def give_up(self, reason: str, failed_to_start: bool = False, logged: bool = False) -> None:
        """The pool is down: ``reason`` (``logged`` already, in more words), and whether it
        never started."""
        if self.state.ending:
            return
        self.failure = reason
        self.failed_to_start = failed_to_start
        if not logged:
            logger.error("%s", reason)
        self.fire(PoolEvent.GIVE_UP)

    def check_health(self) -> None:
        if all(slot.serving for slot in self.slots):
            self.fire(PoolEvent.ALL_READY)
        else:
            self.changed()

    # --- what the workers say ----------------------------------------------------------------

    def adopt(self, hello: Hello, connection: ipc.Connection) -> None:
        """Serve the control connection of the worker that sent ``hello`` from now on: the
        control server hands it over and forgets it."""
        self.task_group.start_soon(Channel.serve_worker, self, hello, connection)

    def ready(self, process: WorkerProcess) -> None:
        """``process`` says it serves."""
        slot = self.slots[process.slot]
        first = process.state is State.CONNECTED
        process.fire(Event.READY)
        if not first:
            return  # it was told to stop (or killed) before it got there
        process.ready_at = self.now()
        process.deadline = None
        if slot.served_at is None:
            slot.served_at = process.ready_at
        slot.restarts.on_started()
        if slot.current is process and slot.state is SlotState.STARTING:
            slot.fire(SlotEvent.READY)
        elif slot.incoming is process:
            take_over(self, slot, process)
        if self.state is PoolState.STARTING:  # a progress count while the pool starts
            ready = sum(slot.serving for slot in self.slots)
            logger.info("worker %d ready (pid %d): %d of %d", process.slot, process.pid, ready, len(self.slots))
        else:
            logger.info("worker %d ready (pid %d)", process.slot, process.pid)
        self.check_health()
        self.balancer.check(joined=process)

    # --- stopping ----------------------------------------------------------------------------

    def force(self) -> None:
        """Kill what is still running now, rather than at the end of the grace period."""
        self.launcher.forced = True
        for process in self.processes():
            self.launcher.kill(process, "the stop was forced")

    async def stop(self, grace: float, drain_delay: float | None = None) -> bool:
        """Drain every ready worker within ``grace``; end the others at once.

        Whether the stop was clean: every worker drained, reported, and exited 0, dropping no
        request.
        """
        self.fire(PoolEvent.STOP)
        for slot in self.slots:
            slot.fire(SlotEvent.RETIRE)
        live = [process for process in self.processes() if process.running and process.state is not State.KILLED]
        logger.info("stopping: draining %d workers (grace %gs)", len(live), grace)
        delay = self.settings.pool.drain_delay if drain_delay is None else drain_delay
        for process in live:
            self.launcher.drain(process, Stop(grace, drain_delay=delay), "it was not ready when the pool stopped")
        # The watchdog enforces every deadline; this bound is only its backstop.
        with anyio.move_on_after(delay + grace + 2 * self.timeouts.exit_margin):
            await self.wait_until(lambda: not self.processes())
        await self.launcher.reap_all()
        self.fire(PoolEvent.EXITED)
        for status in self.stop_report():
            _log_end(status)
        return all(process.ended_cleanly for process, _ in self.ended)

    def stop_report(self) -> list[WorkerStatus]:
        """How each process that ended during the stop ended."""
        return [process.status(self.now(), restarts) for process, restarts in self.ended]


def _log_end(status: WorkerStatus) -> None:
    if status.state == State.STOPPED.value and status.completed is not None:
        logger.info(
            "worker %d stopped: %d in-flight finished, %d dropped; %d served in all (exit %s)",
            status.slot, status.completed, status.dropped, status.served, status.exit_code,
        )  # fmt: skip
    else:
        logger.info("worker %d %s (exit %s)", status.slot, status.state, status.exit_code)
