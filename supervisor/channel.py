"""The pool's end of each worker's control channel.

The control server admits a worker's connection (``ipc.handshake``) and hands it to the pool
(:meth:`Pool.adopt <supervisor.pool.Pool.adopt>`), which serves it in its own task group until
it ends: :meth:`Channel.serve_worker` finds the process the Hello speaks for, welcomes and
configures it, then reads its messages while a second task writes the queued ones.

Messages to a worker go through one ordered outbox (:meth:`Channel.post`): its ``Configure``
before anything else, a ``Stop`` or a ``StatsRequest`` after. A worker whose outbox fills up is
not reading its end: it is stuck, and killed. Messages from a worker update its record and go to
the part of the pool that wants them. A worker that breaks the protocol gets an ``Error`` saying
why, and is killed (its slot is refilled as after any loss).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import anyio
import anyio.abc

import ipc
from ipc.messages import (
    Configure,
    Error,
    Heartbeat,
    Hello,
    PoolStatsRequest,
    Quarantined,
    Ready,
    StatsReport,
    Stopped,
    Welcome,
)

from .lifecycle import Event, State
from .workers import WorkerProcess

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("supervisor")

#: Messages queued for one worker before its channel counts as stuck.
OUTBOX_SIZE = 64


class Channel:
    def __init__(self, pool: Pool, process: WorkerProcess, connection: ipc.Connection) -> None:
        self.pool = pool
        self.process = process
        self.connection = connection
        self._outbox, self._pending = anyio.create_memory_object_stream[ipc.Message](OUTBOX_SIZE)
        #: Set once the connection has ended.
        self.closed = anyio.Event()

    @classmethod
    async def serve_worker(cls, pool: Pool, hello: Hello, connection: ipc.Connection) -> None:
        """Serve the connection of the worker that sent ``hello``, until it ends."""
        async with connection:
            process = _find(pool, hello)
            if process is None:
                wanted = f"worker {hello.worker_id} generation {hello.generation} pid {hello.pid}"
                await _try_send(connection, Error(Error.UNKNOWN_WORKER, f"no {wanted} awaits"))
                return
            if process.state is not State.SPAWNED or pool.state.ending:
                # Told to stop (or killed) before it joined: nothing to configure it for (the
                # listening socket may already be closed). It exits at once, cleanly.
                await _try_send(connection, Error(Error.STOPPING, "the pool is stopping"))
                return
            try:
                listen_fd, listen_share = pool.launcher.spawner.listen_socket_for(process.handle)
                grpc_fd, grpc_share = pool.launcher.spawner.grpc_socket_for(process.handle)
            except OSError as exc:  # on Windows, socket.share() for a process that is gone
                pool.launcher.kill(process, f"cannot share the listening socket with it: {exc}")
                return
            channel = process.channel = cls(pool, process, connection)
            process.last_heard = pool.now()
            process.fire(Event.HELLO)
            pool.changed()
            # A worker is asked for statistics or told to stop only after its Configure: both
            # go through this one ordered outbox.
            channel.post(Welcome(ipc.PROTOCOL_VERSION, os.getpid()))
            inflight = pool.launcher.inflight_path(process)
            channel.post(Configure(pool.worker_settings, listen_fd, listen_share, inflight, grpc_fd, grpc_share))
            if pool.quarantine.models:
                channel.post(Quarantined(dict(pool.quarantine.models)))
            try:
                await channel._serve()
            finally:
                process.channel = None
                channel.closed.set()
                pool.changed()

    def post(self, message: ipc.Message) -> bool:
        """Queue ``message`` for the worker; whether it was queued."""
        try:
            self._outbox.send_nowait(message)
        except anyio.WouldBlock:
            reason = f"its control channel is stuck ({OUTBOX_SIZE} messages unsent)"
            self.pool.launcher.kill(self.process, reason, "stuck")
            return False
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    async def send(self, message: ipc.Message) -> bool:
        """Queue ``message``, waiting for room (for a long answer in many messages); whether the
        channel was still up."""
        try:
            await self._outbox.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    async def _serve(self) -> None:
        async with anyio.create_task_group() as task_group, self._outbox:
            task_group.start_soon(self._pump)
            try:
                async for message in self.connection:
                    self.process.last_heard = self.pool.now()
                    self._received(message)
            except ipc.ProtocolError as exc:
                with anyio.move_on_after(1):
                    await _try_send(self.connection, Error(Error.PROTOCOL, str(exc)))
                self.pool.launcher.kill(self.process, f"it broke the control protocol: {exc}", "protocol")
            task_group.cancel_scope.cancel()

    async def _pump(self) -> None:
        """Send the queued messages, in order, until the queue or the connection closes."""
        async with self._pending:
            async for message in self._pending:
                try:
                    await self.connection.send(message)
                except ipc.ConnectionClosedError:
                    return

    def _received(self, message: ipc.Message) -> None:
        process, pool = self.process, self.pool
        if isinstance(message, Heartbeat):
            process.heartbeat = message
        elif isinstance(message, Ready):
            if process.state is State.READY:
                raise ipc.MalformedFrameError("a second Ready")
            pool.ready(process)
        elif isinstance(message, Stopped):
            process.report = message
            pool.changed()
        elif isinstance(message, Error):
            process.reason = message.message
            process.said_why = True
            pool.changed()
        elif isinstance(message, StatsReport):
            pool.counters.reported(process, message)
        elif isinstance(message, PoolStatsRequest):
            # Its own task: the answer waits for the other workers' counters, and this
            # connection must keep being read meanwhile.
            pool.task_group.start_soon(pool.counters.answer, process, message.request_id, message.keys)
        else:
            logger.warning("worker %d sent an unexpected %s", process.slot, message.kind)


def _find(pool: Pool, hello: Hello) -> WorkerProcess | None:
    """The process ``hello`` speaks for: spawned by this pool as that slot's generation, with
    that pid, and not joined yet."""
    if hello.worker_id is None or not 0 <= hello.worker_id < len(pool.slots):
        return None
    for process in pool.slots[hello.worker_id].processes:
        if (
            process.generation == hello.generation
            and process.pid == hello.pid
            and process.channel is None
            and process.running
            and process.state in (State.SPAWNED, State.DRAINING)
        ):
            return process
    return None


async def _try_send(connection: ipc.Connection, message: ipc.Message) -> None:
    try:
        await connection.send(message)
    except ipc.ConnectionClosedError:
        pass
