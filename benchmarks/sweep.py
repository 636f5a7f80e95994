"""Requests and rows per second of a 2-worker pool across concurrency, encoding and batch size,
for each HTTP server, with and without dynamic batching, and as a fraction of the model's
compute floor.

    python benchmarks/sweep.py [--connections 1 4 16 64] [--seconds 3] [--workers 2]

For each server (hypercorn, uvicorn, and uvicorn with ``--batch-delay 1``) one pool is started
and loaded by wrk over kept-alive connections for every cell: V2 infer in JSON and with the
binary tensor extension (both ways), batch 1 and batch 64, at each concurrency. Each row:
req/s, rows/s, p50 and p99 latency, errors, and rows/s as a fraction of the compute floor: the
demo model's own predict in this process, on one core, times the workers (what the pool could
reach if HTTP cost nothing). Results in benchmarks/results/sweep.{csv,json}, and a plot of
rows/s against connections in sweep.png when matplotlib is installed (``pip install
".[bench]"``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (
    LATENCY_COLUMNS,
    Pool,
    binary_body,
    infer_body,
    parse_wrk,
    pyplot,
    require_wrk,
    save,
    save_plot,
    table,
    wrk_command,
    wrk_script,
)

CONFIGURATIONS = {
    "hypercorn": ["--http", "hypercorn"],
    "uvicorn": ["--http", "uvicorn"],
    "uvicorn, batching 1 ms": ["--http", "uvicorn", "--batch-delay", "1"],
}


def compute_floor(rows: int, seconds: float = 1.0) -> float:
    """Rows/s of the demo model's predict in this process, one thread, batches of ``rows``."""
    import numpy as np

    from worker.models import demo_model

    model = demo_model()
    batch = {"INPUT0": np.full((rows, 64), 0.5, dtype=np.float32)}
    calls, begun = 0, time.perf_counter()
    while time.perf_counter() - begun < seconds:
        model.predict(batch)
        calls += 1
    return calls * rows / (time.perf_counter() - begun)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    require_wrk()
    floors = {rows: compute_floor(rows) * args.workers for rows in (1, 64)}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {}
        for rows in (1, 64):
            scripts["json", rows] = wrk_script(tmp, infer_body(rows), name=f"json{rows}")
            body, headers = binary_body(rows)
            scripts["binary", rows] = wrk_script(tmp, body, headers, name=f"binary{rows}")
        for name, flags in CONFIGURATIONS.items():
            with Pool(args.workers, *flags) as pool:
                for (encoding, rows), script in scripts.items():
                    for connections in args.connections:
                        command = wrk_command(pool.url, script, args.seconds, connections)
                        output = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60)
                        measured = parse_wrk(output.stdout)
                        results.append(
                            {
                                "server": name,
                                "encoding": encoding,
                                "batch": rows,
                                "connections": connections,
                                **measured,
                                "rows_per_s": measured["rps"] * rows,
                                "of_floor": measured["rps"] * rows / floors[rows],
                                "errors": measured["socket_errors"] + measured["non_2xx"],
                            }
                        )
                        print(
                            f"{name}, {encoding}, batch {rows}, {connections} connections: {measured['rps']:.0f} req/s"
                        )
    print(
        f"\n{args.workers} workers, demo model, {args.seconds}s a cell, {os.cpu_count()} cores; compute floor "
        f"({args.workers} x one core): {floors[1]:,.0f} rows/s at batch 1, {floors[64]:,.0f} at batch 64"
    )
    columns = [
        ("server", "server", ""),
        ("encoding", "encoding", ""),
        ("batch", "batch", "d"),
        ("connections", "conns", "d"),
        ("rps", "req/s", ".0f"),
        ("rows_per_s", "rows/s", ".0f"),
        ("of_floor", "of floor", ".3f"),
        *LATENCY_COLUMNS,
    ]
    print(table(columns, results))
    save("sweep", results)
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
        for ax, rows in zip(axes, (1, 64), strict=True):
            for name in CONFIGURATIONS:
                for encoding in ("json", "binary"):
                    cells = [r for r in results if (r["server"], r["encoding"], r["batch"]) == (name, encoding, rows)]
                    ax.plot(
                        [r["connections"] for r in cells],
                        [r["rows_per_s"] for r in cells],
                        marker="o",
                        label=f"{name}, {encoding}",
                    )
            ax.set_xscale("log", base=2)
            ax.set_xlabel("kept-alive connections")
            ax.set_ylabel("rows/s")
            ax.set_title(f"batch {rows}")
        axes[0].legend(fontsize=7)
        save_plot(fig, "sweep")
    return 0


if __name__ == "__main__":
    sys.exit(main())
