"""The supervisor as a container's entry process: PID 1 of its own PID namespace, with no init.
SIGTERM (what the kubelet sends) drains to exit 0, and orphans re-parented to it are reaped."""

from __future__ import annotations

import os
import shutil
import signal
import sys

import psutil
import pytest

from .harness import Pool, wait_until

pytestmark = [
    pytest.mark.linux_supervisor("Linux PID namespaces"),
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("unshare"),
        reason="needs root and util-linux's unshare for a PID namespace",
    ),
]


def test_as_pid_1_it_reaps_orphans_and_drains_on_sigterm(platform, tmp_path):
    args = ["--workers", "2", "--bind", "127.0.0.1:0", "--model", "o=tests.models:OrphanMakerModel"]
    prefix = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    pool = Pool(platform, platform.control_address(str(tmp_path)), args, platform.env({}), prefix=prefix)
    try:
        pool.wait_ready()
        assert "pid 1)" in pool.wait_for_line(r"pool ready: .*").group(0)  # PID 1 of its namespace
        (supervisor,) = psutil.Process(pool.process.pid).children()  # unshare's child, seen from here

        def orphans() -> list[psutil.Process]:
            """The `sleep`s among the supervisor's children: alive, or dead and not reaped. (The
            workers' pids in `status` are the namespace's, not the ones seen from here.)"""
            found = []
            for child in supervisor.children():
                try:
                    if child.name() == "sleep":
                        found.append(child)
                except psutil.NoSuchProcess:
                    pass
            return found

        # Each worker's load left a `sleep` behind, re-parented to PID 1; 0.2 s later it exits,
        # and stays a zombie until PID 1 waits for it.
        assert orphans(), "the model's load should have left orphans behind"
        wait_until(lambda: not orphans(), timeout=10, what="the orphans to exit and be reaped")
        assert [w["state"] for w in pool.status()["workers"]] == ["ready", "ready"]
        supervisor.send_signal(signal.SIGTERM)  # as the kubelet stops a container
        assert pool.wait_exit() == 0, pool.output
        assert "SIGTERM: stopping gracefully" in pool.output
        pool.assert_no_leftovers()
    finally:
        pool.kill_everything()
