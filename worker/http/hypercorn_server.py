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
- HTTP versions other than 1.0 and 1.1 (h11 takes any ``HTTP/d.d``) are refused with 505,
  and a chunk size that does not fit in 64 bits (h11 takes up to 20 hex digits, then waited
  for that many bytes) with 400 at once, as uvicorn's parser does.

Idle connections (:mod:`.connections`) are hypercorn's own: it says ``Updated(idle=True)``
when a response is done and the connection waits for the next request (its keep-alive timer
starts), and ``Updated(idle=False)`` when a request's head has arrived. A connection is busy
from the first byte of a request on: :class:`PoolTCPServer` reads through a stream reader
that says so as the bytes arrive, before hypercorn sees them.

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
import h11._readers
import hypercorn.protocol
import hypercorn.protocol.h11
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config
from hypercorn.events import Closed, Event, Updated
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream

from ipc.contract.settings import WorkerSettings

from .connections import Connections
from .refusals import error_body, error_headers

#: The largest chunk size taken: 64 bits, as uvicorn's parser (llhttp).
MAX_CHUNK_SIZE = 2**64 - 1
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

    def __init__(self, app: Any, config: Config, lifespan_state: dict[str, Any], connections: Connections) -> None:
        install()
        self._app = app
        self._config = config
        self._state = lifespan_state
        self._context = WorkerContext(None)
        self._connections = connections

    async def serve_connection(self, conn: socket.socket) -> None:
        # asyncio.open_connection, with a reader that tells when bytes arrive.
        loop = asyncio.get_running_loop()
        reader = ArrivalReader(limit=2**16, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.create_connection(lambda: protocol, sock=conn)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        server = PoolTCPServer(self._app, loop, self._config, self._context, self._state, reader, writer)
        await server.serve(self._connections)

    async def cut_off(self) -> None:
        # Every connection's task is cancelled next; this ends hypercorn's own timers first.
        await self._context.terminated.set()


class ArrivalReader(asyncio.StreamReader):
    """A stream reader that calls ``on_data`` as bytes arrive (in the transport's callback)."""

    on_data: Any = None
    arrived = False

    def feed_data(self, data: Any) -> None:
        self.arrived = True
        if self.on_data is not None:
            self.on_data()
        super().feed_data(data)


class PoolTCPServer(TCPServer):
    """hypercorn's connection, telling :class:`.Connections` when it is idle (module docstring)."""

    async def serve(self, connections: Connections) -> None:
        self._connections = connections
        reader = self.reader
        assert isinstance(reader, ArrivalReader)
        reader.on_data = self._busy
        if not reader.arrived:
            connections.became_idle(self, self._close_idle)  # accepted: idle until a byte comes
        try:
            await self.run()
        finally:
            connections.ended(self)

    def _busy(self) -> None:
        self._connections.became_busy(self)

    def _close_idle(self) -> None:
        # What hypercorn's keep-alive timer does, at once: the reader sees the end, the
        # connection's task closes the protocol and ends.
        self.writer.close()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            h11_connection = getattr(getattr(self.protocol, "protocol", None), "connection", None)
            pending = h11_connection is not None and h11_connection.trailing_data[0]
            if event.idle and not pending:
                self._connections.became_idle(self, self._close_idle)
            else:
                self._connections.became_busy(self)  # a request, or pipelined bytes of the next
        elif isinstance(event, Closed):
            self._connections.became_busy(self)
        await super().protocol_send(event)


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
        if request.http_version not in (b"1.0", b"1.1"):
            await self._send_error_response(505)
            await self.send(Closed())
            return
        try:
            request.target.decode("ascii")
        except UnicodeDecodeError:
            # hypercorn would raise on it and close without a word.
            await self._send_error_response(400)
            await self.send(Closed())
            return
        await super()._create_stream(request)


class PoolChunkedReader(h11._readers.ChunkedReader):
    """h11's reader of chunked bodies, refusing a chunk size past :data:`MAX_CHUNK_SIZE`."""

    def __call__(self, buf: Any) -> Any:
        event = super().__call__(buf)
        started = len(event.data) if isinstance(event, h11.Data) and event.chunk_start else 0
        if self._bytes_in_chunk + started > MAX_CHUNK_SIZE:
            raise h11.LocalProtocolError("chunk size overflow")  # h11 answers it as the client's: 400
        return event


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
    body_readers: Any = h11._readers.READERS.get(h11.SEND_BODY)
    current = body_readers.get("chunked") if isinstance(body_readers, dict) else None
    if not (isinstance(current, type) and issubclass(PoolChunkedReader, current)):
        raise RuntimeError("h11 changed: its chunked reader is not what worker.http.hypercorn_server replaces")
    body_readers["chunked"] = PoolChunkedReader
