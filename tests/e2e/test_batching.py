"""Dynamic batching end to end: a real pool joins concurrent requests into fewer model calls,
each client gets exactly its own rows, and a model that is not served is a clear start error."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from worker.models import demo_model

from .harness import http, wait_until


def test_concurrent_requests_are_joined_and_each_gets_its_own_answer(launch, platform, tmp_path):
    config = tmp_path / "pool.toml"
    config.write_text('model_batch_delays = ["mlp=50"]\n')  # per model, in the file
    pool = launch("--config", platform.path(str(config)), workers=1)
    url = pool.wait_ready()
    model = demo_model()
    rows = [np.random.default_rng(i).standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(24)]

    def infer(x: np.ndarray) -> tuple[int, dict]:
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        status, _, answer = http("POST", f"{url}/v2/models/mlp/infer", json.dumps(body).encode())
        return status, json.loads(answer)

    with ThreadPoolExecutor(len(rows)) as clients:
        answers = list(clients.map(infer, rows))
    for x, (status, answer) in zip(rows, answers, strict=True):
        assert status == 200, answer
        (output,) = answer["outputs"]
        expected = model.predict({"INPUT0": x})["OUTPUT0"]
        assert output["shape"] == list(expected.shape)
        assert np.allclose(output["data"], expected.ravel(), atol=1e-5)

    def counts() -> tuple[int, int]:
        (stats,) = json.loads(http("GET", f"{url}/v2/models/mlp/stats")[2])["model_stats"]
        return stats["inference_count"], stats["execution_count"]

    inferences = sum(x.shape[0] for x in rows)
    wait_until(lambda: counts()[0] == inferences, what="the statistics to count every row")
    # 24 requests arriving together, 50 ms to gather: far fewer model calls than requests.
    assert counts()[1] < len(rows) // 2, counts()


def test_a_batch_delay_for_a_model_that_is_not_served_fails_the_start(launch):
    pool = launch("--model-batch-delay", "nosuch=5", workers=1)
    assert pool.wait_exit() == 1
    assert re.search(
        r"worker 0 failed to start: --model-batch-delay nosuch=5: no model 'nosuch' is served", pool.output
    )
    pool.assert_no_leftovers()
