"""What `pip install .` installs: the wheel holds every module of the three packages.

The suite itself runs from the source tree, so a module missing from the wheel passes every
other test while the README's first command serves nothing (worker/http/ was missing once).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

from ipc.contract.settings import GRPC, HTTP_SERVERS, OTEL

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_module(tmp_path):
    # Built from a copy: a build/ folder left in the tree by an earlier build would fill gaps.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__")
    for folder in ("ipc", "supervisor", "worker"):
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    wheel_command = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)]
    build = subprocess.run([sys.executable, "-m", *wheel_command], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("inference_supervisor-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        path.relative_to(ROOT).as_posix()
        for package in ("ipc", "supervisor", "worker")
        for path in (ROOT / package).rglob("*")
        if path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    }
    assert sources and sources <= packed, f"missing from the wheel: {sorted(sources - packed)}"


def test_the_extras_admit_the_versions_the_start_check_does():
    """pyproject's extra and the check a pool runs at start (HTTP_SERVERS, GRPC, OTEL) bound the same versions."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for server, needs in {**HTTP_SERVERS, "grpc": GRPC, "otel": OTEL}.items():
        declared = {entry.partition(";")[0].strip() for entry in extras.get(server, [])}
        assert declared == {str(need) for need in needs}, server
