"""Sans-IO framing: bytes in, messages out (h11's shape: no sockets, no clock).

A frame is a 4-byte big-endian unsigned length, then that many bytes of msgpack holding one
message map. The receiver checks the length against its limit *before* buffering the body, so
a hostile prefix costs nothing. After any error the decoder is dead: every later call raises
the same error, and its owner closes the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import msgpack

from .errors import FrameTooLargeError, MalformedFrameError, ProtocolError
from .messages import Message, from_wire

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024


def encode(message: Message) -> bytes:
    """The frame that carries ``message``."""
    payload: bytes = msgpack.packb(message.to_wire(), use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


def split(sections: Mapping[str, Mapping[str, Any]], budget: int) -> Iterator[dict[str, dict[str, Any]]]:
    """The entries of ``sections`` in maps of at most about ``budget`` packed bytes each, so that
    each fits one frame however many entries there are (an entry over ``budget`` goes alone)."""
    chunk: dict[str, dict[str, Any]] = {}
    size = 0
    for section, entries in sections.items():
        for key, value in entries.items():
            entry = len(msgpack.packb(value, use_bin_type=True)) + len(key) + len(section)
            if chunk and size + entry > budget:
                yield chunk
                chunk, size = {}, 0
            chunk.setdefault(section, {})[key] = value
            size += entry
    if chunk:
        yield chunk


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise MalformedFrameError(f"msgpack extension type {code} is not allowed")


class FrameDecoder:
    """Turns a byte stream into messages; feed it bytes, then ask for messages."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer."""
        self._check_alive()
        self._buffer += data

    def next_message(self) -> Message | None:
        """The next complete message, or ``None`` when more bytes are needed."""
        self._check_alive()
        if len(self._buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self._buffer)
        if length > self.max_frame_size:
            self._fail(FrameTooLargeError(f"frame of {length} bytes is over the limit of {self.max_frame_size}"))
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        try:
            wire = msgpack.unpackb(payload, raw=False, strict_map_key=True, ext_hook=_refuse_ext, timestamp=0)
        except ProtocolError as exc:
            self._fail(exc)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            self._fail(MalformedFrameError(f"frame is not valid msgpack: {str(exc) or type(exc).__name__}"))
        try:
            return from_wire(wire)
        except ProtocolError as exc:
            self._fail(exc)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded."""
        return len(self._buffer)

    def _fail(self, error: ProtocolError) -> NoReturn:
        self._error = error
        self._buffer.clear()
        raise error

    def _check_alive(self) -> None:
        if self._error is not None:
            raise self._error
