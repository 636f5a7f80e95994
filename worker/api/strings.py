"""BYTES tensors: the protocol's strings, as object arrays of ``bytes``.

In JSON a BYTES element is a string (UTF-8); in binary data each element is its length, four
bytes little-endian, then its bytes (Triton's binary tensor extension). Inside the worker a
BYTES tensor is an object array of ``bytes``; a model may answer ``str`` elements (or a numpy
string array), encoded as UTF-8 on the way out. KServe V1 has no binary form: there, as in
TensorFlow Serving's REST API, binary elements travel as ``{"b64": "<base64>"}``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence

import numpy as np

from .errors import HTTPError, bad_request

_LENGTH = struct.Struct("<I")


def from_json(values: Sequence[object], where: str) -> np.ndarray:
    """A flat object array of ``bytes`` from JSON strings (each checked to be one)."""
    array = np.empty(len(values), dtype=object)
    try:
        array[:] = [value.encode() for value in values]  # type: ignore[attr-defined]
    except AttributeError:
        wrong = next(value for value in values if not isinstance(value, str))
        name = "null" if wrong is None else type(wrong).__name__
        raise bad_request(f"{where}: BYTES data must be strings, not {name}") from None
    return array


def from_v1(values: Sequence[object], where: str) -> np.ndarray:
    """A flat object array of ``bytes`` from V1 instances: strings, numbers (as Python writes
    them, ``repr``: KServe's clients send a row such as ``["red", 2.5]`` as it is) and
    ``{"b64": "..."}`` objects."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if isinstance(value, str):
            array[i] = value.encode()
        elif type(value) in (int, float):
            array[i] = repr(value).encode()
        elif isinstance(value, dict) and value.keys() == {"b64"} and isinstance(value["b64"], str):
            try:
                array[i] = base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise bad_request(f"{where}: element {i} is not valid base64") from None
        else:
            name = "null" if value is None else type(value).__name__
            raise bad_request(f'{where}: BYTES instances must be strings, numbers or {{"b64": "..."}}, not {name}')
    return array


def to_v1(elements: list[bytes]) -> list[object]:
    """Elements for a V1 answer: strings where they are UTF-8, else ``{"b64": "..."}``."""
    out: list[object] = []
    for element in elements:
        try:
            out.append(element.decode())
        except UnicodeDecodeError:
            out.append({"b64": base64.b64encode(element).decode("ascii")})
    return out


def from_binary(blob: bytes | memoryview, count: int, where: str) -> np.ndarray:
    """A flat object array of ``count`` elements from their binary form, which must fill
    ``blob`` exactly."""
    view = memoryview(blob)
    if count * _LENGTH.size > len(view):
        raise bad_request(f"{where}: {len(view)} bytes cannot hold {count} BYTES elements")
    array = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + _LENGTH.size > len(view):
            raise bad_request(f"{where}: the binary data ends within element {i} of {count}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(view):
            raise bad_request(f"{where}: element {i} claims {length} bytes; {len(view) - offset} are left")
        array[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise bad_request(f"{where}: {len(view) - offset} bytes of binary data follow the last of {count} elements")
    return array


def as_bytes(array: np.ndarray, model: str, output: str) -> list[bytes]:
    """Each element of a model's BYTES output as ``bytes``, in C order: ``bytes`` as they are,
    ``str`` (and numpy's strings) as UTF-8; a 500 for anything else."""
    out: list[bytes] = []
    for value in array.ravel().tolist():
        if isinstance(value, bytes):
            out.append(value)
        elif isinstance(value, str):
            out.append(value.encode("utf-8", "surrogatepass"))
        else:
            kind = type(value).__name__
            raise HTTPError(
                500, f"model {model!r} returned a value of type {kind} in BYTES output {output!r}, not bytes or str"
            )
    return out


def to_binary(elements: list[bytes]) -> bytes:
    """Elements in the binary tensor extension's form."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def to_json(elements: list[bytes], model: str, output: str) -> list[str]:
    """Elements as JSON strings; a 500 for bytes that are not UTF-8 (JSON cannot carry them)."""
    try:
        return [element.decode() for element in elements]
    except UnicodeDecodeError:
        raise HTTPError(
            500,
            f"model {model!r} returned bytes in {output!r} that are not UTF-8, which JSON cannot carry; "
            "ask for binary outputs",
        ) from None
