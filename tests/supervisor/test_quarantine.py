"""Quarantine as a table: deaths with a model's requests in flight, on a clock the test holds."""

from __future__ import annotations

from supervisor.quarantine import Quarantine


def test_three_deaths_within_the_window_quarantine_that_model_only():
    quarantine = Quarantine(deaths=3, window=60.0)
    assert quarantine.died(0.0, {"poison/1", "good/1"}) == []
    assert quarantine.died(10.0, {"poison/1"}) == []
    assert quarantine.died(20.0, {"poison/1"}) == ["poison/1"]
    assert set(quarantine.models) == {"poison/1"}
    assert "it was serving a request each time a worker died, 3 times within 60s" in quarantine.models["poison/1"]
    assert quarantine.died(21.0, {"poison/1"}) == []  # once is enough


def test_deaths_older_than_the_window_are_forgotten():
    quarantine = Quarantine(deaths=3, window=60.0)
    for now in (0.0, 50.0, 100.0):  # the death at 0 s has left the window by 100 s
        assert quarantine.died(now, {"m/2"}) == []
    assert quarantine.died(101.0, {"m/2"}) == ["m/2"]


def test_a_reload_clears_it():
    quarantine = Quarantine(deaths=1)
    quarantine.died(0.0, {"m/1"})
    quarantine.clear()
    assert quarantine.models == {} and quarantine.died(1.0, set()) == []
