"""One conformance suite for the platform's transport: a Unix socket here, a named pipe on
Windows (the Windows suite runs this file with the Windows interpreter)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import anyio
import pytest

import ipc
from ipc.contract.settings import WorkerSettings
from ipc.messages import Configure, Hello, Stop

pytestmark = pytest.mark.anyio


class Window:
    """Holds each ``ipc.listen`` in the moment before it starts listening (after ``bind()`` on a
    Unix socket, before the first pipe instance on Windows) until released: there a starting
    server refuses connections as a dead one's leftover does, and two listens held there at once
    are the race of two supervisors started together, made certain instead of hoped for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.arrivals: asyncio.Queue[str] = asyncio.Queue()
        self.open = asyncio.Event()
        if sys.platform == "win32":
            original_method = asyncio.ProactorEventLoop.start_serving_pipe

            async def serve_pipe(loop, *args, **kwargs):
                await self._hold()
                return await original_method(loop, *args, **kwargs)

            monkeypatch.setattr(asyncio.ProactorEventLoop, "start_serving_pipe", serve_pipe)
        else:
            original = asyncio.start_unix_server

            async def serve_unix(*args, **kwargs):
                await self._hold()
                return await original(*args, **kwargs)

            monkeypatch.setattr(asyncio, "start_unix_server", serve_unix)

    async def _hold(self) -> None:
        self.arrivals.put_nowait("held")
        await self.open.wait()

    async def listen(self, address: str, results: list) -> None:
        """``ipc.listen(address)``; its listener or its AddressInUseError lands in ``results``."""
        try:
            results.append(await ipc.listen(address))
        except ipc.AddressInUseError as exc:
            results.append(exc)
            self.arrivals.put_nowait("refused")


def endpoint(address: str) -> int | None:
    """The socket file's inode (None on Windows: a pipe leaves nothing to look at)."""
    return None if sys.platform == "win32" else os.stat(address).st_ino


async def assert_serves(listener: ipc.Listener, address: str) -> None:
    async with await ipc.connect(address) as client, await listener.accept() as server_side:
        await client.send(Stop(1.0))
        with anyio.fail_after(10):
            assert await server_side.receive() == Stop(1.0)


async def test_round_trip(control_address):
    listener = await ipc.listen(control_address)
    try:
        async with anyio.create_task_group() as tg:

            async def echo():
                async with await listener.accept() as server_side:
                    async for message in server_side:
                        await server_side.send(message)

            tg.start_soon(echo)
            async with await ipc.connect(control_address) as client:
                for message in (
                    Hello(1, "client", os.getpid()),
                    Stop(2.5),
                    Configure(WorkerSettings(models=["a=b.npz"]), listen_share=b"\x00" * 1000),
                ):
                    await client.send(message)
                    assert await client.receive() == message
    finally:
        await listener.aclose()


async def test_large_message_and_many_in_a_row(control_address):
    listener = await ipc.listen(control_address)
    big = Configure(WorkerSettings(models=["m=" + "x" * 500_000]))
    try:
        async with anyio.create_task_group() as tg:

            async def sender():
                async with await listener.accept() as server_side:
                    for _ in range(50):
                        await server_side.send(Stop(0.5))
                    await server_side.send(big)

            tg.start_soon(sender)
            async with await ipc.connect(control_address) as client:
                for _ in range(50):
                    assert await client.receive() == Stop(0.5)
                assert await client.receive() == big
    finally:
        await listener.aclose()


async def test_peer_close_is_connection_closed(control_address):
    listener = await ipc.listen(control_address)
    try:
        client = await ipc.connect(control_address)
        server_side = await listener.accept()
        await server_side.aclose()
        with pytest.raises(ipc.ConnectionClosedError):
            with anyio.fail_after(10):
                await client.receive()
        await client.aclose()
        await client.aclose()  # twice is fine
    finally:
        await listener.aclose()


async def test_oversized_frame_from_peer(control_address):
    listener = await ipc.listen(control_address, max_frame_size=64)
    try:
        async with await ipc.connect(control_address) as client, await listener.accept() as server_side:
            await client.send(Configure(WorkerSettings(models=["m=" + "x" * 100])))
            with pytest.raises(ipc.FrameTooLargeError):
                with anyio.fail_after(10):
                    await server_side.receive()
    finally:
        await listener.aclose()


async def test_no_server(control_address):
    with pytest.raises(ipc.NoServerError):
        await ipc.connect(control_address)


async def test_address_in_use(control_address):
    listener = await ipc.listen(control_address)
    try:
        with pytest.raises(ipc.AddressInUseError, match="another supervisor is starting or already running at"):
            await ipc.listen(control_address)
        await assert_serves(listener, control_address)  # the refusal did not disturb it
    finally:
        await listener.aclose()


async def test_address_is_free_again_after_close(control_address):
    listener = await ipc.listen(control_address)
    await listener.aclose()
    listener = await ipc.listen(control_address)
    await listener.aclose()
    with pytest.raises(ipc.NoServerError):
        await ipc.connect(control_address)


async def test_a_server_about_to_listen_is_not_taken_for_a_dead_one(control_address, monkeypatch):
    window = Window(monkeypatch)
    first: list = []
    second: list = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(window.listen, control_address, first)
            with anyio.fail_after(10):
                assert await window.arrivals.get() == "held"  # bound, not yet listening
            inode = endpoint(control_address)
            tg.start_soon(window.listen, control_address, second)
            with anyio.fail_after(10):
                assert await window.arrivals.get() == "refused", second
            window.open.set()
        assert endpoint(control_address) == inode  # its socket file was left alone
        (refusal,) = second
        assert "another supervisor is starting or already running at" in str(refusal)
        (listener,) = first
        await assert_serves(listener, control_address)
    finally:
        window.open.set()
        for result in first + second:
            if isinstance(result, ipc.Listener):
                await result.aclose()


async def test_of_two_listens_at_the_same_moment_exactly_one_wins(control_address, monkeypatch):
    for _ in range(20):
        window = Window(monkeypatch)
        results: list = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(window.listen, control_address, results)
                tg.start_soon(window.listen, control_address, results)
                with anyio.fail_after(10):
                    # Each is held before listening, or refused: then both go on at once.
                    arrivals = sorted([await window.arrivals.get(), await window.arrivals.get()])
                window.open.set()
            assert arrivals == ["held", "refused"], results
            (winner,) = [r for r in results if isinstance(r, ipc.Listener)]
            await assert_serves(winner, control_address)
        finally:
            window.open.set()
            for result in results:
                if isinstance(result, ipc.Listener):
                    await result.aclose()
        monkeypatch.undo()


HOLDER = """
import asyncio, sys
import ipc

async def main():
    await ipc.listen(sys.argv[1])
    print("listening", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_the_address_is_free_again_once_its_server_is_killed(control_address):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    process = await anyio.open_process(
        [sys.executable, "-c", HOLDER, control_address], cwd=root, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(30):
            assert (await process.stdout.receive()).strip() == b"listening"
        with pytest.raises(ipc.AddressInUseError):
            await ipc.listen(control_address)
    finally:
        process.kill()  # SIGKILL, TerminateProcess: no clean-up of its own
        with anyio.fail_after(30):
            await process.wait()
        await process.aclose()
    # Whatever it held died with it; on POSIX its socket file is left over, and replaced.
    listener = await ipc.listen(control_address)
    try:
        await assert_serves(listener, control_address)
    finally:
        await listener.aclose()


@pytest.mark.skipif(sys.platform == "win32", reason="socket files are a POSIX matter")
async def test_stale_socket_file_is_replaced(control_address):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(control_address)
    stale.close()  # the file stays, nobody listens: a crashed supervisor's leftover
    listener = await ipc.listen(control_address)
    try:
        assert os.stat(control_address).st_mode & 0o777 == 0o600
        async with await ipc.connect(control_address):
            pass
    finally:
        await listener.aclose()
    assert not os.path.exists(control_address)


@pytest.mark.skipif(sys.platform == "win32", reason="socket files are a POSIX matter")
async def test_a_regular_file_is_not_overwritten(control_address):
    with open(control_address, "w") as f:
        f.write("precious")
    with pytest.raises(ipc.AddressInUseError, match="not a socket"):
        await ipc.listen(control_address)
    with open(control_address) as f:
        assert f.read() == "precious"


@pytest.mark.skipif(sys.platform == "win32", reason="socket files are a POSIX matter")
@pytest.mark.parametrize("how", ["writable by other users", "another user", "symbolic link"])
async def test_an_unsafe_control_folder_is_refused(tmp_path, how):
    folder = tmp_path / "control"
    if how == "symbolic link":
        (tmp_path / "elsewhere").mkdir()
        folder.symlink_to(tmp_path / "elsewhere")
    else:
        folder.mkdir(mode=0o700)
    if how == "writable by other users":
        folder.chmod(0o777)
    if how == "another user":
        if os.getuid() != 0:
            pytest.skip("needs root to give the folder away")
        os.chown(folder, 65534, 65534)
    with pytest.raises(PermissionError, match=how):
        await ipc.listen(str(folder / "c.sock"))


def test_default_addresses_differ_by_name():
    assert ipc.default_address("a") != ipc.default_address("b")
    if sys.platform == "win32":
        assert ipc.default_address().startswith("\\\\.\\pipe\\")
    with pytest.raises(ValueError):
        ipc.default_address("../escape")


@pytest.mark.skipif(sys.platform != "win32", reason="named pipes are Windows'")
async def test_the_pipe_is_the_owners_alone(control_address):
    import re

    from ipc import _winsecurity

    listener = await ipc.listen(control_address)
    try:
        (server,) = listener._server._servers  # the pipe server, with its unconnected instance
        sddl = _winsecurity.describe(server._pipe.handle)
    finally:
        await listener.aclose()
    sid = _winsecurity.current_user_sid()
    owner, dacl = re.fullmatch(r"O:([^D]+)D:(.*)", sddl).groups()
    assert owner == sid, sddl
    assert dacl.startswith("P"), sddl  # protected: nothing inherited from elsewhere
    trustees = re.findall(r"\(A;[^;]*;[^;]*;;;([^)]*)\)", dacl)
    assert sorted(trustees) == sorted(["SY", sid]), sddl  # the user and SYSTEM, nobody else
    assert "(D;" not in dacl and dacl.count("(") == 2, sddl


@pytest.mark.skipif(sys.platform != "win32", reason="the pipe name carries the user on Windows")
def test_the_default_pipe_name_is_the_same_in_every_process_of_a_user_without_a_login_name():
    import subprocess

    env = {k: v for k, v in os.environ.items() if k.upper() not in ("USERNAME", "USER", "LOGNAME", "LNAME")}
    script = "from ipc.address import default_address; print(default_address())"
    names = {
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(names) == 1, names  # not the pid, as before: `supervisor stop` must find the pool
    assert str(os.getpid()) not in names.pop()
