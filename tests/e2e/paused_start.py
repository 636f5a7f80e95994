"""``python -m tests.e2e.paused_start ARGS`` is ``supervisor ARGS``, held at the moment its
control endpoint is about to listen (after ``bind()`` on a Unix socket, before the first pipe
instance on Windows) until a file ``open`` appears in $TEST_LISTEN_GATE. It says it got there
with a file ``held-<pid>`` in that folder, and gives up after 60 s.

There a starting supervisor looks like a dead one's leftover (its socket refuses connections,
its pipe does not exist yet): two supervisors held there at once are two started at the same
moment, with the race made certain instead of hoped for."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

GATE = os.environ["TEST_LISTEN_GATE"]


async def _hold() -> None:
    with open(os.path.join(GATE, f"held-{os.getpid()}"), "x"):
        pass
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(GATE, "open")):
        if time.monotonic() > deadline:
            raise SystemExit("paused_start: the gate did not open within 60 s")
        await asyncio.sleep(0.01)


if sys.platform == "win32":
    _serve_pipe = asyncio.ProactorEventLoop.start_serving_pipe

    async def _held_serve_pipe(loop: Any, *args: Any, **kwargs: Any) -> Any:
        await _hold()
        return await _serve_pipe(loop, *args, **kwargs)

    asyncio.ProactorEventLoop.start_serving_pipe = _held_serve_pipe  # type: ignore[method-assign]
else:
    _serve_unix = asyncio.start_unix_server

    async def _held_serve_unix(*args: Any, **kwargs: Any) -> Any:
        await _hold()
        return await _serve_unix(*args, **kwargs)

    asyncio.start_unix_server = _held_serve_unix

from supervisor.cli import main  # noqa: E402  (after the patch, as a reader expects)

sys.exit(main())
