"""Models a worker can serve: the interface, the built-in demo MLP, and the loaders."""

from __future__ import annotations

from .base import Model, ModelError, TensorSpec
from .loader import load_models
from .mlp import MLP, demo_model

__all__ = ["MLP", "Model", "ModelError", "TensorSpec", "demo_model", "load_models"]
