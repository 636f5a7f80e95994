"""Named pipe transport (Windows), on the Proactor event loop's pipe support.

Every instance of the pipe is the owner's alone: an explicit security descriptor grants the
current user and SYSTEM and nobody else (``_winsecurity``), and ``PIPE_REJECT_REMOTE_CLIENTS``
keeps other machines out. The first instance is created with ``FILE_FLAG_FIRST_PIPE_INSTANCE``,
so nobody can squat the name first: a second server on it fails at once with access denied.

Before any of that a server claims its address: a lock on ``<name>.lock`` beside the pool's key
file (``keys.key_path``), held for its whole life and dropped by Windows when the server closes
or dies. A second server finds the claim taken and is refused as in use. Neither the flag nor a
look for a live server could say so alone: Wine ignores the flag, and two servers that both look
before either creates its pipe both find the name free (and then write each other's key file).
"""

from __future__ import annotations

import _winapi
import asyncio
import ctypes
import functools
import msvcrt
import os
import sys
from asyncio import windows_events, windows_utils
from collections.abc import Callable
from ctypes import wintypes
from typing import Any

from . import keys
from .errors import AddressInUseError, NoServerError

assert sys.platform == "win32"

from ._winsecurity import OwnerOnly  # noqa: E402  (a Windows module: checked only on Windows)

PIPE_REJECT_REMOTE_CLIENTS = 0x00000008

_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

ConnectCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]


def _loop() -> Any:
    loop = asyncio.get_running_loop()
    if not hasattr(loop, "start_serving_pipe"):
        raise RuntimeError("named pipes need the Proactor event loop (asyncio's default on Windows)")
    return loop


def peer(writer: asyncio.StreamWriter) -> tuple[int | None, int | None]:
    """The pid of the process at the other end of a server's pipe instance; Windows has no uids
    (the pipe's security descriptor keeps other users out)."""
    pipe = writer.get_extra_info("pipe")
    handle = getattr(pipe, "handle", None)
    if handle is None:
        return None, None
    pid = ctypes.c_ulong()
    if not _kernel32.GetNamedPipeClientProcessId(ctypes.c_void_p(handle), ctypes.byref(pid)):
        return None, None
    return int(pid.value), None


async def open_connection(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = _loop()
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    try:
        transport, _ = await loop.create_pipe_connection(lambda: protocol, address)
    except FileNotFoundError as exc:
        raise NoServerError(f"no supervisor is listening at {address}") from exc
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class _Overlapped(ctypes.Structure):
    _fields_ = [
        ("Internal", ctypes.c_void_p),
        ("InternalHigh", ctypes.c_void_p),
        ("Offset", wintypes.DWORD),
        ("OffsetHigh", wintypes.DWORD),
        ("hEvent", wintypes.HANDLE),
    ]


_LOCKFILE_FAIL_IMMEDIATELY = 0x1
_LOCKFILE_EXCLUSIVE_LOCK = 0x2
_ERROR_LOCK_VIOLATION = 33


def _claim(address: str) -> int:
    """Claim ``address`` for this process: a descriptor holding an exclusive lock on the first
    byte of ``<name>.lock`` in the key folder; :func:`_release` (or the end of the process) gives
    it up. (``LockFileEx`` itself: ``msvcrt.locking`` cannot be told apart from other failures
    under Wine, whose refusal carries errno 0.)

    The lock file is never removed: a server could then lock the file just removed while the
    next one creates and locks a new one, both holding "the" claim."""
    path = os.path.splitext(keys.key_path(address))[0] + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_BINARY | os.O_NOINHERIT, 0o600)
    handle = ctypes.c_void_p(msvcrt.get_osfhandle(descriptor))
    flags = _LOCKFILE_EXCLUSIVE_LOCK | _LOCKFILE_FAIL_IMMEDIATELY
    if not _kernel32.LockFileEx(handle, flags, 0, 1, 0, ctypes.byref(_Overlapped())):
        error = ctypes.get_last_error()
        os.close(descriptor)
        if error == _ERROR_LOCK_VIOLATION:
            raise AddressInUseError(f"another supervisor is starting or already running at {address}")
        raise ctypes.WinError(error, f"cannot lock {path}")
    return descriptor


def _release(claim: int) -> None:
    # Unlocked before closing: Windows drops the locks of a closed file "in time", not at once.
    try:
        handle = ctypes.c_void_p(msvcrt.get_osfhandle(claim))
        _kernel32.UnlockFileEx(handle, 0, 1, 0, ctypes.byref(_Overlapped()))
    finally:
        os.close(claim)


class Server:
    def __init__(self, servers: list[Any], claim: int) -> None:
        self._servers = servers
        self._claim: int | None = claim

    async def aclose(self) -> None:
        if self._claim is None:
            return
        try:
            for server in self._servers:
                server.close()
        finally:
            claim, self._claim = self._claim, None
            _release(claim)


async def _probe(address: str) -> None:
    """Refuse an address a live server answers on (Wine does not honour the first-instance flag)."""
    try:
        _, writer = await asyncio.wait_for(open_connection(address), 2.0)
    except (NoServerError, OSError):
        return
    except TimeoutError:  # every instance busy: somebody serves it
        raise AddressInUseError(f"another supervisor is already listening at {address}") from None
    writer.close()
    raise AddressInUseError(f"another supervisor is already listening at {address}")


class _OwnerOnlyPipeServer(windows_events.PipeServer):
    """asyncio's pipe server, each instance created with ``security`` and local clients only."""

    def __init__(self, address: str, security: OwnerOnly) -> None:
        self._security = security
        super().__init__(address)

    def _server_pipe_handle(self, first: bool) -> Any:
        if self.closed():
            return None
        flags = _winapi.PIPE_ACCESS_DUPLEX | _winapi.FILE_FLAG_OVERLAPPED
        if first:
            flags |= _winapi.FILE_FLAG_FIRST_PIPE_INSTANCE
        mode = (
            _winapi.PIPE_TYPE_MESSAGE | _winapi.PIPE_READMODE_MESSAGE | _winapi.PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS
        )
        handle = _winapi.CreateNamedPipe(
            self._address, flags, mode, _winapi.PIPE_UNLIMITED_INSTANCES,
            windows_utils.BUFSIZE, windows_utils.BUFSIZE, _winapi.NMPWAIT_WAIT_FOREVER, self._security.address,
        )  # fmt: skip
        pipe = windows_utils.PipeHandle(handle)
        self._free_instances.add(pipe)
        return pipe


async def start_server(address: str, on_connect: ConnectCallback) -> Server:
    loop = _loop()
    claim = _claim(address)
    try:
        servers = await _serve(loop, address, on_connect)
    except BaseException:
        _release(claim)
        raise
    return Server(servers, claim)


async def _serve(loop: Any, address: str, on_connect: ConnectCallback) -> list[Any]:
    await _probe(address)
    security = OwnerOnly()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader()
        return asyncio.StreamReaderProtocol(reader, on_connect)

    # The loop's start_serving_pipe() names asyncio's PipeServer to make its server, first pipe
    # instance included, and has no way to pass a security descriptor: for that one call (it
    # does not suspend) the name stands for ours.
    original = windows_events.PipeServer
    windows_events.PipeServer = functools.partial(_OwnerOnlyPipeServer, security=security)  # type: ignore[misc]
    try:
        servers = await loop.start_serving_pipe(factory, address)
    except PermissionError as exc:
        raise AddressInUseError(f"another supervisor is already listening at {address}") from exc
    finally:
        windows_events.PipeServer = original  # type: ignore[misc]
    return list(servers)
