"""A versioned model repository in-process: Triton's layout, every version served and the highest
the default, a model's config.toml, the repository index, and every mistake a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker.api import InferenceApp, ServingState
from worker.api.batching import delays
from worker.models import ModelError, load_models
from worker.models.mlp import demo_layers, demo_model

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


async def test_a_pinned_version_gone_from_the_folder_is_a_503_never_another_version(repository):
    """A worker started after the pool's default version was removed served the next highest as
    the default, while its peers served the pinned one: the same URL, two models (found in
    review)."""
    pinned = ["plain/1", "scorer/1", "scorer/2", "scorer/10", "lost/3"]
    for version in ("10", "2"):
        (repository / "scorer" / version / "model.npz").unlink()
    models = load_models([], [str(repository)], pinned=pinned)
    app = InferenceApp(models, ServingState(), gone=set(pinned) - {f"{m.name}/{m.version}" for m in models})
    gone = "is gone from the repository since the pool read it: this worker cannot serve it"
    for path, version in (
        ("/v2/models/scorer/infer", "10"),
        ("/v2/models/scorer/versions/10/infer", "10"),
        ("/v2/models/scorer/versions/2/infer", "2"),
        ("/v2/models/lost/infer", "3"),
    ):
        answer = await call(app, "POST", path, infer_body())
        assert answer.status == 503 and f"version {version} {gone}" in answer.json()["error"], answer.body
    assert (await call(app, "GET", "/v2/models/scorer")).status == 503
    assert (await call(app, "GET", "/v2/models/scorer/ready")).status == 503
    assert (await call(app, "POST", "/v2/models/scorer/versions/1/infer", infer_body())).status == 200
    assert (await call(app, "POST", "/v2/models/plain/infer", infer_body())).status == 200
    assert (await call(app, "POST", "/v2/models/nothing/infer", infer_body())).status == 404


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
    app.state.draining = True  # as its readiness says: not ready
    answer = (await call(app, "POST", "/v2/repository/index")).json()
    assert {(e["state"], e["reason"]) for e in answer} == {("UNAVAILABLE", "the worker is draining")}
    assert (await call(app, "POST", "/v2/repository/index", b'{"ready": true}')).json() == []


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
        ("max_batch_size = -1\n", r"max_batch_size must be an integer >= 1 \(batch_delay_ms = 0 joins none\), not -1"),
        ("max_batch_size = 0\n", r"max_batch_size must be an integer >= 1 .*, not 0"),
        ("max_batch_size = true\n", r"max_batch_size must be an integer >= 1 .*, not True"),
        ("max_batch_size = 5000\n", "max_batch_size 5000 is over the most model 'scorer' takes, 1024"),
        ("batch_delay_ms = 'soon'\n", "batch_delay_ms must be a number from 0 to 1000, not 'soon'"),
        ("batch_delay_ms = nan\n", "batch_delay_ms must be a number from 0 to 1000, not nan"),
        ("batch_delay_ms = 1e308\n", "batch_delay_ms must be a number from 0 to 1000, not 1e[+]308"),
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


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe junk", "config.toml: not UTF-8 text"),
        (b"\xef\xbb\xbfmax_batch_size = 2\n", None),  # a byte-order mark, as Windows editors write: fine
    ],
)
def test_config_toml_as_bytes(tmp_path, content, message):
    mlp(tmp_path / "scorer" / "1" / "model.npz", 1)
    (tmp_path / "scorer" / "config.toml").write_bytes(content)
    if message is None:
        (model,) = load_models([], [str(tmp_path)])
        assert model.max_batch_size == 2
        return
    with pytest.raises(ModelError, match=message):
        load_models([], [str(tmp_path)])


def test_a_delay_for_a_model_that_cannot_batch_is_an_error(tmp_path):
    (tmp_path / "fixed" / "1").mkdir(parents=True)
    (tmp_path / "fixed" / "1" / "model.txt").write_text("tests.worker.test_repository:unbatched\n")
    (tmp_path / "fixed" / "config.toml").write_text("batch_delay_ms = 5\n")
    with pytest.raises(ModelError, match=r"batch_delay_ms for model 'fixed', which cannot batch"):
        load_models([], [str(tmp_path)])


def unbatched(name):
    model = demo_model(name)
    model.max_batch_size = 0
    return model


@pytest.mark.parametrize(
    "line, message",
    [
        (b"", r"model.txt names no factory: its one line is package.module:Factory"),
        (b"# only a comment\n\n", r"model.txt names no factory"),
        (b"\xff\n", r"model.txt: not UTF-8 text"),
        (b":demo_model\n", r"model 'demo': ':demo_model' is not package.module:Factory"),
        (b"os:getcwd\n", r"model 'demo': os:getcwd\('demo'\) raised TypeError: "),
        (b"no.such.module:X\n", r"model 'demo': cannot import no.such.module:X: No module named 'no'"),
    ],
)
def test_a_model_txt_that_names_no_factory_is_one_line(tmp_path, line, message):
    (tmp_path / "demo" / "1").mkdir(parents=True)
    (tmp_path / "demo" / "1" / "model.txt").write_bytes(line)
    with pytest.raises(ModelError, match=message) as caught:
        load_models([], [str(tmp_path)])
    assert "\n" not in str(caught.value)


def test_a_model_txt_with_a_byte_order_mark_and_comments(tmp_path):
    (tmp_path / "demo" / "1").mkdir(parents=True)
    (tmp_path / "demo" / "1" / "model.txt").write_bytes(b"\xef\xbb\xbf# the demo\r\nworker.models.mlp:demo_model\r\n")
    (model,) = load_models([], [str(tmp_path)])
    assert model.name == "demo"


@pytest.mark.parametrize("name", ["stats", "a:b", "a/b"])
def test_a_name_no_url_can_reach_is_refused(tmp_path, name):
    with pytest.raises(ModelError, match=f"model name {name!r} cannot be served: "):
        load_models([f"{name}=worker.models.mlp:demo_model"])


@pytest.mark.parametrize("folder", ["0", "007", str(2**63)])
def test_version_folders_are_numbered_as_tritons(tmp_path, folder):
    mlp(tmp_path / "scorer" / folder / "model.npz", 1)
    with pytest.raises(ModelError, match=r"a version folder is named 1 to 9223372036854775807, without leading zeros"):
        load_models([], [str(tmp_path)])


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
    mlp(tmp_path / "scorer" / "1" / "model.npz", 1)
    mlp(tmp_path / "scorer.npz", 2)  # a --model of the same name: version 1 as well
    with pytest.raises(ModelError, match=r"model 'scorer' version 1 is named twice"):
        load_models([f"scorer={tmp_path / 'scorer.npz'}"], [str(tmp_path)])
    # A model file not named model.*: a mistake, not a folder of something else.
    mlp(tmp_path / "typo" / "iris.npz", 3)
    with pytest.raises(ModelError, match=r"model 'typo': .*typo holds iris.npz but no model.npz or model.onnx or"):
        load_models([], [str(tmp_path)])


def test_a_model_txt_version_names_a_factory(tmp_path):
    (tmp_path / "demo" / "4").mkdir(parents=True)
    (tmp_path / "demo" / "4" / "model.txt").write_text("worker.models.mlp:demo_model\n")
    (model,) = load_models([], [str(tmp_path)])
    assert (model.name, model.version) == ("demo", "4")


def test_a_pinned_repository_loads_what_was_pinned_and_what_is_left_of_it(repository, caplog):
    pinned = ["plain/1", "scorer/1", "scorer/2"]  # as the pool read it before version 10 came
    models = load_models([], [str(repository)], pinned=pinned)
    assert sorted(f"{m.name}/{m.version}" for m in models) == pinned
    # Added since, even half-copied: not looked at; a reload serves them.
    mlp(repository / "newcomer" / "model.npz", 5)
    (repository / "halfway" / "1").mkdir(parents=True)
    (repository / "scorer" / "11").mkdir()
    assert sorted(f"{m.name}/{m.version}" for m in load_models([], [str(repository)], pinned=pinned)) == pinned
    # Removed since: the others are served, and the log says which are gone.
    (repository / "scorer" / "2" / "model.npz").unlink()
    with caplog.at_level("WARNING", logger="worker.models"):
        models = load_models([], [str(repository)], pinned=pinned)
    assert sorted(f"{m.name}/{m.version}" for m in models) == ["plain/1", "scorer/1"]
    assert "model versions scorer/2 are gone from the repository: answered 503" in caplog.text
    # None left: an error, never the demo model in their place.
    with pytest.raises(ModelError, match=r"none of the model versions the pool serves \(gone/1\) is in"):
        load_models([], [str(repository)], pinned=["gone/1"])


def test_the_same_pinned_version_in_two_repositories_is_loaded_once(tmp_path):
    mlp(tmp_path / "a" / "iris" / "2" / "model.npz", 1)
    mlp(tmp_path / "b" / "iris" / "2" / "model.npz", 2)  # copied in after the pool read them
    (model,) = load_models([], [str(tmp_path / "a"), str(tmp_path / "b")], pinned=["iris/2"])
    assert np.allclose(model.predict({"INPUT0": X})["OUTPUT0"], expected(1), atol=1e-5)  # the first one's
