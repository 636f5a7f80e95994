"""Restart backoff and crash-loop detection, on a clock the test holds."""

from __future__ import annotations

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


def test_more_than_max_restarts_failed_starts_within_the_window_mean_it_cannot_start():
    restarts = Restarts(RULES)
    for t in (0.0, 1.0, 2.0):
        restarts.on_lost(t, 0.0, started=False)
        assert not restarts.cannot_start(t)
    restarts.on_lost(3.0, 0.0, started=False)
    assert restarts.cannot_start(3.0)
    assert not restarts.cannot_start(60.5)  # the failed start at 0 s has left the window


def test_workers_that_started_and_died_never_make_it_a_crash_loop_only_back_off():
    restarts = Restarts(RULES)
    delays = [restarts.on_lost(float(t), served_for=1.0, started=True) for t in range(20)]
    assert delays[:5] == [0.0, 0.5, 1.0, 2.0, 4.0] and max(delays) == 4.0
    assert not restarts.cannot_start(20.0)


def test_a_worker_that_starts_clears_the_failed_starts():
    restarts = Restarts(RestartRules(max_restarts=0, window=60.0, backoff_base=0.5, backoff_max=4.0, healthy_after=30))
    restarts.on_lost(0.0, 0.0, started=False)
    assert restarts.cannot_start(0.0)
    restarts.on_started()
    assert not restarts.cannot_start(0.0)
