"""Refused control connections are logged as a flood allows: the rule as a table, then a flood
against a running supervisor."""

from __future__ import annotations

import logging
import os
import re

import anyio
import pytest

import ipc
from ipc import handshake
from ipc.messages import Error, Hello
from supervisor import control
from supervisor.control import Refusals
from supervisor.lifecycle import PoolState

from .fakes import by_generation, running

SUMMARY = re.compile(r"control: refused (\d+) more connections in the last 0.5s")

# (what happens, at what time) -> what is logged: "full" (the refusal with its reason),
# "held" (only counted), or the count a window's summary reports (0: no line).
TABLE = [
    [("refused", 0.0, "full"), ("due", 10.0, 0), ("refused", 11.0, "full")],
    [("refused", 0.0, "full"), ("refused", 1.0, "held"), ("refused", 2.0, "held"), ("due", 10.0, 2)],
    # A flood goes on: the summary opens the next window, whose refusals are counted too.
    [("refused", 0.0, "full"), ("refused", 9.0, "held"), ("due", 10.0, 1), ("refused", 10.5, "held"),
     ("due", 20.0, 1), ("due", 30.0, 0), ("refused", 31.0, "full")],
    # A window that ended with refusals held back waits for its summary before the next full line.
    [("refused", 0.0, "full"), ("refused", 5.0, "held"), ("refused", 12.0, "held"), ("due", 12.0, 2)],
]  # fmt: skip


@pytest.mark.parametrize("steps", TABLE)
def test_the_first_refusal_is_logged_then_one_summary_a_window(steps):
    refusals = Refusals(10.0)
    for what, now, expected in steps:
        if what == "refused":
            assert ("full" if refusals.refused(now) else "held") == expected, (what, now)
        else:
            assert refusals.due(now) == expected, (what, now)


@pytest.mark.anyio
async def test_a_flood_of_refused_connections_logs_one_line_a_window(control_address, caplog, monkeypatch):
    monkeypatch.setattr(control, "REFUSALS_WINDOW", 0.5)
    async with running(control_address, by_generation(), workers=1) as pool:
        await pool.until(lambda: pool.pool.state is PoolState.READY)
        with caplog.at_level(logging.WARNING, logger="supervisor"):
            started = anyio.current_time()
            for _ in range(40):
                async with await ipc.connect(control_address) as connection:
                    await connection.send(Hello(999, "client", os.getpid(), None, None, handshake.new_nonce()))
                    assert isinstance(await connection.receive(), Error)
            took = anyio.current_time() - started

            def lines() -> list[str]:
                return [r.getMessage() for r in caplog.records if "control: refused" in r.getMessage()]

            def counted() -> int:
                return 1 + sum(int(SUMMARY.fullmatch(line).group(1)) for line in lines()[1:])  # type: ignore[union-attr]

            with anyio.fail_after(10):
                while counted() < 40:  # noqa: ASYNC110 (a log record has no event to wait for)
                    await anyio.sleep(0.05)
            await anyio.sleep(1.2)  # two windows more: nothing else to say
    assert lines()[0].startswith("control: refused a connection: peer speaks protocol version 999"), lines()
    assert counted() == 40
    # One line a window: 40 refusals within 0.5 s (Linux) log 2; under Wine they take longer.
    assert len(lines()) <= 2 + took / 0.5, (took, lines())
