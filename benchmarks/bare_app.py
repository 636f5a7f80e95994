"""The worker's inference app alone, for bare hypercorn: the baseline of the benchmarks.

python -m hypercorn benchmarks.bare_app:app --bind 127.0.0.1:8000
"""

from __future__ import annotations

from worker.api import InferenceApp, ServingState
from worker.models import demo_model

app = InferenceApp([demo_model()], ServingState())
