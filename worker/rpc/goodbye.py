"""A connection's goodbye that loses no call, HTTP/2 frame by frame (sans-IO, like ``ipc.codec``).

grpcio's ``server.stop(grace)`` sends GOAWAY and stops at once: a call the client sent before it
read the GOAWAY reaches a server that no longer takes calls, and fails CANCELLED (6 and 13 calls
of 16 channels under a reload and two scales, in two of four runs). So the worker says goodbye
itself, first, through the forwarder that carries each connection: at a frame boundary it sends
the client GOAWAY (every stream it has opened will be served: no new ones here) and a PING.
The client answers the PING after it has read the GOAWAY, so once the answer is back every call
it will ever send on this connection has arrived; when those are answered too, the connection
has nothing left and closes. Only then does the server stop.

:class:`Goodbye` follows both directions' frames (9-byte headers; only PINGs are read whole),
keeps the set of open streams, puts GOAWAY and PING into what goes to the client, and takes the
PING's answer out of what goes to the server, which never sent that PING.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, PING = 0x0, 0x1, 0x3, 0x6
END_STREAM = ACK = 0x1
HEADER = struct.Struct(">I B I")  # 24-bit length in the first word, with the type
#: Our PING's payload: its answer is recognised by it.
OPAQUE = b"goodbye!"
MAX_STREAM = 2**31 - 1


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


#: GOAWAY, NO_ERROR, every stream opened so far to be served; then our PING.
GOODBYE = frame(0x7, 0, 0, struct.pack(">II", MAX_STREAM, 0)) + frame(PING, 0, 0, OPAQUE)

#: Told of each frame (type, flags, stream, payload: a PING's, else None); False drops it.
OnFrame = Callable[[int, int, int, bytes | None], bool]


class _Frames:
    """One direction's bytes, frame by frame: each header seen as it passes, PINGs held whole."""

    def __init__(self, on_frame: OnFrame, skip: int = 0) -> None:
        self._on_frame = on_frame
        self._skip = skip  # the client's connection preface, which is no frame
        self._held = b""
        self._payload = 0  # bytes of the current frame's payload still to pass
        self.frames = 0

    @property
    def between_frames(self) -> bool:
        return not (self._skip or self._held or self._payload)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        view = memoryview(data)
        if self._skip:
            taken = min(self._skip, len(view))
            out += view[:taken]
            self._skip -= taken
            view = view[taken:]
        while view:
            if self._payload:
                taken = min(self._payload, len(view))
                out += view[:taken]
                self._payload -= taken
                view = view[taken:]
                continue
            need = 9 - len(self._held)
            if need > 0:
                self._held += view[:need]
                view = view[need:]
                if len(self._held) < 9:
                    break
            word, flags, stream = HEADER.unpack(self._held[:9])
            length, kind, stream = word >> 8, word & 0xFF, stream & MAX_STREAM
            if kind == PING:
                need = 9 + length - len(self._held)
                self._held += view[:need]
                view = view[need:]
                if len(self._held) < 9 + length:
                    break
                if self._on_frame(kind, flags, stream, self._held[9:]):
                    out += self._held
            else:
                self._on_frame(kind, flags, stream, None)
                out += self._held
                self._payload = length
            self._held = b""
            self.frames += 1
        return bytes(out)


class Goodbye:
    """One gRPC connection seen from its forwarder: its open streams, and its goodbye."""

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.asked = False  # a goodbye is wanted
        self.sent = False  # GOAWAY and PING went out
        self.answered = False  # the client answered the PING: it opens no more streams here
        self._up = _Frames(self._from_client, skip=len(PREFACE))
        self._down = _Frames(self._from_server)

    @property
    def done(self) -> bool:
        """Nothing left to serve: the connection may close."""
        return self.answered and not self.open

    def from_client(self, data: bytes) -> bytes:
        """What of ``data`` goes on to the server."""
        return self._up.feed(data)

    def from_server(self, data: bytes) -> bytes:
        """What goes on to the client for ``data``: the goodbye put in, once asked, at the first
        frame boundary after the server's first frame (its SETTINGS: the client's first)."""
        out = self._down.feed(data)
        return out + self._goodbye() if self.asked else out

    def ask(self) -> bytes:
        """Ask for the goodbye: what to send the client now (nothing when mid-frame, or before
        the server has spoken; then it goes out with the server's next bytes)."""
        self.asked = True
        return self._goodbye()

    def _goodbye(self) -> bytes:
        if self.sent or not self._down.frames or not self._down.between_frames:
            return b""
        self.sent = True
        return GOODBYE

    def _from_client(self, kind: int, flags: int, stream: int, payload: bytes | None) -> bool:
        if kind == HEADERS and stream % 2 == 1:
            self.open.add(stream)
        elif kind == RST_STREAM:
            self.open.discard(stream)
        elif kind == PING and flags & ACK and payload == OPAQUE:
            self.answered = True
            return False  # the server never sent this PING
        return True

    def _from_server(self, kind: int, flags: int, stream: int, payload: bytes | None) -> bool:
        if kind == RST_STREAM or (kind in (DATA, HEADERS) and flags & END_STREAM):
            self.open.discard(stream)
        return True
