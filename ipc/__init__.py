"""The control protocol between a supervisor, its workers and its command-line clients.

Layers, bottom up; each imports only the ones above it in this list:

- ``contract``: what both sides agree on beyond the wire (settings, model formats, the
  repository layout, launch options, log lines); a sub-package that imports nothing else of ipc.
- ``errors``: the exception tree.
- ``wire``: how a frozen dataclass travels as a msgpack map, every field checked on arrival.
- ``status``: the record of a worker that replies about workers carry (``WorkerStatus``).
- ``messages``: one frozen dataclass per message kind, and the tag table that decodes them.
- ``codec``: sans-IO framing (a 4-byte big-endian length, then a msgpack map). Bytes in,
  messages out; no sockets, no clock.
- ``handshake``: the protocol version and the first exchange: mutual proof of the pool's key.
- ``keys``: the pool's per-run key, in an owner-only file.
- ``address``: where a supervisor's control endpoint lives by default.
- ``transport``: byte streams over a Unix domain socket (``_unix``, POSIX) or a named pipe
  (``_windows``, ``_winsecurity``), chosen per platform, and ``Connection``, which speaks
  messages over one of them; ``memory`` is an in-process pair of connections, for tests.

This package imports neither ``supervisor`` nor ``worker``: both import it.
"""

from __future__ import annotations

#: The version of the whole distribution (inference-supervisor): both sides of the protocol
#: read it from here, and so does the package's metadata.
__version__ = "0.1.0"

from .address import default_address
from .codec import FrameDecoder, encode
from .errors import (
    AddressInUseError,
    AuthenticationError,
    ConnectionClosedError,
    FrameTooLargeError,
    IPCError,
    KeyMissingError,
    MalformedFrameError,
    NoServerError,
    ProtocolError,
    RefusedError,
    UnknownMessageError,
    VersionMismatchError,
)
from .handshake import PROTOCOL_VERSION
from .messages import Message
from .transport import Connection, Listener, connect, listen

__all__ = [
    "PROTOCOL_VERSION",
    "AddressInUseError",
    "AuthenticationError",
    "Connection",
    "ConnectionClosedError",
    "FrameDecoder",
    "FrameTooLargeError",
    "IPCError",
    "KeyMissingError",
    "Listener",
    "MalformedFrameError",
    "Message",
    "NoServerError",
    "ProtocolError",
    "RefusedError",
    "UnknownMessageError",
    "VersionMismatchError",
    "connect",
    "default_address",
    "encode",
    "listen",
]
