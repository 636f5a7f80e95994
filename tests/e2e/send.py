"""``python -m tests.e2e.send ADDRESS HEX``: an authenticated client that then writes raw frame
bytes (hex), as a buggy or hostile client holding the pool's key could, and prints in hex all
that comes back until the supervisor closes the connection or stays silent for 3 s. Run with
the supervisor's own interpreter, so that the Windows suite tests the named pipe this way."""

from __future__ import annotations

import os
import sys

import anyio

import ipc
from ipc import handshake, keys
from ipc.messages import Hello


async def send(address: str, data: bytes) -> bytes:
    connection = await ipc.connect(address)
    async with connection:
        hello = Hello(ipc.PROTOCOL_VERSION, "client", os.getpid(), nonce=handshake.new_nonce())
        await handshake.greet(connection, hello, keys.read_key(address))
        connection._writer.write(data)
        received = b""
        with anyio.move_on_after(3):
            while chunk := await connection._reader.read(65536):
                received += chunk
    return received


if __name__ == "__main__":
    print(anyio.run(send, sys.argv[1], bytes.fromhex(sys.argv[2])).hex())
