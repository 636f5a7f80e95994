"""ONNX models in-process: metadata from the file, every datatype both ways, results equal to
onnxruntime's own, and clear errors for what cannot be served."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnx", reason="the tests build their graphs with the onnx package")

from tests import onnx_models  # noqa: E402
from worker.api import InferenceApp, ServingState  # noqa: E402
from worker.models import ModelError  # noqa: E402
from worker.models.loader import load_models  # noqa: E402
from worker.models.onnx_model import MAX_BATCH_SIZE, OnnxModel  # noqa: E402

from .asgi import call  # noqa: E402

pytestmark = pytest.mark.anyio


def direct(path: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)


def test_metadata_comes_from_the_file(tmp_path):
    model = OnnxModel("iris", onnx_models.classifier(str(tmp_path / "iris.onnx")))
    assert [spec.as_json() for spec in model.inputs] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert [spec.as_json() for spec in model.outputs] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]
    assert model.max_batch_size == MAX_BATCH_SIZE  # every first dimension is dynamic: the batch
    fixed = OnnxModel("fixed", onnx_models.identity(str(tmp_path / "fixed.onnx"), "FP32", batched=False))
    assert fixed.max_batch_size == 0 and fixed.inputs[0].shape == (3, 2)
    # Two differently named first dimensions are not one batch: never joined with other requests.
    other = onnx_models.identity(str(tmp_path / "other.onnx"), "FP32", output_first="rows")
    assert OnnxModel("other", other).max_batch_size == 0


async def test_results_are_onnxruntimes_own_through_the_api(tmp_path):
    path = onnx_models.classifier(str(tmp_path / "iris.onnx"))
    (model,) = load_models([f"iris={path}"])
    app = InferenceApp([model], ServingState())
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [5, 4], "data": x.ravel().tolist()}]}
    response = await call(app, "POST", "/v2/models/iris/infer", json.dumps(body).encode())
    assert response.status == 200, response.body
    scores, label = direct(path, {"features": x})
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["scores"]["shape"] == [5, 3] and np.allclose(outputs["scores"]["data"], scores.ravel(), atol=1e-6)
    assert outputs["label"] == {"name": "label", "datatype": "INT64", "shape": [5], "data": label.tolist()}
    config = (await call(app, "GET", "/v2/models/iris/config")).json()
    assert (config["platform"], config["backend"]) == ("onnxruntime_onnx", "onnxruntime")
    v1 = await call(app, "POST", "/v1/models/iris:predict", json.dumps({"instances": x.tolist()}).encode())
    assert v1.status == 200 and np.allclose(v1.json()["predictions"], scores, atol=1e-6)
    config = (await call(app, "GET", "/v2/models/iris/config")).json()
    assert config["platform"] == "onnxruntime_onnx" and config["max_batch_size"] == MAX_BATCH_SIZE


VALUES = {
    "BOOL": [[True, False], [False, True]],
    "UINT8": [[0, 255], [1, 2]],
    "UINT16": [[0, 65535], [1, 2]],
    "UINT32": [[0, 4294967295], [1, 2]],
    "UINT64": [[0, 18446744073709551615], [1, 2]],
    "INT8": [[-128, 127], [0, 1]],
    "INT16": [[-32768, 32767], [0, 1]],
    "INT32": [[-2147483648, 2147483647], [0, 1]],
    "INT64": [[-9223372036854775808, 9223372036854775807], [0, 1]],
    "FP16": [[0.5, -1.25], [65504.0, 0.0]],
    "FP32": [[0.5, -1.25], [3.0e38, 0.0]],
    "FP64": [[0.5, -1.25], [1.0e300, 0.0]],
}


@pytest.mark.parametrize("datatype", sorted(VALUES))
async def test_every_datatype_both_ways(tmp_path, datatype):
    path = onnx_models.identity(str(tmp_path / "m.onnx"), datatype)
    model = OnnxModel("m", path)
    assert model.inputs[0].datatype == model.outputs[0].datatype == datatype
    app = InferenceApp([model], ServingState())
    data = VALUES[datatype]
    request = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2, 2], "data": data}]}
    response = await call(app, "POST", "/v2/models/m/infer", json.dumps(request).encode())
    assert response.status == 200, response.body
    (output,) = response.json()["outputs"]
    assert output["datatype"] == datatype and output["shape"] == [2, 2]
    expected = direct(path, {"x": np.array(data, dtype=model.inputs[0].dtype)})[0]
    # As exact as the datatype: a float32 goes out in its shortest form (3e+38), read back the same.
    assert np.array(output["data"], dtype=expected.dtype).tolist() == expected.ravel().tolist()
    # The binary encoding, both ways.
    array = np.array(data, dtype=model.inputs[0].dtype)
    head = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": datatype, "shape": [2, 2], "parameters": {"binary_data_size": array.nbytes}}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))}
    response = await call(app, "POST", "/v2/models/m/infer", head + array.tobytes(), headers)
    assert response.status == 200, response.body
    length = int(response.headers["inference-header-content-length"])
    assert response.body[length:] == expected.tobytes()


@pytest.mark.parametrize("element", ["BFLOAT16"])
def test_a_type_the_protocol_cannot_carry_is_a_clear_load_error(tmp_path, element):
    path = onnx_models.identity(str(tmp_path / "m.onnx"), element)
    with pytest.raises(ModelError, match=r"model 'm': 'x' is a tensor\(\w+\), which this server cannot carry"):
        OnnxModel("m", path)


def test_a_missing_extra_names_the_pip_command(tmp_path, monkeypatch):
    path = onnx_models.classifier(str(tmp_path / "iris.onnx"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ModelError) as caught:
        load_models([f"iris={path}"])
    assert (
        str(caught.value) == "model 'iris': serving iris.onnx needs onnxruntime: "
        "pip install onnxruntime (in a checkout: pip install '.[onnx]')"
    )


def test_a_file_that_is_not_onnx_is_one_line(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"^model 'b': onnxruntime cannot load .*broken.onnx: [^\n]*$"):
        OnnxModel("b", str(path))


def test_its_threads_are_the_workers_share(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what the supervisor sets for a worker
    model = OnnxModel("iris", onnx_models.classifier(str(tmp_path / "iris.onnx")))
    assert model.session.get_session_options().intra_op_num_threads == 1


def test_a_repository_folder_with_model_onnx(tmp_path):
    (tmp_path / "iris").mkdir()
    onnx_models.classifier(str(tmp_path / "iris" / "model.onnx"))
    (model,) = load_models([], [str(tmp_path)])
    assert isinstance(model, OnnxModel) and model.name == "iris"


async def test_string_tensors_in_and_out_of_a_real_graph(tmp_path):
    pytest.importorskip(
        "tritonclient.http", reason="tritonclient is not installed (the Windows suite's end to end has it)"
    )
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    path = onnx_models.vocabulary(str(tmp_path / "words.onnx"))
    model = OnnxModel("words", path)
    assert [spec.as_json() for spec in model.inputs] == [{"name": "word", "datatype": "BYTES", "shape": [-1]}]
    assert [spec.datatype for spec in model.outputs] == ["INT64", "BYTES"]
    app = InferenceApp([model], ServingState(), batch_delays={"words": 0.005})
    words = ["dog", "café", "", "emu"]
    expected_ids, expected_echo = direct(path, {"word": np.array(words, dtype=object)})
    assert expected_ids.tolist() == [1, 2, 3, -1]
    # JSON both ways.
    request = {"inputs": [{"name": "word", "datatype": "BYTES", "shape": [4], "data": words}]}
    response = await call(app, "POST", "/v2/models/words/infer", json.dumps(request).encode())
    assert response.status == 200, response.body
    ids, echo = response.json()["outputs"]
    assert ids["data"] == expected_ids.tolist() and echo["data"] == expected_echo.tolist() == words
    # Binary both ways, as tritonclient writes and reads them.
    tensor = InferInput("word", [4], "BYTES")
    tensor.set_data_from_numpy(np.array([w.encode() for w in words], dtype=object), binary_data=True)
    outputs = [InferRequestedOutput("id", binary_data=True), InferRequestedOutput("echo", binary_data=True)]
    body, length = InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    response = await call(app, "POST", "/v2/models/words/infer", body, {"Inference-Header-Content-Length": str(length)})
    assert response.status == 200, response.body
    result = InferenceServerClient.parse_response_body(
        response.body, header_length=int(response.headers["inference-header-content-length"])
    )
    assert result.as_numpy("id").tolist() == expected_ids.tolist()
    assert result.as_numpy("echo").tolist() == [w.encode() for w in words]
    # Bytes that are no UTF-8 cannot be an ONNX string: the client's error.
    tensor = InferInput("word", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"\xff"], dtype=object), binary_data=True)
    body, length = InferenceServerClient.generate_request_body([tensor])
    response = await call(app, "POST", "/v2/models/words/infer", body, {"Inference-Header-Content-Length": str(length)})
    assert response.status == 400 and "must be UTF-8" in response.json()["error"]


@pytest.mark.parametrize("labels", ["int", "str"])
async def test_a_classifier_converted_by_skl2onnx_zipmap_and_all(tmp_path, labels):
    """skl2onnx's default conversion: labels, and probabilities as a sequence of maps (ZipMap),
    served as FP32 rows in the classes' order, as scikit-learn's predict_proba answers."""
    pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(4).standard_normal((30, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)
    estimator = LogisticRegression().fit(x, np.array(["cat", "dog", "emu"])[y] if labels == "str" else y)
    (tmp_path / "c.onnx").write_bytes(to_onnx(estimator, x[:1]).SerializeToString())
    model = OnnxModel("c", str(tmp_path / "c.onnx"))
    # skl2onnx names no dimension: every first one dynamic is the batch, so its rows are bounded
    # (the ZipMap makes a Python dict of each) and requests may be joined.
    assert model.max_batch_size == MAX_BATCH_SIZE
    label_type = "BYTES" if labels == "str" else "INT64"
    assert [spec.as_json() for spec in model.outputs] == [
        {"name": "output_label", "datatype": label_type, "shape": [-1]},
        {"name": "output_probability", "datatype": "FP32", "shape": [-1, -1]},
    ]
    app = InferenceApp([model], ServingState(), batch_delays={"c": 0.002})
    request = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [5, 4], "data": x[:5].tolist()}]}
    response = await call(app, "POST", "/v2/models/c/infer", json.dumps(request).encode())
    assert response.status == 200, response.body
    got, probabilities = response.json()["outputs"]
    assert got["data"] == estimator.predict(x[:5]).tolist()
    assert probabilities["shape"] == [5, 3]
    assert np.allclose(probabilities["data"], estimator.predict_proba(x[:5]).ravel(), atol=1e-5)
    request["inputs"][0].update(shape=[0, 4], data=[])
    response = await call(app, "POST", "/v2/models/c/infer", json.dumps(request).encode())
    assert response.status == 200 and response.json()["outputs"][1]["shape"] == [0, 0]
