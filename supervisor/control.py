"""The supervisor's side of control connections: admission, then route by role.

Admission: the peer must be this pool's user (where the OS tells: Unix sockets) and prove it
holds the pool's key (``ipc.handshake``). A worker's connection then goes to the pool for its
whole life; a client's carries requests (``status``, ``stop``, ``reload``, ``scale``) and their
replies. A peer that breaks the protocol or fails admission gets an ``Error`` with the reason
and is disconnected; the supervisor carries on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

import anyio

import ipc
from ipc import handshake
from ipc.handshake import check_hello
from ipc.messages import (
    Error,
    Hello,
    OperationReply,
    Progress,
    Proof,
    ReloadRequest,
    ScaleRequest,
    StatusReply,
    StatusRequest,
    StopRequest,
    Welcome,
)

from . import operations, settings
from .policy import Timeouts
from .pool import Pool

logger = logging.getLogger("supervisor")

#: Stops the pool and sends the StopReply on the connection once it has stopped.
StopHandler = Callable[[ipc.Connection, float | None], Awaitable[None]]


class ControlServer:
    def __init__(
        self, listener: ipc.Listener, key: bytes, pool: Pool, url: str, on_stop: StopHandler, timeouts: Timeouts
    ) -> None:
        self.listener = listener
        self.pool = pool
        self.url = url
        self._key = key
        self._on_stop = on_stop
        self._timeouts = timeouts

    async def serve(self) -> None:
        """Accept connections until cancelled, each served by a task of this server's own."""
        async with anyio.create_task_group() as task_group:
            async for connection in self.listener:
                task_group.start_soon(self._handle, connection)

    async def _handle(self, connection: ipc.Connection) -> None:
        async with connection:
            try:
                hello = await self._admit(connection)
                if hello is None:
                    return
                if hello.role == "worker":
                    await self.pool.attach(hello, connection)
                else:
                    await connection.send(Welcome(ipc.PROTOCOL_VERSION, os.getpid()))
                    await self._serve_client(connection)
            except ipc.ProtocolError as exc:
                logger.warning("control: refused a connection: %s", exc)
                await _try_send(connection, Error(Error.PROTOCOL, str(exc)))
            except TimeoutError:
                await _try_send(connection, Error(Error.TIMEOUT, "no handshake within the handshake timeout"))
            except ipc.ConnectionClosedError:
                pass
            except Exception:
                # One connection's failure is that connection's: log it, close it, serve on.
                logger.exception("control: a connection failed")

    async def _admit(self, connection: ipc.Connection) -> Hello | None:
        """The peer's Hello once it has shown it is this pool's user and holds the pool's key;
        else ``None``, the refusal sent."""
        if connection.peer_uid is not None and connection.peer_uid != os.getuid():
            logger.warning("control: refused a connection from uid %d: not this pool's user", connection.peer_uid)
            await _try_send(connection, Error(Error.FORBIDDEN, "only the user who started the pool may control it"))
            return None
        admitted_frames, connection.max_frame_size = connection.max_frame_size, handshake.MAX_HANDSHAKE_FRAME
        with anyio.fail_after(self._timeouts.handshake):
            hello = await connection.receive_a(Hello)
            check_hello(hello)
            peer_pid = connection.peer_pid if self.pool.spawner.kernel_pids else None
            if hello.role == "worker" and peer_pid is not None and hello.pid != peer_pid:
                # The pool knows its workers by pid: a Hello must not speak for another process.
                raise ipc.MalformedFrameError(f"a worker's Hello says pid {hello.pid} but comes from pid {peer_pid}")
            sent = handshake.challenge(self._key, hello)
            await connection.send(sent)
            proof = await connection.receive_a(Proof)
        if not handshake.accepts(self._key, hello, sent, proof):
            logger.warning("control: refused a %s (pid %d): no proof of the pool's key", hello.role, hello.pid)
            await _try_send(connection, Error(Error.FORBIDDEN, "authentication failed: no proof of the pool's key"))
            return None
        connection.max_frame_size = admitted_frames
        return hello

    async def _serve_client(self, connection: ipc.Connection) -> None:
        while True:
            request: ipc.Message | None = None
            with anyio.move_on_after(self._timeouts.client_idle):
                request = await connection.receive()
            if request is None:  # idle, or half a frame and silence: not ours to keep
                await _try_send(connection, Error(Error.TIMEOUT, "no request within the idle timeout"))
                return
            if isinstance(request, StatusRequest):
                status = StatusReply(os.getpid(), self.url, self.pool.state.value, self.pool.status())
                await connection.send(status)
            elif isinstance(request, ReloadRequest | ScaleRequest):
                await self._operate(connection, request)
            elif isinstance(request, StopRequest):
                if request.grace is not None:
                    try:
                        settings.option("grace").check(request.grace)
                    except ValueError as exc:
                        await connection.send(Error(Error.BAD_REQUEST, f"grace {exc}"))
                        continue
                await self._on_stop(connection, request.grace)
                return
            else:
                await connection.send(Error(Error.BAD_REQUEST, f"a client may not send {request.kind}"))

    async def _operate(self, connection: ipc.Connection, request: ReloadRequest | ScaleRequest) -> None:
        async def progress(text: str) -> None:
            logger.info("%s", text)
            # The client only watches: if it leaves, the operation carries on.
            await _try_send(connection, Progress(text))

        if isinstance(request, ScaleRequest):
            try:
                workers = settings.option("workers").check(request.workers)
            except ValueError as exc:
                await connection.send(Error(Error.BAD_REQUEST, f"workers {exc}"))
                return
            logger.info("scaling from %d to %d workers", len(self.pool.slots), workers)
            outcome = await operations.scale(self.pool, workers, progress)
        else:
            logger.info("reloading %d workers, one at a time", len(self.pool.slots))
            outcome = await operations.reload(self.pool, progress)
        log = logger.info if outcome.outcome == OperationReply.DONE else logger.warning
        log("%s: %s", "scale" if isinstance(request, ScaleRequest) else "reload", outcome.message)
        await connection.send(OperationReply(outcome.outcome, outcome.message, self.pool.status()))


async def _try_send(connection: ipc.Connection, message: ipc.Message) -> None:
    try:
        await connection.send(message)
    except ipc.ConnectionClosedError:
        pass
