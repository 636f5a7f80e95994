"""A worker's open connections: how many there are, which are idle, and the limit on them.

One :class:`Connections` per worker, shared by the accept path (:mod:`worker.http`) and the HTTP
server serving the connections (:mod:`.hypercorn_server`, :mod:`.uvicorn_server`). ``open`` is
the number a worker reports as its load.

- The limit (``--max-connections``): a connection accepted while ``open`` is at the limit is
  refused at once, with a 503 that says so (:func:`.refusals.refuse_connection`).
- Room before it: from ``IDLE_CLOSE_AT`` of the limit on, each new connection closes the
  connection that has been idle longest, if any is, so that idle kept-alive connections (or a
  flood of connections that never send anything) give way to new clients instead of holding
  them off. New connections are refused only when every connection is in use.
- Idle means that no request is in progress on the connection: not a byte of one has arrived
  since its last response was sent (or since it was accepted). Each server says when one of its
  connections becomes idle and when it stops being idle, synchronously as the bytes arrive, so
  a connection is never closed with a request of its that the server has begun to read. What
  is left is the race every HTTP server's keep-alive timeout has: a client may send a request at
  the very moment its idle connection is closed, and that request meets a closed connection (a
  reset, in flight). HTTP clients expect it of a kept-alive connection: they retry an idempotent
  request on a new connection, and a request they sent on a connection closed under them is
  not one the server has seen.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Hashable

logger = logging.getLogger("worker.http")

#: From this share of the limit on, each new connection closes the one idle longest.
IDLE_CLOSE_AT = 0.9
#: File descriptors a worker needs besides its connections (the listening socket, the control
#: channel, the model files, its libraries' own), kept out of the limit's way.
RESERVED_DESCRIPTORS = 64


class Connections:
    """The worker's open connections and the idle ones among them, oldest idle first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: Accepted and not yet closed, refused ones aside: what the worker holds.
        self.open = 0
        #: Idle connections, by the time they became idle (a dict keeps that order), each with
        #: the function that closes it.
        self._idle: dict[Hashable, Callable[[], None]] = {}
        #: Idle connections closed to make room that have not ended yet: their room is taken.
        self._closing: set[Hashable] = set()
        #: How many were refused at the limit, and how many idle ones closed to make room.
        self.refused = 0
        self.closed_idle = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    def admit(self) -> bool:
        """A connection was accepted: count it and return True, or False if it is to be refused.

        Near the limit, the connection idle longest is closed first (module docstring).
        """
        if self.open - len(self._closing) >= self.limit * IDLE_CLOSE_AT:
            self.close_oldest_idle()
        if self.open - len(self._closing) >= self.limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                logger.warning(
                    "%d connections open, the limit (--max-connections), none of them idle: refused %d with 503",
                    self.open,
                    self.refused,
                )
            return False
        self.open += 1
        return True

    def closed(self) -> None:
        """An admitted connection has ended."""
        self.open -= 1

    def ended(self, key: Hashable) -> None:
        """The server's connection ``key`` (as given to :meth:`became_idle`) has ended."""
        self._idle.pop(key, None)
        self._closing.discard(key)

    def became_idle(self, key: Hashable, close: Callable[[], None]) -> None:
        """``key``'s connection has no request in progress; ``close`` closes it (synchronously
        or soon: it is no longer counted as idle either way)."""
        self._idle.pop(key, None)
        self._idle[key] = close

    def became_busy(self, key: Hashable) -> None:
        """Bytes of a request arrived on ``key``'s connection (or it is closing)."""
        self._idle.pop(key, None)

    def close_oldest_idle(self) -> bool:
        if not self._idle:
            return False
        key = next(iter(self._idle))
        close = self._idle.pop(key)
        self._closing.add(key)
        self.closed_idle += 1
        close()
        return True


def effective_limit(max_connections: int) -> int:
    """``max_connections``, made possible: on POSIX the soft limit on open files is raised to
    what it needs (up to the hard limit), and where even that is too few, the limit is lowered
    to fit, with a warning. Windows has no such limit on sockets."""
    if sys.platform == "win32":
        return max_connections
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        fits = max(1, soft - RESERVED_DESCRIPTORS)
        logger.warning(
            "--max-connections %d needs %d open files; this process may have %d (ulimit -n): %d connections at most",
            max_connections,
            needed,
            soft,
            fits,
        )
        return fits
    return max_connections
