"""scikit-learn models in-process: predict and predict_proba as sklearn itself answers, skops'
safe loading naming what it does not trust, pickles only when allowed, clear errors."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="the sklearn extra is not installed")
skops_io = pytest.importorskip("skops.io", reason="the sklearn extra is not installed")

from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402

from worker.api import InferenceApp, ServingState  # noqa: E402
from worker.models import ModelError  # noqa: E402
from worker.models.loader import load_models  # noqa: E402
from worker.models.sklearn_model import SklearnModel  # noqa: E402

from .asgi import call  # noqa: E402

pytestmark = pytest.mark.anyio

X = np.random.default_rng(0).standard_normal((40, 4))
LABELS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)  # three classes


def classifier():
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, LABELS)


def identity(x):
    return x


async def test_a_classifier_answers_as_sklearn_does(tmp_path):
    estimator = classifier()
    skops_io.dump(estimator, tmp_path / "churn.skops")
    (model,) = load_models([f"churn={tmp_path / 'churn.skops'}"])
    assert [s.as_json() for s in model.inputs] == [{"name": "INPUT0", "datatype": "FP64", "shape": [-1, 4]}]
    assert [s.as_json() for s in model.outputs] == [
        {"name": "OUTPUT0", "datatype": "INT64", "shape": [-1]},
        {"name": "OUTPUT1", "datatype": "FP64", "shape": [-1, 3]},
    ]
    app = InferenceApp([model], ServingState())
    rows = X[:5]
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [5, 4], "data": rows.ravel().tolist()}]}
    response = await call(app, "POST", "/v2/models/churn/infer", json.dumps(body).encode())
    assert response.status == 200, response.body
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["OUTPUT0"]["data"] == estimator.predict(rows).tolist()
    assert np.allclose(outputs["OUTPUT1"]["data"], estimator.predict_proba(rows).ravel())
    # KServe V1, as KServe's own sklearn server answers: the predictions.
    v1 = await call(app, "POST", "/v1/models/churn:predict", json.dumps({"instances": rows.tolist()}).encode())
    assert v1.status == 200 and v1.json() == {"predictions": estimator.predict(rows).tolist()}


async def test_a_regressor_has_one_output(tmp_path):
    estimator = LinearRegression().fit(X, X @ np.array([1.0, 2.0, 3.0, 4.0]))
    skops_io.dump(estimator, tmp_path / "price.skops")
    model = SklearnModel("price", str(tmp_path / "price.skops"))
    assert [s.as_json() for s in model.outputs] == [{"name": "OUTPUT0", "datatype": "FP64", "shape": [-1]}]
    assert np.allclose(model.predict({"INPUT0": X[:3]})["OUTPUT0"], estimator.predict(X[:3]))


def test_types_skops_does_not_trust_are_named(tmp_path):
    estimator = make_pipeline(FunctionTransformer(identity), LogisticRegression()).fit(X, LABELS)
    skops_io.dump(estimator, tmp_path / "odd.skops")
    with pytest.raises(ModelError, match=r"^model 'odd': odd.skops holds types skops does not trust: .*identity \("):
        SklearnModel("odd", str(tmp_path / "odd.skops"))


def test_a_tree_model_needs_its_tree_type_trusted(tmp_path):
    from sklearn.tree import DecisionTreeClassifier

    skops_io.dump(DecisionTreeClassifier(max_depth=3).fit(X, LABELS), tmp_path / "tree.skops")
    with pytest.raises(ModelError, match=r"sklearn.tree._tree.Tree \(if you trust them, name each with --trust-type\)"):
        SklearnModel("tree", str(tmp_path / "tree.skops"))
    (model,) = load_models([f"tree={tmp_path / 'tree.skops'}"], trusted=["sklearn.tree._tree.Tree"])
    assert model.predict({"INPUT0": X[:3]})["OUTPUT1"].shape == (3, 3)


def test_a_multi_output_classifier_has_no_probabilities_output(tmp_path):
    from sklearn.multioutput import MultiOutputClassifier

    targets = np.stack([LABELS > 0, LABELS > 1], axis=1).astype(int)
    skops_io.dump(MultiOutputClassifier(LogisticRegression()).fit(X, targets), tmp_path / "multi.skops")
    model = SklearnModel("multi", str(tmp_path / "multi.skops"))
    # predict_proba answers one array per target: not one row per row, so not served.
    assert [s.as_json() for s in model.outputs] == [{"name": "OUTPUT0", "datatype": "INT64", "shape": [-1, 2]}]
    assert model.predict({"INPUT0": X[:4]})["OUTPUT0"].shape == (4, 2)


def test_a_model_that_takes_no_zeros_still_loads(tmp_path):
    rows = np.abs(X) + 1
    estimator = make_pipeline(FunctionTransformer(np.log), LogisticRegression()).fit(rows, LABELS)
    skops_io.dump(estimator, tmp_path / "logs.skops")
    model = SklearnModel("logs", str(tmp_path / "logs.skops"), trusted=["numpy.log"])
    assert model.outputs[0].datatype == "INT64"  # from its classes, as predict(zeros) cannot say
    assert model.predict({"INPUT0": rows[:2]})["OUTPUT0"].tolist() == estimator.predict(rows[:2]).tolist()


def test_an_unreadable_pickle_names_the_model_and_file(tmp_path):
    path = tmp_path / "broken.pkl"
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ModelError, match=r"^model 'b': cannot load broken.pkl: \w+"):
        load_models([f"b={path}"], allow_pickle=True)


@pytest.mark.parametrize("suffix", [".pkl", ".joblib"])
def test_a_pickle_is_refused_unless_allowed(tmp_path, suffix):
    path = tmp_path / f"churn{suffix}"
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(classifier()))
    else:
        import joblib

        joblib.dump(classifier(), path)
    with pytest.raises(ModelError, match=r"is a pickle, and loading it runs whatever code it holds: .*--allow-pickle"):
        load_models([f"churn={path}"])
    (model,) = load_models([f"churn={path}"], allow_pickle=True)
    assert model.predict({"INPUT0": X[:2]})["OUTPUT0"].tolist() == classifier().predict(X[:2]).tolist()


async def test_string_labels_are_bytes(tmp_path):
    labels = np.where(LABELS > 0, "yes", "nö")
    estimator = LogisticRegression().fit(X, labels)
    skops_io.dump(estimator, tmp_path / "words.skops")
    model = SklearnModel("words", str(tmp_path / "words.skops"))
    assert [s.as_json() for s in model.outputs] == [
        {"name": "OUTPUT0", "datatype": "BYTES", "shape": [-1]},
        {"name": "OUTPUT1", "datatype": "FP64", "shape": [-1, 2]},
    ]
    app = InferenceApp([model], ServingState())
    rows = X[:6]
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [6, 4], "data": rows.ravel().tolist()}]}
    response = await call(app, "POST", "/v2/models/words/infer", json.dumps(body).encode())
    assert response.status == 200, response.body
    (labels_out, _) = response.json()["outputs"]
    assert labels_out["data"] == estimator.predict(rows).tolist() and set(labels_out["data"]) == {"yes", "nö"}
    v1 = await call(app, "POST", "/v1/models/words:predict", json.dumps({"instances": rows.tolist()}).encode())
    assert v1.status == 200 and v1.json() == {"predictions": estimator.predict(rows).tolist()}


#: Rows with a string feature (a colour) and a number (a size), and whether each was bought.
MIXED = np.array([["red", 1.0], ["blue", 2.5], ["red", 0.3], ["green", 4.0], ["blue", 0.1], ["green", 3.3]], object)
BOUGHT = np.array([1, 0, 1, 0, 0, 1])


def mixed_pipeline(columns):
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    encode = ColumnTransformer(
        [("colour", OneHotEncoder(handle_unknown="ignore"), [columns[0]]), ("size", StandardScaler(), [columns[1]])]
    )
    return make_pipeline(encode, LogisticRegression())


@pytest.mark.parametrize("fitted_on", ["array", "DataFrame"])
async def test_string_features_for_a_pipeline_that_takes_them(tmp_path, fitted_on):
    if fitted_on == "DataFrame":
        pandas = pytest.importorskip("pandas")
        train = pandas.DataFrame({"colour": MIXED[:, 0], "size": MIXED[:, 1].astype(float)})
        estimator = mixed_pipeline(["colour", "size"]).fit(train, BOUGHT)
        expected = estimator.predict_proba(train)
    else:
        estimator = mixed_pipeline([0, 1]).fit(MIXED, BOUGHT)
        expected = estimator.predict_proba(MIXED)
    skops_io.dump(estimator, tmp_path / "shop.skops")
    (model,) = load_models([f"shop={tmp_path / 'shop.skops'}"])
    assert [s.as_json() for s in model.inputs] == [{"name": "INPUT0", "datatype": "BYTES", "shape": [-1, 2]}]
    app = InferenceApp([model], ServingState())
    # Every feature a string, numbers too: scikit-learn's numeric steps read them back.
    rows = [[colour, str(size)] for colour, size in MIXED.tolist()]
    body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [6, 2], "data": rows}]}
    response = await call(app, "POST", "/v2/models/shop/infer", json.dumps(body).encode())
    assert response.status == 200, response.body
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["OUTPUT0"]["data"] == expected.argmax(axis=1).tolist()
    assert np.allclose(outputs["OUTPUT1"]["data"], expected.ravel())
    v1 = await call(app, "POST", "/v1/models/shop:predict", json.dumps({"instances": rows}).encode())
    assert v1.status == 200 and v1.json() == {"predictions": expected.argmax(axis=1).tolist()}
    # A size that is no number is the client's error, in one line.
    rows[0][1] = "big"
    body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [6, 2], "data": rows}]}
    response = await call(app, "POST", "/v2/models/shop/infer", json.dumps(body).encode())
    assert response.status == 400 and "refused the input" in response.json()["error"]


def test_a_missing_extra_names_the_pip_command(tmp_path, monkeypatch):
    skops_io.dump(classifier(), tmp_path / "churn.skops")
    monkeypatch.setitem(sys.modules, "skops.io", None)
    monkeypatch.setitem(sys.modules, "skops", None)
    with pytest.raises(ModelError) as caught:
        load_models([f"churn={tmp_path / 'churn.skops'}"])
    assert str(caught.value) == (
        "model 'churn': serving churn.skops needs scikit-learn and skops: "
        "pip install scikit-learn skops (in a checkout: pip install '.[sklearn]')"
    )


def test_a_repository_folder_with_model_skops(tmp_path):
    (tmp_path / "churn").mkdir()
    skops_io.dump(classifier(), tmp_path / "churn" / "model.skops")
    (model,) = load_models([], [str(tmp_path)])
    assert isinstance(model, SklearnModel) and model.name == "churn"


async def test_bad_input_is_a_400_not_a_crash(tmp_path):
    skops_io.dump(classifier(), tmp_path / "churn.skops")
    app = InferenceApp([SklearnModel("churn", str(tmp_path / "churn.skops"))], ServingState())
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    assert (await call(app, "POST", "/v2/models/churn/infer", json.dumps(body).encode())).status == 200
    body["inputs"][0]["datatype"] = "FP32"
    refused = await call(app, "POST", "/v2/models/churn/infer", json.dumps(body).encode())
    assert refused.status == 400 and "datatype must be FP64" in refused.json()["error"]


async def test_numeric_columns_picked_by_name_get_a_dataframe(tmp_path):
    pandas = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer

    frame = pandas.DataFrame(X[:, :2], columns=["age", "income"])
    estimator = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), ["age", "income"])]), LogisticRegression()
    ).fit(frame, LABELS)
    skops_io.dump(estimator, tmp_path / "named.skops")
    (model,) = load_models([f"named={tmp_path / 'named.skops'}"])
    assert model.inputs[0].as_json() == {"name": "INPUT0", "datatype": "FP64", "shape": [-1, 2]}
    app = InferenceApp([model], ServingState())
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [5, 2], "data": X[:5, :2].tolist()}]}
    response = await call(app, "POST", "/v2/models/named/infer", json.dumps(body).encode())
    assert response.status == 200, response.body
    assert response.json()["outputs"][0]["data"] == estimator.predict(frame[:5]).tolist()


@pytest.mark.parametrize("suffix", [".pkl", ".joblib", ".pickle"])
def test_a_pickle_serves_from_a_repository_as_from_a_flag(tmp_path, suffix):
    """Every suffix --model takes names a repository's model file too (model.pickle was refused
    as misnamed while --model x=m.pickle served)."""
    folder = tmp_path / "repository" / "churn"
    folder.mkdir(parents=True)
    (folder / f"model{suffix}").write_bytes(pickle.dumps(classifier()))
    (model,) = load_models([], [str(tmp_path / "repository")], allow_pickle=True)
    (flagged,) = load_models([f"churn={folder / f'model{suffix}'}"], allow_pickle=True)
    assert (
        model.predict({"INPUT0": X[:2]})["OUTPUT0"].tolist() == flagged.predict({"INPUT0": X[:2]})["OUTPUT0"].tolist()
    )
