"""systemd's notify protocol, with a datagram socket standing in for systemd (it reads one
datagram a message, as systemd does): READY once the pool serves, RELOADING/READY around a
reload, STOPPING when it drains, STATUS lines, and WATCHDOG pings that stop while the supervisor
is frozen and come back after. Linux only: systemd is Linux's."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from .harness import wait_until

pytestmark = pytest.mark.linux_supervisor("systemd is Linux's")


class Systemd:
    """The notify socket's reading end: every datagram, with when it came."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.said: list[tuple[float, list[str]]] = []
        self._reading = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._reading:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.said.append((time.monotonic(), data.decode().split("\n")))

    def lines(self) -> list[str]:
        return [line for _, lines in list(self.said) for line in lines if line != "WATCHDOG=1"]

    def pings(self) -> list[float]:
        return [at for at, lines in list(self.said) if lines == ["WATCHDOG=1"]]

    def close(self) -> None:
        self._reading = False
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    reader = Systemd(str(tmp_path / "notify"))
    yield reader
    reader.close()


def test_systemd_hears_ready_reloading_and_stopping(launch, systemd):
    pool = launch(env={"NOTIFY_SOCKET": systemd.path}, workers=2)
    pool.wait_ready()
    wait_until(lambda: "READY=1" in systemd.lines(), what="READY=1")
    lines = systemd.lines()
    assert lines[0] == "STATUS=starting: 0 of 2 workers ready", lines
    assert lines.count("READY=1") == 1 and lines[-1] == "STATUS=ready: 2 of 2 workers ready", lines
    # The workers cannot speak for the service: the variable is not theirs.
    for worker in pool.status()["workers"]:
        with open(f"/proc/{worker['pid']}/environ", "rb") as environ:
            assert b"NOTIFY_SOCKET=" not in environ.read()
    said = len(lines)
    reload = pool.cli("reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    wait_until(lambda: systemd.lines()[said:].count("READY=1") == 1, what="READY=1 after the reload")
    during = systemd.lines()[said:]
    assert during[0] == "RELOADING=1" and during[2].startswith("MONOTONIC_USEC="), during  # one datagram
    assert during.index("READY=1") > during.index("RELOADING=1"), during
    said = len(systemd.lines())
    assert pool.cli("stop").returncode == 0
    assert pool.wait_exit() == 0, pool.output
    after = systemd.lines()[said:]
    assert after[0] == "STOPPING=1", after
    assert not systemd.pings()  # not asked for: no WATCHDOG_USEC


def test_the_watchdog_goes_quiet_while_the_supervisor_is_frozen(launch, systemd):
    """Pings every 0.25 s (half of WATCHDOG_USEC) from the supervisor's event loop: while it is
    stopped none comes, so systemd (WatchdogSec=) would restart the service; then they resume."""
    pool = launch(env={"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "500000"}, workers=1)
    pool.wait_ready()
    wait_until(lambda: len(systemd.pings()) >= 4, what="4 watchdog pings")
    os.kill(pool.process.pid, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        time.sleep(2.0)  # the time it is frozen for: a duration to measure, not an event to wait for
        quiet = [at for at in systemd.pings() if at > frozen + 0.5]  # one may have been on its way
    finally:
        os.kill(pool.process.pid, signal.SIGCONT)
    thawed = time.monotonic()
    assert not quiet, f"{len(quiet)} pings while frozen"
    wait_until(lambda: any(at > thawed for at in systemd.pings()), what="the pings to resume")
    assert pool.cli("stop").returncode == 0
    assert pool.wait_exit() == 0, pool.output
