"""Turns model specs (as the supervisor passes them on) into loaded models.

A spec is one of:

- ``NAME=path/to/weights.npz``: an :class:`~worker.models.mlp.MLP` from a weights file;
- ``NAME=path/to/model.onnx``: an :class:`~worker.models.onnx_model.OnnxModel` (onnxruntime);
- ``NAME=path/to/model.skops`` (``.joblib``, ``.pkl`` with ``allow_pickle``): a scikit-learn
  estimator, :class:`~worker.models.sklearn_model.SklearnModel`;
- ``NAME=package.module:Factory``: any importable callable taking the model name and
  returning a :class:`~worker.models.base.Model` (a class, usually);
and a model repository is a folder of models, one per subfolder (see :mod:`.repository`).

No spec and no repository at all serves the built-in demo model as ``mlp``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable, Sequence

from ipc.contract import formats
from ipc.contract.settings import unservable_name

from . import repository
from .base import Model, ModelError
from .mlp import MLP, demo_model
from .onnx_model import OnnxModel
from .sklearn_model import SklearnModel

logger = logging.getLogger("worker.models")


#: Loads a file of a format: (name, path, allow_pickle, trusted types) -> Model.
Loader = Callable[[str, str, bool, Sequence[str]], Model]


def _npz(name: str, path: str, allow_pickle: bool, trusted: Sequence[str]) -> Model:
    return MLP.from_npz(name, path)


def _onnx(name: str, path: str, allow_pickle: bool, trusted: Sequence[str]) -> Model:
    return OnnxModel(name, path)


#: The loader of every format of ``ipc.contract.formats``, by its name.
LOADERS: dict[str, Loader] = {"npz": _npz, "onnx": _onnx, "skops": SklearnModel, "pickle": SklearnModel}
_unloadable = sorted({format.name for format in formats.FORMATS} - LOADERS.keys())
if _unloadable:
    raise ImportError(f"ipc.contract.formats declares formats no worker loads: {', '.join(_unloadable)}")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``NAME=SOURCE``; raise :class:`ModelError` with a one-line reason if malformed."""
    name, sep, source = spec.partition("=")
    if not sep or not name or not source:
        raise ModelError(f"model spec {spec!r} is not NAME=PATH ({formats.SAFE}) or NAME=module:Factory")
    return name, source


def _from_factory(name: str, target: str) -> Model:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model {name!r}: {target!r} is not package.module:Factory")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ModelError(f"model {name!r}: cannot import {target}: {_first_line(exc)}") from exc
    try:
        model = factory(name)
    except Exception as exc:  # the factory's own failure, whatever it is
        raise ModelError(f"model {name!r}: {target}({name!r}) raised {type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(model, Model):
        raise ModelError(f"model {name!r}: {target} returned {type(model).__name__}, not a Model")
    model.name = name
    return model


def check_name(name: str) -> None:
    """A one-line :class:`ModelError` for a model name no URL can reach."""
    why = unservable_name(name)
    if why:
        raise ModelError(f"model name {name!r} cannot be served: {why}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_one(name: str, source: str, allow_pickle: bool = False, trusted: Sequence[str] = ()) -> Model:
    format = formats.format_of(source)
    if format is not None:
        return LOADERS[format.name](name, source, allow_pickle, trusted)
    if ":" in source and not os.path.exists(source):
        return _from_factory(name, source)
    raise ModelError(f"model {name!r}: {source} is not a model file ({formats.SAFE}), nor module:Factory")


def _load_file(name: str, path: str, version: str, allow_pickle: bool, trusted: Sequence[str]) -> Model:
    """A repository's model file (a ``model.txt`` names a factory) as version ``version``."""
    if os.path.basename(path) == formats.FACTORY_FILE:
        lines = [line.strip() for line in repository.read_text(path).splitlines()]
        targets = [line for line in lines if line and not line.startswith("#")]
        if not targets:
            raise ModelError(f"{path} names no factory: its one line is package.module:Factory")
        model = _from_factory(name, targets[0])
    else:
        model = load_one(name, path, allow_pickle, trusted)
    model.version = version
    return model


def load_models(
    specs: Sequence[str],
    folders: Sequence[str] = (),
    allow_pickle: bool = False,
    trusted: Sequence[str] = (),
    pinned: Sequence[str] = (),
) -> list[Model]:
    """Build and ``load()`` every model the specs and repositories name, in order; the demo
    when there are none. Pickled models only with ``allow_pickle``: loading one runs code;
    ``trusted``: types a .skops file may hold beyond those skops trusts; ``pinned``: the
    repositories' ``NAME/VERSION`` the pool serves, when it pinned them."""
    models: list[Model] = [load_one(*parse_spec(spec), allow_pickle, trusted) for spec in specs]
    load = functools.partial(_load_file, allow_pickle=allow_pickle, trusted=trusted)
    if pinned:
        remaining = set(pinned)
        from_folders = [model for folder in folders for model in repository.read_pinned(folder, load, remaining)]
        if not from_folders:
            raise ModelError(
                f"none of the model versions the pool serves ({', '.join(sorted(pinned))}) is in "
                f"{', '.join(folders)} any more: supervisor reload serves what the folders hold now"
            )
        if remaining:
            # Removed since the pool read the repository: the others are served; a reload
            # makes every worker serve what the folders hold now.
            logger.warning("model versions %s are gone from the repository: answered 503", ", ".join(sorted(remaining)))
    else:
        from_folders = [model for folder in folders for model in repository.read(folder, load)]
    models.extend(from_folders)
    if not models:
        models.append(demo_model())
    seen: set[tuple[str, str]] = set()
    for model in models:
        check_name(model.name)
        if (model.name, model.version) in seen:
            raise ModelError(f"model {model.name!r} version {model.version} is named twice")
        seen.add((model.name, model.version))
        model.load()
    return models
