"""One worker process: connect, configure, load models, serve HTTP until told to stop."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
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


async def _after(delay: float, action: Callable[[], None]) -> None:
    await anyio.sleep(delay)
    action()


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
            configure = await link.handshake(worker_id)
            sock = listening_socket(configure)
        except (HandshakeError, ipc.IPCError, OSError) as exc:
            logger.error("cannot join the pool: %s", exc)
            return 1
        settings = configure.settings
        try:
            models = await anyio.to_thread.run_sync(load_models, list(settings.get("models", [])))
        except (ModelError, Exception) as exc:
            message = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
            logger.error("cannot load models: %s", message)
            await link.send(Error("model_load", message))
            return 1
        try:
            return await _serve(link, sock, models, settings)
        finally:
            for model in models:
                model.unload()


async def _serve(link: SupervisorLink, sock: socket.socket, models: list[Any], settings: dict[str, Any]) -> int:
    state = ServingState()
    app = InferenceApp(
        models, state, max_body_size=int(settings.get("max_body_size", 64 * 1024 * 1024)), pool_stats=link.pool_stats
    )
    config = hypercorn_config(settings)
    shutdown = anyio.Event()
    completed_before_drain = 0

    def on_stop(grace: float | None) -> None:
        nonlocal completed_before_drain
        if shutdown.is_set():
            return
        if grace is None:
            logger.warning("control channel closed: the supervisor is gone; draining")
            grace = ORPHAN_GRACE
        # Readiness turns 503 first, and stays so for the drain delay while requests are still
        # accepted, so that load balancers stop routing here; then the server stops accepting
        # and waits for in-flight requests up to graceful_timeout (read when the trigger fires).
        state.draining = True
        config.graceful_timeout = grace
        completed_before_drain = state.completed
        tg.start_soon(_after, float(settings.get("drain_delay", 0)), shutdown.set)

    async def announce_ready() -> None:
        await state.started.wait()
        await link.send(Ready(os.getpid(), [model.name for model in models]))

    async def serve_http() -> None:
        await http.serve(app, config, sock, shutdown.wait)
        completed = state.completed - completed_before_drain
        logger.info("drained: %d requests completed, %d dropped", completed, state.dropped)
        await link.send(Stopped(completed, state.dropped))
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(link.serve, on_stop, app.own_stats)
        tg.start_soon(announce_ready)
        tg.start_soon(serve_http)
    return 0
