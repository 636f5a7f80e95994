"""What a worker's HTTP server answers by itself, before or instead of the app: always the
protocol's shape, ``{"error": "..."}`` as JSON, and the connection closed after it."""

from __future__ import annotations

import json

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
