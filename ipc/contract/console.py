"""A Windows console's close, log-off and shutdown, outlasted long enough to drain.

Every process attached to a console gets ``CTRL_CLOSE_EVENT`` when its window closes
(``CTRL_LOGOFF_EVENT``, ``CTRL_SHUTDOWN_EVENT`` as the session ends), the supervisor and its
workers alike, and by default it ends at once, cutting off the requests in flight. A handler
given to ``SetConsoleCtrlHandler`` may hold the process up for a time the system gives
(:data:`GIVEN`) before it ends it regardless; once the handler returns, the process ends at
once. So the handler reports the event (the supervisor stops the pool within what is left)
and then blocks until that time is nearly up: the process's own exit, once its drain is done,
comes first and ends it with its own exit code. Ctrl+C and Ctrl+Break are left to Python's
own handler (``signal``).
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 2, 5, 6
#: Seconds Windows gives a console process after each event (SetConsoleCtrlHandler's documentation).
GIVEN = {CTRL_CLOSE_EVENT: 5.0, CTRL_LOGOFF_EVENT: 20.0, CTRL_SHUTDOWN_EVENT: 20.0}
NAMES = {CTRL_CLOSE_EVENT: "CTRL_CLOSE_EVENT", CTRL_LOGOFF_EVENT: "CTRL_LOGOFF_EVENT",
         CTRL_SHUTDOWN_EVENT: "CTRL_SHUTDOWN_EVENT"}  # fmt: skip
#: Returned this long before the system's time is up, rather than be cut off mid-way.
MARGIN = 0.5


class Holder:
    """The handler's body, callable without a console (tests call it with an event code):
    ``on_close(name, within)`` is told of the event and of the seconds left, then the call
    blocks until ``released`` or until those seconds are nearly up."""

    def __init__(self, on_close: Callable[[str, float], None] | None = None) -> None:
        self.on_close = on_close
        self.released = threading.Event()

    def __call__(self, event: int) -> bool:
        given = GIVEN.get(event)
        if given is None:
            return False  # Ctrl+C, Ctrl+Break: the next handler's (Python's)
        within = given - MARGIN
        if self.on_close is not None:
            self.on_close(NAMES[event], within)
        self.released.wait(within)
        return True


@contextmanager
def held(on_close: Callable[[str, float], None] | None = None) -> Iterator[Holder]:
    """While in the block, a console's close (log-off, shutdown) waits for this process as
    :class:`Holder` says (Windows; elsewhere nothing happens). On leaving, the handler is
    removed, but one already blocking keeps blocking: the process's exit will end it."""
    holder = Holder(on_close)
    if sys.platform != "win32":
        yield holder
        return
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    routine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)(lambda event: bool(holder(event)))
    kernel32.SetConsoleCtrlHandler.argtypes = (ctypes.c_void_p, wintypes.BOOL)
    installed = kernel32.SetConsoleCtrlHandler(routine, True)
    try:
        yield holder
    finally:
        if installed:
            kernel32.SetConsoleCtrlHandler(routine, False)
