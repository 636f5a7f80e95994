"""The model interface.

A model has a name, a version, typed input and output tensors, and a ``predict`` from a mapping
of numpy arrays to a mapping of numpy arrays. ``predict`` runs on a worker thread, never on the
event loop, so it may block; it must be safe to call from several threads at once or guard
itself. ``load`` runs once before the worker reports ready, ``unload`` once as it exits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

#: Open Inference Protocol datatypes and their numpy equivalents.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    #: Strings and byte strings: an object array of ``bytes`` (models may answer ``str`` too).
    "BYTES": np.dtype(object),
}


class ModelError(Exception):
    """A model could not be loaded, or refused its input (a client error)."""


def as_text(array: np.ndarray, name: str) -> np.ndarray:
    """A BYTES tensor (an object array of ``bytes``) as an object array of ``str``, the strings
    libraries such as onnxruntime and scikit-learn take; a :class:`ModelError` for bytes that are
    not UTF-8."""
    texts = np.empty(array.shape, dtype=object)
    try:
        texts.ravel()[:] = [value.decode() for value in array.ravel().tolist()]
    except UnicodeDecodeError:
        raise ModelError(f"{name!r} is a string tensor: its elements must be UTF-8") from None
    return texts


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A named, typed tensor; -1 in ``shape`` is a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(f"tensor {self.name!r}: unsupported datatype {self.datatype!r}")

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype]

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a tensor of ``shape`` fits this spec."""
        if len(shape) != len(self.shape):
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, shape, strict=True))

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Model:
    """Base class for served models; subclasses set the attributes and ``predict``."""

    name: str = "model"
    version: str = "1"
    platform: str = "numpy"
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    #: > 0 when the first dimension of every tensor is the batch (Triton's meaning).
    max_batch_size: int = 0
    #: The dynamic batching delay a repository's config.toml gives this model, in ms.
    batch_delay_ms: float | None = None

    @property
    def key(self) -> str:
        """This version's key wherever versions are told apart (statistics, pins, quarantine):
        NAME/VERSION (no name holds a /)."""
        return f"{self.name}/{self.version}"

    @property
    def order(self) -> tuple[str, bool, int, str]:
        """Models by name, then version: numbers as numbers, after any other (so the highest
        number is a model's last version, its default)."""
        numeric = self.version.isascii() and self.version.isdigit()
        return self.name, numeric, int(self.version) if numeric else 0, self.version

    def load(self) -> None:
        """Called once in the worker before it reports ready."""

    def unload(self) -> None:
        """Called once as the worker exits."""

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        raise NotImplementedError
