"""The worker's HTTP API: an ASGI app speaking KServe V1 and the Open Inference Protocol (V2)
with Triton's binary tensor, model configuration and statistics extensions.

- ``app``: the ASGI app: routing, refusals in the protocol's shape, draining, in-flight counts.
- ``state``: what the app shares with the worker's control side: draining, counts, closes asked.
- ``bodies``: request bodies read whole, decompressed and held within the worker's byte budgets.
- ``inference``: decode, predict and encode off the event loop, for a request or a batch.
- ``batching``: dynamic batching, concurrent requests for a model joined into one call.
- ``tensors``: requests in: JSON, binary tensors and V1 instances decoded to arrays.
- ``outputs``: responses out: a model's arrays encoded as JSON, binary tensors or V1 predictions.
- ``strings``: BYTES tensors, both ways.
- ``metadata``: V2 model metadata and Triton's model configuration.
- ``stats``: per-model counters in the shape of Triton's statistics extension.
- ``metrics``: the worker's counters for the pool's Prometheus metrics.
- ``counters``: which of those counters changed since the supervisor was last sent them.
- ``tracing``: OpenTelemetry spans of inference requests, when asked for.
- ``openapi``: the OpenAPI document of what the worker serves.
- ``jsonio``: JSON in and out, with orjson.
- ``errors``: the one exception an endpoint raises for a request it refuses.

Nothing here touches the control channel: the worker hands the app a callable for pool-wide
statistics.
"""

from __future__ import annotations

from .app import InferenceApp
from .state import ServingState

__all__ = ["InferenceApp", "ServingState"]
