"""A numpy multi-layer perceptron, and the built-in demo model.

Weights file format (``.npz``, as written by ``numpy.savez``): arrays ``w0, b0, w1, b1, ...``
where ``w<i>`` has shape ``(in, out)`` and ``b<i>`` shape ``(out,)``; ReLU between layers, none
after the last. The input is ``INPUT0`` FP32 ``[-1, in]``, the output ``OUTPUT0`` FP32
``[-1, out]``.
"""

from __future__ import annotations

import itertools
import os
import re
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from .base import Model, ModelError, TensorSpec

DEMO_SEED = 20261128
DEMO_LAYERS = (64, 128, 10)


class MLP(Model):
    platform = "numpy_mlp"
    max_batch_size = 1024

    def __init__(self, name: str, layers: Sequence[tuple[np.ndarray, np.ndarray]], version: str = "1"):
        if not layers:
            raise ModelError(f"model {name!r}: an MLP needs at least one layer")
        for i, (w, b) in enumerate(layers):
            if w.ndim != 2 or b.shape != (w.shape[1],):
                raise ModelError(f"model {name!r}: layer {i} has shapes {w.shape} and {b.shape}")
            if i and w.shape[0] != layers[i - 1][0].shape[1]:
                raise ModelError(f"model {name!r}: layer {i} does not follow layer {i - 1}")
        self.name = name
        self.version = version
        self.layers = [(np.ascontiguousarray(w, np.float32), np.ascontiguousarray(b, np.float32)) for w, b in layers]
        self.inputs = (TensorSpec("INPUT0", "FP32", (-1, self.layers[0][0].shape[0])),)
        self.outputs = (TensorSpec("OUTPUT0", "FP32", (-1, self.layers[-1][0].shape[1])),)

    @classmethod
    def from_npz(cls, name: str, path: str | os.PathLike[str]) -> MLP:
        if not zipfile.is_zipfile(path):
            raise ModelError(f"model {name!r}: {os.fspath(path)} is not a .npz weights file (numpy.savez writes them)")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError) as exc:
            raise ModelError(f"model {name!r}: cannot read {os.fspath(path)}: {exc}") from exc
        count = sum(1 for key in arrays if re.fullmatch(r"w\d+", key))
        try:
            layers = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(count)]
        except KeyError as exc:
            raise ModelError(f"model {name!r}: {os.fspath(path)} lacks array {exc.args[0]}") from exc
        return cls(name, layers)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs["INPUT0"], dtype=np.float32)
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < last:
                np.maximum(x, 0.0, out=x)
        return {"OUTPUT0": x}


def demo_layers(sizes: Sequence[int] = DEMO_LAYERS, seed: int = DEMO_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed, seeded weights: the same on every machine and in every worker."""
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            (rng.standard_normal(n_out) * 0.1).astype(np.float32),
        )
        for n_in, n_out in itertools.pairwise(sizes)
    ]


def demo_model(name: str = "mlp") -> MLP:
    """The built-in demo: ``INPUT0`` FP32 [-1, 64] -> ``OUTPUT0`` FP32 [-1, 10]."""
    return MLP(name, demo_layers())
