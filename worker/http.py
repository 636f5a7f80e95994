"""Serve an ASGI app with hypercorn's HTTP protocol on the pool's shared listening socket.

This mirrors ``hypercorn.asyncio.run.worker_serve`` (lifespan, one ``TCPServer`` per
connection, stop accepting on the trigger, then up to ``config.graceful_timeout`` for open
connections) with two differences:

- Ownership: every connection is a task in a task group this function owns, so when it
  returns no connection of this worker is left running anywhere.
- Accepting: on POSIX the event loop accepts on the shared socket, one connection at a time.
  On Windows a socket can be tied to one I/O completion port only, so when several processes
  share a listening socket (``socket.share``) only the first could accept on the Proactor
  loop; each worker accepts in a thread instead and hands every connection (a socket of its
  own) to the loop. Either way ``TCP_NODELAY`` is set on each connection: Windows CPython
  gives accepted sockets protocol 0, for which asyncio does not set it, and kept-alive
  requests then wait ~40 ms each (Nagle's algorithm meeting delayed ACKs).
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

#: How often the Windows accept thread looks up to see whether it should stop.
ACCEPT_POLL = 0.2
#: The longest the Windows accept thread waits after accept() failed, doubling up to it.
ACCEPT_BACKOFF_MAX = 1.0


async def serve(app: Any, config: Config, sock: socket.socket, shutdown_trigger: Callable[[], Awaitable[Any]]) -> None:
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

            accepting = anyio.CancelScope()
            connections.start_soon(_run_in, accepting, lambda: _accept(sock, on_connection))
            await shutdown_trigger()
            accepting.cancel()
            await anyio.lowlevel.checkpoint()  # connections accepted just now start their tasks, and count
            await context.terminated.set()  # idle keep-alive connections close now
            if open_connections:
                with anyio.move_on_after(config.graceful_timeout):
                    while open_connections:
                        await all_closed.wait()
            connections.cancel_scope.cancel()
    finally:
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        try:
            await lifespan_task
        except asyncio.CancelledError:
            pass


async def _run_in(scope: anyio.CancelScope, function: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await function()


def _no_delay(conn: socket.socket) -> None:
    if conn.family in (socket.AF_INET, socket.AF_INET6):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _accept(sock: socket.socket, on_connection: Callable[[socket.socket], None]) -> None:
    """Hand every connection accepted on ``sock`` to ``on_connection`` until cancelled; then
    close ``sock``, so that this worker takes no more and the queued ones go to the others."""
    try:
        if sys.platform == "win32":
            await _accept_in_thread(sock, on_connection)
        else:
            loop = asyncio.get_running_loop()
            sock.setblocking(False)
            while True:
                conn, _ = await loop.sock_accept(sock)
                on_connection(conn)
    finally:
        sock.close()


async def _accept_in_thread(sock: socket.socket, on_connection: Callable[[socket.socket], None]) -> None:
    loop = asyncio.get_running_loop()
    stopping = threading.Event()
    # A timeout, not blocking mode: every worker's handle of the shared socket behaves alike,
    # and a worker that loses the race for a connection simply waits again.
    sock.settimeout(ACCEPT_POLL)

    def accept_loop() -> None:
        backoff = 0.0
        while not stopping.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                # A repeating error (out of handles, say) must not spin this thread.
                backoff = min(ACCEPT_BACKOFF_MAX, max(0.01, backoff * 2))
                stopping.wait(backoff)
                continue
            backoff = 0.0
            conn.setblocking(True)
            # Runs on the loop, even after this thread has stopped: no accepted connection is lost.
            loop.call_soon_threadsafe(on_connection, conn)

    thread = threading.Thread(target=accept_loop, name="accept", daemon=True)
    thread.start()
    try:
        await anyio.sleep_forever()
    finally:
        stopping.set()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(thread.join)
