"""Serve an ASGI app with hypercorn's HTTP protocol on the pool's shared listening socket.

This mirrors ``hypercorn.asyncio.run.worker_serve`` (lifespan, one ``TCPServer`` per
connection, stop accepting on the trigger, then up to ``config.graceful_timeout`` for open
connections) with three differences:

- Ownership: every connection is a task in a task group this function owns, so when it
  returns no connection of this worker is left running anywhere.
- Accepting: on POSIX the event loop accepts on the shared socket, one connection at a time.
  On Windows a socket can be tied to one I/O completion port only, so when several processes
  share a listening socket (``socket.share``) only the first could accept on the Proactor
  loop; each worker accepts in a thread instead and hands every connection (a socket of its
  own) to the loop. Either way ``TCP_NODELAY`` is set on each connection: Windows CPython
  gives accepted sockets protocol 0, for which asyncio does not set it, and kept-alive
  requests then wait ~40 ms each (Nagle's algorithm meeting delayed ACKs).
- Draining loses nothing: see the comment in :func:`serve`.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.utils import wrap_app

from . import protocol

#: How often the Windows accept thread looks up to see whether it should stop.
ACCEPT_POLL = 0.2
#: The longest the Windows accept thread waits after accept() failed, doubling up to it.
ACCEPT_BACKOFF_MAX = 1.0


async def serve(app: Any, config: Config, sock: socket.socket, shutdown_trigger: Callable[[], Awaitable[Any]]) -> None:
    protocol.install()
    loop = asyncio.get_running_loop()
    wrapped = wrap_app(app, 0, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, loop, lifespan_state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()

    context = WorkerContext(None)
    open_connections = 0
    all_closed = anyio.Event()

    async def serve_connection(conn: socket.socket) -> None:
        nonlocal open_connections, all_closed
        open_connections += 1
        try:
            _no_delay(conn)
            reader, writer = await asyncio.open_connection(sock=conn, limit=2**16)
            await TCPServer(wrapped, loop, config, context, lifespan_state, reader, writer)
        except OSError:
            conn.close()  # the client left before we got to it
        finally:
            open_connections -= 1
            if not open_connections:
                all_closed.set()
                all_closed = anyio.Event()

    try:
        async with anyio.create_task_group() as connections:

            def on_connection(conn: socket.socket) -> None:
                connections.start_soon(serve_connection, conn)

            def load() -> int:
                return open_connections

            acceptor = _ThreadAcceptor(sock, load) if sys.platform == "win32" else _LoopAcceptor(sock, load)
            acceptor.start(on_connection)
            try:
                await shutdown_trigger()
            finally:
                await acceptor.stop()
            # The drain. Kept-alive connections are not closed here: closing an idle one races
            # a request its client may be sending at that very moment, and that request would
            # be lost. Each connection instead closes after its next response, which says
            # `Connection: close` (the app adds it while draining), so its client reconnects,
            # to a worker that still accepts. A connection that stays idle ends at the
            # keep-alive timeout, as it would on any day. What is still open when the grace
            # period ends is cut off.
            with anyio.move_on_after(config.graceful_timeout):
                while open_connections:
                    await all_closed.wait()
            await context.terminated.set()
            connections.cancel_scope.cancel()
    finally:
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        try:
            await lifespan_task
        except asyncio.CancelledError:
            pass


def _no_delay(conn: socket.socket) -> None:
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _LoopAcceptor:
    """POSIX: the event loop watches the shared socket and accepts one connection each time it
    is readable. Stopping removes the watch, synchronously: a connection the kernel has
    handed over is never lost to a cancellation, and those still queued go to other workers.

    Every worker is woken for each new connection and the first to call accept() wins it. To
    spread kept-alive connections (which stay where they land) evenly, a worker that already
    holds some looks away for a moment after each accept, a little longer the more it holds:
    what arrives meanwhile goes to a worker with fewer.
    """

    #: Seconds a worker waits, per connection it holds, before it accepts again (at most MAX).
    YIELD_PER_CONNECTION = 0.0002
    YIELD_MAX = 0.005

    def __init__(self, sock: socket.socket, load: Callable[[], int]) -> None:
        self._sock = sock
        self._load = load
        self._loop = asyncio.get_running_loop()
        self._watching = False
        self._resume: asyncio.TimerHandle | None = None

    def start(self, on_connection: Callable[[socket.socket], None]) -> None:
        def readable() -> None:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it
            except OSError:
                return  # out of descriptors, say: the connection waits in the queue
            on_connection(conn)
            pause = min(self.YIELD_MAX, self._load() * self.YIELD_PER_CONNECTION)
            if pause > 0:
                self._unwatch()
                self._resume = self._loop.call_later(pause, self._watch, readable)

        self._sock.setblocking(False)
        self._watch(readable)

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


class _ThreadAcceptor:
    """Windows: a thread accepts on this worker's handle of the shared socket and hands each
    connection to the loop. Stopping joins the thread; what it accepted before is served."""

    def __init__(self, sock: socket.socket, load: Callable[[], int]) -> None:
        self._sock = sock
        self._load = load
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
                # Spread kept-alive connections as the POSIX acceptor does (its docstring).
                pause = min(_LoopAcceptor.YIELD_MAX, self._load() * _LoopAcceptor.YIELD_PER_CONNECTION)
                if pause > 0:
                    self._stopping.wait(pause)

        self._thread = threading.Thread(target=accept_loop, name="accept", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._thread.join)
        self._sock.close()
        await anyio.lowlevel.checkpoint()  # the connections it handed over start their tasks
