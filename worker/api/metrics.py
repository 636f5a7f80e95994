"""What a worker counts for the pool's Prometheus metrics: cumulative, plain data.

The entries that changed go to the supervisor with each heartbeat (``worker.api.counters``),
which adds up every worker's (and keeps those of workers gone), so the pool's metrics are exact
sums and never go down. Histograms
travel as per-bucket counts, which add up exactly across workers, unlike percentiles.

Only the names of served models become labels: a request for any other name counts under
``-``, so nobody can make the supervisor keep a series per made-up name.
"""

from __future__ import annotations

from typing import Any

from .counters import Changes

#: Upper bounds, in seconds, of the request and queue duration histograms' buckets.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFINITY = "+Inf"
OTHER = "-"


def bucket_names() -> list[str]:
    return [f"{bound:g}" for bound in BUCKETS] + [INFINITY]


class Histogram:
    def __init__(self) -> None:
        self.counts = dict.fromkeys(bucket_names(), 0)
        self.sum_ns = 0

    def observe(self, ns: int) -> None:
        seconds = ns / 1e9
        for bound, name in zip(BUCKETS, self.counts, strict=False):
            if seconds <= bound:
                self.counts[name] += 1
                break
        else:
            self.counts[INFINITY] += 1
        self.sum_ns += max(0, ns)

    def snapshot(self) -> dict[str, Any]:
        return {"buckets": dict(self.counts), "sum_ns": self.sum_ns}


class Metrics:
    """One worker's counters, updated on its event loop."""

    def __init__(self, models: list[str], changes: Changes | None = None) -> None:
        self.models = set(models)
        self._changes = changes if changes is not None else Changes()
        self.requests: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.latency = {name: Histogram() for name in [*models, OTHER]}
        self.queue = {name: Histogram() for name in models}

    def label(self, model: str | None) -> str:
        return model if model in self.models else OTHER

    def request(self, model: str | None, status: int, ns: int) -> None:
        label = self.label(model)
        key = f"{label}|{status}"
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency[label].observe(ns)
        self._changes.mark("requests", key)
        self._changes.mark("latency", label)

    def inferred(self, model: str, rows: int, queue_ns: int) -> None:
        self.rows[model] = self.rows.get(model, 0) + rows
        self.queue[model].observe(queue_ns)
        self._changes.mark("rows", model)
        self._changes.mark("queue", model)

    def entry(self, section: str, key: str) -> Any:
        """The current value of one entry of a section: ``requests``, ``rows``, ``latency``, ``queue``."""
        if section == "requests":
            return self.requests[key]
        if section == "rows":
            return self.rows[key]
        return (self.latency if section == "latency" else self.queue)[key].snapshot()

    def snapshot(self) -> dict[str, Any]:
        """Every entry of every section."""
        return {
            "requests": dict(self.requests),
            "rows": dict(self.rows),
            "latency": {name: histogram.snapshot() for name, histogram in self.latency.items()},
            "queue": {name: histogram.snapshot() for name, histogram in self.queue.items()},
        }
