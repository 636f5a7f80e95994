"""Two connections joined in memory: the control protocol with no socket or pipe underneath.

:func:`pair` plays the part httpx's ``MockTransport`` plays for a client: a test drives one end
and hands the other to the code under test (the command table, a worker's channel), and every
message still goes through the real codec, frame by frame. Closing either end closes both, as
with a socket: the other side reads the end of the stream, and a write to it fails.
"""

from __future__ import annotations

import asyncio

from .codec import DEFAULT_MAX_FRAME_SIZE
from .transport import Connection


class _Link:
    """The two directions of a pair, and whether it is still up."""

    def __init__(self) -> None:
        self.inbound = (asyncio.StreamReader(), asyncio.StreamReader())
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for reader in self.inbound:
                reader.feed_eof()


class _Writer:
    def __init__(self, link: _Link, to: asyncio.StreamReader) -> None:
        self._link = link
        self._to = to

    def write(self, data: bytes) -> None:
        if self._link.closed:
            raise BrokenPipeError("the other end is closed")
        self._to.feed_data(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)  # a real writer yields here when the peer is slow

    def close(self) -> None:
        self._link.close()

    async def wait_closed(self) -> None:
        pass


def pair(max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> tuple[Connection, Connection]:
    """Two connections, each the other's peer."""
    link = _Link()
    a, b = link.inbound
    return (
        Connection(a, _Writer(link, b), max_frame_size=max_frame_size),
        Connection(b, _Writer(link, a), max_frame_size=max_frame_size),
    )
