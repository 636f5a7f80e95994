"""What a worker sends of its counters: only the entries that changed, in reports that fit a
frame, the last one answering the supervisor's request."""

from __future__ import annotations

import anyio
import pytest

from ipc import memory
from ipc.codec import encode
from ipc.messages import COUNTERS_BUDGET, StatsReport, StatsRequest, Stop
from worker.api import InferenceApp, ServingState
from worker.api.counters import Changes
from worker.link import SupervisorLink
from worker.models.mlp import demo_model

from .asgi import call
from .test_api import infer_json

pytestmark = pytest.mark.anyio


async def test_an_inference_changes_its_models_entries_and_nothing_else():
    app = InferenceApp([demo_model()], ServingState())
    assert not app.changes
    assert (await call(app, "POST", "/v2/models/mlp/infer", infer_json())).status == 200
    changed = app.changes.take()
    assert changed == {
        "stats": {"mlp/1"},
        "requests": {"mlp|200"},
        "latency": {"mlp"},
        "rows": {"mlp"},
        "queue": {"mlp"},
    }
    values = app.counters(changed)
    assert values["stats"]["mlp/1"]["execution_count"] == 1 and values["requests"] == {"mlp|200": 1}
    assert not app.changes  # taken: nothing more to send until something moves
    assert (await call(app, "GET", "/v2/health/ready")).status == 200
    assert app.changes.take() == {"requests": {"-|200"}, "latency": {"-"}}


async def test_a_flush_sends_what_changed_in_bounded_reports_and_answers_the_request_last():
    changes = Changes()
    entries = {f"m{i}/1": {"inference_count": i, "pad": "x" * 200} for i in range(5_000)}
    for key in entries:
        changes.mark("stats", key)
    ours, theirs = memory.pair()
    link = SupervisorLink(ours)
    link.changed_counters = lambda: {s: {k: entries[k] for k in keys} for s, keys in changes.take().items()}
    reports: list[StatsReport] = []
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(link.serve, lambda stop: None)
        await theirs.send(StatsRequest(7))
        with anyio.fail_after(10):
            while not reports or not reports[-1].request_id:
                report = await theirs.receive()
                assert isinstance(report, StatsReport)
                reports.append(report)
        assert len(reports) > 2 and all(len(encode(r)) <= 2 * COUNTERS_BUDGET for r in reports)
        assert [r.request_id for r in reports] == [0] * (len(reports) - 1) + [7]
        assert {k: v for r in reports for k, v in r.counters["stats"].items()} == entries
        await theirs.send(StatsRequest(8))  # nothing changed since: one empty report answers it
        with anyio.fail_after(10):
            assert await theirs.receive() == StatsReport(8, {}, reports[-1].seq + 1)
        await theirs.send(Stop(0.0))
        await theirs.aclose()
