"""Restart backoff and crash-loop detection, on a clock the test holds."""

from __future__ import annotations

import pytest

from supervisor.policy import RestartRules, Restarts

RULES = RestartRules(max_restarts=3, window=60.0, backoff_base=0.5, backoff_max=4.0, healthy_after=30.0)


def test_first_replacement_is_immediate_then_the_backoff_doubles_to_its_cap():
    restarts = Restarts(RestartRules(max_restarts=100, window=1.0, backoff_base=0.5, backoff_max=4.0, healthy_after=30))
    delays = [restarts.on_lost(now=10.0 * i, served_for=0.0) for i in range(7)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert restarts.count == 7


def test_a_worker_that_served_long_enough_resets_the_backoff():
    restarts = Restarts(RULES)
    assert restarts.on_lost(0.0, served_for=0.0) == 0.0
    assert restarts.on_lost(1.0, served_for=0.0) == 0.5
    assert restarts.on_lost(100.0, served_for=45.0) == 0.0  # it served 45 s: healthy


def test_more_than_max_restarts_within_the_window_is_a_crash_loop():
    restarts = Restarts(RULES)
    assert [restarts.on_lost(t, 0.0) is not None for t in (0.0, 1.0, 2.0)] == [True] * 3
    assert restarts.on_lost(3.0, 0.0) is None


def test_losses_older_than_the_window_are_forgotten():
    restarts = Restarts(RULES)
    for t in (0.0, 1.0, 2.0):
        restarts.on_lost(t, 0.0)
    assert restarts.on_lost(60.5, 0.0) is not None  # the loss at 0 s has left the window


@pytest.mark.parametrize("max_restarts", [0])
def test_no_restarts_allowed_gives_up_at_the_first_loss(max_restarts):
    restarts = Restarts(RestartRules(max_restarts, 60.0, 0.5, 4.0, 30.0))
    assert restarts.on_lost(0.0, 100.0) is None
