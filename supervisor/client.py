"""The command line's end of the control channel: a request, its progress lines, its reply."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

import ipc
from ipc import handshake, keys
from ipc.messages import (
    Error,
    Hello,
    Message,
    OperationReply,
    Progress,
    ReloadRequest,
    ScaleRequest,
    StatusReply,
    StatusRequest,
    StopReply,
    StopRequest,
)


class ControlError(Exception):
    """The supervisor could not be reached or refused the request; the message is for the user."""


async def _connect(address: str) -> ipc.Connection:
    """A connection the supervisor has welcomed, each side having proved it holds the pool's key.

    Under a burst of clients the kernel may drop a connection before the supervisor has
    accepted it (its backlog is full; asyncio may still report the connect as done): the
    handshake then fails before any request was sent, so trying again is safe.
    """
    delay = 0.01
    with anyio.fail_after(handshake.TIMEOUT):
        while True:
            try:
                connection = await ipc.connect(address)
            except ipc.NoServerError as exc:
                raise ControlError(f"no supervisor is running at {address}") from exc
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise ControlError(f"cannot reach the supervisor at {address}: {exc}") from exc
            else:
                try:
                    key = keys.read_key(address)
                    hello = Hello(ipc.PROTOCOL_VERSION, "client", os.getpid(), nonce=handshake.new_nonce())
                    await handshake.greet(connection, hello, key)
                    return connection
                except ipc.ConnectionClosedError:
                    await connection.aclose()
                except ipc.KeyMissingError as exc:
                    await connection.aclose()
                    raise ControlError(str(exc)) from exc
                except ipc.RefusedError as exc:
                    await connection.aclose()
                    raise ControlError(f"the supervisor refused: {exc}") from exc
                except ipc.ProtocolError as exc:
                    await connection.aclose()
                    raise ControlError(f"the supervisor broke the protocol: {exc}") from exc
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.5)


@asynccontextmanager
async def _session(address: str) -> AsyncIterator[ipc.Connection]:
    """A welcomed connection; the channel's failures become one-line ``ControlError``\\s."""
    try:
        connection = await _connect(address)
    except TimeoutError as exc:
        raise ControlError("the supervisor did not answer in time") from exc
    async with connection:
        try:
            yield connection
        except ipc.ConnectionClosedError as exc:
            raise ControlError("the supervisor closed the connection without replying") from exc
        except ipc.ProtocolError as exc:
            raise ControlError(f"the supervisor broke the protocol: {exc}") from exc
        except TimeoutError as exc:
            raise ControlError("the supervisor did not answer in time") from exc


def _refused(reply: Message) -> ControlError:
    if isinstance(reply, Error):
        return ControlError(f"the supervisor refused: {reply.message}")
    return ControlError(f"unexpected {reply.kind} from the supervisor")


R = TypeVar("R", bound=Message)


async def call(
    address: str,
    request: Message,
    reply: type[R],
    timeout: float | None = 10.0,
    on_progress: Callable[[str], None] | None = None,
) -> R:
    """Send ``request`` to the supervisor at ``address`` and return its ``reply``;
    ``on_progress`` gets each progress line as it comes. :class:`ControlError`, one line, for
    anything else: no supervisor, a refusal, no answer within ``timeout`` seconds."""
    async with _session(address) as connection:
        await connection.send(request)
        with anyio.fail_after(timeout):
            while True:
                answer = await connection.receive()
                if isinstance(answer, Progress):
                    if on_progress is not None:
                        on_progress(answer.text)
                    continue
                if not isinstance(answer, reply):
                    raise _refused(answer)
                return answer


async def operate(
    address: str, request: ReloadRequest | ScaleRequest, on_progress: Callable[[str], None]
) -> OperationReply:
    """Ask for a reload or a scale; ``on_progress`` gets each step as it happens."""
    return await call(address, request, OperationReply, None, on_progress)


async def status(address: str) -> StatusReply:
    return await call(address, StatusRequest(), StatusReply)


async def stop(address: str, grace: float | None) -> StopReply:
    return await call(address, StopRequest(grace), StopReply, None)
