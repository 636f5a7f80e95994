"""Every message of the control protocol, one frozen dataclass per kind.

A message travels as a msgpack map: ``{"kind": <tag>, <field>: <value>, ...}``. The tag table
(:data:`KINDS`) maps tags to classes, and :mod:`ipc.wire` checks every field on arrival. A field
may itself be a frozen dataclass (a record such as :class:`~ipc.contract.settings.WorkerSettings`
or :class:`WorkerStatus`), or a list of them: it travels as a map and is checked the same way,
settings against their declared bounds too.

Unknown extra fields are ignored: a newer peer may add optional fields without a version bump.
A new kind of message needs a new tag and, when an older peer must not receive it, a version
check at the handshake.

Who sends what::

    any side               Hello, Challenge, Proof, Welcome, Error (ipc.handshake)
    supervisor -> worker   Configure, Quarantined, Rebalance, Stop, StatsRequest, PoolStatsReply
    worker -> supervisor   Ready, Heartbeat, Stopped, StatsReport, PoolStatsRequest
    client -> supervisor   StatusRequest, StopRequest, ReloadRequest, ScaleRequest, PingRequest
    supervisor -> client   StatusReply, StopReply, Progress, OperationReply, PingReply
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from . import wire
from .contract.settings import WorkerSettings
from .errors import MalformedFrameError, UnknownMessageError
from .status import WorkerStatus as WorkerStatus
from .wire import build


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """Base of all messages. Subclasses set ``kind``, their wire tag."""

    kind: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map for this message."""
        return {"kind": self.kind, **wire.to_wire(self)}


def from_wire(data: object) -> Message:
    """Build the message a decoded msgpack object stands for, checking every field."""
    if not isinstance(data, dict):
        raise MalformedFrameError(f"a message must be a map, not {type(data).__name__}")
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise MalformedFrameError("a message needs a string 'kind'")
    cls = KINDS.get(kind)
    if cls is None:
        raise UnknownMessageError(f"unknown message kind {kind!r}")
    return build(cls, data, kind)


# --- handshake -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message of every connection, from the side that connected.

    Its first three fields never change meaning across protocol versions, so any version can
    read them. ``role`` is ``"worker"`` or ``"client"``; a worker also names its slot
    (``worker_id``) and the ``generation`` of that slot it was spawned as.
    """

    kind: ClassVar[str] = "hello"
    protocol_version: int
    role: str
    pid: int
    worker_id: int | None = None
    generation: int | None = None
    #: Fresh random bytes: the supervisor's proof of the key covers them (ipc.handshake).
    nonce: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class Challenge(Message):
    """The supervisor's answer to a Hello: its own nonce, and its proof that it holds the key."""

    kind: ClassVar[str] = "challenge"
    nonce: bytes
    proof: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Proof(Message):
    """The connecting side's proof that it holds the pool's key."""

    kind: ClassVar[str] = "proof"
    proof: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Welcome(Message):
    """The server's answer to an acceptable Hello."""

    kind: ClassVar[str] = "welcome"
    protocol_version: int
    supervisor_pid: int


@dataclasses.dataclass(frozen=True, slots=True)
class Error(Message):
    """An explicit refusal or failure; ``code`` is a stable word, ``message`` one line."""

    kind: ClassVar[str] = "error"
    code: str
    message: str

    #: The codes this version sends.
    PROTOCOL: ClassVar[str] = "protocol"
    #: Another user, or no proof of the pool's key.
    FORBIDDEN: ClassVar[str] = "forbidden"
    TIMEOUT: ClassVar[str] = "timeout"
    BAD_REQUEST: ClassVar[str] = "bad_request"
    UNKNOWN_WORKER: ClassVar[str] = "unknown_worker"
    #: A worker joining a pool that has begun to stop: it exits without serving.
    STOPPING: ClassVar[str] = "stopping"
    MODEL_LOAD: ClassVar[str] = "model_load"


# --- supervisor <-> worker -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Configure(Message):
    """What a worker needs to serve: the listening socket and its settings.

    On POSIX the socket is inherited and ``listen_fd`` names it; on Windows ``listen_share``
    carries ``socket.share(worker_pid)``. ``inflight`` names the file where it notes the
    requests it has in flight (``ipc.contract.inflight``). The pool's gRPC socket, when it
    serves gRPC (``--grpc-bind``), comes as the listening socket does, in ``grpc_fd`` or
    ``grpc_share``.
    """

    kind: ClassVar[str] = "configure"
    settings: WorkerSettings
    listen_fd: int | None = None
    listen_share: bytes | None = None
    inflight: str | None = None
    grpc_fd: int | None = None
    grpc_share: bytes | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Quarantined(Message):
    """The model versions (NAME/VERSION) a worker answers 503 for, each with the reason: all of
    them, replacing what it was told before (none: serve every model again)."""

    kind: ClassVar[str] = "quarantined"
    models: dict[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Ready(Message):
    """The worker serves HTTP."""

    kind: ClassVar[str] = "ready"
    pid: int
    models: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    r"""Sent by the worker's event loop every ``heartbeat_interval``: it is alive and how busy.

    ``loop_lag`` is how late, in seconds, the loop woke up to send it; ``rss`` the worker's
    resident memory in bytes (0 where the platform does not say); ``served`` the requests
    answered so far (what --max-requests counts); ``connections`` the HTTP connections it holds,
    and ``rebalanced`` how many connections ``Rebalance`` asked it to close it has closed or given
    up on, in all. The counters that changed go just before it, in ``StatsReport``\ s.
    """

    kind: ClassVar[str] = "heartbeat"
    in_flight: int
    loop_lag: float
    rss: int = 0
    served: int = 0
    connections: int = 0
    rebalanced: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Rebalance(Message):
    """Close ``close`` more of your connections, each after its next response (which says
    ``Connection: close``), so that their clients reconnect to the pool (``supervisor.balance``)."""

    kind: ClassVar[str] = "rebalance"
    close: int


@dataclasses.dataclass(frozen=True, slots=True)
class Stop(Message):
    """Drain and exit: stop accepting, finish in-flight requests within ``grace`` seconds.

    ``drain_delay``: first keep serving this long with readiness at 503, so that load
    balancers stop routing to the pool (a whole pool's stop); 0 for a worker replaced while
    the pool goes on serving.
    """

    kind: ClassVar[str] = "stop"
    grace: float
    drain_delay: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Stopped(Message):
    """How a worker's drain ended, sent just before it exits (its last counters just before this).

    ``completed`` requests finished during the drain; ``dropped`` were cut off by the grace
    period.
    """

    kind: ClassVar[str] = "stopped"
    completed: int
    dropped: int
    reason: str = "stop"
    #: Requests answered over the worker's whole life.
    served: int = 0


#: Counters travel as entries by section: ``{"stats": {"NAME/VERSION": {...}, ...}, "requests":
#: {...}, ...}`` (``worker.api.counters``). However many there are, they go in as many messages as
#: it takes, each holding at most this many bytes of entries: well inside a frame (1 MiB).
COUNTERS_BUDGET = 256 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class StatsRequest(Message):
    """The supervisor asks a worker for the counters that changed since it last sent them."""

    kind: ClassVar[str] = "stats_request"
    request_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class StatsReport(Message):
    """Some of a worker's cumulative counters, by section (at most ``COUNTERS_BUDGET`` bytes).

    ``seq`` grows with every report a worker makes, so the supervisor keeps each entry's newest
    value whatever order reports arrive in. ``request_id`` is 0, except on the last report
    answering a ``StatsRequest``: every counter that had changed by then has been sent.
    """

    kind: ClassVar[str] = "stats_report"
    request_id: int
    counters: dict[str, dict[str, Any]]
    seq: int = 0


#: How long the supervisor waits for each worker's counters when it sums the pool's; a worker
#: that asked for the pool's waits twice this for the answer, then answers with its own.
STATS_WAIT = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatsRequest(Message):
    """A worker asks for the pool's statistics of the model versions ``keys`` (NAME/VERSION;
    none: all), having sent its own changed counters just before."""

    kind: ClassVar[str] = "pool_stats_request"
    request_id: int
    keys: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatsReply(Message):
    """The pool's statistics, summed over every worker past and present, as ``{"stats": {key:
    entry}}``; in as many replies as they take, each but the last with ``more``."""

    kind: ClassVar[str] = "pool_stats_reply"
    request_id: int
    counters: dict[str, dict[str, Any]]
    more: bool = False


# --- client <-> supervisor -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    kind: ClassVar[str] = "status_request"


@dataclasses.dataclass(frozen=True, slots=True)
class StatusReply(Message):
    """The pool as the supervisor sees it: its state and every worker process it has."""

    kind: ClassVar[str] = "status_reply"
    supervisor_pid: int
    url: str
    state: str
    workers: list[WorkerStatus]
    #: The reload or scale under way, in a line, if one is.
    operation: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class StopRequest(Message):
    """Stop the pool; ``grace`` overrides the supervisor's default when given."""

    kind: ClassVar[str] = "stop_request"
    grace: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class StopReply(Message):
    """Sent once every worker has exited: how each one ended."""

    kind: ClassVar[str] = "stop_reply"
    workers: list[WorkerStatus]
    clean: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ReloadRequest(Message):
    """Replace every worker, one slot at a time, each new one ready before its old one drains."""

    kind: ClassVar[str] = "reload_request"


@dataclasses.dataclass(frozen=True, slots=True)
class ScaleRequest(Message):
    """Grow or shrink the pool to ``workers`` slots; shrinking drains the highest slots."""

    kind: ClassVar[str] = "scale_request"
    workers: int


@dataclasses.dataclass(frozen=True, slots=True)
class PingRequest(Message):
    """Is the pool there? The cheapest question: the supervisor answers from what it holds."""

    kind: ClassVar[str] = "ping_request"


@dataclasses.dataclass(frozen=True, slots=True)
class PingReply(Message):
    kind: ClassVar[str] = "ping_reply"
    supervisor_pid: int
    version: str
    url: str
    state: str
    #: Seconds since the supervisor started.
    uptime: float


@dataclasses.dataclass(frozen=True, slots=True)
class Progress(Message):
    """One step of a reload or scale, as it happens: a line for the user."""

    kind: ClassVar[str] = "progress"
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class OperationReply(Message):
    """How a reload or scale ended: ``outcome`` is DONE, FAILED, REFUSED or INTERRUPTED."""

    kind: ClassVar[str] = "operation_reply"
    outcome: str
    message: str
    workers: list[WorkerStatus]

    DONE: ClassVar[str] = "done"
    #: A new worker did not become ready; the old ones still serve.
    FAILED: ClassVar[str] = "failed"
    #: Another reload or scale runs, or the pool is not in a state to do it.
    REFUSED: ClassVar[str] = "refused"
    #: The pool began to stop first.
    INTERRUPTED: ClassVar[str] = "interrupted"


#: The tag table: every kind this version knows.
KINDS: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (
        Hello, Challenge, Proof, Welcome, Error,
        Configure, Quarantined, Rebalance, Ready, Heartbeat, Stop, Stopped,
        StatsRequest, StatsReport, PoolStatsRequest, PoolStatsReply,
        StatusRequest, StatusReply, StopRequest, StopReply,
        ReloadRequest, ScaleRequest, Progress, OperationReply, PingRequest, PingReply,
    )
}  # fmt: skip
