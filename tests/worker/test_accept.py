"""The Windows accept thread, with a socket that fails every accept: it backs off, not spins."""

from __future__ import annotations

import threading

import anyio
import pytest

from worker.http.accept import ACCEPT_BACKOFF_MAX, ThreadAcceptor

pytestmark = pytest.mark.anyio


class FailingSocket:
    """accept() always fails, as a socket out of handles would."""

    def __init__(self) -> None:
        self.accepts = 0
        self.closed = False
        self._lock = threading.Lock()

    def settimeout(self, timeout: float) -> None:
        pass

    def accept(self):
        with self._lock:
            self.accepts += 1
        raise OSError(24, "Too many open files")

    def close(self) -> None:
        self.closed = True


async def test_a_repeating_accept_error_is_backed_off():
    sock = FailingSocket()
    acceptor = ThreadAcceptor(sock)  # type: ignore[arg-type]
    acceptor.start(lambda conn: pytest.fail("nothing can be accepted"))
    await anyio.sleep(2.0)  # the thread's own pace is what is measured
    await acceptor.stop()
    # Backing off from 10 ms, doubling to ACCEPT_BACKOFF_MAX: about 9 tries in 2 s. A spinning
    # thread makes hundreds of thousands.
    assert ACCEPT_BACKOFF_MAX == 1.0
    assert 3 <= sock.accepts <= 20, sock.accepts
    assert sock.closed
