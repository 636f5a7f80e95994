"""Named pipe transport (Windows), on the Proactor event loop's pipe support.

The first pipe instance is created with ``FILE_FLAG_FIRST_PIPE_INSTANCE`` (asyncio does so),
so a second supervisor on the same name fails at once with access denied: in use.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from .errors import AddressInUseError, NoServerError

assert sys.platform == "win32"

ConnectCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]


def _loop() -> Any:
    loop = asyncio.get_running_loop()
    if not hasattr(loop, "start_serving_pipe"):
        raise RuntimeError("named pipes need the Proactor event loop (asyncio's default on Windows)")
    return loop


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


async def start_server(address: str, on_connect: ConnectCallback) -> Server:
    loop = _loop()
    await _probe(address)

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader()
        return asyncio.StreamReaderProtocol(reader, on_connect)

    try:
        servers = await loop.start_serving_pipe(factory, address)
    except PermissionError as exc:
        raise AddressInUseError(f"another supervisor is already listening at {address}") from exc
    return Server(list(servers))
