"""A model repository: ``--model-dir DIR``, one model per subfolder, named after it.

A model's folder holds its file directly (version 1)::

    DIR/iris/model.onnx

or, in Triton's layout, one numbered folder per version, every one served and the highest the
default (what ``/v2/models/iris/infer`` answers; ``/v2/models/iris/versions/1/infer`` asks for
another)::

    DIR/iris/1/model.onnx
    DIR/iris/2/model.onnx

The file is ``model.npz``, ``model.onnx``, ``model.skops`` (``model.joblib``, ``model.pkl``, ``model.pickle`` with
``--allow-pickle``), or a ``model.txt`` whose one line is ``package.module:Factory``. An
optional ``DIR/iris/config.toml`` says what the file cannot, for every version::

    max_batch_size = 64      # from 1 to the model's own
    batch_delay_ms = 2       # dynamic batching for this model, 0 to 1000 (--model-batch-delay wins)
    outputs = ["label"]      # the outputs served, of those the model has (default: all)

Triton's ``config.pbtxt`` is not read. Which folders are which is :mod:`ipc.contract.repository`'s: the
supervisor reads the same layout to pin the versions its workers serve.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable
from typing import Any

from ipc.contract import repository as layout
from ipc.contract.settings import MAX_BATCH_DELAY_MS

from .base import Model, ModelError

CONFIG = "config.toml"

#: Loads one model file: (name, path, version) -> Model.
Load = Callable[[str, str, str], Model]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A model's ``config.toml``: what its file cannot say."""

    max_batch_size: int | None = None
    batch_delay_ms: float | None = None
    outputs: tuple[str, ...] | None = None

    @classmethod
    def read(cls, path: str) -> ModelConfig:
        """The config at ``path``; the default when there is none; a one-line
        :class:`ModelError` naming the file for anything wrong in it."""
        if not os.path.exists(path):
            return cls()
        try:
            raw = tomllib.loads(read_text(path))
        except tomllib.TOMLDecodeError as exc:
            raise ModelError(f"{path}: {exc}") from None
        unknown = sorted(set(raw) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ModelError(f"{path}: unknown keys {unknown}; it takes max_batch_size, batch_delay_ms, outputs")
        size, delay, outputs = raw.get("max_batch_size"), raw.get("batch_delay_ms"), raw.get("outputs")
        if size is not None and (not _integer(size) or size < 1):
            raise ModelError(
                f"{path}: max_batch_size must be an integer >= 1 (batch_delay_ms = 0 joins none), not {size!r}"
            )
        if delay is not None and (not _number(delay) or not 0 <= delay <= MAX_BATCH_DELAY_MS):
            raise ModelError(f"{path}: batch_delay_ms must be a number from 0 to {MAX_BATCH_DELAY_MS:g}, not {delay!r}")
        if outputs is not None and (
            not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs)
        ):
            raise ModelError(f"{path}: outputs must be a non-empty list of output names, not {outputs!r}")
        return cls(size, None if delay is None else float(delay), None if outputs is None else tuple(outputs))

    def apply(self, model: Model, path: str) -> Model:
        """``model`` as configured: its batch size lowered, its outputs chosen."""
        if self.max_batch_size is not None:
            if self.max_batch_size > model.max_batch_size:
                own = f"the most model {model.name!r} takes, {model.max_batch_size}"
                raise ModelError(f"{path}: max_batch_size {self.max_batch_size} is over {own}")
            model.max_batch_size = self.max_batch_size
        if self.outputs is not None:
            by_name = {spec.name: spec for spec in model.outputs}
            unknown = [name for name in self.outputs if name not in by_name]
            if unknown or len(set(self.outputs)) != len(self.outputs):
                raise ModelError(f"{path}: outputs {list(self.outputs)} are not distinct names of {sorted(by_name)}")
            model.outputs = tuple(by_name[name] for name in self.outputs)
        if self.batch_delay_ms is not None:
            if self.batch_delay_ms > 0 and model.max_batch_size <= 0:
                raise ModelError(
                    f"{path}: batch_delay_ms for model {model.name!r}, which cannot batch (max_batch_size 0)"
                )
            model.batch_delay_ms = self.batch_delay_ms
        return model


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return (_integer(value) or isinstance(value, float)) and math.isfinite(value)


def read_text(path: str) -> str:
    """A small text file the user wrote (a byte-order mark, as Windows editors write, dropped); a
    one-line :class:`ModelError` naming it when it cannot be read or is not UTF-8."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8-sig")
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not UTF-8 text") from None


def read(folder: str, load: Load) -> list[Model]:
    """Every model (every version of each) in the repository ``folder``, loaded by ``load``."""
    try:
        found = layout.models(folder)
    except layout.LayoutError as exc:
        raise ModelError(str(exc)) from None
    models: list[Model] = []
    for name, sub, files in found:
        config_path = os.path.join(sub, CONFIG)
        config = ModelConfig.read(config_path)
        models.extend(config.apply(load(name, file, version), config_path) for version, file in files)
    return models


def read_pinned(folder: str, load: Load, remaining: set[str]) -> list[Model]:
    """The versions of ``remaining`` (``NAME/VERSION``, as the pool pinned them) that the
    repository ``folder`` still holds, each taken out of ``remaining``. Only their own folders
    are read: a model added or half-copied since is left for a reload, and a version removed
    since is what stays in ``remaining``."""
    by_name: dict[str, list[tuple[str, str]]] = {}
    for entry in sorted(remaining):
        name, _, version = entry.rpartition("/")
        file = layout.pinned_file(folder, name, version)
        if file is not None:
            by_name.setdefault(name, []).append((version, file))
            remaining.discard(entry)
    models: list[Model] = []
    for name, files in by_name.items():
        config_path = os.path.join(folder, name, CONFIG)
        config = ModelConfig.read(config_path)
        models.extend(config.apply(load(name, file, version), config_path) for version, file in files)
    return models
