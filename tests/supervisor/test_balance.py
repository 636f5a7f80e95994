"""The balancing policy as a table: connections held by each serving worker in, closes out; and
the balancer that asks for them, with workers that answer, stay silent or drain."""

from __future__ import annotations

import dataclasses
import types

import pytest

from ipc.messages import Heartbeat
from supervisor.balance import Balancer, Load, plan
from supervisor.lifecycle import State

#: (connections by worker, closes by worker, why)
TABLE = [
    ([16, 0], [8, 0], "a worker joined beside one holding all 16"),
    ([0, 16], [0, 8], "in any order"),
    ([16, 0, 0], [10, 0, 0], "two joined: the remainder stays with the most loaded"),
    ([8, 8, 0], [2, 3, 0], "the tie goes to the first, which keeps the remainder"),
    ([9, 7], [0, 0], "within 12.5% of even (8): left alone"),
    ([10, 6], [2, 0], "past it: the surplus over an even share, no more"),
    ([6, 5, 5], [0, 0, 0], "as even as whole connections go"),
    ([6, 6, 4], [0, 1, 0], "one below: a worker at the larger share keeps it, the other gives one"),
    ([2, 1], [0, 0], "one apart never moves: it would only move the imbalance"),
    ([2, 0], [1, 0], "two apart does"),
    ([1, 0, 0, 0], [0, 0, 0, 0], "a lone connection stays where it is"),
    ([3, 4, 4, 5], [0, 0, 0, 0], "one off a share of 4 is within the goal (25%): left alone"),
    ([5, 5, 3, 3], [0, 0, 0, 0], "so are two such"),
    ([6, 4, 3, 3], [2, 0, 0, 0], "two over is not"),
    ([0, 0], [0, 0], "no connections"),
    ([100, 90], [0, 0], "within 12.5% of 95"),
    ([110, 80], [15, 0], "past it"),
    ([16], [0], "one worker: nobody to spread to"),
    ([], [], "none serving"),
]


@pytest.mark.parametrize(("connections", "closes", "why"), TABLE, ids=[row[2] for row in TABLE])
def test_the_surplus_over_an_even_share_closes(connections, closes, why):
    assert plan([Load(count) for count in connections]) == closes


#: (loads by worker, closes by worker, why): "s" after a count marks a silent worker.
SILENT_TABLE = [
    (["16", "0", "8s"], [8, 0, 0], "a silent worker is asked nothing, its stale count not in the shares"),
    (["8s", "0"], [0, 0], "a silent one and one that answers: nobody to spread to"),
    (["9", "7", "30s"], [0, 0, 0], "the others are even among themselves"),
    (["12", "0", "0", "0s"], [8, 0, 0, 0], "a silent worker's zero does not count either"),
]


@pytest.mark.parametrize(("loads", "closes", "why"), SILENT_TABLE, ids=[row[2] for row in SILENT_TABLE])
def test_a_silent_worker_is_left_out(loads, closes, why):
    assert plan([Load(int(load.rstrip("s")), silent=load.endswith("s")) for load in loads]) == closes


def test_nothing_is_asked_while_a_close_asked_for_is_pending():
    # Its connections are on their way to other workers: the counts are not yet what they will be.
    assert plan([Load(16, pending=True), Load(0)]) == [0, 0]
    assert plan([Load(12), Load(0, pending=True), Load(0)]) == [0, 0, 0]
    assert plan([Load(12), Load(0), Load(0)]) == [8, 0, 0]
    # A silent worker's pending closes hold nobody up: it may never answer.
    assert plan([Load(12), Load(0), Load(5, pending=True, silent=True)]) == [6, 0, 0]


def test_the_closers_keep_an_even_share_and_close_no_more_than_the_others_lack():
    for counts in ([37, 0, 0, 0], [20, 19, 0], [5, 0, 0, 0, 0, 0, 0, 0], [33, 1], [64, 0], [3, 9, 27]):
        closes = plan([Load(count) for count in counts])
        low, high = divmod(sum(counts), len(counts))[0], -(-sum(counts) // len(counts))
        lacking = sum(max(0, high - count) for count, close in zip(counts, closes, strict=True) if not close)
        assert all(low <= count - close <= high for count, close in zip(counts, closes, strict=True) if close)
        assert 0 < sum(closes) <= lacking, (counts, closes)


@dataclasses.dataclass(eq=False)
class Worker:
    """What the balancer reads of a worker process, and the asks posted to it."""

    slot: int
    connections: int
    state: State = State.READY
    last_heard: float | None = 0.0
    heartbeat: Heartbeat | None = None
    asks: list[int] = dataclasses.field(default_factory=list)
    pid: int = 0

    def __post_init__(self) -> None:
        self.pid = 1000 + self.slot
        self.channel = types.SimpleNamespace(post=lambda message: self.asks.append(message.close) or True)
        self.beat(0.0)

    def beat(self, now: float, closed: int = 0) -> None:
        """A heartbeat at ``now``, having closed ``closed`` more connections as asked."""
        self.connections -= closed
        rebalanced = (self.heartbeat.rebalanced if self.heartbeat else 0) + closed
        self.heartbeat = Heartbeat(0, 0.0, 0, 0, self.connections, rebalanced)
        self.last_heard = now


class FakePool:
    def __init__(self, *workers: Worker) -> None:
        self.workers = list(workers)
        self.clock = 0.0
        self.state = types.SimpleNamespace(ending=False)
        self.launcher = types.SimpleNamespace(worker_settings=types.SimpleNamespace(heartbeat_interval=1.0))

    def processes(self) -> list[Worker]:
        return self.workers

    def now(self) -> float:
        return self.clock


def test_a_frozen_worker_is_asked_nothing_and_holds_nobody_up():
    # Frozen (SIGSTOP) after its last heartbeat, which said 8; the watchdog (30 s by default)
    # has not found it yet. Before, it was asked to close 3 as worker 2 joined, never answered,
    # and worker 3's joining 4 s later was asked nothing of anyone.
    active, frozen, joined = Worker(0, 8), Worker(1, 8), Worker(2, 0)
    pool = FakePool(active, frozen, joined)
    balancer = Balancer(pool)  # type: ignore[arg-type]
    pool.clock = 4.0
    active.beat(4.0)
    joined.beat(4.0)
    balancer.check(joined=joined)
    assert (active.asks, frozen.asks, joined.asks) == ([4], [], [])
    active.beat(5.0, closed=4)
    joined.connections = 4
    joined.beat(5.0)
    later = Worker(3, 0)
    pool.workers.append(later)
    for now in (6.0, 7.0, 8.0):  # every worker that answers sends a heartbeat since: counts fresh
        pool.clock = now
        for worker in (active, joined, later):
            worker.beat(now)
        balancer.check(joined=later if now == 6.0 else None)
    assert (active.asks, frozen.asks, joined.asks, later.asks) == ([4, 1], [], [1], [])


def test_a_draining_worker_is_asked_nothing():
    staying, draining, joined = Worker(0, 8), Worker(1, 8, State.DRAINING), Worker(2, 0)
    balancer = Balancer(FakePool(staying, draining, joined))  # type: ignore[arg-type]
    balancer.check(joined=joined)
    assert (staying.asks, draining.asks) == ([4], [])
