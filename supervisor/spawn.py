"""Starting worker processes, behind a small interface (httpx's transport seam).

The pool asks a :class:`Spawner` for a process and gets a :class:`ProcessHandle` back: a pid,
a way to wait for its exit and a way to kill it. :class:`SubprocessSpawner` starts real
``python -m worker`` processes; the pool's in-process tests pass a fake that runs workers as
tasks instead.

Every real worker dies with the supervisor, however the supervisor ends:

- its control channel closes, and the worker exits on its own (the protocol's way);
- on Linux the worker asks for ``PR_SET_PDEATHSIG`` (``worker.lifeline``): the kernel kills it
  when the thread that spawned it ends, so workers are spawned from the event loop's thread,
  which lives as long as the supervisor;
- on Windows every worker is put in a Job Object of its own that kills its processes when its
  last handle closes, which the supervisor's exit does (``_winjob``).

Nor does anything a worker started outlive it: once a worker has exited, its Job Object is
closed (Windows), or the processes it left behind are ended (Linux, ``reaper``), before the
pool hears of the exit.

Workers run with ``-P`` (Python's safe path): the folder the pool was started from is not put
in front of the pool's own packages, so a ``worker.py`` there cannot shadow them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib.util
import logging
import math
import os
import socket
import subprocess
import sys
from typing import Protocol

import anyio
import anyio.to_thread

from ipc.contract.launch import LaunchOptions

from . import reaper

if sys.platform == "win32":
    from ._winjob import KillOnCloseJob

logger = logging.getLogger("supervisor")


@dataclasses.dataclass(frozen=True)
class SpawnRequest:
    """Which worker to start (its command line's options), and how many threads its numerical
    libraries may use."""

    options: LaunchOptions
    threads: int = 1

    @property
    def slot(self) -> int:
        return self.options.slot

    @property
    def generation(self) -> int:
        return self.options.generation


def event_loop(http: str) -> str:
    """The worker's event loop: uvloop under uvicorn where it is installed (never on Windows),
    as uvicorn's own ``--loop auto`` picks; asyncio otherwise."""
    if http == "uvicorn" and sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    return "asyncio"


#: What numerical libraries read for their thread pools, set before the worker imports any.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")  # fmt: skip


def worker_environment(threads: int) -> dict[str, str]:
    """The supervisor's environment, with each worker's numerical thread pools sized to its
    share of the cores: N workers each using every core would fight over them."""
    environment = dict(os.environ)
    environment.update({name: str(threads) for name in THREAD_VARIABLES})
    return environment


class ProcessHandle(Protocol):
    @property
    def pid(self) -> int: ...

    async def wait(self) -> int:
        """The exit code, once the process has exited (and been reaped)."""
        ...

    def kill(self) -> None:
        """Kill it now (``Process.kill()``; TerminateProcess on Windows); harmless once it has exited."""
        ...


class Spawner(Protocol):
    #: Whether its handles' pids are the OS's, which the kernel reports for each control
    #: connection: then a worker's Hello must come from the pid it names.
    kernel_pids: bool
    #: The pool's gRPC socket, shared with the workers it spawns (None: no gRPC).
    grpc_socket: socket.socket | None

    async def spawn(self, request: SpawnRequest) -> ProcessHandle:
        """A started process; ``OSError`` if the system refused it."""
        ...

    def listen_socket_for(self, handle: ProcessHandle) -> tuple[int | None, bytes | None]:
        """How ``Configure`` names the pool's listening socket to this worker: (fd, share)."""
        ...

    def grpc_socket_for(self, handle: ProcessHandle) -> tuple[int | None, bytes | None]:
        """The same for the pool's gRPC socket: (None, None) when the pool serves no gRPC."""
        ...

    def close(self) -> None:
        """Every process it started has been reaped: let go of what it holds."""
        ...


class Subprocess:
    """A real worker process."""

    def __init__(
        self, process: subprocess.Popen[bytes], limiter: anyio.CapacityLimiter, lineage: reaper.Lineage, job: object
    ) -> None:
        self._process = process
        self._limiter = limiter
        self._lineage = lineage
        self._job = job  # Windows: its KillOnCloseJob, if the system gave it one

    @property
    def pid(self) -> int:
        return self._process.pid

    async def wait(self) -> int:
        return await anyio.to_thread.run_sync(self._wait, abandon_on_cancel=True, limiter=self._limiter)

    def _wait(self) -> int:
        code = self._process.wait()
        self._lineage.workers.discard(self._process.pid)
        if sys.platform == "win32":
            if isinstance(self._job, KillOnCloseJob):
                self._job.close()  # ends whatever the worker left in it
        elif reaper.adopted:
            reaper.end_strays(self._lineage)
        return code

    def kill(self) -> None:
        if self._process.returncode is None:
            try:
                self._process.kill()
            except ProcessLookupError:  # exited between the check and the kill
                pass


class SubprocessSpawner:
    """Spawns ``python -P -m worker`` processes that share ``listen_socket``."""

    kernel_pids = True

    def __init__(self, listen_socket: socket.socket, adopt: bool = False) -> None:
        """``adopt``: make this process the subreaper of its workers' descendants (Linux), and
        end those they leave behind; for a supervisor's own process, not a test's."""
        self.listen_socket = listen_socket
        #: The pool's gRPC socket (``--grpc-bind``), shared with the workers as ``listen_socket`` is.
        self.grpc_socket: socket.socket | None = None
        self.lineage = reaper.Lineage()
        if adopt:
            reaper.adopt_orphans()
        # One thread per process waits for its exit: they must not queue behind anyio's
        # default limit of 40 threads, or a large pool's late exits would go unseen.
        self._waiters = anyio.CapacityLimiter(math.inf)
        # And one thread starts them all, off the event loop (a fork and exec take
        # milliseconds, tens of them under Wine), and lives as long as the supervisor: on Linux
        # PR_SET_PDEATHSIG (worker.lifeline) fires when the *thread* that spawned a worker
        # ends, and anyio's pooled threads end when idle.
        self._starter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spawner")

    def command(self, request: SpawnRequest) -> list[str]:
        return [sys.executable, "-P", "-m", "worker", *request.options.argv()]

    async def spawn(self, request: SpawnRequest) -> Subprocess:
        return await asyncio.wrap_future(self._starter.submit(self._start, request))

    def close(self) -> None:
        """Let the starting thread end, once every process it started has been reaped; end what
        they left behind (a worker's wait that was abandoned may not have)."""
        self._starter.shutdown(wait=False)
        if reaper.adopted:
            reaper.end_strays(self.lineage)  # the pool has stopped: nothing else waits on the loop

    def _start(self, request: SpawnRequest) -> Subprocess:
        command = self.command(request)
        environment = worker_environment(request.threads)
        job = None
        if sys.platform == "win32":
            # Its own process group: the console's Ctrl+C is not delivered to it at all.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                env=environment,
                creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
            )
            try:
                job = KillOnCloseJob()
                job.assign(process)
            except OSError as exc:
                # The control channel still ends the worker with the supervisor; the job only
                # backs that up (for a worker whose loop is stuck, and for what it started).
                logger.warning("worker pid %d is not in a job object: %s", process.pid, exc)
        else:
            sockets = (self.listen_socket, self.grpc_socket) if self.grpc_socket else (self.listen_socket,)
            with self.lineage.lock:
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, env=environment, pass_fds=[s.fileno() for s in sockets]
                )
                self.lineage.workers.add(process.pid)
        return Subprocess(process, self._waiters, self.lineage, job)

    def listen_socket_for(self, handle: ProcessHandle) -> tuple[int | None, bytes | None]:
        return _socket_for(self.listen_socket, handle)

    def grpc_socket_for(self, handle: ProcessHandle) -> tuple[int | None, bytes | None]:
        return (None, None) if self.grpc_socket is None else _socket_for(self.grpc_socket, handle)


def _socket_for(sock: socket.socket, handle: ProcessHandle) -> tuple[int | None, bytes | None]:
    if sys.platform == "win32":
        return None, sock.share(handle.pid)
    return sock.fileno(), None
