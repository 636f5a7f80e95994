"""uvicorn's HTTP/1.1 protocol (httptools) on the connections a worker accepts: ``--http uvicorn``.

uvicorn's protocol is an ``asyncio.Protocol`` over a transport, several times faster than h11
for small requests. We use its protocol class, not its ``Server``: the worker accepts, spreads
and drains connections itself (:mod:`worker.http`), the same for both servers. What its
protocol does that a pool must not is changed in :class:`PoolHttpToolsProtocol`:

- Refusals are ``{"error": ...}`` JSON, not plain text, and a request line with headers
  beyond 16 KiB is refused with 431 (httptools itself has no limit) before it is all read.
- A new connection that sends nothing is closed after the keep-alive timeout, as hypercorn
  does; uvicorn only times out the wait between requests.
- ``--keep-alive 0``: each response says ``Connection: close`` and the connection closes after
  it (uvicorn would close an idle connection at once, racing the client's next request).

uvicorn runs each request in an asyncio task of its own, outside any task group; the
:class:`UvicornServer` holds them (``ServerState.tasks``), and at the end of the grace period
cancels them and waits for them, so none outlives :func:`worker.http.serve` either. A request
cancelled so answers 503 (the app does that), and its cancellation goes no further: the task
ends quietly instead of uvicorn logging a traceback for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ipc.settings import WorkerSettings

from .hypercorn_server import FIRST_REQUEST_TIMEOUT
from .refusals import MAX_HEAD, error_body, error_headers

#: How long cut-off requests get to send their 503 and end.
CUT_OFF_WAIT = 2.0


class _HeadTooLarge(Exception):
    pass


class UvicornServer:
    """Serves each connection with uvicorn's httptools protocol."""

    def __init__(self, app: Any, settings: WorkerSettings, lifespan_state: dict[str, Any]) -> None:
        self.cutting_off = False

        async def quiet_when_cut_off(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                if not self.cutting_off:
                    raise
                # The app has answered 503 already; uvicorn would log the cancellation as a crash.

        self.config = Config(
            quiet_when_cut_off,
            http="httptools",
            ws="none",
            lifespan="off",
            proxy_headers=False,
            server_header=False,
            date_header=False,
            access_log=False,
            log_config=None,
            timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]  # a float is fine
        )
        self.config.load()
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)  # as quiet as hypercorn's
        self.keep_alive = settings.keep_alive
        self.first_request_timeout = settings.keep_alive or FIRST_REQUEST_TIMEOUT
        self.state = ServerState()
        self.lifespan_state = lifespan_state

    async def serve_connection(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.connect_accepted_socket(lambda: PoolHttpToolsProtocol(self, closed, loop), sock=conn)
        try:
            await closed
        finally:
            transport.close()  # cut off: what it wrote is still sent, then it closes

    async def cut_off(self) -> None:
        self.cutting_off = True
        tasks = list(self.state.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CUT_OFF_WAIT)


class PoolHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a pool's refusals, first-request timeout and keep-alive 0."""

    def __init__(self, server: UvicornServer, closed: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(server.config, server.state, server.lifespan_state, loop)
        self._server = server
        self._closed = closed
        self._head = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.timeout_keep_alive_task = self.loop.call_later(
            self._server.first_request_timeout, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head += size
        if self._head > MAX_HEAD:
            raise _HeadTooLarge  # httptools stops parsing; data_received refuses the request

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._server.keep_alive == 0 and self.cycle is not None:
            self.cycle.keep_alive = False

    def send_400_response(self, msg: str) -> None:
        status = 431 if self._head > MAX_HEAD else 400
        body = error_body(status)
        head = [f"HTTP/1.1 {status} {'Bad Request' if status == 400 else 'Request Header Fields Too Large'}"]
        head += [f"{name.decode()}: {value.decode()}" for name, value in error_headers(body)]
        self.transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        self.transport.close()
