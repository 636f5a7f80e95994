"""Pool statistics: summing worker reports, in order, and refusing bad ones."""

from __future__ import annotations

import pytest

from supervisor.stats import MAX_COUNT, StatsBook, merge, sanitize, total
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


@pytest.mark.parametrize(
    "bad",
    [
        5,
        [1, 2],
        {"mlp": 5},
        {"mlp": {"inference_count": True}},
        {"mlp": {"inference_count": -1}},
        {"mlp": {"inference_count": 1.5}},
        {"mlp": {"inference_count": float("inf")}},
        {"mlp": {"inference_count": float("nan")}},
        {"mlp": {"inference_count": 2**64}},
        {"mlp": {"x": [1]}},
        {"mlp": {3: 4}},
        {"mlp": {"version": "v" * 1000}},
    ],
)
def test_malformed_reports_are_refused_whole(bad):
    assert sanitize(bad) is None


def test_deep_reports_are_refused():
    deep: dict = {"n": 1}
    for _ in range(50):
        deep = {"a": deep}
    assert sanitize({"mlp": deep}) is None


def test_as_triton_has_every_field_whatever_it_is_given():
    for snapshot in ({}, {"inference_stats": 7}, {"inference_stats": {"success": "x"}}, 5, None):
        entry = as_triton("m", snapshot)
        assert set(entry["inference_stats"]) == set(DURATIONS)
        assert all(v == {"count": 0, "ns": 0} for v in entry["inference_stats"].values())


def test_merge_with_missing_models_and_huge_sums():
    assert merge({"a": {"n": 1}}, {"b": {"n": 2}}) == {"a": {"n": 1}, "b": {"n": 2}}
    assert merge({"n": MAX_COUNT}, {"n": MAX_COUNT}) == {"n": MAX_COUNT}


def test_a_stale_snapshot_never_replaces_a_newer_one():
    book = StatsBook()
    worker = object()
    assert book.record(worker, 2, report(5, 0))
    assert not book.record(worker, 1, report(3, 0))  # older: arrived late
    assert not book.record(worker, 2, report(3, 0))  # the same one again
    assert total_count(book) == 10


def test_a_bad_snapshot_keeps_the_previous_one():
    book = StatsBook()
    worker = object()
    book.record(worker, 1, report(5, 0))
    assert not book.record(worker, 2, {"mlp": {"inference_count": float("inf")}})
    assert total_count(book) == 10
    assert book.record(worker, 3, report(6, 0))  # a later good one is taken
    assert total_count(book) == 12


def test_counters_of_exited_workers_stay_in_the_total():
    book = StatsBook()
    first, second = object(), object()
    book.record(first, 1, report(5, 0))
    book.record(second, 1, report(1, 0))
    book.retire(first)
    assert total_count(book) == 12
    book.retire(first)  # twice is harmless
    book.retire(second)
    assert total_count(book) == 12


def total_count(book: StatsBook) -> int:
    return as_triton("mlp", book.total().get("mlp"))["inference_count"]
