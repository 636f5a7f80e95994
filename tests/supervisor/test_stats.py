"""Pool statistics: summing worker reports, and surviving bad ones."""

from __future__ import annotations

from supervisor.stats import merge, sanitize, total
from worker.api.stats import DURATIONS, ModelStats, as_triton


def report(count: int, last: int) -> dict:
    stats = ModelStats("mlp", "1")
    for _ in range(count):
        stats.record_success(batch=2, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    snapshot = stats.snapshot()
    snapshot["last_inference"] = last
    return {"mlp": snapshot}


def test_counts_add_and_timestamps_take_the_latest():
    pool = total([report(3, 100), report(5, 50), {}])
    entry = as_triton("mlp", pool["mlp"])
    assert entry["inference_count"] == 16 and entry["execution_count"] == 8
    assert entry["inference_stats"]["success"] == {"count": 8, "ns": 80}
    assert entry["last_inference"] == 100
    assert entry["version"] == "1"


def test_bad_reports_are_cleaned_not_trusted():
    assert sanitize({"mlp": 5}) == {}
    assert sanitize([1, 2]) == {}
    assert sanitize({"mlp": {"inference_count": True, "x": [1], 3: 4, "ok": 2}}) == {"mlp": {"ok": 2}}
    deep: dict = {"n": 1}
    for _ in range(50):
        deep = {"a": deep}
    clean = sanitize({"mlp": deep})
    depth = 0
    node = clean["mlp"]
    while node:
        node = node["a"]
        depth += 1
    assert depth < 10  # cut off, not followed to the bottom


def test_as_triton_has_every_field_whatever_it_is_given():
    for snapshot in ({}, {"inference_stats": 7}, {"inference_stats": {"success": "x"}}, 5, None):
        entry = as_triton("m", snapshot)
        assert set(entry["inference_stats"]) == set(DURATIONS)
        assert all(v == {"count": 0, "ns": 0} for v in entry["inference_stats"].values())


def test_merge_with_missing_models():
    assert merge({"a": {"n": 1}}, {"b": {"n": 2}}) == {"a": {"n": 1}, "b": {"n": 2}}
