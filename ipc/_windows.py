"""Named pipe transport (Windows), on the Proactor event loop's pipe support.

Every instance of the pipe is the owner's alone: an explicit security descriptor grants the
current user and SYSTEM and nobody else (``_winsecurity``), and ``PIPE_REJECT_REMOTE_CLIENTS``
keeps other machines out. The first instance is created with ``FILE_FLAG_FIRST_PIPE_INSTANCE``,
so nobody can squat the name first: a second server on it fails at once with access denied.
"""

from __future__ import annotations

import _winapi
import asyncio
import ctypes
import functools
import sys
from asyncio import windows_events, windows_utils
from collections.abc import Callable
from typing import Any

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


class Server:
    def __init__(self, servers: list[Any]) -> None:
        self._servers = servers

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()


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
    return Server(list(servers))
