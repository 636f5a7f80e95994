"""Changing a running pool without losing a request: a rolling reload, and scaling.

Both are steps of :meth:`Pool.replace`, :meth:`Pool.add_slot` and :meth:`Pool.remove_slot`,
under the pool's state table: one operation at a time (a second is refused), and a stop wins
at any moment (the operation then ends as interrupted and the stop takes over its processes).

The listening socket stays open in the supervisor throughout, so no connection is ever
refused: a worker that drains stops accepting, and connections waiting in the socket's queue go
to the workers that still accept. How a draining worker loses no request on its kept-alive
connections is ``worker.http``'s part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import anyio

from ipc.contract.repository import LayoutError
from ipc.messages import OperationReply

from .lifecycle import PoolEvent, PoolState, State
from .pool import Pool
from .workers import WorkerProcess

Progress = Callable[[str], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Outcome:
    outcome: str
    message: str


async def reload(pool: Pool, progress: Progress) -> Outcome:
    """Replace every worker, one slot at a time, each new one ready before its old one drains."""
    refused = _begin(pool, PoolEvent.RELOAD, "reload")
    if refused:
        return refused
    retired: list[WorkerProcess] = []
    try:
        pinned_before = pool.pin_models()  # the new workers serve the repositories as they are now
    except (LayoutError, OSError) as exc:
        _end(pool)
        return Outcome(OperationReply.FAILED, f"the model repository cannot be read ({exc}); the workers serve on")
    done = False
    try:
        for slot in list(pool.slots):
            old = slot.current
            started = anyio.current_time()
            failure = await pool.replace(slot)
            if pool.state is not PoolState.RELOADING:
                return _interrupted(pool, f"after {slot.index} of {len(pool.slots)} workers")
            if failure is not None:
                served = (
                    "the old workers still serve"
                    if not retired
                    else (f"workers {', '.join(str(p.slot) for p in retired)} serve the new models, the others the old")
                )
                return Outcome(
                    OperationReply.FAILED,
                    f"worker {slot.index}: the new worker did not become ready ({failure}); "
                    f"the reload stopped there, and {served}",
                )
            new = slot.current
            assert new is not None
            before = f"generation {old.generation} (pid {old.pid})" if old is not None else "no worker"
            took = anyio.current_time() - started
            await progress(
                f"worker {slot.index}: {before} -> generation {new.generation} (pid {new.pid}), ready in {took:.1f}s"
            )
            if old is not None:
                retired.append(old)
        # Done when nothing of the old generations is left running.
        await pool.wait_until(lambda: all(not p.running for p in retired) or pool.state is not PoolState.RELOADING)
        if pool.state is not PoolState.RELOADING:
            return _interrupted(pool, "while the old workers drained")
        done = True
        # One whose drain failed (killed, crashed, dropping requests) cost requests: say so.
        unclean = [f"worker {p.slot}'s old process {_how_it_ended(p)}" for p in retired if not _drained(p)]
        return Outcome(OperationReply.DONE, "; ".join([f"reloaded {len(pool.slots)} workers", *unclean]))
    finally:
        if not done:
            pool.pin_models(pinned_before)  # the old workers serve on: so do their replacements
        _end(pool)


async def scale(pool: Pool, workers: int, progress: Progress) -> Outcome:
    """Grow or shrink the pool to ``workers`` slots; shrinking drains the highest slots."""
    refused = _begin(pool, PoolEvent.SCALE, "scale")
    if refused:
        return refused
    try:
        before = len(pool.slots)
        while len(pool.slots) < workers:
            failure = await _grow(pool)
            if pool.state is not PoolState.SCALING:
                return _interrupted(pool, f"at {len(pool.slots)} of {workers} workers")
            if failure is not None:
                return Outcome(OperationReply.FAILED, f"{failure}; the pool stays at {len(pool.slots)} workers")
            process = pool.slots[-1].current
            assert process is not None
            await progress(f"worker {process.slot}: started (pid {process.pid})")
        while len(pool.slots) > workers:
            slot, ended = await pool.remove_slot()
            if pool.state is not PoolState.SCALING:
                return _interrupted(pool, f"at {len(pool.slots)} of {workers} workers")
            how = "; ".join(map(_how_it_ended, ended)) or "removed (no process was running)"
            await progress(f"worker {slot.index}: {how}")
        serving = sum(slot.serving for slot in pool.slots)
        return Outcome(OperationReply.DONE, f"scaled from {before} to {workers} workers ({serving} serving)")
    finally:
        _end(pool)


async def _grow(pool: Pool) -> str | None:
    """Add a slot and wait for its worker; ``None`` once it serves, else why it does not (and
    the slot is gone again)."""
    slot = await pool.add_slot()
    process = slot.current
    if process is None:
        await pool.remove_slot()
        return f"worker {slot.index}: the system refused its process (see the log)"
    await pool.wait_until(lambda: not process.running or slot.serving or pool.state is not PoolState.SCALING)
    if slot.serving or pool.state is not PoolState.SCALING:
        return None
    reason = process.reason or f"it exited with code {process.exit_code} before it was ready"
    await pool.remove_slot()
    return f"worker {slot.index} did not become ready ({reason})"


def _drained(process: WorkerProcess) -> bool:
    """It stopped as asked, having finished every request it held."""
    report = process.report
    return process.exit_code == 0 and process.state is not State.KILLED and (report is None or not report.dropped)


def _how_it_ended(process: WorkerProcess) -> str:
    pid = f"pid {process.pid}"
    if process.state is State.KILLED:
        return f"{pid} killed ({process.reason or 'by the supervisor'})"
    if process.exit_code not in (0, None):
        return f"{pid} exited with code {process.exit_code}"
    if process.ready_at is None:
        return f"{pid} stopped before it was ready"
    dropped = process.report.dropped if process.report is not None else 0
    return f"{pid} drained and stopped" + (f", dropping {dropped} requests" if dropped else "")


def _begin(pool: Pool, event: PoolEvent, name: str) -> Outcome | None:
    if not pool.begin(event):
        return Outcome(OperationReply.REFUSED, f"cannot {name} while the pool is {pool.state.value}")
    return None


def _end(pool: Pool) -> None:
    pool.end_operation()


def _interrupted(pool: Pool, where: str) -> Outcome:
    return Outcome(OperationReply.INTERRUPTED, f"the pool began to stop {where}")
