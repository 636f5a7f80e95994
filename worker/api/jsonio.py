"""JSON in and out of the API, with orjson; a large body's arrays of numbers left as bytes.

Measured on a 31 MiB V2 request of floats (2 cores): ``json.loads`` holds the GIL for 1.16 s,
orjson for 0.26 s; encoding a numpy output, ``json.dumps(array.tolist())`` takes 0.39 s and
orjson 0.015 s. A parse never lets go of the GIL: its length is how long health checks and every
other request on the worker wait.

Parsed whole, a 60 MiB body of 31 million one-digit values held health for 1.3-1.9 s and took
884-969 MiB (a list of 31 million pointers before numpy saw a value). So past LARGE_BODY,
:func:`loads_large` parses the document with its long arrays of numbers cut out (each becomes a
:class:`Numbers`, the place of its bytes in the body), and a tensor's array is made piece by
piece from them (:meth:`Numbers.pieces`, a few hundred KB of Python values at a time, the GIL let
go between pieces). What else such a body holds becomes Python objects of up to 72 bytes a value
(an empty object in a list), so it may hold at most ``max(MIN_VALUES, size // 36)`` values past
its arrays of numbers: at most twice the body; more is a 413 that says where tensors go instead.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from .errors import HTTPError, bad_request

#: Bodies past this size have their arrays of numbers cut out before they are parsed.
LARGE_BODY = 1024 * 1024
#: The shortest array cut out: a shape, an id's worth of numbers are parsed as they are.
LONG_ARRAY = 4096
#: How much of an array of numbers becomes Python values at once (about 3 ms of parsing).
PIECE = 256 * 1024
#: What one JSON value can cost as a Python object, at most: ``{}`` is a 64-byte dict and an
#: 8-byte pointer in its list; a float is 24 + 8.
VALUE_COST = 72
#: Values any large body may hold past its arrays of numbers (BYTES inputs: 65,536 strings).
MIN_VALUES = 2**17
#: What an array cut out may hold: anything but what a string is made of (its quotes and escapes
#: would change where strings begin and end), mistakes included, which its parse then reports.
_ARRAY_BYTES = np.ones(256, dtype=bool)
_ARRAY_BYTES[[ord(c) for c in '"\\{}']] = False
_SCAN = 256 * 1024  # bytes a numpy pass looks at at once (a few MiB of its arrays)


def loads(data: bytes) -> Any:
    """The JSON document in ``data``; a 400 for anything that is not one."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"malformed JSON: {exc}") from None


def dumps(document: Any) -> bytes:
    """``document`` as compact JSON; numpy arrays become (nested) lists of their values.

    Not-a-number and infinities become ``null``, as JSON has no way to say them: callers that
    must not lose them check first.
    """
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


class Numbers:
    """An array of numbers left in the body: ``data[start:end]`` is ``[ ... ]``, whose values are
    parsed only when a tensor is made of them, and checked by :meth:`check` when none is."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data, self.start, self.end = data, start, end
        self.read = False
        first = start + 1
        while data[first] in b" \t\r\n":
            first += 1
        #: Whether its first element is itself an array.
        self.nested = data[first] == ord("[")
        self._flat = _find(data, b"[", start + 1, end) == -1

    def __len__(self) -> int:
        """Its elements (rows, when nested), counted without parsing them."""
        if not self._flat:
            return sum(len(places) for places in _commas(self.data, self.start, self.end)) + 1
        commas = _count(self.data, b",", self.start, self.end)
        return commas + 1 if commas or self.data[self.start + 1 : self.end - 1].strip(b" \t\r\n") else 0

    def pieces(self) -> Iterator[list[Any]]:
        """Its elements in order, a list of about PIECE bytes of them at a time; a 400 where
        they are not valid JSON, in the words and at the place a parse of the whole would say."""
        self.read = True
        data, begin, end = self.data, self.start + 1, self.end - 1
        commas = _flat_commas(data, begin, end) if self._flat else _commas(data, self.start, self.end)
        for cut in _cuts(commas, begin + PIECE, end):
            # Each piece between a "0," and, but for the last, a ",0": what is wrong at either
            # end of it (a comma too many) is said as a parse of the whole says it.
            last = cut == end
            if last and begin == self.start + 1 and not data[begin:cut].strip(b" \t\r\n"):
                return  # []
            try:
                values = orjson.loads(b"[0," + data[begin:cut] + (b"]" if last else b",0]"))
            except orjson.JSONDecodeError as exc:
                raise bad_request(f"malformed JSON: {_where(exc.msg, data, begin + exc.pos - 3)}") from None
            del values[0]
            if not last:
                values.pop()
            yield values
            begin = cut + 1

    def check(self) -> None:
        """Parse it, for its errors only: a body is valid JSON or refused, whatever is read of it."""
        for _ in self.pieces():
            pass


def loads_large(data: bytes) -> tuple[Any, list[Numbers]]:
    """The JSON document in ``data``, each of its long arrays of numbers a :class:`Numbers`
    (those too, in order); as :func:`loads` for a small body. A 413 for a large one whose other
    values would cost the worker more than twice its size as Python objects."""
    if len(data) <= LARGE_BODY:
        return loads(data), []
    spans = list(_arrays(data))
    if spans:
        # Each array becomes a number no document can be expected to hold, between two newlines:
        # a newline may not be inside a string, so that a "[1,2,...]" inside one makes this parse
        # fail and the whole document is parsed as it is.
        base = (1 << 62) + secrets.randbits(61)
        parts, at = [], 0
        for i, (start, end) in enumerate(spans):
            parts += [data[at:start], b"\n%d\n" % (base + i)]
            at = end
        rest = b"".join([*parts, data[at:]])
        del parts
        _afford(rest, len(data))
        try:
            document = orjson.loads(rest)
        except orjson.JSONDecodeError as exc:
            place = _in_body(rest, exc.pos, spans, base)
            if place is not None:  # a mistake outside the arrays: said of the whole
                raise bad_request(f"malformed JSON: {_where(exc.msg, data, place)}") from None
        else:
            numbers = [Numbers(data, start, end) for start, end in spans]
            return _put(document, base, numbers), numbers
    _afford(data, len(data))
    return loads(data), []


def _in_body(rest: bytes, char: int, spans: list[tuple[int, int]], base: int) -> int | None:
    """Where in the body the character ``char`` of ``rest`` (the body with ``spans`` cut out) is;
    ``None`` when it is in a stand-in, which is then inside a string."""
    at = len(rest[: char * 4].decode("utf-8", "surrogateescape")[:char].encode("utf-8", "surrogateescape"))
    for i, (start, end) in enumerate(spans):
        stand_in = len(b"\n%d\n" % (base + i))
        if at < start:
            return at
        if at < start + stand_in:
            return None
        at += end - start - stand_in
    return at


def _afford(data: bytes, size: int) -> None:
    """A 413 when ``data`` (what is parsed of a body of ``size`` bytes) may hold more values than
    the body can afford as Python objects. Counted from the bytes that start a value (each value
    but the first follows a comma or opens an array or object): an overestimate, never under."""
    values = sum(_count(data, byte, 0, len(data)) for byte in (b",", b"[", b"{")) + 1
    most = max(MIN_VALUES, size // (VALUE_COST // 2))
    if values > most:
        raise HTTPError(
            413,
            f"a JSON body of {size} bytes may hold {most} values outside arrays of numbers, and this one "
            f"has up to {values}: send tensors as arrays of numbers in 'data', or as bytes with the "
            "binary tensor extension (parameters.binary_data_size)",
        )


def _put(document: Any, base: int, numbers: list[Numbers]) -> Any:
    """``document`` with each stand-in number ``base + i`` replaced by ``numbers[i]``."""

    def swap(value: Any) -> Any:
        if type(value) is int and 0 <= value - base < len(numbers):
            return numbers[value - base]
        if isinstance(value, (list, dict)):
            stack.append(value)
        return value

    stack: list[Any] = []
    top = swap(document)
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            node[:] = [swap(value) for value in node]
        else:
            for key, value in node.items():
                node[key] = swap(value)
    return top


def _arrays(data: bytes) -> Iterator[tuple[int, int]]:
    """Where ``data``'s arrays of numbers of LONG_ARRAY bytes or more are: ``[`` to after ``]``.

    Found by numpy _SCAN bytes at a time (the GIL let go between): runs of the bytes such arrays are
    made of, then the first bracket of each and the one that closes it. Some may be inside strings;
    the parse that follows says so."""
    for start, stop in _runs(data):
        at = _find(data, b"[", start, stop)
        while at != -1:
            end = _close(data, at, stop)
            if end == -1:
                break
            if end - at >= LONG_ARRAY:
                yield at, end
            at = _find(data, b"[", end, stop)


def _runs(data: bytes) -> Iterator[tuple[int, int]]:
    run = -1  # where the current run began, -1 outside of one
    for offset in range(0, len(data), _SCAN):
        chunk = np.frombuffer(data, np.uint8, count=min(_SCAN, len(data) - offset), offset=offset)
        inside = _ARRAY_BYTES[chunk]
        edges = np.flatnonzero(inside[1:] != inside[:-1]) + (offset + 1)
        if (run != -1) != bool(inside[0]):
            edges = np.concatenate(([offset], edges))
        for edge in edges.tolist():
            if run == -1:
                run = edge
            else:
                if edge - run >= LONG_ARRAY:
                    yield run, edge
                run = -1
    if run != -1 and len(data) - run >= LONG_ARRAY:
        yield run, len(data)


def _close(data: bytes, start: int, stop: int) -> int:
    """After the ``]`` that closes the ``[`` at ``start``, if it is before ``stop``; else -1."""
    end = _find(data, b"]", start, stop)
    if end == -1:
        return -1
    if _find(data, b"[", start + 1, end) == -1:
        return end + 1
    depth = 0
    for offset in range(start, stop, _SCAN):
        levels = _levels(data, offset, min(_SCAN, stop - offset), depth)
        closed = np.flatnonzero(levels == 0)
        if len(closed):
            return offset + int(closed[0]) + 1
        depth = int(levels[-1])
    return -1


def _levels(data: bytes, offset: int, count: int, depth: int) -> np.ndarray:
    """How deep in brackets each of ``count`` bytes from ``offset`` is, from ``depth`` before them."""
    chunk = np.frombuffer(data, np.uint8, count=count, offset=offset)
    steps = (chunk == ord("[")).astype(np.int32)
    steps -= chunk == ord("]")
    levels = np.cumsum(steps, dtype=np.int32)
    levels += depth
    return levels


def _commas(data: bytes, start: int, end: int) -> Iterator[np.ndarray]:
    """The commas between the elements of the array ``data[start:end]``, an array of their
    places _SCAN bytes of the body at a time."""
    depth = 0
    for offset in range(start, end, _SCAN):
        chunk = np.frombuffer(data, np.uint8, count=min(_SCAN, end - offset), offset=offset)
        levels = _levels(data, offset, len(chunk), depth)
        yield np.flatnonzero((chunk == ord(",")) & (levels == 1)) + offset
        depth = int(levels[-1])


def _cuts(commas: Iterator[np.ndarray], after: int, end: int) -> Iterator[int]:
    """Of ``commas``, the first at or past ``after`` and each one PIECE bytes past the one
    before; then ``end``."""
    for places in commas:
        for at in places[places >= after].tolist():
            if at >= after:
                yield at
                after = at + PIECE
    yield end


def _flat_commas(data: bytes, begin: int, end: int) -> Iterator[np.ndarray]:
    """The commas of a flat array, those PIECE bytes apart and a few more (what _cuts needs)."""
    at = data.find(b",", begin + PIECE, end)
    while at != -1:
        yield np.array([at])
        at = data.find(b",", at + PIECE, end)


def _find(data: bytes, byte: bytes, start: int, end: int) -> int:
    """``data.find(byte, start, end)``, _SCAN bytes at a time: one call holds the GIL for all of
    it (a search of 60 MiB 18 ms, a count 186 ms, measured here with a load average of 23)."""
    for offset in range(start, end, _SCAN):
        at = data.find(byte, offset, min(offset + _SCAN, end))
        if at != -1:
            return at
    return -1


def _count(data: bytes, byte: bytes, start: int, end: int) -> int:
    """``data.count(byte, start, end)``, _SCAN bytes at a time (as :func:`_find`)."""
    return sum(data.count(byte, offset, min(offset + _SCAN, end)) for offset in range(start, end, _SCAN))


def _where(message: str, data: bytes, at: int) -> str:
    """orjson's words for an error at byte ``at`` of ``data``: line, column and character."""
    line_start = data.rfind(b"\n", 0, at) + 1
    char = at - _continuations(data, at)
    column = char - (line_start - _continuations(data, line_start)) + 1
    line = data.count(b"\n", 0, at) + 1
    return f"{message}: line {line} column {column} (char {char})"


def _continuations(data: bytes, end: int) -> int:
    """The bytes of ``data[:end]`` that continue a UTF-8 character (not counted as characters)."""
    return int(np.count_nonzero((np.frombuffer(data, np.uint8, count=end) & 0xC0) == 0x80))
