"""Serve an ASGI app with hypercorn's HTTP protocol on the pool's shared listening socket.

hypercorn's own ``worker_serve`` would do, but for one platform fact: on Windows a socket can
be tied to one I/O completion port only, so when several processes share a listening socket
(``socket.share``) only the first can accept on the Proactor loop; the others fail with
WinError 87. hypercorn switches Windows to the selector loop for that; we need the Proactor
for named pipes. So on Windows each worker accepts in a thread, with a short timeout so it
can stop, and hands every accepted connection (a socket of its own) to the loop. On POSIX the
loop accepts directly, as hypercorn does. The rest mirrors ``hypercorn.asyncio.run``: lifespan,
one ``TCPServer`` per connection, stop accepting on the trigger, then wait up to
``config.graceful_timeout`` for open connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.utils import wrap_app

#: How often the Windows accept thread looks up to see whether it should stop.
ACCEPT_POLL = 0.2


async def serve(app: Any, config: Config, sock: socket.socket, shutdown_trigger: Callable[[], Awaitable[Any]]) -> None:
    loop = asyncio.get_running_loop()
    wrapped = wrap_app(app, 0, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, config, loop, lifespan_state)
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()

    context = WorkerContext(None)
    connections: set[asyncio.Task[Any]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        task.add_done_callback(connections.discard)
        try:
            await TCPServer(wrapped, loop, config, context, lifespan_state, reader, writer)
        except asyncio.CancelledError:
            # Cut off at the end of the grace period, below. This task is the root of the
            # connection (asyncio's stream callback made it, nothing awaits it), and 3.11's
            # callback logs a cancelled root as an error.
            return

    stop_accepting: Callable[[], Awaitable[None]]
    if sys.platform == "win32":
        stop_accepting = _accept_in_thread(loop, sock, on_connection)
    else:
        server = await asyncio.start_server(on_connection, sock=sock, backlog=config.backlog)

        async def stop_accepting() -> None:
            server.close()  # not wait_closed(): since 3.12 it waits for every connection too

    try:
        await shutdown_trigger()
    finally:
        await context.terminated.set()  # idle keep-alive connections close now
        await stop_accepting()
        await asyncio.sleep(0)  # connections accepted just now start their tasks, and count
        if connections:
            _, pending = await asyncio.wait(set(connections), timeout=config.graceful_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        try:
            await lifespan_task
        except asyncio.CancelledError:
            pass


def _accept_in_thread(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    on_connection: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> Callable[[], Awaitable[None]]:
    stopping = threading.Event()
    adopting: set[concurrent.futures.Future[None]] = set()
    # A timeout, not blocking mode: every worker's handle of the shared socket behaves alike,
    # and a worker that loses the race for a connection simply waits again.
    sock.settimeout(ACCEPT_POLL)

    async def adopt(conn: socket.socket) -> None:
        reader = asyncio.StreamReader(limit=2**16, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, on_connection, loop=loop)
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn)
        except OSError:
            conn.close()

    def accept_loop() -> None:
        while not stopping.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if stopping.is_set():
                    return
                continue
            if stopping.is_set():
                conn.close()
                return
            future = asyncio.run_coroutine_threadsafe(adopt(conn), loop)
            adopting.add(future)
            future.add_done_callback(adopting.discard)

    thread = threading.Thread(target=accept_loop, name="accept", daemon=True)
    thread.start()

    async def stop() -> None:
        stopping.set()
        await asyncio.to_thread(thread.join)
        sock.close()
        # Connections the thread accepted before it stopped are served like any other.
        await asyncio.gather(*(asyncio.wrap_future(f) for f in list(adopting)))

    return stop
