"""The pool's watchdog: it keeps the slots filled, as the health policy (``supervisor.health``)
says.

- Every tick it asks the policy what time has done (a deadline passed, a worker silent for
  the heartbeat timeout, a slot's backoff over, a worker past its recycling limit) and does it,
  and has the workers' connections spread evenly (``supervisor.balance``).
  If the supervisor itself was held up (stopped, swapped out, starved), nobody is judged by it.
- When a slot's process ends, or the system refuses one, it asks the policy what that means
  (the pool's failed start, a scale's, a replacement's business, or a loss to heal) and heals
  the slot: at once the first time, then after a doubling backoff (``supervisor.policy``). A
  slot whose workers fail to start more than ``--max-restarts`` times within
  ``--restart-window`` cannot start: it is tried again at the longest backoff while the others
  serve, and the pool gives up only when no slot can start (or, while it starts, at once).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from ipc.contract import inflight
from ipc.messages import Quarantined

from . import health
from .lifecycle import PoolEvent, PoolState, SlotEvent
from .slots import Slot
from .workers import WorkerProcess

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("supervisor")


class Watchdog:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    async def run(self) -> None:
        """Tick until cancelled: kill, refill and recycle as the health policy says."""
        pool = self.pool
        settings = pool.settings.pool
        tick = max(0.02, min(0.5, settings.heartbeat_timeout / 5))
        last = pool.now()
        while True:
            now = pool.now()
            if now - last > tick + max(1.0, tick):
                pause = now - last - tick
                logger.warning("the supervisor was held up for %.1fs: no worker is judged by it", pause)
                health.forgive(pause, now, pool.slots)
            last = now
            may_recycle = pool.state in (PoolState.READY, PoolState.DEGRADED)
            rules = health.Rules(settings.heartbeat_timeout, settings.max_worker_memory, may_recycle)
            for action in health.check(now, pool.slots, rules):
                if isinstance(action, health.Kill):
                    pool.launcher.kill(action.process, action.reason, action.cause)
                elif isinstance(action, health.Spawn):
                    pool.respawn(action.slot)
                else:
                    pool.recycled[action.kind] = pool.recycled.get(action.kind, 0) + 1
                    pool.operations.recycle(action.slot, action.why)
            pool.balancer.check()
            await anyio.sleep(tick)

    def lost(self, slot: Slot, process: WorkerProcess | None, code: int = 0, replacement: bool = False) -> None:
        """``slot`` lost ``process`` (``None``: the system refused to start one): heal it, or not,
        as the health policy says."""
        pool = self.pool
        ready = process is not None and process.ready_at is not None
        loss = health.Loss(
            pool.state,
            slot_served=slot.served_at is not None,
            ready=ready,
            said_why=process is not None and process.said_why,
            timed_out=process is not None and process.cause == "deadline",
            refused=process is None,
            replacement=replacement,
        )
        verdict = health.after_loss(loss)
        if verdict is health.Verdict.IGNORE or verdict is health.Verdict.REPLACEMENT:
            return  # a replacement's failure is its replacer's to tell
        if process is not None:
            if ready:
                self._in_flight(slot, process)
            else:
                detail = process.reason or f"exited with code {code} before it was ready"
                logger.error("worker %d failed to start: %s", slot.index, detail)
            cause = process.cause or ("failed_start" if not ready else "crashed" if code else "exited")
            pool.losses[slot.index, cause] = pool.losses.get((slot.index, cause), 0) + 1
        if verdict is health.Verdict.SCALE_FAILED:
            slot.fire(SlotEvent.REFUSED if process is None else SlotEvent.LOST)  # the scale removes it
        elif verdict is health.Verdict.START_FAILED:
            slot.fire(SlotEvent.FAIL)
            failed_to_start = pool.state is PoolState.STARTING
            pool.give_up(f"worker {slot.index} failed to start", failed_to_start, logged=True)
        else:
            self._heal(slot, process)

    def _in_flight(self, slot: Slot, process: WorkerProcess) -> None:
        """Say what the worker that died had in flight, and quarantine the models whose requests
        keep being in flight when workers die."""
        pool = self.pool
        requests = inflight.read(pool.launcher.inflight_path(process))
        if not requests:
            return
        listed = "; ".join(map(str, requests[:8])) + (f"; and {len(requests) - 8} more" if len(requests) > 8 else "")
        logger.error(
            "worker %d (pid %d) died with %d requests in flight: %s", slot.index, process.pid, len(requests), listed
        )
        # The requests inside their model's call are the suspects; the others were being read,
        # decoded or answered, and any of them may have been on a worker a poison request killed.
        suspects = {f"{request.model}/{request.version}" for request in requests if request.in_model}
        newly = pool.quarantine.died(pool.now(), suspects)
        for key in newly:
            logger.error("%s", pool.quarantine.models[key])
        if newly:
            pool.broadcast(Quarantined(dict(pool.quarantine.models)))

    def _heal(self, slot: Slot, process: WorkerProcess | None) -> None:
        """A loss counted by the slot's restart rules: spawn now, later, hand the slot to its
        replacement, or give up (no worker can start)."""
        pool, now = self.pool, self.pool.now()
        started = process is not None and process.ready_at is not None
        served_for = now - process.ready_at if process is not None and process.ready_at is not None else 0.0
        delay = slot.restarts.on_lost(now, served_for, started)
        if process is None:
            delay = max(delay, pool.timeouts.backoff_base)  # the system just refused: not at once
        if process is not None:
            pool.fire(PoolEvent.LOST)
        if slot.restarts.cannot_start(now):
            if health.down(now, pool.state, pool.slots):
                slot.fire(SlotEvent.FAIL)
                self._crash_loop(slot, process)
                return
            delay = pool.rules.backoff_max  # the others serve: try again, slowly
            why = f" (the last: {process.reason})" if process is not None and process.reason else ""
            logger.warning(
                "worker %d cannot start: %d failed starts within %gs%s; tried again every %gs while the others serve",
                slot.index, slot.restarts.failed_starts, pool.rules.window, why, delay,
            )  # fmt: skip
        heal = health.heal(delay, slot.incoming is not None)
        if heal is health.Heal.PROMOTE:
            slot.fire(SlotEvent.PROMOTE)
            slot.current, slot.incoming = slot.incoming, None
        else:
            slot.fire(SlotEvent.LOST if process is not None else SlotEvent.REFUSED, due=now + delay)
            if heal is health.Heal.RESPAWN:
                pool.respawn(slot)
            else:
                logger.info("worker %d restarting in %.1fs", slot.index, delay)

    def _crash_loop(self, slot: Slot, process: WorkerProcess | None) -> None:
        pool, rules = self.pool, self.pool.rules
        if process is None:
            reason = f"worker {slot.index} could not be started {rules.max_restarts + 1} times: the pool is down"
            pool.give_up(reason, pool.state is PoolState.STARTING and slot.served_at is None)
            return
        # Why the last one failed, when it said: its models no longer load, say.
        why = f" (the last: {process.reason})" if process.reason else ""
        alone = "" if pool.state is PoolState.STARTING else ", and no worker can start"
        pool.give_up(
            f"worker {slot.index} failed {rules.max_restarts + 1} times within {rules.window:g}s{why}: "
            f"a crash loop{alone}; the pool is down"
        )
