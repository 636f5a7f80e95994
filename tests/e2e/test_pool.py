"""The pool end to end: real supervisor and worker processes, real sockets and HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import released, started_count
from .harness import http, infer_body, wait_until

posix_signals = pytest.mark.linux_supervisor("POSIX signals")


def stopped(worker: int, finished: int = 0, dropped: int = 0, code: int = 0) -> str:
    """The supervisor's log line for a worker that drained and exited."""
    return (
        rf"worker {worker} stopped: {finished} in-flight finished, {dropped} dropped; \d+ served in all \(exit {code}\)"
    )


def gated_infer(url: str, results: list) -> threading.Thread:
    """POST to the gated model in a thread; its (status, body) lands in ``results``."""
    body = json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    ).encode()

    def run() -> None:
        try:
            status, _, payload = http("POST", f"{url}/v2/models/slow/infer", body, timeout=90)
            results.append((status, payload))
        except Exception as exc:  # the test asserts on what came back
            results.append((None, repr(exc)))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def pids_serving(url: str, want: int, limit: int = 2000) -> set[str]:
    """Send concurrent requests on fresh connections until ``want`` workers have answered."""
    seen: set[str] = set()

    def one(_: int) -> str:
        status, headers, body = http("POST", f"{url}/v2/models/mlp/infer", infer_body())
        assert status == 200, body
        assert json.loads(body)["outputs"][0]["shape"] == [1, 10]
        return headers["x-worker-pid"]

    with ThreadPoolExecutor(8) as executor:
        for _ in range(0, limit, 64):
            seen |= set(executor.map(one, range(64)))
            if len(seen) >= want:
                break
    return seen


@pytest.mark.each_server
def test_start_serve_status_stop(launch, platform):
    workers = 4 if not platform.windows else 2
    pool = launch(workers=workers)
    url = pool.wait_ready()
    ready_lines = {int(w): p for w, p in re.findall(r"worker (\d+) ready \(pid (\d+)\)", pool.output)}

    status, headers, body = http("GET", f"{url}/v2/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    pids = pids_serving(url, want=2)
    assert len(pids) > 1, "every request went to one worker"

    ping = pool.cli("ping")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert re.fullmatch(rf"pool ready at {url} \(supervisor pid \d+, up \d+s, version \S+\)\n", ping.stdout)

    report = pool.status()
    assert report["state"] == "ready"
    assert [w["state"] for w in report["workers"]] == ["ready"] * workers
    assert {w["slot"]: str(w["pid"]) for w in report["workers"]} == ready_lines
    assert pids <= set(ready_lines.values())

    stop = pool.cli("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped cleanly" in stop.stdout
    assert pool.wait_exit() == 0
    gone = pool.cli("ping")
    assert gone.returncode == 1 and gone.stdout == "", gone.stdout + gone.stderr
    assert gone.stderr.startswith("supervisor: error: ") and gone.stderr.count("\n") == 1
    for worker in range(workers):
        assert re.search(stopped(worker), pool.output), pool.output
    assert "NotImplementedError" not in pool.output and "Traceback" not in pool.output
    pool.assert_no_leftovers()


@pytest.mark.each_server
@pytest.mark.parametrize(
    "how",
    [
        "stop",
        "ctrl-c",
        pytest.param("sigterm-to-group", marks=posix_signals),
        pytest.param("sighup-to-group", marks=posix_signals),
    ],
)
def test_request_in_flight_completes(launch, gate, platform, how):
    pool = launch("--model", "slow=tests.models:GatedModel", workers=1)
    url = pool.wait_ready()
    results: list = []
    request = gated_infer(url, results)
    wait_until(lambda: started_count(gate) == 1, what="the request to reach the model")

    stopper = None
    if how == "stop":
        stopper = pool.cli_background("stop")
    elif how == "ctrl-c":
        pool.interrupt()
    elif how == "sigterm-to-group":
        os.killpg(pool.process.pid, signal.SIGTERM)  # as systemd stops a whole group
    else:
        os.killpg(pool.process.pid, signal.SIGHUP)  # as a closing terminal hangs up its group
    # The worker itself has the Stop, with the request still inside the model.
    pool.wait_for_line(r"worker\[0 pid \d+\] INFO stop received: draining 1 requests in flight")
    released(gate)
    request.join(60)
    assert results == [(200, results[0][1])], results
    assert json.loads(results[0][1])["outputs"][0]["data"] == [2, 4, 6, 8]

    assert pool.wait_exit() == 0, pool.output
    assert re.search(stopped(0, finished=1), pool.output), pool.output
    if stopper is not None:
        out, err = stopper.communicate(timeout=60)
        assert stopper.returncode == 0, out + err
        assert "1 in-flight finished, 0 dropped" in out
    pool.assert_no_leftovers()


def test_ctrl_c_stops_cleanly_and_workers_ignore_it(launch, platform):
    pool = launch(workers=3)
    pool.wait_ready()
    # Workers first, alone: they must shrug it off.
    for worker in pool.status()["workers"]:
        pool.interrupt_worker(worker["slot"])
    assert http("GET", f"{pool.url}/v2/health/ready")[0] == 200
    assert [w["state"] for w in pool.status()["workers"]] == ["ready"] * 3
    pool.interrupt()  # then the whole group, as a terminal does
    assert pool.wait_exit() == 0, pool.output
    for worker in range(3):
        assert re.search(stopped(worker), pool.output), pool.output
    assert "KeyboardInterrupt" not in pool.output
    pool.assert_no_leftovers()


@posix_signals
def test_sigterm_takes_the_same_stop_path(launch, platform):
    pool = launch(workers=2)
    pool.wait_ready()
    pool.process.terminate()  # SIGTERM to the supervisor, as Kubernetes sends it
    assert pool.wait_exit() == 0, pool.output
    assert "SIGTERM: stopping gracefully" in pool.output
    for worker in range(2):
        assert re.search(stopped(worker), pool.output), pool.output
    pool.assert_no_leftovers()


def test_second_ctrl_c_forces(launch, gate, platform):
    pool = launch("--model", "slow=tests.models:GatedModel", "--grace", "60", workers=1)
    url = pool.wait_ready()
    results: list = []
    gated_infer(url, results)
    wait_until(lambda: started_count(gate) == 1, what="the request to reach the model")
    pool.interrupt()
    pool.wait_for_line("stopping gracefully")
    pool.interrupt()
    pool.wait_for_line("forcing the stop")
    assert pool.wait_exit(30) == 3, pool.output
    assert "killing worker 0" in pool.output and "the stop was forced" in pool.output
    pool.assert_no_leftovers()


@pytest.mark.each_server
def test_request_outliving_the_grace_period_is_dropped_and_reported(launch, gate):
    pool = launch("--model", "slow=tests.models:GatedModel", workers=1)
    url = pool.wait_ready()
    results: list = []
    request = gated_infer(url, results)
    wait_until(lambda: started_count(gate) == 1, what="the request to reach the model")
    stop = pool.cli("stop", "--grace", "0.5")
    assert stop.returncode == 3, stop.stdout + stop.stderr
    assert "0 in-flight finished, 1 dropped" in stop.stdout
    assert "stopped, not cleanly" in stop.stdout
    assert pool.wait_exit() == 3, pool.output
    # The worker cut the request off and exited by itself: no kill was needed.
    assert re.search(stopped(0, finished=0, dropped=1), pool.output), pool.output
    assert "killing" not in pool.output
    request.join(30)
    # Cut off, and told so in the protocol's shape.
    assert results and results[0][0] == 503, results
    assert json.loads(results[0][1]) == {"error": "the worker stopped before this request finished"}
    pool.assert_no_leftovers()


def test_hung_worker_is_killed_after_the_grace_period(launch, platform):
    pool = launch(workers=2)
    pool.wait_ready()
    hung = pool.status()["workers"][0]["pid"]
    platform.freeze(hung)  # the test's doing, to make a worker that cannot answer
    stop = pool.cli("stop", "--grace", "0.5")
    assert stop.returncode == 3, stop.stdout + stop.stderr
    assert pool.wait_exit() == 3, pool.output
    assert f"killing worker 0 (pid {hung}): it outlived the grace period of 0.5s" in pool.output
    assert re.search(stopped(1), pool.output), pool.output
    pool.assert_no_leftovers()


def test_workers_exit_when_the_supervisor_dies(launch):
    pool = launch(workers=2)
    pool.wait_ready()
    workers = pool.status()["workers"]
    assert len(workers) == 2
    pool.process.kill()  # no stop message, no chance to clean up
    pool.process.wait(30)
    pool.assert_no_leftovers(timeout=45)


def test_stop_while_workers_are_still_loading(launch, gate):
    pool = launch("--model", "slow=tests.models:SlowLoadingModel", workers=2)
    wait_until(lambda: pool.status_or_none() == "starting", what="the pool to be starting")
    wait_until(lambda: pool.worker_states() == ["connected"] * 2, what="both workers loading")
    # Nothing is in flight while models load: the stop ends the workers at once, load or not.
    stop = pool.cli("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert pool.wait_exit() == 0, pool.output
    assert pool.output.count("stop received while loading: exiting without serving") == 2
    assert "pool ready" not in pool.output
    pool.assert_no_leftovers()
