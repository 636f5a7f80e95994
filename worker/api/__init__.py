"""The worker's HTTP API: an ASGI app speaking KServe V1 and the Open Inference Protocol (V2)
with Triton's binary tensor, model configuration and statistics extensions.

``app`` (routing, bodies, draining) calls ``v2`` and ``v1`` (the endpoints), which use
``tensors`` (request decoding and response encoding) and ``stats`` (per-model counters).
Nothing here touches the control channel: the worker hands the app a callable for pool-wide
statistics.
"""

from __future__ import annotations

from .app import InferenceApp, ServingState

__all__ = ["InferenceApp", "ServingState"]
