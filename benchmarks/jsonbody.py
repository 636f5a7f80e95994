"""What decoding a large JSON infer body costs a worker: time, peak memory, the longest stall.

    python benchmarks/jsonbody.py [--megabytes 60] [--kinds digits floats repr rows]

For each kind of body, ``--megabytes`` of a V2 infer for a model of one FP32 input (-1, 64)
(tests.models.RowSumModel) is decoded the way a worker does (worker.api.tensors.decode_infer,
on a thread while another counts how long it waits for the GIL), twice in the same run: parsed
whole, as before (the "whole" rows: jsonio.LARGE_BODY set past the body), and with its arrays of
numbers parsed a piece at a time (the "pieces" rows). Each decode runs in a process of its own,
whose peak memory (Linux's VmHWM, reset once the body is built) is given over the body's size;
the last columns are the pieces' figures over the whole's.

Kinds: "digits" one-digit values ("7,", the most values a body can hold), "floats" short
decimals as clients write them ("0.3, "), "repr" random floats as Python writes them (17 digits),
"rows" the same as "floats" nested a row of 64 at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import save, table

MIB = 1024 * 1024
KINDS = ("digits", "floats", "repr", "rows")


def make_body(kind: str, megabytes: int) -> tuple[bytes, int]:
    """A V2 infer of about ``megabytes`` of ``kind``, and its number of values."""
    import numpy as np

    size = {"digits": 2, "floats": 5, "repr": 21, "rows": 5}[kind]
    rows = megabytes * MIB // (64 * size) // 10 * 10
    if kind == "digits":
        data = b",".join([b"7"] * (rows * 64))
    elif kind == "repr":
        data = ",".join(map(repr, np.random.default_rng(7).standard_normal(rows * 64).tolist())).encode()
    else:
        values = [b"0.%d" % (i % 10) for i in range(640)] * (rows // 10)
        if kind == "rows":
            data = b", ".join(b"[" + b", ".join(values[i : i + 64]) + b"]" for i in range(0, len(values), 64))
        else:
            data = b", ".join(values)
    head = b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[%d,64],"data":[' % rows
    return head + data + b"]}]}", rows * 64


def status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kind: str, megabytes: int, path: str) -> dict[str, Any]:
    """One decode, in this process: its figures."""
    from tests.models import RowSumModel
    from worker.api import jsonio, tensors

    if path == "whole":
        jsonio.LARGE_BODY = 1 << 62
    body, values = make_body(kind, megabytes)
    model = RowSumModel("sum")
    tensors.decode_infer(model, make_body(kind, 2)[0], None)  # what a first decode costs, once
    Path("/proc/self/clear_refs").write_text("5")  # peak memory from here
    before = status_bytes("VmRSS")
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(tensors.decode_infer(model, body, None)))
    started = time.perf_counter()
    thread.start()
    stall, last = 0.0, time.perf_counter()
    while thread.is_alive():
        time.sleep(0.001)
        now = time.perf_counter()
        stall, last = max(stall, now - last), now
    took = time.perf_counter() - started
    assert result and result[0].inputs["INPUT0"].size == values
    peak = status_bytes("VmHWM") - before
    return {"kind": kind, "path": path, "body_mib": len(body) / MIB, "values": values, "seconds": took,
            "peak_mib": peak / MIB, "peak_ratio": peak / len(body), "stall_ms": stall * 1000}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--megabytes", type=int, default=60)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.megabytes, args.child[1])))
        return
    if sys.platform != "linux":
        sys.exit("benchmarks/jsonbody.py reads peak memory from /proc (Linux)")
    rows = []
    for kind in args.kinds:
        measured = {}
        for path in ("whole", "pieces"):
            command = [sys.executable, __file__, "--megabytes", str(args.megabytes), "--child", kind, path]
            measured[path] = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
            rows.append(measured[path])
        rows[-1]["time_vs_whole"] = measured["pieces"]["seconds"] / measured["whole"]["seconds"]
        rows[-1]["memory_vs_whole"] = measured["pieces"]["peak_mib"] / measured["whole"]["peak_mib"]
        rows[-1]["stall_vs_whole"] = measured["pieces"]["stall_ms"] / measured["whole"]["stall_ms"]
    for row in rows:
        row.setdefault("time_vs_whole", 1.0)
        row.setdefault("memory_vs_whole", 1.0)
        row.setdefault("stall_vs_whole", 1.0)
    columns = [
        ("kind", "body", ""),
        ("path", "parsed", ""),
        ("body_mib", "MiB", ".0f"),
        ("values", "values", ","),
        ("seconds", "decode s", ".2f"),
        ("peak_mib", "peak MiB", ".0f"),
        ("peak_ratio", "peak/body", ".1f"),
        ("stall_ms", "stall ms", ".0f"),
        ("time_vs_whole", "time x", ".2f"),
        ("memory_vs_whole", "memory x", ".2f"),
        ("stall_vs_whole", "stall x", ".3f"),
    ]
    print(table(columns, rows))
    save("jsonbody", rows)


if __name__ == "__main__":
    main()
