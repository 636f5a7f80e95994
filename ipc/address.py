"""Where a supervisor's control endpoint lives unless ``--control`` says otherwise.

One endpoint per user and ``--name``, so two users (or two named pools of one user) never
collide:

- POSIX: a Unix domain socket ``<runtime dir>/inference-supervisor/<name>.sock``, where the
  runtime dir is ``$XDG_RUNTIME_DIR`` when set, else ``<tmp>/inference-supervisor-<uid>``.
- Windows: a named pipe ``\\\\.\\pipe\\inference-supervisor-<user>-<name>``.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
import tempfile

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """Return ``name`` if it can name a pool, else raise ``ValueError``."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def default_address(name: str = "default") -> str:
    """The control address of the pool called ``name`` for the current user."""
    check_name(name)
    if sys.platform == "win32":
        user = re.sub(r"[^A-Za-z0-9._-]", "_", _user())
        return rf"\\.\pipe\inference-supervisor-{user}-{name}"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        folder = os.path.join(runtime, "inference-supervisor")
    else:
        folder = os.path.join(tempfile.gettempdir(), f"inference-supervisor-{os.getuid()}")
    return os.path.join(folder, f"{name}.sock")


def _user() -> str:
    """Who the pool belongs to, the same in every process of this user: the login name, else
    (a service account with none) the user's SID on Windows, the uid elsewhere."""
    try:
        return getpass.getuser()
    except Exception:
        if sys.platform == "win32":
            from ._winsecurity import current_user_sid

            return current_user_sid()
        return str(os.getuid())
