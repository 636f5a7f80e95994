"""Throughput of the pool by worker count and HTTP server, as ratios against bare hypercorn in
the same run.

    python benchmarks/throughput.py [--workers 1 2 4] [--seconds 5] [--connections 16] [--rows 1]
    python benchmarks/throughput.py --rounds 6 --workers 2 [--http uvicorn]

First the baselines: the same inference app served by one bare hypercorn process, and by one
bare uvicorn process, no supervisor; and the demo model in KServe's own model server with
``--workers N`` when kserve is installed (``benchmarks/kserve_app.py``). Then ``supervisor
start --workers N --http S`` for each server S and each N. Each is loaded with wrk (Debian's
``wrk``) over keep-alive connections with V2 JSON infer requests for the demo model; one row
each: requests/s, latency percentiles, and the ratio to bare hypercorn. This machine is shared
and noisy: read the ratios, not the absolute numbers. Results go to benchmarks/results/ as CSV
and JSON, and as a PNG when matplotlib is installed.

With ``--rounds R`` it measures balance instead: R rounds, each bare ``hypercorn --workers N``
(or ``uvicorn``, with ``--http uvicorn``) then the pool with N workers and the same server,
back to back, and prints each round's ratio, the worst and the median. Kept-alive connections
stay on the worker that accepted them, so a server whose workers split them unevenly runs,
round after round, at a fraction of its cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (
    LATENCY_COLUMNS,
    ROOT,
    Pool,
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

#: The bare servers, each serving the same app with no supervisor: ``--workers N`` is appended.
BARE = {
    "hypercorn": [sys.executable, "-m", "hypercorn", "benchmarks.bare_app:app"],
    # uvicorn's defaults pick httptools and uvloop when installed, as our uvicorn extra does.
    "uvicorn": [sys.executable, "-m", "uvicorn", "benchmarks.bare_app:app", "--no-access-log"],
}


def start_bare(workers: int = 1, server: str = "hypercorn") -> tuple[subprocess.Popen[str], str]:
    """``server`` serving the worker's app, with no supervisor around it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    if server == "hypercorn":
        command = [*BARE[server], "--bind", f"127.0.0.1:{port}"]
    elif server == "uvicorn":
        command = [*BARE[server], "--host", "127.0.0.1", "--port", str(port)]
    else:  # KServe's model server: all interfaces, its own way
        command = [sys.executable, os.path.join(ROOT, "benchmarks", "kserve_app.py"), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)  # a benchmark's poll for a port: nothing to wait on
    process.kill()
    raise SystemExit(f"bare {server} did not start")


def balance(args: argparse.Namespace, load: Callable[[str], dict[str, float]]) -> int:
    workers, server = args.workers[0], args.http
    rounds = []
    for number in range(1, args.rounds + 1):
        process, url = start_bare(workers, server)
        try:
            bare = load(url)
        finally:
            process.terminate()
            process.wait(30)
        with Pool(workers, "--http", server) as pool:
            ours = load(pool.url)
        ratio = ours["rps"] / (bare["rps"] or 1.0)
        rounds.append({"round": number, "bare_rps": bare["rps"], "pool_rps": ours["rps"], "ratio": ratio})
        print(
            f"round {number}: bare {server} {bare['rps']:.0f} req/s, pool {ours['rps']:.0f} req/s: {ratio:.2f}x",
            flush=True,
        )
    ratios = sorted(r["ratio"] for r in rounds)
    median = statistics.median(ratios)
    print(
        f"{workers} workers, {args.connections} kept-alive connections, {args.seconds}s a run: "
        f"pool --http {server} / bare {server} --workers {workers}: worst {ratios[0]:.2f}x, median {median:.2f}x"
    )
    save(f"balance-{server}", rounds)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1, help="batch size of each request")
    parser.add_argument("--rounds", type=int, default=0, help="measure balance: R rounds of bare vs pool")
    parser.add_argument(
        "--http", choices=sorted(BARE), default="hypercorn", help="with --rounds: the server of both, bare and pool"
    )
    args = parser.parse_args()
    require_wrk()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(tmp, infer_body(args.rows))

        def load(url: str) -> dict[str, float]:
            command = wrk_command(url, script, args.seconds, args.connections, threads=1)
            result = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60)
            return parse_wrk(result.stdout)

        if args.rounds:
            return balance(args, load)

        for server in sorted(BARE):
            process, url = start_bare(1, server)
            try:
                rows.append({"server": f"bare {server}, 1 process", **load(url)})
            finally:
                process.terminate()
                process.wait(30)
        if importlib.util.find_spec("kserve") is not None:  # an optional install: pip install kserve
            for workers in args.workers:
                process, url = start_bare(workers, "kserve")
                try:
                    rows.append({"server": f"kserve, {workers} workers", **load(url)})
                finally:
                    process.terminate()
                    process.wait(30)
        for server in sorted(BARE):
            for workers in args.workers:
                with Pool(workers, "--http", server) as pool:
                    label = f"supervisor --http {server}, {workers} worker{'' if workers == 1 else 's'}"
                    rows.append({"server": label, **load(pool.url)})
    base = rows[0]["rps"] or 1.0
    for row in rows:
        row["vs_bare"] = row["rps"] / base
        row["errors"] = row["socket_errors"] + row["non_2xx"]
    print(
        f"V2 JSON infer, demo model, batch {args.rows}, "
        f"{args.connections} connections, {args.seconds}s each, {os.cpu_count()} cores"
    )
    columns = [
        ("server", "server", ""),
        ("rps", "req/s", ".0f"),
        ("vs_bare", "vs bare", ".2f"),
        *LATENCY_COLUMNS,
    ]
    print(table(columns, rows))
    save("throughput", rows)
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.barh([str(r["server"]) for r in rows], [r["vs_bare"] for r in rows])
        ax.set_xlabel("throughput vs bare hypercorn")
        ax.set_title("V2 JSON infer, demo model")
        save_plot(fig, "throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
