"""OpenTelemetry tracing end to end: a pool started with --otel-endpoint sends, over OTLP/HTTP to
a receiver in the test, one span per inference (HTTP and gRPC) that continues the caller's W3C
traceparent, with children for the body read, the wait, the decode, the model call and the
encode; a joined batch's model spans link the requests it served; refusals are errors; health
is not traced; a stopping worker sends what it still holds."""

from __future__ import annotations

import json
import secrets
import threading

import pytest

pytest.importorskip("opentelemetry.sdk")

from .harness import http, infer_body, wait_until
from .otlp import Receiver

STEPS = {"read body", "wait", "decode", "model", "encode"}
#: Spans leave every 100 ms here (OpenTelemetry's default is 5 s).
QUICK = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def test_an_inference_is_a_span_in_the_callers_trace_with_its_steps(launch, receiver):
    pool = launch("--otel-endpoint", receiver.url, env=QUICK, workers=1)
    url = pool.wait_ready()
    header, trace_id, caller = traceparent()
    for _ in range(3):
        assert http("GET", f"{url}/v2/health/ready")[0] == 200  # not traced
    assert http("POST", f"{url}/v2/models/mlp/infer", infer_body(), {"traceparent": header})[0] == 200
    (span,) = wait_until(lambda: receiver.named("infer mlp"), what="the inference's span")
    assert (span["trace_id"], span["parent"]) == (trace_id, caller)  # the caller's trace, continued
    attributes = span["attributes"]
    assert attributes["inference.model"] == "mlp" and attributes["inference.protocol"] == "rest"
    assert attributes["inference.batch_size"] == 1 and attributes["inference.status"] == 200
    worker = pool.status()["workers"][0]
    assert span["resource"]["service.name"] == "inference-supervisor"
    assert (span["resource"]["worker.slot"], span["resource"]["process.pid"]) == (0, worker["pid"])
    steps = wait_until(lambda: receiver.children(span) if set(receiver.children(span)) == STEPS else None,
                       what="its five steps")  # fmt: skip
    for step in steps.values():
        assert span["start"] <= step["start"] <= step["end"] <= span["end"], (step, span)
    order = ["read body", "wait", "decode", "model", "encode"]
    assert [steps[name]["start"] for name in order] == sorted(steps[name]["start"] for name in order)
    assert {s["name"] for s in receiver.spans} <= STEPS | {"infer mlp"}  # health: nothing

    # A refusal is an error span, with its status.
    bad = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
    assert http("POST", f"{url}/v2/models/mlp/infer", bad.encode())[0] == 400
    refused = wait_until(lambda: [s for s in receiver.named("infer mlp") if s["status"] == 2], what="the error span")
    assert refused[0]["attributes"]["inference.status"] == 400


def test_a_grpc_call_continues_its_metadatas_trace(launch, receiver):
    grpc = pytest.importorskip("grpc")
    import numpy as np

    from .test_grpc import grpc_address, infer_request, model_infer

    pool = launch("--otel-endpoint", receiver.url, "--grpc-bind", "127.0.0.1:0", env=QUICK, workers=1)
    pool.wait_ready()
    header, trace_id, caller = traceparent()
    with grpc.insecure_channel(grpc_address(pool)) as channel:
        model_infer(channel)(infer_request("mlp", np.ones((1, 64))), metadata=[("traceparent", header)], timeout=30)
    (span,) = wait_until(lambda: receiver.named("infer mlp"), what="the call's span")
    assert (span["trace_id"], span["parent"]) == (trace_id, caller)
    assert span["attributes"]["inference.protocol"] == "grpc"


def test_a_joined_batch_links_the_requests_it_served(launch, receiver):
    pool = launch("--otel-endpoint", receiver.url, "--batch-delay", "200", env=QUICK, workers=1)
    url = pool.wait_ready()
    threads = [
        threading.Thread(target=http, args=("POST", f"{url}/v2/models/mlp/infer", infer_body())) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    requests = wait_until(lambda: len(receiver.named("infer mlp")) == 6 and receiver.named("infer mlp"),
                          what="six spans")  # fmt: skip
    models = wait_until(lambda: len(receiver.named("model")) == 6 and receiver.named("model"), what="six model spans")
    by_id = {span["span_id"]: span for span in requests}
    joined = [m for m in models if m["links"]]
    assert joined, "no model call joined two requests"
    for model in joined:
        assert model["attributes"]["inference.batch_size"] == len(model["links"]) + 1
        assert set(model["links"]) <= set(by_id) and model["parent"] not in model["links"]


def test_a_stopping_worker_sends_the_spans_it_holds(launch, receiver):
    """Spans wait 60 s to leave here, so only the stop's flush can send them in time."""
    pool = launch("--otel-endpoint", receiver.url, env={"OTEL_BSP_SCHEDULE_DELAY": "60000"}, workers=1)
    url = pool.wait_ready()
    for _ in range(3):
        assert http("POST", f"{url}/v2/models/mlp/infer", infer_body())[0] == 200
    assert not receiver.named("infer mlp")
    assert pool.cli("stop").returncode == 0
    assert pool.wait_exit() == 0, pool.output
    assert len(receiver.named("infer mlp")) == 3
