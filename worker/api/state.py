"""What the worker's control side and its HTTP side share: :class:`ServingState`."""

from __future__ import annotations

import dataclasses
import time

import anyio

#: Closes asked for (``Rebalance``) that no response has carried out this long after the ask are
#: given up on: their connections are idle, and end at the keep-alive timeout (5 s by default)
#: without our help; the supervisor, which asks nothing more while closes are outstanding, may
#: then look again.
REBALANCE_EXPIRY = 2.0
#: A worker closing connections for the rebalancing accepts none until this long after its last
#: such close, so that their clients reconnect to other workers: measured, those it kept
#: accepting came back to it more often than not (2 workers at 11 and 5 connections stayed so
#: over three rounds of 3 closes).
REBALANCE_TAIL = 0.25


@dataclasses.dataclass
class ServingState:
    """What the worker's control side and the HTTP side share."""

    draining: bool = False
    in_flight: int = 0
    completed: int = 0
    dropped: int = 0
    #: Set once the ASGI lifespan has started: the server is about to accept.
    started: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    #: HTTP connections open (``worker.http`` counts them).
    connections: int = 0
    #: How many connections close after their next response, as the supervisor asked, to spread
    #: kept-alive connections over the pool (``Rebalance``), and since when; and how many of
    #: those it asked for were settled (closed, or given up on) in all: the heartbeat says so.
    closing: int = 0
    closing_since: float = 0.0
    closed_at: float = -REBALANCE_TAIL
    rebalanced: int = 0

    def rebalance(self, close: int, now: float) -> None:
        """Close ``close`` more connections, each after its next response: at most those open
        and not closing already; the rest is given up on at once."""
        granted = max(0, min(close, self.connections - self.closing))
        self.rebalanced += close - granted
        self.closing += granted
        self.closing_since = now

    def closes(self) -> bool:
        """Whether the response about to go closes its connection, for the rebalancing."""
        if self.closing <= 0:
            return False
        self.closing -= 1
        self.rebalanced += 1
        self.closed_at = time.monotonic()
        return True

    def accepting(self) -> bool:
        """Whether to accept new connections: not while closing some for the rebalancing, nor
        for ``REBALANCE_TAIL`` after."""
        return not self.closing and time.monotonic() - self.closed_at >= REBALANCE_TAIL

    def settle(self, now: float) -> None:
        """Give up on closes asked for ``REBALANCE_EXPIRY`` ago or more."""
        if self.closing and now - self.closing_since >= REBALANCE_EXPIRY:
            self.rebalanced += self.closing
            self.closing = 0
