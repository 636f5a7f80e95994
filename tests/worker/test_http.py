"""worker.http in-process: both servers on a real socket, and the uvicorn server's cut-off."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import anyio
import anyio.to_thread
import pytest

from ipc.contract.settings import WorkerSettings
from tests.models import HeldModel
from worker import http
from worker.api import InferenceApp, ServingState

pytestmark = pytest.mark.anyio

ROWS = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 64}]})


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("server", ["hypercorn", "uvicorn"])
async def test_a_request_the_grace_period_cuts_off_answers_503_and_nothing_is_logged(server, caplog):
    """uvicorn logged each cut-off request as a crash, with its traceback, until its cancellation
    was caught; hypercorn is here as the reference."""
    if server == "uvicorn":
        pytest.importorskip("uvicorn", reason="the uvicorn extra is not installed")
    model = HeldModel("held")
    app = InferenceApp([model], ServingState())
    shutdown = anyio.Event()
    request = f"POST /v2/models/held/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(ROWS)}\r\n\r\n{ROWS}"
    caplog.set_level(logging.INFO)
    with listening() as sock, anyio.fail_after(30):
        port = sock.getsockname()[1]
        try:
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(http.serve, app, WorkerSettings(http=server), sock, shutdown.wait, lambda: 0.0)
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    await client.send(request.encode())
                    assert await anyio.to_thread.run_sync(model.entered.wait, 10)
                    shutdown.set()
                    answer = b""
                    try:
                        while True:
                            answer += await client.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        pass
        finally:
            model.release.set()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer
    assert json.loads(body) == {"error": "the worker stopped before this request finished"}
    assert app.state.dropped == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_the_uvicorn_cut_off_ends_only_its_own_cancellation():
    """A request task cancelled by someone else too (the loop's shutdown, say) while it was cut
    off stays cancelled: catching every CancelledError while cutting off swallowed theirs."""
    pytest.importorskip("uvicorn", reason="the uvicorn extra is not installed")
    from worker.http.uvicorn_server import UvicornServer

    inside = 0
    all_inside = anyio.Event()

    async def app(scope, receive, send):
        nonlocal inside
        inside += 1
        if inside == 2:
            all_inside.set()
        await anyio.sleep_forever()

    server = UvicornServer(app, WorkerSettings(http="uvicorn"), {})
    loop = asyncio.get_running_loop()
    cut_off, also_foreign = (loop.create_task(server.config.app({}, None, None)) for _ in range(2))
    server.state.tasks.update({cut_off, also_foreign})
    with anyio.fail_after(10):
        await all_inside.wait()
        also_foreign.cancel()
        await server.cut_off()
    assert cut_off.done() and not cut_off.cancelled() and cut_off.exception() is None
    assert also_foreign.cancelled()


async def test_serve_leaves_no_task_of_its_own_behind_when_cancelled():
    """The app's lifespan ran in a task of the loop's, not of serve()'s: cancelled while its app
    finished its shutdown (here: never), serve() returned and left the lifespan running."""
    shutdown_began = anyio.Event()

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.complete"})
        assert (await receive())["type"] == "lifespan.shutdown"
        shutdown_began.set()
        await anyio.sleep_forever()

    before = asyncio.all_tasks()
    with listening() as sock, anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(http.serve, app, WorkerSettings(), sock, anyio.lowlevel.checkpoint, lambda: 0.0)
            await shutdown_began.wait()
            task_group.cancel_scope.cancel()
    left = {task for task in asyncio.all_tasks() - before if not task.done()}
    assert not left, left
