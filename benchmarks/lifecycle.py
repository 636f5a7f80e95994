"""How fast a pool starts and stops, against bare hypercorn in the same run, and what its
control channel costs against a raw socket.

    python benchmarks/lifecycle.py [--workers 1 4 16] [--rounds 3]

Start-up: from launching the process to the first 200 of ``/v2/health/ready`` (polled every
10 ms), for ``supervisor start --workers N`` and bare ``hypercorn --workers N`` serving the
same app; for the pool also until it says every worker is ready. Stop: from SIGTERM (the path
a container's stop takes, and what hypercorn is stopped with) until the process has exited
with all its workers, idle and under wrk's load; for the pool also ``supervisor stop`` as a
user types it (its interpreter's start included). Each figure is the median of the rounds.

The control channel: a ``status`` round trip as the CLI makes it (connect, the HMAC
handshake, request, reply), and one message echoed on an open connection with the frame codec
against the same bytes echoed on a raw socket of the same kind, in this process.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import ROOT, infer_body, require_wrk, save, table, wrk_command, wrk_script

DEADLINE = 300.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)  # a benchmark's poll: what is measured has nothing to wait on


class Server:
    """A pool or a bare hypercorn, started on a port of its own; times its start and its stop."""

    def __init__(self, kind: str, workers: int, folder: str) -> None:
        self.kind = kind
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.control = os.path.join(folder, f"{kind}-{port}.sock")
        if kind == "pool":
            command = [sys.executable, "-m", "supervisor", "start", "--bind", f"127.0.0.1:{port}"]
            command += ["--workers", str(workers), "--control", self.control]
        else:
            command = [sys.executable, "-m", "hypercorn", "benchmarks.bare_app:app", "--bind", f"127.0.0.1:{port}"]
            command += ["--workers", str(workers)]
        self.log = open(os.path.join(folder, f"{kind}-{port}.log"), "w+")  # noqa: SIM115 (closed in stop)
        begun = time.perf_counter()
        # Its own session: a stop reaches the whole tree only through the server itself.
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait(lambda: ready(self.url), f"{kind} to answer")
        self.first_200 = time.perf_counter() - begun
        self.all_ready = float("nan")  # bare hypercorn does not say
        if kind == "pool":
            wait(lambda: "pool ready" in self._output(), "the pool to be ready")
            self.all_ready = time.perf_counter() - begun

    def _output(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self, how: str = "sigterm") -> float:
        """Seconds from the stop until the server and every one of its processes are gone."""
        group = os.getpgid(self.process.pid)
        begun = time.perf_counter()
        if how == "cli":
            stop = [sys.executable, "-m", "supervisor", "stop", "--control", self.control]
            subprocess.run(stop, cwd=ROOT, check=True, capture_output=True)
        else:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(DEADLINE)
        wait(lambda: not _group_alive(group), "every process of the server to exit")
        took = time.perf_counter() - begun
        self.log.close()
        return took


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def lifecycle(workers: int, rounds: int, script: str, folder: str) -> list[dict[str, Any]]:
    samples: dict[tuple[str, str], list[float]] = {}

    def record(kind: str, what: str, seconds: float) -> None:
        samples.setdefault((kind, what), []).append(seconds)

    for _ in range(rounds):
        for kind in ("hypercorn", "pool"):
            server = Server(kind, workers, folder)
            record(kind, "start: first 200", server.first_200)
            record(kind, "start: all ready", server.all_ready)
            record(kind, "stop idle (SIGTERM)", server.stop())
            server = Server(kind, workers, folder)
            load = subprocess.Popen(wrk_command(server.url, script, 30, 16), stdout=subprocess.DEVNULL)
            time.sleep(1)  # the load is under way: what is measured is the stop
            record(kind, "stop under load (SIGTERM)", server.stop())
            load.kill()
            load.wait()
            if kind == "pool":
                server = Server(kind, workers, folder)
                record(kind, "stop idle (supervisor stop)", server.stop("cli"))
    rows = []
    for what in (
        "start: first 200",
        "start: all ready",
        "stop idle (SIGTERM)",
        "stop under load (SIGTERM)",
        "stop idle (supervisor stop)",
    ):
        bare = statistics.median(samples.get(("hypercorn", what), [float("nan")]))
        pool = statistics.median(samples[("pool", what)])
        rows.append({"workers": workers, "what": what, "hypercorn_s": bare, "pool_s": pool, "ratio": pool / bare})
    return rows


def control_round_trips(folder: str, count: int = 200) -> list[dict[str, Any]]:
    """The control channel's costs, against a raw socket in the same process."""
    import anyio

    from ipc import codec
    from ipc.messages import Heartbeat
    from supervisor import client

    server = Server("pool", 1, folder)
    try:

        async def statuses() -> float:
            times = []
            for _ in range(count):
                begun = time.perf_counter()
                await client.status(server.control)
                times.append(time.perf_counter() - begun)
            return statistics.median(times)

        status = anyio.run(statuses)
    finally:
        server.stop()

    message = Heartbeat(in_flight=3, loop_lag=0.001, rss=123456789, served=42)
    frame = codec.encode(message)
    a, b = socket.socketpair()

    def echo(framed: bool) -> float:
        decoder = codec.FrameDecoder()
        times = []
        for _ in range(count * 10):
            begun = time.perf_counter()
            a.sendall(codec.encode(message) if framed else frame)
            data = b.recv(65536)
            if framed:  # the far side decodes and answers
                decoder.feed(data)
                b.sendall(codec.encode(decoder.next_message()))  # type: ignore[arg-type]
            else:
                b.sendall(data)
            answer = a.recv(65536)
            if framed:
                decoder.feed(answer)
                decoder.next_message()
            times.append(time.perf_counter() - begun)
        return statistics.median(times)

    raw, framed = echo(False), echo(True)
    a.close()
    b.close()
    return [
        {"what": "status round trip (connect, handshake, request, reply)", "us": status * 1e6, "vs_raw": status / raw},
        {"what": f"raw socket echo of a {len(frame)}-byte heartbeat", "us": raw * 1e6, "vs_raw": 1.0},
        {"what": "the same, encoded and decoded with the frame codec", "us": framed * 1e6, "vs_raw": framed / raw},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    require_wrk()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        script = wrk_script(folder, infer_body(1))
        for workers in args.workers:
            rows += lifecycle(workers, args.rounds, script, folder)
        control = control_round_trips(folder)
    print(f"start and stop, median of {args.rounds} rounds, {os.cpu_count()} cores (pool / bare hypercorn)")
    columns = [
        ("workers", "workers", "d"),
        ("what", "what", ""),
        ("hypercorn_s", "hypercorn s", ".2f"),
        ("pool_s", "pool s", ".2f"),
        ("ratio", "ratio", ".2f"),
    ]
    print(table(columns, rows))
    print()
    print(table([("what", "control channel, median", ""), ("us", "us", ".1f"), ("vs_raw", "vs raw", ".2f")], control))
    save("lifecycle", rows)
    save("control", control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
