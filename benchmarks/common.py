"""What the benchmark scripts share: starting pools, loading them with wrk, reading wrk's report,
and writing results (a table on stdout, CSV and JSON, a PNG when matplotlib is installed)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

#: wrk's request (its body read from a file, so it may be binary), and a report of what went
#: wrong by kind (wrk's summary does not print them all).
LUA = """
local file = assert(io.open("%(body)s", "rb"))
wrk.body = file:read("*all")
file:close()
wrk.method = "POST"
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%%d connect=%%d read=%%d write=%%d timeout=%%d status=%%d\\n",
    summary.requests, e.connect, e.read, e.write, e.timeout, e.status))
end
"""


def infer_body(rows: int = 1, width: int = 64) -> str:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [rows, width], "data": [0.5] * (width * rows)}]}
    )


def binary_body(rows: int = 1, width: int = 64) -> tuple[bytes, dict[str, str]]:
    """A V2 infer with the binary tensor extension, both ways, and its headers."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "FP32",
                    "shape": [rows, width],
                    "parameters": {"binary_data_size": rows * width * 4},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    data = struct.pack(f"<{rows * width}f", *([0.5] * (rows * width)))
    return head + data, {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}


def require_wrk() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("benchmarks need wrk: apt-get install wrk")


def wrk_script(folder: str, body: str | bytes, headers: dict[str, str] | None = None, name: str = "infer") -> str:
    """A wrk script POSTing ``body`` (JSON unless ``headers`` say otherwise)."""
    body_path = os.path.join(folder, f"{name}.body")
    with open(body_path, "wb") as f:
        f.write(body.encode() if isinstance(body, str) else body)
    headers = headers or {"Content-Type": "application/json"}
    lines = "\n".join(f'wrk.headers["{key}"] = "{value}"' for key, value in headers.items())
    path = os.path.join(folder, f"{name}.lua")
    with open(path, "w") as f:
        f.write(LUA % {"body": body_path, "headers": lines})
    return path


def wrk_command(
    url: str, script: str, seconds: float, connections: int, threads: int = 1, model: str = "mlp"
) -> list[str]:
    return [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script,
        f"{url}/v2/models/{model}/infer",
    ]  # fmt: skip


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, latency percentiles, and failures: socket errors and non-2xx responses."""

    def seconds(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    latencies = {p: seconds(v, u) for p, v, u in re.findall(r"\s(50|90|99)%\s+([\d.]+)(us|ms|s|m)", output)}
    report = re.search(r"RESULT (.*)", output)
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", report.group(1))} if report else {}
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latencies.get("50", 0.0) * 1e3,
        "p99_ms": latencies.get("99", 0.0) * 1e3,
        "requests": counts.get("requests", 0),
        "socket_errors": sum(counts.get(k, 0) for k in ("connect", "read", "write", "timeout")),
        "non_2xx": counts.get("status", 0),
    }


class Pool:
    """``supervisor start`` in a process of its own, with the interpreter given (``python`` may be
    ``["wine", "python.exe"]`` to run the pool as Windows processes)."""

    def __init__(self, workers: int, *extra: str, python: Sequence[str] = (sys.executable,)) -> None:
        self.python = list(python)
        self.folder = tempfile.mkdtemp(prefix="bench-")
        self.control = (
            rf"\\.\pipe\inference-supervisor-bench-{os.getpid()}-{time.monotonic_ns()}"
            if len(self.python) > 1
            else os.path.join(self.folder, "control.sock")
        )
        command = [*self.python, "-m", "supervisor", "start", "--workers", str(workers), "--bind", "127.0.0.1:0"]
        self.process = subprocess.Popen(
            [*command, "--control", self.control, *extra],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        ready = threading.Event()
        # Read everything it prints, always: a pipe nobody reads fills up and blocks the pool.
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(180) or not self.url:
            self.process.kill()
            raise SystemExit(f"the pool with {workers} workers did not become ready:\n{''.join(self.lines)}")

    def _read(self, ready: threading.Event) -> None:
        assert self.process.stdout is not None
        self.url = ""
        for line in self.process.stdout:
            self.lines.append(line)
            match = re.search(r"pool ready: \d+ workers? serving (http://\S+)", line)
            if match and not self.url:
                self.url = match.group(1)
                ready.set()
        ready.set()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.python, "-m", "supervisor", *args, "--control", self.control],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def stop(self) -> str:
        """Stop the pool; everything it printed."""
        self.cli("stop")
        self.process.wait(120)
        self._reader.join(10)  # under Wine a worker may hold the pipe a moment longer
        shutil.rmtree(self.folder, ignore_errors=True)
        return "".join(self.lines)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.stop()


def save(name: str, rows: list[dict[str, Any]]) -> None:
    """The rows as benchmarks/results/NAME.csv and NAME.json."""
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"{name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
        json.dump(rows, f, indent=2)


def table(columns: Sequence[tuple[str, str, str]], rows: list[dict[str, Any]]) -> str:
    """``columns``: (key, heading, format spec); text left, numbers right."""
    cells = [[heading for _, heading, _ in columns]]
    cells += [[format(row[key], spec) for key, _, spec in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    left = [not spec for _, _, spec in columns]
    return "\n".join(
        "  ".join(c.ljust(w) if lf else c.rjust(w) for c, w, lf in zip(line, widths, left, strict=True)).rstrip()
        for line in cells
    )


#: The latency and failure columns of every load table.
LATENCY_COLUMNS = [("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"), ("errors", "errors", "d")]


def save_plot(fig: Any, name: str) -> None:
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, f"{name}.png"))
    print(f"plot: benchmarks/results/{name}.png")


def pyplot() -> Any:
    """matplotlib's pyplot, or None when it is not installed (the plots are optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; the CSV and JSON are in benchmarks/results/)")
        return None
    return plt
