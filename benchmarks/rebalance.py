"""How kept-alive connections spread over the workers when one joins: before, and after.

    python benchmarks/rebalance.py [--clients 16] [--windows-python PATH]

16 clients, each one kept-alive ``http.client`` connection in a thread sending V2 JSON infer
requests back to back and reconnecting when a response says ``Connection: close`` (as any
HTTP/1.1 client does), load a pool; then a worker joins it: `supervisor scale 2` on a pool of 1,
or a pool of 2 loses a worker (SIGKILL, `taskkill /F` under Wine) and its replacement joins.
For each server, each event and each window (before the join; 0-4 s and 4-10 s after it), a
row says where the clients are (each client's last answer, by worker), the requests each
worker answered, and the worst worker's share of them against an even share (1.00: even; the
goal from 4 s after the join is within 25%, 0.75-1.25), and how many requests failed (the lost
worker's own requests in flight fail; none after the join should).

With --windows-python (the Windows suite's python.exe, .windows-env/python/python.exe) the
pool runs as Windows processes under Wine and the load comes from Linux.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Pool, save, table
from tests.e2e.harness import Platform
from tests.e2e.load import Load

#: The windows, in seconds from the join (before it: the same length before).
WINDOWS = (("before the join", -4.0, 0.0), ("0-4 s after", 0.0, 4.0), ("4-10 s after", 4.0, 10.0))


def pids(pool: Pool) -> list[int]:
    status = json.loads(pool.cli("status", "--json").stdout)
    return [worker["pid"] for worker in status["workers"] if worker["state"] == "ready"]


def run(server: str, event: str, clients: int, python: list[str], windows: bool) -> list[dict[str, Any]]:
    workers = 1 if event.startswith("scale") else 2
    rows = []
    with Pool(workers, "--http", server, python=python) as pool, Load(pool.url, clients) as load:
        time.sleep(-WINDOWS[0][1] + 1.0)  # the load runs steadily first
        looks = [(load.served(), load.clients(), load.failed)]
        if event.startswith("scale"):
            result = pool.cli("scale", "2")
            assert result.returncode == 0, result.stderr
        else:
            lost = pids(pool)[-1]
            Platform(windows).kill(lost)
            deadline = time.monotonic() + 120
            while len(set(pids(pool)) - {lost}) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        joined = time.monotonic()
        for _, _, end in WINDOWS[1:]:
            time.sleep(max(0.0, joined + end - time.monotonic()))
            looks.append((load.served(), load.clients(), load.failed))
        serving = [str(pid) for pid in pids(pool)]
        load.stop()
    before = [({}, {}, 0), *looks[:-1]]
    for (name, _, _), (served, where, failed), (was, _, failed_before) in zip(WINDOWS, looks, before, strict=True):
        who = serving
        if name.startswith("before"):  # from the start of the load, by the workers serving then
            was, failed_before, who = {}, 0, sorted(served, key=int)
        counts = [served.get(pid, 0) - was.get(pid, 0) for pid in who]
        even = sum(counts) / len(counts) or 1.0
        rows.append(
            {
                "server": server,
                "event": event,
                "window": name,
                "clients": " / ".join(str(where.get(pid, 0)) for pid in who),
                "served": " / ".join(str(count) for count in counts),
                "worst": min(counts) / even,
                "failed": failed - failed_before,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--servers", nargs="+", default=["hypercorn", "uvicorn"])
    parser.add_argument("--windows-python", help="run the pool under Wine with this Windows python.exe")
    args = parser.parse_args()
    python = [shutil.which("wine") or "wine", args.windows_python] if args.windows_python else [sys.executable]
    rows = []
    for server in args.servers:
        for event in ("scale 1 -> 2", "worker lost, replaced"):
            rows += run(server, event, args.clients, python, bool(args.windows_python))
    where = "Windows under Wine" if args.windows_python else "Linux"
    print(f"{where}: {args.clients} kept-alive clients, V2 JSON infer; by worker: the old one(s) first, the new last")
    print(
        table(
            [
                ("server", "server", ""),
                ("event", "event", ""),
                ("window", "window", ""),
                ("clients", "clients", ""),
                ("served", "requests", ""),
                ("worst", "worst vs even", ".2f"),
                ("failed", "failed", "d"),
            ],
            rows,
        )
    )
    save("rebalance-windows" if args.windows_python else "rebalance", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
