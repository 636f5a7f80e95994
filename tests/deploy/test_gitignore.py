"""What the benchmarks and the test tools write stays out of `git status`."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from benchmarks import common

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not shutil.which("git") or not (ROOT / ".git").exists(), reason="needs git and a checkout")
def test_what_benchmarks_and_test_tools_write_is_ignored():
    results = pathlib.Path(common.RESULTS).relative_to(ROOT)
    written = [
        *(results / f"sweep.{suffix}" for suffix in ("csv", "json", "png")),  # benchmarks.common.save, plots
        pathlib.Path(".tools/perf_analyzer"),  # tests/tools/get-perf-analyzer.sh
        pathlib.Path(".windows-env/python/python.exe"),  # tests/windows/prepare.sh
        pathlib.Path(".hypothesis/examples/x"),  # the fuzzers' database
    ]
    for path in written:
        check = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, timeout=30)
        assert check.returncode == 0, f"{path} is not in .gitignore"
