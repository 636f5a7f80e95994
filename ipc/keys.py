"""The pool's key: 32 random bytes per run, in a file only the pool's user can read.

The supervisor makes it when it starts, once it owns the control address, and removes it when
it stops. Workers and command-line clients read it from the file, so it never appears on a
command line or in an environment that other users can see. Where the file lives:

- POSIX: beside the control socket, ``<socket>.key``, mode 0600 (the default socket's folder is
  itself 0700).
- Windows: ``%LOCALAPPDATA%\\inference-supervisor\\<pipe name>.key``, in the user's profile,
  which only that user (and the system) can read.

A reader checks that the file belongs to it: one another user planted would not be trusted.
"""

from __future__ import annotations

import os
import re
import secrets
import sys

from .errors import KeyMissingError

KEY_SIZE = 32


def key_path(address: str) -> str:
    """Where the key of the pool at control ``address`` lives."""
    if sys.platform == "win32":
        profile = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
        name = re.sub(r"[^A-Za-z0-9._-]", "_", address.removeprefix("\\\\.\\pipe\\"))
        return os.path.join(profile, "inference-supervisor", f"{name}.key")
    return f"{address}.key"


def create_key(address: str) -> bytes:
    """A new key for the pool at ``address``, written (atomically, owner-only) where readers look."""
    key = secrets.token_bytes(KEY_SIZE)
    path = key_path(address)
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(descriptor, "wb") as f:
            f.write(key)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return key


def read_key(address: str) -> bytes:
    """The key of the pool at ``address``; :class:`KeyMissingError` if there is none of ours."""
    path = key_path(address)
    try:
        with open(path, "rb") as f:
            if sys.platform != "win32":
                info = os.fstat(f.fileno())
                if info.st_uid != os.getuid() or info.st_mode & 0o077:
                    raise KeyMissingError(f"{path} is not this user's own, owner-only key file: not trusted")
            key = f.read(KEY_SIZE + 1)
    except FileNotFoundError:
        raise KeyMissingError(f"no key file {path}: no supervisor of this user runs at {address}") from None
    except OSError as exc:
        raise KeyMissingError(f"cannot read the key file {path}: {exc.strerror or exc}") from exc
    if len(key) != KEY_SIZE:
        raise KeyMissingError(f"{path} is not a key file")
    return key


def remove_key(address: str, key: bytes) -> None:
    """Remove the key file if it still holds ``key`` (a later supervisor may have replaced it)."""
    path = key_path(address)
    try:
        with open(path, "rb") as f:
            if f.read() != key:
                return
        os.unlink(path)
    except OSError:
        pass
