"""The health policy as tables: slots and processes in, actions and verdicts out, on a clock the
test holds."""

from __future__ import annotations

import pytest

from ipc.messages import Heartbeat
from supervisor import health
from supervisor.health import Heal, Kill, Loss, Recycle, Rules, Spawn, Verdict
from supervisor.lifecycle import Event, PoolState, SlotEvent
from supervisor.policy import RestartRules, Restarts
from supervisor.slots import Slot
from supervisor.workers import WorkerProcess

RULES = Rules(heartbeat_timeout=5.0, max_worker_memory=100, may_recycle=True)


class Handle:
    pid = 42


def process(*events: Event, heard: float | None = None, deadline: float | None = None) -> WorkerProcess:
    made = WorkerProcess(0, 1, Handle(), spawned_at=0.0)  # type: ignore[arg-type]
    for event in events:
        made.fire(event)
    made.last_heard = heard
    if deadline is not None:
        made.set_deadline(deadline, "not ready after 10s")
    return made


def slot(*events: SlotEvent, current: WorkerProcess | None = None, due: float | None = None) -> Slot:
    made = Slot(0, Restarts(RestartRules(5, 60.0, 0.5, 30.0, 30.0)))
    for event in events:
        made.fire(event, due)
    made.current = current
    if current is not None:
        made.processes.append(current)
    return made


SERVING = (SlotEvent.SPAWN, SlotEvent.READY)
READY = (Event.HELLO, Event.READY)


def test_a_healthy_slot_needs_nothing():
    assert health.check(10.0, [slot(*SERVING, current=process(*READY, heard=9.0))], RULES) == []


def test_a_silent_worker_is_killed_as_hung_and_a_deadline_kills_too():
    hung = process(*READY, heard=1.0)
    late = process(Event.HELLO, heard=9.0, deadline=8.0)
    actions = health.check(10.0, [slot(*SERVING, current=hung), slot(SlotEvent.SPAWN, current=late)], RULES)
    assert actions == [Kill(hung, "hung: no heartbeat for 9.0s", "hung"), Kill(late, "not ready after 10s", "deadline")]


def test_a_killed_or_exited_process_is_not_judged_again():
    killed = process(*READY, Event.KILL, heard=0.0)
    gone = process(*READY, heard=0.0)
    gone.exit_code = 0
    assert health.check(10.0, [slot(*SERVING, current=killed), slot(*SERVING, current=gone)], RULES) == []


@pytest.mark.parametrize("now, spawned", [(4.9, False), (5.0, True)])
def test_a_slot_in_backoff_is_refilled_when_due(now, spawned):
    waiting = slot(*SERVING, SlotEvent.LOST, due=5.0)
    assert health.check(now, [waiting], RULES) == ([Spawn(waiting)] if spawned else [])


def test_a_slot_in_backoff_with_no_due_time_waits_for_its_owner():
    """A scale's new slot that failed: the scale removes it; the watchdog must not refill it."""
    assert health.check(1e9, [slot(SlotEvent.SPAWN, SlotEvent.LOST)], RULES) == []


@pytest.mark.parametrize(
    "served, rss, may_recycle, kind",
    [
        (100, 0, True, "requests"),
        (99, 0, True, None),
        (0, 101 * 2**20, True, "memory"),
        (100, 0, False, None),  # a reload or scale is under way
    ],
)
def test_recycling(served, rss, may_recycle, kind):
    worker = process(*READY, heard=9.0)
    worker.request_limit = 100
    worker.heartbeat = Heartbeat(0, 0.0, rss, served)
    full = slot(*SERVING, current=worker)
    rules = Rules(5.0, 100, may_recycle)
    actions = [action for action in health.check(10.0, [full], rules) if isinstance(action, Recycle)]
    assert [action.kind for action in actions] == ([kind] if kind else [])


def test_a_slot_being_replaced_is_not_recycled_again():
    worker = process(*READY, heard=9.0)
    worker.request_limit = 1
    worker.heartbeat = Heartbeat(0, 0.0, 0, 5)
    assert health.check(10.0, [slot(*SERVING, SlotEvent.REPLACE, current=worker)], RULES) == []


def test_forgiving_a_pause_moves_every_clock_on():
    worker = process(*READY, heard=1.0, deadline=5.0)
    waiting = slot(*SERVING, SlotEvent.LOST, due=4.0)
    waiting.processes.append(worker)
    health.forgive(3.0, 10.0, [waiting])
    assert (worker.last_heard, worker.deadline, waiting.due) == (10.0, 8.0, 7.0)


NEVER_SERVED = {"slot_served": False, "ready": False}


@pytest.mark.parametrize(
    "loss, verdict",
    [
        (Loss(PoolState.STOPPING, slot_served=True, ready=True), Verdict.IGNORE),
        (Loss(PoolState.DOWN, slot_served=False), Verdict.IGNORE),
        (Loss(PoolState.RELOADING, slot_served=True, replacement=True), Verdict.REPLACEMENT),
        (Loss(PoolState.SCALING, **NEVER_SERVED), Verdict.SCALE_FAILED),
        (Loss(PoolState.SCALING, **NEVER_SERVED, refused=True), Verdict.SCALE_FAILED),
        (Loss(PoolState.STARTING, **NEVER_SERVED, said_why=True), Verdict.START_FAILED),
        (Loss(PoolState.STARTING, **NEVER_SERVED, timed_out=True), Verdict.START_FAILED),
        # Killed or crashed without a word, or refused for a moment: tried again.
        (Loss(PoolState.STARTING, **NEVER_SERVED), Verdict.COUNT),
        (Loss(PoolState.STARTING, **NEVER_SERVED, refused=True), Verdict.COUNT),
        # A slot that has served: every loss is one to heal, whatever the worker said.
        (Loss(PoolState.READY, slot_served=True, said_why=True), Verdict.COUNT),
        (Loss(PoolState.SCALING, slot_served=True, ready=True), Verdict.COUNT),
    ],
)
def test_what_a_loss_means(loss, verdict):
    assert health.after_loss(loss) is verdict


@pytest.mark.parametrize(
    "delay, incoming, heal",
    [(0.0, True, Heal.PROMOTE), (0.0, False, Heal.RESPAWN), (0.5, False, Heal.BACKOFF), (0.5, True, Heal.PROMOTE)],
)
def test_how_a_counted_loss_is_healed(delay, incoming, heal):
    assert health.heal(delay, incoming) is heal


def crash_looping(cannot: bool) -> Slot:
    made = slot(*SERVING)
    for t in range(6 if cannot else 1):
        made.restarts.on_lost(float(t), 0.0, started=False)
    return made


@pytest.mark.parametrize(
    "state, cannot, down",
    [
        (PoolState.STARTING, [True, False], True),  # a pool that never served is not half-started
        (PoolState.STARTING, [False, False], False),
        (PoolState.DEGRADED, [True, False], False),  # the others serve: it is tried again, slowly
        (PoolState.DEGRADED, [True, True], True),  # no worker can start at all
        (PoolState.RELOADING, [True, True], True),
    ],
)
def test_when_the_pool_gives_up(state, cannot, down):
    slots = [crashing for crashing in map(crash_looping, cannot)]
    assert health.down(10.0, state, slots) is down


def test_a_retired_slot_does_not_count():
    retired = crash_looping(False)
    retired.fire(SlotEvent.RETIRE)
    assert health.down(10.0, PoolState.DEGRADED, [crash_looping(True), retired])
