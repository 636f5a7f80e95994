"""Accepting connections on the pool's shared listening socket, every one as it comes.

On POSIX the event loop accepts on the shared socket, every waiting connection each time it is
readable. On Windows a
socket can be tied to one I/O completion port only, so when several processes share a
listening socket (``socket.share``) only the first could accept on the Proactor loop; each
worker accepts in a thread instead and hands every connection (a socket of its own) to the
loop. Either way ``TCP_NODELAY`` is set on each connection (:func:`no_delay`).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import anyio
import anyio.lowlevel
import anyio.to_thread

#: How often the Windows accept thread looks up to see whether it should stop.
ACCEPT_POLL = 0.2
#: The longest a worker looks away after accept() failed, doubling up to it.
ACCEPT_BACKOFF_MAX = 1.0
#: How often a worker that does not accept for now (``accepting()`` false: it is closing some of
#: its connections so that their clients reconnect to other workers) looks again.
HOLD_OFF = 0.01


def no_delay(conn: socket.socket) -> None:
    """Send small responses at once: Windows CPython gives accepted sockets protocol 0, for
    which asyncio does not set ``TCP_NODELAY``, and kept-alive requests then wait ~40 ms each
    (Nagle's algorithm meeting delayed ACKs)."""
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LoopAcceptor:
    """POSIX: the event loop watches the shared socket, and each time it is readable accepts
    every connection waiting, until accept() says none is left (``BlockingIOError``). Nothing
    waits on a timer: a worker that holds thousands of idle connections takes new ones as fast
    as they come. Stopping removes the watch, synchronously: a connection the kernel has handed
    over is never lost to a cancellation, and those still queued go to other workers.

    Every worker is woken for each new connection and the first to call accept() wins it, so
    kept-alive connections (which stay where they land) are not spread evenly over the
    workers by accepting; the pool rebalances them. While ``accepting()`` says no (this worker is
    closing some of its connections so that their clients go to others), it looks away.
    """

    def __init__(self, sock: socket.socket, accepting: Callable[[], bool] = lambda: True) -> None:
        self._sock = sock
        self._accepting = accepting
        self._loop = asyncio.get_running_loop()
        self._watching = False
        self._resume: asyncio.TimerHandle | None = None
        self._backoff = 0.0

    def start(self, on_connection: Callable[[socket.socket], None]) -> None:
        def readable() -> None:
            if not self._accepting():
                self._look_away(readable, HOLD_OFF)  # what arrives meanwhile goes to other workers
                return
            # The backlog is bounded (somaxconn), and so is this loop.
            while self._watching:
                try:
                    conn, _ = self._sock.accept()
                except (BlockingIOError, InterruptedError):
                    return  # none left (or another worker took it)
                except OSError:
                    # Out of descriptors, say: the connection waits in the queue (or goes to
                    # another worker) while this one looks away, rather than spin on it.
                    self._backoff = min(ACCEPT_BACKOFF_MAX, max(0.01, self._backoff * 2))
                    self._look_away(readable, self._backoff)
                    return
                self._backoff = 0.0
                on_connection(conn)

        self._sock.setblocking(False)
        self._watch(readable)

    def _look_away(self, readable: Callable[[], None], seconds: float) -> None:
        self._unwatch()
        self._resume = self._loop.call_later(seconds, self._watch, readable)

    def _watch(self, readable: Callable[[], None]) -> None:
        self._resume = None
        self._loop.add_reader(self._sock.fileno(), readable)
        self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False

    async def stop(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
        self._unwatch()
        self._sock.close()


class ThreadAcceptor:
    """Windows: a thread accepts on this worker's handle of the shared socket, one connection
    after another with no pause, and hands each to the loop. Stopping joins the thread; what it
    accepted before is served."""

    def __init__(self, sock: socket.socket, accepting: Callable[[], bool] = lambda: True) -> None:
        self._sock = sock
        self._accepting = accepting
        self._loop = asyncio.get_running_loop()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_connection: Callable[[socket.socket], None]) -> None:
        # A timeout, not blocking mode: every worker's handle of the shared socket behaves
        # alike, and a worker that loses the race for a connection simply waits again.
        self._sock.settimeout(ACCEPT_POLL)

        def accept_loop() -> None:
            backoff = 0.0
            while not self._stopping.is_set():
                if not self._accepting():
                    self._stopping.wait(HOLD_OFF)
                    continue
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    # A repeating error (out of handles, say) must not spin this thread.
                    backoff = min(ACCEPT_BACKOFF_MAX, max(0.01, backoff * 2))
                    self._stopping.wait(backoff)
                    continue
                backoff = 0.0
                conn.setblocking(True)
                # Runs on the loop, even after this thread has stopped: none is lost.
                self._loop.call_soon_threadsafe(on_connection, conn)

        self._thread = threading.Thread(target=accept_loop, name="accept", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._thread.join)
        self._sock.close()
        await anyio.lowlevel.checkpoint()  # the connections it handed over start their tasks
