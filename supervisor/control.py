"""The supervisor's side of control connections: admission, then route by role.

Admission: the peer must be this pool's user (where the OS tells: Unix sockets) and prove it
holds the pool's key (``ipc.handshake``). A worker's connection is then handed to the pool,
which serves it for the worker's whole life (``supervisor.channel``); a client's carries
requests, each answered as the command table says (``supervisor.commands``). A peer that breaks
the protocol or fails admission gets an ``Error`` with the reason and is disconnected; the
supervisor carries on.

Refusals are logged as a flood allows (:class:`Refusals`): the first with its reason, then one
line a window saying how many more there were. One line each filled the log with a line for
every connection a hostile or broken peer opened, thousands a second.
"""

from __future__ import annotations

import logging
import math
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

#: Seconds between summaries of refused connections while they keep coming.
REFUSALS_WINDOW = 10.0


class Refusals:
    """When to log a refused control connection (clock-free: the caller says what time it is).

    A refusal after a quiet window is logged in full (:meth:`refused` is True) and opens a
    window; those within it are only counted, and :meth:`due` at the window's end says how many
    (a summary line), opening the next window if there were any. So a flood logs one line a
    window, and a lone refusal its whole reason."""

    def __init__(self, window: float | None = None) -> None:
        self.window = REFUSALS_WINDOW if window is None else window
        self.held = 0
        #: When the current window ends.
        self.until = -math.inf

    def refused(self, now: float) -> bool:
        """Whether to log this one in full; if not, it is counted towards the next summary."""
        if now >= self.until and not self.held:
            self.until = now + self.window
            return True
        self.held += 1
        return False

    def due(self, now: float) -> int:
        """How many were held back since the last line, for a summary at the window's end."""
        held, self.held = self.held, 0
        if held:
            self.until = now + self.window
        return held


class ControlServer:
    def __init__(self, listener: ipc.Listener, key: bytes, context: Context, timeouts: Timeouts) -> None:
        self.listener = listener
        self.context = context
        self._key = key
        self._timeouts = timeouts
        self.refusals = Refusals()
        self._summarising = False

    async def serve(self) -> None:
        """Accept connections until cancelled, each served by a task of this server's own."""
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            async for connection in self.listener:
                task_group.start_soon(self._handle, connection)

    def _refused(self, message: str, *args: object) -> None:
        if self.refusals.refused(anyio.current_time()):
            logger.warning("control: refused " + message, *args)
        elif not self._summarising:
            self._summarising = True
            self._task_group.start_soon(self._summarise)

    async def _summarise(self) -> None:
        """One line a window while refusals keep coming."""
        try:
            while True:
                await anyio.sleep(self.refusals.until - anyio.current_time())
                held = self.refusals.due(anyio.current_time())
                if not held:
                    return
                logger.warning("control: refused %d more connections in the last %gs", held, self.refusals.window)
        finally:
            self._summarising = False

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
            self._refused("a connection: %s", exc)
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
            self._refused("a connection from uid %d: not this pool's user", connection.peer_uid)
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
            self._refused("a %s (pid %d): no proof of the pool's key", hello.role, hello.pid)
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
