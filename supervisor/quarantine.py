"""Models whose requests kill their workers: quarantined, so that the others serve on.

Clock-free like the health policy: the caller passes ``now``. When a worker dies while serving,
the supervisor reads what it had in flight (``ipc.contract.inflight``) and tells
:meth:`Quarantine.died` which model versions had a request inside their model's call: the
suspects (the worker's other requests were being read, decoded or answered). A model version
suspected at :data:`DEATHS` deaths within :data:`WINDOW` seconds is quarantined: every worker
answers 503 for it, with the reason, until a reload replaces them all (a worker started
meanwhile is told too). One death proves little (an out-of-memory kill, a request of another
model that was being decoded); three in a minute with the same model in its call each time is a
pattern.
"""

from __future__ import annotations

import collections

DEATHS = 3
WINDOW = 60.0


class Quarantine:
    def __init__(self, deaths: int = DEATHS, window: float = WINDOW) -> None:
        self.deaths = deaths
        self.window = window
        #: The quarantined model versions (NAME/VERSION), and why, in a line.
        self.models: dict[str, str] = {}
        self._seen: dict[str, collections.deque[float]] = {}

    def died(self, now: float, keys: set[str]) -> list[str]:
        """A worker died at ``now`` with requests of the model versions ``keys`` in flight; the
        versions quarantined by it."""
        newly = []
        for key in sorted(keys - self.models.keys()):
            seen = self._seen.setdefault(key, collections.deque())
            seen.append(now)
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            if len(seen) >= self.deaths:
                name, _, version = key.rpartition("/")
                self.models[key] = (
                    f"model {name!r} version {version} is quarantined: it was serving a request each time a worker "
                    f"died, {len(seen)} times within {self.window:g}s (supervisor reload serves it again)"
                )
                del self._seen[key]
                newly.append(key)
        return newly

    def clear(self) -> None:
        self.models.clear()
        self._seen.clear()
