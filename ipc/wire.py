"""How a frozen dataclass travels: as a msgpack-ready map, every field checked on arrival.

A record goes out as ``{field: value, ...}``, nested records and lists of them as maps and
lists. Coming back, :func:`build` checks every field against its annotation and, for a declared
setting, against its bounds (``ipc.contract.settings``): a hostile or buggy peer gets a
:class:`~ipc.errors.MalformedFrameError`, never a crash deep inside a handler. Only plain data
is taken (no msgpack extension types such as Timestamp); unknown extra fields are ignored.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar, Union

from .contract import settings
from .errors import MalformedFrameError


def to_wire(record: Any) -> dict[str, Any]:
    """The msgpack-ready map of the dataclass instance ``record``."""
    return {field.name: _to_wire(getattr(record, field.name)) for field in dataclasses.fields(record)}


def _to_wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(value)
    if isinstance(value, list):
        return [_to_wire(item) for item in value]
    return value


R = TypeVar("R")


def build(cls: type[R], wire: dict[Any, Any], where: str) -> R:
    """An instance of the dataclass ``cls`` from its map, every field checked."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in wire:
            value = wire[field.name]
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            raise MalformedFrameError(f"{where}: missing field {field.name!r}")
        hint = _hints(cls)[field.name]
        value = _convert(value, hint, f"{where}: field {field.name!r}")
        try:
            values[field.name] = settings.check(field, hint, value)
        except ValueError as exc:
            raise MalformedFrameError(f"{where}: field {field.name!r} {exc}") from None
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


def _convert(value: object, hint: Any, where: str) -> Any:
    """``value`` (as msgpack decoded it) as the annotation ``hint`` wants it, or a protocol error."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise MalformedFrameError(f"{where} must be a map, not {type(value).__name__}")
        return build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise MalformedFrameError(f"{where} must be a list, not {type(value).__name__}")
        return [_convert(v, item, where) for v in value]
    if _conforms(value, hint):
        if isinstance(value, float) and not math.isfinite(value):
            # No field of this protocol means anything by NaN or infinity.
            raise MalformedFrameError(f"{where} must be a finite number, not {value}")
        return value
    raise MalformedFrameError(f"{where} has a value of type {type(value).__name__}")


def _conforms(value: object, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (a plain, non-record type)."""
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
