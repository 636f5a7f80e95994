"""The pool in-process: a real supervisor, control channel and transport, with fake workers
(tasks speaking the protocol) instead of processes, and every timeout short."""

from __future__ import annotations

import math
import os

import anyio
import pytest

import ipc
from ipc import handshake, keys
from ipc.contract.settings import WorkerSettings
from ipc.messages import Challenge, Error, Hello, Proof, Ready, StatsReport, StatsRequest, Stop
from supervisor import client, exits
from supervisor.lifecycle import PoolState
from supervisor.pool import open_pool
from supervisor.settings import PoolSettings, Settings

from .fakes import DEADLINE, TIMEOUTS, FakeSpawner, FakeWorker, Unspawnable, by_generation, healthy, running

pytestmark = pytest.mark.anyio


async def test_a_healthy_pool_starts_and_stops_cleanly(control_address):
    async with running(control_address, by_generation()) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply = await client.status(control_address)
        assert reply.state == "ready"
        assert [(w.slot, w.generation, w.state) for w in reply.workers] == [(0, 1, "ready"), (1, 1, "ready")]
        stop = await client.stop(control_address, None)
        assert stop.clean and [w.state for w in stop.workers] == ["stopped", "stopped"]
    assert await pool.finished() == exits.OK
    assert all(isinstance(w.received[-1], Stop) for w in pool.spawner.spawned)


async def test_the_key_file_is_gone_before_the_address_is_given_up(control_address, monkeypatch):
    """Removed after, it could be the next supervisor's key that goes: one may start at the
    address as soon as it is free, and remove_key looks at the file before it unlinks it."""
    key_file_there = []
    aclose = ipc.Listener.aclose

    async def giving_up(listener: ipc.Listener) -> None:
        key_file_there.append(os.path.exists(keys.key_path(control_address)))
        await aclose(listener)

    monkeypatch.setattr(ipc.Listener, "aclose", giving_up)
    async with running(control_address, by_generation()) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        assert os.path.exists(keys.key_path(control_address))
        assert (await client.stop(control_address, None)).clean
    assert await pool.finished() == exits.OK
    assert key_file_there and not any(key_file_there), key_file_there


async def crash_after_ready(worker: FakeWorker) -> None:
    await worker.join()
    await worker.send(Ready(worker.pid, []))
    worker.exit(3)


async def test_a_lost_worker_is_replaced_in_its_slot(control_address):
    async with running(control_address, by_generation(s1g1=crash_after_ready)) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY and pool.pool.slots[1].generation == 2)
        slot = pool.pool.slots[1]
        assert slot.restarts.count == 1 and slot.current is not None and slot.current.pid != pool.spawner.spawned[1].pid
        assert pool.pool.slots[0].generation == 1


async def fail_to_load(worker: FakeWorker) -> None:
    await worker.join()
    await worker.send(Error(Error.MODEL_LOAD, "weights vanished"))
    worker.exit(1)


async def test_a_crash_loop_of_failed_starts_with_no_worker_left_gives_up_with_its_own_exit_code(control_address):
    script = by_generation(s0g2=fail_to_load, s0g3=fail_to_load, s0g4=fail_to_load, s0g1=crash_after_ready)
    async with running(control_address, script, workers=1, max_restarts=2) as pool:
        assert await pool.finished() == exits.DOWN
        assert pool.pool.state is PoolState.DOWN
        assert pool.pool.failure == (
            "worker 0 failed 3 times within 60s (the last: weights vanished): a crash loop, and no worker can start; "
            "the pool is down"
        )
        # The first started and then died: not a failed start. The three after it were.
        assert [w.generation for w in pool.spawner.spawned if w.slot == 0] == [1, 2, 3, 4]


async def test_a_slot_that_cannot_start_is_tried_again_slowly_while_the_others_serve(control_address):
    script = by_generation(s0g1=crash_after_ready, s0g2=fail_to_load, s0g3=fail_to_load, s0g4=fail_to_load)
    async with running(control_address, script, workers=2, max_restarts=2) as pool:
        # Slot 0 cannot start for a while (three failed starts); slot 1 serves on, and the pool
        # does not give up; the fifth generation loads again.
        await pool.until(lambda: pool.pool.slots[0].current is not None and pool.pool.slots[0].current.generation == 5)
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        assert pool.pool.failure is None


async def crash_after_ready_and_a_beat(worker: FakeWorker) -> None:
    await worker.join()
    await worker.send(Ready(worker.pid, []))
    await anyio.sleep(0.05)
    worker.exit(-9)


async def test_workers_that_die_while_serving_are_replaced_for_ever_not_given_up_on(control_address):
    """A request that kills its worker is not a worker that cannot start: 11 of them once took
    the pool down (exit 4) as a crash loop (found in review)."""
    script = lambda request: crash_after_ready_and_a_beat if request.slot == 0 else healthy  # noqa: E731
    async with running(control_address, script, workers=2, max_restarts=2) as pool:
        await pool.until(lambda: pool.pool.slots[0].generation >= 8)
        assert pool.pool.state in (PoolState.READY, PoolState.DEGRADED) and pool.pool.failure is None
        assert pool.pool.slots[1].current is not None and pool.pool.slots[1].current.generation == 1


async def test_a_worker_that_never_becomes_ready_fails_the_start(control_address):
    async def never_ready(worker: FakeWorker) -> None:
        await worker.join()
        await worker.serve(ready=False)

    async with running(control_address, by_generation(s1g1=never_ready), ready_timeout=0.3) as pool:
        assert await pool.finished() == exits.ERROR
        assert pool.pool.failed_to_start
        (killed,) = [w for w in pool.spawner.spawned if w.killed]
        assert killed.slot == 1


async def test_a_process_the_system_refuses_while_the_pool_starts_is_tried_again(control_address):
    """It ended the pool at once: CreateProcess under Wine now and then fails with "Internal
    error" (WinError 1359), and a CI run lost a test to it."""
    async with running(control_address, by_generation(s0g1=Unspawnable(times=2))) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        assert [(w.slot, w.generation) for w in pool.spawner.spawned] == [(1, 1), (0, 1)]
        assert pool.pool.losses[0, "spawn"] == 2


async def test_a_process_the_system_always_refuses_fails_the_start_after_the_restart_budget(control_address):
    async with running(control_address, by_generation(s1g1=Unspawnable(times=math.inf)), max_restarts=2) as pool:
        assert await pool.finished() == exits.ERROR
        assert pool.pool.failed_to_start
        assert pool.pool.failure == "worker 1 could not be started 3 times: the pool is down"
        assert pool.pool.losses[1, "spawn"] == 3


async def test_a_silent_worker_is_killed_as_hung_and_replaced(control_address):
    async def hang(worker: FakeWorker) -> None:
        await worker.join()
        await worker.serve(heartbeats=False)

    async with running(control_address, by_generation(s0g1=hang), heartbeat_timeout=0.3) as pool:
        await pool.until(lambda: pool.pool.slots[0].generation == 2 and pool.pool.state is PoolState.READY)
        first = pool.spawner.spawned[0]
        assert first.killed
        assert pool.pool.slots[0].restarts.count == 1


async def test_a_worker_that_breaks_the_protocol_gets_an_error_and_is_replaced(control_address):
    async def garbage(worker: FakeWorker) -> None:
        await worker.join()
        await worker.send(Ready(worker.pid, []))
        assert worker.connection is not None
        worker.connection._writer.write(b"\x00\x00\x00\x01\xc1")
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):  # read the Error, killed or not
            worker.received.append(await worker.connection.receive())
        await anyio.sleep_forever()

    async with running(control_address, by_generation(s1g1=garbage)) as pool:
        await pool.until(lambda: pool.pool.slots[1].generation == 2 and pool.pool.state is PoolState.READY)
        hostile = pool.spawner.spawned[1]
        assert hostile.killed
        (reply,) = hostile.received
        assert isinstance(reply, Error) and reply.code == Error.PROTOCOL


async def test_stop_during_start_up_ends_the_unready_workers_at_once(control_address):
    async def slow(worker: FakeWorker) -> None:
        await worker.join()
        await worker.serve(ready=False)  # loading for ever, but it answers Stop

    async def deaf(worker: FakeWorker) -> None:
        await anyio.sleep_forever()  # never even connects

    script = by_generation(s0g1=slow, s1g1=deaf)
    async with running(control_address, script) as pool:
        await pool.until(lambda: pool.pool.slots[0].current is not None and pool.pool.slots[0].current.channel)
        with anyio.fail_after(2):  # far below grace (1 s) + exit margin (1 s) + ...
            reply = await client.stop(control_address, 30.0)
        assert reply.clean  # nothing was in flight: killing an unready worker loses nothing
        assert {w.slot: w.state for w in reply.workers} == {0: "stopped", 1: "killed"}
    assert await pool.finished() == exits.OK


async def test_a_stale_or_bad_statistics_report_never_lowers_the_counters(control_address):
    snapshot = {"fake": {"inference_count": 10}}

    async def reporter(worker: FakeWorker) -> None:
        await worker.join()
        await worker.send(StatsReport(0, {"stats": snapshot}, seq=5))
        await worker.send(StatsReport(0, {"stats": {"fake": {"inference_count": 3}}}, seq=4))  # late
        await worker.send(StatsReport(0, {"stats": {"fake": {"inference_count": float("inf")}}}, seq=6))  # bad
        await worker.serve(stats=snapshot)

    async with running(control_address, by_generation(s0g1=reporter), workers=1) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        totals = await pool.pool.counters.pool_stats()
        assert totals == {"fake": {"inference_count": 10}}


async def test_concurrent_statistics_requests_share_one_fan_out(control_address):
    async with running(control_address, by_generation()) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        async with anyio.create_task_group() as task_group:
            for _ in range(10):
                task_group.start_soon(pool.pool.counters.pool_stats)
        asked = [sum(isinstance(m, StatsRequest) for m in w.received) for w in pool.spawner.spawned]
        assert asked == [1, 1]


async def test_a_hello_for_a_worker_the_pool_did_not_spawn_is_refused(control_address):
    async with running(control_address, by_generation()) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        impostor = pool.spawner.spawned[0]
        async with await ipc.connect(control_address) as connection:
            hello = Hello(ipc.PROTOCOL_VERSION, "worker", impostor.pid, 0, 1, handshake.new_nonce())  # joined already
            with pytest.raises(ipc.RefusedError) as refused:
                await handshake.greet(connection, hello, keys.read_key(control_address))
        assert refused.value.code == Error.UNKNOWN_WORKER
        assert pool.pool.state is PoolState.READY


async def test_a_client_without_the_pools_key_is_refused(control_address, tmp_path):
    async with running(control_address, by_generation()) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        async with await ipc.connect(control_address) as connection:
            hello = Hello(ipc.PROTOCOL_VERSION, "client", 1, nonce=handshake.new_nonce())
            with pytest.raises(ipc.AuthenticationError, match="could not prove it holds this pool's key"):
                await handshake.greet(connection, hello, b"\0" * 32)  # the supervisor's proof fails our check
        async with await ipc.connect(control_address) as connection:
            # A client that skips the check and answers the challenge with a made-up proof.
            await connection.send(Hello(ipc.PROTOCOL_VERSION, "client", 1, nonce=handshake.new_nonce()))
            assert isinstance(await connection.receive(), Challenge)
            await connection.send(Proof(b"\0" * 32))
            refusal = await connection.receive()
            assert isinstance(refusal, Error) and refusal.code == Error.FORBIDDEN
            with pytest.raises(ipc.ConnectionClosedError):
                await connection.receive()
        assert (await client.status(control_address)).state == "ready"


async def test_the_pools_exit_kills_and_reaps_everything_whatever_cancelled_it(control_address):
    settings = Settings(PoolSettings(workers=3), WorkerSettings(), {})
    listener = await ipc.listen(control_address)
    key = keys.create_key(control_address)
    try:
        async with anyio.create_task_group() as task_group:
            spawner = FakeSpawner(task_group, by_generation())
            with anyio.move_on_after(0.5):
                async with open_pool(settings, spawner, control_address, TIMEOUTS) as pool:
                    await anyio.sleep_forever()  # cancelled from outside, mid-start
            assert len(spawner.spawned) == 3
            assert not spawner.running()
            assert all(w.killed for w in spawner.spawned)
            assert not pool.processes() or all(not p.running for p in pool.processes())
    finally:
        await listener.aclose()
        keys.remove_key(control_address, key)


async def test_a_large_pool_answers_while_it_spawns(control_address):
    """512 workers were spawned in one go on the event loop: for as long as that took nobody
    was served, not the first workers' Hellos nor a `supervisor stop` (found in review).
    The test ends once a first worker is ready, not when all are: bringing 300 fake workers to
    ready in one process missed the 20 s deadline when four copies ran at once on 2 cores (load
    average 17-21), and under Wine at a load average of 23 even 100 did (their handshakes time out
    and are retried); what is tested is being served while spawning, not how fast 300 start."""
    workers = 300
    async with running(
        control_address, by_generation(), workers=workers, spawn_cost=0.005, heartbeat_timeout=10.0
    ) as pool:
        with anyio.fail_after(DEADLINE):
            await pool.supervisor.opened.wait()
            reply = await client.status(control_address)
        assert len(pool.spawner.spawned) < workers  # answered while the pool was still spawning
        assert reply.state == PoolState.STARTING.value
        await pool.until(lambda: any(slot.serving for slot in pool.pool.slots))  # a first Hello served
    # Leaving stops the pool mid-start: the stop is served too (the other test counts its spawns).


async def test_a_stop_while_a_large_pool_spawns_spawns_no_more(control_address):
    workers = 300
    async with running(
        control_address, by_generation(), workers=workers, spawn_cost=0.005, heartbeat_timeout=10.0
    ) as pool:
        await pool.until(lambda: len(pool.spawner.spawned) >= 10)
        pool.supervisor.request_stop()
        assert await pool.finished() == exits.OK
        assert len(pool.spawner.spawned) < workers
