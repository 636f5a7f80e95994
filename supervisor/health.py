"""The pool's health policy, clock-free: given the time and the slots, what to do now.

Three questions, each a pure function of its inputs (the caller passes ``now`` from any
monotonic clock), so the policy is tested as tables without waiting for anything:

- :func:`check`, on every tick of the watchdog: which processes to kill (a deadline passed, or
  silent for the heartbeat timeout: hung), which slots' next process is due, which worker to
  recycle (``--max-requests``, ``--max-worker-memory``);
- :func:`after_loss`, when a slot's process ended or the system refused one: is that the pool's
  failed start, a scale's, a replacement's own business, or a loss to heal;
- :func:`heal` and :func:`down`, once a loss is counted by the slot's restart rules
  (``supervisor.policy``): let the replacement take the slot, spawn now, or back off; and
  whether the pool gives up (no worker can start).

The pool (``supervisor.pool``) asks and acts; nothing here does I/O or keeps state.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence

from .lifecycle import PoolState, SlotState, State
from .slots import Slot
from .workers import WorkerProcess


@dataclasses.dataclass(frozen=True)
class Rules:
    #: A worker silent this long is hung.
    heartbeat_timeout: float
    #: Recycle a worker past this resident memory, in MiB (0: never).
    max_worker_memory: int
    #: Whether the pool may recycle now: serving, with no reload or scale under way.
    may_recycle: bool


@dataclasses.dataclass(frozen=True)
class Kill:
    process: WorkerProcess
    reason: str
    #: One word, for the metrics: deadline, hung.
    cause: str


@dataclasses.dataclass(frozen=True)
class Spawn:
    slot: Slot


@dataclasses.dataclass(frozen=True)
class Recycle:
    slot: Slot
    why: str
    #: What limit it passed, for the metrics: requests, memory.
    kind: str


Action = Kill | Spawn | Recycle


def check(now: float, slots: Iterable[Slot], rules: Rules) -> list[Action]:
    """What the watchdog does at ``now``."""
    actions: list[Action] = []
    for slot in slots:
        if slot.state is SlotState.BACKOFF and slot.due is not None and now >= slot.due:
            actions.append(Spawn(slot))
        for process in slot.processes:
            if not process.running or process.state is State.KILLED:
                continue
            if process.deadline is not None and now >= process.deadline:
                actions.append(Kill(process, process.deadline_reason, "deadline"))
            elif process.last_heard is not None and now - process.last_heard > rules.heartbeat_timeout:
                actions.append(Kill(process, f"hung: no heartbeat for {now - process.last_heard:.1f}s", "hung"))
        if rules.may_recycle and slot.state is SlotState.SERVING:
            recycle = _recycling(now, slot, rules)
            if recycle is not None:
                actions.append(recycle)
    return actions


def _recycling(now: float, slot: Slot, rules: Rules) -> Recycle | None:
    process = slot.current
    if process is None or process.state is not State.READY or now < process.recycle_after:
        return None
    served = process.heartbeat.served if process.heartbeat else 0
    rss = process.heartbeat.rss if process.heartbeat else 0
    if process.request_limit is not None and served >= process.request_limit:
        return Recycle(slot, f"it answered {served} requests (limit {process.request_limit})", "requests")
    limit = rules.max_worker_memory
    if limit and rss > limit * 2**20:
        return Recycle(slot, f"it uses {rss / 2**20:.0f} MiB (limit {limit} MiB)", "memory")
    return None


def forgive(pause: float, now: float, slots: Iterable[Slot]) -> None:
    """The supervisor itself was held up for ``pause`` seconds (stopped, swapped out, starved):
    what the workers sent meanwhile is still unread in their sockets. Nobody is judged hung on
    that: every heartbeat counts as heard now, every deadline and due time moves by the pause."""
    for slot in slots:
        if slot.due is not None:
            slot.due += pause
        for process in slot.processes:
            if process.last_heard is not None:
                process.last_heard = now
            if process.deadline is not None:
                process.deadline += pause


@dataclasses.dataclass(frozen=True)
class Loss:
    """The facts of a slot's process that ended (or that the system refused to start)."""

    pool: PoolState
    #: The slot has had a ready worker.
    slot_served: bool
    #: This process became ready.
    ready: bool = False
    #: It said why it cannot start (its models will not load).
    said_why: bool = False
    #: It was killed for a deadline (not ready in time).
    timed_out: bool = False
    #: The system refused the process: there was none.
    refused: bool = False
    #: It was the slot's replacement (a reload's, a recycling's), not the process it counted on.
    replacement: bool = False


class Verdict(enum.Enum):
    #: The pool is stopping or down: nothing to heal.
    IGNORE = "ignore"
    #: A replacement: whoever started it (``supervisor.replace``) decides; the slot's own
    #: process serves on.
    REPLACEMENT = "replacement"
    #: A slot a scale added never served: the scale removes it and says why.
    SCALE_FAILED = "scale_failed"
    #: A slot that never served, whose worker cannot start: the pool's start fails.
    START_FAILED = "start_failed"
    #: A loss to heal, counted under the slot's restart rules (then :func:`heal`).
    COUNT = "count"


def after_loss(loss: Loss) -> Verdict:
    if loss.pool.ending:
        return Verdict.IGNORE
    if loss.replacement:
        return Verdict.REPLACEMENT
    if not loss.slot_served and not loss.ready:
        if loss.pool is PoolState.SCALING:
            return Verdict.SCALE_FAILED
        if loss.said_why or loss.timed_out:
            # No use trying again. One killed or crashed without a word, or refused by the
            # system for a moment, is tried again, as it would be later on.
            return Verdict.START_FAILED
    return Verdict.COUNT


def down(now: float, state: PoolState, slots: Sequence[Slot]) -> bool:
    """Whether the pool gives up: while it starts, as soon as a slot cannot start (a crash loop
    of failed starts: ``supervisor.policy``); once it has served, only when no slot can start at
    all. A worker that dies while serving never counts towards it: a request that kills its
    worker is not a worker that cannot start."""
    live = [slot for slot in slots if slot.live]
    cannot = [slot.restarts.cannot_start(now) for slot in live]
    if state is PoolState.STARTING:
        return any(cannot)
    return bool(live) and all(cannot)


class Heal(enum.Enum):
    #: The slot's replacement was starting already: it takes the slot.
    PROMOTE = "promote"
    RESPAWN = "respawn"
    BACKOFF = "backoff"


def heal(delay: float, has_incoming: bool) -> Heal:
    """What to do about a counted loss, given the restart rules' ``delay``."""
    if has_incoming:
        return Heal.PROMOTE
    return Heal.RESPAWN if delay == 0 else Heal.BACKOFF
