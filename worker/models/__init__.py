"""Models a worker can serve.

- ``base``: the interface every model implements, and its tensor specs.
- ``mlp``: the numpy MLP of ``.npz`` files, and the built-in demo model.
- ``onnx_model``: ``.onnx`` files, with onnxruntime (the onnx extra).
- ``sklearn_model``: scikit-learn estimators in ``.skops`` files, or pickles (the sklearn extra).
- ``loader``: model specs and repositories turned into loaded models, one loader per format
  of ``ipc.contract.formats``.
- ``repository``: a model repository folder's models, versions and ``config.toml``.
"""

from __future__ import annotations

from .base import Model, ModelError, TensorSpec
from .loader import load_models
from .mlp import MLP, demo_model

__all__ = ["MLP", "Model", "ModelError", "TensorSpec", "demo_model", "load_models"]
