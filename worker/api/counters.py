"""What a worker has counted, as the pool sums it: entries by section, and which changed.

Two kinds of counters leave a worker: the statistics of each model version (section ``stats``,
Triton's shape: ``worker.api.stats``) and the pool's metrics (sections ``requests``, ``rows``,
``latency``, ``queue``: ``worker.api.metrics``). Each is cumulative, and the supervisor keeps
every worker's newest value of every entry (``supervisor.stats``). A worker sends only the
entries that changed since it last sent them: an idle pool of 5,000 models sends nothing, a busy
one what moved, never 5,000 snapshots a second (they would not fit in a control message).
"""

from __future__ import annotations


class Changes:
    """Which entries changed since :meth:`take` was last called."""

    def __init__(self) -> None:
        self._changed: dict[str, set[str]] = {}

    def mark(self, section: str, key: str) -> None:
        self._changed.setdefault(section, set()).add(key)

    def take(self) -> dict[str, set[str]]:
        """Every entry changed so far, by section; from now on, none."""
        taken, self._changed = self._changed, {}
        return taken

    def __bool__(self) -> bool:
        return bool(self._changed)
