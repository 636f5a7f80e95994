"""The control channel is the pool owner's alone: other users and clients without the pool's
key are refused, whatever the file permissions say."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import tempfile

import pytest

from ipc import FrameDecoder, keys
from ipc.messages import Error

from .harness import ROOT


@pytest.mark.linux_supervisor("Unix socket credentials")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_is_refused_even_when_the_socket_is_opened_up(launch):
    folder = tempfile.mkdtemp(prefix="is-open-")
    os.chmod(folder, 0o755)  # others may enter, not write: a folder the pool accepts
    control = os.path.join(folder, "control.sock")
    try:
        pool = launch(workers=1, control=control)
        pool.wait_ready()
        os.chmod(control, 0o666)  # "opened up by mistake"
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])\n"
            "data = b''\n"
            "while chunk := s.recv(4096): data += chunk\n"
            "print(data.hex())\n"
        )
        # Any interpreter will do for raw sockets; /root's own is not for other users to run.
        python = next((p for p in ("/usr/bin/python3", sys.executable) if os.access(p, os.X_OK)), sys.executable)
        other = subprocess.run([python, "-c", probe, control], user=65534, capture_output=True, text=True, timeout=30)
        assert other.returncode == 0, other.stderr  # it could connect: only the uid check stops it
        decoder = FrameDecoder()
        decoder.feed(bytes.fromhex(other.stdout.strip()))
        refusal = decoder.next_message()
        assert isinstance(refusal, Error) and refusal.code == Error.FORBIDDEN, refusal
        assert "only the user who started the pool" in refusal.message
        pool.wait_for_line("refused a connection from uid 65534")
        assert pool.status()["state"] == "ready"
        assert pool.cli("stop").returncode == 0
        assert pool.wait_exit() == 0
    finally:
        for leftover in (control, keys.key_path(control), f"{control}.lock"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        os.rmdir(folder)


def test_the_pool_key_lives_and_dies_with_the_supervisor(launch, platform):
    pool = launch(workers=1)
    pool.wait_ready()
    assert pool.cli("status").returncode == 0
    if not platform.windows:
        path = keys.key_path(pool.control)
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert pool.cli("stop").returncode == 0
    assert pool.wait_exit() == 0
    if not platform.windows:
        assert not os.path.exists(keys.key_path(pool.control))


def test_a_client_with_a_stale_key_is_refused_in_one_line(launch, platform):
    pool = launch(workers=1)
    pool.wait_ready()
    script = (
        "import sys; from ipc import keys; path = keys.key_path(sys.argv[1]); "
        "key = open(path, 'rb').read(); open(path, 'wb').write(bytes(32))"
    )
    swapped = subprocess.run(
        [*platform.python, "-c", script, pool.control], cwd=ROOT, env=pool.env, capture_output=True, timeout=60
    )
    assert swapped.returncode == 0, swapped.stderr
    status = pool.cli("status")
    assert status.returncode == 1
    assert status.stderr.strip().endswith("the supervisor could not prove it holds this pool's key"), status.stderr


def test_a_stranger_cannot_make_the_supervisor_buffer_a_large_frame(launch, platform):
    """Before the handshake a frame could announce a megabyte, and the supervisor buffered it
    for anyone who could connect (found in review)."""
    pool = launch(workers=1)
    pool.wait_ready()
    decoder = FrameDecoder()
    decoder.feed(platform.raw_control(pool.control, struct.pack(">I", 100_000) + b"\x00" * 5000))
    refusal = decoder.next_message()
    assert isinstance(refusal, Error) and refusal.code == Error.PROTOCOL, refusal
    assert refusal.message == "frame of 100000 bytes is over the limit of 4096"
    assert pool.cli("status").returncode == 0  # admitted clients still send full-size frames


IMPOSTOR = """
import sys, anyio, ipc
from ipc import handshake, keys
from ipc.messages import Hello

async def main(address, pid):
    async with await ipc.connect(address) as connection:
        hello = Hello(ipc.PROTOCOL_VERSION, "worker", pid, 0, 1, handshake.new_nonce())
        try:
            await handshake.greet(connection, hello, keys.read_key(address))
        except ipc.RefusedError as exc:
            print(exc)

anyio.run(main, sys.argv[1], int(sys.argv[2]))
"""


def test_a_worker_hello_must_come_from_the_pid_it_names(launch, platform):
    """A process holding the pool's key could say it was any worker: the pool knows workers by
    pid, and took the Hello's word for it (found in review)."""
    pool = launch(workers=1)
    pool.wait_ready()
    worker = pool.status()["workers"][0]["pid"]
    impostor = subprocess.run(
        [*platform.python, "-c", IMPOSTOR, pool.control, str(worker)],
        cwd=ROOT,
        env=pool.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert impostor.returncode == 0, impostor.stderr
    assert re.fullmatch(rf"a worker's Hello says pid {worker} but comes from pid \d+\n", impostor.stdout)
    assert pool.status()["workers"][0]["pid"] == worker
