"""The control server fuzzed: random sequences of valid and invalid messages from clients and
would-be workers, with and without the pool's key, against one running supervisor. Whatever
they send, the supervisor answers every connection (or closes it), logs no failure of its own,
and its pool goes on untouched."""

from __future__ import annotations

import dataclasses
import logging
import os
import typing

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import ipc
from ipc import encode, handshake, keys
from ipc.messages import KINDS, Hello, Message, ReloadRequest, ScaleRequest, StopRequest
from supervisor import client
from supervisor.lifecycle import PoolState

from .fakes import by_generation, running

pytestmark = pytest.mark.anyio

#: Requests that change the pool on purpose are left out: the point is what may not change it.
SENDABLE = [cls for cls in KINDS.values() if cls not in (StopRequest, ReloadRequest, ScaleRequest)]

#: Values msgpack can carry, for the free-form maps (statistics) that hypothesis cannot infer.
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def build(cls: type[Message]) -> st.SearchStrategy[Message]:
    hints = typing.get_type_hints(cls)
    free_form = {name: st.dictionaries(st.text(max_size=6), plain, max_size=3) for name, hint in hints.items()
                 if hint == dict[str, typing.Any]}  # fmt: skip
    sections = st.dictionaries(st.text(max_size=6), st.dictionaries(st.text(max_size=6), plain, max_size=3), max_size=2)
    free_form |= {name: sections for name, hint in hints.items() if hint == dict[str, dict[str, typing.Any]]}
    return st.builds(cls, **free_form)


messages = st.one_of(*(build(cls) for cls in SENDABLE))
garbage = st.binary(min_size=1, max_size=64)
actions = st.tuples(
    st.sampled_from(["none", "client", "worker"]),  # who it says it is, proving the key or not
    st.lists(st.one_of(messages, garbage), min_size=1, max_size=4),
)


@pytest.fixture
async def pool(control_address):
    # Generating examples holds the event loop now and then: the fake workers' heartbeats may be
    # late, which is not what this test is about.
    async with running(control_address, by_generation(), workers=2, heartbeat_timeout=60) as running_pool:
        await running_pool.until(lambda: running_pool.pool.state is PoolState.READY)
        yield running_pool


async def act(control: str, role: str, payloads: list[Message | bytes]) -> None:
    async with await ipc.connect(control) as connection:
        if role != "none":
            hello = Hello(ipc.PROTOCOL_VERSION, role, os.getpid(), 7, 1, handshake.new_nonce())
            try:
                await handshake.greet(connection, hello, keys.read_key(control))
            except ipc.RefusedError:
                return  # a worker the pool did not spawn: turned away, as it should be
        for payload in payloads:
            try:
                data = payload if isinstance(payload, bytes) else encode(payload)
            except (OverflowError, ValueError, TypeError):
                continue  # no peer could send it: msgpack cannot say it (an int beyond 64 bits)
            try:
                connection._writer.write(data)
                # Every message gets an answer, or the connection ends: half a frame and
                # silence too, within the idle and handshake timeouts (2 s here).
                with anyio.fail_after(10):
                    await connection.receive()
            except (ipc.ConnectionClosedError, ipc.ProtocolError):
                return


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(sequence=st.lists(actions, min_size=1, max_size=3))
@example(sequence=[("client", [b"\x00"])])  # half a frame header, then silence (found by this test)
@example(sequence=[("none", [b"\x00\x00\x00\x10half"])])
async def test_whatever_is_sent_the_supervisor_serves_on(pool, caplog, sequence):
    before = [(w.slot, w.generation, w.pid) for w in pool.pool.status()]
    with caplog.at_level(logging.WARNING, logger="supervisor"):
        for role, payloads in sequence:
            await act(pool.control, role, payloads)
        reply = await client.status(pool.control)
    assert reply.state == "ready"
    assert [(w.slot, w.generation, w.pid) for w in reply.workers] == before
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR or "a connection failed" in r.getMessage()]
    assert not failures, [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r.getMessage() for r in failures]
