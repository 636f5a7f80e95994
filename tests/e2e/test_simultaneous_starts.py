"""Two ``supervisor start`` on one control address at the same moment: exactly one gets it."""

from __future__ import annotations

import os
import re

import pytest

from .harness import Pool, wait_until


def outcome(pool: Pool) -> str | None:
    """How the start went so far: ready (it said so), exited, or None while neither."""
    if re.search(r"pool ready: \d+ workers? serving", pool.output):
        return "ready"
    return "exited" if pool.process.poll() is not None else None


@pytest.mark.parametrize("attempt", range(3))
def test_of_two_starts_at_once_exactly_one_wins(launch, platform, tmp_path, attempt):
    gate = tmp_path / "listen-gate"
    gate.mkdir()
    control = platform.control_address(str(tmp_path))
    env = {"TEST_LISTEN_GATE": platform.path(str(gate))}
    # Each is held just before it listens (tests/e2e/paused_start.py), or refused before that;
    # then both go on at once. The old stale-socket check let both get there, and both served.
    pools = [launch(workers=1, control=control, env=env, module="tests.e2e.paused_start") for _ in range(2)]
    wait_until(
        lambda: len(os.listdir(gate)) + sum(p.process.poll() is not None for p in pools) >= 2,
        what="both starts to be held or refused",
    )
    (gate / "open").touch()
    outcomes = [wait_until(lambda p=p: outcome(p), what="each start to be ready or gone") for p in pools]
    assert sorted(outcomes) == ["exited", "ready"], "\n--- and ---\n".join(p.output for p in pools)
    winner, loser = pools if outcomes[0] == "ready" else pools[::-1]

    assert loser.wait_exit() == 1, loser.output
    lines = [line for line in loser.lines if line.strip()]
    expected = f"cannot open the control address: another supervisor is starting or already running at {control}"
    assert len(lines) == 1 and expected in lines[0], loser.output

    # The winner's endpoint and key file are its own: a client finds it, and proves the key.
    winner.wait_ready()
    assert winner.status()["state"] == "ready"
    stop = winner.cli("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert winner.wait_exit() == 0, winner.output
    winner.assert_no_leftovers()
