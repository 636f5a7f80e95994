"""A query of death: requests that kill their worker, interleaved with good ones, against a real
pool. The pool replaces each worker the poison kills, names the requests that were in flight,
quarantines the model after the third death, and serves the other model throughout."""

from __future__ import annotations

import json
import re
import threading
import time
from http.client import HTTPException

from .harness import http

MODELS = ("--model", "good=tests.models:PoisonModel", "--model", "poison=tests.models:PoisonModel")


def body(value: float) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [value] * 4}]}
    ).encode()


def test_requests_that_kill_their_worker_quarantine_their_model_and_the_rest_serves_on(launch, platform):
    """11 such requests once took the pool down (exit 4) in 15.7 s, and nothing was served from
    the fourth on: a worker that died on a request counted as one that could not start."""
    pool = launch(*MODELS, workers=2)
    url = pool.wait_ready()
    good, poison = body(1.0), body(666.0)
    answered = {"good": 0, "failed": 0}
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                ok = http("POST", f"{url}/v2/models/good/infer", good, timeout=30)[0] == 200
            except (OSError, HTTPException):
                ok = False  # on a worker the poison killed
            answered["good" if ok else "failed"] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    answers = []
    try:
        deadline = time.monotonic() + (20 if platform.windows else 30)
        number = 0
        while time.monotonic() < deadline:
            number += 1
            try:
                status, _, text = http(
                    "POST", f"{url}/v2/models/poison/infer", poison, {"x-request-id": f"poison-{number}"}, timeout=30
                )
            except (OSError, HTTPException):
                status, text = 0, b""  # its worker died under it
            answers.append((number, status, text))
            stop.wait(1.0)  # a poison request a second or so, among the good ones
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
    assert pool.process.poll() is None, pool.output  # the pool stayed up
    total = answered["good"] + answered["failed"]
    assert answered["good"] >= 0.95 * total and total > 50, answered
    deaths = re.findall(r"died with \d+ requests in flight: .*?'poison' version 1 request (poison-\d+)", pool.output)
    assert len(deaths) == 3, pool.output  # three deaths, and then no more
    assert re.search(r"model 'poison' version 1 is quarantined: it was serving a request each time", pool.output)
    refused = [number for number, status, text in answers if status == 503 and b"quarantined" in text]
    assert refused and refused[-1] == answers[-1][0], answers  # quarantined from the third death on
    assert all(status in (0, 503) for _, status, _ in answers), answers
    assert int(deaths[-1].split("-")[1]) < refused[0]
    stop_run = pool.cli("stop")
    assert stop_run.returncode == 0, stop_run.stdout + stop_run.stderr
    assert pool.wait_exit() == 0
