"""The pool: slots, the processes that fill them, and the rules that keep them filled.

:func:`open_pool` is the only way to have one, and it owns everything it starts: its tasks
live in its own task group, and its exit kills and reaps every process it spawned, whatever
ended it (trio's open-process-then-kill shape). A graceful end is :meth:`Pool.stop`, which
drains first.

Health, in one watchdog task on the pool's clock:

- a worker that exits, crashes or is killed outside a stop is replaced in its slot, at once the
  first time and then after a doubling backoff that resets once a worker has served for a
  while (:mod:`supervisor.policy`); a slot that needs more than ``max_restarts`` replacements
  within ``restart_window`` is a crash loop, and the pool gives up (``DOWN``);
- a worker silent for ``heartbeat_timeout`` is hung: killed and replaced;
- a worker not ready within ``ready_timeout`` is killed: before the pool has started, that
  fails the start; after, it counts as a loss;
- a worker that breaks the control protocol gets an ``Error``, is killed, and is replaced.

Every change bumps ``Pool.changed``: waiting is "until this predicate holds", never a sleep.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

import ipc
from ipc.contract import repository
from ipc.contract.launch import LaunchOptions
from ipc.messages import (
    Configure,
    Error,
    Heartbeat,
    Hello,
    PoolStatsReply,
    PoolStatsRequest,
    Ready,
    StatsReport,
    StatsRequest,
    Stop,
    Stopped,
    Welcome,
    WorkerStatus,
)

from .lifecycle import Event, PoolEvent, PoolLifecycle, PoolState, State, TransitionError
from .policy import RestartRules, Restarts, Timeouts
from .settings import Settings
from .spawn import Spawner, SpawnRequest, event_loop
from .stats import StatsBook
from .workers import Slot, WorkerProcess

logger = logging.getLogger("supervisor")

#: Messages queued for one worker before its channel counts as stuck.
OUTBOX_SIZE = 64
#: Further tries, ``backoff_base`` apart, when the system refuses a replacement's process.
SPAWN_RETRIES = 2


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
            pool.start()
            yield pool
        finally:
            with anyio.CancelScope(shield=True):
                await pool.reap_all()
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
        self.spawner = spawner
        self.control_address = control_address
        self.timeouts = timeouts
        self._task_group = task_group
        pool = settings.pool
        self.worker_settings = dataclasses.replace(
            settings.worker,
            heartbeat_interval=min(1.0, pool.heartbeat_timeout / 4),
            import_path=settings.worker.import_path or os.getcwd(),
        )
        try:
            self.pin_models()
        except (repository.LayoutError, OSError):
            pass  # none pinned: each worker says what is wrong with the repository as it loads it
        self._rules = RestartRules(
            pool.max_restarts, pool.restart_window, timeouts.backoff_base, timeouts.backoff_max, timeouts.healthy_after
        )
        self.slots = [Slot(index, Restarts(self._rules)) for index in range(pool.workers)]
        self.lifecycle = PoolLifecycle()
        self.book = StatsBook()
        #: Every worker's cumulative metrics (worker.api.metrics), those of workers gone included.
        self.metrics = StatsBook()
        #: Workers lost, by slot and cause (crashed, exited, hung, failed_start, protocol...).
        self.losses: dict[tuple[int, str], int] = {}
        #: Workers recycled, by why (requests, memory).
        self.recycled: dict[str, int] = {}
        #: Why the pool gave up, and whether it was before it had ever been ready.
        self.failure: str | None = None
        self.failed_to_start = False
        self.forced = False
        #: The processes that ended during the stop, with their slot's restarts: the stop's report.
        self.ended: list[tuple[WorkerProcess, int]] = []
        self._changed = anyio.Event()
        self._request_ids = itertools.count(1)
        self._stats_waiters: dict[int, anyio.Event] = {}
        self._fan_out: anyio.Event | None = None

    # --- waiting -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def wake(self) -> None:
        """Make every ``wait_until`` look at its predicate again."""
        self._notify()

    @property
    def state(self) -> PoolState:
        return self.lifecycle.state

    def _fire_pool(self, event: PoolEvent) -> None:
        try:
            before, after = self.state, self.lifecycle.fire(event)
        except TransitionError as exc:
            logger.debug("pool: %s", exc)
            return
        if after is not before:
            logger.debug("pool: %s -> %s", before.value, after.value)
        self._notify()

    def _fire(self, process: WorkerProcess, event: Event) -> None:
        try:
            process.lifecycle.fire(event)
        except TransitionError as exc:
            logger.debug("worker %d: %s", process.slot, exc)
        self._notify()

    def _now(self) -> float:
        return anyio.current_time()

    def processes(self) -> list[WorkerProcess]:
        return [process for slot in self.slots for process in slot.processes]

    # --- spawning and health -----------------------------------------------------------------

    def start(self) -> None:
        self._task_group.start_soon(self._spawn_all)
        self._task_group.start_soon(self._watchdog)

    async def _spawn_all(self) -> None:
        """Each slot's first process, with a checkpoint after each: a spawn costs a fork and an
        exec (tens of milliseconds on Windows), and while a large pool starts, the workers
        already up must be greeted and a ``stop`` heard."""
        for slot in self.slots:
            if self._ending():
                return
            if slot.current is None and slot.respawn_at is None:
                self._spawn(slot)
            await anyio.lowlevel.checkpoint()

    def _spawn(self, slot: Slot) -> WorkerProcess | None:
        """A new process for ``slot``: its ``current`` if the slot has none running, else its
        ``incoming`` (a replacement that takes over once ready). ``None`` if no process could be
        started (out of file descriptors or memory, say): that counts as a loss of the slot."""
        slot.respawn_at = None
        pool = self.settings.pool
        options = LaunchOptions(
            self.control_address,
            slot.index,
            slot.generation + 1,
            os.getpid(),
            pool.log_format,
            pool.log_level,
            event_loop(self.worker_settings.http),
        )
        request = SpawnRequest(options, self._threads())
        try:
            handle = self.spawner.spawn(request)
        except OSError as exc:
            self._spawn_failed(slot, exc)
            return None
        slot.generation += 1
        now = self._now()
        process = WorkerProcess(slot.index, slot.generation, handle, now)
        timeout = pool.ready_timeout
        process.set_deadline(now + timeout, f"not ready after {timeout:g}s")
        if pool.max_requests:
            process.request_limit = pool.max_requests + random.randint(0, pool.max_requests_jitter)
        slot.processes.append(process)
        if slot.current is None or not slot.current.running:
            slot.current = process
            if slot.generation > 1:
                logger.info("worker %d restarting (pid %d, generation %d)", slot.index, process.pid, slot.generation)
            else:
                logger.info("worker %d spawned (pid %d)", slot.index, process.pid)
        else:
            slot.incoming = process
            generation = slot.generation
            logger.info("worker %d replacement spawned (pid %d, generation %d)", slot.index, process.pid, generation)
        self._task_group.start_soon(self._watch, slot, process)
        self._notify()
        return process

    def _threads(self) -> int:
        """Threads for a new worker's numerical libraries: as set, else its share of the cores."""
        return self.settings.pool.threads_per_worker or max(1, (os.cpu_count() or 1) // len(self.slots))

    async def _watch(self, slot: Slot, process: WorkerProcess) -> None:
        code = await process.handle.wait()
        process.exit_code = code
        if process.connection is not None:
            # Its last messages (the Stopped report, final counters) may still be in flight.
            with anyio.move_on_after(self.timeouts.exit_margin):
                await process.disconnected.wait()
        self._ended(slot, process, code)

    def _ended(self, slot: Slot, process: WorkerProcess, code: int) -> None:
        was = process.state
        process.ended_at = self._now()
        self._fire(process, Event.EXITED if code == 0 else Event.CRASHED)
        self.book.retire(process)
        self.metrics.retire(process)
        slot.processes.remove(process)
        if self.state in (PoolState.STOPPING, PoolState.DOWN):
            self.ended.append((process, slot.restarts.count))
        if slot.incoming is process:
            slot.incoming = None
        if slot.current is process:
            slot.current = None
            if not process.retiring:
                self._lost(slot, process, was, code)
        if process.retiring and code != 0 and was is not State.KILLED:
            logger.error("worker %d (pid %d) exited with code %d while draining away", slot.index, process.pid, code)
        self._check_health()
        self._notify()

    def _spawn_failed(self, slot: Slot, exc: OSError) -> None:
        logger.error("cannot start a process for worker %d: %s", slot.index, exc)
        self.losses[slot.index, "spawn"] = self.losses.get((slot.index, "spawn"), 0) + 1
        if slot.current is not None and slot.current.running:
            return  # a replacement that could not start: the current one serves on
        if self.state is PoolState.SCALING and not slot.ever_ready:
            return  # a slot being added: the scale tells how it failed
        # Tried again under the crash-loop rules, while the pool starts too: the system may
        # refuse a process for a moment (out of descriptors or memory; CreateProcess under
        # Wine now and then fails with "Internal error").
        delay = slot.restarts.on_lost(self._now(), 0.0)
        if delay is None:
            rules = slot.restarts.rules
            reason = f"worker {slot.index} could not be started {rules.max_restarts + 1} times: the pool is down"
            if self.state is PoolState.STARTING and not slot.ever_ready:
                logger.error("%s", reason)
                self._give_up(reason, failed_to_start=True)
            else:
                self._give_up(reason)
        else:
            slot.respawn_at = self._now() + max(delay, self.timeouts.backoff_base)
            logger.info("worker %d restarting in %.1fs", slot.index, slot.respawn_at - self._now())

    def _lost(self, slot: Slot, process: WorkerProcess, was: State, code: int) -> None:
        if self.state in (PoolState.STOPPING, PoolState.DOWN):
            return
        if process.ready_at is None:
            detail = process.reason or f"exited with code {code} before it was ready"
            logger.error("worker %d failed to start: %s", slot.index, detail)
            # A slot that has never served, whose worker said why it cannot start (its models
            # will not load) or never got ready in time, fails the pool's start: no use trying
            # again. One killed or crashed without a word is replaced, as later on would be. A
            # scale reports its new slots' failures itself.
            if not slot.ever_ready and (
                process.said_why or process.cause == "deadline" or self.state is PoolState.SCALING
            ):
                if self.state is PoolState.STARTING:
                    self._give_up(f"worker {slot.index} failed to start", failed_to_start=True)
                return
        elif was is not State.KILLED:
            logger.error("worker %d (pid %d) exited unexpectedly with code %d", slot.index, process.pid, code)
        now = self._now()
        served_for = now - process.ready_at if process.ready_at is not None else 0.0
        cause = process.cause or ("failed_start" if process.ready_at is None else "crashed" if code else "exited")
        self.losses[slot.index, cause] = self.losses.get((slot.index, cause), 0) + 1
        self._fire_pool(PoolEvent.LOST)
        delay = slot.restarts.on_lost(now, served_for)
        if delay is not None and slot.incoming is not None:
            # Its replacement is already starting: it takes the slot now.
            slot.current, slot.incoming = slot.incoming, None
        elif delay is None:
            rules = slot.restarts.rules
            # Why the last one failed, when it said: its models no longer load, say.
            why = f" (the last: {process.reason})" if process.reason else ""
            self._give_up(
                f"worker {slot.index} failed {rules.max_restarts + 1} times within {rules.window:g}s{why}: "
                "a crash loop; the pool is down"
            )
        elif delay == 0:
            self._spawn(slot)  # a spawn that fails schedules its own retry
        else:
            slot.respawn_at = now + delay
            logger.info("worker %d restarting in %.1fs", slot.index, delay)

    def _give_up(self, reason: str, failed_to_start: bool = False) -> None:
        if self.state.final or self.state is PoolState.STOPPING:
            return
        self.failure = reason
        self.failed_to_start = failed_to_start
        if not failed_to_start:
            logger.error("%s", reason)
        self._fire_pool(PoolEvent.GIVE_UP)

    def _check_health(self) -> None:
        if all(slot.serving for slot in self.slots):
            self._fire_pool(PoolEvent.ALL_READY)

    def _kill(self, process: WorkerProcess, reason: str, cause: str = "killed") -> None:
        if not process.running or process.state is State.KILLED:
            return
        process.reason = reason
        process.cause = cause
        logger.warning("killing worker %d (pid %d): %s", process.slot, process.pid, reason)
        self._fire(process, Event.KILL)
        process.handle.kill()

    async def _watchdog(self) -> None:
        pool = self.settings.pool
        tick = max(0.02, min(0.5, pool.heartbeat_timeout / 5))
        last = self._now()
        while True:
            now = self._now()
            if now - last > tick + max(1.0, tick):
                self._forgive(now - last - tick)
            last = now
            for slot in self.slots:
                if slot.respawn_at is not None and now >= slot.respawn_at and not self._ending():
                    self._spawn(slot)
                for process in list(slot.processes):
                    if not process.running:
                        continue
                    if process.deadline is not None and now >= process.deadline:
                        self._kill(process, process.deadline_reason, "deadline")
                    elif process.last_heard is not None and now - process.last_heard > pool.heartbeat_timeout:
                        self._kill(process, f"hung: no heartbeat for {now - process.last_heard:.1f}s", "hung")
                self._maybe_recycle(slot)
            await anyio.sleep(tick)

    def _forgive(self, pause: float) -> None:
        """The supervisor itself was held up (stopped, swapped out, starved): whatever the workers
        sent meanwhile is still unread in their sockets. Judge nobody hung on that; give every
        heartbeat and deadline the time it lost."""
        logger.warning("the supervisor was held up for %.1fs: no worker is judged by it", pause)
        now = self._now()
        for process in self.processes():
            if process.last_heard is not None:
                process.last_heard = now
            if process.deadline is not None:
                process.deadline += pause
        for slot in self.slots:
            if slot.respawn_at is not None:
                slot.respawn_at += pause

    def _ending(self) -> bool:
        return self.state in (PoolState.STOPPING, PoolState.DOWN, PoolState.STOPPED)

    # --- replacing a slot's process: reload, scale, recycling ---------------------------------

    def begin(self, operation: PoolEvent) -> bool:
        """Enter a reload or scale; ``False`` if the pool's state does not allow it now."""
        try:
            self.lifecycle.fire(operation)
        except TransitionError:
            return False
        self._notify()
        return True

    def end_operation(self) -> None:
        """Leave the reload or scale (if a stop has not already ended it) and state the pool's health."""
        if self.state in (PoolState.RELOADING, PoolState.SCALING):
            self._fire_pool(PoolEvent.DONE)
            if not all(slot.serving for slot in self.slots):
                self._fire_pool(PoolEvent.LOST)

    def pin_models(self, versions: list[str] | None = None) -> list[str]:
        """The repositories' model versions the workers started from now on serve: ``versions``,
        or as the folders hold them now (a :class:`~ipc.contract.repository.LayoutError` or ``OSError``
        when they cannot be read). Returns the ones pinned before, for a failed reload to put
        back. A worker started by ``scale`` or to replace a lost one thus serves what its peers
        serve, not a version added to the folder since: a reload serves that."""
        before = self.worker_settings.model_versions
        if versions is None:
            listed = repository.listing(self.worker_settings.model_dirs) if self.worker_settings.model_dirs else []
            if listed is None:
                logger.warning(
                    "the model repositories hold too many versions to pin: each worker reads them as it starts"
                )
            versions = listed or []
        self.worker_settings = dataclasses.replace(self.worker_settings, model_versions=versions)
        return before

    async def replace(self, slot: Slot) -> str | None:
        """Start a new process in ``slot``; once it is ready, drain the old one.

        ``None`` when done, else why not: the new process did not become ready (the old one,
        if any, serves on) or the pool began to stop. One replacement at a time per slot.
        """
        await self.wait_until(lambda: not slot.replacing or self._ending())
        if self._ending():
            return "the pool is stopping"
        slot.replacing = True
        try:
            old = slot.current
            retried = False
            while True:
                new = await self._start_process(slot)
                if new is None:
                    return "the system refused its process: see the log"
                if await self._take_over(slot, old, new):
                    return None
                if self._ending():
                    return "the pool is stopping"
                if retried or new.running or new.said_why or new.cause is not None:
                    self._kill(new, "its replacement was abandoned")
                    return new.reason or f"it exited with code {new.exit_code} before it was ready"
                # Lost without a word (killed, say), as a worker starting with the pool would
                # be replaced: tried once more. One that said why it cannot start is not.
                retried = True
                logger.warning(
                    "worker %d: its new process (pid %d) exited with code %s before it was ready; trying once more",
                    slot.index, new.pid, new.exit_code,
                )  # fmt: skip
        finally:
            slot.replacing = False
            self._notify()

    async def _take_over(self, slot: Slot, old: WorkerProcess | None, new: WorkerProcess) -> bool:
        """Wait for ``new``; once it is ready it takes ``slot`` over and ``old`` drains away.
        Whether it did (not if it failed first, or the pool began to stop)."""
        await self.wait_until(lambda: new.state not in (State.SPAWNED, State.CONNECTED) or self._ending())
        if new.state is not State.READY or self._ending():
            return False
        if slot.incoming is new:
            slot.current, slot.incoming = new, None
        if old is not None and old is not new and old.running:
            self.retire(old)
        self._check_health()
        return True

    def retire(self, process: WorkerProcess) -> None:
        """Drain ``process`` away, its slot no longer counting on it: no drain delay (the pool
        serves on), the usual grace period."""
        process.retiring = True
        grace = self.settings.worker.grace
        logger.info("worker %d (pid %d) draining away", process.slot, process.pid)
        if process.state is State.READY:
            self._fire(process, Event.STOP)
            self._post(process, Stop(grace, drain_delay=0.0))
            process.set_deadline(
                self._now() + grace + self.timeouts.exit_margin, f"it outlived the grace period of {grace:g}s"
            )
        elif process.state in (State.SPAWNED, State.CONNECTED):
            self._fire(process, Event.STOP)
            self._post(process, Stop(0.0))
            process.set_deadline(self._now() + self.timeouts.unready_exit, "it was retired before it was ready")

    async def _start_process(self, slot: Slot) -> WorkerProcess | None:
        """:meth:`_spawn` for an operation, tried again while the system refuses the process
        for a moment; ``None`` if it kept refusing (or the slot was lost meanwhile and is
        being replaced as any lost one is)."""
        process = self._spawn(slot)
        for _ in range(SPAWN_RETRIES):
            if process is not None or self._ending() or slot.respawn_at is not None:
                break
            await anyio.sleep(self.timeouts.backoff_base)
            process = self._spawn(slot)
        return process

    async def add_slot(self) -> Slot:
        slot = Slot(len(self.slots), Restarts(self._rules))
        self.slots.append(slot)
        await self._start_process(slot)
        return slot

    async def remove_slot(self) -> tuple[Slot, list[WorkerProcess]]:
        """Drain the highest slot's processes away and drop the slot once they have exited; the
        slot, and the processes that ended with it (to tell how each did)."""
        slot = self.slots[-1]
        slot.respawn_at = None
        ending = list(slot.processes)
        for process in ending:
            self.retire(process)
        await self.wait_until(lambda: not slot.processes)
        if self.slots and self.slots[-1] is slot:
            self.slots.pop()
        self._check_health()
        return slot, ending

    def _maybe_recycle(self, slot: Slot) -> None:
        process = slot.current
        if (
            process is None
            or process.state is not State.READY
            or self._now() < process.recycle_after
            or slot.replacing
            or self.state not in (PoolState.READY, PoolState.DEGRADED)
        ):
            return
        why = None
        served = process.heartbeat.served if process.heartbeat else 0
        rss = process.heartbeat.rss if process.heartbeat else 0
        limit_mib = self.settings.pool.max_worker_memory
        if process.request_limit is not None and served >= process.request_limit:
            why, kind = f"it answered {served} requests (limit {process.request_limit})", "requests"
        elif limit_mib and rss > limit_mib * 1024 * 1024:
            why, kind = f"it uses {rss / 2**20:.0f} MiB (limit {limit_mib} MiB)", "memory"
        if why is not None:
            self.recycled[kind] = self.recycled.get(kind, 0) + 1
            slot.replacing = True  # taken over by replace(), which clears it
            self._task_group.start_soon(self._recycle, slot, process, why)

    async def _recycle(self, slot: Slot, process: WorkerProcess, why: str) -> None:
        logger.info("recycling worker %d (pid %d): %s", slot.index, process.pid, why)
        slot.replacing = False
        failure = await self.replace(slot)
        if failure is None:
            new = slot.current
            assert new is not None
            logger.info("worker %d recycled: generation %d (pid %d) serves", slot.index, new.generation, new.pid)
        elif not self._ending():
            # It serves on, and is tried again later (a memory limit must not be given up on).
            process.recycle_failures += 1
            wait = min(self.timeouts.recycle_retry * 2 ** (process.recycle_failures - 1), 60.0)
            process.recycle_after = self._now() + wait
            logger.warning(
                "worker %d not recycled: %s; it serves on, and is tried again in %.0fs", slot.index, failure, wait
            )

    # --- one worker's control channel --------------------------------------------------------

    def _find(self, hello: Hello) -> WorkerProcess | None:
        if hello.worker_id is None or not 0 <= hello.worker_id < len(self.slots):
            return None
        for process in self.slots[hello.worker_id].processes:
            if (
                process.generation == hello.generation
                and process.pid == hello.pid
                and process.connection is None
                and process.running
                and process.state in (State.SPAWNED, State.DRAINING)
            ):
                return process
        return None

    async def attach(self, hello: Hello, connection: ipc.Connection) -> None:
        """Serve the control connection of the worker that sent ``hello``, until it ends."""
        process = self._find(hello)
        if process is None:
            wanted = f"worker {hello.worker_id} generation {hello.generation} pid {hello.pid}"
            await connection.send(Error(Error.UNKNOWN_WORKER, f"no {wanted} awaits"))
            return
        if process.state is State.DRAINING or self._ending():
            # Stopped before it joined: nothing to configure it for (the listening socket may
            # already be closed). It exits at once, cleanly.
            self._fire(process, Event.STOP)
            await _try_send(connection, Error(Error.STOPPING, "the pool is stopping"))
            return
        try:
            listen_fd, listen_share = self.spawner.listen_socket_for(process.handle)
        except OSError as exc:  # on Windows, socket.share() for a process that is gone
            self._kill(process, f"cannot share the listening socket with it: {exc}")
            return
        outbox, pending = anyio.create_memory_object_stream[ipc.Message](OUTBOX_SIZE)
        process.connection, process.outbox = connection, outbox
        process.last_heard = self._now()
        self._fire(process, Event.HELLO)
        # A worker is published (asked for statistics, told to stop) only after its Configure:
        # both go through its one outgoing queue, in order.
        self._post(process, Welcome(ipc.PROTOCOL_VERSION, os.getpid()))
        self._post(process, Configure(self.worker_settings, listen_fd, listen_share))
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_pump, connection, pending)
                try:
                    async for message in connection:
                        process.last_heard = self._now()
                        self._on_message(process, message, task_group)
                except ipc.ProtocolError as exc:
                    with anyio.move_on_after(1):
                        await _try_send(connection, Error(Error.PROTOCOL, str(exc)))
                    self._kill(process, f"it broke the control protocol: {exc}", "protocol")
                task_group.cancel_scope.cancel()
        finally:
            process.connection = process.outbox = None
            outbox.close()
            process.disconnected.set()
            self._notify()

    def _post(self, process: WorkerProcess, message: ipc.Message) -> bool:
        """Queue ``message`` for ``process``; whether it was queued."""
        if process.outbox is None:
            return False
        try:
            process.outbox.send_nowait(message)
        except anyio.WouldBlock:
            self._kill(process, f"its control channel is stuck ({OUTBOX_SIZE} messages unsent)", "stuck")
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    def _on_message(self, process: WorkerProcess, message: ipc.Message, task_group: anyio.abc.TaskGroup) -> None:
        if isinstance(message, Heartbeat):
            process.heartbeat = message
            self.metrics.record(process, message.seq, message.metrics)
        elif isinstance(message, Ready):
            if process.state is State.CONNECTED:
                process.ready_at = self._now()
                process.deadline = None
                self.slots[process.slot].ever_ready = True
                if self.state is PoolState.STARTING:  # a progress count while the pool starts
                    ready = sum(slot.serving for slot in self.slots) + 1
                    logger.info("worker %d ready (pid %d): %d of %d", process.slot, process.pid, ready, len(self.slots))
                else:
                    logger.info("worker %d ready (pid %d)", process.slot, process.pid)
            self._fire(process, Event.READY)
            self._check_health()
        elif isinstance(message, Stopped):
            process.report = message
            self.book.record(process, message.seq, message.models)
            self.metrics.record(process, message.seq, message.metrics)
            self._notify()
        elif isinstance(message, Error):
            process.reason = message.message
            process.said_why = True
            self._notify()
        elif isinstance(message, StatsReport):
            self._record_stats(process, message.seq, message.models)
            waiter = self._stats_waiters.get(message.request_id)
            if waiter is not None:
                waiter.set()
        elif isinstance(message, PoolStatsRequest):
            self._record_stats(process, message.seq, message.models)
            # Its own task: the answer waits for the other workers' counters, and this
            # connection must keep being read meanwhile.
            task_group.start_soon(self._answer_pool_stats, process, message.request_id)
        else:
            logger.warning("worker %d sent an unexpected %s", process.slot, message.kind)

    # --- statistics --------------------------------------------------------------------------

    def _record_stats(self, process: WorkerProcess, seq: int, models: dict[str, Any]) -> None:
        if not self.book.record(process, seq, models) and seq > 0:
            logger.debug("worker %d: statistics snapshot %d refused (stale or malformed)", process.slot, seq)

    async def _answer_pool_stats(self, process: WorkerProcess, request_id: int) -> None:
        self._post(process, PoolStatsReply(request_id, await self.pool_stats()))

    async def pool_stats(self) -> dict[str, Any]:
        """Fresh counters from every live worker, summed with those of workers gone.

        Concurrent callers share one fan-out: a caller that arrives while one runs waits for it.
        """
        if self._fan_out is not None:
            await self._fan_out.wait()
            return self.book.total()
        self._fan_out = anyio.Event()
        try:
            async with anyio.create_task_group() as task_group:
                for process in self.processes():
                    if process.outbox is not None and process.state in (State.READY, State.DRAINING):
                        task_group.start_soon(self._refresh_stats, process)
        finally:
            done, self._fan_out = self._fan_out, None
            done.set()
        return self.book.total()

    async def _refresh_stats(self, process: WorkerProcess) -> None:
        request_id = next(self._request_ids)
        waiter = self._stats_waiters[request_id] = anyio.Event()
        try:
            with anyio.move_on_after(self.timeouts.stats):
                if self._post(process, StatsRequest(request_id)):
                    await waiter.wait()
        finally:
            del self._stats_waiters[request_id]

    # --- the pool as a whole -----------------------------------------------------------------

    def status(self) -> list[WorkerStatus]:
        now = self._now()
        return [row for slot in self.slots for row in slot.status(now)]

    def force(self) -> None:
        """Kill what is still running now, rather than at the end of the grace period."""
        self.forced = True
        for process in self.processes():
            self._kill(process, "the stop was forced")

    async def stop(self, grace: float) -> bool:
        """Drain every ready worker within ``grace``; end the others at once.

        Whether the stop was clean: every worker drained, reported, and exited 0, dropping no
        request.
        """
        self._fire_pool(PoolEvent.STOP)
        now = self._now()
        for slot in self.slots:
            slot.respawn_at = None
        live = [process for process in self.processes() if process.running]
        logger.info("stopping: draining %d workers (grace %gs)", len(live), grace)
        delay = self.settings.pool.drain_delay
        drain = delay + grace + self.timeouts.exit_margin
        for process in live:
            if process.state in (State.READY, State.DRAINING):
                self._fire(process, Event.STOP)
                self._post(process, Stop(grace, drain_delay=delay))
                process.set_deadline(now + drain, f"it outlived the grace period of {grace:g}s")
            else:
                # Not serving yet: nothing in flight to protect.
                self._fire(process, Event.STOP)
                self._post(process, Stop(0.0))
                process.set_deadline(now + self.timeouts.unready_exit, "it was not ready when the pool stopped")
            if self.forced:
                self._kill(process, "the stop was forced")
        # The watchdog enforces every deadline; this bound is only its backstop.
        with anyio.move_on_after(drain + self.timeouts.exit_margin):
            await self.wait_until(lambda: not self.processes())
        await self.reap_all()
        self._fire_pool(PoolEvent.EXITED)
        for status in self.stop_report():
            _log_end(status)
        return all(process.ended_cleanly for process, _ in self.ended)

    def stop_report(self) -> list[WorkerStatus]:
        """How each process that ended during the stop ended."""
        return [process.status(self._now(), restarts) for process, restarts in self.ended]

    async def reap_all(self) -> None:
        """Kill every process still running and wait (bounded) until each has exited."""
        running = [process for process in self.processes() if process.running]
        for process in running:
            self._kill(process, "the pool is closing")
        if running:
            with anyio.move_on_after(self.timeouts.exit_margin):
                async with anyio.create_task_group() as task_group:
                    for process in running:
                        task_group.start_soon(self._reap, process)

    async def _reap(self, process: WorkerProcess) -> None:
        process.exit_code = await process.handle.wait()


async def _pump(connection: ipc.Connection, pending: anyio.abc.ObjectReceiveStream[ipc.Message]) -> None:
    """Send one worker's queued messages, in order, until the queue or the connection closes."""
    async with pending:
        async for message in pending:
            try:
                await connection.send(message)
            except ipc.ConnectionClosedError:
                return


async def _try_send(connection: ipc.Connection, message: ipc.Message) -> None:
    try:
        await connection.send(message)
    except ipc.ConnectionClosedError:
        pass


def _log_end(status: WorkerStatus) -> None:
    if status.state == State.STOPPED.value and status.completed is not None:
        logger.info(
            "worker %d stopped: %d in-flight finished, %d dropped; %d served in all (exit %s)",
            status.slot, status.completed, status.dropped, status.served, status.exit_code,
        )  # fmt: skip
    else:
        logger.info("worker %d %s (exit %s)", status.slot, status.state, status.exit_code)
