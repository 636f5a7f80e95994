"""Request bodies: read whole, decompressed, within the worker's byte budget, or refused.

:class:`Bodies` reads a body for an endpoint (413 over its limit, 408 when it is too slow, 415
for an encoding it does not know) and holds it within a :class:`ByteBudget` until the endpoint
is done with it; :class:`Inflater` undoes gzip and deflate a piece at a time; :class:`RequestBody`
notes whether a request's body has been read to the end, for the connection's sake.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread

from .errors import HTTPError, bad_request

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]

#: The first bytes of every body, which the worker's body budget does not count.
SMALL_BODY = 1024 * 1024


def request_headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


class Bodies:
    """The bodies of a worker's requests, ``max_size`` bytes each at most."""

    def __init__(self, max_size: int, timeout: float) -> None:
        self.max_size = max_size
        self.timeout = timeout
        #: Request bodies this worker holds at once, in bytes: as much as the largest allowed.
        #: Decoding holds the GIL, so big bodies gain nothing from being decoded side by side;
        #: they would only multiply the memory their Python objects take.
        self.budget = ByteBudget(max_size)

    @asynccontextmanager
    async def read(self, scope: Scope, receive: Receive, limit: int | None = None) -> AsyncIterator[bytes]:
        """The request body, decompressed, held within the worker's byte budget until the block
        ends; 413 over ``limit`` (``max_size`` at most), 408 when it does not arrive within
        ``timeout``.

        A body counts against the budget only beyond its first SMALL_BODY bytes, so small
        requests never queue behind large ones and a client that announces a large body and
        sends nothing holds nothing. Past that, the whole body it may become (its Content-Length,
        else ``limit``; ``limit`` when compressed, for what it inflates to) is taken at once:
        requests that wait for the budget hold none of it, so they cannot wait for each other."""
        limit = min(limit or self.max_size, self.max_size)
        fields = request_headers(scope)
        declared = fields.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body of {declared} bytes is over the limit of {limit}")
        encoding = fields.get("content-encoding", "identity").lower()
        if encoding not in ("identity", "gzip", "deflate"):
            raise HTTPError(415, f"unsupported Content-Encoding {encoding!r}")
        compressed = encoding != "identity"
        expected = limit  # what the body may become
        if declared is not None and declared.isdigit() and not compressed:
            expected = int(declared)
        held = 0
        try:
            chunks = []
            with anyio.fail_after(self.timeout):
                size = 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise HTTPError(400, "client disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise HTTPError(413, f"request body is over the limit of {limit} bytes")
                    chunks.append(chunk)
                    if not held and size > SMALL_BODY:
                        held = await self.budget.take(expected - SMALL_BODY)
                    if not message.get("more_body", False):
                        break
            body = b"".join(chunks)
            del chunks
            if compressed:
                # A small body that inflates to a small one at once; anything more off the
                # event loop (zlib lets go of the GIL): 71 KB of gzip can be 64 MiB of zeros,
                # and health must keep answering meanwhile.
                inflater = Inflater(encoding, limit)
                small = len(body) <= SMALL_BODY
                inflated = inflater.inflate(body, SMALL_BODY) if small else b""
                if not (small and inflater.done):
                    if not held:
                        held = await self.budget.take(limit - SMALL_BODY)
                    rest, most = (b"", limit - len(inflated)) if small else (body, limit)
                    inflated += await anyio.to_thread.run_sync(inflater.inflate, rest, most)
                body = inflated
            elif held > len(body) - SMALL_BODY:  # a chunked body shorter than its limit
                unused = held - max(len(body) - SMALL_BODY, 0)
                self.budget.give_back(unused)
                held -= unused
            yield body
        except TimeoutError:
            raise HTTPError(408, f"the request body did not arrive within {self.timeout:g}s") from None
        finally:
            self.budget.give_back(held)


class RequestBody:
    """A request's ``receive``, noting whether its body has been read to the end.

    A refusal (an unknown model, a wrong method) comes before the body is read; the connection
    can carry the client's next request only once the rest is read, so a small one is drained:
    a kept-alive client that asked for a version removed by a reload goes on, not reset."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        fields = request_headers(scope)
        length = fields.get("content-length")
        self.length = int(length) if length is not None and length.isdigit() else None
        self.done = self.length == 0 or (length is None and "transfer-encoding" not in fields)
        self._receive = receive

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message

    async def drain(self, limit: int, timeout: float) -> bool:
        """Read and drop the rest of the body, if it is at most ``limit`` bytes and arrives
        within ``timeout``; whether it is all read."""
        if self.length is not None and self.length > limit:
            return False
        read = 0
        with anyio.move_on_after(timeout):
            while not self.done and read <= limit:
                read += len((await self.receive()).get("body", b""))
        return self.done


class ByteBudget:
    """At most ``capacity`` bytes taken at once; ``take`` waits (back-pressure on the client:
    its body is not read meanwhile) until enough has been given back. One request larger than
    the whole budget takes all of it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.taken = 0
        self._returned = anyio.Event()

    async def take(self, amount: int) -> int:
        amount = min(amount, self.capacity)
        while self.taken + amount > self.capacity:
            await self._returned.wait()
        self.taken += amount
        return amount

    def give_back(self, amount: int) -> None:
        if amount:
            self.taken -= amount
            self._returned.set()
            self._returned = anyio.Event()


class Inflater:
    """A gzip or deflate body, inflated a piece at a time: 413 past ``limit`` bytes, 400 when
    it is not valid, ends early or has bytes after its end (a second gzip member among them:
    concatenated members are refused, not cut to the first; inflating them one by one would let
    a megabyte of empty members hold the event loop for a second)."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.room = limit
        self._decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        self._pending = b""

    @property
    def done(self) -> bool:
        return self._decompressor.eof

    def inflate(self, data: bytes, most: int) -> bytes:
        """Up to ``most`` more bytes of the body, from ``data`` and what was left over."""
        try:
            out = self._decompressor.decompress(self._pending + data, min(most, self.room) + 1)
        except zlib.error as exc:
            raise bad_request(f"body is not valid {self.encoding}: {exc}") from None
        self._pending = self._decompressor.unconsumed_tail
        if self._decompressor.unused_data:
            after = len(self._decompressor.unused_data)
            raise bad_request(f"body is not valid {self.encoding}: {after} bytes follow its end (one member only)")
        if len(out) > self.room:
            raise HTTPError(413, f"decompressed request body is over the limit of {self.room} bytes")
        self.room -= len(out)
        if not self.done and not self._pending and len(out) <= most:
            raise bad_request(f"body is not valid {self.encoding}: it ends early")
        return out
