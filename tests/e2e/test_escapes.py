"""Nothing a worker started outlives it: a helper its model's load() started, detached (its own
session, or DETACHED_PROCESS) and holding the pool's listening socket, ends with its worker and
with the pool, and the port is free for the next pool."""

from __future__ import annotations

import urllib.parse

import psutil

from .harness import wait_until


def helpers(pool, platform) -> list[psutil.Process]:
    """The pool's processes that are neither its supervisor nor its workers."""
    if platform.windows:
        return [p for p in pool.leftovers() if "time.sleep(600)" in " ".join(p.cmdline())]
    workers = {worker["pid"] for worker in pool.status()["workers"]}
    return [p for p in pool.leftovers() if p.pid not in workers and p.pid != pool.process.pid]


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_an_escaped_helper_ends_with_the_pool_and_frees_its_port(launch, platform):
    pool = launch("--model", "escape=tests.models:EscapingModel", workers=1)
    port = urllib.parse.urlsplit(pool.wait_ready()).port
    (helper,) = wait_until(lambda: helpers(pool, platform), what="the model's helper")
    stop = pool.cli("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert pool.wait_exit() == 0, pool.output
    wait_until(lambda: gone(helper), 10, "the helper to end with the pool")
    pool.assert_no_leftovers(10)
    # The port is free: a new pool serves on it.
    again = launch("--bind", f"127.0.0.1:{port}", workers=1)
    assert again.wait_ready() == f"http://127.0.0.1:{port}"


def test_an_escaped_helper_ends_with_its_lost_worker(launch, platform):
    pool = launch("--model", "escape=tests.models:EscapingModel", workers=1)
    pool.wait_ready()
    (helper,) = wait_until(lambda: helpers(pool, platform), what="the model's helper")
    (worker,) = pool.status()["workers"]
    platform.kill(worker["pid"])
    wait_until(lambda: gone(helper), 30, "the lost worker's helper to end")
    # Its replacement starts its own, which lives as long as that one serves.
    wait_until(lambda: [w["state"] for w in pool.status()["workers"]] == ["ready"], what="the replacement")
    (second,) = wait_until(lambda: helpers(pool, platform), what="the replacement's helper")
    assert second.pid != helper.pid and not gone(second)
