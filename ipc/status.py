"""A record that is not a message of its own: what the replies about workers carry.

``StatusReply``, ``StopReply`` and ``OperationReply`` (:mod:`ipc.messages`, which re-exports it)
carry lists of :class:`WorkerStatus`, checked field by field as a message is.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker process as the supervisor sees it: a row of ``status``, a line of ``stop``.

    Not a message of its own: ``StatusReply`` and ``StopReply`` carry lists of them.
    """

    slot: int
    generation: int
    pid: int | None
    state: str
    #: Seconds since it was spawned.
    uptime: float = 0.0
    #: How many times its slot has been refilled after a loss.
    restarts: int = 0
    in_flight: int = 0
    #: Seconds since the supervisor last heard from it; None before it has said anything.
    heartbeat_age: float | None = None
    rss: int = 0
    exit_code: int | None = None
    #: Its drain, once it has reported one: finished, cut off, and answered in all.
    completed: int | None = None
    dropped: int | None = None
    served: int | None = None
    #: Why it failed or was killed, in a few words.
    reason: str | None = None
