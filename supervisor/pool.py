"""The workers: spawning them, talking to each one, and stopping them all.

Each worker is a :class:`WorkerHandle`: its process, its control connection once it has
joined, and its :class:`~supervisor.lifecycle.Lifecycle`. Every change of any worker bumps
``Pool.changed``, so waiting is "until this predicate holds", never a sleep.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

import ipc
from ipc.messages import (
    Configure,
    Error,
    Hello,
    PoolStatsReply,
    PoolStatsRequest,
    Ready,
    StatsReport,
    StatsRequest,
    Stop,
    Stopped,
    Welcome,
)

from . import stats
from .lifecycle import Event, Lifecycle, State, TransitionError

logger = logging.getLogger("supervisor")

#: After the grace period, how long a draining worker has to report and exit before it is killed.
EXIT_MARGIN = 5.0
#: How long a /stats fan-out waits for each worker's counters.
STATS_TIMEOUT = 2.0
#: How long a message to one worker may take to go out before that worker counts as stuck.
SEND_TIMEOUT = 5.0


@dataclasses.dataclass
class WorkerHandle:
    id: int
    process: subprocess.Popen[bytes]
    lifecycle: Lifecycle = dataclasses.field(default_factory=Lifecycle)
    connection: ipc.Connection | None = None
    exit_code: int | None = None
    report: Stopped | None = None
    #: Why it failed, in the worker's own words (e.g. a model that would not load).
    failure: str | None = None
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Set when its control connection has ended (or it never had one and has exited).
    disconnected: anyio.Event = dataclasses.field(default_factory=anyio.Event)

    @property
    def state(self) -> State:
        return self.lifecycle.state

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"id": self.id, "pid": self.pid, "state": self.state.value, "exit_code": self.exit_code}
        if self.report is not None:
            info["completed"] = self.report.completed
            info["dropped"] = self.report.dropped
            info["served"] = self.report.served
        if self.failure is not None:
            info["failure"] = self.failure
        return info


class Pool:
    def __init__(self, listen_socket: socket.socket, control_address: str, settings: dict[str, Any]) -> None:
        self.listen_socket = listen_socket
        self.control_address = control_address
        self.settings = settings
        self.workers: dict[int, WorkerHandle] = {}
        self.stopping = False
        self.forced = False
        #: Every worker has been ready at once: startup is over.
        self.started = False
        self._changed = anyio.Event()
        self._ids = itertools.count(0)
        self._request_ids = itertools.count(1)
        self._stats_waiters: dict[int, anyio.Event] = {}
        #: Counters of workers that have exited, so pool totals never go down.
        self._retired_stats: dict[str, Any] = {}
        # One thread per worker waits for its exit: they must not queue behind anyio's
        # default limit of 40 threads, or a large pool's late exits would go unseen.
        self._exit_watchers = anyio.CapacityLimiter(math.inf)

    # --- waiting ---------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def wake(self) -> None:
        """Make every ``wait_until`` look at its predicate again."""
        self._notify()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    def _fire(self, handle: WorkerHandle, event: Event) -> None:
        try:
            handle.lifecycle.fire(event)
        except TransitionError as exc:
            logger.debug("worker %d: %s", handle.id, exc)
        self._notify()

    # --- spawning --------------------------------------------------------------------------

    def spawn(self, task_group: anyio.abc.TaskGroup) -> WorkerHandle:
        worker_id = next(self._ids)
        command = [sys.executable, "-m", "worker", "--control", self.control_address, "--id", str(worker_id)]
        if sys.platform == "win32":
            # Its own process group: the console's Ctrl+C is not delivered to it at all.
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, creationflags=subprocess.CREATE_NEW_PROCESS_GROUP
            )
        else:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, pass_fds=(self.listen_socket.fileno(),))
        handle = WorkerHandle(worker_id, process)
        self.workers[worker_id] = handle
        task_group.start_soon(self._watch_exit, handle)
        return handle

    async def _watch_exit(self, handle: WorkerHandle) -> None:
        code = await anyio.to_thread.run_sync(handle.process.wait, abandon_on_cancel=True, limiter=self._exit_watchers)
        handle.exit_code = code
        if handle.connection is not None:
            # Its last messages (the Stopped report, final counters) may still be in flight.
            with anyio.move_on_after(SEND_TIMEOUT):
                await handle.disconnected.wait()
        handle.disconnected.set()
        self._retired_stats = stats.merge(self._retired_stats, handle.stats)
        handle.stats = {}
        previous = handle.state
        self._fire(handle, Event.EXITED if code == 0 else Event.CRASHED)
        if previous in (State.SPAWNED, State.CONNECTED):
            reason = handle.failure or f"exited with code {code} before it was ready"
            logger.error("worker %d failed to start: %s", handle.id, reason)
        elif previous is State.READY:
            logger.error("worker %d (pid %d) exited unexpectedly with code %d", handle.id, handle.pid, code)

    # --- talking to one worker -------------------------------------------------------------

    async def attach(self, hello: Hello, connection: ipc.Connection) -> None:
        """Serve the control connection of the worker that sent ``hello``."""
        handle = self.workers.get(hello.worker_id if hello.worker_id is not None else -1)
        if handle is None or handle.pid != hello.pid or handle.connection is not None or handle.exit_code is not None:
            await connection.send(Error("unknown_worker", f"no worker {hello.worker_id} with pid {hello.pid} awaits"))
            return
        handle.connection = connection
        try:
            self._fire(handle, Event.HELLO)
            await connection.send(Welcome(ipc.PROTOCOL_VERSION, os.getpid()))
            if sys.platform == "win32":
                share = self.listen_socket.share(handle.pid)  # type: ignore[attr-defined]
                configure = Configure(self.settings, listen_share=share)
            else:
                configure = Configure(self.settings, listen_fd=self.listen_socket.fileno())
            await connection.send(configure)
            if self.stopping:
                await self._send_stop(handle, float(self.settings["grace"]))
            async with anyio.create_task_group() as tg:
                async for message in connection:
                    if isinstance(message, PoolStatsRequest):
                        # Its own task: answering waits for the other workers' counters, and
                        # this loop must keep reading theirs (and this worker's) meanwhile.
                        tg.start_soon(self._answer_pool_stats, handle, message)
                    else:
                        self._on_message(handle, message)
        except ipc.ProtocolError as exc:
            logger.error("worker %d broke the control protocol: %s", handle.id, exc)
        finally:
            handle.connection = None
            handle.disconnected.set()
            self._notify()

    def _on_message(self, handle: WorkerHandle, message: ipc.Message) -> None:
        if isinstance(message, Ready):
            self._fire(handle, Event.READY)
            logger.info("worker %d ready (pid %d)", handle.id, handle.pid)
        elif isinstance(message, Stopped):
            handle.report = message
            if message.models:
                handle.stats = stats.sanitize(message.models)
            self._notify()
        elif isinstance(message, Error):
            handle.failure = message.message
            self._notify()
        elif isinstance(message, StatsReport):
            handle.stats = stats.sanitize(message.models)
            waiter = self._stats_waiters.get(message.request_id)
            if waiter is not None:
                waiter.set()
        else:
            logger.warning("worker %d sent an unexpected %s", handle.id, message.kind)

    async def _answer_pool_stats(self, handle: WorkerHandle, request: PoolStatsRequest) -> None:
        handle.stats = stats.sanitize(request.models)
        totals = await self.pool_stats(exclude=handle)
        await self._send(handle, PoolStatsReply(request.request_id, totals))

    async def _send(self, handle: WorkerHandle, message: ipc.Message) -> bool:
        """Send to one worker within SEND_TIMEOUT; whether it went out."""
        connection = handle.connection
        if connection is None:
            return False
        with anyio.move_on_after(SEND_TIMEOUT):
            try:
                await connection.send(message)
                return True
            except ipc.ConnectionClosedError:
                return False
        logger.warning(
            "worker %d: %s not sent in %gs: its control channel is stuck", handle.id, message.kind, SEND_TIMEOUT
        )
        return False

    async def pool_stats(self, exclude: WorkerHandle | None = None) -> dict[str, Any]:
        """Fresh counters from every live worker (``exclude`` has just sent its own), summed."""
        others = [
            h for h in self.workers.values() if h is not exclude and h.connection is not None and h.state is State.READY
        ]
        async with anyio.create_task_group() as tg:
            for other in others:
                tg.start_soon(self._refresh_stats, other)
        return stats.total([self._retired_stats, *(h.stats for h in self.workers.values())])

    async def _refresh_stats(self, handle: WorkerHandle) -> None:
        request_id = next(self._request_ids)
        waiter = self._stats_waiters[request_id] = anyio.Event()
        try:
            with anyio.move_on_after(STATS_TIMEOUT):
                if await self._send(handle, StatsRequest(request_id)):
                    await waiter.wait()
        finally:
            del self._stats_waiters[request_id]

    # --- the pool as a whole ---------------------------------------------------------------

    def live(self) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.state.alive]

    def state(self) -> str:
        """The pool's state in a word: starting, ready, degraded (a worker lost), stopping."""
        if self.stopping:
            return "stopping"
        if self.all_ready():
            return "ready"
        return "degraded" if self.started else "starting"

    def all_ready(self) -> bool:
        return bool(self.workers) and all(h.state is State.READY for h in self.workers.values())

    def any_failed(self) -> bool:
        return any(h.state is State.FAILED for h in self.workers.values())

    async def _send_stop(self, handle: WorkerHandle, grace: float) -> None:
        self._fire(handle, Event.STOP)
        await self._send(handle, Stop(grace))

    def force(self) -> None:
        """Kill what is still running now, rather than at the end of the grace period."""
        self.forced = True
        self._notify()

    async def stop(self, grace: float) -> bool:
        """Drain every worker, kill those that outlive ``grace``.

        Whether the stop was clean: every worker drained, reported, and exited 0, dropping no
        request.
        """
        self.stopping = True
        self.settings["grace"] = grace
        live = self.live()
        logger.info("stopping: draining %d workers (grace %gs)", len(live), grace)
        async with anyio.create_task_group() as tg:
            for handle in live:
                tg.start_soon(self._send_stop, handle, grace)
        with anyio.move_on_after(float(self.settings.get("drain_delay", 0)) + grace + EXIT_MARGIN):
            await self.wait_until(lambda: self.forced or not self.live())
        for handle in self.live():
            reason = "the stop was forced" if self.forced else f"it outlived the grace period of {grace:g}s"
            logger.warning("killing worker %d (pid %d): %s", handle.id, handle.pid, reason)
            self._fire(handle, Event.KILL)
            handle.process.kill()  # TerminateProcess on Windows
        with anyio.move_on_after(EXIT_MARGIN):
            # Exited, and their last reports read.
            await self.wait_until(
                lambda: all(h.exit_code is not None and h.disconnected.is_set() for h in self.workers.values())
            )
        for handle in self.workers.values():
            self._log_end(handle)
        return all(
            h.state is State.STOPPED and h.report is not None and h.report.dropped == 0 for h in self.workers.values()
        )

    def _log_end(self, handle: WorkerHandle) -> None:
        if handle.state is State.STOPPED and handle.report is not None:
            logger.info(
                "worker %d stopped: %d in-flight finished, %d dropped; %d served in all (exit %s)",
                handle.id, handle.report.completed, handle.report.dropped, handle.report.served, handle.exit_code,
            )  # fmt: skip
        else:
            logger.info("worker %d %s (exit %s)", handle.id, handle.state.value, handle.exit_code)
