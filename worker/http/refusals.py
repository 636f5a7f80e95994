"""What a worker's HTTP server answers by itself, before or instead of the app: always the
protocol's shape, ``{"error": "..."}`` as JSON, and the connection closed after it."""

from __future__ import annotations

import json
import socket

REASONS = {
    400: "malformed HTTP request",
    404: "no such host",
    408: "request timed out",
    413: "request body too large",
    414: "request line too long",
    431: "request line or headers too large",
    500: "internal error: the request got no response",
    503: "the worker is stopping",
    505: "HTTP version not supported: send HTTP/1.1 (or 1.0)",
}

#: The answer to a connection accepted while the worker holds ``--max-connections``.
AT_THE_LIMIT = "the worker is at its connection limit (--max-connections), none of them idle: try again"

#: The most bytes a request line and its headers may take (hypercorn's and h11's default).
MAX_HEAD = 16 * 1024


def error_body(status: int, message: str | None = None) -> bytes:
    return json.dumps({"error": message or REASONS.get(status, "refused")}).encode()


def error_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]


def refuse_connection(conn: socket.socket) -> None:
    """Answer a connection that will not be served with a 503 and close it, at once, without a
    task: what the client has sent so far is read (closing on unread bytes would reset the
    connection, and the client might lose the answer), the answer is written to the empty
    socket buffer (it fits: a non-blocking send never waits), and the socket is closed."""
    body = error_body(503, AT_THE_LIMIT)
    head = [b"HTTP/1.1 503 Service Unavailable", b"retry-after: 1"]
    head += [name + b": " + value for name, value in error_headers(body)]
    try:
        conn.setblocking(False)
        try:
            for _ in range(4):  # a bounded look: a client that sends on and on is not waited for
                if not conn.recv(65536):
                    break
        except (BlockingIOError, InterruptedError):
            pass
        conn.send(b"\r\n".join(head) + b"\r\n\r\n" + body)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the client has gone: nothing to tell it
    finally:
        conn.close()
