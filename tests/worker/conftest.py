from __future__ import annotations

import pytest

from worker.api import InferenceApp, ServingState
from worker.models import demo_model


@pytest.fixture
def app():
    """The demo model's app, with a 1 MiB body limit."""
    return InferenceApp([demo_model()], ServingState(), max_body_size=1 << 20)
