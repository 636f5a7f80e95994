"""Per-model inference statistics, in the shape of Triton's statistics extension.

A worker keeps cumulative counters; the supervisor sums them over every worker (see
``supervisor.stats``), so counters here only ever grow, and :func:`highest` keeps what a worker
answers for the pool growing too.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .counters import Changes

#: The eight duration counters perf_analyzer reads without checking they exist.
DURATIONS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


class ModelStats:
    """Cumulative counters of one model in one worker (thread-safe)."""

    def __init__(self, name: str, version: str, changes: Changes | None = None) -> None:
        self.name = name
        self.version = version
        #: Its entry in the pool's statistics: NAME/VERSION (no name holds a /).
        self.key = f"{name}/{version}"
        self._changes = changes if changes is not None else Changes()
        self._lock = threading.Lock()
        self.last_inference = 0
        self.inference_count = 0
        self.execution_count = 0
        self.durations = {key: [0, 0] for key in DURATIONS}

    def record_success(
        self, batch: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int, executions: int = 1
    ) -> None:
        """One request's success: ``batch`` rows, in ``executions`` model calls (0 for every
        request of a dynamically batched call but the first, as Triton counts)."""
        with self._lock:
            self.last_inference = int(time.time() * 1000)
            self.inference_count += batch
            self.execution_count += executions
            self._changes.mark("stats", self.key)
            for key, ns in (
                ("queue", queue_ns),
                ("compute_input", input_ns),
                ("compute_infer", infer_ns),
                ("compute_output", output_ns),
                ("success", queue_ns + input_ns + infer_ns + output_ns),
            ):
                self.durations[key][0] += 1
                self.durations[key][1] += ns

    def record_failure(self, ns: int) -> None:
        with self._lock:
            self._changes.mark("stats", self.key)
            self.durations["fail"][0] += 1
            self.durations["fail"][1] += ns

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data, for the control channel."""
        with self._lock:
            return {
                "version": self.version,
                "last_inference": self.last_inference,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {key: {"count": c, "ns": ns} for key, (c, ns) in self.durations.items()},
            }


def highest(earlier: Any, later: Any) -> Any:
    """``later``, with every counter at least what it was in ``earlier``: the element-wise
    maximum of two snapshots (dicts are merged key by key; where either value is not a count,
    ``later``'s wins, or ``earlier``'s if ``later`` lacks the key)."""
    if isinstance(earlier, dict) and isinstance(later, dict):
        return {**earlier, **{key: highest(earlier.get(key), value) for key, value in later.items()}}
    if _is_count(earlier) and _is_count(later):
        return max(earlier, later)
    return later


def as_triton(name: str, snapshot: Any) -> dict[str, Any]:
    """One entry of ``model_stats`` from a (possibly pool-summed) snapshot.

    Every field perf_analyzer reads is present whatever the snapshot lacks.
    """
    snapshot = snapshot if isinstance(snapshot, dict) else {}
    durations = snapshot.get("inference_stats")
    durations = durations if isinstance(durations, dict) else {}
    return {
        "name": name,
        "version": str(snapshot.get("version", "1")),
        "last_inference": _count(snapshot, "last_inference"),
        "inference_count": _count(snapshot, "inference_count"),
        "execution_count": _count(snapshot, "execution_count"),
        "inference_stats": {
            key: {"count": _count(durations.get(key), "count"), "ns": _count(durations.get(key), "ns")}
            for key in DURATIONS
        },
        "batch_stats": [],
        "response_stats": {},
        "memory_usage": [],
    }


def _count(mapping: Any, key: str) -> int:
    value = mapping.get(key, 0) if isinstance(mapping, dict) else 0
    return value if _is_count(value) else 0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
