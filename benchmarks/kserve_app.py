"""The demo model served by KServe's own model server, for the benchmarks' side-by-side rows.

    python benchmarks/kserve_app.py --port 8080 [--workers 2]

KServe is an optional install (``pip install kserve``; the test extra has it). Request logging
off, gRPC off: its HTTP path only, as our pool serves.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kserve
from kserve import InferOutput, InferRequest, InferResponse

from worker.models import demo_model


class DemoMLP(kserve.Model):
    def __init__(self) -> None:
        super().__init__("mlp")
        self.model = demo_model()
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> InferResponse:
        assert isinstance(payload, InferRequest)
        x = payload.inputs[0].as_numpy()
        out = self.model.predict({"INPUT0": x})["OUTPUT0"]
        output = InferOutput("OUTPUT0", list(out.shape), "FP32", out)
        return InferResponse(payload.id or "", "mlp", [output])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    server = kserve.ModelServer(
        http_port=args.port, workers=args.workers, enable_grpc=False, enable_latency_logging=False
    )
    server.start([DemoMLP()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
