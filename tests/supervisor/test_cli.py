"""The command line and its settings, in-process (the e2e tests run it for real)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from ipc.contract.settings import HTTP_SERVERS, Requirement, WorkerSettings
from supervisor import cli, commands
from supervisor.settings import PoolSettings, SettingsError, options, resolve
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


def flags(argv):
    args = cli.build_parser().parse_args(["start", *argv])
    return {option.key: getattr(args, option.key) for option in options()}, args.config


def settings(argv, environ=None):
    given, config = flags(argv)
    return resolve(given, config, environ or {})


def test_defaults_are_the_declarations():
    got = settings([])
    assert got.pool == PoolSettings() and got.worker == WorkerSettings()
    assert got.pool.workers == 1 and got.pool.bind == "127.0.0.1:8080" and got.worker.grace == 30.0
    assert set(got.sources.values()) == {"default"}


def test_every_setting_has_a_flag_a_variable_and_help():
    for option in options():
        assert option.flag.startswith("--") and option.env.startswith("INFERENCE_SUPERVISOR_")
        assert option.declared.help
    flags_seen = [option.flag for option in options()]
    assert len(flags_seen) == len(set(flags_seen))
    assert "--heartbeat-interval" not in flags_seen  # internal: the supervisor sets it


def test_flag_beats_environment_beats_file_beats_default(tmp_path):
    config = tmp_path / "pool.toml"
    config.write_text('workers = 3\ngrace = 7\ndrain_delay = 2\nbind = "0.0.0.0:9000"\n')
    environ = {"INFERENCE_SUPERVISOR_GRACE": "9", "INFERENCE_SUPERVISOR_WORKERS": "4"}
    got = settings(["--config", str(config), "--workers", "5"], environ)
    assert got.pool.workers == 5 and got.sources["workers"] == "flag"
    assert got.worker.grace == 9.0 and got.sources["grace"] == "env"
    assert got.pool.drain_delay == 2.0 and got.sources["drain_delay"] == f"file {config}"
    assert got.pool.bind == "0.0.0.0:9000"
    assert got.worker.keep_alive == 5.0 and got.sources["keep_alive"] == "default"


def test_paths_are_the_files_or_the_current_folders(tmp_path):
    config = tmp_path / "pool.toml"
    config.write_text('models = ["a=w.npz", "b=pkg.mod:B", "o=m.onnx", "s=m.skops"]\nmodel_dirs = ["repo"]\n')
    got = settings(["--config", str(config)])
    # Paths in the file are the file's, whatever the model file; factories stay as they are.
    assert got.worker.models == [
        f"a={tmp_path / 'w.npz'}",
        "b=pkg.mod:B",
        f"o={tmp_path / 'm.onnx'}",
        f"s={tmp_path / 'm.skops'}",
    ]
    assert got.worker.model_dirs == [str(tmp_path / "repo")]
    got = settings(["--model", "c=x/c.npz", "--model", "d=m:D"])
    assert got.worker.models == [f"c={os.path.join(os.getcwd(), 'x', 'c.npz')}", "d=m:D"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("workers = 0", "workers: must be at least 1, not 0"),
        ("workers = true", "workers: must be a whole number"),
        ('grace = "soon"', "grace: must be a number of seconds"),
        ("grace = inf", "grace: must be a finite number of seconds >= 0"),
        ("grace = 1e300", "grace: must be at most 86400, not 1e\\+300"),
        ("drain_delay = 7200", "drain_delay: must be at most 3600, not 7200"),
        ("models = [1]", "models: must be a list"),
        ('models = ["nonsense"]', "models: 'nonsense' is not NAME=PATH"),
        ('bind = "8080"', "bind: must be HOST:PORT"),
        ("nope = 1", "unknown key 'nope'"),
        ("heartbeat_interval = 1", "unknown key 'heartbeat_interval'"),
        ("workers = ", "not valid TOML"),
    ],
)
def test_bad_files_name_the_key(tmp_path, text, message):
    config = tmp_path / "pool.toml"
    config.write_text(text + "\n")
    with pytest.raises(SettingsError, match=message):
        settings(["--config", str(config)])


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("INFERENCE_SUPERVISOR_WORKERS", "many", "expected a whole number"),
        ("INFERENCE_SUPERVISOR_GRACE", "-1", "must be a finite number of seconds >= 0"),
        ("INFERENCE_SUPERVISOR_NAME", "../x", "invalid name"),
    ],
)
def test_bad_environment_names_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=f"{name}: .*{message}"):
        settings([], {name: value})


def test_usage_errors_are_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["start", "--workers", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("supervisor start: error: argument --workers")


def test_an_http_server_not_installed_names_its_extra(capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    missing = {"httptools"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["start", "--http", "uvicorn"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "uvicorn is not installed: pip install 'httptools>=0.9,<0.10' (in a checkout: pip install '.[uvicorn]')"
        in err
    )


@pytest.mark.parametrize(
    "installed, bad",
    [({"uvicorn": "0.54.2"}, "uvicorn"), ({"httptools": "0.10.0"}, "httptools"), ({"uvloop": "0.24.0rc1"}, "uvloop")],
)
def test_an_http_server_outside_the_tested_versions_is_one_line(capsys, monkeypatch, installed, bad):
    """worker/http/uvicorn_server.py builds on uvicorn's internals; a release it was not tested
    with failed in a worker, or served subtly wrong, instead of saying so at start."""
    from importlib import metadata

    if importlib.util.find_spec("uvloop") is None and bad == "uvloop":
        pytest.skip("uvloop is not installed here (never on Windows): it is then not checked")
    version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: installed.get(name) or version(name))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["start", "--http", "uvicorn"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (need,) = [str(need) for need in HTTP_SERVERS["uvicorn"] if need.name == bad]
    assert err.count("\n") == 1
    assert f"uvicorn needs {need}, not {bad} {installed[bad]}: pip install '{need}'" in err


@pytest.mark.parametrize(
    "version, admitted",
    [("0.55", True), ("0.55.0", True), ("0.55.17", True), ("0.55.0.post1", True), ("0.54.9", False),
     ("0.56.0", False), ("0.56.0rc1", False), ("0.56", False), ("1.0", False), ("", False)],
)  # fmt: skip
def test_tested_versions_are_one_minor_series(version, admitted):
    assert Requirement("uvicorn", "0.55", "0.56").admits(version) is admitted


def test_a_list_from_the_environment_is_trimmed():
    got = settings([], {"INFERENCE_SUPERVISOR_MODEL_BATCH_DELAYS": "mlp=5, other=10 ,"})
    assert got.worker.model_batch_delays == ["mlp=5", "other=10"]


def test_bad_environment_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("INFERENCE_SUPERVISOR_MAX_RESTARTS", "-3")
    assert cli.main(["start"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "INFERENCE_SUPERVISOR_MAX_RESTARTS: must be at least 0, not -3" in err


def test_values_a_higher_source_overrides_are_still_checked(tmp_path):
    """A typo in the file or the environment passed unseen while a flag overrode it, and broke
    the pool the day the flag went away (found in review)."""
    config = tmp_path / "pool.toml"
    config.write_text("workers = 0\n")
    with pytest.raises(SettingsError, match="workers: must be at least 1, not 0"):
        settings(["--config", str(config), "--workers", "2"])
    with pytest.raises(SettingsError, match="INFERENCE_SUPERVISOR_GRACE: expected seconds"):
        settings(["--grace", "5"], {"INFERENCE_SUPERVISOR_GRACE": "soon"})


@pytest.mark.parametrize("command", [["status"], ["stop"], ["reload"], ["scale", "2"]])
def test_commands_for_a_running_pool_ignore_settings_only_start_reads(capsys, monkeypatch, tmp_path, command):
    """`supervisor stop` refused to run over a bad INFERENCE_SUPERVISOR_WORKERS: a pool
    started before the variable went bad could not be stopped (found in review)."""
    monkeypatch.setenv("INFERENCE_SUPERVISOR_WORKERS", "many")
    monkeypatch.setenv("INFERENCE_SUPERVISOR_CONTROL", str(tmp_path / "none.sock"))
    assert cli.main(command) == 1
    err = capsys.readouterr().err
    assert "no supervisor is running at" in err and "WORKERS" not in err


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (59.9, "59s"), (61, "1m01s"), (3600 * 2 + 180, "2h03m"), (86400 * 4 + 7200, "4d02h")]
)
def test_durations_read_at_a_glance(seconds, text):
    assert commands.duration(seconds) == text


def test_config_prints_each_setting_with_its_source(capsys, monkeypatch, tmp_path):
    import json

    config = tmp_path / "pool.toml"
    config.write_text("drain_delay = 4\n")
    monkeypatch.setenv("INFERENCE_SUPERVISOR_GRACE", "9")
    assert cli.main(["config", "--config", str(config), "--workers", "3", "--json"]) == 0
    rows = {row["setting"]: (row["value"], row["source"]) for row in json.loads(capsys.readouterr().out)}
    assert rows["workers"] == (3, "flag")
    assert rows["grace"] == (9.0, "env")
    assert rows["drain_delay"] == (4.0, f"file {config}")
    assert rows["keep_alive"] == (5.0, "default")
    assert set(rows) == {option.key for option in options()}


def test_version(capsys):
    import ipc

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"supervisor (inference-supervisor) {ipc.__version__}"


def test_log_settings_and_switches():
    got = settings(["--log-format", "json", "--log-level", "debug", "--access-log"])
    assert (got.pool.log_format, got.pool.log_level, got.worker.access_log) == ("json", "debug", True)
    assert settings([]).worker.access_log is False
    assert settings([], {"INFERENCE_SUPERVISOR_ACCESS_LOG": "yes"}).worker.access_log is True
    with pytest.raises(SettingsError, match="ACCESS_LOG: expected true or false, not 'maybe'"):
        settings([], {"INFERENCE_SUPERVISOR_ACCESS_LOG": "maybe"})
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["start", "--log-format", "xml"])


@pytest.mark.parametrize("name", ["stats", "a:b"])
def test_a_model_name_no_url_reaches_is_bad_usage(capsys, name):
    with pytest.raises(SystemExit) as caught:
        cli.main(["start", "--model", f"{name}=m.onnx"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"model name {name!r} cannot be served" in err


def test_config_says_where_models_come_from_when_none_are_given(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("INFERENCE_SUPERVISOR_MODELS", raising=False)
    monkeypatch.delenv("INFERENCE_SUPERVISOR_MODEL_DIRS", raising=False)
    assert cli.main(["config"]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    assert "demo model 'mlp'" in hint and "--model NAME=FILE" in hint and "--model-dir DIR" in hint
    assert cli.main(["config", "--model-dir", str(tmp_path)]) == 0
    assert "demo model" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["start", "--worker", "4"], ["config", "--work", "2"], ["stop", "--gra", "1"], ["status", "--js"]]
)
def test_abbreviated_flags_are_refused(capsys, argv):
    # Spelt out, each is a flag of its command (the test of the refusal, not of a typo).
    full = {"--worker": "--workers", "--work": "--workers", "--gra": "--grace", "--js": "--json"}[argv[1]]
    cli.build_parser().parse_args([argv[0], full, *argv[2:]])
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert f"unrecognized arguments: {argv[1]}" in capsys.readouterr().err


def test_a_model_file_that_is_not_there_is_a_bad_setting(capsys, tmp_path):
    assert cli.main(["start", "--model", f"m={tmp_path / 'none.npz'}"]) == 2
    assert cli.main(["start", "--model-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "no such file" in err[0] and "no such folder" in err[1]
