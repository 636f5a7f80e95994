"""The protocol version and the first exchange of every connection: mutual proof of a secret.

::

    connecting side                         supervisor
    Hello(version, role, pid, ..., nonce) ->
                                          <- Challenge(nonce', proof of the secret over both nonces)
    (checks the supervisor's proof)
    Proof(proof of the secret over Hello and both nonces) ->
                                          <- Welcome, or Error and the connection closes

The secret is the pool's key (:mod:`ipc.keys`): 32 random bytes made at each start, in a file
only the pool's user can read. Proofs are HMAC-SHA256; each side's fresh nonce makes an old
exchange useless to replay, and the connecting side's proof covers its Hello's fields, so
nobody can change them in flight. The supervisor proves itself first: a client never hands a
proof to something that is not its own pool.
"""

from __future__ import annotations

import hashlib
import hmac
import reprlib
import secrets
from typing import Protocol

from .errors import AuthenticationError, MalformedFrameError, RefusedError, VersionMismatchError
from .messages import Challenge, Error, Hello, Message, Proof, Welcome

#: 3: the handshake proves the pool's key both ways (Challenge, Proof). 4: counters travel as the
#: entries that changed, in bounded messages (StatsReport), not as whole snapshots.
PROTOCOL_VERSION = 4
SUPPORTED_VERSIONS = frozenset({4})
ROLES = frozenset({"worker", "client"})
NONCE_SIZE = 32
#: How long either side waits for the other to complete the handshake (and, for a worker, for
#: its Configure): a supervisor does not keep a silent stranger's connection, and a worker or a
#: client does not wait for a supervisor that is not answering.
TIMEOUT = 10.0
#: The largest frame a peer may send before it is admitted: a Hello and a Proof are a few
#: dozen bytes, and a stranger must not make the supervisor buffer a megabyte.
MAX_HANDSHAKE_FRAME = 4096


def check_hello(hello: Hello) -> None:
    """Raise unless a server of this version can talk to the sender of ``hello``."""
    if hello.protocol_version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise VersionMismatchError(
            f"peer speaks protocol version {hello.protocol_version}; this side speaks {supported}"
        )
    if hello.role not in ROLES:
        raise MalformedFrameError(f"unknown role {reprlib.repr(hello.role)}")  # a stranger's text: kept short
    if hello.role == "worker" and (hello.worker_id is None or hello.generation is None):
        raise MalformedFrameError("a worker's Hello must carry its worker_id and generation")
    if len(hello.nonce) != NONCE_SIZE:
        raise MalformedFrameError(f"a Hello's nonce must be {NONCE_SIZE} bytes")


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def _mac(key: bytes, *parts: bytes) -> bytes:
    message = b"\0".join(parts)
    return hmac.new(key, message, hashlib.sha256).digest()


def _hello_fields(hello: Hello) -> bytes:
    return f"{hello.protocol_version}|{hello.role}|{hello.pid}|{hello.worker_id}|{hello.generation}".encode()


def supervisor_proof(key: bytes, hello: Hello, nonce: bytes) -> bytes:
    return _mac(key, b"supervisor", hello.nonce, nonce)


def client_proof(key: bytes, hello: Hello, nonce: bytes) -> bytes:
    return _mac(key, b"client", _hello_fields(hello), hello.nonce, nonce)


def challenge(key: bytes, hello: Hello) -> Challenge:
    """The supervisor's answer to ``hello``: its nonce and its proof of the key."""
    nonce = new_nonce()
    return Challenge(nonce, supervisor_proof(key, hello, nonce))


def accepts(key: bytes, hello: Hello, sent: Challenge, proof: Proof) -> bool:
    """Whether ``proof`` shows that the sender of ``hello`` holds ``key``."""
    return hmac.compare_digest(client_proof(key, hello, sent.nonce), proof.proof)


class Peer(Protocol):
    """What the connecting side needs of a connection to greet a supervisor."""

    async def send(self, message: Message) -> None: ...

    async def receive(self) -> Message: ...


def _refusal(error: Error) -> RefusedError:
    cls = AuthenticationError if error.code == Error.FORBIDDEN else RefusedError
    return cls(error.message, error.code)


async def greet(connection: Peer, hello: Hello, key: bytes) -> Welcome:
    """The connecting side of the handshake: ``hello`` out, the supervisor's proof checked, ours
    sent; the ``Welcome``. :class:`AuthenticationError` when the supervisor cannot prove it
    holds ``key``; :class:`RefusedError` for an ``Error`` reply."""
    await connection.send(hello)
    reply = await connection.receive()
    if isinstance(reply, Error):
        raise _refusal(reply)
    if not isinstance(reply, Challenge):
        raise MalformedFrameError(f"expected challenge, got {reply.kind}")
    if not hmac.compare_digest(supervisor_proof(key, hello, reply.nonce), reply.proof):
        raise AuthenticationError("the supervisor could not prove it holds this pool's key", "forbidden")
    await connection.send(Proof(client_proof(key, hello, reply.nonce)))
    welcome = await connection.receive()
    if isinstance(welcome, Error):
        raise _refusal(welcome)
    if not isinstance(welcome, Welcome):
        raise MalformedFrameError(f"expected welcome, got {welcome.kind}")
    return welcome
