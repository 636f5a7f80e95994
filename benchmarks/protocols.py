"""gRPC against REST on the same pool in the same run, Triton's perf_analyzer the client of both.

    python benchmarks/protocols.py [--workers 2] [--batches 1 64] [--servers hypercorn uvicorn]
    python benchmarks/protocols.py --design

For each HTTP server a pool of ``--workers`` is started with ``--grpc-bind`` and loaded by
perf_analyzer (``bash tests/tools/get-perf-analyzer.sh`` fetches it; or set PERF_ANALYZER) at
``--concurrency`` callers, first over REST (``-i http``: binary tensors both ways), then over
gRPC (``-i grpc``: raw contents both ways), for each batch size on the demo model. Each row:
inferences/s, its ratio to REST's on the same pool and batch, and latency.

``--design`` measures the ways a worker could serve gRPC, as the design chose between them
(worker/rpc/server.py): a unary echo served by grpcio's aio server alone, by the same server
behind the forwarder each worker runs (its acceptor takes connections from the pool's socket
and carries their bytes to the server's loopback port), and by hypercorn's pure-Python HTTP/2
serving gRPC as an ASGI app; 16 threads of a grpcio client, each server one process, ratios to
grpcio alone.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, Pool, save, table

ECHO = "/inference.GRPCInferenceService/ModelInfer"

#: grpcio's aio server with a unary echo, the start of two of the scripts below.
ECHO_SERVER = """
import asyncio, sys, grpc
async def echo(request, context): return request
async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(echo)}),))"""

#: The three servers of --design, each a script run with its port as its argument.
DESIGNS = {
    "grpcio aio server alone": ECHO_SERVER
    + """
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    await server.start(); print("ready", flush=True); await server.wait_for_termination()
asyncio.run(main())
""",
    "grpcio behind the worker's forwarder": ECHO_SERVER
    + """
    import socket, anyio
    from worker.rpc.server import Forwards
    inner = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    from worker.http.accept import LoopAcceptor
    async with anyio.create_task_group() as tasks:
        forwards = Forwards()
        LoopAcceptor(listener).start(lambda conn: tasks.start_soon(forwards.run, conn, inner))
        print("ready", flush=True)
        await anyio.sleep_forever()
import anyio  # anyio's run, as the worker's: its acceptor's callbacks start tasks
anyio.run(main)
""",
    "hypercorn h2c, gRPC as ASGI": """
import asyncio, sys
from hypercorn.asyncio import serve
from hypercorn.config import Config
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        return await send({"type": "lifespan.shutdown.complete"})
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "trailers": True,
                "headers": [(b"content-type", b"application/grpc")]})
    await send({"type": "http.response.body", "body": body})  # the framed message, echoed
    await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})
config = Config()
config.bind, config.accesslog = [f"127.0.0.1:{sys.argv[1]}"], None
print("ready", flush=True)
asyncio.run(serve(app, config))
""",
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def echo_load(port: int, size: int, seconds: float, callers: int = 16) -> float:
    """Calls/s of ``callers`` threads, each on a channel of its own, echoing ``size`` bytes."""
    import grpc

    payload = b"x" * size
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{port}", [("grpc.use_local_subchannel_pool", 1)]) for _ in range(callers)
    ]
    calls = [channel.unary_unary(ECHO) for channel in channels]
    for call in calls:
        assert call(payload, timeout=30) == payload
    counts = [0] * callers
    deadline = time.monotonic() + seconds

    def run(i: int) -> None:
        while time.monotonic() < deadline:
            calls[i](payload, timeout=30)
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(callers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    for channel in channels:
        channel.close()
    return sum(counts) / took


def design(sizes: list[int], seconds: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in sizes:
        baseline = 0.0
        for name, script in DESIGNS.items():
            port = free_port()
            server = subprocess.Popen(
                [sys.executable, "-c", script, str(port)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
                time.sleep(0.5)  # hypercorn says ready before it binds
                rate = echo_load(port, size, seconds)
            finally:
                server.kill()
                server.wait()
            baseline = baseline or rate
            rows.append({"server": name, "bytes": size, "calls_s": rate, "ratio": rate / baseline})
    return rows


def perf_analyzer() -> str:
    path = os.environ.get("PERF_ANALYZER") or os.path.join(ROOT, ".tools", "perf_analyzer")
    if not os.path.exists(path):
        raise SystemExit("needs perf_analyzer: bash tests/tools/get-perf-analyzer.sh (or set PERF_ANALYZER)")
    return path


def measure(tool: str, protocol: str, address: str, batch: int, concurrency: int, requests: int) -> dict[str, float]:
    command = [
        tool, "-m", "mlp", "-u", address, "-i", protocol, "-b", str(batch), "--concurrency-range", str(concurrency),
        "--measurement-mode", "count_windows", "--measurement-request-count", str(requests), "--max-trials", "10",
        "-s", "50",  # a shared machine: a window within 50% of the others counts as stable
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"perf_analyzer failed:\n{result.stdout}{result.stderr}")
    client = result.stdout.split("Server:")[0]

    def number(pattern: str) -> float:
        return float(re.search(pattern, client).group(1))  # type: ignore[union-attr]

    return {
        "infer_s": number(r"Throughput: ([\d.]+) infer/sec"),
        "p50_ms": number(r"p50 latency: (\d+) usec") / 1000,
        "p99_ms": number(r"p99 latency: (\d+) usec") / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--servers", nargs="+", default=["hypercorn", "uvicorn"])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000, help="perf_analyzer's requests per measurement window")
    parser.add_argument("--design", action="store_true", help="the transport comparison instead (see above)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 262144], help="--design: message bytes")
    parser.add_argument("--seconds", type=float, default=4.0, help="--design: seconds each")
    args = parser.parse_args()
    if args.design:
        rows = design(args.sizes, args.seconds)
        save("grpc_design", rows)
        columns = [
            ("server", "server", ""),
            ("bytes", "bytes", "d"),
            ("calls_s", "calls/s", ".0f"),
            ("ratio", "vs alone", ".2f"),
        ]
        print(table(columns, rows))
        return
    tool = perf_analyzer()
    rows = []
    for server in args.servers:
        with Pool(args.workers, "--http", server, "--grpc-bind", "127.0.0.1:0") as pool:
            grpc_at = next(m.group(1) for line in pool.lines if (m := re.search(r"gRPC at (\S+)", line)))
            for batch in args.batches:
                rest = measure(tool, "http", pool.url.removeprefix("http://"), batch, args.concurrency, args.requests)
                over_grpc = measure(tool, "grpc", grpc_at, batch, args.concurrency, args.requests)
                for name, figures in (("REST", rest), ("gRPC", over_grpc)):
                    label = f"{server}, {args.workers} workers"
                    rows.append(
                        {
                            "pool": label,
                            "protocol": name,
                            "batch": batch,
                            **figures,
                            "ratio": figures["infer_s"] / rest["infer_s"],
                        }
                    )
    save("grpc", rows)
    columns = [
        ("pool", "pool", ""), ("protocol", "protocol", ""), ("batch", "batch", "d"), ("infer_s", "infer/s", ".0f"),
        ("ratio", "vs REST", ".2f"), ("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"),
    ]  # fmt: skip
    print(table(columns, rows))


if __name__ == "__main__":
    main()
