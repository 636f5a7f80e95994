"""A scikit-learn model served by a real pool: tritonclient and V1 get scikit-learn's own
answers; a pickle is refused at start unless --allow-pickle says it is trusted."""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the sklearn extra is not installed")
skops_io = pytest.importorskip("skops.io", reason="the sklearn extra is not installed")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from .harness import http  # noqa: E402

X = np.random.default_rng(5).standard_normal((40, 4))
ESTIMATOR = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, (X[:, 0] > 0).astype(int))


def test_a_skops_model_answers_as_scikit_learn_does(launch, platform, tmp_path):
    import tritonclient.http as triton

    skops_io.dump(ESTIMATOR, tmp_path / "churn.skops")
    pool = launch("--model", f"churn={platform.path(str(tmp_path / 'churn.skops'))}", workers=1)
    url = pool.wait_ready()
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    rows = X[:6]
    features = triton.InferInput("INPUT0", [6, 4], "FP64")
    features.set_data_from_numpy(rows, binary_data=True)
    result = client.infer("churn", [features])
    assert result.as_numpy("OUTPUT0").tolist() == ESTIMATOR.predict(rows).tolist()
    assert np.allclose(result.as_numpy("OUTPUT1"), ESTIMATOR.predict_proba(rows))
    status, _, body = http("POST", f"{url}/v1/models/churn:predict", json.dumps({"instances": rows.tolist()}).encode())
    assert status == 200 and json.loads(body) == {"predictions": ESTIMATOR.predict(rows).tolist()}


def test_a_pickle_needs_allow_pickle(launch, platform, tmp_path):
    path = tmp_path / "churn.pkl"
    path.write_bytes(pickle.dumps(ESTIMATOR))
    refused = launch("--model", f"churn={platform.path(str(path))}", workers=1)
    assert refused.wait_exit() == 1
    assert re.search(
        r"worker 0 failed to start: model 'churn': churn.pkl is a pickle, .*--allow-pickle", refused.output
    )
    assert "Traceback" not in refused.output
    # A control address of its own: the refused pool's cleanup must not take this one for its own.
    allowed = launch(
        "--model", f"churn={platform.path(str(path))}", "--allow-pickle", workers=1, control=platform.control_address()
    )
    url = allowed.wait_ready()
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [1, 4], "data": X[0].tolist()}]}
    status, _, answer = http("POST", f"{url}/v2/models/churn/infer", json.dumps(body).encode())
    assert status == 200 and json.loads(answer)["outputs"][0]["data"] == ESTIMATOR.predict(X[:1]).tolist()
