"""The pool's counters: every live worker's newest, entry by entry, plus those of workers gone.

Workers report cumulative counters as entries by section (``worker.api.counters``): ``stats``,
one entry per model version (Triton's statistics), and the metrics' ``requests``, ``rows``,
``latency`` and ``queue``. Only entries that changed travel, in reports of bounded size, each
numbered by the worker (``seq``). The rules:

- only an entry's newest value counts, whatever order a worker's reports arrive in;
- an entry is taken whole or not at all: every number in it a whole number from 0 to
  2**63 - 1 (no floats, no infinities, no negatives), every key a string, its depth bounded; a
  worker that sends anything else is buggy, and that entry keeps its previous value;
- values add up across workers, except keys starting with ``last_`` (timestamps), which take
  the maximum;
- when a worker exits its entries move to the retired totals, so the pool's counters never go
  down.

:class:`Counters` holds them for the pool, and refreshes the statistics from every worker
when one asks for the pool's (``GET /v2/models/stats``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection, Hashable, Iterable
from typing import TYPE_CHECKING, Any

import anyio

from ipc.codec import split
from ipc.messages import COUNTERS_BUDGET, PoolStatsReply, StatsReport, StatsRequest

from .lifecycle import State

if TYPE_CHECKING:
    from .pool import Pool
    from .workers import WorkerProcess

logger = logging.getLogger("supervisor")

#: How deep an entry may nest; Triton's shape needs three levels.
MAX_DEPTH = 4
MAX_COUNT = 2**63 - 1
MAX_TEXT = 256


def valid(entry: Any, depth: int = 1) -> bool:
    """Whether ``entry`` is a well-formed value: a count, a short text, or a map of those."""
    if isinstance(entry, dict):
        return depth <= MAX_DEPTH and all(isinstance(k, str) and valid(v, depth + 1) for k, v in entry.items())
    if isinstance(entry, str):
        return len(entry) <= MAX_TEXT
    return isinstance(entry, int) and not isinstance(entry, bool) and 0 <= entry <= MAX_COUNT


def merge(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a[k], b[k], k) if k in a and k in b else a.get(k, b.get(k)) for k in a.keys() | b.keys()}
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b) if key.startswith("last_") else min(a + b, MAX_COUNT)
    return a


def total(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Entries of the same section, from several workers, added up key by key."""
    result: dict[str, Any] = {}
    for entry in entries:
        result = merge(result, entry)
    return result


class CounterBook:
    """Each live worker's newest value of every entry, and the sums of the exited ones'."""

    def __init__(self) -> None:
        #: worker -> section -> key -> (seq, value)
        self._live: dict[Hashable, dict[str, dict[str, tuple[int, Any]]]] = {}
        #: section -> key -> value
        self._retired: dict[str, dict[str, Any]] = {}

    def record(self, worker: Hashable, seq: int, counters: Any) -> int:
        """Keep the entries of ``counters`` (section -> key -> value), numbered ``seq``, that are
        newer than those kept; how many were refused (stale or malformed)."""
        if not isinstance(counters, dict):
            return 1
        kept = self._live.setdefault(worker, {})
        refused = 0
        for section, entries in counters.items():
            if not isinstance(section, str) or not isinstance(entries, dict):
                refused += 1
                continue
            values = kept.setdefault(section, {})
            for key, value in entries.items():
                previous = values.get(key)
                if not isinstance(key, str) or not valid(value) or (previous is not None and seq <= previous[0]):
                    refused += 1
                else:
                    values[key] = (seq, value)
        return refused

    def retire(self, worker: Hashable) -> None:
        """``worker`` has exited: its entries join the retired totals."""
        for section, values in self._live.pop(worker, {}).items():
            retired = self._retired.setdefault(section, {})
            for key, (_, value) in values.items():
                retired[key] = merge(retired[key], value, key) if key in retired else value

    def total(self, section: str, keys: Collection[str] = ()) -> dict[str, Any]:
        """Every worker's entries of ``section`` (those named by ``keys``; none: all), summed."""
        books = [{key: value for key, (_, value) in worker.get(section, {}).items()} for worker in self._live.values()]
        books.append(self._retired.get(section, {}))
        if keys:
            books = [{key: book[key] for key in keys if key in book} for book in books]
        summed: dict[str, Any] = {}
        for book in books:
            for key, value in book.items():
                summed[key] = merge(summed[key], value, key) if key in summed else value
        return summed


class Counters:
    """The pool's counters, and the fan-out that refreshes the statistics when a worker asks
    for the pool's."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.book = CounterBook()
        self._request_ids = itertools.count(1)
        self._waiters: dict[int, anyio.Event] = {}
        self._fan_out: anyio.Event | None = None

    def reported(self, process: WorkerProcess, report: StatsReport) -> None:
        refused = self.book.record(process, report.seq, report.counters)
        if refused:
            logger.debug(
                "worker %d: %d counters of report %d refused (stale or bad)", process.slot, refused, report.seq
            )
        waiter = self._waiters.get(report.request_id) if report.request_id else None
        if waiter is not None:
            waiter.set()

    def retire(self, process: WorkerProcess) -> None:
        self.book.retire(process)

    def totals(self, section: str) -> dict[str, Any]:
        return self.book.total(section)

    async def answer(self, process: WorkerProcess, request_id: int, keys: list[str]) -> None:
        """Answer a worker's PoolStatsRequest, in as many replies as the statistics take."""
        stats = await self.pool_stats(keys)
        channel = process.channel
        if channel is None:
            return
        chunks = list(split({"stats": stats}, COUNTERS_BUDGET)) or [{}]
        for number, chunk in enumerate(chunks, 1):
            if not await channel.send(PoolStatsReply(request_id, chunk, more=number < len(chunks))):
                return

    async def pool_stats(self, keys: Collection[str] = ()) -> dict[str, Any]:
        """Fresh statistics from every live worker, summed with those of workers gone.

        Concurrent callers share one fan-out: a caller that arrives while one runs waits for it.
        """
        if self._fan_out is not None:
            await self._fan_out.wait()
            return self.book.total("stats", keys)
        self._fan_out = anyio.Event()
        try:
            async with anyio.create_task_group() as task_group:
                for process in self.pool.processes():
                    if process.channel is not None and process.state in (State.READY, State.DRAINING):
                        task_group.start_soon(self._refresh, process)
        finally:
            done, self._fan_out = self._fan_out, None
            done.set()
        return self.book.total("stats", keys)

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
