"""Processes the workers started and left behind: adopted, ended, and reaped (Linux: /proc).

A model's ``load()`` may start helpers; one that detaches (its own session, a double fork)
outlives its worker, and one forked without ``exec`` holds the pool's listening socket, so the
port stays taken after the pool has stopped. On Linux the supervisor makes itself the child
subreaper (``PR_SET_CHILD_SUBREAPER``): an orphan anywhere below its workers is re-parented to
it rather than to PID 1. Its children that are not its workers, and their descendants, are
*strays*; :func:`end_strays` ends them (SIGTERM, SIGKILL :data:`TERM_BOUND` seconds later)
after a worker has exited and when the pool stops. (Windows needs none of this: each worker
and everything it starts is in a kill-on-close Job Object, ``_winjob``; macOS has no subreaper,
see the README.)

A stray, like any orphan, stays a zombie until its new parent waits for it, and so does every
orphan in a container whose PID 1 the supervisor is: :func:`reap_orphans` waits for each dead
child that is not a worker, once a second (the workers are reaped by whoever waits for them:
their exit codes matter).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

import anyio
import anyio.to_thread

logger = logging.getLogger("supervisor")

INTERVAL = 1.0
#: Seconds a stray has to exit after SIGTERM before SIGKILL: a helper that handles SIGTERM
#: (a server closing its sockets) needs milliseconds; the stop must not wait on one that hangs.
#: One that ignores SIGTERM is killed at once: a worker ignores it (only its supervisor may end
#: it), and what a worker starts inherits that, across exec too, so most strays would otherwise
#: cost the whole bound (2 s a worker's exit, measured, before this).
TERM_BOUND = 2.0
PR_SET_CHILD_SUBREAPER = 36
#: This process is its descendants' subreaper (a process-wide fact, as the kernel keeps it).
adopted = False


class Lineage:
    """The workers' pids, as the spawner knows them: ``lock`` is held while one is started and
    recorded, so that whoever looks for strays under it never takes a worker being born for one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.workers: set[int] = set()

    def ours(self) -> set[int]:
        return set(self.workers)


def adopt_orphans() -> bool:
    """Make this process the subreaper of its descendants (Linux 3.4 and later); whether it is."""
    global adopted
    if sys.platform.startswith("linux") and not adopted:
        libc = ctypes.CDLL(None, use_errno=True)
        adopted = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return adopted


def needed() -> bool:
    """Whether dead children other than the workers must be reaped here."""
    return sys.platform.startswith("linux") and (os.getpid() == 1 or adopted)


def processes() -> dict[int, tuple[int, bytes]]:
    """Every process's parent and state (``b"Z"``: a zombie), from one walk of /proc."""
    found = {}
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
        if len(fields) >= 2:
            found[int(entry)] = (int(fields[1]), fields[0])
    return found


def zombie_children() -> list[int]:
    """This process's children that have exited and not been waited for."""
    me = os.getpid()
    return [pid for pid, (parent, state) in processes().items() if parent == me and state == b"Z"]


def strays(ours: set[int]) -> list[int]:
    """This process's live children not in ``ours``, and all their live descendants."""
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, state) in table.items():
        if state != b"Z":
            children.setdefault(parent, []).append(pid)
    found = [pid for pid in children.get(os.getpid(), []) if pid not in ours]
    for pid in found:  # grows as it goes: a breadth-first walk down the tree
        found.extend(children.get(pid, []))
    return found


def ignores_sigterm(pid: int) -> bool:
    """Whether ``pid`` ignores SIGTERM (its ``SigIgn`` mask in /proc), as far as can be told."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigIgn:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


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


def end_strays(lineage: Lineage, bound: float = TERM_BOUND) -> int:
    """End every stray: SIGTERM, then SIGKILL to those left after ``bound``; how many there were.

    Blocking: run it off the event loop. Each round looks again under the lineage's lock (a pid
    freed by a stray may be a new worker's a moment later). Never raises: a process out of file
    descriptors cannot read /proc, and its workers' exits must still be heard (the strays are
    then looked for again after the next one).

    Signals, not messages: a stray is a model's own helper, with no channel to the supervisor
    and no part in the protocol; workers are never ended here (``lineage.ours()`` leaves them
    out)."""
    try:
        return _end_strays(lineage, bound)
    except OSError as exc:
        logger.warning("cannot look for processes the workers left behind: %s", exc)
        return 0


def _end_strays(lineage: Lineage, bound: float) -> int:
    signalled: set[int] = set()
    deadline = time.monotonic() + bound
    while True:
        killing = time.monotonic() > deadline
        with lineage.lock:
            found = strays(lineage.ours())
            for pid in found:
                if killing or pid not in signalled:
                    signalled.add(pid)
                    now = killing or ignores_sigterm(pid)
                    try:
                        os.kill(pid, signal.SIGKILL if now else signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            reap(lineage.ours())
        if not found:
            return len(signalled)
        time.sleep(0.01)


def _reap_under(lineage: Lineage) -> list[int]:
    try:
        with lineage.lock:
            return reap(lineage.ours())
    except OSError as exc:  # out of file descriptors, say: try again in a second
        logger.debug("cannot look for orphans: %s", exc)
        return []


async def reap_orphans(lineage: Lineage) -> None:
    """Reap orphans, once a second, until cancelled; the lineage names the children to leave alone.

    The scan reads a file per process in the container: off the event loop, which a busy
    container's thousands of processes would otherwise hold up."""
    while True:
        for pid in await anyio.to_thread.run_sync(_reap_under, lineage):
            logger.debug("reaped orphan %d", pid)
        await anyio.sleep(INTERVAL)
