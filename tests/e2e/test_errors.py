"""Mistakes a user can make: one clear line, the right exit code, nothing left running."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from ipc import FrameDecoder, encode
from ipc.messages import Error

from .harness import ROOT


def run(platform, *args, timeout=60):
    """``supervisor ARGS``; a ``start`` never binds 8080 or the default pool, whatever it parses."""
    if args[:1] == ("start",):
        args = ("start", "--bind", "127.0.0.1:0", "--control", platform.control_address(), *args[1:])
    return subprocess.run(
        [*platform.python, "-m", "supervisor", *args],
        cwd=ROOT,
        env=platform.env({}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_clear_line(result, code, text):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error" in lines[0].lower() and text in lines[0], result.stderr


def test_stop_with_no_supervisor_running(platform, tmp_path):
    result = run(platform, "stop", "--control", platform.control_address(str(tmp_path)))
    assert_one_clear_line(result, 1, "no supervisor is running at")


def test_status_with_no_supervisor_running(platform, tmp_path):
    result = run(platform, "status", "--control", platform.control_address(str(tmp_path)))
    assert_one_clear_line(result, 1, "no supervisor is running at")


@pytest.mark.parametrize(
    "args, text",
    [
        (["start", "--wrokers", "2"], "unrecognized arguments: --wrokers"),
        (["start", "--workers", "0"], "--workers: must be at least 1, not 0"),
        (["start", "--workers", "many"], "--workers: expected a whole number"),
        (["start", "--bind", "8080"], "--bind: must be HOST:PORT"),
        (["start", "--grace", "-1"], "--grace: must be a finite number of seconds >= 0"),
        (["stop", "--grace", "1e9"], "--grace: must be at most 86400, not 1e+09"),
        (["start", "--drain-delay", "7200"], "--drain-delay: must be at most 3600, not 7200"),
        (["start", "--name", "../x"], "--name: invalid name"),
        (["start", "--model", "nonsense"], "is not NAME=PATH"),
        (["restart"], "invalid choice: 'restart'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors(platform, args, text):
    if platform.windows and args[:1] != ["start"]:
        pytest.skip("one usage error is enough under Wine")
    assert_one_clear_line(run(platform, *args), 2, text)


def test_port_in_use(platform, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(platform, "start", "--bind", f"127.0.0.1:{port}")
    assert_one_clear_line(result, 1, f"cannot listen on 127.0.0.1:{port}: address already in use")


def test_control_address_taken(launch, platform):
    first = launch(workers=1)
    first.wait_ready()
    assert "pool ready: 1 worker serving" in first.output  # not "1 workers"
    second = run(platform, "start", "--bind", "127.0.0.1:0", "--control", first.control)
    assert_one_clear_line(second, 1, f"another supervisor is starting or already running at {first.control}")
    assert first.status()["state"] == "ready"  # the first pool did not notice


def test_missing_weights_file(platform, tmp_path):
    result = run(
        platform, "start", "--model", "m=does/not/exist.npz", "--control", platform.control_address(str(tmp_path))
    )
    assert_one_clear_line(result, 2, "no such file")  # a bad setting, as the README says


def test_model_that_fails_to_load(launch):
    pool = launch("--model", "bad=tests.models:BrokenModel", workers=2)
    assert pool.wait_exit() == 1
    assert "Traceback" not in pool.output
    # The first failure is the cause, said once; the pool then stops the other worker.
    assert re.search(r"worker [01] failed to start: RuntimeError: weights are missing", pool.output)
    assert "cannot load models" not in pool.output  # said once, by the supervisor
    pool.assert_no_leftovers()


def test_unimportable_model_factory(launch):
    pool = launch("--model", "bad=no.such.module:Factory", workers=1)
    assert pool.wait_exit() == 1
    assert "cannot import no.such.module:Factory" in pool.output
    pool.assert_no_leftovers()


def test_hostile_control_client_does_not_hurt_the_pool(launch, platform):
    pool = launch(workers=1)
    pool.wait_ready()
    for garbage in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x03abc", b"\x00\x00\x00\x01\xc1", b"GET / HTTP/1.1\r\n\r\n"):
        decoder = FrameDecoder()
        decoder.feed(platform.raw_control(pool.control, garbage))  # an Error frame, then the close
        reply = decoder.next_message()
        assert isinstance(reply, Error) and reply.code == "protocol", reply
        assert decoder.next_message() is None and decoder.buffered == 0
    assert pool.status()["state"] == "ready"
    assert pool.cli("stop").returncode == 0
    assert pool.wait_exit() == 0


@pytest.mark.parametrize(
    "grace, why", [(float("nan"), "finite"), (float("inf"), "finite"), (-1.0, ">= 0"), (1e300, "at most 86400")]
)
def test_control_requests_with_impossible_values_are_refused(launch, platform, grace, why):
    from ipc.messages import StopRequest

    pool = launch(workers=1)
    pool.wait_ready()
    sent = subprocess.run(
        [*platform.python, "-m", "tests.e2e.send", pool.control, encode(StopRequest(grace)).hex()],
        cwd=ROOT,
        env=pool.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex(sent.stdout.strip()))
    reply = decoder.next_message()
    assert isinstance(reply, Error) and why in reply.message, reply
    assert pool.status()["state"] == "ready"
    assert pool.cli("stop").returncode == 0
    assert pool.wait_exit() == 0
