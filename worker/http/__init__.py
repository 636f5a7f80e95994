"""Serve an ASGI app on the pool's shared listening socket, with hypercorn or uvicorn.

The worker accepts connections itself (:mod:`.accept`) and hands each one to the HTTP server
the pool was started with (``--http``): hypercorn's h11 protocol (:mod:`.hypercorn_server`,
the default) or uvicorn's httptools protocol (:mod:`.uvicorn_server`, the fast path); both
refuse what never reaches the app in the app's JSON shape (:mod:`.refusals`). The worker's
open connections are counted, and limited, in one place (:mod:`.connections`): past
``--max-connections`` a new one is refused at once, and near it idle ones are closed, oldest
first. The rest is the same whichever serves, and it is here:

- Ownership: every connection, and the app's lifespan, is a task in a task group
  :func:`serve` owns, so when it returns none of them is left running anywhere.
- Start and end: the app's ASGI lifespan (hypercorn's runner, for both servers), then accept
  until ``shutdown_trigger`` returns, then up to the grace period for open connections.
- Draining loses nothing: see the comment in :func:`_serve_connections`.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
from hypercorn.asyncio.lifespan import Lifespan
from hypercorn.utils import wrap_app

from ipc.contract.settings import WorkerSettings

from .accept import LoopAcceptor, ThreadAcceptor, no_delay
from .connections import Connections, effective_limit
from .hypercorn_server import HypercornServer, hypercorn_config
from .refusals import refuse_connection


class HTTPServer(Protocol):
    """One HTTP server's way of serving the connections a worker accepts."""

    async def serve_connection(self, conn: socket.socket) -> None:
        """Serve ``conn`` until it closes; cancelled when the grace period ends."""

    async def cut_off(self) -> None:
        """The grace period is over: end what is still being served (its tasks are cancelled next)."""


def make_server(
    settings: WorkerSettings, app: Any, wrapped: Any, lifespan_state: dict[str, Any], connections: Connections
) -> HTTPServer:
    if settings.http == "uvicorn":
        from .uvicorn_server import UvicornServer  # only with the extra installed

        return UvicornServer(app, settings, lifespan_state, connections)
    return HypercornServer(wrapped, hypercorn_config(settings), lifespan_state, connections)


async def serve(
    app: Any,
    settings: WorkerSettings,
    sock: socket.socket,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    grace: Callable[[], float],
    connections: Connections | None = None,
    counted: Callable[[int], None] = lambda connections: None,
    accepting: Callable[[], bool] = lambda: True,
) -> None:
    """Serve ``app`` on ``sock`` until ``shutdown_trigger`` returns, then drain for ``grace()``.

    ``connections`` counts the worker's open connections (made here from the settings if not
    given): pass one to read its ``open`` while the worker serves. ``counted`` hears how many are
    open each time that changes, and while ``accepting()`` says no, new connections are left to
    the other workers."""
    if connections is None:
        connections = Connections(effective_limit(settings.max_connections))
    loop = asyncio.get_running_loop()
    wrapped = wrap_app(app, 0, "asgi")
    lifespan_state: dict[str, Any] = {}
    # The server first (uvicorn's import takes a while): the app's startup says the worker is
    # ready, and from then on it must accept at once.
    server = make_server(settings, app, wrapped, lifespan_state, connections)
    lifespan = Lifespan(wrapped, hypercorn_config(settings), loop, lifespan_state)
    async with anyio.create_task_group() as lifespan_group:
        # The app's lifespan runs beside the serving, in a task of serve()'s own: whatever ends
        # serve() ends it too (its app may not return after its shutdown, or serve() is cancelled).
        lifespan_group.start_soon(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        try:
            await _serve_connections(server, sock, shutdown_trigger, grace, connections, counted, accepting)
        finally:
            await lifespan.wait_for_shutdown()
            lifespan_group.cancel_scope.cancel()


async def _serve_connections(
    server: HTTPServer,
    sock: socket.socket,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    grace: Callable[[], float],
    connections: Connections,
    counted: Callable[[int], None],
    accepting: Callable[[], bool],
) -> None:
    """Accept on ``sock`` and serve each connection until ``shutdown_trigger`` returns, then
    drain for ``grace()`` and cut off what is left."""
    all_closed = anyio.Event()

    async def serve_connection(conn: socket.socket) -> None:
        nonlocal all_closed
        try:
            no_delay(conn)
            await server.serve_connection(conn)
        except OSError:
            conn.close()  # the client left before we got to it
        finally:
            connections.closed()
            counted(connections.open)
            if not connections.open:
                all_closed.set()
                all_closed = anyio.Event()

    async with anyio.create_task_group() as tasks:

        def on_connection(conn: socket.socket) -> None:
            # Counted here, as it is accepted, not when its task starts: a burst of accepts
            # sees every connection before it.
            if connections.admit():
                counted(connections.open)
                tasks.start_soon(serve_connection, conn)
            else:
                refuse_connection(conn)

        kind = ThreadAcceptor if sys.platform == "win32" else LoopAcceptor
        acceptor = kind(sock, accepting)
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
        with anyio.move_on_after(grace()):
            while connections.open:
                await all_closed.wait()
        with anyio.CancelScope(shield=True):
            await server.cut_off()
        tasks.cancel_scope.cancel()
