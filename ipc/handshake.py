"""The protocol version and the first exchange of every connection.

The connecting side sends :class:`~ipc.messages.Hello`; the server answers
:class:`~ipc.messages.Welcome` or :class:`~ipc.messages.Error` and closes. Authentication (a
per-run secret and an HMAC challenge) will slot in between Hello and Welcome as its own
messages, behind a version bump.
"""

from __future__ import annotations

from .errors import MalformedFrameError, VersionMismatchError
from .messages import Hello

#: 2: typed worker settings in Configure, heartbeats, slot generations in Hello.
PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = frozenset({2})
ROLES = frozenset({"worker", "client"})


def check_hello(hello: Hello) -> None:
    """Raise unless a server of this version can talk to the sender of ``hello``."""
    if hello.protocol_version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise VersionMismatchError(
            f"peer speaks protocol version {hello.protocol_version}; this side speaks {supported}"
        )
    if hello.role not in ROLES:
        raise MalformedFrameError(f"unknown role {hello.role!r}")
    if hello.role == "worker" and (hello.worker_id is None or hello.generation is None):
        raise MalformedFrameError("a worker's Hello must carry its worker_id and generation")
