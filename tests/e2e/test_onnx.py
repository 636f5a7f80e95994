"""An ONNX model served by a real pool: tritonclient and the V1 protocol get onnxruntime's own
results, from a file and from a repository folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

from tests import onnx_models  # noqa: E402

from .harness import http  # noqa: E402


def test_an_onnx_file_and_an_onnx_repository_serve_onnxruntimes_results(launch, platform, tmp_path):
    import tritonclient.http as triton

    path = onnx_models.classifier(str(tmp_path / "iris.onnx"))
    repository = tmp_path / "repository"
    (repository / "other").mkdir(parents=True)
    onnx_models.identity(str(repository / "other" / "model.onnx"), "INT32")
    pool = launch("--model", f"iris={platform.path(path)}", "--model-dir", platform.path(str(repository)), workers=1)
    url = pool.wait_ready()

    client = triton.InferenceServerClient(url.removeprefix("http://"))
    metadata = client.get_model_metadata("iris")
    assert metadata["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("scores", "FP32", [-1, 3]),
        ("label", "INT64", [-1]),
    ]
    x = np.random.default_rng(2).standard_normal((6, 4)).astype(np.float32)
    features = triton.InferInput("features", [6, 4], "FP32")
    features.set_data_from_numpy(x, binary_data=True)
    result = client.infer("iris", [features])
    scores, label = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"features": x})
    assert np.allclose(result.as_numpy("scores"), scores, atol=1e-6)
    assert result.as_numpy("label").tolist() == label.tolist()

    status, _, body = http("POST", f"{url}/v1/models/iris:predict", json.dumps({"instances": x.tolist()}).encode())
    assert status == 200 and np.allclose(json.loads(body)["predictions"], scores, atol=1e-6)

    ints = triton.InferInput("x", [1, 2], "INT32")
    ints.set_data_from_numpy(np.array([[7, -8]], dtype=np.int32), binary_data=False)
    assert client.infer("other", [ints]).as_numpy("y").tolist() == [[7, -8]]


def test_a_scikit_learn_classifier_converted_with_skl2onnx(launch, platform, tmp_path):
    import tritonclient.http as triton

    pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    x = np.random.default_rng(6).standard_normal((60, 3)).astype(np.float32)
    estimator = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, np.where(x[:, 0] > 0, "up", "down"))
    path = tmp_path / "forest.onnx"
    path.write_bytes(to_onnx(estimator, x[:1]).SerializeToString())
    pool = launch("--model", f"forest={platform.path(str(path))}", workers=1)
    client = triton.InferenceServerClient(pool.wait_ready().removeprefix("http://"))
    features = triton.InferInput("X", [8, 3], "FP32")
    features.set_data_from_numpy(x[:8], binary_data=True)
    result = client.infer("forest", [features])
    assert [label.decode() for label in result.as_numpy("output_label")] == estimator.predict(x[:8]).tolist()
    assert np.allclose(result.as_numpy("output_probability"), estimator.predict_proba(x[:8]), atol=1e-5)
