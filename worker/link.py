r"""The worker's end of the control channel: handshake, then messages both ways.

The supervisor speaks first after the handshake (``Configure``), then at any time sends
``Stop``, ``StatsRequest``, ``Quarantined`` or ``Rebalance``; the worker sends ``Ready``, a
``Heartbeat`` every interval from its event loop (never from a side thread, which a busy process
could keep answering while its loop is stuck), ``Stopped``, and asks for pool-wide statistics
with ``PoolStatsRequest``. Before each of those, the counters that changed since they were last
sent go in ``StatsReport``\ s of bounded size, each numbered, so the supervisor keeps every
entry's newest value. The channel closing is itself a message: the supervisor is gone, so the
worker drains and exits rather than live on as an orphan.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio

import ipc
from ipc import handshake, keys
from ipc.codec import split
from ipc.messages import (
    COUNTERS_BUDGET,
    STATS_WAIT,
    Configure,
    Error,
    Heartbeat,
    Hello,
    Message,
    PoolStatsReply,
    PoolStatsRequest,
    Quarantined,
    Rebalance,
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


class Counts(NamedTuple):
    """What a heartbeat says of the worker's load (``Heartbeat``)."""

    in_flight: int
    served: int
    connections: int = 0
    rebalanced: int = 0


#: The counters that changed since last asked, by section (``worker.api.counters``).
ChangedCounters = Callable[[], dict[str, dict[str, Any]]]


class SupervisorLink:
    def __init__(self, connection: ipc.Connection) -> None:
        self.connection = connection
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._replies: dict[int, tuple[anyio.Event, dict[str, Any]]] = {}
        #: One flush of the counters at a time: a report answering a request comes after every
        #: counter that had changed by then.
        self._flushing = anyio.Lock()
        #: Where the changed counters come from, once the worker serves.
        self.changed_counters: ChangedCounters = dict
        #: The model versions the pool quarantined, and why (``Quarantined``), as last told; and
        #: who to tell when that changes, once the worker serves.
        self.quarantined: dict[str, str] = {}
        self.on_quarantine: Callable[[dict[str, str]], None] = lambda models: None
        #: Who to tell to close some connections (``Rebalance``), once the worker serves.
        self.on_rebalance: Callable[[int], None] = lambda close: None

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

    async def flush(self, request_id: int = 0) -> bool:
        """Send the counters that changed since they were last sent, in reports of bounded size;
        with ``request_id``, the last report (an empty one if nothing changed) answers that
        request. Whether the channel is up."""
        async with self._flushing:
            chunks = list(split(self.changed_counters(), COUNTERS_BUDGET))
            if request_id and not chunks:
                chunks = [{}]
            for number, chunk in enumerate(chunks, 1):
                answer = request_id if number == len(chunks) else 0
                if not await self.send(StatsReport(answer, chunk, next(self._seq))):
                    return False
        return True

    async def send_stopped(self, completed: int, dropped: int, served: int, why: str) -> None:
        if await self.flush():
            await self.send(Stopped(completed, dropped, why, served))

    async def pool_stats(self, keys: list[str]) -> dict[str, Any] | None:
        """The pool's statistics of the model versions ``keys`` (none: all); ``None`` if the
        supervisor does not answer in time."""
        request_id = next(self._ids)
        event = anyio.Event()
        received: dict[str, Any] = {}
        self._replies[request_id] = (event, received)
        try:
            if not await self.flush() or not await self.send(PoolStatsRequest(request_id, keys)):
                return None
            with anyio.move_on_after(POOL_STATS_TIMEOUT):
                await event.wait()
        finally:
            del self._replies[request_id]
        return received if event.is_set() else None

    async def heartbeats(self, interval: float, counts: Callable[[], Counts]) -> None:
        """A heartbeat every ``interval`` seconds, with how late the loop woke up to send it,
        after the counters that changed; ``counts`` says how busy the worker is."""
        due = anyio.current_time() + interval
        while True:
            await anyio.sleep(max(0.0, due - anyio.current_time()))
            now = anyio.current_time()
            load = counts()
            lag = round(max(0.0, now - due), 6)
            beat = Heartbeat(load.in_flight, lag, rss(), load.served, load.connections, load.rebalanced)
            if not await self.flush() or not await self.send(beat):
                return
            due = now + interval

    async def serve(self, on_stop: Callable[[Stop | None], None]) -> None:
        """Handle the supervisor's messages until the channel closes; ``on_stop(None)`` then."""
        try:
            while True:
                message = await self.connection.receive()
                if isinstance(message, Stop):
                    on_stop(message)
                elif isinstance(message, StatsRequest):
                    await self.flush(message.request_id)
                elif isinstance(message, Quarantined):
                    self.quarantined = message.models
                    self.on_quarantine(message.models)
                elif isinstance(message, Rebalance):
                    self.on_rebalance(message.close)
                elif isinstance(message, PoolStatsReply):
                    pending = self._replies.get(message.request_id)
                    if pending is not None:
                        pending[1].update(message.counters.get("stats", {}))
                        if not message.more:
                            pending[0].set()
                else:
                    logger.warning("ignoring unexpected %s from the supervisor", message.kind)
        except ipc.ConnectionClosedError:
            on_stop(None)
        except ipc.ProtocolError as exc:
            logger.error("control channel broken: %s", exc)
            on_stop(None)
