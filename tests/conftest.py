from __future__ import annotations

import os
import sys
import uuid

import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def control_address(tmp_path):
    """A fresh control address of this platform's kind."""
    if sys.platform == "win32":
        return rf"\\.\pipe\inference-supervisor-test-{uuid.uuid4().hex[:12]}"
    path = os.path.join(str(tmp_path), "control.sock")
    if len(path) > 100:  # sun_path limit
        path = f"/tmp/is-test-{uuid.uuid4().hex[:12]}.sock"
    return path
