"""One worker process: connect, configure, load models, serve HTTP until told to stop."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import time

import anyio
import anyio.to_thread

import ipc
from ipc import handshake
from ipc.contract import inflight
from ipc.contract.settings import WorkerSettings
from ipc.messages import Configure, Error, Ready, Stop

from . import http
from .api import InferenceApp, ServingState
from .api.batching import delays
from .api.tracing import Tracing, tracing_for
from .link import Counts, HandshakeError, PoolStoppingError, SupervisorLink
from .models import Model, ModelError, load_models

logger = logging.getLogger("worker")

#: Drain time when the supervisor vanishes without saying how long.
ORPHAN_GRACE = 10.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    code: int
    #: False when a model load was abandoned: its thread cannot be stopped, only left behind.
    wait_for_threads: bool = True


def listening_socket(configure: Configure) -> socket.socket:
    """The pool's listening socket: inherited on POSIX, shared by the supervisor on Windows."""
    sock = _adopt(configure.listen_fd, configure.listen_share)
    if sock is None:
        raise HandshakeError("supervisor sent no listening socket")
    return sock


def grpc_socket(configure: Configure) -> socket.socket | None:
    """The pool's gRPC socket, the same way; None when the pool serves no gRPC."""
    return _adopt(configure.grpc_fd, configure.grpc_share)


def _adopt(fd: int | None, share: bytes | None) -> socket.socket | None:
    if sys.platform == "win32":
        return None if share is None else socket.fromshare(share)
    if fd is None:
        return None
    sock = socket.socket(fileno=fd)
    # Inherited on purpose, but only by the worker: a process its models start (with
    # close_fds=False, or by os.system) must not hold the pool's port after the pool is gone.
    sock.set_inheritable(False)
    return sock


def allow_imports_from(folder: str) -> None:
    """Let model factories be imported from ``folder`` (the pool's start folder), after every
    package of the pool's own, so that a ``worker.py`` there cannot shadow ours. Workers run
    with ``-P``, and the embeddable Windows interpreter never puts it on the path at all."""
    if folder and folder not in sys.path:
        sys.path.append(folder)


async def run_worker(address: str, slot: int, generation: int) -> Outcome:
    """Serve as ``generation`` of ``slot`` in the pool of the supervisor at ``address``."""
    try:
        connection = await ipc.connect(address)
    except ipc.NoServerError as exc:
        logger.error("%s", exc)
        return Outcome(1)
    async with connection:
        link = SupervisorLink(connection)
        try:
            with anyio.fail_after(handshake.TIMEOUT):
                configure = await link.handshake(address, slot, generation)
            sock = listening_socket(configure)
            grpc_sock = grpc_socket(configure)
        except TimeoutError:
            logger.error("cannot join the pool: the supervisor did not answer in %gs", handshake.TIMEOUT)
            return Outcome(1)
        except PoolStoppingError:
            logger.info("the pool is stopping: exiting without serving")
            return Outcome(0)
        except (HandshakeError, ipc.IPCError, OSError) as exc:
            logger.error("cannot join the pool: %s", exc)
            return Outcome(1)
        allow_imports_from(configure.settings.import_path)
        try:
            record = inflight.Record(configure.inflight) if configure.inflight else None
        except OSError as exc:  # the supervisor's folder is gone: it is stopping
            logger.error("cannot open the in-flight record %s: %s", configure.inflight, exc)
            return Outcome(1)
        tracing = tracing_for(configure.settings.otel_endpoint, slot)
        try:
            return await Worker(link, sock, configure.settings, record, grpc_sock, tracing).run()
        finally:
            if tracing is not None:  # the last spans leave (bounded), off the loop
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(tracing.close)


class Worker:
    """One worker's life after the handshake: load, serve, drain, report.

    The control channel is listened to from the start, so a Stop (or the channel closing)
    while the models load ends the worker at once: it has nothing in flight to protect, and
    the load's thread is abandoned.
    """

    def __init__(
        self,
        link: SupervisorLink,
        sock: socket.socket,
        settings: WorkerSettings,
        record: inflight.Record | None = None,
        grpc_sock: socket.socket | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.link = link
        #: Traces of its inference requests, when asked for (``--otel-endpoint``).
        self.tracing = tracing
        #: The pool's gRPC socket, when it serves gRPC (``worker.rpc``).
        self.grpc_sock = grpc_sock
        #: Where this worker notes what it has in flight, for its supervisor to read should it die.
        self.inflight = record
        self.sock = sock
        self.settings = settings
        self.state = ServingState()
        self.app: InferenceApp | None = None
        #: Set by a Stop message, or by the channel closing (then with ORPHAN_GRACE).
        self.stop_requested = anyio.Event()
        self.stop = Stop(ORPHAN_GRACE)
        self._loading = anyio.CancelScope()
        #: Dynamic batching's delay per model, in seconds, once the models are loaded.
        self.batch_delays: dict[str, float] = {}

    def on_stop(self, stop: Stop | None) -> None:
        """A Stop from the supervisor, or ``None``: the channel closed, the supervisor is gone."""
        if self.stop_requested.is_set():
            return
        if self.app is None:
            if stop is None:
                logger.warning("control channel closed while loading: the supervisor is gone; exiting")
            else:
                logger.info("stop received while loading: exiting without serving")
            self._loading.cancel()
        elif stop is None:
            logger.warning("control channel closed: the supervisor is gone; draining")
        else:
            logger.info("stop received: draining %d requests in flight (grace %gs)", self.state.in_flight, stop.grace)
        self.stop = stop or Stop(ORPHAN_GRACE)
        # Readiness turns 503 at once; the server reads the grace period when the trigger fires.
        self.state.draining = True
        if self.app is not None:
            self.app.flush_batches()  # nothing waits for company any more
        self.stop_requested.set()

    def _quarantine(self, models: dict[str, str]) -> None:
        assert self.app is not None
        for key in models.keys() - self.app.quarantined.keys():
            logger.warning("%s", models[key])
        self.app.quarantined = dict(models)

    def _counts(self) -> Counts:
        state = self.state
        state.settle(time.monotonic())
        return Counts(state.in_flight, state.completed, state.connections, state.rebalanced)

    def _connections(self, count: int) -> None:
        self.state.connections = count

    def _rebalance(self, close: int) -> None:
        logger.debug("closing %d of %d connections, to spread them over the pool", close, self.state.connections)
        self.state.rebalance(close, time.monotonic())

    async def run(self) -> Outcome:
        outcome = Outcome(0)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self.link.serve, self.on_stop)
            task_group.start_soon(self.link.heartbeats, self.settings.heartbeat_interval, self._counts)
            models: list[Model] | None = None
            with self._loading:
                try:
                    loaded = await anyio.to_thread.run_sync(
                        load_models,
                        self.settings.models,
                        self.settings.model_dirs,
                        self.settings.allow_pickle,
                        self.settings.trust_types,
                        self.settings.model_versions,
                        abandon_on_cancel=True,
                    )
                    self.batch_delays = delays(loaded, self.settings.batch_delay, self.settings.model_batch_delays)
                    models = loaded
                except Exception as exc:
                    message = str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
                    if not await self.link.send(Error(Error.MODEL_LOAD, message)):
                        logger.error("cannot load models: %s", message)  # else the supervisor says it
                    outcome = Outcome(1)
            if self._loading.cancelled_caught:
                await self.link.send_stopped(0, 0, 0, "stopped while loading")
                outcome = Outcome(0, wait_for_threads=False)
            elif models is not None:
                try:
                    await self._serve(models)
                finally:
                    for model in models:
                        model.unload()
            task_group.cancel_scope.cancel()
        return outcome

    async def _serve(self, models: list[Model]) -> None:
        settings = self.settings
        app = InferenceApp(
            models,
            self.state,
            max_body_size=settings.max_body_size,
            body_timeout=settings.body_timeout,
            access_log=settings.access_log,
            pool_stats=self.link.pool_stats,
            batch_delays=self.batch_delays,
            gone=set(settings.model_versions) - {f"{model.name}/{model.version}" for model in models},
            inflight=self.inflight,
            tracing=self.tracing,
        )
        self.app = app
        self.link.changed_counters = lambda: app.counters(app.changes.take())
        app.quarantined = dict(self.link.quarantined)
        self.link.on_quarantine = self._quarantine
        self.link.on_rebalance = self._rebalance
        shutdown = anyio.Event()
        completed_before_drain = 0

        async def drain_when_asked() -> None:
            nonlocal completed_before_drain
            await self.stop_requested.wait()
            completed_before_drain = self.state.completed
            # Keep accepting for the drain delay, readiness already 503, so that load
            # balancers stop routing here before the server stops accepting.
            await anyio.sleep(self.stop.drain_delay)
            shutdown.set()

        async def announce_ready() -> None:
            await self.state.started.wait()
            await self.link.send(Ready(os.getpid(), sorted({model.name for model in models})))

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(drain_when_asked)
            async with anyio.create_task_group() as serving:
                if self.grpc_sock is not None:
                    from . import rpc  # grpcio's import takes a while: only where gRPC is served

                    # Started before the HTTP app says it is ready, and drained beside it.
                    await serving.start(
                        rpc.serve, app, settings, self.grpc_sock, shutdown.wait, lambda: self.stop.grace
                    )
                task_group.start_soon(announce_ready)
                await http.serve(
                    app,
                    settings,
                    self.sock,
                    shutdown.wait,
                    lambda: self.stop.grace,
                    counted=self._connections,
                    accepting=self.state.accepting,
                )
            task_group.cancel_scope.cancel()
        completed = self.state.completed - completed_before_drain
        logger.info("drained: %d in-flight requests finished, %d dropped", completed, self.state.dropped)
        await self.link.send_stopped(completed, self.state.dropped, self.state.completed, "stop")
