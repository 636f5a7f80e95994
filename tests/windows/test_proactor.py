"""Facts of the Windows event loop that the design rests on, checked with the Windows
interpreter (the Windows suite runs this file under Wine)."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

if sys.platform != "win32":
    pytest.skip("Windows only: run by tests/windows/run.sh", allow_module_level=True)

from supervisor.interrupts import interrupts_to


def test_the_kserve_failure_reproduces_here():
    """What broke KServe on Windows: the Proactor loop has no add_signal_handler."""
    loop = asyncio.new_event_loop()
    try:
        assert type(loop).__name__ == "ProactorEventLoop"
        with pytest.raises(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, lambda: None)
    finally:
        loop.close()


@pytest.mark.parametrize("name", ["SIGINT", "SIGBREAK"])  # Ctrl+C, Ctrl+Break
def test_interrupts_reach_the_loop_without_add_signal_handler(name):
    async def main():
        got = asyncio.Queue()
        with interrupts_to(got.put_nowait):
            signal.raise_signal(getattr(signal, name))
            return await asyncio.wait_for(got.get(), 10)

    assert asyncio.run(main()) == name


def test_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)

    async def main():
        with interrupts_to(lambda name: None):
            assert signal.getsignal(signal.SIGINT) is not before

    asyncio.run(main())
    assert signal.getsignal(signal.SIGINT) is before
