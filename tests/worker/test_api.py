"""The inference API in-process: every endpoint, both encodings, every refusal."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from worker.models import demo_model

from .asgi import call

pytestmark = pytest.mark.anyio

X = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 64)
EXPECTED = demo_model().predict({"INPUT0": X})["OUTPUT0"]


def infer_json(data=None, **extra):
    request = {
        "inputs": [
            {
                "name": "INPUT0",
                "datatype": "FP32",
                "shape": [2, 64],
                "data": X.ravel().tolist() if data is None else data,
            }
        ]
    }
    request.update(extra)
    return json.dumps(request).encode()


def binary_request(array=X, outputs=None, parameters=None):
    header = {
        "inputs": [
            {
                "name": "INPUT0",
                "datatype": "FP32",
                "shape": list(array.shape),
                "parameters": {"binary_data_size": array.nbytes},
            }
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    if parameters is not None:
        header["parameters"] = parameters
    head = json.dumps(header).encode()
    return head + array.astype("<f4").tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def split_binary(response):
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.body[:length]), response.body[length:]


async def test_health_and_server_metadata(app):
    assert (await call(app, "GET", "/v2/health/live")).json() == {"live": True}
    ready = await call(app, "GET", "/v2/health/ready")
    assert ready.status == 200 and ready.json() == {"ready": True}
    meta = (await call(app, "GET", "/v2")).json()
    assert set(meta) == {"name", "version", "extensions"} and "binary_tensor_data" in meta["extensions"]
    assert (await call(app, "GET", "/")).json() == {"status": "alive"}
    assert (await call(app, "GET", "/v1/models")).json() == {"models": ["mlp"]}


@pytest.mark.parametrize("prefix", ["/v2/models/mlp", "/v2/models/mlp/versions/1"])
async def test_model_metadata_config_ready(app, prefix):
    meta = (await call(app, "GET", prefix)).json()
    assert meta["name"] == "mlp" and meta["versions"] == ["1"] and isinstance(meta["platform"], str)
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 10]}]
    config = (await call(app, "GET", prefix + "/config")).json()
    assert config["max_batch_size"] > 0
    assert config["input"] == [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [64]}]
    assert config["output"] == [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [10]}]
    assert (await call(app, "GET", prefix + "/ready")).status == 200


async def test_json_infer(app):
    response = await call(app, "POST", "/v2/models/mlp/infer", infer_json(id="abc", model_name="mlp", parameters={}))
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    body = response.json()
    assert body["model_name"] == "mlp" and body["id"] == "abc"
    (out,) = body["outputs"]
    assert out["name"] == "OUTPUT0" and out["datatype"] == "FP32" and out["shape"] == [2, 10]
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(2, 10), EXPECTED, rtol=1e-6)


async def test_nested_data_and_no_id(app):
    response = await call(app, "POST", "/v2/models/mlp/infer", infer_json(data=X.tolist()))
    body = response.json()
    assert "id" not in body
    np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(2, 10), EXPECTED, rtol=1e-6)


async def test_binary_infer_binary_output(app):
    body, headers = binary_request(parameters={"binary_data_output": True})
    response = await call(app, "POST", "/v2/models/mlp/infer", body, headers)
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/octet-stream"
    head, blob = split_binary(response)
    (out,) = head["outputs"]
    assert out["parameters"] == {"binary_data_size": 2 * 10 * 4} and "data" not in out
    np.testing.assert_allclose(np.frombuffer(blob, "<f4").reshape(2, 10), EXPECTED, rtol=1e-6)


async def test_outputs_filter_chooses_format_per_output(app):
    body, headers = binary_request(
        outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": False}}], parameters={"binary_data_output": True}
    )
    response = await call(app, "POST", "/v2/models/mlp/infer", body, headers)
    assert response.headers["content-type"] == "application/json"
    assert len(response.json()["outputs"][0]["data"]) == 20


async def test_raw_binary_request(app):
    response = await call(app, "POST", "/v2/models/mlp/infer", X.tobytes(), {"Inference-Header-Content-Length": "0"})
    assert response.status == 200, response.body
    head, blob = split_binary(response)
    assert head["outputs"][0]["shape"] == [2, 10]
    np.testing.assert_allclose(np.frombuffer(blob, "<f4").reshape(2, 10), EXPECTED, rtol=1e-6)


async def test_gzip_request_body(app):
    response = await call(
        app, "POST", "/v2/models/mlp/infer", gzip.compress(infer_json()), {"Content-Encoding": "gzip"}
    )
    assert response.status == 200, response.body


async def test_v1_predict(app):
    response = await call(app, "POST", "/v1/models/mlp:predict", json.dumps({"instances": X.tolist()}).encode())
    assert response.status == 200, response.body
    np.testing.assert_allclose(np.array(response.json()["predictions"]), EXPECTED, rtol=1e-6)
    ready = await call(app, "GET", "/v1/models/mlp")
    assert ready.json() == {"name": "mlp", "ready": True}


def _binary_with_size(size):
    head = json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 64], "parameters": {"binary_data_size": size}}]}
    ).encode()
    return head + X.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


BAD_REQUESTS = [
    ("unknown model", "POST", "/v2/models/nope/infer", infer_json(), {}, 404, "unknown model 'nope'"),
    ("unknown model metadata", "GET", "/v2/models/nope", b"", {}, 404, "unknown model"),
    ("unknown model config", "GET", "/v2/models/nope/config", b"", {}, 404, "unknown model"),
    ("unknown version", "GET", "/v2/models/mlp/versions/7", b"", {}, 404, "no version '7'"),
    ("malformed JSON", "POST", "/v2/models/mlp/infer", b"{nope", {}, 400, "malformed JSON"),
    ("not an object", "POST", "/v2/models/mlp/infer", b"[1, 2]", {}, 400, "must be a JSON object"),
    ("inputs missing", "POST", "/v2/models/mlp/infer", b"{}", {}, 400, "'inputs' must be a non-empty list"),
    ("inputs empty", "POST", "/v2/models/mlp/infer", b'{"inputs": []}', {}, 400, "'inputs' must be a non-empty list"),
    (
        "unknown input",
        "POST",
        "/v2/models/mlp/infer",
        infer_json().replace(b"INPUT0", b"INPUTX"),
        {},
        400,
        "unknown input 'INPUTX'",
    ),
    (
        "datatype",
        "POST",
        "/v2/models/mlp/infer",
        infer_json().replace(b'"FP32"', b'"INT32"'),
        {},
        400,
        "datatype must be FP32",
    ),
    (
        "inner dim",
        "POST",
        "/v2/models/mlp/infer",
        json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 63], "data": [0] * 126}]}).encode(),
        {},
        400,
        "does not match [-1, 64]",
    ),
    ("element count", "POST", "/v2/models/mlp/infer", infer_json(data=[0.0] * 127), {}, 400, "has 127 elements"),
    (
        "bad shape",
        "POST",
        "/v2/models/mlp/infer",
        infer_json().replace(b"[2, 64]", b'"2x64"'),
        {},
        400,
        "'shape' must be a list",
    ),
    (
        "strings as data",
        "POST",
        "/v2/models/mlp/infer",
        infer_json(data=["a"] * 128),
        {},
        400,
        "must be numbers, not str",
    ),
    (
        "no data",
        "POST",
        "/v2/models/mlp/infer",
        b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64]}]}',
        {},
        400,
        "needs 'data'",
    ),
    ("binary size", "POST", "/v2/models/mlp/infer", *_binary_with_size(100), 400, "binary_data_size is 100"),
    (
        "header length too big",
        "POST",
        "/v2/models/mlp/infer",
        b"{}",
        {"Inference-Header-Content-Length": "99"},
        400,
        "is 99 but the body has 2 bytes",
    ),
    (
        "header length junk",
        "POST",
        "/v2/models/mlp/infer",
        b"{}",
        {"Inference-Header-Content-Length": "ten"},
        400,
        "must be a number of bytes, not 'ten'",
    ),
    *(
        (
            f"header length {junk!r}",
            "POST",
            "/v2/models/mlp/infer",
            b"{}",
            {"Inference-Header-Content-Length": junk},
            400,
            "must be a number of bytes",
        )
        for junk in ("+2", "-0", "2_0", "\u0662")
    ),
    (
        "unknown output",
        "POST",
        "/v2/models/mlp/infer",
        infer_json(outputs=[{"name": "NOPE"}]),
        {},
        400,
        "unknown output 'NOPE'",
    ),
    (
        "an output twice",
        "POST",
        "/v2/models/mlp/infer",
        infer_json(outputs=[{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]),
        {},
        400,
        "each at most once",
    ),
    (
        "an output 3000 times",
        "POST",
        "/v2/models/mlp/infer",
        infer_json(outputs=[{"name": "OUTPUT0"}] * 3000),
        {},
        400,
        "'outputs' names 3000 outputs; model 'mlp' has 1",
    ),
    (
        "too many inputs",
        "POST",
        "/v2/models/mlp/infer",
        json.dumps({"inputs": [{"name": f"I{i}"} for i in range(5000)]}).encode(),
        {},
        400,
        "'inputs' has 5000 entries; model 'mlp' takes 1",
    ),
    (
        "raw body size",
        "POST",
        "/v2/models/mlp/infer",
        b"\x00" * 7,
        {"Inference-Header-Content-Length": "0"},
        400,
        "does not fit input",
    ),
    (
        "v1 missing instances",
        "POST",
        "/v1/models/mlp:predict",
        b'{"rows": []}',
        {},
        400,
        "'instances' must be a non-empty list",
    ),
    ("v1 wrong width", "POST", "/v1/models/mlp:predict", b'{"instances": [[1, 2, 3]]}', {}, 400, "needs [-1, 64]"),
    (
        "v1 ragged",
        "POST",
        "/v1/models/mlp:predict",
        b'{"instances": [[' + b"1, " * 63 + b"1], [3]]}",
        {},
        400,
        "equal-length lists",
    ),
    ("v1 unknown model", "POST", "/v1/models/nope:predict", b'{"instances": [[1]]}', {}, 404, "unknown model"),
    ("bad gzip", "POST", "/v2/models/mlp/infer", b"not gzip", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
    (
        "unknown encoding",
        "POST",
        "/v2/models/mlp/infer",
        infer_json(),
        {"Content-Encoding": "br"},
        415,
        "unsupported Content-Encoding",
    ),
    ("wrong method", "GET", "/v2/models/mlp/infer", b"", {}, 405, "method GET is not allowed"),
    ("unknown route", "GET", "/v2/health", b"", {}, 404, "no route"),
]


@pytest.mark.parametrize(
    "what, method, path, body, headers, status, message", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS]
)
async def test_refusals(app, what, method, path, body, headers, status, message):
    response = await call(app, method, path, body, headers)
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert list(error) == ["error"] and message in error["error"], error


async def test_unknown_model_is_not_ready(app):
    assert (await call(app, "GET", "/v2/models/nope/ready")).status == 404
    assert (await call(app, "GET", "/v1/models/nope")).status == 404
