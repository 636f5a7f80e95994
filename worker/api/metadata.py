"""A model described: V2 model metadata, and Triton's model configuration as perf_analyzer reads it."""

from __future__ import annotations

from typing import Any

from ..models import Model, TensorSpec


def model_metadata(model: Model, versions: list[str]) -> dict[str, Any]:
    """V2 model metadata; ``versions``: every version of the model served."""
    return {
        "name": model.name,
        "versions": versions,
        "platform": model.platform,
        "inputs": [spec.as_json() for spec in model.inputs],
        "outputs": [spec.as_json() for spec in model.outputs],
    }


def _config_tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    return {
        "name": spec.name,
        "data_type": f"TYPE_{'STRING' if spec.datatype == 'BYTES' else spec.datatype}",
        "dims": dims,
    }


#: Triton's backend for a platform: what its model configuration would say.
BACKENDS = {"onnxruntime_onnx": "onnxruntime"}


def model_config(model: Model, batch_delay: float = 0.0, versions: int = 1) -> dict[str, Any]:
    """Triton's ModelConfig, as perf_analyzer reads it; ``batch_delay`` (seconds) when the
    model is dynamically batched; ``versions``: how many of the model's are served (all)."""
    batched = model.max_batch_size > 0
    config: dict[str, Any] = {
        "name": model.name,
        "platform": model.platform,
        "backend": BACKENDS.get(model.platform, "python"),
        "version_policy": {"latest": {"num_versions": 1}} if versions == 1 else {"all": {}},
        "max_batch_size": model.max_batch_size,
        "input": [_config_tensor(spec, batched) for spec in model.inputs],
        "output": [_config_tensor(spec, batched) for spec in model.outputs],
        "model_transaction_policy": {"decoupled": False},
        "response_cache": {"enable": False},
    }
    if batch_delay > 0:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": round(batch_delay * 1e6)}
    return config
