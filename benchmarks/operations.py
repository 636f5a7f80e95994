"""What a reload, a scale and recycling cost a pool under load: duration and failed requests.

    python benchmarks/operations.py [--workers 2] [--connections 16] [--windows-python PATH]

A pool of N workers is loaded by wrk (V2 JSON infer, kept-alive connections) for each row:
first with nothing happening (the baseline), then around one operation each: `supervisor
reload`, `supervisor scale N+1`, `supervisor scale N`, and a pool started with
--max-requests that recycles its workers as it goes. Each row gives how long the operation
took, the requests served during the window, their rate against the baseline of the same run,
and what failed: wrk's socket errors (connect, read, write, timeout) and non-2xx responses.
The goal is 0 and 0 in every row.

With --windows-python (the Windows suite's python.exe, .windows-env/python/python.exe) the
pool runs as Windows processes under Wine and the load comes from Linux.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (
    RESULTS,
    Pool,
    infer_body,
    parse_wrk,
    pyplot,
    require_wrk,
    save,
    table,
    wrk_command,
    wrk_script,
)

WINDOW = 10.0  # seconds of load around each operation
LEAD = 2.0  # seconds of load before the operation starts


def measure(pool: Pool, script: str, connections: int, operation: Callable[[], str] | None) -> dict[str, Any]:
    """Load ``pool`` for WINDOW seconds; run ``operation`` LEAD seconds in, timing it."""
    wrk = subprocess.Popen(
        wrk_command(pool.url, script, WINDOW, connections), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    outcome = {"seconds": 0.0, "result": "-"}
    if operation is not None:
        time.sleep(LEAD)  # a benchmark's pacing: the load runs steadily first
        begin = time.monotonic()
        outcome["result"] = operation()
        outcome["seconds"] = time.monotonic() - begin
    out, _ = wrk.communicate(timeout=WINDOW + 120)
    return {**outcome, **parse_wrk(out)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--max-requests", type=int, default=3000, help="for the recycling row")
    parser.add_argument("--windows-python", help="run the pool under Wine with this Windows python.exe")
    args = parser.parse_args()
    require_wrk()
    python = [shutil.which("wine") or "wine", args.windows_python] if args.windows_python else [sys.executable]
    n = args.workers
    rows: list[dict[str, Any]] = []

    def run(pool: Pool, *command: str) -> str:
        result = pool.cli(*command)
        return "ok" if result.returncode == 0 else f"exit {result.returncode}: {result.stderr.strip()}"

    with tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(tmp, infer_body())
        with Pool(n, python=python) as pool:
            rows.append({"operation": f"none ({n} workers)", **measure(pool, script, args.connections, None)})
            steps = [("reload", ("reload",)), (f"scale {n} -> {n + 1}", ("scale", str(n + 1)))]
            steps.append((f"scale {n + 1} -> {n}", ("scale", str(n))))
            for name, command in steps:
                rows.append(
                    {"operation": name, **measure(pool, script, args.connections, lambda c=command: run(pool, *c))}
                )
        jitter = str(args.max_requests // 10)
        with Pool(n, "--max-requests", str(args.max_requests), "--max-requests-jitter", jitter, python=python) as pool:
            row = measure(pool, script, args.connections, None)
            output = pool.stop()
            recycled = len(re.findall(r"worker \d+ recycled", output))
            rows.append(
                {"operation": f"recycling every ~{args.max_requests} requests", **row, "result": f"{recycled} recycled"}
            )

    base = rows[0]["rps"] or 1.0
    for row in rows:
        row["vs_none"] = row["rps"] / base
    where = "Windows under Wine" if args.windows_python else "Linux"
    print(f"{where}: {n} workers, V2 JSON infer, {args.connections} kept-alive connections, {WINDOW:g}s of wrk each")
    print(
        table(
            [
                ("operation", "operation", ""),
                ("seconds", "took s", ".2f"),
                ("requests", "requests", "d"),
                ("rps", "req/s", ".0f"),
                ("vs_none", "vs none", ".2f"),
                ("socket_errors", "socket errors", "d"),
                ("non_2xx", "non-2xx", "d"),
                ("result", "result", ""),
            ],
            rows,
        )
    )
    name = "operations-windows" if args.windows_python else "operations"
    save(name, rows)
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh([r["operation"] for r in rows], [r["rps"] for r in rows])
        for i, r in enumerate(rows):
            ax.text(r["rps"], i, f" {r['socket_errors'] + r['non_2xx']} failed", va="center")
        ax.set_xlabel("requests/s during the window")
        ax.set_title(f"Operations under load ({where})")
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, f"{name}.png"))
        print(f"plot: benchmarks/results/{name}.png")
    failed = sum(r["socket_errors"] + r["non_2xx"] for r in rows)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
