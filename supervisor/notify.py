"""systemd's notify protocol: the unit knows when the pool is ready, reloading or stopping, and
restarts a supervisor whose event loop stops answering its watchdog.

When systemd starts a ``Type=notify`` service it names a datagram socket in ``NOTIFY_SOCKET``;
each message is one datagram of ``KEY=VALUE`` lines (sd_notify(3)). :func:`messages` is the
policy, clock-free and tested as a table: what to say when the pool's state or its count of ready
workers changes. :func:`follow` watches the pool and tells :class:`Notifier`, which says it (the
Windows service, :mod:`.winservice`, follows the same view); with ``WATCHDOG_USEC`` set it also
sends ``WATCHDOG=1`` from the event loop at half that interval, as systemd advises, so a loop that
is frozen or blocked misses it and systemd restarts the service (``WatchdogSec=``).

The variables are taken out of the environment once read, as sd_notify's ``unset_environment``
does: the workers (and whatever a model starts) do not inherit them, and cannot speak for the
service. Nothing happens without ``NOTIFY_SOCKET``, nor on Windows.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING

import anyio

from .lifecycle import PoolState, State

if TYPE_CHECKING:
    from .pool import Pool

logger = logging.getLogger("supervisor")

#: States in which the pool serves: leaving RELOADING for one of them is being ready again.
SERVING = (PoolState.READY, PoolState.DEGRADED, PoolState.SCALING)


@dataclasses.dataclass(frozen=True)
class View:
    """What systemd is told about: the pool's state and how many of its workers serve."""

    state: PoolState
    ready: int
    workers: int

    @property
    def status(self) -> str:
        return f"{self.state.value}: {self.ready} of {self.workers} workers ready"


def messages(before: View | None, after: View) -> list[str]:
    """The lines to send when the pool goes from ``before`` (None: nothing said yet) to ``after``."""
    was = before.state if before is not None else PoolState.STARTING
    lines = []
    if after.state is not was:
        if after.state in SERVING and was in (PoolState.STARTING, PoolState.RELOADING):
            lines.append("READY=1")
        elif after.state is PoolState.RELOADING:
            lines.append("RELOADING=1")
        elif after.state is PoolState.STOPPING:
            lines.append("STOPPING=1")
    if before is None or after.status != before.status:
        lines.append(f"STATUS={after.status}")
    return lines


def view(pool: Pool) -> View:
    ready = sum(1 for process in pool.processes() if process.state is State.READY)
    return View(pool.state, ready, len(pool.slots))


def _differs(pool: Pool, said: View) -> bool:
    return view(pool) != said


#: Told of each change of the pool's view: what was said before (None: nothing yet), and now.
Tell = Callable[[View | None, View], None]


async def follow(pool: Pool, tell: Tell) -> None:
    """Tell ``tell`` of the pool's view now and on every change of it, until cancelled."""
    said: View | None = None
    while True:
        now = view(pool)
        tell(said, now)
        said = now
        await pool.wait_until(functools.partial(_differs, pool, now))


class Notifier:
    """systemd's end of the protocol for one supervisor: the socket, and how often to ping it."""

    def __init__(self, address: str, watchdog: float | None = None) -> None:
        #: A path, or an abstract address (``@`` in the variable, a NUL byte on the wire).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        #: Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when not asked.
        self.watchdog = watchdog
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier | None:
        """The notifier systemd asked for, if it did; its variables taken out of ``environ``."""
        address = environ.pop("NOTIFY_SOCKET", "")
        usec, pid = environ.pop("WATCHDOG_USEC", ""), environ.pop("WATCHDOG_PID", "")
        if not address or sys.platform == "win32":
            return None
        watchdog = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec) / 2e6
        return cls(address, watchdog)

    def send(self, lines: list[str]) -> None:
        """One datagram; a systemd that is gone or busy is not the pool's problem (logged once)."""
        if not lines:
            return
        if "RELOADING=1" in lines:  # Type=notify-reload needs the moment the reload began
            lines = [*lines, f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"]
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                logger.warning("systemd notify socket %r: %s (not said again)", self.address, exc)
                self._failed = True

    def tell(self, before: View | None, after: View) -> None:
        """Say what changed from ``before`` to ``after`` (a :data:`Tell`)."""
        self.send(messages(before, after))

    async def ping(self) -> None:
        """``WATCHDOG=1`` from the event loop, every ``watchdog`` seconds, until cancelled."""
        assert self.watchdog is not None
        while True:
            self.send(["WATCHDOG=1"])
            await anyio.sleep(self.watchdog)

    def close(self) -> None:
        self.sock.close()
