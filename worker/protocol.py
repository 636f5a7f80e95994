"""Two things hypercorn's HTTP/1.1 protocol does that a pool must not.

- Refusals without a body. Our app answers every error in the protocol's shape,
  ``{"error": "..."}`` as JSON, but some requests never reach it: hypercorn refuses a garbage
  request line, a bad ``Content-Length`` or an oversized URL or header itself (400, 431), and
  its stream answers an app that ended without responding with an empty 500. A request target
  that is not ASCII makes it raise and drop the connection without a word (we answer 400).
- A connection its client has closed stays open until the keep-alive timer fires: on the
  client's EOF, hypercorn closes the request stream but not the connection, whose task group
  still waits for the idle timer (5 s by default). A draining worker waits for its
  connections, so every drain took that long; we close on EOF.

:func:`install` puts the two subclasses below in the hypercorn modules that name the classes
they replace. hypercorn is pinned (``<0.19``), and :func:`install` fails loudly if either class
is no longer where it was.
"""

from __future__ import annotations

import json

import h11
import hypercorn.protocol
import hypercorn.protocol.h11
from hypercorn.events import Closed, Event
from hypercorn.protocol.events import Body, EndBody, Response
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream

REASONS = {
    400: "malformed HTTP request",
    404: "no such host",
    408: "request timed out",
    413: "request body too large",
    414: "request line too long",
    431: "request line or headers too large",
    500: "internal error: the request got no response",
    503: "the worker is stopping",
}


def error_body(status: int, message: str | None = None) -> bytes:
    return json.dumps({"error": message or REASONS.get(status, "refused")}).encode()


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]


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
        await self._send_h11_event(h11.Response(status_code=status_code, headers=_headers(body)))
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
        await self.send(Response(stream_id=self.stream_id, headers=_headers(body), status_code=status_code))
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
            raise RuntimeError(f"hypercorn changed: {module.__name__}.{name} is not what worker.protocol replaces")
        setattr(module, name, replacement)
