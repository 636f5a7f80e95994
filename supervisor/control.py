"""The supervisor's side of control connections: admission, then route by role.

Admission: the peer must be this pool's user (where the OS tells: Unix sockets) and prove it
holds the pool's key (``ipc.handshake``). A worker's connection is then handed to the pool,
which serves it for the worker's whole life (``supervisor.channel``); a client's carries
requests, each answered as the command table says (``supervisor.commands``). A peer that breaks
the protocol or fails admission gets an ``Error`` with the reason and is disconnected; the
supervisor carries on.
"""

from __future__ import annotations

import logging
import os
from contextlib import aclosing

import anyio

import ipc
from ipc import handshake
from ipc.handshake import check_hello
from ipc.messages import Error, Hello, Proof, StopReply, Welcome

from .commands import BY_REQUEST, Context
from .policy import Timeouts

logger = logging.getLogger("supervisor")


class ControlServer:
    def __init__(self, listener: ipc.Listener, key: bytes, context: Context, timeouts: Timeouts) -> None:
        self.listener = listener
        self.context = context
        self._key = key
        self._timeouts = timeouts

    async def serve(self) -> None:
        """Accept connections until cancelled, each served by a task of this server's own."""
        async with anyio.create_task_group() as task_group:
            async for connection in self.listener:
                task_group.start_soon(self._handle, connection)

    async def _handle(self, connection: ipc.Connection) -> None:
        handed_over = False
        try:
            hello = await self._admit(connection)
            if hello is None:
                return
            if hello.role == "worker":
                self.context.pool.adopt(hello, connection)
                handed_over = True
                return
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
        finally:
            if not handed_over:
                await connection.aclose()

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
            peer_pid = connection.peer_pid if self.context.pool.launcher.spawner.kernel_pids else None
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
        """Answer the client's requests, one at a time, until it leaves, idles or stops the pool."""
        while True:
            request: ipc.Message | None = None
            with anyio.move_on_after(self._timeouts.client_idle):
                request = await connection.receive()
            if request is None:  # idle, or half a frame and silence: not ours to keep
                await _try_send(connection, Error(Error.TIMEOUT, "no request within the idle timeout"))
                return
            command = BY_REQUEST.get(type(request))
            if command is None:
                await connection.send(Error(Error.BAD_REQUEST, f"a client may not send {request.kind}"))
                continue
            # The client only watches: if it leaves mid-answer, what the handler started goes on.
            reply: ipc.Message | None = None
            async with aclosing(command.handle(self.context, request)) as replies:
                async for reply in replies:
                    await connection.send(reply)
            if isinstance(reply, StopReply):
                return  # the pool has stopped


async def _try_send(connection: ipc.Connection, message: ipc.Message) -> None:
    try:
        await connection.send(message)
    except ipc.ConnectionClosedError:
        pass
