"""A spawner whose workers are tasks, not processes: the pool's seam for in-process tests
(httpx's ``MockTransport`` plays this part for a client).

Each fake worker speaks the real protocol over the real control transport; only the process
is pretend. A *script* decides how it behaves: join and serve, crash, hang, never become
ready, break the protocol...
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

import ipc
from ipc.messages import Configure, Heartbeat, Hello, Ready, StatsReport, StatsRequest, Stop, Stopped, Welcome
from supervisor.spawn import SpawnRequest

Script = Callable[["FakeWorker"], Awaitable[None]]

_pids = itertools.count(100_000)


class FakeWorker:
    """A pretend process: a task with a pid, an exit code, and the protocol's manners."""

    def __init__(self, request: SpawnRequest, script: Script) -> None:
        self.request = request
        self.script = script
        self.pid = next(_pids)
        self.code: int | None = None
        self.killed = False
        self.exited = anyio.Event()
        self.connection: ipc.Connection | None = None
        self.configure: Configure | None = None
        #: Messages the supervisor sent it after Configure.
        self.received: list[ipc.Message] = []
        self._scope = anyio.CancelScope()

    @property
    def slot(self) -> int:
        return self.request.slot

    @property
    def generation(self) -> int:
        return self.request.generation

    # --- the ProcessHandle interface -----------------------------------------------------------

    async def wait(self) -> int:
        await self.exited.wait()
        assert self.code is not None
        return self.code

    def kill(self) -> None:
        if self.code is None:
            self.killed = True
            self._scope.cancel()

    async def run(self) -> None:
        with self._scope:
            try:
                await self.script(self)
            finally:
                if self.connection is not None:
                    with anyio.CancelScope(shield=True):
                        await self.connection.aclose()
        if self.code is None:
            self.code = -9 if self.killed else 0
        self.exited.set()

    def exit(self, code: int) -> None:
        """End now with ``code``, as ``sys.exit`` would."""
        self.code = code
        self._scope.cancel()

    # --- the protocol ----------------------------------------------------------------------------

    async def join(self) -> Configure:
        self.connection = await ipc.connect(self.request.control)
        await self.connection.send(Hello(ipc.PROTOCOL_VERSION, "worker", self.pid, self.slot, self.generation))
        welcome = await self.connection.receive()
        if not isinstance(welcome, Welcome):
            self.exit(1)
        self.configure = await self.connection.receive_a(Configure)
        return self.configure

    async def send(self, message: ipc.Message) -> None:
        assert self.connection is not None
        await self.connection.send(message)

    async def serve(self, *, ready: bool = True, heartbeats: bool = True, stats: dict | None = None) -> None:
        """Say Ready, beat, answer statistics, and on Stop report and exit 0."""
        assert self.connection is not None and self.configure is not None
        if ready:
            await self.send(Ready(self.pid, ["fake"]))
        seq = itertools.count(1)
        async with anyio.create_task_group() as task_group:
            if heartbeats:
                task_group.start_soon(self.beat, self.configure.settings.heartbeat_interval)
            async for message in self.connection:
                self.received.append(message)
                if isinstance(message, Stop):
                    await self.send(Stopped(0, 0, served=0, models=stats or {}, seq=next(seq)))
                    self.exit(0)
                elif isinstance(message, StatsRequest):
                    await self.send(StatsReport(message.request_id, stats or {}, next(seq)))
            task_group.cancel_scope.cancel()
        self.exit(0)  # the supervisor went away

    async def beat(self, interval: float) -> None:
        while True:
            await self.send(Heartbeat(0, 0.0, 1024))
            await anyio.sleep(interval)


async def healthy(worker: FakeWorker) -> None:
    await worker.join()
    await worker.serve()


class FakeSpawner:
    """Spawns :class:`FakeWorker` tasks in a task group of its own; ``script`` picks each one's
    behaviour from its spawn request (slot and generation)."""

    def __init__(self, task_group: anyio.abc.TaskGroup, script: Callable[[SpawnRequest], Script]) -> None:
        self._task_group = task_group
        self._script = script
        self.spawned: list[FakeWorker] = []

    def spawn(self, request: SpawnRequest) -> FakeWorker:
        worker = FakeWorker(request, self._script(request))
        self.spawned.append(worker)
        self._task_group.start_soon(worker.run)
        return worker

    def listen_socket_for(self, handle: object) -> tuple[int | None, bytes | None]:
        return None, None

    def running(self) -> list[FakeWorker]:
        return [worker for worker in self.spawned if not worker.exited.is_set()]
