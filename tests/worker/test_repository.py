"""A versioned model repository in-process: Triton's layout, every version served and the highest
the default, a model's config.toml, the repository index, and every mistake a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker.api import InferenceApp, ServingState
from worker.api.batching import delays
from worker.models import ModelError, load_models
from worker.models.mlp import demo_layers

from .asgi import call

pytestmark = pytest.mark.anyio

X = np.linspace(-1, 1, 3 * 8, dtype=np.float32).reshape(3, 8)


def mlp(path, seed, sizes=(8, 5, 2)):
    """An .npz MLP whose answers depend on ``seed``: versions tell apart by their outputs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (w, b) in enumerate(demo_layers(sizes, seed)):
        arrays[f"w{i}"], arrays[f"b{i}"] = w, b
    np.savez(path, **arrays)
    return path


def expected(seed, x=X):
    out = x
    layers = demo_layers((8, 5, 2), seed)
    for i, (w, b) in enumerate(layers):
        out = out @ w + b
        if i < len(layers) - 1:
            out = np.maximum(out, 0)
    return out


def infer_body(x=X):
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    ).encode()


@pytest.fixture
def repository(tmp_path):
    """``scorer`` in versions 1, 2 and 10 (10 the highest: numbers, not text, decide), and
    ``plain`` with its file at the top (version 1)."""
    for version, seed in (("1", 1), ("2", 2), ("10", 10)):
        mlp(tmp_path / "scorer" / version / "model.npz", seed)
    mlp(tmp_path / "plain" / "model.npz", 7)
    (tmp_path / "notes").mkdir()  # a folder with no model: not one
    return tmp_path


async def test_every_version_is_served_and_the_highest_is_the_default(repository):
    models = load_models([], [str(repository)])
    assert sorted((m.name, m.version) for m in models) == [
        ("plain", "1"),
        ("scorer", "1"),
        ("scorer", "10"),
        ("scorer", "2"),
    ]
    app = InferenceApp(models, ServingState())
    for path, version, seed in (
        ("/v2/models/scorer/infer", "10", 10),
        ("/v2/models/scorer/versions/10/infer", "10", 10),
        ("/v2/models/scorer/versions/2/infer", "2", 2),
        ("/v2/models/scorer/versions/1/infer", "1", 1),
        ("/v2/models/plain/infer", "1", 7),
    ):
        response = await call(app, "POST", path, infer_body())
        assert response.status == 200, (path, response.body)
        answer = response.json()
        assert answer["model_version"] == version, path
        assert np.allclose(answer["outputs"][0]["data"], expected(seed).ravel(), atol=1e-5), path
    v1 = await call(app, "POST", "/v1/models/scorer:predict", json.dumps({"instances": X.tolist()}).encode())
    assert np.allclose(v1.json()["predictions"], expected(10), atol=1e-5)

    metadata = (await call(app, "GET", "/v2/models/scorer")).json()
    assert metadata["versions"] == ["1", "2", "10"]
    assert (await call(app, "GET", "/v2/models/scorer/versions/2")).json()["versions"] == ["1", "2", "10"]
    config = (await call(app, "GET", "/v2/models/scorer/versions/1/config")).json()
    assert config["version_policy"] == {"all": {}}
    assert (await call(app, "GET", "/v2/models/plain/config")).json()["version_policy"] == {
        "latest": {"num_versions": 1}
    }
    assert (await call(app, "GET", "/v2/models/scorer/versions/2/ready")).json() == {"name": "scorer", "ready": True}
    missing = await call(app, "POST", "/v2/models/scorer/versions/3/infer", infer_body())
    assert missing.status == 404
    assert missing.json() == {"error": "model 'scorer' has no version '3'; it has ['1', '2', '10']"}
    assert (await call(app, "GET", "/v1/models")).json() == {"models": ["plain", "scorer"]}


async def test_statistics_are_per_version(repository):
    app = InferenceApp(load_models([], [str(repository)]), ServingState())
    for path in ("/v2/models/scorer/versions/1/infer", "/v2/models/scorer/infer", "/v2/models/scorer/infer"):
        assert (await call(app, "POST", path, infer_body())).status == 200

    def counts(answer):
        return {entry["version"]: entry["inference_count"] for entry in answer.json()["model_stats"]}

    assert counts(await call(app, "GET", "/v2/models/scorer/stats")) == {"1": 3, "2": 0, "10": 6}
    assert counts(await call(app, "GET", "/v2/models/scorer/versions/1/stats")) == {"1": 3}
    every = (await call(app, "GET", "/v2/models/stats")).json()["model_stats"]
    assert sorted((e["name"], e["version"]) for e in every) == [
        ("plain", "1"),
        ("scorer", "1"),
        ("scorer", "10"),
        ("scorer", "2"),
    ]


async def test_the_repository_index_lists_every_version(repository):
    app = InferenceApp(load_models([], [str(repository)]), ServingState())
    expected_index = [
        {"name": "plain", "version": "1", "state": "READY", "reason": ""},
        {"name": "scorer", "version": "1", "state": "READY", "reason": ""},
        {"name": "scorer", "version": "2", "state": "READY", "reason": ""},
        {"name": "scorer", "version": "10", "state": "READY", "reason": ""},
    ]
    for body in (b"", b"{}", b'{"ready": true}', b'{"ready": false}'):
        response = await call(app, "POST", "/v2/repository/index", body)
        assert response.status == 200 and response.json() == expected_index, body
    for body in (b"[]", b'{"ready": "yes"}', b"{bad"):
        response = await call(app, "POST", "/v2/repository/index", body)
        assert response.status == 400 and list(response.json()) == ["error"], body
    response = await call(app, "GET", "/v2/repository/index")
    assert response.status == 405 and response.headers["allow"] == "POST"
    response = await call(app, "POST", "/v2/repository/index", b"{" * 70_000)
    assert response.status == 413
    assert "/v2/repository/index" in (await call(app, "GET", "/openapi.json")).json()["paths"]


async def test_config_toml_limits_the_batch_sets_the_delay_and_chooses_outputs(tmp_path):
    mlp(tmp_path / "scorer" / "1" / "model.npz", 1)
    mlp(tmp_path / "scorer" / "2" / "model.npz", 2)
    (tmp_path / "scorer" / "config.toml").write_text("max_batch_size = 2\nbatch_delay_ms = 3\noutputs = ['OUTPUT0']\n")
    models = load_models([], [str(tmp_path)])
    assert {m.max_batch_size for m in models} == {2}
    assert delays(models, 0.0, []) == {"scorer": 0.003}
    assert delays(models, 1.0, ["scorer=5"]) == {"scorer": 0.005}  # the command line wins
    app = InferenceApp(models, ServingState(), batch_delays=delays(models, 0.0, []))
    config = (await call(app, "GET", "/v2/models/scorer/config")).json()
    assert config["max_batch_size"] == 2 and config["dynamic_batching"] == {"max_queue_delay_microseconds": 3000}
    over = await call(app, "POST", "/v2/models/scorer/versions/1/infer", infer_body())
    assert over.status == 400 and "batch of 3 is over max_batch_size 2" in over.json()["error"]
    response = await call(app, "POST", "/v2/models/scorer/infer", infer_body(X[:2]))
    assert response.status == 200 and np.allclose(response.json()["outputs"][0]["data"], expected(2, X[:2]).ravel())


async def test_config_toml_serves_only_the_outputs_it_names(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from tests import onnx_models

    (tmp_path / "iris" / "3").mkdir(parents=True)
    onnx_models.classifier(str(tmp_path / "iris" / "3" / "model.onnx"))
    (tmp_path / "iris" / "config.toml").write_text('outputs = ["label"]\n')
    (model,) = load_models([], [str(tmp_path)])
    assert model.version == "3" and [spec.name for spec in model.outputs] == ["label"]
    app = InferenceApp([model], ServingState())
    x = np.random.default_rng(1).standard_normal((2, 4)).tolist()
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4], "data": x}]}
    response = await call(app, "POST", "/v2/models/iris/infer", json.dumps(body).encode())
    assert response.status == 200 and [o["name"] for o in response.json()["outputs"]] == ["label"]
    body["outputs"] = [{"name": "scores"}]
    response = await call(app, "POST", "/v2/models/iris/infer", json.dumps(body).encode())
    assert response.status == 400 and "unknown output 'scores'" in response.json()["error"]


@pytest.mark.parametrize(
    "config, message",
    [
        ("max_batch_size = 2\nbatch = 1\n", r"unknown keys \['batch'\]"),
        ("max_batch_size = -1\n", "max_batch_size must be an integer >= 0, not -1"),
        ("max_batch_size = true\n", "max_batch_size must be an integer >= 0, not True"),
        ("max_batch_size = 5000\n", "max_batch_size 5000 is over the most model 'scorer' takes, 1024"),
        ("batch_delay_ms = 'soon'\n", "batch_delay_ms must be a number >= 0, not 'soon'"),
        ("batch_delay_ms = nan\n", "batch_delay_ms must be a number >= 0, not nan"),
        ("outputs = []\n", r"outputs must be a non-empty list of output names, not \[\]"),
        ("outputs = ['OUTPUT9']\n", r"outputs \['OUTPUT9'\] are not distinct names of \['OUTPUT0'\]"),
        ("outputs = ['OUTPUT0', 'OUTPUT0']\n", r"are not distinct names"),
        ("max_batch_size = \n", "config.toml: "),
    ],
)
def test_a_wrong_config_toml_is_one_line_naming_the_file(tmp_path, config, message):
    mlp(tmp_path / "scorer" / "1" / "model.npz", 1)
    (tmp_path / "scorer" / "config.toml").write_text(config)
    with pytest.raises(ModelError, match=message) as caught:
        load_models([], [str(tmp_path)])
    assert str(tmp_path / "scorer" / "config.toml") in str(caught.value) and "\n" not in str(caught.value)


def test_layout_mistakes_are_one_line(tmp_path):
    mlp(tmp_path / "scorer" / "model.npz", 1)
    mlp(tmp_path / "scorer" / "2" / "model.npz", 2)
    with pytest.raises(ModelError, match=r"model 'scorer': .* holds both model.npz and version folders; keep one"):
        load_models([], [str(tmp_path)])
    (tmp_path / "scorer" / "model.npz").unlink()
    (tmp_path / "scorer" / "3").mkdir()
    with pytest.raises(ModelError, match=r"model 'scorer': version folder .*3 holds none of model.npz, model.onnx"):
        load_models([], [str(tmp_path)])
    (tmp_path / "scorer" / "3").rmdir()
    (tmp_path / "scorer" / "02").mkdir()
    mlp(tmp_path / "scorer" / "02" / "model.npz", 2)
    with pytest.raises(ModelError, match=r"model 'scorer' version 2 is named twice"):
        load_models([], [str(tmp_path)])


def test_a_model_txt_version_names_a_factory(tmp_path):
    (tmp_path / "demo" / "4").mkdir(parents=True)
    (tmp_path / "demo" / "4" / "model.txt").write_text("worker.models.mlp:demo_model\n")
    (model,) = load_models([], [str(tmp_path)])
    assert (model.name, model.version) == ("demo", "4")
