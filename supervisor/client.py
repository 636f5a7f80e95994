"""The command line's end of the control channel: ``supervisor stop`` and ``supervisor status``."""

from __future__ import annotations

import errno
import os

import anyio

import ipc
from ipc.messages import Error, Hello, Message, StatusReply, StatusRequest, StopReply, StopRequest, Welcome


class ControlError(Exception):
    """The supervisor could not be reached or refused the request; the message is for the user."""


#: How long to keep trying to be welcomed by a supervisor that is busy.
HANDSHAKE_TIMEOUT = 10.0


async def _connect(address: str) -> ipc.Connection:
    """A connection the supervisor has welcomed.

    Under a burst of clients the kernel may drop a connection before the supervisor has
    accepted it (its backlog is full; asyncio may still report the connect as done): the
    handshake then fails before any request was sent, so trying again is safe.
    """
    delay = 0.01
    with anyio.fail_after(HANDSHAKE_TIMEOUT):
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
                    await connection.send(Hello(ipc.PROTOCOL_VERSION, "client", os.getpid()))
                    welcome = await connection.receive()
                except ipc.ConnectionClosedError:
                    await connection.aclose()
                except ipc.ProtocolError as exc:
                    await connection.aclose()
                    raise ControlError(f"the supervisor broke the protocol: {exc}") from exc
                else:
                    if isinstance(welcome, Welcome):
                        return connection
                    await connection.aclose()
                    if isinstance(welcome, Error):
                        raise ControlError(f"the supervisor refused: {welcome.message}")
                    raise ControlError(f"unexpected {welcome.kind} from the supervisor")
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def request(address: str, message: Message, timeout: float | None = None) -> Message:
    """Send one request to the supervisor at ``address`` and return its reply."""
    try:
        connection = await _connect(address)
    except TimeoutError as exc:
        raise ControlError("the supervisor did not answer in time") from exc
    async with connection:
        try:
            await connection.send(message)
            with anyio.fail_after(timeout):
                reply = await connection.receive()
        except ipc.ConnectionClosedError as exc:
            raise ControlError("the supervisor closed the connection without replying") from exc
        except ipc.ProtocolError as exc:
            raise ControlError(f"the supervisor broke the protocol: {exc}") from exc
        except TimeoutError as exc:
            raise ControlError("the supervisor did not answer in time") from exc
    if isinstance(reply, Error):
        raise ControlError(f"the supervisor refused: {reply.message}")
    return reply


async def status(address: str) -> StatusReply:
    reply = await request(address, StatusRequest(), timeout=10)
    if not isinstance(reply, StatusReply):
        raise ControlError(f"unexpected {reply.kind} from the supervisor")
    return reply


async def stop(address: str, grace: float | None) -> StopReply:
    reply = await request(address, StopRequest(grace))
    if not isinstance(reply, StopReply):
        raise ControlError(f"unexpected {reply.kind} from the supervisor")
    return reply
