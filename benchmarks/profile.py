"""Where a worker's time goes under load: py-spy samples one worker while wrk loads the pool.

    python benchmarks/profile.py [--http uvicorn] [--seconds 10] [--connections 16] [--body json|binary]

Prints the share of the busy samples (threads idle, waiting for work, set aside) by where they
were when sampled (self time): our code (worker/, ipc/), the HTTP server, anyio, the event loop
(uvloop's C code shows as the asyncio frame that called it), numpy, orjson; then our own
functions with the most samples, inclusive. Needs py-spy (``pip install py-spy``; sampling
another process needs ptrace rights: root, or ``kernel.yama.ptrace_scope=0``) and wrk. The
worker runs slower while sampled: the shares, not the rate, are the result.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import Pool, binary_body, infer_body, parse_wrk, require_wrk, table, wrk_command, wrk_script

#: Where a sampled frame is, by its file: the first pattern that matches names it.
AREAS = [
    ("idle threads", r"threading\.py|queue\.py"),
    ("ours: worker/, ipc/", r"\((worker|ipc)/"),
    ("HTTP server", r"uvicorn|hypercorn|h11|httptools|wsproto|h2/"),
    ("anyio", r"\(anyio/"),
    ("event loop", r"\(asyncio/|uvloop|selectors"),
    ("numpy", r"numpy"),
    ("orjson", r"orjson"),
]


def area(frame: str) -> str:
    return next((name for name, pattern in AREAS if re.search(pattern, frame)), "other (C, interpreter)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", default="uvicorn", choices=["hypercorn", "uvicorn"])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--body", default="json", choices=["json", "binary"])
    args = parser.parse_args()
    require_wrk()
    if not shutil.which("py-spy"):
        raise SystemExit("this script needs py-spy: pip install py-spy")
    with tempfile.TemporaryDirectory() as tmp, Pool(1, "--http", args.http) as pool:
        body, headers = (infer_body(), None) if args.body == "json" else binary_body()
        script = wrk_script(tmp, body, headers)
        status = pool.cli("status").stdout
        pid = re.search(r"^\s*0\s+\d+\s+(\d+)\s", status, re.MULTILINE)  # slot 0's row: SLOT GEN PID
        if pid is None:
            raise SystemExit(f"no worker pid in the pool's status:\n{status}")
        load = subprocess.Popen(
            wrk_command(pool.url, script, args.seconds + 2, args.connections),
            stdout=subprocess.PIPE,
            text=True,
        )
        raw = os.path.join(tmp, "profile.txt")
        spy = ["py-spy", "record", "-p", pid.group(1), "-d", f"{args.seconds:g}", "-r", "250", "-f", "raw"]
        record = subprocess.run([*spy, "-o", raw, "--nonblocking"], capture_output=True, text=True)
        out, _ = load.communicate(timeout=args.seconds + 60)
        if record.returncode != 0:
            raise SystemExit(f"py-spy failed: {record.stderr.strip()}")
        by_area: collections.Counter[str] = collections.Counter()
        ours: collections.Counter[str] = collections.Counter()
        total = busy = 0
        with open(raw) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                leaf = stack.split(";")[-1]
                by_area[area(leaf)] += int(count)
                total += int(count)
                if area(leaf) == "idle threads":
                    continue
                busy += int(count)
                # Inclusive: a function counts once per sample, wherever in the stack (lines merged).
                for function in {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}:
                    if (
                        area(function) == "ours: worker/, ipc/"
                        and "worker/__main__.py" not in function
                        and "worker/main.py" not in function
                    ):
                        ours[function] += int(count)
    rate = parse_wrk(out)["rps"]
    print(f"{args.http}, {args.body} bodies, {args.connections} connections: {rate:,.0f} req/s while sampled")
    print(f"{by_area['idle threads'] / total:.0%} of the samples were threads idle, waiting for work; of the others:")
    rows = [{"where": name, "share": count / busy} for name, count in by_area.most_common() if name != "idle threads"]
    print(table([("where", "self time in", ""), ("share", "share", ".1%")], rows))
    print()
    rows = [{"function": name, "share": count / busy} for name, count in ours.most_common(12)]
    print(table([("function", "our functions (inclusive)", ""), ("share", "share", ".1%")], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
