"""uvicorn's HTTP/1.1 protocol (httptools) on the connections a worker accepts: ``--http uvicorn``.

uvicorn's protocol is an ``asyncio.Protocol`` over a transport, several times faster than h11
for small requests. We use its protocol class, not its ``Server``: the worker accepts, spreads
and drains connections itself (:mod:`worker.http`), the same for both servers. What its
protocol does that a pool must not is changed in :class:`PoolHttpToolsProtocol`:

- Refusals are ``{"error": ...}`` JSON, not plain text, and come after the response to the
  request before them, not instead of it (a pipelined bad request used to wipe it out).
- A request's head (its line and headers) has 16 KiB at most, however it arrives: httptools
  buffers a header until it ends, so that is counted as the bytes come in. 431 past it.
- A head must arrive within the keep-alive timeout (5 s with ``--keep-alive 0``) of the
  connection or of its first byte: uvicorn restarts its timer on every byte, so one byte a
  second held a connection (and a drain) forever.
- A request answered before its body was read (413, 408) closes the connection: the rest of
  that body is not waited for.
- A protocol upgrade (``Connection: Upgrade``) is never made. httptools stops parsing at one,
  so what follows the head would be lost or read as a new request (smuggled): a request with
  a body that asks for one is refused, one without is answered and its connection closed.
- An HTTP/1.1 request needs exactly one Host header (as h11 requires); responses carry a Date.
- HTTP versions other than 1.0 and 1.1 are refused with 505 (httptools takes 0.9 and 2.0 and
  refuses the others as malformed: 400).
- Idle connections (:mod:`.connections`): one is idle when no byte of a request has arrived
  since its last response was sent (or since it was accepted); :meth:`PoolHttpToolsProtocol.data_received`
  says when bytes arrive, before the parser sees them.
- ``--keep-alive 0``: each response says ``Connection: close`` and the connection closes after
  it (uvicorn would close an idle connection at once, racing the client's next request).

uvicorn runs each request in an asyncio task of its own, outside any task group; the
:class:`UvicornServer` holds them (``ServerState.tasks``), and at the end of the grace period
cancels them and waits for them, so none outlives :func:`worker.http.serve` either. A request
cancelled so answers 503 (the app does that), and the cut-off ends there: the task ends quietly
instead of uvicorn logging a traceback for it. Only the cut-off's own cancellation ends there,
counted as ``asyncio.timeout`` counts its own (``Task.uncancel``): a task cancelled by anyone
else as well (the loop's shutdown) stays cancelled. The cancellation is asyncio's, not an anyio
``CancelScope``'s, as hypercorn's requests are cut off (their connections' tasks cancel theirs):
a scope's cancellation waits for every shield, and each ``to_thread.run_sync`` holds one, so a
request inside its model would wait for the model instead of answering 503. Connections whose
client stopped reading are aborted first: nothing more can reach it, and a request blocked
writing to it would otherwise hold the cut-off up.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import socket
import sys
import time
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ipc.contract.settings import WorkerSettings

from .connections import Connections
from .hypercorn_server import FIRST_REQUEST_TIMEOUT
from .refusals import MAX_HEAD, error_body, error_headers

#: How long cut-off requests get to send their 503 and end.
CUT_OFF_WAIT = 2.0


class _Refused(Exception):
    """Raised in a parser callback: httptools stops, and the request is refused."""


class UvicornServer:
    """Serves each connection with uvicorn's httptools protocol."""

    def __init__(
        self,
        app: Any,
        settings: WorkerSettings,
        lifespan_state: dict[str, Any],
        connections: Connections | None = None,
    ) -> None:
        self.connections = connections or Connections(settings.max_connections)
        #: The request tasks the cut-off cancelled.
        self._cut_off: set[asyncio.Task[None]] = set()

        async def ends_at_its_cut_off(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task not in self._cut_off or task.uncancel():
                    raise  # not ours, or not ours alone
                # Cut off: the app has answered 503; uvicorn would log the cancellation as a crash.

        self.config = Config(
            ends_at_its_cut_off,
            http="httptools",
            ws="none",
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            date_header=False,  # ours: see refresh_date
            access_log=False,
            log_config=None,
            timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]  # a float is fine
        )
        self.config.load()
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)  # as quiet as hypercorn's
        self.keep_alive = settings.keep_alive
        self.head_timeout = settings.keep_alive or FIRST_REQUEST_TIMEOUT
        self.state = ServerState()
        self.lifespan_state = lifespan_state
        self._date_second = 0

    def refresh_date(self) -> None:
        """The Date header every response carries, made once a second."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self.state.default_headers = [(b"date", email.utils.formatdate(now, usegmt=True).encode())]

    async def serve_connection(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.connect_accepted_socket(lambda: PoolHttpToolsProtocol(self, closed, loop), sock=conn)
        try:
            await closed
        finally:
            transport.close()  # cut off: what it wrote is still sent, then it closes

    async def cut_off(self) -> None:
        for connection in list(self.state.connections):
            if isinstance(connection, PoolHttpToolsProtocol) and connection.flow.write_paused:
                connection.transport.abort()  # its client reads nothing: nothing more can reach it
        tasks = list(self.state.tasks)
        self._cut_off.update(tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CUT_OFF_WAIT)


class PoolHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a pool's limits, timeouts and refusals (module docstring)."""

    def __init__(self, server: UvicornServer, closed: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(server.config, server.state, server.lifespan_state, loop)
        self._server = server
        self._closed = closed
        #: Reading a request's head (its line and headers), and its bytes so far.
        self._in_head = True
        self._head = 0
        self._head_timer: asyncio.TimerHandle | None = None
        #: Why the parser was stopped (a callback raised), for send_400_response.
        self._why: tuple[int, str | None] = (400, None)
        #: The refusal this connection ends with, once the response in progress is sent.
        self._refusal: tuple[int, str | None] | None = None
        #: A request's bytes have begun to arrive and it has not arrived whole.
        self._receiving = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._start_head_timer()
        self._update_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.ended(self)
        self._stop_head_timer()
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._server.connections.became_busy(self)
        if self._refusal is not None or self.transport.is_closing():
            return  # it ends: nothing more is read (a request now could not be answered)
        if self._in_head:
            self._head += len(data)
        super().data_received(data)
        if self._in_head and self._head > MAX_HEAD and self._refusal is None:
            self._refuse(431)
        self._update_idle()

    def _update_idle(self) -> None:
        """Tell the worker's :class:`.Connections` whether this connection is idle: no request
        begun, none being answered, nothing more to come on it."""
        cycle = self.cycle
        idle = (
            not self._receiving
            and not self.pipeline
            and (cycle is None or cycle.response_complete)
            and self._refusal is None
            and not self.transport.is_closing()
        )
        if idle:
            self._server.connections.became_idle(self, self._close_idle)
        else:
            self._server.connections.became_busy(self)

    def _close_idle(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()  # as uvicorn's keep-alive timer does

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True
        self._in_head, self._head = True, 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        """A head that arrived whole in one read is counted as httptools parses it."""
        self._head += size
        if self._head > MAX_HEAD:
            self._why = (431, None)
            raise _Refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        headers = dict(self.headers)
        if self.parser.get_http_version() not in ("1.0", "1.1"):
            self._why = (505, None)
            raise _Refused
        if self.parser.get_http_version() == "1.1" and sum(name == b"host" for name, _ in self.headers) != 1:
            self._why = (400, "an HTTP/1.1 request needs exactly one Host header")
            raise _Refused
        upgrade = self.parser.should_upgrade()
        if upgrade and (headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers):
            self._why = (400, "this server makes no protocol upgrades: send the request without Upgrade")
            raise _Refused
        self._server.refresh_date()
        super().on_headers_complete()
        if self.cycle is not None and (self._server.keep_alive == 0 or upgrade):
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._receiving = False
        self._in_head, self._head = True, 0

    def on_response_complete(self) -> None:
        if not self.pipeline:
            if self._refusal is not None:
                self.server_state.total_requests += 1
                self._send_refusal()
                return
            if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
                # Answered before its body was read (413, 408): the rest is not waited for.
                self.server_state.total_requests += 1
                self.transport.close()
                return
        super().on_response_complete()
        self._update_idle()

    def send_400_response(self, msg: str) -> None:
        """httptools stopped: a malformed request, or a callback above refused it."""
        error = sys.exc_info()[1]  # called in uvicorn's `except HttpParserError`
        if isinstance(error, httptools.HttpParserError) and str(error) == "Invalid HTTP version":
            self._why = (505, None)
        self._refuse(*self._why)

    def _refuse(self, status: int, message: str | None = None) -> None:
        if self._refusal is not None:
            return
        self._refusal = (status, message)
        self._stop_head_timer()
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_started:
            # The fault is in this request's own body, which can now never arrive whole: it
            # is refused at once (its app sees a disconnect), not when its body times out.
            cycle.disconnected = True
            cycle.message_event.set()
            self._send_refusal()
        elif cycle is not None and not cycle.response_complete:
            self.flow.pause_reading()  # the request in progress is answered first
        else:
            self._send_refusal()

    def _send_refusal(self) -> None:
        assert self._refusal is not None
        status, message = self._refusal
        if self.transport.is_closing():
            return
        body = error_body(status, message)
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}"]
        head += [f"{name.decode()}: {value.decode()}" for name, value in error_headers(body)]
        self.transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        self.transport.close()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._server.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()  # as hypercorn does: a head that never comes is not waited for
