"""Call an ASGI app in-process: no sockets, for the API's unit tests; how long the loop stalls."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    chunk: int = 0,
    on_receive: Callable[[bytes, bool], None] | None = None,
) -> Response:
    """One request; ``chunk`` > 0 delivers the body in pieces of that size, each handed to
    ``on_receive`` with whether more follows as the app reads it."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    pieces = pieces or [b""]
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "headers": raw_headers,
        "query_string": b"",
    }

    async def receive() -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()  # as a server does between reads: other requests run
        piece = pieces.pop(0) if pieces else b""
        if on_receive is not None:
            on_receive(piece, bool(pieces))
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return Response(
        start["status"],
        {k.decode(): v.decode() for k, v in start["headers"]},
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


@asynccontextmanager
async def loop_stalls() -> AsyncIterator[list[float]]:
    """While the block runs, a task wakes every 2 ms: the longest it waited for the event loop,
    in seconds, is the list's one element once the block is done."""
    longest = [0.0]
    done = anyio.Event()

    async def ticker(task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        last = time.monotonic()
        task_status.started()
        while not done.is_set():
            await anyio.sleep(0.002)
            now = time.monotonic()
            longest[0], last = max(longest[0], now - last), now

    async with anyio.create_task_group() as task_group:
        await task_group.start(ticker)
        try:
            yield longest
        finally:
            done.set()
