"""One supervisor's life: listen, bind, open the pool, wait for ready, serve control, stop.

It ends with one of the exit codes of ``supervisor.exits``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from typing import Any

import anyio

import ipc
from ipc import keys
from ipc.messages import StopReply

from . import exits, reaper
from .commands import Context
from .control import ControlServer
from .interrupts import interrupts_to
from .lifecycle import PoolState
from .notify import Notifier, Tell, follow
from .policy import Timeouts
from .pool import Pool, open_pool
from .settings import Settings
from .sockets import BindError, bind, parse_bind, url
from .spawn import Spawner, SubprocessSpawner

logger = logging.getLogger("supervisor")

_REPORTED: dict[str, float] = {}

#: A supervisor's own spawner: its workers' strays are its to end (``reaper``).
ADOPTING = functools.partial(SubprocessSpawner, adopt=True)


def _one_line(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's own errors (an accept that failed: out of file descriptors, say), once
    every 10 s per kind and in one line: asyncio's default prints a traceback each time, and a
    burst of clients on a full process made tens of thousands of lines."""
    exception = context.get("exception")
    what = f"{context.get('message', 'event loop error')}: {exception!r}" if exception else context.get("message", "")
    key = str(context.get("message")) + type(exception).__name__
    now = time.monotonic()
    if now - _REPORTED.get(key, -10.0) >= 10.0:
        _REPORTED[key] = now
        logger.warning("%s", what)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        control: str,
        timeouts: Timeouts | None = None,
        spawner: Callable[[socket.socket], Spawner] = ADOPTING,
    ) -> None:
        self.settings = settings
        self.control = control
        self.timeouts = timeouts or Timeouts()
        self.grace = settings.worker.grace
        self.drain_delay: float | None = None  # the pool's setting
        self._spawner = spawner
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()
        self._reply: StopReply | None = None
        self._clients_waiting = 0
        self._all_replied = anyio.Event()
        self._interrupts = 0
        self.pool: Pool | None = None
        self._started_at = 0.0
        #: Set once the pool is open (``pool`` is then set): for whoever drives it in-process.
        self.opened = anyio.Event()
        #: systemd's notify socket, when systemd started us (:mod:`.notify`); read in ``run``.
        self.notifier: Notifier | None = None
        #: Told of each change of the pool's state and ready workers (a service manager's view).
        self.tellers: list[Tell] = []
        #: Whether OS interrupts (Ctrl+C, SIGTERM...) stop the pool: not in a Windows service,
        #: whose loop runs off the main thread and whose stop comes from the service manager.
        self.interrupts = True

    def request_stop(self, grace: float | None = None) -> None:
        if not self._stop_requested.is_set():
            if grace is not None:
                self.grace = grace
            self._stop_requested.set()
            if self.pool is not None:
                self.pool.wake()  # the start-up wait is watching the pool

    def _on_interrupt(self, name: str, within: float | None = None) -> None:
        """An OS interrupt; ``within``: the system ends this process that many seconds from now."""
        self._interrupts += 1
        if within is not None:
            if self._interrupts == 1:
                # The drain gets what is left but a second for the processes to exit; drained,
                # the supervisor exits first, with its own exit code.
                self.grace, self.drain_delay = min(self.grace, max(0.0, within - 1.0)), 0.0
                logger.info("%s: stopping within %gs", name, within)
                self.request_stop()
        elif self._interrupts == 1:
            logger.info("%s: stopping gracefully; interrupt again to force", name)
            self.request_stop()
        elif self.pool is not None:
            logger.warning("%s again: forcing the stop", name)
            self.pool.force()

    @asynccontextmanager
    async def _stop_for_client(self, grace: float | None) -> AsyncIterator[StopReply]:
        """Stop, and hold the supervisor's exit until the block (which sends the reply) ends."""
        self._clients_waiting += 1
        try:
            self.request_stop(grace)
            await self._stopped.wait()
            assert self._reply is not None
            yield self._reply
        finally:
            self._clients_waiting -= 1
            if not self._clients_waiting:
                self._all_replied.set()

    async def run(self) -> int:
        self._started_at = anyio.current_time()
        self.notifier = Notifier.from_environment()  # before any worker inherits its variables
        try:
            return await self._run()
        finally:
            if self.notifier is not None:
                self.notifier.close()

    async def _run(self) -> int:
        asyncio.get_running_loop().set_exception_handler(_one_line)
        try:
            listener = await ipc.listen(self.control)
        except (ipc.AddressInUseError, OSError) as exc:
            logger.error("cannot open the control address: %s", exc)
            return exits.ERROR
        try:
            # Made once the address is ours, so that a supervisor refused for a live one's
            # address never replaces that one's key.
            key = keys.create_key(self.control)
        except OSError as exc:
            await listener.aclose()
            logger.error("cannot write the pool's key file %s: %s", keys.key_path(self.control), exc)
            return exits.ERROR
        try:
            try:
                listen_socket = bind(*parse_bind(self.settings.pool.bind))
            except BindError as exc:
                logger.error("%s", exc)
                return exits.ERROR
            with listen_socket:
                return await self._supervise(listener, key, listen_socket)
        finally:
            # The key first: once the address is given up, the next supervisor's key may
            # replace ours between remove_key's look and its unlink.
            keys.remove_key(self.control, key)
            await listener.aclose()

    async def _supervise(self, listener: ipc.Listener, key: bytes, listen_socket: socket.socket) -> int:
        address = url(listen_socket)
        metrics_socket = None
        if self.settings.pool.metrics_bind:
            try:
                metrics_socket = bind(*parse_bind(self.settings.pool.metrics_bind), backlog=64)
            except BindError as exc:
                logger.error("metrics: %s", exc)
                return exits.ERROR
        grpc_socket = None
        if self.settings.pool.grpc_bind:
            try:
                grpc_socket = bind(*parse_bind(self.settings.pool.grpc_bind))
            except BindError as exc:
                logger.error("grpc: %s", exc)
                return exits.ERROR
        spawner = self._spawner(listen_socket)
        spawner.grpc_socket = grpc_socket
        with grpc_socket or nullcontext():
            return await self._serve_pool(listener, key, listen_socket, spawner, address, metrics_socket, grpc_socket)

    async def _serve_pool(
        self,
        listener: ipc.Listener,
        key: bytes,
        listen_socket: socket.socket,
        spawner: Spawner,
        address: str,
        metrics_socket: socket.socket | None,
        grpc_socket: socket.socket | None,
    ) -> int:
        async with anyio.create_task_group() as task_group:
            async with open_pool(self.settings, spawner, self.control, self.timeouts) as pool:
                self.pool = pool
                self.opened.set()
                context = Context(pool, address, self._started_at, self._stop_for_client)
                control = ControlServer(listener, key, context, self.timeouts)
                task_group.start_soon(control.serve)
                if metrics_socket is not None:
                    from .metrics import serve_metrics  # prometheus_client costs 80 ms of start-up

                    logger.info("metrics at %s/metrics", url(metrics_socket))
                    task_group.start_soon(serve_metrics, pool, metrics_socket)
                if grpc_socket is not None:
                    logger.info("gRPC at %s", url(grpc_socket).removeprefix("http://"))
                for tell in self.tellers:
                    task_group.start_soon(follow, pool, tell)
                if self.notifier is not None:
                    task_group.start_soon(follow, pool, self.notifier.tell)
                    if self.notifier.watchdog is not None:
                        task_group.start_soon(self.notifier.ping)
                lineage = getattr(spawner, "lineage", None)  # a real spawner's: real processes
                if lineage is not None and reaper.needed():
                    task_group.start_soon(reaper.reap_orphans, lineage)
                with interrupts_to(self._on_interrupt) if self.interrupts else nullcontext():
                    await self._start_up(pool, address)
                    await pool.wait_until(lambda: self._stop_requested.is_set() or pool.state is PoolState.DOWN)
                    exit_code = exits.OK
                    if pool.state is PoolState.DOWN:
                        # Nobody will serve: once the workers left have drained, new
                        # connections are refused rather than left hanging.
                        listen_socket.close()
                        if grpc_socket is not None:
                            grpc_socket.close()
                        exit_code = exits.ERROR if pool.failed_to_start else exits.DOWN
                    exit_code = await self._shut_down(pool, listener, key, exit_code)
            task_group.cancel_scope.cancel()
        spawner.close()  # its processes are all reaped
        return exit_code

    async def _start_up(self, pool: Pool, address: str) -> None:
        """Wait until every worker is ready, or the pool gives up, or a stop comes."""
        await pool.wait_until(lambda: pool.state is not PoolState.STARTING or self._stop_requested.is_set())
        if pool.state is PoolState.READY:
            n = len(pool.slots)
            logger.info(
                "pool ready: %d worker%s serving %s with %s (control: %s, pid %d)",
                n, "" if n == 1 else "s", address, pool.worker_settings.http, self.control, os.getpid(),
            )  # fmt: skip

    async def _shut_down(self, pool: Pool, listener: ipc.Listener, key: bytes, exit_code: int) -> int:
        """Stop the pool, answer whoever asked for the stop, and say how it ended."""
        clean = await pool.stop(self.grace, self.drain_delay)
        if exit_code == exits.OK and not clean:
            exit_code = exits.UNCLEAN
        self._reply = StopReply(pool.stop_report(), clean)
        self._stopped.set()
        keys.remove_key(self.control, key)  # while the address is still ours (see run)
        await listener.aclose()
        if self._clients_waiting:
            with anyio.move_on_after(self.timeouts.reply_window):
                await self._all_replied.wait()
        if pool.failure and exit_code == exits.DOWN:
            logger.error("stopped: %s (exit code %d)", pool.failure, exit_code)
        else:
            logger.info("stopped%s", "" if exit_code == exits.OK else f" (exit code {exit_code})")
        return exit_code
