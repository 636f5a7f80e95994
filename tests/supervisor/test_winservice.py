"""What the Windows service control manager is told, as a table (the service itself runs in the
Windows suite under Wine's manager: tests/e2e/test_service.py)."""

from __future__ import annotations

import pytest

from supervisor.lifecycle import PoolState
from supervisor.notify import View
from supervisor.winservice import (
    ACCEPT_SHUTDOWN,
    ACCEPT_STOP,
    ERROR_SERVICE_SPECIFIC_ERROR,
    RUNNING,
    START_PENDING,
    STOP_PENDING,
    STOPPED,
    Status,
    status,
    stopped,
)

ACCEPTS = ACCEPT_STOP | ACCEPT_SHUTDOWN


@pytest.mark.parametrize(
    ("state", "ready", "told"),
    [
        (PoolState.STARTING, 0, Status(START_PENDING, checkpoint=1, wait_hint_ms=120_000)),
        (PoolState.STARTING, 1, Status(START_PENDING, checkpoint=2, wait_hint_ms=120_000)),  # progress
        (PoolState.READY, 2, Status(RUNNING, ACCEPTS)),
        (PoolState.DEGRADED, 1, Status(RUNNING, ACCEPTS)),
        (PoolState.RELOADING, 2, Status(RUNNING, ACCEPTS)),
        (PoolState.SCALING, 3, Status(RUNNING, ACCEPTS)),
        (PoolState.STOPPING, 2, Status(STOP_PENDING, checkpoint=1, wait_hint_ms=35_000)),
        (PoolState.STOPPING, 1, Status(STOP_PENDING, checkpoint=2, wait_hint_ms=35_000)),  # one has stopped
        (PoolState.DOWN, 0, Status(STOP_PENDING, checkpoint=3, wait_hint_ms=35_000)),
        (PoolState.STOPPED, 0, Status(STOP_PENDING, checkpoint=3, wait_hint_ms=35_000)),
    ],
)
def test_what_the_service_manager_is_told(state, ready, told):
    assert status(View(state, ready, 2), 120_000, 35_000) == told


@pytest.mark.parametrize(
    ("exit_code", "told"),
    [
        (0, Status(STOPPED)),
        (1, Status(STOPPED, exit_code=ERROR_SERVICE_SPECIFIC_ERROR, specific=1)),  # never served
        (4, Status(STOPPED, exit_code=ERROR_SERVICE_SPECIFIC_ERROR, specific=4)),  # went down
    ],
)
def test_the_last_word_is_the_exit_code(exit_code, told):
    assert stopped(exit_code) == told
