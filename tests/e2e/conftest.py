from __future__ import annotations

import os

import pytest

from .harness import WINDOWS_PYTHON, Platform, Pool


@pytest.fixture(params=["windows" if WINDOWS_PYTHON else "linux"])
def platform(request):
    """The platform the supervisor runs on: Linux, or Windows under Wine in the Windows suite.

    A test marked ``linux_supervisor(reason)`` needs the Linux one (POSIX signals, raw
    sockets) and is skipped in the Windows suite.
    """
    windows = request.param == "windows"
    marker = request.node.get_closest_marker("linux_supervisor")
    if windows and marker is not None:
        pytest.skip(marker.args[0])
    return Platform(windows)


@pytest.fixture
def gate(tmp_path):
    folder = tmp_path / "gate"
    folder.mkdir()
    return folder


@pytest.fixture
def launch(platform, tmp_path, gate):
    """Start pools; each is stopped (or killed, with all its processes) at the end of the test."""
    pools: list[Pool] = []

    def start(
        *args: str,
        workers: int = 2,
        env: dict[str, str] | None = None,
        control: str | None = None,
        module: str = "supervisor",
    ) -> Pool:
        extra = {"TEST_GATE_DIR": platform.path(str(gate)), **(env or {})}
        pool = Pool(
            platform,
            control or platform.control_address(str(tmp_path)),
            ["--workers", str(workers), "--bind", "127.0.0.1:0", *args],
            platform.env(extra),
            module=module,
        )
        pools.append(pool)
        return pool

    yield start
    (gate / "open").touch()
    left: list = []
    for pool in pools:
        try:
            if pool.process.poll() is None and pool.cli("stop", "--grace", "5", timeout=30).returncode in (0, 3):
                pool.process.wait(30)
        except Exception:
            pass  # whatever went wrong, the kill below still runs
        finally:
            pool.kill_everything()
            left += pool.leftovers()
    assert not left, f"processes left behind: {left}"


def released(gate) -> None:
    (gate / "open").touch()


def started_count(gate) -> int:
    return len([name for name in os.listdir(gate) if name.startswith("started-")])
