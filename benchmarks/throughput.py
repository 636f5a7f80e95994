"""Throughput of the pool by worker count, as ratios against bare hypercorn in the same run.

    python benchmarks/throughput.py [--workers 1 2 4] [--seconds 5] [--connections 16] [--rows 1]

First the baseline: the same inference app served by one bare hypercorn process, no
supervisor. Then ``supervisor start --workers N`` for each N. Each is loaded with wrk (Debian's
``wrk``) over keep-alive connections with V2 JSON infer requests for the demo model; one row
each: requests/s, latency percentiles, and the ratio to the baseline. This machine is shared
and noisy: read the ratios, not the absolute numbers. Results go to benchmarks/results/ as
CSV, and as a PNG when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
"""


def start_pool(workers: int, control: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supervisor",
            "start",
            "--workers",
            str(workers),
            "--bind",
            "127.0.0.1:0",
            "--control",
            control,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    for line in process.stdout:
        match = re.search(r"pool ready: \d+ workers serving (http://\S+)", line)
        if match:
            return process, match.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit(f"the pool with {workers} workers did not become ready")


def start_bare() -> tuple[subprocess.Popen[str], str]:
    """One hypercorn process serving the worker's app, with no supervisor around it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "benchmarks.bare_app:app", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("bare hypercorn did not start")


def stop_pool(process: subprocess.Popen[str], control: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "supervisor", "stop", "--control", control], cwd=ROOT, capture_output=True, timeout=60
    )
    process.wait(60)


def parse_wrk(output: str) -> dict[str, float]:
    def seconds(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latencies = {p: seconds(v, u) for p, v, u in re.findall(r"\s(50|90|99)%\s+([\d.]+)(us|ms|s|m)", output)}
    errors = sum(
        int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|Socket errors: .*?timeout):?\s+(\d+)", output)
    )
    return {"rps": rps, "p50_ms": latencies["50"] * 1e3, "p99_ms": latencies["99"] * 1e3, "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1, help="batch size of each request")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("benchmarks need wrk: apt-get install wrk", file=sys.stderr)
        return 1
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [args.rows, 64], "data": [0.5] * (64 * args.rows)}]}
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "infer.lua")
        with open(script, "w") as f:
            f.write(LUA % body)

        def load(url: str) -> dict[str, float]:
            command = ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", script]
            result = subprocess.run(
                [*command, f"{url}/v2/models/mlp/infer"], capture_output=True, text=True, timeout=args.seconds + 60
            )
            return parse_wrk(result.stdout)

        process, url = start_bare()
        try:
            rows.append({"server": "bare hypercorn, 1 process", **load(url)})
        finally:
            process.terminate()
            process.wait(30)
        for workers in args.workers:
            control = os.path.join(tmp, f"bench-{workers}.sock")
            process, url = start_pool(workers, control)
            try:
                rows.append({"server": f"supervisor, {workers} workers", **load(url)})
            finally:
                stop_pool(process, control)
    base = rows[0]["rps"]
    cores = os.cpu_count()
    print(
        f"V2 JSON infer, demo model, batch {args.rows}, "
        f"{args.connections} connections, {args.seconds}s each, {cores} cores"
    )
    print(f"{'server':<26}  {'req/s':>9}  {'vs bare':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'errors':>6}")
    for row in rows:
        ratio = row["rps"] / base
        print(
            f"{row['server']:<26}  {row['rps']:>9.0f}  {ratio:>7.2f}x  "
            f"{row['p50_ms']:>7.2f}  {row['p99_ms']:>7.2f}  {row['errors']:>6.0f}"
        )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "throughput.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot; the CSV is in benchmarks/results/)")
        return 0
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.barh([str(r["server"]) for r in rows], [r["rps"] / base for r in rows])
    ax.set_xlabel("throughput vs bare hypercorn")
    ax.set_title("V2 JSON infer, demo model")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "throughput.png"))
    print("plot: benchmarks/results/throughput.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
