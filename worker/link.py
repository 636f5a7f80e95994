"""The worker's end of the control channel: handshake, then messages both ways.

The supervisor speaks first after the handshake (``Configure``), then at any time sends
``Stop`` or ``StatsRequest``; the worker sends ``Ready``, a ``Heartbeat`` every interval from
its event loop (never from a side thread, which a busy process could keep answering while its
loop is stuck), ``Stopped``, and asks for pool-wide statistics with ``PoolStatsRequest``. Every
statistics snapshot carries a sequence number, so the supervisor keeps the newest. The channel
closing is itself a message: the supervisor is gone, so the worker drains and exits rather
than live on as an orphan.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from typing import Any

import anyio

import ipc
from ipc import handshake, keys
from ipc.messages import (
    STATS_WAIT,
    Configure,
    Error,
    Heartbeat,
    Hello,
    Message,
    PoolStatsReply,
    PoolStatsRequest,
    StatsReport,
    StatsRequest,
    Stop,
    Stopped,
)

from .memory import rss

logger = logging.getLogger("worker")

#: How long a /stats request waits for the pool's answer before serving this worker's own.
POOL_STATS_TIMEOUT = 2 * STATS_WAIT


class HandshakeError(Exception):
    """The supervisor refused this worker, or answered out of protocol."""


class PoolStoppingError(HandshakeError):
    """The pool began to stop before this worker joined it: nothing to do but exit."""


class SupervisorLink:
    def __init__(self, connection: ipc.Connection) -> None:
        self.connection = connection
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._replies: dict[int, tuple[anyio.Event, list[dict[str, Any]]]] = {}

    async def handshake(self, address: str, slot: int, generation: int) -> Configure:
        """Prove we are of this pool, be welcomed; return the supervisor's configuration for us."""
        hello = Hello(ipc.PROTOCOL_VERSION, "worker", os.getpid(), slot, generation, handshake.new_nonce())
        try:
            await handshake.greet(self.connection, hello, keys.read_key(address))
        except ipc.KeyMissingError as exc:
            raise HandshakeError(str(exc)) from exc
        except ipc.RefusedError as exc:
            if exc.code == Error.STOPPING:
                raise PoolStoppingError(str(exc)) from exc
            raise HandshakeError(f"supervisor refused this worker: {exc}") from exc
        return await self.connection.receive_a(Configure)

    async def send(self, message: Message) -> bool:
        """Send if the channel is up; whether it was."""
        try:
            await self.connection.send(message)
        except ipc.ConnectionClosedError:
            return False
        return True

    async def send_stopped(
        self, completed: int, dropped: int, served: int, models: dict[str, Any], metrics: dict[str, Any], why: str
    ) -> None:
        await self.send(Stopped(completed, dropped, why, served, models, next(self._seq), metrics))

    async def pool_stats(self, own: dict[str, Any]) -> dict[str, Any]:
        """The pool's statistics; this worker's own if the supervisor cannot answer in time."""
        request_id = next(self._ids)
        event = anyio.Event()
        slot: list[dict[str, Any]] = []
        self._replies[request_id] = (event, slot)
        try:
            if not await self.send(PoolStatsRequest(request_id, own, next(self._seq))):
                return own
            with anyio.move_on_after(POOL_STATS_TIMEOUT):
                await event.wait()
        finally:
            del self._replies[request_id]
        return slot[0] if slot else own

    async def heartbeats(
        self, interval: float, counts: Callable[[], tuple[int, int]], metrics: Callable[[], dict[str, Any]]
    ) -> None:
        """A heartbeat every ``interval`` seconds, with how late the loop woke up to send it;
        ``counts`` gives the requests in flight and those answered so far, ``metrics`` the
        cumulative metrics."""
        due = anyio.current_time() + interval
        while True:
            await anyio.sleep(max(0.0, due - anyio.current_time()))
            now = anyio.current_time()
            in_flight, served = counts()
            lag = round(max(0.0, now - due), 6)
            if not await self.send(Heartbeat(in_flight, lag, rss(), served, metrics(), next(self._seq))):
                return
            due = now + interval

    async def serve(self, on_stop: Callable[[Stop | None], None], own_stats: Callable[[], dict[str, Any]]) -> None:
        """Handle the supervisor's messages until the channel closes; ``on_stop(None)`` then."""
        try:
            while True:
                message = await self.connection.receive()
                if isinstance(message, Stop):
                    on_stop(message)
                elif isinstance(message, StatsRequest):
                    await self.send(StatsReport(message.request_id, own_stats(), next(self._seq)))
                elif isinstance(message, PoolStatsReply):
                    pending = self._replies.get(message.request_id)
                    if pending is not None:
                        pending[1].append(message.models)
                        pending[0].set()
                else:
                    logger.warning("ignoring unexpected %s from the supervisor", message.kind)
        except ipc.ConnectionClosedError:
            on_stop(None)
        except ipc.ProtocolError as exc:
            logger.error("control channel broken: %s", exc)
            on_stop(None)
