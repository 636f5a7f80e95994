"""``supervisor start`` settings from a TOML file, under the command line's flags.

Keys are the long flags of ``supervisor start`` with ``_`` for ``-``::

    workers = 4
    bind = "0.0.0.0:8080"
    grace = 30
    drain_delay = 5
    max_body_size = 67108864
    models = ["mine=weights/mine.npz", "other=my_package.models:Other"]
    model_dirs = ["models"]

Relative paths are relative to the file's folder. A flag on the command line wins over the
file; the file wins over the defaults.
"""

from __future__ import annotations

import os
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(Exception):
    """The file is unreadable or holds something wrong; the message is for the user."""


#: Key -> (type, description) of every setting a file may hold.
KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "workers": (int, "a whole number"),
    "bind": (str, "a string HOST:PORT"),
    "grace": ((int, float), "a number of seconds"),
    "drain_delay": ((int, float), "a number of seconds"),
    "ready_timeout": ((int, float), "a number of seconds"),
    "max_body_size": (int, "a whole number of bytes"),
    "name": (str, "a string"),
    "control": (str, "a string"),
    "models": (list, "a list of NAME=SOURCE strings"),
    "model_dirs": (list, "a list of folders"),
}


def load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
    base = os.path.dirname(os.path.abspath(path))
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"config {path}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})")
        kind, description = KEYS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"config {path}: {key} must be {description}")
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise ConfigError(f"config {path}: {key} must be {description}")
    if "model_dirs" in data:
        data["model_dirs"] = [os.path.join(base, folder) for folder in data["model_dirs"]]
    if "models" in data:
        data["models"] = [_relative_to(base, spec) for spec in data["models"]]
    return data


def _relative_to(base: str, spec: str) -> str:
    name, sep, source = spec.partition("=")
    if sep and source.endswith(".npz") and not os.path.isabs(source):
        return f"{name}={os.path.join(base, source)}"
    return spec
