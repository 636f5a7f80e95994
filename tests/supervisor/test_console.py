"""A Windows console's close, log-off and shutdown: the handler's body, called with each event
code (no console needed, so this runs on every platform; Wine delivers only Ctrl+C), and the
supervisor stopping within the time Windows gives."""

from __future__ import annotations

import threading
import time

import pytest

from ipc.contract import console
from ipc.contract.settings import WorkerSettings
from ipc.messages import Stop
from supervisor.lifecycle import PoolState

from .fakes import by_generation, running

CTRL_C_EVENT, CTRL_BREAK_EVENT = 0, 1


@pytest.mark.parametrize("event", [CTRL_C_EVENT, CTRL_BREAK_EVENT])
def test_ctrl_c_and_ctrl_break_are_left_to_the_next_handler(event):
    told: list = []
    assert console.Holder(lambda *args: told.append(args))(event) is False
    assert told == []


@pytest.mark.parametrize(
    ("event", "name", "given"),
    [(2, "CTRL_CLOSE_EVENT", 5.0), (5, "CTRL_LOGOFF_EVENT", 20.0), (6, "CTRL_SHUTDOWN_EVENT", 20.0)],
)
def test_a_close_is_reported_and_held_until_released(event, name, given):
    told: list = []
    holder = console.Holder(lambda *args: told.append(args))
    returned: list[bool] = []
    thread = threading.Thread(target=lambda: returned.append(holder(event)))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive(), "the handler returned at once: the process would end mid-drain"
    assert told == [(name, given - console.MARGIN)]
    holder.released.set()
    thread.join(10)
    assert returned == [True]


def test_a_close_is_held_no_longer_than_windows_gives(monkeypatch):
    monkeypatch.setitem(console.GIVEN, 2, console.MARGIN + 0.2)
    started = time.monotonic()
    assert console.Holder()(2) is True
    # Windows' monotonic clock ticks every 15.6 ms, and a timed wait may end a tick early (under
    # Wine: 0.2 measured as just under 0.2).
    tick = time.get_clock_info("monotonic").resolution
    assert 0.2 - tick <= time.monotonic() - started < 5


@pytest.mark.anyio
async def test_a_console_close_drains_within_the_time_left(control_address):
    # A 30 s grace and a 5 s drain delay do not fit in the 4.5 s Windows leaves: the stop takes
    # what is left, but a second to exit, and no drain delay.
    worker = WorkerSettings(grace=30.0)
    async with running(control_address, by_generation(), worker=worker, drain_delay=5.0) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        pool.supervisor._on_interrupt("CTRL_CLOSE_EVENT", 4.5)
        assert await pool.finished() == 0
    stops = [m for w in pool.spawner.spawned for m in w.received if isinstance(m, Stop)]
    assert stops == [Stop(3.5, drain_delay=0.0)] * 2
