"""Pool-wide statistics: the sum of every worker's cumulative counters.

Workers report plain nested maps (see ``worker.api.stats``); this module only adds them up,
so it needs to know nothing of their meaning beyond one rule: a key starting with ``last_`` is
a timestamp and takes the maximum. Workers that have exited keep counting through
``retired``, so pool counters never go down.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: How deep a report may nest; Triton's shape needs three levels under the model name.
MAX_DEPTH = 4


def sanitize(report: Any) -> dict[str, Any]:
    """Keep only what adding up understands: model name -> map of numbers, strings, maps.

    A buggy or version-skewed worker's report must not poison the pool's totals forever.
    """
    if not isinstance(report, dict):
        return {}
    return {
        name: _clean(value, 1) for name, value in report.items() if isinstance(name, str) and isinstance(value, dict)
    }


def _clean(mapping: dict[Any, Any], depth: int) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    if depth > MAX_DEPTH:
        return clean
    for key, value in mapping.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, dict):
            clean[key] = _clean(value, depth + 1)
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            clean[key] = value
    return clean


def merge(a: Any, b: Any, key: str = "") -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a[k], b[k], k) if k in a and k in b else a.get(k, b.get(k)) for k in a.keys() | b.keys()}
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return max(a, b) if key.startswith("last_") else a + b
    return a


def total(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for report in reports:
        result = merge(result, report)
    return result
