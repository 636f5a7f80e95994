"""deploy/systemd's unit agrees with the supervisor: a notify service (supervisor/notify.py)
whose stop leaves room for the drain and whose start for the workers' loading, that reloads with
`supervisor reload`, and that systemd itself finds valid (``systemd-analyze verify``)."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess

import pytest

from supervisor import cli, settings
from supervisor.policy import Timeouts

UNIT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "deploy",
    "systemd",
    "inference-supervisor.service",
)


def service() -> configparser.SectionProxy:
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    unit.read(UNIT)
    return unit["Service"]


def command(line: str) -> list[str]:
    """``supervisor ...``'s arguments on an Exec line."""
    program, *args = shlex.split(line)
    assert os.path.basename(program) == "supervisor", line
    return args


def test_the_unit_agrees_with_the_supervisor():
    unit = service()
    assert (unit["Type"], unit["NotifyAccess"], unit["KillMode"]) == ("notify", "main", "mixed")
    start = cli.build_parser().parse_args(command(unit["ExecStart"]))
    assert start.command == "start"
    flags = {option.key: getattr(start, option.key) for option in settings.options()}
    config = settings.resolve(flags, None, {}, cwd="/")
    needed = config.pool.drain_delay + config.worker.grace + Timeouts().exit_margin
    assert int(unit["TimeoutStopSec"]) >= needed
    assert int(unit["TimeoutStartSec"]) > config.pool.ready_timeout
    reload = cli.build_parser().parse_args(command(unit["ExecReload"]))
    assert reload.command == "reload" and reload.control == config.pool.control  # the same pool
    assert int(unit["WatchdogSec"]) > 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_finds_the_unit_valid(tmp_path):
    """As installed: ``supervisor`` where this test's environment has it, a user that exists."""
    supervisor = shutil.which("supervisor")
    if supervisor is None:
        pytest.skip("the supervisor command is not installed")
    with open(UNIT) as f:
        text = f.read().replace("/usr/local/bin/supervisor", supervisor).replace("User=inference", "User=root")
    installed = tmp_path / "inference-supervisor.service"
    installed.write_text(text)
    verify = subprocess.run(["systemd-analyze", "verify", str(installed)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr
