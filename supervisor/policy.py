"""The pool's rules of time: how long things may take, and when a lost worker is replaced.

Clock-free, like the lifecycle tables: the caller passes ``now`` (any monotonic clock), so the
rules are tested without waiting. :class:`Timeouts` is an object passed in, not module
constants, so tests can make every wait short.
"""

from __future__ import annotations

import collections
import dataclasses

from ipc.handshake import TIMEOUT as HANDSHAKE_TIMEOUT
from ipc.messages import STATS_WAIT


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Internal deadlines; the user-facing ones (grace, ready, heartbeat) are settings."""

    #: After the grace period, how long a draining worker has to report and exit before it is killed.
    exit_margin: float = 5.0
    #: How long a worker that is not ready yet has to exit after a Stop before it is killed.
    #: It has nothing in flight to protect.
    unready_exit: float = 1.0
    #: How long a /stats fan-out waits for each worker's counters.
    stats: float = STATS_WAIT
    #: A connection must complete the handshake within this time.
    handshake: float = HANDSHAKE_TIMEOUT
    #: A client connection that sends no complete request for this long is closed.
    client_idle: float = 60.0
    #: After the pool has stopped, how long the clients that asked for the stop have to get the reply.
    reply_window: float = 5.0
    #: The first replacement of a lost worker is immediate; the next waits this long, doubling.
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    #: A worker that served this long resets its slot's backoff.
    healthy_after: float = 30.0
    #: After a replacement for recycling could not start, the next try waits this long, doubling.
    recycle_retry: float = 5.0


@dataclasses.dataclass(frozen=True)
class RestartRules:
    #: Failed starts one slot may have within ``window`` seconds; one more and it cannot start.
    max_restarts: int
    window: float
    backoff_base: float
    backoff_max: float
    healthy_after: float


class Restarts:
    """One slot's replacements: the delay before each, and whether its workers can start at all.

    Two kinds of loss, told apart as the issue of a query of death taught: a worker that became
    ready and then died (a request crashed it, it was killed, it hung) started fine, and is
    replaced after a backoff that doubles while its successors keep dying soon, however long
    that goes on; a worker that never became ready (its models would not load, the system
    refused the process) is a failed start, and more than ``max_restarts`` of those within
    ``window`` mean the slot cannot start (the pool decides what that costs: ``supervisor.health``).
    """

    def __init__(self, rules: RestartRules) -> None:
        self.rules = rules
        #: Every replacement so far.
        self.count = 0
        #: Losses since the slot last had a healthy worker.
        self.consecutive = 0
        self._failed_starts: collections.deque[float] = collections.deque()

    def on_lost(self, now: float, served_for: float, started: bool = True) -> float:
        """A worker of this slot was lost at ``now`` after serving ``served_for`` seconds (it
        ``started``: became ready). How long to wait before its replacement."""
        rules = self.rules
        if served_for >= rules.healthy_after:
            self.consecutive = 0
        if not started:
            self._failed_starts.append(now)
        delay = 0.0
        if self.consecutive:
            delay = min(rules.backoff_base * 2 ** (self.consecutive - 1), rules.backoff_max)
        self.consecutive += 1
        self.count += 1
        return delay

    def on_started(self) -> None:
        """A worker of this slot became ready: it can start after all."""
        self._failed_starts.clear()

    def cannot_start(self, now: float) -> bool:
        """More than ``max_restarts`` failed starts within the window: its workers cannot start."""
        while self._failed_starts and self._failed_starts[0] <= now - self.rules.window:
            self._failed_starts.popleft()
        return len(self._failed_starts) > self.rules.max_restarts

    @property
    def failed_starts(self) -> int:
        return len(self._failed_starts)
