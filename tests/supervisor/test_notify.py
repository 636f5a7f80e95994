"""systemd's notify protocol as a table (what the pool says on each change), and the notifier's
reading of its environment; end to end: tests/e2e/test_systemd.py."""

from __future__ import annotations

import os
import socket
import sys
import time

import anyio
import pytest

from supervisor.lifecycle import PoolState
from supervisor.notify import Notifier, View, messages

S, R, D, L, C, T, DOWN = (
    PoolState.STARTING,
    PoolState.READY,
    PoolState.DEGRADED,
    PoolState.RELOADING,
    PoolState.SCALING,
    PoolState.STOPPING,
    PoolState.DOWN,
)


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        (None, View(S, 0, 2), ["STATUS=starting: 0 of 2 workers ready"]),
        (View(S, 0, 2), View(S, 1, 2), ["STATUS=starting: 1 of 2 workers ready"]),
        (View(S, 1, 2), View(R, 2, 2), ["READY=1", "STATUS=ready: 2 of 2 workers ready"]),
        (View(R, 2, 2), View(R, 2, 2), []),
        (View(R, 2, 2), View(D, 1, 2), ["STATUS=degraded: 1 of 2 workers ready"]),
        (View(D, 1, 2), View(R, 2, 2), ["STATUS=ready: 2 of 2 workers ready"]),  # said READY once
        (View(R, 2, 2), View(L, 2, 2), ["RELOADING=1", "STATUS=reloading: 2 of 2 workers ready"]),
        (View(L, 2, 2), View(L, 3, 2), ["STATUS=reloading: 3 of 2 workers ready"]),
        (View(L, 2, 2), View(R, 2, 2), ["READY=1", "STATUS=ready: 2 of 2 workers ready"]),
        (View(L, 1, 2), View(D, 1, 2), ["READY=1", "STATUS=degraded: 1 of 2 workers ready"]),
        (View(R, 2, 2), View(C, 2, 3), ["STATUS=scaling: 2 of 3 workers ready"]),
        (View(C, 3, 3), View(R, 3, 3), ["STATUS=ready: 3 of 3 workers ready"]),
        (View(R, 2, 2), View(T, 2, 2), ["STOPPING=1", "STATUS=stopping: 2 of 2 workers ready"]),
        (View(L, 2, 2), View(T, 2, 2), ["STOPPING=1", "STATUS=stopping: 2 of 2 workers ready"]),
        (View(S, 0, 2), View(T, 0, 2), ["STOPPING=1", "STATUS=stopping: 0 of 2 workers ready"]),
        (View(S, 0, 2), View(DOWN, 0, 2), ["STATUS=down: 0 of 2 workers ready"]),  # never READY
    ],
)
def test_what_systemd_is_told(before, after, said):
    assert messages(before, after) == said


@pytest.mark.skipif(sys.platform == "win32", reason="systemd is Linux's")
def test_the_environment_is_read_once_and_taken_out():
    pid = str(os.getpid())
    environ = {"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": pid, "PATH": "x"}
    notifier = Notifier.from_environment(environ)
    assert notifier is not None
    try:
        assert (notifier.address, notifier.watchdog) == ("\0abstract", 1.5)
    finally:
        notifier.close()
    assert environ == {"PATH": "x"}  # a worker started from here inherits none of them


@pytest.mark.skipif(sys.platform == "win32", reason="systemd is Linux's")
@pytest.mark.parametrize(
    ("usec", "pid", "watchdog"),
    [("", "", None), ("0", "", None), ("5000000", "", 2.5), ("5000000", "1", None), ("soon", "", None)],
)
def test_the_watchdog_is_ours_only_when_asked_of_our_pid(usec, pid, watchdog):
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": usec, "WATCHDOG_PID": pid})
    assert notifier is not None
    notifier.close()
    assert notifier.watchdog == watchdog


def test_without_a_socket_nothing_is_said():
    assert Notifier.from_environment({"WATCHDOG_USEC": "1000000"}) is None


@pytest.mark.skipif(sys.platform == "win32", reason="systemd is Linux's")
def test_one_datagram_a_message_and_a_gone_systemd_is_not_an_error(tmp_path, caplog):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        notifier = Notifier(path)
        notifier.send(["RELOADING=1", "STATUS=reloading"])
        notifier.send(["WATCHDOG=1"])
        systemd.settimeout(5)
        first = systemd.recv(4096).decode().split("\n")
        assert first[:2] == ["RELOADING=1", "STATUS=reloading"]
        assert first[2].startswith("MONOTONIC_USEC=") and first[2].removeprefix("MONOTONIC_USEC=").isdigit()
        assert systemd.recv(4096) == b"WATCHDOG=1"
    os.unlink(path)
    notifier.send(["WATCHDOG=1"])
    notifier.send(["WATCHDOG=1"])
    notifier.close()
    assert len([r for r in caplog.records if "notify socket" in r.message]) == 1


@pytest.mark.anyio
@pytest.mark.skipif(sys.platform == "win32", reason="systemd is Linux's")
async def test_a_blocked_event_loop_misses_its_pings(tmp_path):
    """The pings come from the event loop, not a thread: a loop blocked for 1 s sends none."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        systemd.setblocking(False)
        notifier = Notifier(path, watchdog=0.05)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(notifier.ping)
            await anyio.sleep(0.3)
            while True:  # what came before the block
                try:
                    systemd.recv(64)
                except BlockingIOError:
                    break
            time.sleep(1.0)  # noqa: ASYNC251 - the loop, blocked (a model call made on it, a frozen lock)
            blocked = 0
            while True:
                try:
                    systemd.recv(64)
                    blocked += 1
                except BlockingIOError:
                    break
            tasks.cancel_scope.cancel()
        notifier.close()
    assert blocked == 0
