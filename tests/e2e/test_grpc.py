"""gRPC served by every worker (``--grpc-bind``), driven by tritonclient.grpc as users drive
Triton and KServe: metadata, inference, refusals as status codes, and a stop that lets a call in
flight finish."""

from __future__ import annotations

import os
import re
import subprocess
import threading

import numpy as np
import pytest

from .conftest import released, started_count
from .harness import wait_until
from .load import Load
from .test_operations import generations

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


def grpc_address(pool) -> str:
    return pool.wait_for_line(r"gRPC at (\S+)").group(1)


def mlp_input(rows: int = 2, value: float = 0.5):
    tensor = grpcclient.InferInput("INPUT0", [rows, 64], "FP32")
    tensor.set_data_from_numpy(np.full((rows, 64), value, dtype=np.float32))
    return tensor


def test_tritonclient_infers_reads_metadata_and_is_refused_with_status_codes(launch):
    pool = launch("--grpc-bind", "127.0.0.1:0", workers=2)
    url = pool.wait_ready()
    client = grpcclient.InferenceServerClient(grpc_address(pool))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mlp")
        assert client.get_server_metadata().name == "inference-supervisor"
        metadata = client.get_model_metadata("mlp")
        assert (metadata.name, list(metadata.versions)) == ("mlp", ["1"])
        assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("INPUT0", "FP32", [-1, 64])]
        result = client.infer("mlp", [mlp_input()])
        grpc_out = result.as_numpy("OUTPUT0")
        assert grpc_out.shape == (2, 10) and grpc_out.dtype == np.float32
        # The same answer as REST's, from the same core.
        from .harness import http, infer_body

        status, _, body = http("POST", f"{url}/v2/models/mlp/infer", infer_body(rows=2))
        assert status == 200
        import json

        assert np.allclose(grpc_out, np.array(json.loads(body)["outputs"][0]["data"]).reshape(2, 10))
        with pytest.raises(InferenceServerException) as unknown:
            client.infer("no-such-model", [mlp_input()])
        assert unknown.value.status() == "StatusCode.NOT_FOUND"
        assert "unknown model 'no-such-model'" in unknown.value.message()
        wrong = grpcclient.InferInput("INPUT0", [2, 3], "FP32")
        wrong.set_data_from_numpy(np.zeros((2, 3), dtype=np.float32))
        with pytest.raises(InferenceServerException) as bad:
            client.infer("mlp", [wrong])
        assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "shape [2, 3] does not match [-1, 64]" in bad.value.message()
    finally:
        client.close()


def test_a_stop_lets_a_grpc_call_in_flight_finish(launch, gate):
    pool = launch("--model", "slow=tests.models:GatedModel", "--grpc-bind", "127.0.0.1:0", workers=1)
    pool.wait_ready()
    client = grpcclient.InferenceServerClient(grpc_address(pool))
    results: list = []
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))

    def call() -> None:
        try:
            results.append(client.infer("slow", [tensor], client_timeout=90).as_numpy("OUTPUT0"))
        except Exception as exc:  # the test asserts on what came back
            results.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    try:
        wait_until(lambda: started_count(gate) == 1, what="the gRPC call to reach the model")
        stop = pool.cli_background("stop", "--grace", "30")
        pool.wait_for_line("stop received: draining 1 requests in flight")
        released(gate)
        assert stop.wait(60) == 0, stop.communicate()
        thread.join(30)
        assert len(results) == 1 and not isinstance(results[0], Exception), results
        assert results[0].tolist() == [[2, 4, 6, 8]]
        assert pool.wait_exit() == 0, pool.output
    finally:
        client.close()


@pytest.mark.skipif(not os.environ.get("PERF_ANALYZER"), reason="set PERF_ANALYZER (tests/run.sh fetches it)")
def test_perf_analyzer_over_grpc(launch):
    """Triton's load generator with -i grpc: it reads ModelConfig and ModelStatistics too."""
    pool = launch("--grpc-bind", "127.0.0.1:0", workers=2)
    pool.wait_ready()
    command = [
        os.environ["PERF_ANALYZER"], "-m", "mlp", "-u", grpc_address(pool), "-i", "grpc", "-b", "2",
        "--concurrency-range", "4", "--measurement-mode", "count_windows", "--measurement-request-count", "100",
        "-s", "1000", "--max-trials", "3",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    server = result.stdout.split("Server:")[-1]
    inferences = int(re.search(r"Inference count: (\d+)", server).group(1))
    executions = int(re.search(r"Execution count: (\d+)", server).group(1))
    assert executions > 0 and inferences == 2 * executions  # batch of 2, the pool's statistics


class GrpcLoad(Load):
    """``channels`` threads, each with a tritonclient.grpc client of its own (a channel, a
    connection), calling ModelInfer back to back; every failure counted with its reason."""

    def __init__(self, address: str, channels: int = 16) -> None:
        super().__init__(f"http://{address}", connections=channels)
        self.address = address

    def _run(self, n: int) -> None:
        client = grpcclient.InferenceServerClient(self.address)
        try:
            while not self._stop.is_set():
                try:
                    client.infer("mlp", [mlp_input(rows=1)], client_timeout=60)
                except InferenceServerException as exc:
                    self._count(n, f"{exc.status()}: {exc.message()}"[:200])
                else:
                    self._count(n, None)
        finally:
            client.close()


def flowing(load: GrpcLoad, at_least: int = 50) -> None:
    before = load.total()
    wait_until(lambda: load.total() - before >= at_least, what=f"{at_least} more calls under load")


@pytest.mark.timeout(600)
def test_reload_and_scale_under_grpc_load_lose_no_call(launch):
    pool = launch("--grpc-bind", "127.0.0.1:0", workers=2)
    pool.wait_ready()
    with GrpcLoad(grpc_address(pool)) as load:
        flowing(load)
        reload = pool.cli("reload")
        assert reload.returncode == 0, reload.stdout + reload.stderr
        assert generations(pool) == [2, 2]
        flowing(load)
        grow = pool.cli("scale", "3")
        assert grow.returncode == 0, grow.stdout + grow.stderr
        flowing(load)
        shrink = pool.cli("scale", "1")
        assert shrink.returncode == 0, shrink.stdout + shrink.stderr
        flowing(load)
        load.stop()
    assert not load.failures, dict(load.failures)
    assert load.ok > 200
