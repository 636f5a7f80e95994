"""Reading a ``--config`` TOML file: its keys are the settings' names (``supervisor.settings``).

::

    workers = 4
    bind = "0.0.0.0:8080"
    grace = 30
    drain_delay = 5
    models = ["mine=weights/mine.npz", "other=my_package.models:Other"]
    model_dirs = ["models"]

Relative paths are relative to the file's folder. This module only reads the file; checking
each key against its declaration is ``supervisor.settings``'s.
"""

from __future__ import annotations

import tomllib
from typing import Any


class ConfigError(Exception):
    """The file is unreadable or not TOML; the message is for the user."""


def load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
