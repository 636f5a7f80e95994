"""What dynamic batching buys one worker under many concurrent requests, with either HTTP server.

    python benchmarks/batching.py [--connections 64] [--delays 2] [--seconds 5]

For each HTTP server (hypercorn, uvicorn) a pool of one worker is loaded by wrk over
kept-alive connections (V2 JSON infer, batch 1, the demo model): first without batching (the
baseline), then with ``--batch-delay MS`` for each delay given. Each row: requests/s and its
ratio to the baseline of the same server in the same run, p50 and p99 latency, errors, and
how many requests each model call served (Triton's ``inference_count / execution_count``,
from the model's statistics). The p99 bound to compare against is the delay plus one model
call of a full batch, printed from the model computed in this process (the compute floor).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (
    LATENCY_COLUMNS,
    Pool,
    infer_body,
    parse_wrk,
    require_wrk,
    save,
    table,
    wrk_command,
    wrk_script,
)

SERVERS = ("hypercorn", "uvicorn")


def model_call_ms(rows: int) -> float:
    """The demo model's predict of ``rows`` rows in this process: the median of 200 calls."""
    import numpy as np

    from worker.models import demo_model

    model = demo_model()
    batch = {model.inputs[0].name: np.full((rows, 64), 0.5, dtype=np.float32)}
    times = []
    for _ in range(200):
        begun = time.perf_counter()
        model.predict(batch)
        times.append(time.perf_counter() - begun)
    return sorted(times)[len(times) // 2] * 1e3


def counts(url: str) -> tuple[int, int]:
    with urllib.request.urlopen(f"{url}/v2/models/mlp/stats", timeout=30) as response:
        (stats,) = json.load(response)["model_stats"]
    return stats["inference_count"], stats["execution_count"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--delays", type=float, nargs="+", default=[2.0], help="batch delays to try, in ms")
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    require_wrk()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(tmp, infer_body(1))
        for server in SERVERS:
            base = 0.0
            for delay in [0.0, *args.delays]:
                with Pool(1, "--http", server, "--batch-delay", f"{delay:g}") as pool:
                    command = wrk_command(pool.url, script, args.seconds, args.connections, threads=1)
                    before = counts(pool.url)
                    result = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60)
                    inferences, executions = (now - then for now, then in zip(counts(pool.url), before, strict=True))
                measured = parse_wrk(result.stdout)
                base = base or measured["rps"] or 1.0
                rows.append(
                    {
                        "server": server,
                        "batch_delay_ms": delay,
                        **measured,
                        "vs_unbatched": measured["rps"] / base,
                        "per_call": inferences / (executions or 1),
                        "errors": measured["socket_errors"] + measured["non_2xx"],
                    }
                )
    floor = model_call_ms(64)
    print(
        f"V2 JSON infer, demo model, batch 1, one worker, {args.connections} connections, {args.seconds}s each, "
        f"{os.cpu_count()} cores; one model call of 64 rows: {floor:.2f} ms"
    )
    columns = [
        ("server", "server", ""),
        ("batch_delay_ms", "delay ms", "g"),
        ("rps", "req/s", ".0f"),
        ("vs_unbatched", "vs unbatched", ".2f"),
        ("per_call", "requests/call", ".1f"),
        *LATENCY_COLUMNS,
    ]
    print(table(columns, rows))
    save("batching", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
