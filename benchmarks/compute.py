"""When compute dominates: rows/s of a big MLP served by a pool, against the same model computed
in plain processes, and what sizing the workers' numerical threads buys.

    python benchmarks/compute.py [--workers 2] [--seconds 5] [--connections 8]

The model is an .npz MLP (1024 -> 2048 -> 2048 -> 16, written to a temporary folder) fed
batch-64 requests with the binary tensor extension, so that its matrix products, not HTTP,
take the time. The baseline is the model's predict called in a loop by ``--workers`` plain
processes, each limited to its share of the cores as the pool limits its workers, in the same
run. Then the pool with its default thread sizing (cores / workers each) and with
``--threads-per-worker`` set to every core (the oversubscription BLAS does by default).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import itertools

from benchmarks.common import (
    LATENCY_COLUMNS,
    Pool,
    binary_body,
    parse_wrk,
    require_wrk,
    save,
    table,
    wrk_command,
    wrk_script,
)

LAYERS = (1024, 2048, 2048, 16)
ROWS = 64


def write_model(path: str) -> None:
    import numpy as np

    rng = np.random.default_rng(11)
    arrays = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(LAYERS)):
        arrays[f"w{i}"] = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        arrays[f"b{i}"] = np.zeros(n_out, dtype=np.float32)
    np.savez(path, **arrays)


def _compute(path: str, threads: int, seconds: float, results: Any) -> None:
    # As the supervisor does for a worker: the thread limits before numpy loads.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    import numpy as np

    from worker.models import MLP

    model = MLP.from_npz("big", path)
    batch = {"INPUT0": np.full((ROWS, LAYERS[0]), 0.5, dtype=np.float32)}
    model.predict(batch)  # warm
    calls, begun = 0, time.perf_counter()
    while time.perf_counter() - begun < seconds:
        model.predict(batch)
        calls += 1
    results.put(calls * ROWS / (time.perf_counter() - begun))


def plain_processes(path: str, processes: int, threads: int, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [context.Process(target=_compute, args=(path, threads, seconds, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=seconds + 120) for _ in workers)
    for worker in workers:
        worker.join(30)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    require_wrk()
    cores = os.cpu_count() or 1
    share = max(1, cores // args.workers)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.npz")
        write_model(path)
        plain = plain_processes(path, args.workers, share, args.seconds)
        rows.append({"what": f"{args.workers} plain processes, {share} thread(s) each", "rows_per_s": plain})
        body, headers = binary_body(ROWS, LAYERS[0])
        script = wrk_script(tmp, body, headers, name="big")
        for label, flags in (
            (f"pool, {args.workers} workers, default threads ({share} each)", []),
            (f"pool, {args.workers} workers, --threads-per-worker {cores}", ["--threads-per-worker", str(cores)]),
        ):
            with Pool(args.workers, "--model", f"big={path}", *flags) as pool:
                command = wrk_command(pool.url, script, args.seconds, args.connections, model="big")
                output = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 120)
            measured = parse_wrk(output.stdout)
            rows.append({"what": label, **measured, "rows_per_s": measured["rps"] * ROWS})
    for row in rows:
        row["vs_plain"] = row["rows_per_s"] / plain
        row.setdefault("p50_ms", float("nan"))
        row.setdefault("p99_ms", float("nan"))
        row["errors"] = int(row.get("socket_errors", 0) + row.get("non_2xx", 0))
    print(
        f"MLP {' -> '.join(map(str, LAYERS))}, batch {ROWS} binary, {args.connections} connections, "
        f"{args.seconds}s each, {cores} cores"
    )
    columns = [("what", "what", ""), ("rows_per_s", "rows/s", ".0f"), ("vs_plain", "vs plain", ".2f"), *LATENCY_COLUMNS]
    print(table(columns, rows))
    save("compute", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
