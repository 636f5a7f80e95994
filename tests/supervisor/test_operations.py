"""Reload, scale and recycling in-process: a real supervisor and control channel, fake workers."""

from __future__ import annotations

import math

import anyio
import pytest

from ipc.messages import OperationReply, Ready, ReloadRequest, ScaleRequest, Stop
from supervisor import client
from supervisor.lifecycle import PoolState, State

from .fakes import FakeWorker, Unspawnable, by_generation, healthy, running
from .test_pool import crash_after_ready, fail_to_load

pytestmark = pytest.mark.anyio


async def operate(control: str, request) -> tuple[OperationReply, list[str]]:
    lines: list[str] = []
    reply = await client.operate(control, request, lines.append)
    return reply, lines


async def test_a_reload_replaces_each_slot_and_the_new_one_is_ready_before_the_old_drains(control_address):
    async with running(control_address, by_generation(), workers=3) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, lines = await operate(control_address, ReloadRequest())
        assert reply.outcome == OperationReply.DONE and len(lines) == 3
        assert [(w.slot, w.generation) for w in reply.workers] == [(0, 2), (1, 2), (2, 2)]
        by_slot = {slot: [w for w in pool.spawner.spawned if w.slot == slot] for slot in range(3)}
        for slot, (old, new) in by_slot.items():
            assert new.ready_at is not None and old.stopped_at is not None
            assert new.ready_at <= old.stopped_at, f"slot {slot}: the old worker drained before the new one was ready"
        # One slot at a time: each slot's new worker was spawned after the previous slot's was ready.
        assert by_slot[0][1].ready_at <= by_slot[1][1].ready_at <= by_slot[2][1].ready_at
        assert all(w.exited.is_set() for slot in by_slot.values() for w in slot[:1])
        assert pool.pool.state is PoolState.READY


async def fail_to_start(worker: FakeWorker) -> None:
    await worker.join()
    worker.exit(1)


async def test_a_reload_tries_once_more_a_new_worker_lost_without_a_word(control_address):
    """As one starting with the pool would be (found in review: a kill of the new worker stopped
    the whole reload)."""
    async with running(control_address, by_generation(s1g2=fail_to_start), workers=2) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, _ = await operate(control_address, ReloadRequest())
        assert reply.outcome == OperationReply.DONE, reply.message
        assert [(w.slot, w.generation) for w in reply.workers] == [(0, 2), (1, 3)]


async def test_a_new_worker_that_says_why_it_cannot_start_is_not_tried_again(control_address):
    async with running(control_address, by_generation(s0g2=fail_to_load), workers=2) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, _ = await operate(control_address, ReloadRequest())
        assert reply.outcome == OperationReply.FAILED
        assert "(weights vanished)" in reply.message
        assert [w.generation for w in pool.spawner.spawned if w.slot == 0] == [1, 2]


async def test_a_reload_stops_at_a_new_worker_that_cannot_start(control_address):
    async with running(control_address, by_generation(s1g2=fail_to_start, s1g3=fail_to_start), workers=3) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, lines = await operate(control_address, ReloadRequest())
        assert reply.outcome == OperationReply.FAILED
        assert reply.message.startswith("worker 1: the new worker did not become ready (it exited with code 1")
        assert len(lines) == 1  # slot 0 was reloaded, then slot 1 failed: slot 2 was not touched
        assert [(w.slot, w.generation, w.state) for w in reply.workers] == [
            (0, 2, "ready"),
            (1, 1, "ready"),
            (2, 1, "ready"),
        ]
        assert pool.pool.state is PoolState.READY
        assert pool.pool.slots[1].restarts.count == 0  # a failed replacement is not a loss


async def test_a_reload_tries_again_when_the_system_refuses_a_process_for_a_moment(control_address):
    async with running(control_address, by_generation(s1g2=Unspawnable(times=2)), workers=2) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, _ = await operate(control_address, ReloadRequest())
        assert reply.outcome == OperationReply.DONE, reply.message
        assert [(w.slot, w.generation) for w in reply.workers] == [(0, 2), (1, 2)]
        assert pool.pool.losses[1, "spawn"] == 2


async def test_a_reload_stops_at_a_slot_whose_process_the_system_keeps_refusing(control_address):
    async with running(control_address, by_generation(s0g2=Unspawnable(times=math.inf)), workers=2) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, _ = await operate(control_address, ReloadRequest())
        assert reply.outcome == OperationReply.FAILED
        assert "worker 0: the new worker did not become ready (the system refused its process" in reply.message
        assert [(w.slot, w.generation, w.state) for w in reply.workers] == [(0, 1, "ready"), (1, 1, "ready")]
        assert pool.pool.state is PoolState.READY


async def dies_while_draining(worker: FakeWorker) -> None:
    await worker.join()
    await worker.send(Ready(worker.pid, ["fake"]))
    assert worker.connection is not None and worker.configure is not None
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(worker.beat, worker.configure.settings.heartbeat_interval)
        async for message in worker.connection:
            if isinstance(message, Stop):
                worker.exit(-9)  # as kill -9 in the middle of its drain


async def test_a_reload_says_which_old_worker_did_not_drain(control_address, caplog):
    """It said "reloaded 2 workers", and the log nothing, while that worker's requests were lost
    (found in review)."""
    async with running(control_address, by_generation(s1g1=dies_while_draining), workers=2) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, _ = await operate(control_address, ReloadRequest())
        assert reply.outcome == OperationReply.DONE
        old = pool.spawner.spawned[1]
        assert reply.message == f"reloaded 2 workers; worker 1's old process pid {old.pid} exited with code -9"
    assert f"worker 1 (pid {old.pid}) exited with code -9 while draining away" in caplog.text


def loading_until(release: anyio.Event):
    """A worker that joins, then loads until ``release`` is set, then serves."""

    async def script(worker: FakeWorker) -> None:
        await worker.join()
        await release.wait()
        await worker.serve()

    return script


async def test_one_operation_at_a_time_and_stop_wins(control_address):
    release = anyio.Event()
    async with running(control_address, by_generation(g2=loading_until(release)), workers=2) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        async with anyio.create_task_group() as task_group:
            outcome: list[OperationReply] = []

            async def first() -> None:
                outcome.append((await operate(control_address, ReloadRequest()))[0])

            task_group.start_soon(first)
            await pool.until(lambda: pool.pool.state is PoolState.RELOADING)
            second, _ = await operate(control_address, ReloadRequest())
            assert second.outcome == OperationReply.REFUSED
            assert second.message == "cannot reload while the pool is reloading"
            scale, _ = await operate(control_address, ScaleRequest(3))
            assert scale.outcome == OperationReply.REFUSED
            stop = await client.stop(control_address, 1.0)
            assert stop.clean
        assert outcome[0].outcome == OperationReply.INTERRUPTED
        assert outcome[0].message == "the pool began to stop after 0 of 2 workers"


async def test_scale_up_and_down(control_address):
    async with running(control_address, by_generation(), workers=1) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, lines = await operate(control_address, ScaleRequest(3))
        assert reply.outcome == OperationReply.DONE, reply.message
        assert lines == [f"worker {i}: started (pid {pool.spawner.spawned[i].pid})" for i in (1, 2)]
        assert [w.slot for w in reply.workers] == [0, 1, 2]
        reply, lines = await operate(control_address, ScaleRequest(1))
        assert reply.outcome == OperationReply.DONE
        assert lines == [f"worker {i}: pid {pool.spawner.spawned[i].pid} drained and stopped" for i in (2, 1)]
        assert reply.message == "scaled from 3 to 1 workers (1 serving)"
        assert [w.slot for w in reply.workers] == [0]
        assert [w.exited.is_set() for w in pool.spawner.spawned] == [False, True, True]
        assert pool.pool.state is PoolState.READY


async def test_a_scale_whose_new_worker_cannot_start_leaves_the_pool_as_it_was(control_address):
    async with running(control_address, by_generation(s1g1=fail_to_start), workers=1) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, _ = await operate(control_address, ScaleRequest(2))
        assert reply.outcome == OperationReply.FAILED
        assert reply.message.startswith("worker 1 did not become ready")
        assert reply.message.endswith("the pool stays at 1 workers")
        assert len(pool.pool.slots) == 1 and pool.pool.state is PoolState.READY


async def test_a_scale_tries_again_when_the_system_refuses_a_process_for_a_moment(control_address):
    async with running(control_address, by_generation(s1g1=Unspawnable(times=2)), workers=1) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, _ = await operate(control_address, ScaleRequest(2))
        assert reply.outcome == OperationReply.DONE, reply.message
        assert [(w.slot, w.state) for w in reply.workers] == [(0, "ready"), (1, "ready")]


async def test_a_scale_the_system_keeps_refusing_fails_and_never_takes_the_pool_down(control_address):
    script = by_generation(s1g1=Unspawnable(times=math.inf))
    async with running(control_address, script, workers=1, max_restarts=1) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        reply, _ = await operate(control_address, ScaleRequest(2))
        assert reply.outcome == OperationReply.FAILED
        assert reply.message == "worker 1: the system refused its process (see the log); the pool stays at 1 workers"
        assert len(pool.pool.slots) == 1 and pool.pool.state is PoolState.READY


async def test_impossible_scales_are_refused(control_address):
    async with running(control_address, by_generation(), workers=1) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        for workers in (0, -3, 100_000):
            with pytest.raises(client.ControlError, match="workers must be"):
                await operate(control_address, ScaleRequest(workers))
        assert len(pool.pool.slots) == 1


async def test_a_worker_is_recycled_after_its_requests_with_its_replacement_ready_first(control_address):
    async def busy(worker: FakeWorker) -> None:
        worker.served = 10_000
        await healthy(worker)

    async with running(control_address, by_generation(s0g1=busy), workers=2, max_requests=100) as pool:
        await pool.until(lambda: pool.pool.slots[0].current is not None and pool.pool.slots[0].current.generation == 2)
        old, new = [w for w in pool.spawner.spawned if w.slot == 0]
        await pool.until(lambda: old.exited.is_set())
        assert new.ready_at is not None and old.stopped_at is not None and new.ready_at <= old.stopped_at
        assert pool.pool.slots[0].restarts.count == 0
        assert pool.pool.slots[1].generation == 1


async def test_the_old_worker_lost_during_its_replacement_hands_the_slot_to_the_new_one(control_address):
    release = anyio.Event()
    async with running(control_address, by_generation(s0g2=loading_until(release)), workers=1) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        async with anyio.create_task_group() as task_group:
            replies: list[OperationReply] = []

            async def reload() -> None:
                replies.append((await operate(control_address, ReloadRequest()))[0])

            task_group.start_soon(reload)
            await pool.until(lambda: pool.pool.slots[0].incoming is not None)
            pool.spawner.spawned[0].kill()  # the old worker dies while the new one loads
            await pool.until(lambda: pool.pool.slots[0].incoming is None)
            assert pool.pool.slots[0].current is not None and pool.pool.slots[0].current.generation == 2
            release.set()
        assert replies[0].outcome == OperationReply.DONE
        assert pool.pool.slots[0].generation == 2  # no third process: the incoming one took over
        assert pool.pool.slots[0].restarts.count == 1


async def test_a_recycling_whose_replacement_failed_is_tried_again(control_address):
    """Once a replacement failed, recycling was off for good: a leaking worker grew without end
    (found in review)."""

    async def bloated(worker: FakeWorker) -> None:
        worker.rss = 10 * 2**30
        await healthy(worker)

    script = by_generation(s0g1=bloated, s0g2=fail_to_start)  # the first replacement fails
    async with running(control_address, script, workers=1, max_worker_memory=100) as pool:
        await pool.until(lambda: pool.pool.slots[0].current is not None and pool.pool.slots[0].current.generation == 3)
        assert [w.generation for w in pool.spawner.spawned] == [1, 2, 3]
        await pool.until(lambda: pool.spawner.spawned[0].stopped_at is not None)  # the bloated one retired


async def test_scaling_down_says_how_each_worker_ended(control_address):
    """Every removed worker was reported 'drained and stopped', even one killed because it
    never became ready (found in review)."""

    async def stuck_loading(worker: FakeWorker) -> None:
        configure = await worker.join()
        await worker.beat(configure.settings.heartbeat_interval)  # alive, deaf to Stop, never ready

    script = by_generation(s1g1=crash_after_ready, s1g2=stuck_loading)
    async with running(control_address, script, workers=2) as pool:
        await pool.until(lambda: pool.pool.slots[0].serving)
        loading = pool.pool.slots[1]
        await pool.until(lambda: loading.generation == 2 and loading.current.state is State.CONNECTED)
        reply, lines = await operate(control_address, ScaleRequest(1))
        assert reply.outcome == OperationReply.DONE, reply.message
        stuck = pool.spawner.spawned[2]
        assert lines == [f"worker 1: pid {stuck.pid} killed (it was retired before it was ready)"]
        assert reply.message == "scaled from 2 to 1 workers (1 serving)"
