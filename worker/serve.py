"""One worker process: connect, configure, load models, serve HTTP until told to stop."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any

import anyio
from hypercorn.config import Config

import ipc
from ipc.messages import Configure, Error, Ready, Stopped

from . import http
from .api import InferenceApp, ServingState
from .link import HandshakeError, SupervisorLink
from .models import ModelError, load_models

logger = logging.getLogger("worker")

#: Drain time when the supervisor vanishes without saying how long.
ORPHAN_GRACE = 10.0
#: A supervisor that does not welcome and configure a worker in this time is not coming.
HANDSHAKE_TIMEOUT = 30.0


def listening_socket(configure: Configure) -> socket.socket:
    """The pool's listening socket: inherited on POSIX, shared by the supervisor on Windows."""
    if sys.platform == "win32":
        if configure.listen_share is None:
            raise HandshakeError("supervisor sent no shared socket")
        return socket.fromshare(configure.listen_share)
    if configure.listen_fd is None:
        raise HandshakeError("supervisor named no socket")
    return socket.socket(fileno=configure.listen_fd)


def hypercorn_config(settings: dict[str, Any]) -> Config:
    config = Config()
    config.accesslog = None
    http_log = logging.getLogger("worker.http")
    http_log.setLevel(logging.WARNING)
    config.errorlog = http_log
    config.graceful_timeout = float(settings.get("grace", ORPHAN_GRACE))
    config.keep_alive_timeout = float(settings.get("keep_alive", 5.0))
    config.backlog = int(settings.get("backlog", 2048))
    return config


async def run_worker(address: str, worker_id: int) -> int:
    """Serve as worker ``worker_id`` of the supervisor at ``address``; the exit code."""
    try:
        connection = await ipc.connect(address)
    except ipc.NoServerError as exc:
        logger.error("%s", exc)
        return 1
    async with connection:
        link = SupervisorLink(connection)
        try:
            with anyio.fail_after(HANDSHAKE_TIMEOUT):
                configure = await link.handshake(worker_id)
            sock = listening_socket(configure)
        except TimeoutError:
            logger.error("cannot join the pool: the supervisor did not answer in %gs", HANDSHAKE_TIMEOUT)
            return 1
        except (HandshakeError, ipc.IPCError, OSError) as exc:
            logger.error("cannot join the pool: %s", exc)
            return 1
        return await Worker(link, sock, configure.settings).run()


class Worker:
    """One worker's life after the handshake: load, serve, drain, report.

    The control channel is listened to from the start, so a Stop that arrives while the
    models load is not lost: the worker then reports and exits as soon as loading ends.
    """

    def __init__(self, link: SupervisorLink, sock: socket.socket, settings: dict[str, Any]) -> None:
        self.link = link
        self.sock = sock
        self.settings = settings
        self.state = ServingState()
        self.config = hypercorn_config(settings)
        self.app: InferenceApp | None = None
        #: Set by a Stop message, or by the channel closing (then with ORPHAN_GRACE).
        self.stop_requested = anyio.Event()

    def on_stop(self, grace: float | None) -> None:
        if self.stop_requested.is_set():
            return
        if grace is None:
            logger.warning("control channel closed: the supervisor is gone; draining")
            grace = ORPHAN_GRACE
        logger.info("stop received: draining %d requests in flight (grace %gs)", self.state.in_flight, grace)
        # Readiness turns 503 at once; hypercorn reads graceful_timeout when the trigger fires.
        self.state.draining = True
        self.config.graceful_timeout = grace
        self.stop_requested.set()

    def own_stats(self) -> dict[str, Any]:
        return self.app.own_stats() if self.app is not None else {}

    async def run(self) -> int:
        code = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.link.serve, self.on_stop, self.own_stats)
            try:
                models = await anyio.to_thread.run_sync(load_models, list(self.settings.get("models", [])))
            except Exception as exc:
                message = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
                if not await self.link.send(Error("model_load", message)):
                    logger.error("cannot load models: %s", message)  # else the supervisor says it
                code = 1
            else:
                try:
                    await self._serve(models)
                finally:
                    for model in models:
                        model.unload()
            tg.cancel_scope.cancel()
        return code

    async def _serve(self, models: list[Any]) -> None:
        max_body_size = int(self.settings.get("max_body_size", 64 * 1024 * 1024))
        app = self.app = InferenceApp(models, self.state, max_body_size=max_body_size, pool_stats=self.link.pool_stats)
        if self.stop_requested.is_set():
            logger.info("stopped while loading: exiting without serving")
            await self.link.send(Stopped(0, 0, models=app.own_stats()))
            return
        shutdown = anyio.Event()
        completed_before_drain = 0

        async def drain_when_asked() -> None:
            nonlocal completed_before_drain
            await self.stop_requested.wait()
            completed_before_drain = self.state.completed
            # Keep accepting for the drain delay, readiness already 503, so that load
            # balancers stop routing here before the server stops accepting.
            await anyio.sleep(float(self.settings.get("drain_delay", 0)))
            shutdown.set()

        async def announce_ready() -> None:
            await self.state.started.wait()
            await self.link.send(Ready(os.getpid(), [model.name for model in models]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain_when_asked)
            tg.start_soon(announce_ready)
            await http.serve(app, self.config, self.sock, shutdown.wait)
            tg.cancel_scope.cancel()
        completed = self.state.completed - completed_before_drain
        logger.info("drained: %d in-flight requests finished, %d dropped", completed, self.state.dropped)
        served = self.state.completed
        await self.link.send(Stopped(completed, self.state.dropped, served=served, models=app.own_stats()))
