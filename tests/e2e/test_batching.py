"""Dynamic batching end to end: a real pool joins requests that arrive while its model is busy
into one model call, each client gets exactly its own rows, a lone client waits for nobody, and
a model that is not served is a clear start error."""

from __future__ import annotations

import json
import re
import time

import numpy as np

from worker.models import demo_model

from .conftest import released, started_count
from .harness import http, wait_until
from .test_pool import gated_infer


def test_requests_that_arrive_while_the_model_is_busy_are_joined(launch, platform, tmp_path, gate):
    config = tmp_path / "pool.toml"
    config.write_text('model_batch_delays = ["slow=1000"]\n')  # per model, in the file
    pool = launch("--model", "slow=tests.models:GatedModel", "--config", platform.path(str(config)), workers=1)
    url = pool.wait_ready()
    results: list = []
    first = gated_infer(url, results)  # alone, the model idle: it runs at once, and waits at the gate
    wait_until(lambda: started_count(gate) == 1, what="the first request inside the model")
    # The model is busy: these wait for company, and the eighth fills the batch (max_batch_size 8).
    others = [gated_infer(url, results) for _ in range(8)]
    wait_until(lambda: started_count(gate) == 2, what="the eight joined into one model call")
    released(gate)
    for thread in [first, *others]:
        thread.join(60)
    assert [status for status, _ in results] == [200] * 9
    for _, body in results:
        assert json.loads(body)["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]  # each its own row, doubled
    (stats,) = json.loads(http("GET", f"{url}/v2/models/slow/stats")[2])["model_stats"]
    assert (stats["inference_count"], stats["execution_count"]) == (9, 2)


def test_a_lone_client_does_not_wait_for_the_delay(launch):
    pool = launch("--batch-delay", "1000", workers=1)
    url = pool.wait_ready()
    model = demo_model()
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 64], "data": x.ravel().tolist()}]}
    began = time.monotonic()
    for _ in range(5):
        status, _, answer = http("POST", f"{url}/v2/models/mlp/infer", json.dumps(body).encode())
        assert status == 200
        assert np.allclose(json.loads(answer)["outputs"][0]["data"], model.predict({"INPUT0": x})["OUTPUT0"].ravel())
    # Five requests one after another, nothing else in flight: none waits its 1 s for company.
    assert time.monotonic() - began < 4


def test_a_batch_delay_for_a_model_that_is_not_served_fails_the_start(launch):
    pool = launch("--model-batch-delay", "nosuch=5", workers=1)
    assert pool.wait_exit() == 1
    assert re.search(
        r"worker 0 failed to start: --model-batch-delay nosuch=5: no model 'nosuch' is served", pool.output
    )
    pool.assert_no_leftovers()
