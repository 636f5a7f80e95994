"""Pool-wide statistics: the sum of every worker's cumulative counters.

Workers report plain nested maps (see ``worker.api.stats``); this module only adds them up,
so it needs to know nothing of their meaning beyond one rule: a key starting with ``last_`` is
a timestamp and takes the maximum. Workers that have exited keep counting through
``retired``, so pool counters never go down.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def merge(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a[k], b[k], k) if k in a and k in b else a.get(k, b.get(k)) for k in a.keys() | b.keys()}
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return max(a, b) if key.startswith("last_") else a + b
    return a


def total(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for report in reports:
        result = merge(result, report)
    return result
