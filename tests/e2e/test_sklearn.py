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


def test_strings_in_and_out_with_kserves_client(launch, platform, tmp_path):
    """A pipeline that one-hot encodes a string feature and answers string labels, called with
    kserve's InferenceRESTClient, V2 (BYTES both ways) and V1."""
    import asyncio

    kserve = pytest.importorskip("kserve")
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    rows = np.array([["red", 1.0], ["blue", 2.5], ["red", 0.3], ["green", 4.0], ["blue", 0.2], ["red", 3.0]], object)
    labels = np.array(["buy", "skip", "buy", "skip", "skip", "buy"])
    encode = ColumnTransformer(
        [("colour", OneHotEncoder(handle_unknown="ignore"), [0]), ("size", StandardScaler(), [1])]
    )
    estimator = make_pipeline(encode, LogisticRegression()).fit(rows, labels)
    skops_io.dump(estimator, tmp_path / "shop.skops")
    pool = launch("--model", f"shop={platform.path(str(tmp_path / 'shop.skops'))}", workers=1)
    url = pool.wait_ready()
    texts = [[colour, str(size)] for colour, size in rows.tolist()]
    expected = estimator.predict(rows).tolist()

    async def run():
        v2 = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", retries=0, timeout=30))
        v1 = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v1", retries=0, timeout=30))
        try:
            features = kserve.InferInput("INPUT0", [6, 2], "BYTES")
            features.set_data_from_numpy(np.array(texts, dtype=object), binary_data=False)
            response = await v2.infer(url, kserve.InferRequest(model_name="shop", infer_inputs=[features]), "shop")
            outputs = {output.name: output for output in response.outputs}
            assert outputs["OUTPUT0"].datatype == "BYTES" and outputs["OUTPUT0"].data == expected
            assert np.allclose(outputs["OUTPUT1"].as_numpy(), estimator.predict_proba(rows))
            answer = await v1.infer(url, {"instances": texts}, model_name="shop")
            assert answer == {"predictions": expected}
        finally:
            await v2.close()
            await v1.close()

    asyncio.run(run())
