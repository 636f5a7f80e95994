"""Dynamic batching in-process: concurrent requests joined into one model call, each answer
exactly its own rows, a bad request failing alone, Triton's counts, and a drain that flushes."""

from __future__ import annotations

import json
import threading

import anyio
import numpy as np
import pytest

from worker.api import InferenceApp, ServingState
from worker.api.batching import delays
from worker.models import Model, ModelError, TensorSpec

from .asgi import call

pytestmark = pytest.mark.anyio


class Doubler(Model):
    """Doubles its input; records the rows of every call; refuses a row holding -1."""

    name = "double"
    inputs = (TensorSpec("INPUT0", "FP32", (-1, 4)),)
    outputs = (TensorSpec("OUTPUT0", "FP32", (-1, 4)), TensorSpec("OUTPUT1", "INT32", (-1, 1)))
    max_batch_size = 8

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def predict(self, inputs):
        x = np.asarray(inputs["INPUT0"])
        with self._lock:
            self.calls.append(x.shape[0])
        if (x == -1).any():
            raise ModelError("no -1, please")
        return {"OUTPUT0": x * 2, "OUTPUT1": np.arange(x.shape[0], dtype=np.int32).reshape(-1, 1)}


class Pair(Model):
    """Two batched inputs: the row-wise sums of A and B."""

    name = "pair"
    inputs = (TensorSpec("A", "FP32", (-1, 3)), TensorSpec("B", "FP32", (-1, 3)))
    outputs = (TensorSpec("S", "FP32", (-1, 3)),)
    max_batch_size = 16

    def predict(self, inputs):
        return {"S": np.asarray(inputs["A"]) + np.asarray(inputs["B"])}


class DropsARow(Doubler):
    name = "drops"

    def predict(self, inputs):
        return {name: value[:-1] for name, value in super().predict(inputs).items()}


class Other(Doubler):
    """A model that does not batch: requests to it are in flight but never join a batch."""

    name = "other"
    max_batch_size = 0
    inputs = (TensorSpec("INPUT0", "FP32", (1, 4)),)
    outputs = (TensorSpec("OUTPUT0", "FP32", (1, 4)), TensorSpec("OUTPUT1", "INT32", (1, 1)))


def request(rows: np.ndarray, **extra) -> bytes:
    entry = {"name": "INPUT0", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
    return json.dumps({"inputs": [entry], **extra}).encode()


def batching_app(model: Model, delay: float = 0.05) -> InferenceApp:
    return InferenceApp([model], ServingState(), batch_delays={model.name: delay})


async def infer_all(app: InferenceApp, bodies: list[bytes], model: str = "double") -> list:
    responses: list = [None] * len(bodies)

    async def one(i: int) -> None:
        responses[i] = await call(app, "POST", f"/v2/models/{model}/infer", bodies[i])

    async with anyio.create_task_group() as group:
        for i in range(len(bodies)):
            group.start_soon(one, i)
    return responses


async def test_concurrent_requests_share_one_call_and_get_their_own_rows():
    model = Doubler()
    app = batching_app(model)
    inputs = [np.full((1 + i % 2, 4), i, dtype=np.float32) for i in range(6)]  # 9 rows in all
    responses = await infer_all(app, [request(x) for x in inputs])
    assert [r.status for r in responses] == [200] * 6
    for x, response in zip(inputs, responses, strict=True):
        out = {o["name"]: o for o in response.json()["outputs"]}
        assert out["OUTPUT0"]["shape"] == list(x.shape) and out["OUTPUT0"]["data"] == (x * 2).ravel().tolist()
        assert out["OUTPUT1"]["shape"] == [x.shape[0], 1]
    # 9 rows (1, 2, 1, 2, 1, 2), at most 8 a call: two calls, not six.
    assert model.calls == [7, 2]
    stats = (await call(app, "GET", "/v2/models/double/stats")).json()["model_stats"][0]
    assert stats["inference_count"] == 9 and stats["execution_count"] == 2
    assert stats["inference_stats"]["success"]["count"] == 6


async def test_the_model_configuration_says_it_is_batched():
    config = (await call(batching_app(Doubler(), delay=0.002), "GET", "/v2/models/double/config")).json()
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    plain = InferenceApp([Doubler()], ServingState())
    assert "dynamic_batching" not in (await call(plain, "GET", "/v2/models/double/config")).json()


async def test_a_bad_request_fails_alone_and_the_others_are_answered():
    model = Doubler()
    app = batching_app(model)
    good = [np.full((1, 4), i, dtype=np.float32) for i in range(3)]
    bodies = [request(good[0]), request(np.full((1, 4), -1, dtype=np.float32)), b"{not json", request(good[1])]
    bodies.append(request(good[2], outputs=[{"name": "OUTPUT1"}]))  # its own choice of outputs
    responses = await infer_all(app, bodies)
    assert [r.status for r in responses] == [200, 400, 400, 200, 200]
    assert "no -1, please" in responses[1].json()["error"]
    assert responses[0].json()["outputs"][0]["data"] == [0.0] * 4
    assert responses[3].json()["outputs"][0]["data"] == [2.0] * 4
    assert [o["name"] for o in responses[4].json()["outputs"]] == ["OUTPUT1"]
    assert model.calls[0] == 4  # joined first (the undecodable body never reached the model) ...
    assert sorted(model.calls[1:]) == [1, 1, 1, 1]  # ... then one by one, after the joined call failed


async def test_a_full_batch_runs_without_waiting_for_the_delay():
    model = Doubler()
    app = batching_app(model, delay=30.0)  # a delay no test could wait for
    with anyio.fail_after(10):
        responses = await infer_all(app, [request(np.ones((1, 4), dtype=np.float32)) for _ in range(8)])
    assert [r.status for r in responses] == [200] * 8 and model.calls == [8]


async def test_inputs_of_one_request_share_their_batch_dimension():
    app = batching_app(Pair())
    a, b = np.ones((2, 3), np.float32), np.ones((5, 3), np.float32)
    inputs = [
        {"name": "A", "datatype": "FP32", "shape": [2, 3], "data": a.ravel().tolist()},
        {"name": "B", "datatype": "FP32", "shape": [5, 3], "data": b.ravel().tolist()},
    ]
    response = await call(app, "POST", "/v2/models/pair/infer", json.dumps({"inputs": inputs}).encode())
    assert response.status == 400
    assert response.json()["error"] == "every input's first dimension is the batch and must be the same: 'A' 2, 'B' 5"


async def test_a_model_that_answers_the_wrong_number_of_rows_is_a_500_alone_or_joined():
    model = DropsARow()
    alone = await call(
        InferenceApp([model], ServingState()), "POST", "/v2/models/drops/infer", request(np.ones((2, 4)))
    )
    assert alone.status == 500 and "without one row per input row" in alone.json()["error"]
    joined = await infer_all(batching_app(model), [request(np.ones((2, 4))), request(np.ones((1, 4)))], "drops")
    assert [r.status for r in joined] == [500, 500]


async def straggler(
    app: InferenceApp, arrived: anyio.Event, release: anyio.Event, path: str = "/v2/models/double/infer"
) -> None:
    """A request whose body takes its time: in flight, and so one the batch may wait for."""
    sent = False

    async def receive():
        nonlocal sent
        arrived.set()
        await release.wait()
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": request(np.ones((1, 4), np.float32)), "more_body": False}

    async def send(message):
        pass

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)


async def test_a_batch_waiting_for_a_request_that_ends_elsewhere_runs_when_it_ends():
    model = Doubler()
    app = InferenceApp([model, Other()], ServingState(), batch_delays={"double": 30.0})
    arrived, release = anyio.Event(), anyio.Event()
    results: list = []

    async def one() -> None:
        results.append(await call(app, "POST", "/v2/models/double/infer", request(np.ones((1, 4), np.float32))))

    with anyio.fail_after(10):  # not the 30 s delay
        async with anyio.create_task_group() as group:
            group.start_soon(straggler, app, arrived, release, "/v2/models/other/infer")
            await arrived.wait()
            group.start_soon(one)
            await anyio.wait_all_tasks_blocked()
            assert model.calls == []  # the other request might still have joined
            release.set()  # it ends (with its own model): nobody is left to wait for
    assert [r.status for r in results] == [200] and model.calls == [1]


async def test_a_lone_request_does_not_wait_for_the_delay():
    model = Doubler()
    app = batching_app(model, delay=30.0)  # a delay no test could wait for
    with anyio.fail_after(10):  # nothing else is in flight: nobody could join it
        response = await call(app, "POST", "/v2/models/double/infer", request(np.ones((1, 4), np.float32)))
    assert response.status == 200 and model.calls == [1]


async def test_a_batch_waits_for_requests_in_flight_and_a_drain_flushes_it():
    model = Doubler()
    app = batching_app(model, delay=30.0)
    results: list = []

    answered = anyio.Event()

    async def one() -> None:
        results.append(await call(app, "POST", "/v2/models/double/infer", request(np.ones((1, 4), np.float32))))
        if len(results) == 2:
            answered.set()

    arrived, release = anyio.Event(), anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(straggler, app, arrived, release)
            await arrived.wait()  # its body is on its way: the batch waits for it...
            group.start_soon(one)
            group.start_soon(one)
            await anyio.wait_all_tasks_blocked()
            assert model.calls == []  # ... up to the delay
            app.flush_batches()  # a drain: what waits runs now
            await answered.wait()
            assert model.calls == [2] and [r.status for r in results] == [200, 200]
            release.set()
    assert model.calls == [2, 1]  # the straggler, after the drain, waited for nobody


async def test_binary_and_json_requests_join_and_each_gets_its_encoding():
    model = Doubler()
    app = batching_app(model)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    head = json.dumps(
        {
            "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": 32}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    responses: list = [None, None]

    async def binary() -> None:
        headers = {"Inference-Header-Content-Length": str(len(head))}
        responses[0] = await call(app, "POST", "/v2/models/double/infer", head + x.tobytes(), headers)

    async def plain() -> None:
        responses[1] = await call(app, "POST", "/v2/models/double/infer", request(x + 1))

    async with anyio.create_task_group() as group:
        group.start_soon(binary)
        group.start_soon(plain)
    assert model.calls == [4]
    assert responses[0].headers["content-type"] == "application/octet-stream"
    length = int(responses[0].headers["inference-header-content-length"])
    assert np.frombuffer(responses[0].body[length : length + 32], "<f4").tolist() == (x * 2).ravel().tolist()
    assert responses[1].json()["outputs"][0]["data"] == ((x + 1) * 2).ravel().tolist()


def test_delays_come_from_the_default_and_each_model():
    model = Doubler()
    assert delays([model], 0, []) == {}
    assert delays([model], 2, []) == {"double": 0.002}
    assert delays([model], 2, ["double=0"]) == {}
    assert delays([model], 0, ["double=5"]) == {"double": 0.005}
    with pytest.raises(ModelError, match="no model 'other' is served"):
        delays([model], 0, ["other=5"])
    unbatched = Doubler()
    unbatched.max_batch_size = 0
    assert delays([unbatched], 2, []) == {}
    with pytest.raises(ModelError, match="cannot batch"):
        delays([unbatched], 0, ["double=5"])


class Labeller(Model):
    """Labels each row with BYTES: b"ok\\x00" (a trailing NUL, kept), or, for a row holding 7, a
    ragged list the model should never return."""

    name = "labels"
    inputs = (TensorSpec("INPUT0", "FP32", (-1, 4)),)
    outputs = (TensorSpec("LABEL", "BYTES", (-1, 1)),)
    max_batch_size = 8

    def predict(self, inputs):
        x = np.asarray(inputs["INPUT0"])
        if (x == 7).any():
            return {"LABEL": [[b"ok"], [b"a", b"b"]][: x.shape[0]] + [[b"ok"]] * (x.shape[0] - 2)}
        return {"LABEL": [[b"ok\x00"] for _ in range(x.shape[0])]}


async def test_a_broken_answer_or_shape_fails_alone_in_a_batch():
    app = batching_app(Labeller())
    good = request(np.zeros((1, 4), np.float32))
    ragged = request(np.full((2, 4), 7, np.float32))
    empty_but_huge = json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [0, 2**62], "data": []}]}
    ).encode()
    responses = await infer_all(app, [good, ragged, empty_but_huge, good], model="labels")
    assert [r.status for r in responses] == [200, 500, 400, 200]
    assert responses[1].json() == {"error": "model 'labels' returned output 'LABEL' of shape [2], not [-1, 1]"}
    assert responses[2].json() == {"error": "input 'INPUT0': shape [0, 4611686018427387904] is too large"}
    # b"ok\x00" keeps its NUL (numpy's own strings would drop it); JSON carries it as \u0000.
    assert responses[0].json()["outputs"][0]["data"] == ["ok\x00"]
