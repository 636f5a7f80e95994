"""A worker's launch options: rendered by the supervisor, parsed back by the worker."""

from __future__ import annotations

import pytest

from ipc.contract.launch import LaunchOptions, parent_of

OPTIONS = LaunchOptions("/run/pool.sock", 3, 7, 4242, "json", "debug", "uvloop")


def test_the_command_line_round_trips():
    assert LaunchOptions.parse(OPTIONS.argv()) == OPTIONS
    assert parent_of(["-m", "worker", *OPTIONS.argv()]) == 4242


def test_a_wrong_option_is_a_usage_error(capsys):
    argv = OPTIONS.argv()
    argv[argv.index("--loop") + 1] = "trio"
    with pytest.raises(SystemExit) as exit:
        LaunchOptions.parse(argv)
    assert exit.value.code == 2
    assert "invalid choice: 'trio'" in capsys.readouterr().err


def test_no_parent_is_zero():
    assert parent_of(["--slot", "1"]) == 0
    assert parent_of(["--parent"]) == 0
