"""A spawner whose workers are tasks, not processes: the pool's seam for in-process tests
(httpx's ``MockTransport`` plays this part for a client).

Each fake worker speaks the real protocol over the real control transport; only the process
is pretend. A *script* decides how it behaves: join and serve, crash, hang, never become
ready, break the protocol...
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import anyio.to_thread

import ipc
from ipc import handshake, keys, memory
from ipc.contract.settings import WorkerSettings
from ipc.messages import Configure, Heartbeat, Hello, Ready, StatsReport, StatsRequest, Stop, Stopped, Welcome
from supervisor.policy import Timeouts
from supervisor.pool import Pool
from supervisor.run import Supervisor
from supervisor.settings import PoolSettings, Settings
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
        #: What its heartbeats report: requests answered, resident memory.
        self.served = 0
        self.rss = 1024
        #: When (on the loop's clock) it said Ready, and was told to Stop.
        self.ready_at: float | None = None
        self.stopped_at: float | None = None
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
        try:
            self.connection = await ipc.connect(self.request.options.control)
        except ipc.NoServerError:  # the supervisor is gone already: as a real worker, exit 1
            self.exit(1)
            await anyio.sleep_forever()
        hello = Hello(ipc.PROTOCOL_VERSION, "worker", self.pid, self.slot, self.generation, handshake.new_nonce())
        try:
            await handshake.greet(self.connection, hello, keys.read_key(self.request.options.control))
        except ipc.RefusedError:
            self.exit(1)
            await anyio.sleep_forever()  # the exit's cancellation lands here
        self.configure = await self.connection.receive_a(Configure)
        return self.configure

    async def join_in_memory(self, pool: Pool) -> Configure:
        """Join ``pool`` over a connection pair in memory, as the control server would hand it
        over once admitted: the pool's channel with no socket under it."""
        theirs, self.connection = memory.pair()
        hello = Hello(ipc.PROTOCOL_VERSION, "worker", self.pid, self.slot, self.generation, handshake.new_nonce())
        pool.adopt(hello, theirs)
        await self.connection.receive_a(Welcome)
        self.configure = await self.connection.receive_a(Configure)
        return self.configure

    async def send(self, message: ipc.Message) -> None:
        assert self.connection is not None
        await self.connection.send(message)

    async def serve(self, *, ready: bool = True, heartbeats: bool = True, stats: dict | None = None) -> None:
        """Say Ready, beat, answer statistics, and on Stop report and exit 0."""
        assert self.connection is not None and self.configure is not None
        if ready:
            self.ready_at = anyio.current_time()
            await self.send(Ready(self.pid, ["fake"]))
        seq = itertools.count(1)
        async with anyio.create_task_group() as task_group:
            if heartbeats:
                task_group.start_soon(self.beat, self.configure.settings.heartbeat_interval)
            async for message in self.connection:
                self.received.append(message)
                if isinstance(message, Stop):
                    self.stopped_at = anyio.current_time()
                    await self.send(Stopped(0, 0, served=0))
                    self.exit(0)
                elif isinstance(message, StatsRequest):
                    await self.send(StatsReport(message.request_id, {"stats": stats or {}}, next(seq)))
            task_group.cancel_scope.cancel()
        self.exit(0)  # the supervisor went away

    async def beat(self, interval: float) -> None:
        while True:
            await self.send(Heartbeat(0, 0.0, self.rss, self.served))
            await anyio.sleep(interval)


async def healthy(worker: FakeWorker) -> None:
    await worker.join()
    await worker.serve()


class Unspawnable:
    """In place of a script: the spawn itself fails ``times`` times with ``error`` (as
    CreateProcess or fork can: out of descriptors, or Wine's passing "Internal error"), then
    the worker is healthy."""

    def __init__(self, times: float, error: OSError | None = None) -> None:
        self.times = times
        self.error = error or OSError(1359, "Internal error")

    async def __call__(self, worker: FakeWorker) -> None:
        await healthy(worker)


class FakeSpawner:
    """Spawns :class:`FakeWorker` tasks in a task group of its own; ``script`` picks each one's
    behaviour from its spawn request (slot and generation)."""

    kernel_pids = False  # its workers all connect from this process

    def __init__(
        self, task_group: anyio.abc.TaskGroup, script: Callable[[SpawnRequest], Script], cost: float = 0.0
    ) -> None:
        self._task_group = task_group
        self._script = script
        #: Seconds each spawn takes, as a real one's fork and exec do (on the spawner's thread).
        self._cost = cost
        self.spawned: list[FakeWorker] = []

    async def spawn(self, request: SpawnRequest) -> FakeWorker:
        await anyio.sleep(self._cost)  # a fork and exec, off the loop as the real spawner's
        script = self._script(request)
        if isinstance(script, Unspawnable) and script.times > 0:
            script.times -= 1
            raise script.error
        worker = FakeWorker(request, script)
        self.spawned.append(worker)
        self._task_group.start_soon(worker.run)
        return worker

    def listen_socket_for(self, handle: object) -> tuple[int | None, bytes | None]:
        return None, None

    grpc_socket = None

    def grpc_socket_for(self, handle: object) -> tuple[int | None, bytes | None]:
        return None, None

    def close(self) -> None:
        pass

    def running(self) -> list[FakeWorker]:
        return [worker for worker in self.spawned if not worker.exited.is_set()]


# --- a whole supervisor in-process, with fake workers -------------------------------------------

TIMEOUTS = Timeouts(
    exit_margin=1.0,
    unready_exit=0.2,
    stats=0.5,
    handshake=2.0,
    client_idle=2.0,
    reply_window=1.0,
    backoff_base=0.05,
    backoff_max=0.2,
    healthy_after=5.0,
    recycle_retry=0.1,
)
DEADLINE = 20


@dataclasses.dataclass
class Running:
    supervisor: Supervisor
    spawner: FakeSpawner
    control: str
    exit_code: list[int]
    done: anyio.Event

    @property
    def pool(self):
        assert self.supervisor.pool is not None
        return self.supervisor.pool

    async def until(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(DEADLINE):
            await self.supervisor.opened.wait()
            await self.pool.wait_until(predicate)

    async def finished(self) -> int:
        with anyio.fail_after(DEADLINE):
            await self.done.wait()
        return self.exit_code[0]


@asynccontextmanager
async def running(
    control_address: str,
    script: Callable[[SpawnRequest], Script],
    workers: int = 2,
    spawn_cost: float = 0.0,
    worker: WorkerSettings | None = None,
    **pool: object,
) -> AsyncIterator[Running]:
    settings = Settings(
        PoolSettings(workers=workers, bind="127.0.0.1:0", **{"heartbeat_timeout": 1.0, **pool}),  # type: ignore[arg-type]
        worker or WorkerSettings(grace=1.0),
        {},
    )
    async with anyio.create_task_group() as task_group:
        spawner = FakeSpawner(task_group, script, spawn_cost)
        supervisor = Supervisor(settings, control_address, TIMEOUTS, spawner=lambda sock: spawner)
        exit_code: list[int] = []
        done = anyio.Event()

        async def run() -> None:
            exit_code.append(await supervisor.run())
            done.set()

        task_group.start_soon(run)
        handle = Running(supervisor, spawner, control_address, exit_code, done)
        try:
            yield handle
        finally:
            supervisor.request_stop()
            await handle.finished()
            assert not spawner.running(), "a fake worker outlived its supervisor"


def by_generation(**scripts: Script) -> Callable[[SpawnRequest], Script]:
    """``g1=...`` for first generations, ``s1g2=...`` for slot 1's second; else healthy."""

    def pick(request: SpawnRequest) -> Script:
        return scripts.get(f"s{request.slot}g{request.generation}", scripts.get(f"g{request.generation}", healthy))

    return pick
