"""The supervisor's own OS interrupts, turned into calls on the event loop.

Ctrl+C (SIGINT), SIGTERM and SIGHUP on POSIX and Ctrl+Break (SIGBREAK) on Windows each call
``on_interrupt(name)`` on the loop; the handler only reports, and the caller decides (the first
asks for a graceful stop, the second forces it). ``loop.add_signal_handler`` raises
``NotImplementedError`` on Windows, so there the plain ``signal.signal`` handler hands the call
to the loop, whose Proactor wakes up for it. A Windows console's close, log-off and shutdown
call ``on_interrupt(name, within)``, ``within`` the seconds left before Windows ends the
process; the console's handler then holds the process up until it exits or that time is
nearly up (``ipc.contract.console``).

SIGHUP drains and stops, as SIGTERM does (gunicorn reloads on it instead): the common SIGHUP is
a terminal closing, and a pool whose terminal is gone should finish what it holds and go, not
start new workers that log to a terminal nobody reads.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ipc.contract import console


@contextmanager
def interrupts_to(on_interrupt: Callable[..., None]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    if sys.platform == "win32":
        names = ("SIGINT", "SIGBREAK")

        def handler(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(on_interrupt, signal.Signals(signum).name)

        def closing(name: str, within: float) -> None:
            loop.call_soon_threadsafe(on_interrupt, name, within)

        previous = {name: signal.signal(getattr(signal, name), handler) for name in names}
        try:
            with console.held(closing):
                yield
        finally:
            for name, old in previous.items():
                signal.signal(getattr(signal, name), old)
    else:
        signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        for signum in signums:
            loop.add_signal_handler(signum, on_interrupt, signum.name)
        try:
            yield
        finally:
            for signum in signums:
                loop.remove_signal_handler(signum)
