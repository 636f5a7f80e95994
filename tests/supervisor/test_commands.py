"""The command table, and the pool's worker channel, with no socket: connection pairs in memory
(ipc.memory) in place of the transport, a real pool with fake workers behind them."""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager

import anyio
import pytest

import ipc
from ipc import memory
from ipc.messages import (
    Error,
    Heartbeat,
    PingReply,
    PingRequest,
    Progress,
    ReloadRequest,
    ScaleRequest,
    StatusReply,
    StatusRequest,
    Stop,
    StopReply,
    StopRequest,
)
from supervisor import cli, client
from supervisor.commands import COMMANDS, Context
from supervisor.control import ControlServer
from supervisor.lifecycle import PoolState

from .fakes import TIMEOUTS, FakeWorker, by_generation, running

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def control_over_memory(pool):
    """A client's end of a control connection whose server end is the real control server's
    request loop, over a pair in memory."""

    @asynccontextmanager
    async def stop(grace):
        yield StopReply([], clean=True)

    context = Context(pool, "http://127.0.0.1:1", 0.0, stop)
    server = ControlServer(None, b"", context, TIMEOUTS)  # type: ignore[arg-type]  # no listener: no admission
    theirs, ours = memory.pair()

    async def serve() -> None:
        async with theirs:
            try:
                await server._serve_client(theirs)
            except ipc.ConnectionClosedError:
                pass  # the client left: the control server's _handle takes that in its stride

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(serve)
        yield ours
        await ours.aclose()


async def answers(connection, request) -> list:
    await connection.send(request)
    replies = []
    with anyio.fail_after(10):
        while not replies or isinstance(replies[-1], Progress):
            replies.append(await connection.receive())
    return replies


EXAMPLES = {
    StatusRequest: StatusRequest(),
    PingRequest: PingRequest(),
    ReloadRequest: ReloadRequest(),
    ScaleRequest: ScaleRequest(3),
    StopRequest: StopRequest(5.0),
}


async def test_every_command_answers_its_request_with_its_reply(control_address):
    assert set(EXAMPLES) == {command.request for command in COMMANDS}, "a new command needs an example here"
    async with running(control_address, by_generation()) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        async with control_over_memory(pool.pool) as connection:
            for command in COMMANDS:
                if command.request is StopRequest:
                    continue  # last: it ends the connection
                *progress, reply = await answers(connection, EXAMPLES[command.request])
                assert isinstance(reply, command.reply), (command.name, reply)
                assert all(isinstance(line, Progress) for line in progress)
            (reply,) = await answers(connection, StopRequest(5.0))
            assert isinstance(reply, StopReply)
            with pytest.raises(ipc.ConnectionClosedError):  # the pool has stopped: the server hung up
                await connection.receive()


async def test_a_request_no_command_answers_and_a_bad_value_are_refused_and_the_connection_goes_on(control_address):
    async with running(control_address, by_generation()) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        async with control_over_memory(pool.pool) as connection:
            (refusal,) = await answers(connection, Heartbeat(0, 0.0))
            assert isinstance(refusal, Error) and refusal.message == "a client may not send heartbeat"
            (refusal,) = await answers(connection, StopRequest(-1.0))
            assert isinstance(refusal, Error) and refusal.message.startswith("grace must be")
            (reply,) = await answers(connection, PingRequest())
            assert isinstance(reply, PingReply) and reply.state == "ready"


def test_the_command_line_has_a_sub_command_for_every_command():
    parser = cli.build_parser()
    (choices,) = [action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert {command.name for command in COMMANDS} <= set(choices)


async def test_a_client_that_leaves_mid_reload_does_not_cancel_it_and_status_shows_it(control_address):
    release = anyio.Event()

    async def loading(worker: FakeWorker) -> None:
        configure = await worker.join()
        with anyio.move_on_after(30):  # alive (beating), loading until released
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(worker.beat, configure.settings.heartbeat_interval)
                await release.wait()
                task_group.cancel_scope.cancel()
        await worker.serve()

    async with running(control_address, by_generation(g2=loading), workers=2) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        theirs, ours = memory.pair()
        context = Context(pool.pool, "http://127.0.0.1:1", 0.0, None)  # type: ignore[arg-type]
        server = ControlServer(None, b"", context, TIMEOUTS)  # type: ignore[arg-type]
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(server._serve_client, theirs)
            await ours.send(ReloadRequest())
            await pool.until(lambda: pool.pool.slots[0].incoming is not None)
            await ours.aclose()
            task_group.cancel_scope.cancel()  # the client's connection and its task are gone
        # The client is gone; the reload goes on, and says where it is.
        async with control_over_memory(pool.pool) as connection:
            (status,) = await answers(connection, StatusRequest())
        assert isinstance(status, StatusReply) and status.state == "reloading"
        assert status.operation == "reload under way"
        release.set()
        await pool.until(lambda: pool.pool.state is PoolState.READY and pool.pool.operation is None)
        assert [slot.current.generation for slot in pool.pool.slots] == [2, 2]


async def test_the_pools_channel_in_memory(control_address):
    """A worker adopted over a pair in memory is configured, reports ready, and is told to stop:
    the channel needs no socket."""
    opened = anyio.Event()
    holder = {}

    async def in_memory(worker: FakeWorker) -> None:
        await opened.wait()
        await worker.join_in_memory(holder["pool"])
        await worker.serve()

    async with running(control_address, by_generation(s1g1=in_memory)) as pool:
        await pool.supervisor.opened.wait()
        holder["pool"] = pool.pool
        opened.set()
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        worker = pool.spawner.spawned[1]
        assert worker.configure is not None and worker.configure.settings.heartbeat_interval == 0.25
        reply = await client.stop(pool.control, None)
        assert reply.clean and isinstance(worker.received[-1], Stop)
