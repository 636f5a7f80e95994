"""A worker's part in spreading connections (``Rebalance``): the next N responses close their
connections, it stops accepting meanwhile, and closes nobody carries out are given up on."""

from __future__ import annotations

import time

import pytest

from worker.api import InferenceApp, ServingState
from worker.api.state import REBALANCE_EXPIRY, REBALANCE_TAIL
from worker.models import demo_model

from .asgi import call

pytestmark = pytest.mark.anyio


async def test_the_next_responses_asked_for_close_their_connections_and_no_more():
    state = ServingState(connections=5)
    app = InferenceApp([demo_model()], state)
    state.rebalance(2, time.monotonic())
    closes = [(await call(app, "GET", "/v2/health/live")).headers.get("connection") for _ in range(4)]
    assert closes == ["close", "close", None, None]
    assert (state.closing, state.rebalanced) == (0, 2)


def test_no_more_closes_than_connections_and_the_rest_given_up_at_once():
    state = ServingState(connections=3)
    state.rebalance(2, 0.0)
    state.rebalance(4, 0.0)  # one more is open: the other 3 given up on
    assert (state.closing, state.rebalanced) == (3, 3)


def test_a_worker_closing_connections_accepts_none_until_a_moment_after_the_last():
    state = ServingState(connections=4)
    assert state.accepting()
    state.rebalance(1, time.monotonic())
    assert not state.accepting()
    assert state.closes() and not state.closes()
    assert not state.accepting()  # its client reconnects now: to another worker
    state.closed_at -= REBALANCE_TAIL
    assert state.accepting()


def test_closes_no_response_carried_out_are_given_up_on_after_a_while():
    state = ServingState(connections=4)
    state.rebalance(3, 100.0)
    state.settle(100.0 + REBALANCE_EXPIRY / 2)
    assert (state.closing, state.rebalanced) == (3, 0)
    state.settle(100.0 + REBALANCE_EXPIRY)
    assert (state.closing, state.rebalanced) == (0, 3)
    assert state.accepting()
