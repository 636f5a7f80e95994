"""One conformance suite for the platform's transport: a Unix socket here, a named pipe on
Windows (the Windows suite runs this file with the Windows interpreter)."""

from __future__ import annotations

import os
import socket
import sys

import anyio
import pytest

import ipc
from ipc.contract.settings import WorkerSettings
from ipc.messages import Configure, Hello, Stop

pytestmark = pytest.mark.anyio


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
        with pytest.raises(ipc.AddressInUseError):
            await ipc.listen(control_address)
        # The refusal did not disturb the first server. (The second one's probe connection
        # reached it first, and closed without a word.)
        async with await ipc.connect(control_address) as client:
            await client.send(Stop(1.0))
            with anyio.fail_after(10):
                while True:
                    async with await listener.accept() as server_side:
                        try:
                            assert await server_side.receive() == Stop(1.0)
                            break
                        except ipc.ConnectionClosedError:
                            continue
    finally:
        await listener.aclose()


async def test_address_is_free_again_after_close(control_address):
    listener = await ipc.listen(control_address)
    await listener.aclose()
    listener = await ipc.listen(control_address)
    await listener.aclose()
    with pytest.raises(ipc.NoServerError):
        await ipc.connect(control_address)


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
