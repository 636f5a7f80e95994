"""Unix domain socket transport (Linux, macOS).

The socket lives in a folder only its owner may enter (0700) and is itself 0600, and the server
learns each peer's uid from the kernel (``SO_PEERCRED``, ``getpeereid``), so another user is
refused even where the file permissions were opened up by mistake.

A server claims its address before it touches the socket file, with an exclusive ``flock`` on
``<socket>.lock`` held for its whole life; the kernel drops it when the server closes, or dies
however it dies. A second server finds the claim taken and is refused as in use. A socket file
found under the claim is a dead server's leftover, and is replaced. (Asking the socket could not
tell: a live server between ``bind()`` and ``listen()`` refuses connections as a dead one's
file does, and two supervisors started at once removed each other's sockets.)
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
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


def _claim(path: str) -> int:
    """Claim the address ``path`` for this process: a descriptor holding an exclusive lock on
    ``<path>.lock``; closing it (or the end of the process) gives the claim up.

    The lock file is never removed: a server could then lock the file just unlinked while the
    next one creates and locks a new one, both holding "the" claim."""
    lock_path = f"{path}.lock"
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(descriptor)
        if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"{lock_path} is not this user's own lock file")
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise AddressInUseError(f"another supervisor is starting or already running at {path}") from None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _remove_leftover(path: str) -> None:
    """Remove a dead server's socket file; only under the address's claim, which every live
    server holds."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AddressInUseError(f"{path} exists and is not a socket")
    os.unlink(path)


class Server:
    def __init__(self, server: asyncio.AbstractServer, path: str, claim: int) -> None:
        self._server = server
        self._path = path
        self._inode = os.stat(path).st_ino
        self._claim: int | None = claim

    async def aclose(self) -> None:
        if self._claim is None:
            return
        # Not wait_closed(): since Python 3.12 it also waits for every accepted connection.
        self._server.close()
        try:
            if os.stat(self._path).st_ino == self._inode:
                os.unlink(self._path)
        except FileNotFoundError:
            pass
        finally:
            # Last: the next server may take the address only once the socket file is gone.
            claim, self._claim = self._claim, None
            os.close(claim)


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


def _bind(path: str) -> socket.socket:
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
    return sock


async def start_server(path: str, on_connect: ConnectCallback) -> Server:
    _check_length(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    _check_folder(folder)
    claim = _claim(path)
    try:
        _remove_leftover(path)
        sock = _bind(path)
        try:
            server = await asyncio.start_unix_server(on_connect, sock=sock, backlog=BACKLOG)
        except BaseException:
            sock.close()  # cancelled, say: its file is a leftover for the next server
            raise
    except BaseException:
        os.close(claim)
        raise
    return Server(server, path, claim)
