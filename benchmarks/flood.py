"""A connection flood: does a new client still get answered at once?

For each HTTP server, a pool is started and a new client's health request (GET /v2/health/ready)
and batch-1 infer, each on a connection of its own, are timed (``--requests`` of each, one at a
time) three ways in the same run:

- ``baseline``: nothing else going on;
- (``next client``: one health request made as soon as the flood's connections have connected,
  before the pool has answered them: the wait a new client had while a flood arrived);
- ``idle``: ``--connections`` kept-alive connections held open by another process, each having
  sent one request and then nothing (when the pool closes one, at its keep-alive timeout or to
  make room, the flood opens another at once);
- ``slowloris``: as many connections each sending a request head one byte every ``--interval``
  seconds (reopened as the pool closes them).

The pool runs with ``--keep-alive 60`` (``--keep-alive``), so that the flood's connections stay
open, as the slowloris ones must for a byte every 10 s to matter: what is measured is a pool
holding them. (With the default 5 s, the flood turns into 400 new connections and requests a
second, another load.) The flood runs in a process of its own (asyncio), the timing client in
this one. It also
reports how much the workers' resident memory grew with the idle connections open, per
connection. The client's limit on open files (RLIMIT_NOFILE) is raised to what it needs.

    python -m benchmarks.flood                       # 2,000 connections, both servers
    python -m benchmarks.flood --connections 500 --http uvicorn
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
import urllib.parse
from typing import Any

from .common import ROOT, Pool, infer_body, save, table

#: The workers import this checkout, not whatever copy of the packages is installed.
os.environ["PYTHONPATH"] = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


def raise_open_files(needed: int) -> None:
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _idle(host: str, port: int, opened: list[int], stop: asyncio.Event) -> None:
    request = f"GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    first = True
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
            if first:
                opened[1] += 1  # connected: in the pool's backlog, or accepted
            writer.write(request)
            await reader.readuntil(b'{"live":true}')
            if first:
                opened[0] += 1
                first = False
            await reader.read()  # nothing more comes until the pool closes it
            writer.close()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await asyncio.sleep(0.1)


async def _slowloris(host: str, port: int, opened: list[int], stop: asyncio.Event, interval: float) -> None:
    head = f"GET /v2/health/live HTTP/1.1\r\nHost: {host}\r\nX-Slow: " + "a" * 1000
    first = True
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
            if first:
                opened[0] += 1
                opened[1] += 1
                first = False
            for byte in head.encode():
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(1), interval)
                    break  # closed (or answered): open another
                except TimeoutError:
                    pass
            writer.close()
        except OSError:
            await asyncio.sleep(0.1)


def flood(url: str, kind: str, connections: int, interval: float, pipe: Any) -> None:
    """In a process of its own: hold ``connections`` of ``kind`` open until told to stop."""
    raise_open_files(connections + 256)
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80

    async def main() -> None:
        stop = asyncio.Event()
        opened = [0, 0]  # answered (slowloris: connected), connected
        started = time.monotonic()
        tasks = []
        for _ in range(connections):
            if kind == "idle":
                tasks.append(asyncio.create_task(_idle(host, port, opened, stop)))
            else:
                tasks.append(asyncio.create_task(_slowloris(host, port, opened, stop, interval)))
        loop = asyncio.get_running_loop()
        while opened[1] < connections and time.monotonic() - started < 60:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        pipe.send("connected")
        while opened[0] < connections and time.monotonic() - started < 60:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        pipe.send((opened[0], time.monotonic() - started))
        await loop.run_in_executor(None, pipe.recv)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def timed(url: str, method: str, path: str, body: bytes = b"") -> float:
    """Seconds a new client takes from connect to the whole answer (200 expected)."""
    parsed = urllib.parse.urlsplit(url)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n"
    )
    started = time.perf_counter()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=60) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(head.encode() + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("closed without an answer")
            received += chunk
        status = received.split(b" ", 2)[1]
        head_bytes, _, rest = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head_bytes.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
    if status != b"200":
        raise OSError(f"answered {status.decode()}")
    return time.perf_counter() - started


def measure(url: str, requests: int, budget: float) -> dict[str, dict[str, float]]:
    """``requests`` of each, one after another, or as many as ``budget`` seconds allow."""
    body = infer_body().encode()
    results = {}
    for what, method, path, payload in (
        ("health", "GET", "/v2/health/ready", b""),
        ("infer", "POST", "/v2/models/mlp/infer", body),
    ):
        times, errors = [], 0
        deadline = time.monotonic() + budget
        for _ in range(requests):
            if time.monotonic() > deadline:
                break
            try:
                times.append(timed(url, method, path, payload))
            except OSError:
                errors += 1
        times.sort()
        results[what] = {
            "p50_ms": statistics.median(times) * 1e3 if times else float("nan"),
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e3 if times else float("nan"),
            "max_ms": times[-1] * 1e3 if times else float("nan"),
            "requests": len(times),
            "errors": errors,
        }
    return results


def worker_rss(pool: Pool) -> float:
    """The workers' resident memory, MiB, summed."""
    import psutil

    status = json.loads(pool.cli("status", "--json").stdout)
    return sum(psutil.Process(w["pid"]).memory_info().rss for w in status["workers"] if w.get("pid")) / 2**20


def run(server: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with Pool(args.workers, "--http", server, "--keep-alive", str(args.keep_alive)) as pool:
        for _ in range(20):
            timed(pool.url, "GET", "/v2/health/ready")  # warm up
        for phase in ("baseline", "idle", "slowloris"):
            held, took, grew, first = 0, 0.0, float("nan"), float("nan")
            process = None
            if phase != "baseline":
                before = worker_rss(pool)
                ours, theirs = multiprocessing.Pipe()
                process = multiprocessing.Process(
                    target=flood, args=(pool.url, phase, args.connections, args.interval, theirs), daemon=True
                )
                process.start()
                ours.recv()
                # The next client, right after the flood's connections arrived (the case).
                try:
                    first = timed(pool.url, "GET", "/v2/health/ready") * 1e3
                except OSError:
                    first = float("nan")
                held, took = ours.recv()
                grew = (worker_rss(pool) - before) * 1024 / max(1, held)
            results = measure(pool.url, args.requests, args.budget)
            if process is not None:
                ours.send("stop")
                process.join(30)
                if process.is_alive():
                    process.kill()
                time.sleep(1)
            for what, figures in results.items():
                row = {"server": server, "flood": phase, "connections": held, "opened_s": took, "first_ms": first}
                row["request"] = what
                rows.append({**row, **figures, "kib_per_connection": grew})
                print(table(COLUMNS, rows[-1:]).splitlines()[-1], flush=True)
    return rows


COLUMNS = [
    ("server", "server", ""),
    ("flood", "flood", ""),
    ("connections", "connections", "d"),
    ("opened_s", "opened in s", ".1f"),
    ("first_ms", "next client ms", ".0f"),
    ("request", "request", ""),
    ("requests", "n", "d"),
    ("p50_ms", "p50 ms", ".1f"),
    ("p99_ms", "p99 ms", ".1f"),
    ("max_ms", "max ms", ".1f"),
    ("errors", "errors", "d"),
    ("kib_per_connection", "KiB/conn", ".1f"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=10.0, help="slowloris: seconds between bytes")
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=60.0,
        help="the pool's keep-alive timeout: long enough that the flood's connections stay open",
    )
    parser.add_argument("--budget", type=float, default=60.0, help="the most seconds each kind of request is timed")
    parser.add_argument("--http", choices=["hypercorn", "uvicorn"], action="append")
    args = parser.parse_args()
    raise_open_files(args.connections + 256)
    rows = []
    for server in args.http or ["hypercorn", "uvicorn"]:
        rows += run(server, args)
    print()
    print(table(COLUMNS, rows))
    save("flood", rows)


if __name__ == "__main__":
    main()
