"""Serving behaviour end to end: user models, config files, draining, a busy model."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

from .conftest import released, started_count
from .harness import http, infer_body, wait_until
from .test_pool import gated_infer

pytestmark = pytest.mark.each_server


def write_mlp(path, sizes=(8, 4, 3), seed=1):
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        arrays[f"w{i}"] = rng.standard_normal((n_in, n_out)).astype(np.float32)
        arrays[f"b{i}"] = rng.standard_normal(n_out).astype(np.float32)
    np.savez(path, **arrays)
    return arrays


def mlp_reference(arrays, x):
    count = len(arrays) // 2
    for i in range(count):
        x = x @ arrays[f"w{i}"] + arrays[f"b{i}"]
        if i < count - 1:
            x = np.maximum(x, 0)
    return x


def infer(url, model, x):
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    ).encode()
    status, _, payload = http("POST", f"{url}/v2/models/{model}/infer", body)
    assert status == 200, payload
    out = json.loads(payload)["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def test_models_from_a_file_a_class_and_a_repository(launch, platform, tmp_path):
    weights = write_mlp(tmp_path / "small.npz")
    repo = tmp_path / "repo"
    (repo / "deep").mkdir(parents=True)
    deep = write_mlp(repo / "deep" / "model.npz", sizes=(5, 6, 6, 2), seed=2)
    (repo / "gated").mkdir()
    (repo / "gated" / "model.txt").write_text("tests.models:GatedModel\n")
    pool = launch(
        "--model", f"small={platform.path(str(tmp_path / 'small.npz'))}",
        "--model", "slow=tests.models:GatedModel",
        "--model-dir", platform.path(str(repo)),
        workers=1,
    )  # fmt: skip
    url = pool.wait_ready()
    status, _, body = http("GET", f"{url}/v1/models")
    assert json.loads(body) == {"models": ["small", "slow", "deep", "gated"]}
    x = np.arange(16, dtype=np.float32).reshape(2, 8) / 10
    np.testing.assert_allclose(infer(url, "small", x), mlp_reference(weights, x), rtol=1e-5)
    y = np.ones((3, 5), np.float32)
    np.testing.assert_allclose(infer(url, "deep", y), mlp_reference(deep, y), rtol=1e-5)
    status, _, body = http("GET", f"{url}/v2/models/deep")
    assert json.loads(body)["inputs"][0]["shape"] == [-1, 5]


def test_config_file(launch, platform, tmp_path):
    write_mlp(tmp_path / "small.npz")
    config = tmp_path / "pool.toml"
    config.write_text('workers = 2\ngrace = 5\nmodels = ["small=small.npz"]\n')
    pool = launch("--config", platform.path(str(config)), workers=1)  # the flag wins over the file
    url = pool.wait_ready()
    assert len(pool.status()["workers"]) == 1
    status, _, body = http("GET", f"{url}/v1/models")
    assert json.loads(body) == {"models": ["small"]}


def test_a_busy_model_does_not_block_the_worker(launch, gate):
    pool = launch("--model", "slow=tests.models:GatedModel", "--model", "mlp=worker.models.mlp:demo_model", workers=1)
    url = pool.wait_ready()
    results: list = []
    request = gated_infer(url, results)
    wait_until(lambda: started_count(gate) == 1, what="the request to reach the model")
    # The one worker is inside predict, yet health, metadata, other models and the control
    # channel all answer.
    assert http("GET", f"{url}/v2/health/ready", timeout=10)[0] == 200
    assert http("POST", f"{url}/v2/models/mlp/infer", infer_body(), timeout=10)[0] == 200
    assert pool.status()["workers"][0]["state"] == "ready"
    released(gate)
    request.join(30)
    assert results[0][0] == 200


def test_the_pool_serves_with_the_http_server_it_was_given(launch):
    """The suite runs twice on Linux, the second time with INFERENCE_SUPERVISOR_HTTP=uvicorn."""
    expected = os.environ.get("INFERENCE_SUPERVISOR_HTTP", "hypercorn")
    pool = launch(workers=1)
    url = pool.wait_ready()
    assert pool.http_server == expected
    status, headers, _ = http("GET", f"{url}/v2/health/live")
    # hypercorn names itself in a Server header; uvicorn, as a worker configures it, does not.
    assert status == 200 and headers.get("server") == ("hypercorn-h11" if expected == "hypercorn" else None), headers


def test_readiness_turns_503_before_the_worker_stops_accepting(launch):
    pool = launch("--drain-delay", "15", "--grace", "5", workers=1)
    url = pool.wait_ready()
    stopper = pool.cli_background("stop")
    pool.wait_for_line("stopping: draining 1 workers")
    wait_until(lambda: http("GET", f"{url}/v2/health/ready", timeout=10)[0] == 503, what="readiness to turn 503")
    # Still accepting and serving during the drain delay: a load balancer has time to notice.
    assert http("GET", f"{url}/v2/models/mlp/ready", timeout=10)[0] == 503
    assert http("GET", f"{url}/v1/models/mlp", timeout=10)[0] == 503
    assert http("GET", f"{url}/v2/health/live", timeout=10)[0] == 200
    assert http("POST", f"{url}/v2/models/mlp/infer", infer_body(), timeout=10)[0] == 200
    stopper.kill()  # the stop goes on without its client


def test_bad_config_file(platform, tmp_path):
    from .test_errors import assert_one_clear_line, run

    config = tmp_path / "pool.toml"
    config.write_text("wrokers = 2\n")
    assert_one_clear_line(run(platform, "start", "--config", platform.path(str(config))), 2, "unknown key 'wrokers'")
    config.write_text("workers = 0\n")
    assert_one_clear_line(
        run(platform, "start", "--config", platform.path(str(config))), 2, "workers: must be at least 1"
    )
    config.write_text("workers = [\n")
    assert_one_clear_line(run(platform, "start", "--config", platform.path(str(config))), 2, "not valid TOML")


def test_one_kept_alive_connection_is_not_held_back_by_nagle(launch, platform):
    """Windows CPython gives accepted sockets protocol 0, so asyncio does not set TCP_NODELAY on
    them, and each kept-alive request waited ~44 ms for a delayed ACK: 200 took ~9 s under Wine.
    The workers set it on every connection."""
    import time
    import urllib.parse
    from http.client import HTTPConnection

    pool = launch(workers=1)
    url = urllib.parse.urlsplit(pool.wait_ready())
    conn = HTTPConnection(url.hostname, url.port, timeout=30)
    body = infer_body()
    started = time.monotonic()
    for _ in range(200):
        conn.request("POST", "/v2/models/mlp/infer", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    took = time.monotonic() - started
    conn.close()
    assert took < 6.0, f"200 kept-alive requests took {took:.1f}s"  # ~1-2 s under Wine, ~0.3 s on Linux


@pytest.mark.linux_supervisor("reads a worker's environment with psutil, by its Linux pid")
@pytest.mark.parametrize(
    "flags, expected", [((), str(max(1, (os.cpu_count() or 1) // 2))), (("--threads-per-worker", "3"), "3")]
)
def test_each_worker_gets_its_share_of_the_cores_for_its_numerical_threads(launch, flags, expected):
    import psutil

    pool = launch(*flags, workers=2)
    pool.wait_ready()
    for worker in pool.status()["workers"]:
        environment = psutil.Process(worker["pid"]).environ()
        assert environment["OMP_NUM_THREADS"] == environment["OPENBLAS_NUM_THREADS"] == expected
