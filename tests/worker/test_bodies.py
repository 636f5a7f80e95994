"""Request bodies under load, in-process: what a worker reads into memory at once is bounded
whatever the number of clients, small requests do not queue behind large ones, and health
answers throughout."""

from __future__ import annotations

import json

import anyio
import anyio.to_thread
import numpy as np
import pytest

from tests.models import HeldModel, RowSumModel
from worker.api import InferenceApp, ServingState
from worker.api.bodies import ByteBudget

from .asgi import call

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: What the tests expect of worker.api.bodies.SMALL_BODIES, named here so that the test of the
#: old code (which has no such budget) reads the same.
SMALL_BODIES = 64 * MiB
RAW = {"Inference-Header-Content-Length": "0"}  # the whole body is the input: no decoding cost


def rows(size: int) -> bytes:
    """A raw FP32 body of ``size`` bytes: rows of 64 ones."""
    return np.ones(size // 4, dtype="<f4").tobytes()


async def calls(model: HeldModel, count: int) -> None:
    """Until ``count`` predicts have begun (30 s at most), waited for in a thread of its own:
    the model may hold every thread of anyio's default limiter."""
    began = await anyio.to_thread.run_sync(model.wait_for_calls, count, limiter=anyio.CapacityLimiter(1))
    assert began, f"{model.calls} predicts began, not {count}"


async def test_concurrent_1_mib_bodies_are_read_no_more_than_the_budget_at_once():
    """2,000 clients sending 1 MiB each had all their bodies read and held at once: only the
    bytes past a body's first MiB counted against any budget."""
    model = HeldModel("held")
    app = InferenceApp([model], ServingState())
    body = rows(MiB)
    clients = 2 * SMALL_BODIES // len(body)  # twice what fits
    threads = anyio.to_thread.current_default_thread_limiter().total_tokens
    read = finished = 0
    statuses: list[int] = []

    def on_receive(piece: bytes, more: bool) -> None:
        nonlocal read, finished
        read += len(piece)
        finished += not more

    async def client() -> None:
        path = "/v2/models/held/infer"
        headers = {**RAW, "Content-Length": str(len(body))}
        statuses.append((await call(app, "POST", path, body, headers, chunk=64 * 1024, on_receive=on_receive)).status)

    async with anyio.create_task_group() as task_group:
        for _ in range(clients):
            task_group.start_soon(client)
        try:
            fit = SMALL_BODIES // len(body)
            await calls(model, min(fit, threads))
            await anyio.wait_all_tasks_blocked()  # every client as far as it can get
            assert read <= SMALL_BODIES, f"{read / MiB:.0f} MiB read at once"
            assert finished == fit and model.calls == min(fit, threads)
            assert (await call(app, "GET", "/v2/health/ready")).status == 200
        finally:
            model.release.set()  # before the task group waits for the clients
    assert statuses == [200] * clients
    assert app.bodies.small.taken == app.bodies.large.taken == 0


async def test_small_requests_and_health_go_through_while_large_bodies_hold_the_large_budget():
    """Large bodies wait for the large budget holding their first MiB of the small one, at most
    half of it: requests of a few KB, of known length or not, never queue behind them however
    many there are."""
    held, total = HeldModel("held"), RowSumModel("sum")
    app = InferenceApp([held, total], ServingState(), max_body_size=8 * MiB)
    large = rows(2 * MiB)
    # Each holds 1 MiB of the large budget (8 MiB) and 1 MiB of the small one: 8 in the model,
    # and more waiting for the large budget than half the small one can hold.
    clients = 8 + SMALL_BODIES // MiB
    statuses: list[int] = []

    async def client() -> None:
        headers = {**RAW, "Content-Length": str(len(large))}
        statuses.append((await call(app, "POST", "/v2/models/held/infer", large, headers, chunk=256 * 1024)).status)

    small = rows(4 * 1024)  # 16 rows
    answers = []

    async def small_client(length: bool) -> None:
        headers = {**RAW, "Content-Length": str(len(small))} if length else RAW  # else chunked, say
        answers.append(await call(app, "POST", "/v2/models/sum/infer", small, headers))

    async with anyio.create_task_group() as task_group:
        for _ in range(clients):
            task_group.start_soon(client)
        try:
            await calls(held, 8)  # the large budget's bodies in the model
            await anyio.wait_all_tasks_blocked()  # the others waiting for the large budget or the small one
            assert app.bodies.small.taken == SMALL_BODIES // 2
            with anyio.fail_after(30):
                async with anyio.create_task_group() as smalls:
                    for i in range(100):
                        smalls.start_soon(small_client, i % 2 == 0)
                assert (await call(app, "GET", "/v2/health/live")).status == 200
            assert [a.status for a in answers] == [200] * 100
            header = answers[0].body[: int(answers[0].headers["inference-header-content-length"])]
            assert json.loads(header)["outputs"][0]["shape"] == [16, 1]
            assert held.calls == 8  # the large ones were held all along
        finally:
            held.release.set()  # before the task group waits for the clients
    assert statuses == [200] * clients
    assert app.bodies.small.taken == app.bodies.large.taken == 0


async def test_a_budget_serves_waiters_in_turn():
    """A taker that fits waits while an earlier one does not: a MiB is not passed forever by a
    stream of KBs."""
    budget = ByteBudget(10)
    assert await budget.take(8) == 8
    served: list[str] = []

    async def taker(amount: int, name: str) -> None:
        await budget.take(amount)
        served.append(name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(taker, 5, "first")
            await anyio.wait_all_tasks_blocked()
            for name in ("second", "third"):
                task_group.start_soon(taker, 1, name)
            await anyio.wait_all_tasks_blocked()
            assert served == [] and budget.taken == 8  # they would fit, but it is not their turn
            budget.give_back(8)
    assert served == ["first", "second", "third"] and budget.taken == 7


async def test_a_budget_ceiling_holds_back_only_its_own_waiters():
    budget = ByteBudget(10)
    assert await budget.take(4, within=5) == 4
    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(budget.take, 3, 5)  # over its ceiling: it waits
            await anyio.wait_all_tasks_blocked()
            assert await budget.take(3) == 3  # under the whole budget, nobody before it: at once
            assert budget.taken == 7
            budget.give_back(4)  # 3 + 3 is over its ceiling of 5: it still waits
            await anyio.wait_all_tasks_blocked()
            assert budget.taken == 3
            budget.give_back(3)
    assert budget.taken == 3


async def test_a_cancelled_waiter_takes_nothing_and_holds_up_nobody():
    budget = ByteBudget(10)
    assert await budget.take(10) == 10
    with anyio.fail_after(10):
        async with anyio.create_task_group() as gone:
            gone.start_soon(budget.take, 8)  # first in turn, then cancelled
            await anyio.wait_all_tasks_blocked()
            gone.cancel_scope.cancel()
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(budget.take, 9)
            await anyio.wait_all_tasks_blocked()
            budget.give_back(10)
    assert budget.taken == 9
