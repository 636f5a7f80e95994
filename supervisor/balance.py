"""Spreading kept-alive connections over the workers: who closes how many, and asking them.

A kept-alive connection stays on the worker that accepted it, so a worker that joins the pool
(a scale up, the replacement of a lost worker, a recycled one's successor) would serve none of
the connections already open: with uvicorn, a worker added under 16 kept-alive connections
served 0 of 147,434 requests in 25 s. Every worker's heartbeat says how many connections it
holds; when they are uneven, the supervisor asks those with more than their share to close the
surplus (``Rebalance``), each connection after its next response, which says ``Connection:
close``. Their clients reconnect, and a worker with fewer connections, less busy, tends to
accept first.

:func:`plan` is the policy, clock-free and tested as a table; :class:`Balancer` asks it on
every watchdog tick and whenever a worker becomes ready, and posts what it says.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ipc.messages import Heartbeat, Rebalance

from .lifecycle import State
from .workers import WorkerProcess

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("supervisor")

#: Connections are uneven when a worker holds more than its share by more than this fraction of
#: it, or less by as much. Half the goal's 25% (every worker within 25% of an even share of the
#: clients), so that the spread settles well inside it; but never less than one connection while
#: one is inside the goal: 16 clients over 4 workers are 4 a share, 12.5% is half a connection,
#: and [3, 4, 4, 5], within the goal, was asked to move one connection at a time for good (19
#: asks in 35 s under Wine; a closed client often came back to a worker other than the one short).
TOLERANCE = 0.125
#: A worker not heard from for this many heartbeat intervals is silent: frozen, blocked or lost
#: and not yet found so by the watchdog (which waits the heartbeat timeout, 30 s by default). Its
#: last count is stale, and an ask would go unanswered and hold every later round up until the
#: watchdog kills it (so it did before: a worker frozen with SIGSTOP, counted at its last 8
#: connections, was asked to close 3 as another joined; tests/supervisor/test_balance.py).
#: Three, not one: a heartbeat sent late by a loop busy for a moment is not silence (the
#: watchdog's timeout is at least four intervals).
SILENT_INTERVALS = 3.0


@dataclasses.dataclass(frozen=True)
class Load:
    """A serving worker as the policy sees it."""

    #: The connections it holds, as its last heartbeat said (0 before its first).
    connections: int
    #: Closes asked for (of it or another) are under way, or the counts not yet fresh since.
    pending: bool = False
    #: Not heard from for ``SILENT_INTERVALS`` heartbeats: neither counted nor asked.
    silent: bool = False


def plan(loads: Sequence[Load]) -> list[int]:
    """How many connections each worker should close, in the order given: the surplus over an
    even share of those with more; nothing while any close asked for is still pending (its
    connections are moving, and the counts are not yet what they will be), nor when the
    connections are even within ``TOLERANCE`` or one apart. Silent workers are left out: asked
    nothing, their stale counts not in the shares, their pending closes awaited by nobody."""
    nothing = [0] * len(loads)
    live = [index for index, load in enumerate(loads) if not load.silent]
    if len(live) < 2 or any(loads[index].pending for index in live):
        return nothing
    closes = list(nothing)
    for index, close in zip(live, _surplus([loads[index].connections for index in live]), strict=True):
        closes[index] = close
    return closes


def _surplus(counts: list[int]) -> list[int]:
    nothing = [0] * len(counts)
    even = sum(counts) / len(counts)
    margin = max(TOLERANCE * even, min(1.0, 2 * TOLERANCE * even))
    if max(counts) - min(counts) < 2 or (max(counts) <= even + margin and min(counts) >= even - margin):
        return nothing
    # Shares as even as whole connections go: the remainder goes to the most loaded, who then
    # close the fewest.
    share, extra = divmod(sum(counts), len(counts))
    closes = list(nothing)
    for rank, index in enumerate(sorted(range(len(counts)), key=lambda i: -counts[i])):
        closes[index] = max(0, counts[index] - share - (rank < extra))
    return closes


class Balancer:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        #: Connections each worker was asked to close, in all (its heartbeat's ``rebalanced``
        #: catches up with it once it has closed them or given up on them).
        self.asked: dict[WorkerProcess, int] = {}
        #: Closes were asked for and not yet seen settled.
        self.unsettled = False
        #: Once they are: each worker's heartbeat at that moment. The counts are right again only
        #: once every worker has sent its next one, as the clients closed on were reconnecting
        #: meanwhile (measured: acting on the counts at once asked a worker that had just closed
        #: 8 of its 16 connections to close 5 more).
        self.since: dict[WorkerProcess, Heartbeat | None] | None = None

    def check(self, joined: WorkerProcess | None = None) -> None:
        """Ask the workers with more than their share of connections to close the surplus;
        ``joined``: a worker that just became ready (said, in the log)."""
        pool = self.pool
        if pool.state.ending:
            return
        serving = [p for p in pool.processes() if p.state is State.READY and p.channel is not None]
        self.asked = {process: self.asked.get(process, 0) for process in serving}
        silence = SILENT_INTERVALS * pool.launcher.worker_settings.heartbeat_interval
        now = pool.now()
        silent = {p for p in serving if p.last_heard is None or now - p.last_heard > silence}
        waiting = self._waiting([process for process in serving if process not in silent])
        loads = [Load(_beat(process)[0], waiting, process in silent) for process in serving]
        closes = plan(loads)
        for process, close, load in zip(serving, closes, loads, strict=True):
            if close and process.channel is not None and process.channel.post(Rebalance(close)):
                self.asked[process] += close
                self.unsettled = True
                how = logging.INFO if joined is not None else logging.DEBUG
                logger.log(
                    how, "worker %d (pid %d) closes %d of its %d connections: %s",
                    process.slot, process.pid, close, load.connections, _why(joined, serving, loads),
                )  # fmt: skip

    def _waiting(self, serving: list[WorkerProcess]) -> bool:
        """Whether closes asked of ``serving`` (those not silent) are still under way, or their
        counts not yet fresh since."""
        if any(_beat(process)[1] < self.asked[process] for process in serving):
            self.unsettled = True
            return True
        if self.unsettled:
            self.unsettled = False
            self.since = {process: process.heartbeat for process in serving}
        if self.since is not None:
            if any(process.heartbeat is self.since.get(process) for process in serving):
                return True
            self.since = None
        return False


def _beat(process: WorkerProcess) -> tuple[int, int]:
    """The connections ``process`` holds, and those it has closed as asked, as it last said."""
    beat = process.heartbeat
    return (beat.connections, beat.rebalanced) if beat is not None else (0, 0)


def _why(joined: WorkerProcess | None, serving: list[WorkerProcess], loads: list[Load]) -> str:
    counts = ", ".join(f"{p.slot}: {load.connections}" for p, load in zip(serving, loads, strict=True))
    return (f"worker {joined.slot} joined" if joined is not None else "uneven") + f" (connections by worker {counts})"
