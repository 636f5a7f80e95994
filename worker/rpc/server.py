"""gRPC served by every worker from the pool's shared gRPC socket, through grpcio's own server.

grpcio cannot serve a connection it did not accept itself, so each worker runs a
``grpc.aio`` server on a loopback port of its own and forwards to it every connection it
accepts on the shared socket, with the acceptors HTTP uses (:mod:`worker.http.accept`): the
same accepting on Linux and Windows, and a worker that stops accepting leaves new connections
to the others. Measured on 2 cores, 16 callers of a unary echo (see the README): grpcio's
server alone 1,800 calls/s, behind this forwarder 1,130 (0.63x; 0.8x for 256 KiB messages),
where hypercorn's pure-Python HTTP/2 served gRPC at 830 (0.45x; 0.4x). And SO_REUSEPORT
listeners, grpcio's own way on Linux, lost 6 of 2,854 calls when workers stopped (a closing
listener resets the connections queued on it); the pool's one socket never closes while it serves.

Stopping: the acceptor stops, then ``server.stop(grace)``: every connection gets GOAWAY, the
calls in flight finish, and clients reconnect to the workers still accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import grpc

from ipc.contract.settings import WorkerSettings

from ..api import InferenceApp
from ..http.accept import LoopAcceptor, ThreadAcceptor, no_delay
from .goodbye import Goodbye
from .service import handler

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]

#: How much one read of the forwarder takes from a connection.
CHUNK = 256 * 1024
#: How long the forwarders may take, once the server has stopped, to pass on what it sent last.
FLUSH = 5.0


async def start(app: InferenceApp, settings: WorkerSettings) -> tuple[grpc.aio.Server, int]:
    """The worker's gRPC server, started on a loopback port of its own: (server, port)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_size),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((handler(app),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def serve(
    app: InferenceApp,
    settings: WorkerSettings,
    sock: socket.socket,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    grace: Callable[[], float],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve gRPC from ``sock`` until ``shutdown_trigger`` returns, then drain for ``grace()``."""
    server, port = await start(app, settings)
    forwards = Forwards()
    try:
        async with anyio.create_task_group() as tasks:
            kind = ThreadAcceptor if sys.platform == "win32" else LoopAcceptor
            acceptor = kind(sock)

            def on_connection(conn: socket.socket) -> None:
                tasks.start_soon(forwards.run, conn, port)

            acceptor.start(on_connection)
            task_status.started()
            try:
                await shutdown_trigger()
            finally:
                await acceptor.stop()
            # Each connection says goodbye and closes once it has nothing left (see
            # .goodbye); what has not within the grace period is the server's to stop.
            with anyio.move_on_after(grace()) as waited:
                await forwards.goodbye()
            await server.stop(max(0.0, waited.deadline - anyio.current_time()))
            # The forwarders still carry the server's last bytes to the clients, then end.
            with anyio.move_on_after(FLUSH):
                await forwards.wait()
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await server.stop(None)


class Forwarder:
    """One connection carried from its client to this worker's gRPC server and back."""

    def __init__(self, outer: Streams, inner: Streams) -> None:
        self.outer, self.inner = outer, inner
        self.goodbye = Goodbye()
        self.idle = anyio.Event()  # set once the goodbye is done: nothing left to serve

    async def run(self) -> None:
        """Until both ways have ended, or the goodbye is done."""
        try:
            async with anyio.create_task_group() as tasks:

                async def until_idle() -> None:
                    await self.idle.wait()
                    tasks.cancel_scope.cancel()

                tasks.start_soon(until_idle)
                async with anyio.create_task_group() as ways:
                    ways.start_soon(self._pipe, self.outer[0], self.inner[1], self.goodbye.from_client)
                    ways.start_soon(self._pipe, self.inner[0], self.outer[1], self.goodbye.from_server)
                tasks.cancel_scope.cancel()
        finally:
            for _, writer in (self.outer, self.inner):
                writer.close()  # what is written is still sent

    def say_goodbye(self) -> None:
        self.outer[1].write(self.goodbye.ask())
        self._check()

    def _check(self) -> None:
        if self.goodbye.done:
            self.idle.set()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, passed: Callable[[bytes], bytes]
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                writer.write(passed(data))
                self._check()
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()  # half-closed: the other way may still have bytes to carry


class Forwards:
    """The forwarders running: a goodbye for all of them, and a wait for the last to end."""

    def __init__(self) -> None:
        self.running: set[Forwarder] = set()
        self._none = anyio.Event()

    async def run(self, conn: socket.socket, port: int) -> None:
        try:
            no_delay(conn)
            conn.setblocking(False)
            outer = await asyncio.open_connection(sock=conn)
            inner = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            conn.close()  # the client left before we got to it
            return
        no_delay(inner[1].get_extra_info("socket"))
        forwarder = Forwarder(outer, inner)
        self.running.add(forwarder)
        try:
            await forwarder.run()
        finally:
            self.running.discard(forwarder)
            if not self.running:
                self._none.set()
                self._none = anyio.Event()

    async def goodbye(self) -> None:
        """Every connection says goodbye; until each has closed."""
        for forwarder in list(self.running):
            forwarder.say_goodbye()
        await self.wait()

    async def wait(self) -> None:
        if self.running:
            await self._none.wait()
