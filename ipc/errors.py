"""Exceptions of the control channel.

::

    IPCError
    ├── ProtocolError            the peer broke the protocol; the connection is dead
    │   ├── FrameTooLargeError   a length prefix over the limit (refused before buffering)
    │   ├── MalformedFrameError  not msgpack, not a message map, or fields of the wrong type
    │   ├── UnknownMessageError  a well-formed message of a kind this side does not know
    │   └── VersionMismatchError the handshake offered a protocol version we do not speak
    ├── RefusedError             the other side said no (its Error message); .code says why
    │   └── AuthenticationError  a proof of the pool's key failed, either side's
    ├── KeyMissingError          no key file for this control address: no pool of ours there
    ├── ConnectionClosedError    the peer went away (end of stream, reset, broken pipe)
    ├── NoServerError            nothing is listening at the control address
    └── AddressInUseError        another live server owns the control address
"""

from __future__ import annotations


class IPCError(Exception):
    """Root of every error raised by :mod:`ipc`."""


class ProtocolError(IPCError):
    """The peer sent something the protocol does not allow.

    After a protocol error the connection's state is undefined: say why and close it.
    """


class FrameTooLargeError(ProtocolError):
    """A frame's length prefix is over the receiver's limit."""


class MalformedFrameError(ProtocolError):
    """A frame that is not a valid message: bad msgpack, not a map, or bad fields."""


class UnknownMessageError(ProtocolError):
    """A message whose kind this side does not know."""


class VersionMismatchError(ProtocolError):
    """The peer speaks a protocol version this side does not."""


class RefusedError(IPCError):
    """The other side answered with an ``Error``: ``code`` is its stable word for why."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class AuthenticationError(RefusedError):
    """A proof of the pool's key did not hold: the peer is not of this pool, or not ours."""


class KeyMissingError(IPCError):
    """There is no key file for the control address: no pool of this user runs there."""


class ConnectionClosedError(IPCError):
    """The peer closed the connection, or it broke."""


class NoServerError(IPCError):
    """Nothing listens at the control address."""


class AddressInUseError(IPCError):
    """Another live server already listens at the control address."""
