"""Real clients against `supervisor start --workers 2`: tritonclient.http and kserve's
InferenceRESTClient, unchanged, as users run them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from worker.models import demo_model

from .harness import http, infer_body

pytestmark = pytest.mark.each_server

PERF_ANALYZER = os.environ.get("PERF_ANALYZER")

tritonhttp = pytest.importorskip("tritonclient.http")
triton_utils = pytest.importorskip("tritonclient.utils")
kserve = pytest.importorskip("kserve")

X = np.linspace(-1, 1, 3 * 64, dtype=np.float32).reshape(3, 64)
EXPECTED = demo_model().predict({"INPUT0": X})["OUTPUT0"]


@pytest.fixture(scope="module")
def pool_url(tmp_path_factory):
    """One pool for the module: the client tests only read from it."""
    from .harness import WINDOWS_PYTHON, Platform, Pool

    platform = Platform(bool(WINDOWS_PYTHON))
    tmp = tmp_path_factory.mktemp("clients")
    pool = Pool(
        platform, platform.control_address(str(tmp)), ["--workers", "2", "--bind", "127.0.0.1:0"], platform.env({})
    )
    try:
        yield pool.wait_ready()
        assert pool.cli("stop").returncode == 0
        assert pool.wait_exit() == 0
    finally:
        pool.kill_everything()


@pytest.fixture
def triton(pool_url):
    client = tritonhttp.InferenceServerClient(pool_url.removeprefix("http://"), concurrency=4)
    yield client
    client.close()


def test_triton_health_and_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("mlp")
    assert triton.is_model_ready("mlp", "1")
    assert not triton.is_model_ready("nope")
    server = triton.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    meta = triton.get_model_metadata("mlp")
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 64]}
    config = triton.get_model_config("mlp")
    assert config["max_batch_size"] > 0 and config["input"][0]["dims"] == [64]


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True, None])
def test_triton_infer(triton, binary_in, binary_out):
    inp = tritonhttp.InferInput("INPUT0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=binary_in)
    outputs = None if binary_out is None else [tritonhttp.InferRequestedOutput("OUTPUT0", binary_data=binary_out)]
    result = triton.infer("mlp", [inp], outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), EXPECTED, rtol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_name"] == "mlp"


def test_triton_async_infer_many(triton):
    inp = tritonhttp.InferInput("INPUT0", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    pending = [triton.async_infer("mlp", [inp]) for _ in range(16)]
    for request in pending:
        np.testing.assert_allclose(request.get_result().as_numpy("OUTPUT0"), EXPECTED, rtol=1e-5)


def test_triton_errors_surface_as_messages(triton):
    inp = tritonhttp.InferInput("INPUT0", [1, 63], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 63), np.float32))
    with pytest.raises(triton_utils.InferenceServerException, match="does not match"):
        triton.infer("mlp", [inp])
    with pytest.raises(triton_utils.InferenceServerException, match="unknown model"):
        triton.get_model_metadata("nope")
    bad = tritonhttp.InferInput("INPUT0", [1, 64], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 64), np.int32))
    with pytest.raises(triton_utils.InferenceServerException, match="datatype must be FP32"):
        triton.infer("mlp", [bad])
    with pytest.raises(triton_utils.InferenceServerException, match="unknown output"):
        good = tritonhttp.InferInput("INPUT0", [1, 64], "FP32")
        good.set_data_from_numpy(np.zeros((1, 64), np.float32))
        triton.infer("mlp", [good], outputs=[tritonhttp.InferRequestedOutput("NOPE")])


def test_statistics_are_the_pools_summed_over_both_workers(pool_url, triton):
    def counts():
        (entry,) = triton.get_inference_statistics("mlp")["model_stats"]
        assert entry["version"] == "1"
        return (
            entry["inference_count"],
            entry["inference_stats"]["success"]["count"],
            entry["inference_stats"]["queue"]["count"],
        )

    before = counts()

    def one(_):
        status, headers, _ = http("POST", f"{pool_url}/v2/models/mlp/infer", infer_body(rows=1))
        assert status == 200
        return headers["x-worker-pid"]

    n = 64
    with ThreadPoolExecutor(8) as executor:  # concurrent fresh connections: both workers serve
        pids = set(executor.map(one, range(n)))
    assert len(pids) == 2, "both workers must have served for this test to mean anything"
    for _ in range(6):  # whichever worker answers, the same pool-wide numbers
        after = counts()
        assert after == (before[0] + n, before[1] + n, before[2] + n)
    all_models = triton.get_inference_statistics()
    assert [entry["name"] for entry in all_models["model_stats"]] == ["mlp"]


def test_concurrent_statistics_requests_all_get_the_pool_sums(pool_url):
    def inference_count(_):
        status, _, body = http("GET", f"{pool_url}/v2/models/mlp/stats")
        assert status == 200
        return json.loads(body)["model_stats"][0]["inference_count"]

    before = inference_count(0)
    with ThreadPoolExecutor(8) as executor:
        list(executor.map(lambda _: http("POST", f"{pool_url}/v2/models/mlp/infer", infer_body()), range(24)))
        counts = list(executor.map(inference_count, range(24)))
    assert counts == [before + 24] * 24


def kserve_client(protocol):
    return kserve.InferenceRESTClient(kserve.RESTConfig(protocol=protocol, retries=0, timeout=30))


def test_kserve_v2(pool_url):
    async def run():
        client = kserve_client("v2")
        try:
            assert await client.is_server_live(pool_url)
            assert await client.is_server_ready(pool_url)
            assert await client.is_model_ready(pool_url, "mlp")
            assert not await client.is_model_ready(pool_url, "nope")
            for binary in (False, True):
                inp = kserve.InferInput("INPUT0", list(X.shape), "FP32")
                inp.set_data_from_numpy(X, binary_data=binary)
                request = kserve.InferRequest(model_name="mlp", infer_inputs=[inp], request_id="k-1")
                response = await client.infer(pool_url, request, model_name="mlp")
                assert response.id == "k-1" and response.model_name == "mlp"
                np.testing.assert_allclose(response.outputs[0].as_numpy(), EXPECTED, rtol=1e-5)
            with pytest.raises(Exception, match="unknown input"):
                bad = kserve.InferInput("WRONG", [1, 64], "FP32")
                bad.set_data_from_numpy(np.zeros((1, 64), np.float32))
                await client.infer(
                    pool_url, kserve.InferRequest(model_name="mlp", infer_inputs=[bad]), model_name="mlp"
                )
        finally:
            await client.close()

    asyncio.run(run())


def test_kserve_v1(pool_url):
    async def run():
        client = kserve_client("v1")
        try:
            assert await client.is_server_live(pool_url)
            assert await client.is_model_ready(pool_url, "mlp")
            result = await client.infer(pool_url, {"instances": X.tolist()}, model_name="mlp")
            np.testing.assert_allclose(np.array(result["predictions"]), EXPECTED, rtol=1e-5)
            with pytest.raises(Exception, match="64"):
                await client.infer(pool_url, {"instances": [[1.0, 2.0]]}, model_name="mlp")
        finally:
            await client.close()

    asyncio.run(run())


def test_error_bodies_are_exact_json(pool_url):
    status, headers, body = http("POST", f"{pool_url}/v2/models/mlp/infer", b"{not json")
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert list(json.loads(body)) == ["error"]


@pytest.mark.skipif(not PERF_ANALYZER, reason="set PERF_ANALYZER (tests/run.sh fetches it)")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_perf_analyzer(pool_url, mode):
    """Triton's load generator, unchanged, against the pool."""
    command = [
        PERF_ANALYZER, "-m", "mlp", "-u", pool_url.removeprefix("http://"), "-i", "http", "-b", "2",
        "--concurrency-range", "1" if mode == "sync" else "4",
        "--measurement-mode", "count_windows", "--measurement-request-count", "100", "-s", "1000", "--max-trials", "3",
    ]  # fmt: skip
    if mode == "async":
        command.append("-a")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    server = result.stdout.split("Server:")[-1]
    inferences = int(re.search(r"Inference count: (\d+)", server).group(1))
    executions = int(re.search(r"Execution count: (\d+)", server).group(1))
    assert executions > 0 and inferences == 2 * executions  # batch of 2
    if mode == "sync":
        # Its server-side numbers are differences of /stats taken around its measurement
        # windows, while the load goes on between windows: they track what the client sent
        # closely, but only if /stats counts both workers. Per-worker counts would be about
        # half, or jump about as the answering worker changes.
        client = int(re.search(r"Request count: (\d+)", result.stdout.split("Server:")[0]).group(1))
        assert abs(executions - client) <= 0.1 * client, (executions, client)


def test_what_perf_analyzer_reads(pool_url):
    """perf_analyzer's contract read by read, for any version of it
    (see ../shared/inference-protocol.md: model_parser.cc, inference_profiler.cc)."""

    def get(path):
        status, _, body = http("GET", f"{pool_url}{path}")
        assert status == 200, (path, body)
        return json.loads(body)

    server = get("/v2")
    assert isinstance(server["name"], str) and isinstance(server["version"], str)
    meta = get("/v2/models/mlp")
    config = get("/v2/models/mlp/config")
    assert isinstance(config["max_batch_size"], int) and config["max_batch_size"] > 0
    assert isinstance(config.get("platform", ""), str) and config.get("platform") != "ensemble"
    assert "sequence_batching" not in config
    meta_names = {t["name"] for t in meta["inputs"] + meta["outputs"]}
    assert {t["name"] for t in config["input"] + config["output"]} <= meta_names

    def queue_count():
        (entry,) = get("/v2/models/mlp/stats")["model_stats"]
        int(entry["version"])  # std::stoll
        return entry["inference_stats"]["queue"]["count"]

    before = queue_count()
    # What it sends: an empty id, binary input, every output asked for in binary.
    head = json.dumps(
        {
            "id": "",
            "inputs": [
                {"name": "INPUT0", "datatype": "FP32", "shape": [4, 64], "parameters": {"binary_data_size": 1024}}
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    status, response_headers, body = http(
        "POST", f"{pool_url}/v2/models/mlp/infer", head + np.ones((4, 64), np.float32).tobytes(), headers
    )
    assert status == 200, body
    length = int(response_headers["inference-header-content-length"])
    assert json.loads(body[:length])["outputs"][0]["parameters"]["binary_data_size"] == 4 * 10 * 4
    assert len(body) - length == 4 * 10 * 4
    assert queue_count() == before + 1
