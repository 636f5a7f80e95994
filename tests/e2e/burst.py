"""``python -m tests.e2e.burst ADDRESS N``: N simultaneous ``status`` requests to one supervisor,
from one process; prints each one's outcome as a JSON list. Run with the supervisor's own
interpreter, so that the Windows suite bursts a named pipe as the Linux suite bursts a socket."""

from __future__ import annotations

import json
import sys

import anyio

from supervisor import client


async def burst(address: str, count: int) -> list[str]:
    results: list[str] = []

    async def one() -> None:
        try:
            results.append((await client.status(address)).state)
        except client.ControlError as exc:
            results.append(str(exc))

    with anyio.fail_after(120):
        async with anyio.create_task_group() as task_group:
            for _ in range(count):
                task_group.start_soon(one)
    return results


if __name__ == "__main__":
    print(json.dumps(anyio.run(burst, sys.argv[1], int(sys.argv[2]))))
