"""A versioned model repository served by a real pool, as tritonclient sees it: the index, every
version's metadata and answers, the highest by default, string tensors; a version added to the
folder is not served by a worker that scale adds, and is by every worker after a reload."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from worker.models.mlp import demo_layers

from .harness import http, wait_until

X = np.linspace(-1, 1, 2 * 8, dtype=np.float32).reshape(2, 8)


def mlp(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = demo_layers((8, 4), seed)
    np.savez(path, w0=layers[0][0], b0=layers[0][1])
    return X @ layers[0][0] + layers[0][1]


def test_versions_the_index_and_a_reload_that_adds_one(launch, platform, tmp_path):
    import tritonclient.http as triton

    repository = tmp_path / "repository"
    answers = {version: mlp(repository / "scorer" / version / "model.npz", int(version)) for version in ("1", "2")}
    (repository / "scorer" / "config.toml").write_text("max_batch_size = 4\n")
    words = None
    try:
        from tests import onnx_models

        (repository / "words" / "1").mkdir(parents=True)
        words = onnx_models.vocabulary(str(repository / "words" / "1" / "model.onnx"))
    except ImportError:  # the onnx extra is not installed: the repository holds the MLP alone
        pass
    pool = launch("--model-dir", platform.path(str(repository)), workers=2)
    url = pool.wait_ready()
    client = triton.InferenceServerClient(url.removeprefix("http://"))

    index = client.get_model_repository_index()
    served = [(entry["name"], entry["version"], entry["state"]) for entry in index]
    assert served[:2] == [("scorer", "1", "READY"), ("scorer", "2", "READY")]
    assert client.get_model_metadata("scorer", "1")["versions"] == ["1", "2"]
    assert client.get_model_config("scorer")["max_batch_size"] == 4

    def infer(version=""):
        tensor = triton.InferInput("INPUT0", [2, 8], "FP32")
        tensor.set_data_from_numpy(X, binary_data=True)
        result = client.infer("scorer", [tensor], model_version=version)
        return result.get_response()["model_version"], result.as_numpy("OUTPUT0")

    for version, want in (("", "2"), ("1", "1"), ("2", "2")):
        got_version, out = infer(version)
        assert got_version == want and np.allclose(out, answers[want], atol=1e-5)

    if words is not None:
        tensor = triton.InferInput("word", [3], "BYTES")
        tensor.set_data_from_numpy(np.array(["dog", "café", "yak"], dtype=object), binary_data=True)
        result = client.infer("words", [tensor])
        assert result.as_numpy("id").tolist() == [1, 2, -1]
        assert result.as_numpy("echo").tolist() == [b"dog", "café".encode(), b"yak"]

    # A new version in the folder. A worker added by scale serves what its peers serve (the
    # versions the pool read when it started), never version 3 alone...
    answers["3"] = mlp(repository / "scorer" / "3" / "model.npz", 3)
    scale = pool.cli("scale", "3")
    assert scale.returncode == 0, scale.stdout + scale.stderr
    added = next(row["pid"] for row in pool.status()["workers"] if row["slot"] == 2)
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while str(added) not in seen and time.monotonic() < deadline:  # until the new worker has answered
        status, headers, _ = http("GET", f"{url}/v2/models/scorer/versions/3")
        assert status == 404, "a worker serves a version its peers do not"
        seen.add(headers["x-worker-pid"])
    assert str(added) in seen, f"the new worker {added} never answered: {seen}"
    # ... and a rolling reload serves it everywhere: each new worker reads the repository again.
    reload = pool.cli("reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert [e["version"] for e in client.get_model_repository_index() if e["name"] == "scorer"] == ["1", "2", "3"]
    for _ in range(6):  # whichever worker answers
        got_version, out = infer()
        assert got_version == "3" and np.allclose(out, answers["3"], atol=1e-5)


BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 8], "data": X.tolist()}]}).encode()


def scorer_in_two_versions(launch, platform, tmp_path):
    """A two-worker pool serving ``scorer`` versions 1 and 2 from a repository; the pool, its URL,
    the repository and each version's expected answer."""
    repository = tmp_path / "repository"
    answers = {version: mlp(repository / "scorer" / version / "model.npz", int(version)) for version in ("1", "2")}
    pool = launch("--model-dir", platform.path(str(repository)), workers=2)
    return pool, pool.wait_ready(), repository, answers


def kill_slot_0(pool, platform) -> str:
    """Kill slot 0's worker; the pid of its replacement, once ready."""
    first = next(row for row in pool.status()["workers"] if row["slot"] == 0)
    platform.kill(first["pid"])

    def replaced():
        row = next((r for r in pool.status()["workers"] if r["slot"] == 0), None)
        return row is not None and row["generation"] > first["generation"] and row["state"] == "ready"

    wait_until(replaced, what="slot 0 replaced")
    return str(next(row["pid"] for row in pool.status()["workers"] if row["slot"] == 0))


def test_a_version_removed_from_the_folder_does_not_stop_replacements(launch, platform, tmp_path):
    """Retiring an old version before the next reload is routine: a worker replacing a lost one
    serves what is left of the pinned versions, and the pool stays up."""
    pool, url, repository, answers = scorer_in_two_versions(launch, platform, tmp_path)
    shutil.rmtree(repository / "scorer" / "1")
    replacement = kill_slot_0(pool, platform)
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while replacement not in seen and time.monotonic() < deadline:  # until the replacement has answered
        status, headers, answer = http("POST", f"{url}/v2/models/scorer/infer", BODY)
        assert status == 200 and np.allclose(json.loads(answer)["outputs"][0]["data"], answers["2"].ravel(), atol=1e-5)
        seen.add(headers["x-worker-pid"])
    assert replacement in seen
    assert pool.process.poll() is None, pool.output


def test_a_worker_started_after_the_default_version_was_removed_answers_503_for_it(launch, platform, tmp_path):
    """It served the next highest version as the default while its peer served the pinned one:
    one URL, two models (found in review). A reload serves what the folder holds."""
    pool, url, repository, answers = scorer_in_two_versions(launch, platform, tmp_path)
    shutil.rmtree(repository / "scorer" / "2")
    replacement = kill_slot_0(pool, platform)
    by_worker: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(by_worker) < 2 and time.monotonic() < deadline:  # until both workers have answered
        status, headers, answer = http("POST", f"{url}/v2/models/scorer/infer", BODY)
        by_worker[headers["x-worker-pid"]] = status
        if status == 200:  # the other worker: the pinned default, never version 1
            assert np.allclose(json.loads(answer)["outputs"][0]["data"], answers["2"].ravel(), atol=1e-5)
        else:
            assert status == 503 and "version 2 is gone from the repository" in json.loads(answer)["error"]
    assert by_worker.get(replacement) == 503 and sorted(by_worker.values()) == [200, 503], by_worker
    status, _, answer = http("POST", f"{url}/v2/models/scorer/versions/1/infer", BODY)
    assert status == 200
    assert pool.cli("reload").returncode == 0
    for _ in range(4):
        status, _, answer = http("POST", f"{url}/v2/models/scorer/infer", BODY)
        assert status == 200 and np.allclose(json.loads(answer)["outputs"][0]["data"], answers["1"].ravel(), atol=1e-5)


@pytest.mark.timeout(900)  # its own waits add up to 600 s; 10 s idle, past 120 s under two suites at once
def test_a_repository_of_thousands_of_tiny_models_starts_serves_reloads_and_stops(launch, platform, tmp_path):
    """Every model's counters once travelled in each heartbeat and in one Stopped frame: past
    ~1,450 model versions a frame was over the 1 MiB limit, each worker was killed for breaking
    the protocol as soon as it served, and the pool went down in a crash loop (found in review)."""
    repository = tmp_path / "repository"
    # Past the old failure either way; 5,000 under Wine took 117 s of the Windows suite's time.
    count = 2000 if platform.windows else 5000
    mlp(repository / "m0" / "model.npz", 1)
    weights = (repository / "m0" / "model.npz").read_bytes()
    for i in range(1, count):
        (repository / f"m{i}").mkdir()
        (repository / f"m{i}" / "model.npz").write_bytes(weights)
    pool = launch("--model-dir", platform.path(str(repository)), workers=2)
    url = pool.wait_ready(timeout=180)
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [2, 8], "datatype": "FP32", "data": X.ravel().tolist()}]})
    for name in ("m0", f"m{count // 2}", f"m{count - 1}") * 2:
        status, _, _ = http("POST", f"{url}/v2/models/{name}/infer", body.encode())
        assert status == 200

    def rows() -> tuple[int, int]:
        status, _, answer = http("GET", f"{url}/v2/models/stats")
        assert status == 200
        stats = json.loads(answer)["model_stats"]
        return len(stats), sum(entry["inference_count"] for entry in stats)

    assert rows() == (count, 12)  # 6 requests of 2 rows, summed over both workers
    reload = pool.cli("reload", timeout=300)
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert rows() == (count, 12)  # the old workers' counters are kept
    stop = pool.cli("stop", timeout=120)
    assert stop.returncode == 0 and "stopped cleanly" in stop.stdout, stop.stdout + stop.stderr
    assert pool.wait_exit() == 0
    assert "broke the control protocol" not in pool.output
