"""Unix domain socket transport (Linux, macOS).

The socket lives in a folder only its owner may enter (0700) and is itself 0600, and the server
learns each peer's uid from the kernel (``SO_PEERCRED``, ``getpeereid``), so another user is
refused even where the file permissions were opened up by mistake. A socket file left behind by
a dead supervisor is stale: nothing accepts on it, so it is removed and reused; one a live
supervisor accepts on is refused as in use.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import stat
import struct
import sys
from collections.abc import Callable

from .errors import AddressInUseError, NoServerError

assert sys.platform != "win32"

# sun_path is 108 bytes on Linux and 104 on macOS, including the terminating NUL.
MAX_PATH_BYTES = 103 if sys.platform == "darwin" else 107

#: Connections the kernel queues before the supervisor accepts them (capped by somaxconn):
#: a burst of clients beyond it is refused at connect, and the client retries.
BACKLOG = 1024

ConnectCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]


def _check_length(path: str) -> None:
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise OSError(f"control socket path is too long ({len(path)} > {MAX_PATH_BYTES} bytes): {path}")


def peer(writer: asyncio.StreamWriter) -> tuple[int | None, int | None]:
    """The pid and uid of the process at the other end of a server's Unix socket, as the kernel
    tells them (``None`` where the OS will not say)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None, None
    if hasattr(socket, "SO_PEERCRED"):  # Linux: struct ucred {pid, uid, gid}
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", credentials)
        return (pid or None), uid  # 0: the peer is in a PID namespace this one cannot see
    return _local_peer_pid(sock), _peer_eid(sock)


def _peer_eid(sock: socket.socket) -> int | None:
    try:  # macOS and the BSDs
        libc = ctypes.CDLL(None, use_errno=True)
        uid, gid = ctypes.c_uint32(), ctypes.c_uint32()
        if libc.getpeereid(sock.fileno(), ctypes.byref(uid), ctypes.byref(gid)) == 0:
            return int(uid.value)
    except (OSError, AttributeError):
        pass
    return None


def _local_peer_pid(sock: socket.socket) -> int | None:
    if sys.platform != "darwin":
        return None
    try:  # getsockopt(SOL_LOCAL, LOCAL_PEERPID)
        return int(struct.unpack("i", sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERPID, 4))[0])
    except OSError:
        return None


_SOL_LOCAL, _LOCAL_PEERPID = 0, 2  # <sys/un.h> on macOS


async def open_connection(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    _check_length(path)
    try:
        return await asyncio.open_unix_connection(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NoServerError(f"no supervisor is listening at {path}") from exc


async def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AddressInUseError(f"{path} exists and is not a socket")
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # stale: its supervisor is gone
        return
    writer.close()
    raise AddressInUseError(f"another supervisor is already listening at {path}")


class Server:
    def __init__(self, server: asyncio.AbstractServer, path: str) -> None:
        self._server = server
        self._path = path
        self._inode = os.stat(path).st_ino

    async def aclose(self) -> None:
        # Not wait_closed(): since Python 3.12 it also waits for every accepted connection.
        self._server.close()
        try:
            if os.stat(self._path).st_ino == self._inode:
                os.unlink(self._path)
        except FileNotFoundError:
            pass


def _check_folder(folder: str) -> None:
    """Refuse a folder where someone else could swap our socket for theirs."""
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"control folder {folder} is a symbolic link or not a folder")
    shared_safely = bool(info.st_mode & stat.S_ISVTX)  # like /tmp: nobody replaces another's file
    if info.st_uid != os.getuid() and not shared_safely:
        raise PermissionError(f"control folder {folder} belongs to another user")
    if info.st_mode & 0o022 and not shared_safely:
        raise PermissionError(f"control folder {folder} is writable by other users")


async def start_server(path: str, on_connect: ConnectCallback) -> Server:
    _check_length(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    _check_folder(folder)
    await _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Created 0600 from the start: no moment in which another user could connect.
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
    except OSError as exc:
        sock.close()
        if exc.errno == getattr(os, "EADDRINUSE", 98):
            raise AddressInUseError(f"control address {path} is in use") from exc
        raise
    server = await asyncio.start_unix_server(on_connect, sock=sock, backlog=BACKLOG)
    return Server(server, path)
