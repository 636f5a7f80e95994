"""JSON bodies cost what they carry: a worker given the largest JSON body its limits admit takes
about the body and the tensor it makes, not 15 times the body in Python objects, and answers
health meanwhile; an abusive one is refused with a 413 that says where tensors go instead."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from .harness import http

MIB = 1024 * 1024


def digits_body(megabytes: int) -> tuple[bytes, int, float]:
    """A V2 infer of about ``megabytes`` of one-digit values ("7,"): the most values a body can
    hold, the case that peaked at 884-969 MiB a worker; its rows and the first row's sum."""
    rows = megabytes * MIB // (64 * 2)
    data = b",".join([b"7"] * (rows * 64))
    head = f'{{"inputs":[{{"name":"INPUT0","datatype":"FP32","shape":[{rows},64],"data":['.encode()
    return head + data + b"]}]}", rows, 7.0 * 64


def floats_body(megabytes: int) -> tuple[bytes, int, float]:
    """The same of floats as a client writes them ("0.8, " and the like, 5 bytes a value)."""
    rows = megabytes * MIB // (64 * 5) // 10 * 10
    values = [b"0.%d" % (i % 10) for i in range(640)] * (rows // 10)
    head = f'{{"inputs":[{{"name":"INPUT0","datatype":"FP32","shape":[{rows},64],"data":['.encode()
    return head + b", ".join(values) + b"]}]}", rows, sum(i % 10 for i in range(64)) / 10


def peak_memory(pid: int) -> int:
    """The process's peak resident memory (VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def infer_asking_health(url: str, body: bytes) -> tuple[int, bytes, float, float]:
    """POST ``body`` to the model "sum" while asking health again and again: the answer's status
    and body, the slowest health answer and how long the infer took, in seconds."""
    outcome: list[tuple[int, bytes]] = []
    done = threading.Event()

    def infer() -> None:
        try:
            outcome.append(http("POST", f"{url}/v2/models/sum/infer", body, timeout=120)[::2])
        finally:
            done.set()

    started = time.monotonic()
    threading.Thread(target=infer, daemon=True).start()
    slowest = 0.0
    while not done.is_set():
        asked = time.monotonic()
        assert http("GET", f"{url}/v2/health/ready", timeout=30)[0] == 200
        slowest = max(slowest, time.monotonic() - asked)
    ((status, answer),) = outcome
    return status, answer, slowest, time.monotonic() - started


@pytest.mark.parametrize("make", [digits_body, floats_body], ids=["one-digit values", "floats"])
def test_health_is_answered_while_a_60_mib_json_body_is_decoded(launch, make):
    pool = launch("--model", "sum=tests.models:RowSumModel", workers=1)
    url = pool.wait_ready()
    body, rows, first = make(60)
    status, answer, slowest, took = infer_asking_health(url, body)
    assert status == 200, answer[:200]
    (output,) = json.loads(answer)["outputs"]
    assert output["shape"] == [rows, 1] and output["data"][0] == pytest.approx(first)
    print(f"health took {slowest:.3f}s at most in a request of {took:.2f}s")
    # Measured here, with a load average of 17-21 on 2 cores: 0.21-0.45 s at most in requests of
    # 9-20 s; parsed whole, 1.3-1.9 s on a quieter machine. The bound is a share of the request's
    # own time, so that a busy machine (or Wine) slows both alike: a fifth, as CI with two other
    # runs beside it saw 0.36 s in a request of 3.01 s (a parse whole held it for most of it).
    assert slowest < max(0.2, took / 5), f"health waited {slowest:.2f}s in a request of {took:.2f}s"


@pytest.mark.each_server
@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from /proc/PID/status (VmHWM), Linux's")
@pytest.mark.linux_supervisor("reads a worker's peak memory in /proc by its Linux pid")
@pytest.mark.parametrize("make", [digits_body, floats_body], ids=["one-digit values", "floats"])
def test_a_60_mib_json_body_costs_a_worker_what_it_carries(launch, make):
    pool = launch("--model", "sum=tests.models:RowSumModel", workers=1)
    url = pool.wait_ready()
    pid = pool.status()["workers"][0]["pid"]
    warm, _, _ = make(1)  # what serving costs once, before the peak is reset
    assert http("POST", f"{url}/v2/models/sum/infer", warm)[0] == 200
    body, rows, _ = make(60)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here on
    idle = resident(pid)
    status, _, _ = http("POST", f"{url}/v2/models/sum/infer", body, timeout=120)
    assert status == 200
    grown, tensor = peak_memory(pid) - idle, rows * 64 * 4
    print(f"grew {grown / MIB:.0f} MiB for a {len(body) / MIB:.0f} MiB body making a {tensor / MIB:.0f} MiB tensor")
    # What it carries: the body, held until it is answered, and the FP32 tensor made of it; half
    # the body more for the rest (a piece being parsed, the answer). Measured here: 183-187 MiB
    # for one-digit values (tensor 120), 123 for floats (tensor 48); parsed whole, 852 and 803.
    assert grown <= len(body) * 3 // 2 + tensor, f"the worker grew {grown / MIB:.0f} MiB"
