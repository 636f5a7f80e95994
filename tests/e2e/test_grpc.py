"""gRPC served by every worker (``--grpc-bind``), driven by tritonclient.grpc as users drive
Triton and KServe: metadata, inference, refusals as status codes; a stop that lets a call in
flight finish, and a reload and two scales under 16 channels that lose no call.

tritonclient.grpc and kserve both register ``inference.*`` in protobuf's default pool, so one
process cannot import both, and the suite imports kserve: tritonclient runs in a process of its
own, and the other tests call with the pool's own messages (``worker.rpc.protocol``, a pool of
their own) over a grpcio channel, as tritonclient does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

grpc = pytest.importorskip("grpc")

from worker.rpc import protocol  # noqa: E402

from .conftest import released, started_count  # noqa: E402
from .harness import http, infer_body, wait_until  # noqa: E402
from .load import Load  # noqa: E402
from .test_operations import generations  # noqa: E402

TRITON_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

client = grpcclient.InferenceServerClient(sys.argv[1])
out = {"live": client.is_server_live(), "ready": client.is_server_ready(), "model_ready": client.is_model_ready("mlp")}
out["server"] = client.get_server_metadata().name
meta = client.get_model_metadata("mlp")
out["metadata"] = [meta.name, list(meta.versions), [[t.name, t.datatype, list(t.shape)] for t in meta.inputs]]
x = grpcclient.InferInput("INPUT0", [2, 64], "FP32")
x.set_data_from_numpy(np.full((2, 64), 0.5, np.float32))
out["output"] = client.infer("mlp", [x]).as_numpy("OUTPUT0").tolist()

def refusal(model, tensor):
    try:
        client.infer(model, [tensor])
    except InferenceServerException as exc:
        return [exc.status(), exc.message()]

out["unknown"] = refusal("no-such-model", x)
bad = grpcclient.InferInput("INPUT0", [2, 3], "FP32")
bad.set_data_from_numpy(np.zeros((2, 3), np.float32))
out["bad"] = refusal("mlp", bad)
client.close()
print(json.dumps(out))
"""


def grpc_address(pool) -> str:
    return pool.wait_for_line(r"gRPC at (\S+)").group(1)


def infer_request(model: str, array: np.ndarray):
    request = protocol.ModelInferRequest(model_name=model)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(array.shape))
    request.raw_input_contents.append(array.astype(np.float32).tobytes())
    return request


def model_infer(channel):
    return channel.unary_unary(
        f"/{protocol.SERVICE}/ModelInfer",
        request_serializer=protocol.ModelInferRequest.SerializeToString,
        response_deserializer=protocol.ModelInferResponse.FromString,
    )


@pytest.mark.skipif(importlib.util.find_spec("tritonclient") is None, reason="needs tritonclient[grpc]")
def test_tritonclient_infers_reads_metadata_and_is_refused_with_status_codes(launch):
    pool = launch("--grpc-bind", "127.0.0.1:0", workers=2)
    url = pool.wait_ready()
    run = subprocess.run(
        [sys.executable, "-c", TRITON_CLIENT, grpc_address(pool)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout)
    assert (out["live"], out["ready"], out["model_ready"], out["server"]) == (True, True, True, "inference-supervisor")
    assert out["metadata"] == ["mlp", ["1"], [["INPUT0", "FP32", [-1, 64]]]]
    status, _, body = http("POST", f"{url}/v2/models/mlp/infer", infer_body(rows=2))
    assert status == 200  # the same answer as REST's, from the same core
    assert np.allclose(out["output"], np.array(json.loads(body)["outputs"][0]["data"]).reshape(2, 10))
    assert out["unknown"] == ["StatusCode.NOT_FOUND", "unknown model 'no-such-model'"]
    assert out["bad"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "shape [2, 3] does not match [-1, 64]" in out["bad"][1]


def test_a_stop_lets_a_grpc_call_in_flight_finish(launch, gate):
    pool = launch("--model", "slow=tests.models:GatedModel", "--grpc-bind", "127.0.0.1:0", workers=1)
    pool.wait_ready()
    results: list = []
    with grpc.insecure_channel(grpc_address(pool)) as channel:
        call = model_infer(channel)

        def run() -> None:
            try:
                results.append(call(infer_request("slow", np.array([[1, 2, 3, 4]])), timeout=90))
            except Exception as exc:  # the test asserts on what came back
                results.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        wait_until(lambda: started_count(gate) == 1, what="the gRPC call to reach the model")
        stop = pool.cli_background("stop", "--grace", "30")
        pool.wait_for_line("stop received: draining 1 requests in flight")
        released(gate)
        assert stop.wait(60) == 0, stop.communicate()
        thread.join(30)
    assert len(results) == 1 and not isinstance(results[0], Exception), results
    answer = np.frombuffer(results[0].raw_output_contents[0], dtype=np.float32)
    assert answer.tolist() == [2, 4, 6, 8]
    assert pool.wait_exit() == 0, pool.output


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
    """``channels`` threads, each with a channel (a connection) of its own, calling ModelInfer
    back to back as tritonclient does; every failure counted with its reason."""

    def __init__(self, address: str, channels: int = 16) -> None:
        super().__init__(f"http://{address}", connections=channels)
        self.address = address

    def _run(self, n: int) -> None:
        request = infer_request("mlp", np.full((1, 64), 0.5))
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
        with grpc.insecure_channel(self.address, options) as channel:
            call = model_infer(channel)
            while not self._stop.is_set():
                try:
                    call(request, timeout=60)
                except grpc.RpcError as exc:
                    self._count(n, f"{exc.code()}: {exc.details()}"[:200])
                else:
                    self._count(n, None)


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
