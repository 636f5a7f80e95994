"""Log lines: one per lifecycle event; --log-format json makes every line of every process a JSON
object (workers' with their slot and pid); the access log is off unless asked for."""

from __future__ import annotations

import json

from .harness import http, wait_until


def test_json_logs_from_every_process(launch, platform):
    pool = launch("--log-format", "json", "--access-log", workers=2)
    url = pool.wait_ready()
    assert http("GET", f"{url}/v2/health/live")[0] == 200
    assert pool.cli("stop").returncode == 0
    assert pool.wait_exit() == 0
    entries = [json.loads(line) for line in pool.lines if line.strip()]  # every line parses
    assert all({"time", "level", "logger", "process", "message"} <= set(entry) for entry in entries)
    workers = [entry for entry in entries if entry["process"] == "worker"]
    assert {entry["slot"] for entry in workers} == {0, 1} and all("pid" in entry for entry in workers)
    messages = [entry["message"] for entry in entries if entry["process"] == "supervisor"]
    for event in ("worker 0 spawned", "worker 0 ready", "pool ready", "stopping: draining 2", "worker 0 stopped"):
        assert any(message.startswith(event) for message in messages), (event, messages)
    (access,) = [entry for entry in workers if entry["logger"] == "worker.access"]
    assert (access["method"], access["path"], access["status"]) == ("GET", "/v2/health/live", 200)
    assert access["duration_ms"] >= 0


def test_no_access_log_unless_asked_and_the_level_is_honoured(launch, platform):
    quiet = launch("--log-level", "warning", workers=1)
    wait_until(lambda: quiet.status_or_none() == "ready", what="the pool to be ready (it says nothing)")
    verbose = launch(workers=1, control=platform.control_address())
    url = verbose.wait_ready()
    assert http("GET", f"{url}/v2/health/live")[0] == 200
    for pool in (quiet, verbose):
        assert pool.cli("stop").returncode == 0
        assert pool.wait_exit() == 0
    assert not [line for line in quiet.lines if " INFO " in line], quiet.output
    assert "/v2/health/live" not in verbose.output  # no access log by default
