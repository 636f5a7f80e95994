"""The parts of finding strays that need no supervisor: the walk of /proc and the SIGTERM mask.
(Ending them is tested end to end, tests/e2e/test_escapes.py: here the test's own process is
the parent, whose other children are not ours to end.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from ipc.contract.settings import WorkerSettings
from ipc.messages import Configure
from supervisor import reaper
from worker.serve import listening_socket

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


@pytest.fixture
def shell():
    """A child shell that ignores SIGTERM, with a ``sleep`` of its own."""
    process = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 30 & wait"])
    try:
        yield process
    finally:
        for pid in reaper.strays(set()):  # only its own: the shell and its sleep
            if pid == process.pid or reaper.processes().get(pid, (0, b""))[0] == process.pid:
                os.kill(pid, 9)
        process.wait(10)


def test_a_child_that_is_not_a_worker_and_its_descendants_are_strays(shell):
    def below() -> list[int]:
        return [pid for pid in reaper.strays(set()) if reaper.processes().get(pid, (0, b""))[0] == shell.pid]

    (sleep,) = wait_until(below, 10, "the shell's sleep")
    found = reaper.strays(set())
    assert shell.pid in found and sleep in found
    assert found.index(shell.pid) < found.index(sleep)  # parents first
    # A worker's descendants are its own until it has exited.
    assert shell.pid not in reaper.strays({shell.pid}) and sleep not in reaper.strays({shell.pid})


def test_a_process_that_ignores_sigterm_is_told_apart(shell):
    wait_until(lambda: reaper.ignores_sigterm(shell.pid), 10, "the shell's trap")
    assert not reaper.ignores_sigterm(os.getpid())


def test_the_worker_does_not_pass_the_listening_socket_on():
    with socket.socket() as original:
        original.set_inheritable(True)  # as a worker receives it (pass_fds)
        sock = listening_socket(Configure(WorkerSettings(), listen_fd=os.dup(original.fileno())))
        with sock:
            assert not sock.get_inheritable()
