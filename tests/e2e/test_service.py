"""Running as a service: ``--log-file`` (every line of the supervisor and its workers in one
file, as a service without a console needs), and the Windows service itself, driven by Wine's
service control manager with ``sc`` as an operator would: it starts, reports RUNNING, serves,
drains a request in flight on ``sc stop`` and reports STOPPED; a pool that cannot serve stops
with its exit code, which ``sc query`` shows. (systemd: tests/e2e/test_systemd.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import uuid

import psutil
import pytest

from .harness import DEADLINE, ROOT, WINDOWS_PYTHON, http, wait_until

pytestmark = pytest.mark.timeout(300)

BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64], "data": [1.0] * 64}]}).encode()


def served_at(log: str, what: str = "pool ready: .* serving") -> str | None:
    """The pool's URL (or the metrics' with ``what="metrics at"``), once its log says it is ready."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            found = re.search(what + r" (http://\S+)", f.read())
    except FileNotFoundError:
        return None
    return found.group(1) if found else None


def test_a_log_file_holds_the_supervisors_and_the_workers_lines(launch, platform, tmp_path):
    log = str(tmp_path / "pool.log")
    pool = launch("--log-file", platform.path(log), "--access-log", workers=2)
    url = wait_until(lambda: served_at(log), what="the pool ready, in its log file")
    assert http("POST", f"{url}/v2/models/mlp/infer", json.dumps({
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]
    }).encode())[0] == 200  # fmt: skip
    assert pool.cli("stop").returncode == 0
    assert pool.wait_exit() == 0
    with open(log, encoding="utf-8") as f:
        text = f.read()
    assert "supervisor INFO stopped" in text
    assert re.search(r"worker\[\d pid \d+\] INFO POST /v2/models/mlp/infer 200", text), text  # a worker's line
    assert not pool.output.strip(), pool.output  # nothing went to the console


def test_windows_service_needs_the_service_manager(platform):
    """Run by hand, ``--windows-service`` says in one line why it cannot be (exit 2, a usage error)."""
    command = [*platform.python, "-m", "supervisor", "start", "--windows-service", "nope"]
    result = subprocess.run(command, cwd=ROOT, env=platform.env({}), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=DEADLINE)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    expected = "not started by the service control manager" if platform.windows else "runs on Windows only"
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


class WindowsService:
    """A service made with ``sc create``, for one test; deleted, and its processes gone, after."""

    def __init__(self, platform, tmp_path, *args: str) -> None:
        self.platform = platform
        self.name = f"is-test-{uuid.uuid4().hex[:8]}"
        self.control = platform.control_address(str(tmp_path))
        self.log = str(tmp_path / "service.log")
        python = platform.path(WINDOWS_PYTHON or "")
        arguments = ["--windows-service", self.name, "--bind", "127.0.0.1:0", "--control", self.control]
        program = [python, "-m", "supervisor", "start", *arguments, "--log-file", platform.path(self.log), *args]
        self.sc("create", self.name, "binPath=", subprocess.list2cmdline(program))

    def sc(self, *args: str) -> str:
        result = subprocess.run(["wine", "sc", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                env=self.platform.env({}), timeout=60)  # fmt: skip
        return result.stdout + result.stderr

    def query(self) -> dict[str, str]:
        """``sc query``'s STATE, WIN32_EXIT_CODE and SERVICE_EXIT_CODE (their numbers)."""
        found = re.findall(r"(STATE|WIN32_EXIT_CODE|SERVICE_EXIT_CODE)\s*:\s*(\d+)", self.sc("query", self.name))
        return dict(found)

    def state(self) -> str | None:
        return {"1": "STOPPED", "2": "START_PENDING", "3": "STOP_PENDING", "4": "RUNNING"}.get(
            self.query().get("STATE", "")
        )

    def close(self) -> None:
        if self.state() not in (None, "STOPPED"):
            self.sc("stop", self.name)
            try:
                wait_until(lambda: self.state() == "STOPPED", timeout=60, what="the service stopped")
            except AssertionError:
                pass
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if self.control in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
            except psutil.Error:
                pass
        self.sc("delete", self.name)


@pytest.fixture
def service(platform, tmp_path):
    if not platform.windows:
        pytest.skip("a Windows service: the Windows suite runs it, under Wine's service control manager")
    made: list[WindowsService] = []

    def make(*args: str) -> WindowsService:
        made.append(WindowsService(platform, tmp_path, *args))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_the_service_manager_starts_the_pool_and_its_stop_drains_it(service, platform):
    pool = service("--workers", "2", "--model", "slow=tests.models:SleepyModel", "--metrics-bind", "127.0.0.1:0")
    assert "START_PENDING" in pool.sc("start", pool.name)
    url = wait_until(lambda: served_at(pool.log), what="the pool ready, in the service's log")
    wait_until(lambda: pool.state() == "RUNNING", what="RUNNING")
    answers: list[int] = []
    request = threading.Thread(target=lambda: answers.append(http("POST", f"{url}/v2/models/slow/infer", BODY)[0]))
    request.start()

    def in_flight() -> bool:  # the heartbeats' count, in /metrics: a Windows CLI takes seconds under Wine
        metrics = wait_until(lambda: served_at(pool.log, "metrics at"), what="the metrics address")
        text = http("GET", metrics)[2].decode()
        return any(float(n) >= 1 for n in re.findall(r"^inference_pool_in_flight_requests\{.*\} (\S+)$", text, re.M))

    wait_until(in_flight, what="the request in flight")
    pool.sc("stop", pool.name)
    request.join(DEADLINE)
    assert answers == [200]  # the stop drained it, as `supervisor stop` does
    wait_until(lambda: pool.state() == "STOPPED", what="STOPPED")
    assert pool.query()["WIN32_EXIT_CODE"] == "0"
    with open(pool.log, encoding="utf-8") as f:
        text = f.read()
    assert "service control manager: stop" in text and "1 in-flight requests finished" in text, text
    assert "supervisor INFO stopped" in text


def test_a_service_whose_pool_cannot_serve_stops_with_its_exit_code(service):
    pool = service("--workers", "1", "--model", "broken=tests.models:BrokenModel")
    pool.sc("start", pool.name)
    wait_until(lambda: pool.state() == "STOPPED", timeout=120, what="the service stopped")
    # ERROR_SERVICE_SPECIFIC_ERROR, and the supervisor's exit code: 1, it never served.
    assert pool.query() == {"STATE": "1", "WIN32_EXIT_CODE": "1066", "SERVICE_EXIT_CODE": "1"}
    with open(pool.log, encoding="utf-8") as f:
        assert "weights are missing" in f.read()


def test_supervisor_service_installs_starts_stops_and_removes_a_pool(platform, tmp_path):
    """The command line's way: a TOML file holds the settings, ``supervisor service`` does the rest."""
    if not platform.windows:
        pytest.skip("a Windows service: the Windows suite runs it, under Wine's service control manager")
    name = f"is-cli-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "pool.log"
    config = tmp_path / "pool.toml"
    config.write_text(f"workers = 1\nbind = \"127.0.0.1:0\"\nlog_file = '{platform.path(str(log))}'\n")
    control = rf"\\.\pipe\inference-supervisor-service-{name}"

    def supervisor(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*platform.python, "-m", "supervisor", *args]
        return subprocess.run(command, cwd=ROOT, env=platform.env({}), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=DEADLINE * 2)  # fmt: skip

    installed = supervisor("service", "install", "--name", name, "--config", platform.path(str(config)))
    try:
        assert installed.returncode == 0 and control in installed.stdout, installed.stdout + installed.stderr
        again = supervisor("service", "install", "--name", name)
        assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1, again.stderr  # it exists
        started = supervisor("service", "start", "--name", name)
        assert started.returncode == 0 and "running" in started.stdout, started.stdout + started.stderr
        url = wait_until(lambda: served_at(str(log)), what="the pool ready, in its log")
        assert http("POST", f"{url}/v2/models/mlp/infer", BODY)[0] == 200
        status = supervisor("status", "--control", control)
        assert status.returncode == 0 and "ready" in status.stdout, status.stdout + status.stderr
        stopped = supervisor("service", "stop", "--name", name)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert "supervisor INFO stopped" in log.read_text()
    finally:
        supervisor("service", "stop", "--name", name)
        removed = supervisor("service", "remove", "--name", name)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    gone = supervisor("service", "start", "--name", name)
    assert gone.returncode == 1 and "does not exist" in gone.stderr.lower(), gone.stderr
