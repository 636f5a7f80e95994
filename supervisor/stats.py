"""Pool-wide statistics: every live worker's newest counters, plus those of workers gone.

Workers report plain nested maps of cumulative counters (see ``worker.api.stats``), each with
a sequence number that grows with every snapshot the worker takes. The rules:

- only a worker's newest snapshot counts, whatever order its snapshots arrive in;
- a snapshot is taken whole or not at all: every number in it must be a whole number from 0
  to 2**63 - 1 (no floats, no infinities, no negatives), every key a string, its depth
  bounded; a worker that sends anything else is buggy, and keeps its previous snapshot;
- counters add up across workers, except keys starting with ``last_`` (timestamps), which
  take the maximum;
- when a worker exits its last counters move to the retired total, so the pool's counters
  never go down.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

import anyio

from ipc.messages import PoolStatsReply, StatsReport, StatsRequest

from .lifecycle import State

if TYPE_CHECKING:
    from .pool import Pool
    from .workers import WorkerProcess

logger = logging.getLogger("supervisor")

#: How deep a report may nest; Triton's shape needs three levels under the model name.
MAX_DEPTH = 4
MAX_COUNT = 2**63 - 1
MAX_TEXT = 256


def sanitize(report: Any) -> dict[str, Any] | None:
    """``report`` if it is a well-formed snapshot (model name -> map), else ``None``."""
    if not isinstance(report, dict):
        return None
    for name, value in report.items():
        if not isinstance(name, str) or not isinstance(value, dict) or not _valid(value, 1):
            return None
    return report


def _valid(mapping: dict[Any, Any], depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    for key, value in mapping.items():
        if not isinstance(key, str):
            return False
        if isinstance(value, dict):
            valid = _valid(value, depth + 1)
        elif isinstance(value, str):
            valid = len(value) <= MAX_TEXT
        else:
            valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT
        if not valid:
            return False
    return True


def merge(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a[k], b[k], k) if k in a and k in b else a.get(k, b.get(k)) for k in a.keys() | b.keys()}
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b) if key.startswith("last_") else min(a + b, MAX_COUNT)
    return a


def total(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for report in reports:
        result = merge(result, report)
    return result


class StatsBook:
    """The newest snapshot of each live worker, and the sum of the exited ones'."""

    def __init__(self) -> None:
        self._latest: dict[Hashable, tuple[int, dict[str, Any]]] = {}
        self._retired: dict[str, Any] = {}

    def record(self, worker: Hashable, seq: int, report: Any) -> bool:
        """Keep ``report`` as ``worker``'s snapshot number ``seq``; whether it was taken.

        Refused: an older snapshot than the one kept, or a malformed one.
        """
        previous = self._latest.get(worker)
        if previous is not None and seq <= previous[0]:
            return False
        clean = sanitize(report)
        if clean is None:
            return False
        self._latest[worker] = (seq, clean)
        return True

    def retire(self, worker: Hashable) -> None:
        """``worker`` has exited: its counters join the retired total."""
        entry = self._latest.pop(worker, None)
        if entry is not None:
            self._retired = merge(self._retired, entry[1])

    def total(self) -> dict[str, Any]:
        return total([self._retired, *(report for _, report in self._latest.values())])


class Counters:
    """The pool's counters: every worker's statistics (``/v2/models/stats``) and metrics
    (``/metrics``), and the fan-out that refreshes the statistics when a worker asks for the
    pool's."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.stats = StatsBook()
        #: Every worker's cumulative metrics (worker.api.metrics), those of workers gone included.
        self.metrics = StatsBook()
        self._request_ids = itertools.count(1)
        self._waiters: dict[int, anyio.Event] = {}
        self._fan_out: anyio.Event | None = None

    def record_stats(self, process: WorkerProcess, seq: int, models: Any) -> None:
        if not self.stats.record(process, seq, models) and seq > 0:
            logger.debug("worker %d: statistics snapshot %d refused (stale or malformed)", process.slot, seq)

    def record_metrics(self, process: WorkerProcess, seq: int, metrics: Any) -> None:
        self.metrics.record(process, seq, metrics)

    def retire(self, process: WorkerProcess) -> None:
        self.stats.retire(process)
        self.metrics.retire(process)

    def reported(self, process: WorkerProcess, report: StatsReport) -> None:
        self.record_stats(process, report.seq, report.models)
        waiter = self._waiters.get(report.request_id)
        if waiter is not None:
            waiter.set()

    async def answer(self, process: WorkerProcess, request_id: int) -> None:
        """Answer a worker's PoolStatsRequest."""
        channel = process.channel
        totals = await self.pool_stats()
        if channel is not None:
            channel.post(PoolStatsReply(request_id, totals))

    async def pool_stats(self) -> dict[str, Any]:
        """Fresh counters from every live worker, summed with those of workers gone.

        Concurrent callers share one fan-out: a caller that arrives while one runs waits for it.
        """
        if self._fan_out is not None:
            await self._fan_out.wait()
            return self.stats.total()
        self._fan_out = anyio.Event()
        try:
            async with anyio.create_task_group() as task_group:
                for process in self.pool.processes():
                    if process.channel is not None and process.state in (State.READY, State.DRAINING):
                        task_group.start_soon(self._refresh, process)
        finally:
            done, self._fan_out = self._fan_out, None
            done.set()
        return self.stats.total()

    async def _refresh(self, process: WorkerProcess) -> None:
        request_id = next(self._request_ids)
        waiter = self._waiters[request_id] = anyio.Event()
        try:
            with anyio.move_on_after(self.pool.timeouts.stats):
                channel = process.channel
                if channel is not None and channel.post(StatsRequest(request_id)):
                    await waiter.wait()
        finally:
            del self._waiters[request_id]
