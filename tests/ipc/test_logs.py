"""Where a process's log lines go (ipc.contract.logs), in-process."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from ipc.contract import logs


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:], root.level = handlers, level


def test_lines_go_to_the_stderr_of_the_moment_not_to_one_that_was_closed(root_logger, monkeypatch):
    # As pytest's capture does between tests: the stderr of configure's moment is closed, and
    # sys.stderr is another file by the time a line is written.
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.configure("text", "info", "tester")
    logging.getLogger("here").info("one")
    assert first.getvalue().endswith("tester INFO one\n")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("here").info("two")
    assert second.getvalue().endswith("tester INFO two\n")
    assert "Logging error" not in second.getvalue()


@pytest.mark.parametrize("stderr", [None, "closed"])
def test_with_no_stderr_a_line_is_dropped_not_a_traceback(root_logger, monkeypatch, stderr):
    logs.configure("json", "info", "tester")
    gone = io.StringIO()
    gone.close()
    monkeypatch.setattr(sys, "stderr", gone if stderr == "closed" else None)
    logging.getLogger("here").warning("nobody reads this")  # raised or printed before
