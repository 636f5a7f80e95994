"""Starting, ending and reaping the pool's processes, and what a worker is told when it joins.

The pool decides when a slot needs a process and when a process must go; this part does it:

- :meth:`Launcher.spawn` starts a process for a slot, off the event loop (the spawner's own
  thread: a fork and exec take milliseconds, tens of them on Windows), and watches it until it
  has exited and been reaped, then tells the pool;
- :meth:`Launcher.drain` asks a process to stop (a ready one drains within the grace period,
  one not ready yet exits at once) under a deadline the watchdog enforces; :meth:`Launcher.kill`
  is the last resort; :meth:`Launcher.reap_all` kills and reaps whatever is left;
- :meth:`Launcher.pin_models` reads the model repositories (off the event loop: a slow disk
  must not hold up the control channel) and pins the versions every worker started from now on
  serves, so that a worker added by ``scale`` or replacing a lost one serves what its peers serve.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import tempfile
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from ipc.contract import repository
from ipc.contract.launch import LaunchOptions
from ipc.messages import Stop

from .lifecycle import Event, SlotState, State
from .slots import Slot
from .spawn import Spawner, SpawnRequest, event_loop
from .workers import WorkerProcess

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("supervisor")


class Launcher:
    def __init__(self, pool: Pool, spawner: Spawner, control_address: str) -> None:
        self.pool = pool
        self.spawner = spawner
        self.control_address = control_address
        settings = pool.settings
        #: What every worker is told in Configure.
        self.worker_settings = dataclasses.replace(
            settings.worker,
            heartbeat_interval=min(1.0, settings.pool.heartbeat_timeout / 4),
            import_path=settings.worker.import_path or os.getcwd(),
        )
        #: The stop was forced: whatever is asked to stop is killed instead.
        self.forced = False
        #: Where each worker notes what it has in flight (``ipc.contract.inflight``).
        self.inflight_folder = tempfile.mkdtemp(prefix="inference-supervisor-")

    def inflight_path(self, process: WorkerProcess) -> str:
        return os.path.join(self.inflight_folder, f"{process.slot}-{process.generation}.inflight")

    def close(self) -> None:
        """Every process is reaped: remove what they left behind."""
        shutil.rmtree(self.inflight_folder, ignore_errors=True)

    async def pin_models(self) -> list[str]:
        """Pin the versions the repositories hold now; those pinned before, for a failed reload
        to put back. :class:`~ipc.contract.repository.LayoutError` or ``OSError`` when the
        repositories cannot be read."""
        folders = self.worker_settings.model_dirs
        listed = await anyio.to_thread.run_sync(repository.listing, folders) if folders else []
        if listed is None:
            logger.warning("the model repositories hold too many versions to pin: each worker reads them as it starts")
        return self.pin(listed or [])

    def pin(self, versions: list[str]) -> list[str]:
        """Pin ``versions`` (``NAME/VERSION``; none: each worker reads the folders as it starts);
        the versions pinned before."""
        before = self.worker_settings.model_versions
        self.worker_settings = dataclasses.replace(self.worker_settings, model_versions=versions)
        return before

    async def spawn(self, slot: Slot, replacement: bool = False) -> WorkerProcess | None:
        """A new process for ``slot``: the one it counts on, or, with ``replacement``, the one
        that will take over from it. The caller has moved the slot to STARTING (or REPLACING)
        already, so that nothing else spawns into it meanwhile. ``None`` if the system refused
        to start it: a loss of the slot, or the replacer's to try again."""
        pool = self.pool
        slot.generation += 1
        generation = slot.generation
        settings = pool.settings.pool
        options = LaunchOptions(
            self.control_address, slot.index, generation, os.getpid(),
            settings.log_format, settings.log_level, event_loop(self.worker_settings.http),
        )  # fmt: skip
        try:
            with anyio.CancelScope(shield=True):  # a process started must be known, to be reaped
                handle = await self.spawner.spawn(SpawnRequest(options, self._threads()))
        except OSError as exc:
            if slot.generation == generation:
                slot.generation -= 1  # nothing was spawned as that generation
            logger.error("cannot start a process for worker %d: %s", slot.index, exc)
            pool.losses[slot.index, "spawn"] = pool.losses.get((slot.index, "spawn"), 0) + 1
            if not replacement and slot.state is SlotState.STARTING:
                pool.watchdog.lost(slot, None)
            return None
        now = pool.now()
        process = WorkerProcess(slot.index, generation, handle, now)
        timeout = settings.ready_timeout
        process.set_deadline(now + timeout, f"not ready after {timeout:g}s")
        if settings.max_requests:
            process.request_limit = settings.max_requests + random.randint(0, settings.max_requests_jitter)
        slot.processes.append(process)
        pool.task_group.start_soon(self._watch, slot, process)
        wanted = slot.state is (SlotState.REPLACING if replacement else SlotState.STARTING)
        if not wanted or pool.state.ending:
            self.kill(process, "the slot no longer needs it")  # retired or lost while it was spawned
        elif replacement:
            slot.incoming = process
            logger.info("worker %d replacement spawned (pid %d, generation %d)", slot.index, process.pid, generation)
        else:
            slot.current = process
            if generation > 1:
                logger.info("worker %d restarting (pid %d, generation %d)", slot.index, process.pid, generation)
            else:
                logger.info("worker %d spawned (pid %d)", slot.index, process.pid)
        pool.changed()
        return process

    def _threads(self) -> int:
        """Threads for a new worker's numerical libraries: as set, else its share of the cores."""
        live = sum(slot.live for slot in self.pool.slots) or 1
        return self.pool.settings.pool.threads_per_worker or max(1, (os.cpu_count() or 1) // live)

    async def _watch(self, slot: Slot, process: WorkerProcess) -> None:
        code = await process.handle.wait()
        process.exit_code = code
        channel = process.channel
        if channel is not None:
            # Its last messages (the Stopped report, final counters) may still be in flight.
            with anyio.move_on_after(self.pool.timeouts.exit_margin):
                await channel.closed.wait()
        self.pool.exited(slot, process, code)
        try:
            os.unlink(self.inflight_path(process))
        except OSError:
            pass  # it never joined, or the folder is gone with the pool

    def kill(self, process: WorkerProcess, reason: str, cause: str = "killed") -> None:
        if not process.running or process.state is State.KILLED:
            return
        process.reason = reason
        process.cause = cause
        logger.warning("killing worker %d (pid %d): %s", process.slot, process.pid, reason)
        process.fire(Event.KILL)
        process.handle.kill()
        self.pool.changed()

    def drain(self, process: WorkerProcess, stop: Stop, unready: str) -> None:
        """Ask ``process`` to stop: a ready one drains as ``stop`` says, under a deadline past its
        grace period; one not ready yet exits at once (it has nothing in flight to protect), or
        is killed after ``unready_exit`` for ``unready``."""
        if not process.running or process.state is State.KILLED:
            return
        timeouts, now = self.pool.timeouts, self.pool.now()
        if process.state in (State.READY, State.DRAINING):
            process.fire(Event.STOP)
            self.post(process, stop)
            outlived = f"it outlived the grace period of {stop.grace:g}s"
            process.set_deadline(now + stop.drain_delay + stop.grace + timeouts.exit_margin, outlived)
        else:
            process.fire(Event.STOP)
            self.post(process, Stop(0.0))
            process.set_deadline(now + timeouts.unready_exit, unready)
        if self.forced:
            self.kill(process, "the stop was forced")
        self.pool.changed()

    def retire(self, process: WorkerProcess) -> None:
        """Drain ``process`` away, its slot no longer counting on it: no drain delay (the pool
        serves on), the usual grace period."""
        logger.info("worker %d (pid %d) draining away", process.slot, process.pid)
        self.drain(process, Stop(self.pool.settings.worker.grace), "it was retired before it was ready")

    def post(self, process: WorkerProcess, message: Stop) -> bool:
        return process.channel is not None and process.channel.post(message)

    async def reap_all(self) -> None:
        """Kill every process still running and wait (bounded) until each has exited."""
        running = [process for process in self.pool.processes() if process.running]
        for process in running:
            self.kill(process, "the pool is closing")
        if running:
            with anyio.move_on_after(self.pool.timeouts.exit_margin):
                async with anyio.create_task_group() as task_group:
                    for process in running:
                        task_group.start_soon(self._reap, process)

    async def _reap(self, process: WorkerProcess) -> None:
        process.exit_code = await process.handle.wait()
