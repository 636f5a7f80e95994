"""What a worker has in flight, written where its supervisor can read it after the worker died.

A request that kills its worker (a query of death) leaves no message behind: the process is
gone before it could say anything. So each worker keeps a small record of the requests it is
serving (model, version, request id, body size) in a file its supervisor named, mapped into
memory: noting a request costs a write into the mapping (about a microsecond, no system call),
and the kernel keeps the pages when the process dies. After an abnormal death the supervisor
reads the file: which models' requests were in flight (``supervisor.quarantine``).

The file is a header and :data:`ENTRIES` fixed-size entries; an entry's first byte says whether
it is free, a request in flight, or one inside its model's call (the likely culprit: the others
were being read, decoded or answered). A worker with more requests in flight than entries notes
the first ones only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

MAGIC = b"INFL"
HEADER = struct.Struct("<4sH")
#: busy, body size, model, version, request id (each text truncated to its field)
ENTRY = struct.Struct("<B7xQ64s16s32s")
ENTRIES = 64
SIZE = HEADER.size + ENTRIES * ENTRY.size


#: An entry's first byte: free, a request in flight, one inside its model's call right now.
FREE, IN_FLIGHT, IN_MODEL = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Request:
    model: str
    version: str
    request_id: str
    size: int
    #: It was inside its model's call: the likely culprit of a death (the others were being
    #: read, decoded or answered).
    in_model: bool = False

    def __str__(self) -> str:
        where = ", in the model" if self.in_model else ""
        return f"{self.model!r} version {self.version} request {self.request_id} ({self.size} bytes{where})"


class Record:
    """A worker's side: note each request as it begins and when it ends."""

    def __init__(self, path: str) -> None:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        try:
            os.ftruncate(descriptor, SIZE)
            self._map = mmap.mmap(descriptor, SIZE)
        finally:
            os.close(descriptor)
        HEADER.pack_into(self._map, 0, MAGIC, ENTRIES)
        self._free = list(range(ENTRIES - 1, -1, -1))

    def begin(self, model: str, version: str, request_id: str, size: int) -> int | None:
        """Note a request; the handle to :meth:`end` it with (``None`` when the record is full)."""
        if not self._free:
            return None
        index = self._free.pop()
        offset = HEADER.size + index * ENTRY.size
        ENTRY.pack_into(self._map, offset, FREE, size, _text(model, 64), _text(version, 16), _text(request_id, 32))
        self._map[offset] = IN_FLIGHT  # busy only once whole
        return index

    @contextlib.contextmanager
    def calling(self, index: int | None) -> Iterator[None]:
        """The request noted as ``index`` is inside its model's call for the block."""
        if index is None:
            yield
            return
        offset = HEADER.size + index * ENTRY.size
        self._map[offset] = IN_MODEL
        try:
            yield
        finally:
            self._map[offset] = IN_FLIGHT

    def end(self, index: int | None) -> None:
        if index is not None:
            self._map[HEADER.size + index * ENTRY.size] = FREE
            self._free.append(index)

    @contextlib.contextmanager
    def noted(self, model: str, version: str, request_id: str, size: int) -> Iterator[Callable[[], Any]]:
        """A request noted for the block (:meth:`begin` to :meth:`end`); what it yields marks the
        request as inside its model's call (:meth:`calling`)."""
        index = self.begin(model, version, request_id, size)
        try:
            yield lambda: self.calling(index)
        finally:
            self.end(index)

    def close(self) -> None:
        self._map.close()


def read(path: str) -> list[Request]:
    """The supervisor's side: the requests the record at ``path`` holds as in flight (none if
    there is no such record, or it is not one)."""
    try:
        with open(path, "rb") as f:
            data = f.read(SIZE)
    except OSError:
        return []
    if len(data) < SIZE or HEADER.unpack_from(data)[0] != MAGIC:
        return []
    found = []
    for index in range(ENTRIES):
        busy, size, model, version, request_id = ENTRY.unpack_from(data, HEADER.size + index * ENTRY.size)
        if busy in (IN_FLIGHT, IN_MODEL):
            found.append(Request(_untext(model), _untext(version), _untext(request_id), size, busy == IN_MODEL))
    return found


def _text(text: str, size: int) -> bytes:
    return text.encode("utf-8", "replace")[:size]


def _untext(field: bytes) -> str:
    return field.rstrip(b"\0").decode("utf-8", "replace")
