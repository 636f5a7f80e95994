"""Pool counters: summing worker reports entry by entry, in order, and refusing bad ones."""

from __future__ import annotations

import pytest

from ipc.codec import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode, split
from ipc.messages import COUNTERS_BUDGET, StatsReport
from supervisor.stats import MAX_COUNT, CounterBook, merge, total, valid
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
def test_malformed_entries_are_refused_whole(bad):
    book = CounterBook()
    assert book.record("w", 1, {"stats": bad} if isinstance(bad, dict) else bad) >= 1
    assert book.total("stats") == {}


def test_deep_entries_are_refused():
    deep: dict = {"n": 1}
    for _ in range(50):
        deep = {"a": deep}
    assert not valid(deep)


def test_as_triton_has_every_field_whatever_it_is_given():
    for snapshot in ({}, {"inference_stats": 7}, {"inference_stats": {"success": "x"}}, 5, None):
        entry = as_triton("m", snapshot)
        assert set(entry["inference_stats"]) == set(DURATIONS)
        assert all(v == {"count": 0, "ns": 0} for v in entry["inference_stats"].values())


def test_merge_with_missing_models_and_huge_sums():
    assert merge({"a": {"n": 1}}, {"b": {"n": 2}}) == {"a": {"n": 1}, "b": {"n": 2}}
    assert merge({"n": MAX_COUNT}, {"n": MAX_COUNT}) == {"n": MAX_COUNT}


def test_a_stale_entry_never_replaces_a_newer_one():
    book = CounterBook()
    worker = object()
    assert book.record(worker, 2, {"stats": report(5, 0)}) == 0
    assert book.record(worker, 1, {"stats": report(3, 0)}) == 1  # older: arrived late
    assert book.record(worker, 2, {"stats": report(3, 0)}) == 1  # the same one again
    assert total_count(book) == 10


def test_a_bad_entry_keeps_the_previous_value_and_the_others_are_taken():
    book = CounterBook()
    worker = object()
    book.record(worker, 1, {"stats": report(5, 0)})
    bad = {"stats": {"mlp": {"inference_count": float("inf")}, "other": {"inference_count": 4}}}
    assert book.record(worker, 2, bad) == 1
    assert total_count(book) == 10 and book.total("stats")["other"] == {"inference_count": 4}
    assert book.record(worker, 3, {"stats": report(6, 0)}) == 0  # a later good one is taken
    assert total_count(book) == 12


def test_reports_of_some_entries_update_those_and_keep_the_rest():
    """A worker sends only what changed: an entry it does not send keeps its value."""
    book = CounterBook()
    book.record("w", 1, {"stats": {"a": {"n": 1}, "b": {"n": 2}}, "rows": {"a": 7}})
    book.record("w", 2, {"stats": {"b": {"n": 5}}})
    assert book.total("stats") == {"a": {"n": 1}, "b": {"n": 5}}
    assert book.total("rows") == {"a": 7}
    assert book.total("stats", ["b", "missing"]) == {"b": {"n": 5}}


def test_counters_of_exited_workers_stay_in_the_total():
    book = CounterBook()
    first, second = object(), object()
    book.record(first, 1, {"stats": report(5, 0)})
    book.record(second, 1, {"stats": report(1, 0)})
    book.retire(first)
    assert total_count(book) == 12
    book.retire(first)  # twice is harmless
    book.retire(second)
    assert total_count(book) == 12


def test_the_counters_of_thousands_of_models_travel_in_frames_of_bounded_size():
    """A worker's Stopped once carried every model's statistics in one frame: past ~1,450 model
    versions it was over the 1 MiB limit, the pool killed the worker for breaking the protocol,
    and its replacement did the same (found in review)."""
    stats = {f"model-{i}/1": ModelStats(f"model-{i}", "1") for i in range(20_000)}
    for entry in stats.values():
        entry.record_success(batch=1, queue_ns=10**9, input_ns=10**9, infer_ns=10**9, output_ns=10**9)
    counters = {"stats": {key: entry.snapshot() for key, entry in stats.items()}}
    frames = [encode(StatsReport(0, chunk, seq)) for seq, chunk in enumerate(split(counters, COUNTERS_BUDGET), 1)]
    assert max(map(len, frames)) <= DEFAULT_MAX_FRAME_SIZE // 2 and len(frames) > 10
    book = CounterBook()
    decoder = FrameDecoder()
    for frame in frames:
        decoder.feed(frame)
        message = decoder.next_message()
        assert isinstance(message, StatsReport) and book.record("w", message.seq, message.counters) == 0
    assert book.total("stats") == counters["stats"]


def total_count(book: CounterBook) -> int:
    return as_triton("mlp", book.total("stats").get("mlp"))["inference_count"]
