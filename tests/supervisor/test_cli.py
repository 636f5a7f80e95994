"""The command line's parsing and settings, in-process (the e2e tests run it for real)."""

from __future__ import annotations

import pytest

from supervisor import cli
from supervisor.sockets import parse_bind


@pytest.mark.parametrize(
    "text, expected",
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)), ("localhost:65535", ("localhost", 65535))],
)
def test_parse_bind(text, expected):
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:http", "host:65536", "[::1]"])
def test_parse_bind_refuses(text):
    with pytest.raises(ValueError):
        parse_bind(text)


def settings(argv):
    return cli._settings(cli.build_parser().parse_args(["start", *argv]))


def test_defaults():
    got = settings([])
    assert got["workers"] == 1 and got["bind"] == ("127.0.0.1", 8080) and got["grace"] == 30.0
    assert got["models"] == [] and got["control"] is None and got["name"] == "default"


def test_flags_win_over_the_file_which_wins_over_defaults(tmp_path):
    config = tmp_path / "pool.toml"
    config.write_text(
        'workers = 3\ngrace = 7\nbind = "0.0.0.0:9000"\nmodels = ["a=w.npz", "b=pkg.mod:B"]\nmodel_dirs = ["repo"]\n'
    )
    got = settings(["--config", str(config), "--workers", "5"])
    assert got["workers"] == 5  # the flag
    assert got["grace"] == 7.0 and got["bind"] == ("0.0.0.0", 9000)  # the file
    assert got["drain_delay"] == 0.0  # the default
    # Paths in the file are the file's; factories stay as they are.
    assert got["models"] == [f"a={tmp_path / 'w.npz'}", "b=pkg.mod:B"]
    assert got["model_dirs"] == [str(tmp_path / "repo")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("workers = 0", "workers: must be at least 1"),
        ("workers = true", "workers must be a whole number"),
        ('grace = "soon"', "grace must be a number of seconds"),
        ("models = [1]", "models must be a list"),
        ("nope = 1", "unknown key 'nope'"),
        ("workers = ", "not valid TOML"),
    ],
)
def test_bad_files(tmp_path, text, message):
    config = tmp_path / "pool.toml"
    config.write_text(text + "\n")
    with pytest.raises(cli.config.ConfigError, match=message):
        settings(["--config", str(config)])


def test_usage_errors_are_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["start", "--workers", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("supervisor start: error: argument --workers")
