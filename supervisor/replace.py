"""A slot's new process taking over from its old one, with no request lost: the step a reload
takes for every slot and recycling for one.

The caller claims the slot first (``SERVING --replace--> REPLACING``, at once, so nothing else
can act on it meanwhile). :func:`replace` then starts the new process beside the old one; the
moment it is ready it takes the slot and the old one drains away (:meth:`Pool.ready
<supervisor.pool.Pool.ready>`). The listening socket stays open in the supervisor throughout, so
no connection is refused: a draining worker stops accepting and the others accept. If the old
process is lost meanwhile, the new one takes the slot as it is (``promote``). If the new one
cannot start, the old one serves on (``abandon``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from .lifecycle import SlotEvent, SlotState, State
from .slots import Slot
from .workers import WorkerProcess

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("supervisor")

#: Further tries, ``backoff_base`` apart, when the system refuses a new process for a moment.
SPAWN_RETRIES = 2


async def replace(pool: Pool, slot: Slot) -> str | None:
    """Replace the process of the claimed (REPLACING) ``slot``. ``None`` once a new process
    serves in it; else why not, and the old one, if the slot still has it, serves on."""
    retried = False
    while True:
        new = await _start(pool, slot)
        if new is None:
            return _abandon(slot, "the system refused its process: see the log")
        await pool.wait_until(lambda process=new: not process.starting)  # type: ignore[misc]
        if new.state is State.READY:
            return None  # it took the slot over (or was given it when the old one was lost)
        if pool.state.ending:
            return "the pool is stopping"
        why = new.reason or f"it exited with code {new.exit_code} before it was ready"
        if slot.state is not SlotState.REPLACING:
            return why  # the old one was lost too: the slot is refilled as after any loss
        if retried or new.running or new.said_why or new.cause is not None:
            pool.launcher.kill(new, "its replacement was abandoned")
            return _abandon(slot, why)
        # Lost without a word (killed, say), as a worker starting with the pool would be
        # replaced: tried once more. One that said why it cannot start is not.
        retried = True
        logger.warning(
            "worker %d: its new process (pid %d) exited with code %s before it was ready; trying once more",
            slot.index, new.pid, new.exit_code,
        )  # fmt: skip


def take_over(pool: Pool, slot: Slot, new: WorkerProcess) -> None:
    """``new``, the slot's replacement, is ready: it takes the slot, and the old process drains
    away (no request is lost: it finishes what it holds, and the others accept meanwhile)."""
    old, slot.current, slot.incoming = slot.current, new, None
    slot.fire(SlotEvent.TAKE_OVER)
    if old is not None:
        pool.launcher.retire(old)


async def start_process(pool: Pool, slot: Slot, replacement: bool = False) -> WorkerProcess | None:
    """A new process for ``slot``, tried again while the system refuses one for a moment;
    ``None`` if it kept refusing, or the slot no longer wants one."""
    wanted = SlotState.REPLACING if replacement else SlotState.BACKOFF
    for attempt in range(SPAWN_RETRIES + 1):
        if attempt:
            await anyio.sleep(pool.timeouts.backoff_base)
        if pool.state.ending or (attempt and slot.state is not wanted):
            return None
        if not replacement:
            slot.fire(SlotEvent.SPAWN)
        process = await pool.launcher.spawn(slot, replacement)
        if process is not None:
            return process
    return None


async def _start(pool: Pool, slot: Slot) -> WorkerProcess | None:
    if slot.state is not SlotState.REPLACING:
        return None
    return await start_process(pool, slot, replacement=True)


def _abandon(slot: Slot, why: str) -> str:
    if slot.state is SlotState.REPLACING:
        slot.incoming = None
        slot.fire(SlotEvent.ABANDON)
    return why
