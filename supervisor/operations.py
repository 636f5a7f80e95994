"""Changing a running pool without losing a request: a rolling reload, scaling, and recycling.

A reload or a scale is an :class:`Operation` the pool runs in its own task group, for whoever
asked: the client that asked follows its progress and gets its outcome, but only watches; if it
goes away the operation carries on, and ``supervisor status`` shows it under way. One runs at a
time, under the pool's state table (a second is refused), and a stop wins at any moment (the
operation then ends as interrupted and the stop takes over its processes).

Recycling (``--max-requests``, ``--max-worker-memory``) replaces one worker the same way, when
the health policy says so.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ipc.contract.repository import LayoutError
from ipc.messages import OperationReply, Quarantined

from .lifecycle import PoolEvent, PoolState, SlotEvent, SlotState
from .policy import Restarts
from .replace import replace, start_process
from .slots import Slot
from .workers import WorkerProcess

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("supervisor")


@dataclasses.dataclass(frozen=True)
class Outcome:
    #: One of OperationReply's: DONE, FAILED, REFUSED, INTERRUPTED.
    outcome: str
    message: str


class Operation:
    """A reload or a scale under way: its progress, one line a step, then its outcome."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.lines: list[str] = []
        self.outcome: Outcome | None = None
        self._changed = anyio.Event()

    def progress(self, text: str) -> None:
        logger.info("%s", text)
        self.lines.append(text)
        self._step()

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        log = logger.info if outcome.outcome == OperationReply.DONE else logger.warning
        log("%s: %s", self.kind, outcome.message)
        self._step()

    def _step(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def summary(self) -> str:
        return f"{self.kind} under way" + (f": {self.lines[-1]}" if self.lines else "")

    async def follow(self) -> AsyncIterator[str]:
        """Every progress line, from the first, as they come; ends once the outcome is known."""
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self.lines):
                yield self.lines[sent]
                sent += 1
            if self.outcome is not None:
                return
            await changed.wait()


class Operations:
    """The pool's reloads, scales and recyclings."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        #: The reload or scale under way.
        self.current: Operation | None = None

    def reload(self) -> Operation | Outcome:
        """Replace every worker, one slot at a time, each new one ready before its old one drains."""
        return self._begin(PoolEvent.RELOAD, "reload", self._reload)

    def scale(self, workers: int) -> Operation | Outcome:
        """Grow or shrink the pool to ``workers`` slots; shrinking drains the highest slots."""
        return self._begin(PoolEvent.SCALE, "scale", lambda operation: self._scale(operation, workers))

    def _begin(
        self, event: PoolEvent, kind: str, run: Callable[[Operation], Awaitable[Outcome]]
    ) -> Operation | Outcome:
        pool = self.pool
        if not pool.lifecycle.allows(event):
            return Outcome(OperationReply.REFUSED, f"cannot {kind} while the pool is {pool.state.value}")
        pool.fire(event)
        operation = self.current = Operation(kind)
        pool.task_group.start_soon(self._run, operation, run)
        return operation

    async def _run(self, operation: Operation, run: Callable[[Operation], Awaitable[Outcome]]) -> None:
        pool = self.pool
        outcome = Outcome(OperationReply.INTERRUPTED, "the pool closed")
        try:
            outcome = await run(operation)
        finally:
            if pool.state in (PoolState.RELOADING, PoolState.SCALING):
                pool.fire(PoolEvent.DONE)
                if not all(slot.serving for slot in pool.slots):
                    pool.fire(PoolEvent.LOST)  # the pool states its health again
            self.current = None
            operation.finish(outcome)

    async def _reload(self, operation: Operation) -> Outcome:
        pool = self.pool
        logger.info("reloading %d workers, one at a time", len(pool.slots))
        try:
            pinned_before = await pool.launcher.pin_models()  # new workers serve the folders as they are now
        except (LayoutError, OSError) as exc:
            return Outcome(OperationReply.FAILED, f"the model repository cannot be read ({exc}); the workers serve on")
        # A process spawned after this (refilling a slot lost meanwhile, say) is new already.
        fresh_after = {slot.index: slot.generation for slot in pool.slots}
        retired: list[WorkerProcess] = []
        done = False
        try:
            for slot in list(pool.slots):
                started = anyio.current_time()
                await _settled(pool, slot)
                old = slot.current
                if pool.state is not PoolState.RELOADING:
                    return _interrupted(f"after {slot.index} of {len(pool.slots)} workers")
                if old is None:
                    return Outcome(OperationReply.FAILED, f"worker {slot.index}: its workers cannot start")
                if old.generation > fresh_after[slot.index]:
                    operation.progress(f"worker {slot.index}: generation {old.generation} (pid {old.pid}) is new")
                    continue
                slot.fire(SlotEvent.REPLACE)
                failure = await replace(pool, slot)
                if pool.state is not PoolState.RELOADING:
                    return _interrupted(f"after {slot.index} of {len(pool.slots)} workers")
                if failure is not None:
                    replaced = ", ".join(str(p.slot) for p in retired)
                    served = f"workers {replaced} serve the new models, the others the old" if retired else ""
                    return Outcome(
                        OperationReply.FAILED,
                        f"worker {slot.index}: the new worker did not become ready ({failure}); "
                        f"the reload stopped there, and {served or 'the old workers still serve'}",
                    )
                new = slot.current
                assert new is not None
                took = anyio.current_time() - started
                operation.progress(
                    f"worker {slot.index}: generation {old.generation} (pid {old.pid}) -> "
                    f"generation {new.generation} (pid {new.pid}), ready in {took:.1f}s"
                )
                retired.append(old)
            # Done when nothing of the old generations is left running.
            await pool.wait_until(lambda: all(not p.running for p in retired) or pool.state is not PoolState.RELOADING)
            if pool.state is not PoolState.RELOADING:
                return _interrupted("while the old workers drained")
            done = True
            if pool.quarantine.models:  # every worker is new: each model has a fresh chance
                pool.quarantine.clear()
                pool.broadcast(Quarantined({}))
            # One whose drain failed (killed, crashed, dropping requests) cost requests: say so.
            unclean = [f"worker {p.slot}'s old process {p.how_it_ended()}" for p in retired if not p.drained]
            return Outcome(OperationReply.DONE, "; ".join([f"reloaded {len(pool.slots)} workers", *unclean]))
        finally:
            if not done:
                pool.launcher.pin(pinned_before)  # the old workers serve on: so do their replacements

    async def _scale(self, operation: Operation, workers: int) -> Outcome:
        pool = self.pool
        before = len(pool.slots)
        logger.info("scaling from %d to %d workers", before, workers)
        while len(pool.slots) < workers:
            failure = await self._grow()
            if pool.state is not PoolState.SCALING:
                return _interrupted(f"at {len(pool.slots)} of {workers} workers")
            if failure is not None:
                return Outcome(OperationReply.FAILED, f"{failure}; the pool stays at {len(pool.slots)} workers")
            process = pool.slots[-1].current
            assert process is not None
            operation.progress(f"worker {process.slot}: started (pid {process.pid})")
        while len(pool.slots) > workers:
            slot, ended = await self._shrink()
            if pool.state is not PoolState.SCALING:
                return _interrupted(f"at {len(pool.slots)} of {workers} workers")
            how = "; ".join(process.how_it_ended() for process in ended) or "removed (no process was running)"
            operation.progress(f"worker {slot.index}: {how}")
        serving = sum(slot.serving for slot in pool.slots)
        return Outcome(OperationReply.DONE, f"scaled from {before} to {workers} workers ({serving} serving)")

    async def _grow(self) -> str | None:
        """Add a slot and wait for its worker; ``None`` once it serves, else why not (and the
        slot is gone again)."""
        pool = self.pool
        slot = Slot(len(pool.slots), Restarts(pool.rules))
        pool.slots.append(slot)
        process = await start_process(pool, slot)
        if process is None:
            await self._shrink()
            return f"worker {slot.index}: the system refused its process (see the log)"
        await pool.wait_until(lambda: not process.running or slot.serving or pool.state is not PoolState.SCALING)
        if slot.serving or pool.state is not PoolState.SCALING:
            return None
        reason = process.reason or f"it exited with code {process.exit_code} before it was ready"
        await self._shrink()
        return f"worker {slot.index} did not become ready ({reason})"

    async def _shrink(self) -> tuple[Slot, list[WorkerProcess]]:
        """Drain the highest slot's processes away and drop the slot once they have exited; the
        slot, and the processes that ended with it (to tell how each did)."""
        pool = self.pool
        slot = pool.slots[-1]
        slot.fire(SlotEvent.RETIRE)
        ending = list(slot.processes)
        for process in ending:
            pool.launcher.retire(process)
        await pool.wait_until(lambda: not slot.processes)
        if pool.slots and pool.slots[-1] is slot:
            pool.slots.pop()
        pool.check_health()
        return slot, ending

    def recycle(self, slot: Slot, why: str) -> None:
        """Replace ``slot``'s serving process, which passed a limit: claimed now, done in a task."""
        process = slot.current
        assert process is not None
        slot.fire(SlotEvent.REPLACE)
        logger.info("recycling worker %d (pid %d): %s", slot.index, process.pid, why)
        self.pool.task_group.start_soon(self._recycle, slot, process)

    async def _recycle(self, slot: Slot, process: WorkerProcess) -> None:
        pool = self.pool
        failure = await replace(pool, slot)
        if failure is None:
            new = slot.current
            assert new is not None
            logger.info("worker %d recycled: generation %d (pid %d) serves", slot.index, new.generation, new.pid)
        elif not pool.state.ending and slot.current is process:
            # It serves on, and is tried again later (a memory limit must not be given up on).
            process.recycle_failures += 1
            wait = min(pool.timeouts.recycle_retry * 2 ** (process.recycle_failures - 1), 60.0)
            process.recycle_after = pool.now() + wait
            logger.warning(
                "worker %d not recycled: %s; it serves on, and is tried again in %.0fs", slot.index, failure, wait
            )


async def _settled(pool: Pool, slot: Slot) -> None:
    """Until ``slot`` serves with no replacement under way (or never will, or the pool ends)."""
    await pool.wait_until(lambda: slot.state is SlotState.SERVING or not slot.live or pool.state.ending)


def _interrupted(where: str) -> Outcome:
    return Outcome(OperationReply.INTERRUPTED, f"the pool began to stop {where}")
