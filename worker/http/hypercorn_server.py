"""hypercorn's HTTP/1.1 protocol (h11) on the connections a worker accepts: the default server.

Each connection is served by hypercorn's ``TCPServer``, as ``hypercorn.asyncio.run.worker_serve``
does, in a task of the worker's own (see :mod:`worker.http`). Two things hypercorn's protocol
does that a pool must not are changed here:

- Refusals without a body. Our app answers every error in the protocol's shape, but some
  requests never reach it: hypercorn refuses a garbage request line, a bad ``Content-Length``
  or an oversized URL or header itself (400, 431), and its stream answers an app that ended
  without responding with an empty 500. A request target that is not ASCII makes it raise and
  drop the connection without a word (we answer 400).
- A connection its client has closed stays open until the keep-alive timer fires: on the
  client's EOF, hypercorn closes the request stream but not the connection, whose task group
  still waits for the idle timer (5 s by default). A draining worker waits for its
  connections, so every drain took that long; we close on EOF.

:func:`install` puts the two subclasses below in the hypercorn modules that name the classes
they replace. hypercorn is pinned (``<0.19``), and :func:`install` fails loudly if either class
is no longer where it was.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import h11
import hypercorn.protocol
import hypercorn.protocol.h11
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.events import Closed, Event
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream

from ipc.contract.settings import WorkerSettings

from .refusals import error_body, error_headers

#: With --keep-alive 0, how long a new connection may take to send its request (hypercorn's
#: default keep-alive timeout).
FIRST_REQUEST_TIMEOUT = 5.0


def hypercorn_config(settings: WorkerSettings) -> Config:
    config = Config()
    config.accesslog = None
    http_log = logging.getLogger("worker.http")
    http_log.setLevel(logging.WARNING)
    config.errorlog = http_log
    config.graceful_timeout = settings.grace
    config.keep_alive_timeout = settings.keep_alive
    if settings.keep_alive == 0:
        # No keep-alive: hypercorn says `Connection: close` on each connection's first response
        # and h11 closes the connection after it. hypercorn's idle timer also bounds the wait for
        # that first request, which a timeout of 0 would cut off before it arrived.
        config.keep_alive_max_requests = 1
        config.keep_alive_timeout = FIRST_REQUEST_TIMEOUT
    return config


class HypercornServer:
    """Serves each connection with hypercorn's ``TCPServer``."""

    def __init__(self, app: Any, config: Config, lifespan_state: dict[str, Any]) -> None:
        install()
        self._app = app
        self._config = config
        self._state = lifespan_state
        self._context = WorkerContext(None)

    async def serve_connection(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn, limit=2**16)
        await TCPServer(self._app, asyncio.get_running_loop(), self._config, self._context, self._state, reader, writer)

    async def cut_off(self) -> None:
        # Every connection's task is cancelled next; this ends hypercorn's own timers first.
        await self._context.terminated.set()


class PoolH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, refusing malformed requests with a JSON body and closing
    a connection as soon as its client has."""

    async def handle(self, event: Event) -> None:
        await super().handle(event)
        if isinstance(event, Closed):
            # The request stream is closed already (the client cannot read an answer any
            # more); close the connection too, now rather than when the idle timer fires.
            await self.send(Closed())

    async def _send_error_response(self, status_code: int) -> None:
        body = error_body(status_code)
        await self._send_h11_event(h11.Response(status_code=status_code, headers=error_headers(body)))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    async def _create_stream(self, request: h11.Request) -> None:
        try:
            request.target.decode("ascii")
        except UnicodeDecodeError:
            # hypercorn would raise on it and close without a word.
            await self._send_error_response(400)
            await self.send(Closed())
            return
        await super()._create_stream(request)


class PoolHTTPStream(HTTPStream):
    """hypercorn's HTTP stream, with JSON bodies on the errors it makes itself."""

    async def _send_error_response(self, status_code: int) -> None:
        body = error_body(status_code)
        await self.send(Response(stream_id=self.stream_id, headers=error_headers(body), status_code=status_code))
        await self.send(Body(stream_id=self.stream_id, data=body))
        await self.send(EndBody(stream_id=self.stream_id))
        self.state = ASGIHTTPState.CLOSED
        await self.config.log.access(self.scope, {"status": status_code, "headers": []}, 0.0)


def install() -> None:
    """Make hypercorn use the classes above; idempotent."""
    for module, name, replacement in (
        (hypercorn.protocol, "H11Protocol", PoolH11Protocol),
        (hypercorn.protocol.h11, "HTTPStream", PoolHTTPStream),
    ):
        current = getattr(module, name, None)
        if current is not replacement and not (isinstance(current, type) and issubclass(replacement, current)):
            raise RuntimeError(
                f"hypercorn changed: {module.__name__}.{name} is not what worker.http.hypercorn_server replaces"
            )
        setattr(module, name, replacement)
