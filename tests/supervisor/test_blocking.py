"""Nothing slow runs on the supervisor's event loop: a spawn (fork and exec, tens of milliseconds
under Wine), a reload's walk of every model folder (a repository on a slow disk), PID 1's scan
of /proc. While one takes its time, control requests are answered (found in review: each of
them stalled every control message for as long as it took)."""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import time

import anyio
import pytest

from ipc.contract import repository
from ipc.contract.launch import LaunchOptions
from ipc.contract.settings import WorkerSettings
from ipc.messages import OperationReply, ReloadRequest
from supervisor import client, reaper
from supervisor.lifecycle import PoolState
from supervisor.spawn import SpawnRequest, SubprocessSpawner

from .fakes import by_generation, running

pytestmark = pytest.mark.anyio

SLOW = 1.0


async def ticks_while(work) -> int:
    """How many 10 ms ticks the event loop made while ``work`` ran."""
    count = 0
    done = anyio.Event()

    async def tick() -> None:
        nonlocal count
        while not done.is_set():
            await anyio.sleep(0.01)
            count += 1

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(tick)
        result = work()
        if inspect.isawaitable(result):
            await result
        done.set()
    return count


async def test_a_slow_spawn_leaves_the_event_loop_free(monkeypatch):
    class Slow:
        pid = 4321
        returncode = None

        def __init__(self, *args: object, **kwargs: object) -> None:
            time.sleep(SLOW)

    monkeypatch.setattr(subprocess, "Popen", Slow)
    with socket.socket() as listen:
        spawner = SubprocessSpawner(listen)
        if sys.platform == "win32":
            from supervisor._winjob import KillOnCloseJob

            monkeypatch.setattr(KillOnCloseJob, "assign", lambda self, process: None)
        request = SpawnRequest(LaunchOptions("address", 0, 1, 1, "text", "info", "asyncio"))
        try:
            assert await ticks_while(lambda: spawner.spawn(request)) >= 0.5 * SLOW / 0.01
        finally:
            spawner.close()


async def test_a_reload_reading_a_slow_repository_leaves_control_answering(control_address, tmp_path, monkeypatch):
    listed = repository.listing

    def slow_listing(folders: list[str]) -> list[str] | None:
        time.sleep(SLOW)
        return listed(folders)

    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "model.npz").write_bytes(b"")
    worker = WorkerSettings(grace=1.0, model_dirs=[str(tmp_path / "models")])
    async with running(control_address, by_generation(), worker=worker) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        monkeypatch.setattr(repository, "listing", slow_listing)
        async with anyio.create_task_group() as task_group:
            replies: list[OperationReply] = []

            async def reload() -> None:
                replies.append(await client.operate(control_address, ReloadRequest(), lambda line: None))

            task_group.start_soon(reload)
            await pool.until(lambda: pool.pool.state is PoolState.RELOADING)
            started = anyio.current_time()
            assert (await client.status(control_address)).state == "reloading"
            assert anyio.current_time() - started < SLOW / 2
        assert replies[0].outcome == OperationReply.DONE, replies[0].message


async def test_the_orphan_reaper_scans_off_the_event_loop(monkeypatch):
    def slow_scan() -> list[int]:
        time.sleep(SLOW)
        return []

    monkeypatch.setattr(reaper, "zombie_children", slow_scan)

    async def one_round() -> None:
        with anyio.move_on_after(SLOW * 1.5):
            await reaper.reap_orphans(reaper.Lineage())

    assert await ticks_while(one_round) >= 0.5 * SLOW / 0.01
