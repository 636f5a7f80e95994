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
    #: Replacements one slot may need within ``window`` seconds; one more and the pool gives up.
    max_restarts: int
    window: float
    backoff_base: float
    backoff_max: float
    healthy_after: float


class Restarts:
    """One slot's replacements: the delay before each, and when to give up (a crash loop)."""

    def __init__(self, rules: RestartRules) -> None:
        self.rules = rules
        #: Every replacement so far.
        self.count = 0
        #: Losses since the slot last had a healthy worker.
        self.consecutive = 0
        self._recent: collections.deque[float] = collections.deque()

    def on_lost(self, now: float, served_for: float) -> float | None:
        """A worker of this slot was lost at ``now`` after serving ``served_for`` seconds.

        Returns how long to wait before its replacement, or ``None``: the slot is in a crash
        loop and the pool should give up.
        """
        rules = self.rules
        if served_for >= rules.healthy_after:
            self.consecutive = 0
        while self._recent and self._recent[0] <= now - rules.window:
            self._recent.popleft()
        if len(self._recent) >= rules.max_restarts:
            return None
        self._recent.append(now)
        delay = 0.0
        if self.consecutive:
            delay = min(rules.backoff_base * 2 ** (self.consecutive - 1), rules.backoff_max)
        self.consecutive += 1
        self.count += 1
        return delay
