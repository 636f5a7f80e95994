"""Real supervisors in real processes, for end-to-end tests.

The interpreter that runs the supervisor is this one, or, for the Windows suite, the Windows
CPython under Wine named by $WINDOWS_PYTHON. Every wait has a deadline; every pool is torn
down (stopped, else killed with everything it started) by the fixture that made it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from http.client import HTTPConnection
from typing import Any

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WINDOWS_PYTHON = os.environ.get("WINDOWS_PYTHON")
DEADLINE = 60.0


def wait_until(predicate: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class Platform:
    """How to run the supervisor's interpreter and talk about paths and addresses to it."""

    def __init__(self, windows: bool) -> None:
        self.windows = windows

    @property
    def python(self) -> list[str]:
        if self.windows:
            assert WINDOWS_PYTHON, "the Windows suite needs WINDOWS_PYTHON (see tests/windows/run.sh)"
            return [shutil.which("wine") or "wine", WINDOWS_PYTHON]
        return [sys.executable]

    def path(self, path: str) -> str:
        """``path`` as the supervisor's interpreter spells it."""
        return "Z:" + path.replace("/", "\\") if self.windows else path

    def control_address(self, tmp_path: str | None = None) -> str:
        """A fresh control address: in ``tmp_path`` if given and short enough, else unique in /tmp."""
        tag = uuid.uuid4().hex[:12]
        if self.windows:
            return rf"\\.\pipe\inference-supervisor-e2e-{tag}"
        path = os.path.join(tmp_path, "control.sock") if tmp_path else ""
        return path if path and len(path) < 100 else f"/tmp/is-e2e-{tag}.sock"

    def kill(self, pid: int) -> None:
        """Kill a worker outright: SIGKILL, or ``taskkill /F`` for a Windows pid."""
        if self.windows:
            self._run_windows("taskkill", "/F", "/PID", str(pid))
        else:
            os.kill(pid, signal.SIGKILL)

    def freeze(self, pid: int) -> None:
        """Make a worker hang: SIGSTOP, or NtSuspendProcess for a Windows pid."""
        if self.windows:
            self._run_windows(
                WINDOWS_PYTHON or "",
                self.path(os.path.join(ROOT, "tests", "windows", "suspend.py")),
                "suspend",
                str(pid),
            )
        else:
            os.kill(pid, signal.SIGSTOP)

    def raw_control(self, address: str, data: bytes) -> bytes:
        """Write raw bytes to a control address; all that comes back until the server closes
        the connection or stays silent for 3 s."""
        if self.windows:
            script = self.path(os.path.join(ROOT, "tests", "windows", "raw_pipe.py"))
            return bytes.fromhex(self._run_windows(WINDOWS_PYTHON or "", script, address, data.hex()))
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(10)
            raw.connect(address)
            raw.sendall(data)
            raw.settimeout(3)
            received = b""
            try:
                while chunk := raw.recv(4096):
                    received += chunk
            except TimeoutError:
                pass
            return received

    def _run_windows(self, *command: str) -> str:
        result = subprocess.run(
            [shutil.which("wine") or "wine", *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env({}),
            timeout=60,
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        return result.stdout.strip()

    def cli_seconds(self) -> float:
        """How long one `supervisor ping` takes here and now, with no pool to answer it: an
        interpreter's start-up and the command's imports. Bounds on steps that run the command
        line scale with it, so that they hold on a busy machine (0.3 s on an idle 2-core Linux;
        seconds under Wine, or with a second copy of the suite running)."""
        started = time.monotonic()
        command = [*self.python, "-m", "supervisor", "ping", "--control", self.control_address()]
        subprocess.run(command, cwd=ROOT, env=self.env({}), stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        return time.monotonic() - started

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("WINEDEBUG", "-all")
        env.update(extra)
        return env


class Pool:
    """A ``supervisor start`` process and what it has printed."""

    def __init__(
        self,
        platform: Platform,
        control: str,
        args: Sequence[str],
        env: dict[str, str],
        cwd: str = ROOT,
        prefix: Sequence[str] = (),
        module: str = "supervisor",
    ) -> None:
        self.platform = platform
        self.control = control
        self.env = env
        self._command = [*prefix, *platform.python, "-m", module, "start", "--control", control, *args]
        self._cwd = cwd
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._start()
        self.url = ""
        #: CLI processes started with cli_background, reaped at teardown.
        self.background: list[subprocess.Popen[str]] = []

    def _start(self) -> None:
        self.process = subprocess.Popen(
            self._command,
            cwd=self._cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a test's SIGINT reaches this group, not pytest
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for raw in stdout:
                with self._lock:
                    self.lines.append(raw.decode(errors="replace").rstrip())
        except ValueError:
            pass  # closed under it: a process given up on (wait_ready)

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            with self._lock:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
            if self.process.poll() is not None:
                # Its last lines may still be in the pipe (an orphan may hold it open: don't wait
                # for end of file).
                self._reader.join(2)
                with self._lock:
                    if any(regex.search(line) for line in self.lines):
                        return next(m for line in self.lines if (m := regex.search(line)))
                raise AssertionError(f"supervisor exited ({self.process.returncode}) before {pattern!r}")
            return None

        try:
            return wait_until(found, timeout, f"a line matching {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- supervisor output ---\n{self.output}") from None

    def wait_ready(self, timeout: float = DEADLINE) -> str:
        pattern = r"pool ready: \d+ workers? serving (http://\S+) with (\w+)"
        try:
            match = self.wait_for_line(pattern, timeout)
        except AssertionError:
            if not self._wine_started_nothing():
                raise
            # Once in CI (part 3, one start of about 800), and once here in three copies of a test
            # started at the same moment: the Windows python.exe exited 1 before printing a byte.
            # The supervisor never ends without a line saying why, and 93 starts one after another
            # and 12 four at once did not show it: Wine's, so start once more, saying so.
            print(f"Wine's python.exe exited {self.process.returncode} with no output; started again", file=sys.stderr)
            self._reader.join(10)
            assert self.process.stdout is not None
            self.process.stdout.close()  # its reader has ended, or ends on the closed file
            self._start()
            match = self.wait_for_line(pattern, timeout)
        self.url, self.http_server = match.group(1), match.group(2)
        return self.url

    def _wine_started_nothing(self) -> bool:
        with self._lock:
            return self.platform.windows and self.process.poll() is not None and not self.lines

    def cli(self, *args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
        """Run ``supervisor ARGS --control <ours>`` to completion."""
        command = [*self.platform.python, "-m", "supervisor", *args, "--control", self.control]
        return subprocess.run(
            command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )

    def cli_background(self, *args: str) -> subprocess.Popen[str]:
        command = [*self.platform.python, "-m", "supervisor", *args, "--control", self.control]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.background.append(process)
        return process

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def status_if_running(self) -> dict[str, Any] | None:
        """``status --json``, or None while (or once) no supervisor answers."""
        result = self.cli("status", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else None

    def status_or_none(self) -> str | None:
        """The pool's state, or None while (or once) it does not answer."""
        status = self.status_if_running()
        return status["state"] if status else None

    def worker_states(self) -> list[str]:
        """Each worker's state, or [] while the supervisor does not answer."""
        status = self.status_if_running()
        return [w["state"] for w in status["workers"]] if status else []

    def interrupt(self) -> None:
        """Ctrl+C as a terminal sends it: SIGINT to the whole foreground process group. Wine
        delivers a SIGINT to a Windows process as the console's Ctrl+C event."""
        os.killpg(self.process.pid, signal.SIGINT)

    def interrupt_worker(self, slot: int) -> None:
        """SIGINT to one worker's process (under Wine: a Ctrl+C event for that worker)."""
        (proc,) = [p for p in self.leftovers() if f"--slot {slot} " in " ".join(p.cmdline())]
        proc.send_signal(signal.SIGINT)

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor still running after {timeout}s:\n{self.output}") from None
        self._reader.join(10)
        return code

    def leftovers(self) -> list[psutil.Process]:
        """Processes that belong to this pool (its control address is on their command line)."""
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                if self.control in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return [p for p in found if p.pid != os.getpid()]

    def assert_no_leftovers(self, timeout: float = 30.0) -> None:
        wait_until(lambda: not self.leftovers(), timeout, "every process of the pool to exit")

    def kill_everything(self) -> None:
        if not self.platform.windows and self.process.poll() is None:
            # Still alive, so its process group (its own session) is still the pool's.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for process in self.background:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)
        for proc in [*self.leftovers()]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30):
    """One request on a fresh connection: (status, headers, body)."""
    parsed = urllib.parse.urlsplit(url)
    conn = HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request(
            method, parsed.path + (f"?{parsed.query}" if parsed.query else ""), body=body, headers=headers or {}
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def infer_body(rows: int = 1, width: int = 64, value: float = 0.5) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [rows, width], "data": [value] * (rows * width)}]}
    ).encode()
