"""Every message of the control protocol, one frozen dataclass per kind.

A message travels as a msgpack map: ``{"kind": <tag>, <field>: <value>, ...}``. The tag table
(:data:`KINDS`) maps tags to classes. Decoding checks every field against its annotation, so a
hostile or buggy peer gets a :class:`~ipc.errors.MalformedFrameError`, never a crash deep inside
a handler. Unknown extra fields are ignored: a newer peer may add optional fields without a
version bump. A new kind of message needs a new tag and, when an older peer must not receive
it, a version check at the handshake.

Who sends what::

    any side               Hello, Welcome, Error
    supervisor -> worker   Configure, Stop, StatsRequest
    worker -> supervisor   Ready, Stopped, StatsReport, PoolStatsRequest
    supervisor -> worker   PoolStatsReply
    client -> supervisor   StatusRequest, StopRequest
    supervisor -> client   StatusReply, StopReply
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, Union

from .errors import MalformedFrameError, UnknownMessageError


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """Base of all messages. Subclasses set ``kind``, their wire tag."""

    kind: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map for this message."""
        wire: dict[str, Any] = {"kind": self.kind}
        for field in dataclasses.fields(self):
            wire[field.name] = getattr(self, field.name)
        return wire


def from_wire(wire: object) -> Message:
    """Build the message a decoded msgpack object stands for, checking every field."""
    if not isinstance(wire, dict):
        raise MalformedFrameError(f"a message must be a map, not {type(wire).__name__}")
    kind = wire.get("kind")
    if not isinstance(kind, str):
        raise MalformedFrameError("a message needs a string 'kind'")
    cls = KINDS.get(kind)
    if cls is None:
        raise UnknownMessageError(f"unknown message kind {kind!r}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in wire:
            value = wire[field.name]
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            raise MalformedFrameError(f"{kind}: missing field {field.name!r}")
        hint = _hints(cls)[field.name]
        if not _conforms(value, hint):
            raise MalformedFrameError(f"{kind}: field {field.name!r} has a value of type {type(value).__name__}")
        values[field.name] = value
    return cls(**values)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


_PLAIN = (type(None), bool, int, float, str, bytes)


def _plain(value: object, depth: int = 0) -> bool:
    """Only the msgpack types that mean data here: no extension objects such as Timestamp."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 32:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _conforms(value: object, hint: Any) -> bool:
    """Whether ``value`` (as msgpack decoded it) fits the annotation ``hint``."""
    if hint is Any:
        return _plain(value)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(_conforms(k, key) and _conforms(v, item) for k, v in value.items())
    return isinstance(value, hint)


# --- handshake -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message of every connection, from the side that connected.

    Its fields never change meaning across protocol versions, so any version can read it.
    ``role`` is ``"worker"`` or ``"client"``; a worker also names its ``worker_id``.
    """

    kind: ClassVar[str] = "hello"
    protocol_version: int
    role: str
    pid: int
    worker_id: int | None = None


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


# --- supervisor <-> worker -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Configure(Message):
    """What a worker needs to serve: the listening socket and its settings.

    On POSIX the socket is inherited and ``listen_fd`` names it; on Windows ``listen_share``
    carries ``socket.share(worker_pid)``.
    """

    kind: ClassVar[str] = "configure"
    settings: dict[str, Any]
    listen_fd: int | None = None
    listen_share: bytes | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Ready(Message):
    """The worker serves HTTP."""

    kind: ClassVar[str] = "ready"
    pid: int
    models: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Stop(Message):
    """Drain and exit: stop accepting, finish in-flight requests within ``grace`` seconds."""

    kind: ClassVar[str] = "stop"
    grace: float


@dataclasses.dataclass(frozen=True, slots=True)
class Stopped(Message):
    """How a worker's drain ended, sent just before it exits.

    ``completed`` requests finished during the drain; ``dropped`` were cut off by the grace
    period.
    """

    kind: ClassVar[str] = "stopped"
    completed: int
    dropped: int
    reason: str = "stop"
    #: Requests answered over the worker's whole life.
    served: int = 0
    #: Final statistics, as in StatsReport, so the pool's totals lose nothing at exit.
    models: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class StatsRequest(Message):
    """Supervisor asks a worker for its current (cumulative) statistics."""

    kind: ClassVar[str] = "stats_request"
    request_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class StatsReport(Message):
    """A worker's cumulative statistics per model; ``request_id`` 0 when unsolicited."""

    kind: ClassVar[str] = "stats_report"
    request_id: int
    models: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatsRequest(Message):
    """A worker asks for the pool's statistics, carrying its own as of now."""

    kind: ClassVar[str] = "pool_stats_request"
    request_id: int
    models: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatsReply(Message):
    """The pool's statistics per model, summed over every worker past and present."""

    kind: ClassVar[str] = "pool_stats_reply"
    request_id: int
    models: dict[str, Any]


# --- client <-> supervisor -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    kind: ClassVar[str] = "status_request"


@dataclasses.dataclass(frozen=True, slots=True)
class StatusReply(Message):
    """The pool as the supervisor sees it; each worker a map with at least pid and state."""

    kind: ClassVar[str] = "status_reply"
    supervisor_pid: int
    url: str
    state: str
    workers: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class StopRequest(Message):
    """Stop the pool; ``grace`` overrides the supervisor's default when given."""

    kind: ClassVar[str] = "stop_request"
    grace: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class StopReply(Message):
    """Sent once every worker has exited: how each one ended."""

    kind: ClassVar[str] = "stop_reply"
    workers: list[dict[str, Any]]
    clean: bool


#: The tag table: every kind this version knows.
KINDS: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (
        Hello, Welcome, Error,
        Configure, Ready, Stop, Stopped,
        StatsRequest, StatsReport, PoolStatsRequest, PoolStatsReply,
        StatusRequest, StatusReply, StopRequest, StopReply,
    )
}  # fmt: skip
