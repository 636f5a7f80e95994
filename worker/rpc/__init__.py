"""gRPC: the Open Inference Protocol's other half (``inference.GRPCInferenceService``), served by
every worker beside HTTP when the pool is started with ``--grpc-bind`` (the grpc extra).

- ``inference.proto``: the service as KServe and Triton declare it; ``inference.desc``, compiled
  from it (the command is in the ``.proto``).
- ``protocol``: its message classes, in a descriptor pool of their own.
- ``wire``: ``ModelInfer``'s requests in and answers out, through the HTTP API's own core.
- ``service``: each method answered by the worker's ``InferenceApp``; refusals as status codes.
- ``server``: grpcio's server on a loopback port, fed the connections accepted on the pool's
  shared gRPC socket; its drain.
- ``goodbye``: each connection's goodbye, HTTP/2 frame by frame, so that a drain loses no call.

Imported only where gRPC is served: grpcio is an optional extra.
"""

from __future__ import annotations

from .server import serve

__all__ = ["serve"]
