"""What tracing costs a request: the app called in-process (no server, no socket) for batch-1 JSON
V2 infers of the demo model, untraced and traced at 100% sampling (spans exported over OTLP/HTTP to
a receiver in this process, as a collector would take them), in interleaved rounds.

    python benchmarks/tracing.py [--requests 3000] [--rounds 5] [--plot]

Untraced, the only work tracing adds is a shared do-nothing block around each inference and two
attribute writes: the table gives that block's own time, measured here, beside a request's. With
``--plot``, one traced request of a joined batch drawn as a timeline from the spans received
(benchmarks/results/tracing-timeline.png; the README shows it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import timeit
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import pyplot, save, save_plot, table
from tests.e2e.otlp import Receiver
from worker.api import InferenceApp, ServingState
from worker.api.tracing import UNTRACED, Tracing
from worker.models import demo_model

BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}).encode()


async def call(app: InferenceApp, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """One POST /v2/models/mlp/infer through the ASGI app; its status."""
    scope = {
        "type": "http", "method": "POST", "path": "/v2/models/mlp/infer", "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
                    *(headers or [])],
    }  # fmt: skip
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def rate(app: InferenceApp, requests: int) -> float:
    """Microseconds of wall time a request, ``requests`` one after another."""
    started = time.perf_counter()
    for _ in range(requests):
        assert await call(app) == 200
    return (time.perf_counter() - started) / requests * 1e6


def noop_block_us() -> float:
    """The untraced path's own additions: entering and leaving the shared block, two writes."""

    def once() -> None:
        with UNTRACED as trace:
            trace.read = 0
            trace.answer = None

    return min(timeit.repeat(once, number=100_000, repeat=5)) / 100_000 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plot", action="store_true")
    args = parser.parse_args()
    receiver = Receiver()
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    tracing = Tracing(receiver.url, 0)
    untraced = InferenceApp([demo_model()], ServingState())
    traced = InferenceApp([demo_model()], ServingState(), tracing=tracing)
    samples: dict[str, list[float]] = {"untraced": [], "traced": []}

    async def run() -> None:
        for app in (untraced, traced):
            await rate(app, 200)  # warm
        for _ in range(args.rounds):
            samples["untraced"].append(await rate(untraced, args.requests))
            samples["traced"].append(await rate(traced, args.requests))

    asyncio.run(run())
    tracing.close()
    base = statistics.median(samples["untraced"])
    rows = [
        {"case": case, "us": statistics.median(values), "worst": max(values), "ratio": statistics.median(values) / base}
        for case, values in samples.items()
    ]
    block = noop_block_us()
    rows.append({"case": "untraced block alone", "us": block, "worst": block, "ratio": block / base})
    print(f"{args.rounds} interleaved rounds of {args.requests} requests; spans received: {len(receiver.spans)}")
    columns = [("case", "case", ""), ("us", "us/request", ".2f"), ("worst", "worst round", ".2f"),
               ("ratio", "x untraced", ".4f")]  # fmt: skip
    print(table(columns, rows))
    save("tracing", rows)
    if args.plot:
        plot(receiver)
    receiver.close()


def plot(receiver: Receiver) -> None:
    """One request's span and its steps, as a timeline."""
    plt = pyplot()
    if plt is None:
        return
    request = receiver.named("infer mlp")[-1]
    steps = sorted(receiver.children(request).values(), key=lambda span: span["start"])
    spans = [request, *steps]
    fig, ax = plt.subplots(figsize=(8, 2.6))
    for row, span in enumerate(spans):
        start, width = (span["start"] - request["start"]) / 1e3, max((span["end"] - span["start"]) / 1e3, 0.5)
        ax.barh(row, width, left=start, color="#4c72b0" if row == 0 else "#dd8452")
        ax.text(start + width + 1, row, f"{span['name']}  {(span['end'] - span['start']) / 1e3:.0f} us", va="center")
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("microseconds since the request arrived")
    ax.set_title("one traced inference (infer mlp) and its steps, as received over OTLP")
    ax.set_xlim(0, (request["end"] - request["start"]) / 1e3 * 1.45)
    save_plot(fig, "tracing-timeline")


if __name__ == "__main__":
    main()
