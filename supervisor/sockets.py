"""The pool's listening socket: bound once by the supervisor, served by every worker."""

from __future__ import annotations

import errno
import socket
import sys


class BindError(Exception):
    """The socket could not be bound; the message is for the user."""


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) to ``(host, port)``; ``ValueError`` if malformed."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"must be HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return host, port


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket at ``host:port`` (port 0 picks a free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform == "win32":
            # Without it another process could bind the same port on top of ours.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined]
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)) or getattr(exc, "winerror", 0) == 10048:
            raise BindError(f"cannot listen on {format_address(host, port)}: address already in use") from exc
        raise BindError(f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}") from exc
    return sock


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{format_address(host, port)}"
