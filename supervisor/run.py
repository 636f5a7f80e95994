"""One supervisor's life: bind, spawn, wait for ready, serve control, stop, exit code."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import anyio

import ipc
from ipc.messages import StopReply

from .control import ControlServer
from .interrupts import interrupts_to
from .lifecycle import State
from .pool import Pool
from .sockets import BindError, bind, url

logger = logging.getLogger("supervisor")

#: Exit codes of ``supervisor start`` (and of ``supervisor stop``, which reports the same).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNCLEAN = 3
#: How long, after the pool has stopped, clients that asked for the stop have to get the reply.
REPLY_WINDOW = 5.0


@dataclasses.dataclass
class SupervisorConfig:
    control: str
    workers: int = 1
    host: str = "127.0.0.1"
    port: int = 8080
    grace: float = 30.0
    drain_delay: float = 0.0
    ready_timeout: float = 120.0
    models: list[str] = dataclasses.field(default_factory=list)
    max_body_size: int = 64 * 1024 * 1024

    def worker_settings(self) -> dict[str, Any]:
        return {
            "grace": self.grace,
            "drain_delay": self.drain_delay,
            "models": list(self.models),
            "max_body_size": self.max_body_size,
        }


class Supervisor:
    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.grace = config.grace
        self._stop_requested = anyio.Event()
        self._stopped = anyio.Event()
        self._reply: StopReply | None = None
        self._clients_waiting = 0
        self._all_replied = anyio.Event()
        self._interrupts = 0
        self.pool: Pool | None = None

    def request_stop(self, grace: float | None = None) -> None:
        if not self._stop_requested.is_set():
            if grace is not None:
                self.grace = grace
            self._stop_requested.set()
            if self.pool is not None:
                self.pool.wake()  # the startup wait is watching the pool

    def _on_interrupt(self, name: str) -> None:
        self._interrupts += 1
        if self._interrupts == 1:
            logger.info("%s: stopping gracefully; interrupt again to force", name)
            self.request_stop()
        elif self.pool is not None:
            logger.warning("%s again: forcing the stop", name)
            self.pool.force()

    async def _stop_for_client(self, connection: ipc.Connection, grace: float | None) -> None:
        self._clients_waiting += 1
        try:
            self.request_stop(grace)
            await self._stopped.wait()
            assert self._reply is not None
            await connection.send(self._reply)
        finally:
            self._clients_waiting -= 1
            if not self._clients_waiting:
                self._all_replied.set()

    async def run(self) -> int:
        config = self.config
        try:
            listener = await ipc.listen(config.control)
        except (ipc.AddressInUseError, OSError) as exc:
            logger.error("cannot open the control address: %s", exc)
            return EXIT_ERROR
        try:
            try:
                listen_socket = bind(config.host, config.port)
            except BindError as exc:
                logger.error("%s", exc)
                return EXIT_ERROR
            with listen_socket:
                return await self._supervise(listener, listen_socket)
        finally:
            await listener.aclose()

    async def _supervise(self, listener: ipc.Listener, listen_socket: Any) -> int:
        pool = self.pool = Pool(listen_socket, self.config.control, self.config.worker_settings())
        address = url(listen_socket)
        control = ControlServer(listener, pool, address, self._stop_for_client)
        async with anyio.create_task_group() as tg:
            tg.start_soon(control.serve, tg)
            with interrupts_to(self._on_interrupt):
                for _ in range(self.config.workers):
                    pool.spawn(tg)
                exit_code = await self._start_up(pool, address)
                if exit_code == EXIT_OK:
                    await self._stop_requested.wait()
                exit_code = await self._shut_down(pool, listener, exit_code)
            tg.cancel_scope.cancel()
        return exit_code

    async def _start_up(self, pool: Pool, address: str) -> int:
        """Wait for every worker's Ready (or a failure, or a stop) under the ready timeout."""
        config = self.config
        with anyio.move_on_after(config.ready_timeout) as startup:
            await pool.wait_until(lambda: pool.all_ready() or pool.any_failed() or self._stop_requested.is_set())
        if startup.cancelled_caught:
            late = [str(h.id) for h in pool.workers.values() if h.state.alive and h.state is not State.READY]
            logger.error("workers %s not ready after %gs", ", ".join(late), config.ready_timeout)
            return EXIT_ERROR
        if pool.any_failed():
            return EXIT_ERROR  # the pool has said which worker and why
        if pool.all_ready():
            pool.started = True
            logger.info(
                "pool ready: %d workers serving %s (control: %s, pid %d)",
                config.workers, address, config.control, os.getpid(),
            )  # fmt: skip
        return EXIT_OK

    async def _shut_down(self, pool: Pool, listener: ipc.Listener, exit_code: int) -> int:
        """Stop the pool, answer whoever asked for the stop, and say how it ended."""
        clean = await pool.stop(self.grace)
        if exit_code == EXIT_OK and not clean:
            exit_code = EXIT_UNCLEAN
        self._reply = StopReply([h.describe() for h in pool.workers.values()], clean)
        self._stopped.set()
        await listener.aclose()
        if self._clients_waiting:
            with anyio.move_on_after(REPLY_WINDOW):
                await self._all_replied.wait()
        logger.info("stopped%s", "" if exit_code == EXIT_OK else f" (exit code {exit_code})")
        return exit_code
