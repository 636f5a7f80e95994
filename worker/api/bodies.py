"""Request bodies: read whole, decompressed, within the worker's byte budgets, or refused.

:class:`Bodies` reads a body for an endpoint (413 over its limit, 408 when it is too slow, 415
for an encoding it does not know) and holds it within two :class:`ByteBudget` until the
endpoint is done with it; :class:`Inflater` undoes gzip and deflate a piece at a time; :class:`RequestBody`
notes whether a request's body has been read to the end, for the connection's sake.
"""

from __future__ import annotations

import collections
import ctypes
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread

from .errors import HTTPError, bad_request

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]

#: A small body: the most a body takes from the small budget, and the most a compressed one
#: inflates to on the event loop.
SMALL_BODY = 1024 * 1024
#: The small budget: at most 64 bodies of 1 MiB at once, 65,536 of 1 KB.
SMALL_BODIES = 64 * SMALL_BODY


# glibc keeps the memory of freed small blocks (a body's 64 KB chunks) in its heap, counted in
# the worker's RSS, unless asked to give it back: a 60 MiB JSON body under uvicorn grew the worker
# 245 MiB (body, chunks and its 120 MiB tensor), 172-187 MiB once they are given back.
_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None) if sys.platform.startswith("linux") else None


def join(chunks: list[bytes]) -> bytes:
    """The body its ``chunks`` make, the chunks let go of (the list is emptied) and, on glibc,
    their memory given back to the system."""
    body = b"".join(chunks)
    chunks.clear()
    if _malloc_trim is not None and len(body) > SMALL_BODY:
        _malloc_trim(0)
    return body


def request_headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}


class Bodies:
    """The bodies of a worker's requests, ``max_size`` bytes each at most, read within two
    byte budgets so that the worker's memory for them is bounded whatever the number of
    clients: ``small`` (SMALL_BODIES) plus ``large`` (``max_size``).

    Each body takes its first SMALL_BODY bytes (its Content-Length, when that is less) from
    ``small`` before any of it is read, and what it may grow to past that from ``large`` once
    it has sent them. Either is taken whole at once, and a request waiting for one holds
    nothing of that one: requests cannot wait for each other. A body announced larger than
    SMALL_BODY takes from the first half of ``small`` only, so that however many of them wait
    for ``large``, requests of a few KB find room; one of unknown length or compressed is
    most likely small, and takes from all of it. A client that announces a large body and
    sends nothing holds SMALL_BODY of ``small`` for ``timeout`` at most, none of ``large``.
    """

    def __init__(self, max_size: int, timeout: float) -> None:
        self.max_size = max_size
        self.timeout = timeout
        self.small = ByteBudget(SMALL_BODIES)
        #: Bodies past their first SMALL_BODY bytes: as much as the largest allowed. Decoding
        #: holds the GIL, so big bodies gain nothing from being decoded side by side; they would
        #: only multiply the memory their Python objects take.
        self.large = ByteBudget(max_size)

    @asynccontextmanager
    async def read(self, scope: Scope, receive: Receive, limit: int | None = None) -> AsyncIterator[bytes]:
        """The request body, decompressed, held within the budgets until the block ends; 413
        over ``limit`` (``max_size`` at most), 408 when it does not arrive within ``timeout``
        of its turn (a wait for ``small`` comes first, as a wait for a thread would).

        What it takes is its size once known: a body's Content-Length, else ``limit`` until it
        ends; ``limit`` when compressed, for what it inflates to, until it is inflated."""
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
        announced_large = declared is not None and declared.isdigit() and int(declared) > SMALL_BODY
        small = large = 0
        try:
            small = await self.small.take(
                min(expected, SMALL_BODY), within=self.small.capacity // 2 if announced_large else None
            )
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
                    if not large and size > SMALL_BODY:
                        large = await self.large.take(expected - SMALL_BODY)
                    if not message.get("more_body", False):
                        break
            # A large body is joined off the event loop (bytes.join lets go of the GIL past 1 MiB):
            # 60 MiB of 64 KB chunks took 0.26-0.42 s here on a busy machine, all of it a wait
            # for health; on a thread, the loop waited 8-38 ms at most meanwhile.
            body = join(chunks) if size <= SMALL_BODY else await anyio.to_thread.run_sync(join, chunks)
            if compressed:
                # A small body that inflates to a small one at once; anything more off the
                # event loop (zlib lets go of the GIL): 71 KB of gzip can be 64 MiB of zeros,
                # and health must keep answering meanwhile.
                inflater = Inflater(encoding, limit)
                fits = len(body) <= SMALL_BODY
                inflated = inflater.inflate(body, SMALL_BODY) if fits else b""
                if not (fits and inflater.done):
                    if not large:
                        large = await self.large.take(limit - SMALL_BODY)
                    rest, most = (b"", limit - len(inflated)) if fits else (body, limit)
                    inflated += await anyio.to_thread.run_sync(inflater.inflate, rest, most)
                body = inflated
            # What a chunked or compressed body turned out to be: the rest goes back.
            small, large = (
                self.small.keep(small, min(len(body), SMALL_BODY)),
                self.large.keep(large, len(body) - SMALL_BODY),
            )
            yield body
        except TimeoutError:
            raise HTTPError(408, f"the request body did not arrive within {self.timeout:g}s") from None
        finally:
            self.small.give_back(small)
            self.large.give_back(large)


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
    the whole budget takes all of it.

    Waiters are served in turn, first come first served under each ceiling (``within``), the
    whole budget's before the others', and bytes given back wake only those they serve: a MiB
    waiting is not passed forever by a stream of KBs, and 2,000 waiters are not all woken each
    time a body is done with. 2,000 takers of 1 MiB through 64 MiB, done one loop turn apart,
    took 3.7 s of CPU when every give-back woke every waiter, 0.36 s served in turn (measured
    here)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.taken = 0
        #: Who waits, in turn, by the most that may be taken for them: (amount, woken when served).
        self._waiting: dict[int, collections.deque[tuple[int, anyio.Event]]] = {}

    async def take(self, amount: int, within: int | None = None) -> int:
        """Take ``amount`` bytes (``capacity`` at most), once no more than ``within`` (else
        ``capacity``) would then be taken and nobody waiting under the same ceiling is before
        it; what was taken."""
        most = self.capacity if within is None else min(within, self.capacity)
        amount = min(amount, most)
        queue = self._waiting.setdefault(most, collections.deque())
        if amount <= 0 or (not queue and self.taken + amount <= most):
            amount = max(amount, 0)
            self.taken += amount
            return amount
        turn = (amount, anyio.Event())
        queue.append(turn)
        try:
            await turn[1].wait()
        except BaseException:
            if turn[1].is_set():
                self.give_back(amount)  # served as it was cancelled
            else:
                queue.remove(turn)
                self._serve()  # those behind it may fit now
            raise
        return amount

    def give_back(self, amount: int) -> None:
        if amount:
            self.taken -= amount
            self._serve()

    def keep(self, held: int, amount: int) -> int:
        """Of ``held`` bytes taken, keep ``amount`` (at most all, at least none) and give the rest back."""
        kept = min(held, max(amount, 0))
        self.give_back(held - kept)
        return kept

    def _serve(self) -> None:
        for most in sorted(self._waiting, reverse=True):
            queue = self._waiting[most]
            while queue and self.taken + queue[0][0] <= most:
                amount, served = queue.popleft()
                self.taken += amount
                served.set()


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
