"""``python raw_pipe.py ADDRESS HEX``: write raw bytes to a named pipe and print, in hex, all that
comes back until the server closes it or stays silent for 3 s. Run with the Windows interpreter: the
Windows suite's way to be a hostile control client."""

import asyncio
import sys

from ipc._windows import open_connection


async def main(address: str, data: bytes) -> None:
    reader, writer = await open_connection(address)
    writer.write(data)
    await writer.drain()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 3):
            received += chunk
    except (OSError, TimeoutError):
        pass
    writer.close()
    sys.stdout.write(received.hex())


asyncio.run(main(sys.argv[1], bytes.fromhex(sys.argv[2])))
