"""When the supervisor is PID 1 (a container without an init), it also reaps orphans.

An orphaned process anywhere in the container is re-parented to PID 1, and when it exits it
stays a zombie until PID 1 waits for it: a model that starts helper processes could fill the
process table. The supervisor's own workers are reaped by whoever waits for them (their
exit codes matter); every other dead child is reaped here, once a second.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import anyio
import anyio.to_thread

logger = logging.getLogger("supervisor")

INTERVAL = 1.0


def needed() -> bool:
    return sys.platform.startswith("linux") and os.getpid() == 1


def zombie_children() -> list[int]:
    """This process's children that have exited and not been waited for (Linux: /proc)."""
    me = os.getpid()
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 2 and fields[0] == b"Z" and int(fields[1]) == me:
            zombies.append(int(entry))
    return zombies


def reap(ours: set[int]) -> list[int]:
    """Wait for every dead child not in ``ours`` (it has exited: waiting does not block)."""
    reaped = []
    for pid in zombie_children():
        if pid in ours:
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        reaped.append(pid)
    return reaped


async def reap_orphans(ours: Callable[[], set[int]]) -> None:
    """Reap orphans, once a second, until cancelled; ``ours`` names the children to leave alone.

    The scan reads a file per process in the container: off the event loop, which a busy
    container's thousands of processes would otherwise hold up."""
    while True:
        for pid in await anyio.to_thread.run_sync(reap, ours()):
            logger.debug("reaped orphan %d", pid)
        await anyio.sleep(INTERVAL)
