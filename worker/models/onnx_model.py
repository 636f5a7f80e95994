"""An ONNX model served with onnxruntime on the CPU: ``--model NAME=path/model.onnx``.

Everything the protocol needs comes from the model file: its inputs and outputs, their
datatypes and shapes (a dynamic dimension is -1). When the first dimension of every input and
output is the same named dynamic dimension (``batch``, say), it is the batch: the model batches
(``max_batch_size`` > 0) and requests may be joined by dynamic batching. onnxruntime's thread
pool gets the threads the supervisor gave this worker (the same figure numpy's BLAS gets;
``--threads-per-worker``).

onnxruntime is an optional extra (``pip install ".[onnx]"``, or onnxruntime itself); without it, a
``.onnx`` model is one clear error at load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ipc.contract import formats

from .base import Model, ModelError, TensorSpec, as_text

#: ONNX tensor element types, as onnxruntime names them, and the protocol's datatypes.
DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
#: A sequence of maps from class labels to probabilities, one map per row: what skl2onnx's
#: ZipMap makes of a classifier's probabilities (its default). Served as FP32 [-1, -1], each
#: row the map's values, in its (the classes') order.
ZIPMAP = re.compile(r"seq\(map\((int64|string),tensor\(float\)\)\)")
#: The largest batch a request may carry, when the model batches (as the numpy MLP's).
MAX_BATCH_SIZE = 1024
INSTALL = formats.install_hint(formats.named("onnx"))


def threads() -> int:
    """The threads this worker's numerical libraries may use, as the supervisor set them for
    BLAS and OpenMP before the worker started (0: the library's own default)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


class OnnxModel(Model):
    platform = "onnxruntime_onnx"

    def __init__(self, name: str, path: str, version: str = "1") -> None:
        self.name = name
        self.version = version
        self.path = path
        if not os.path.isfile(path):
            raise ModelError(f"model {name!r}: no such file {path}")
        try:
            import onnxruntime
        except ImportError:
            raise ModelError(f"model {name!r}: serving {os.path.basename(path)} needs onnxruntime: {INSTALL}") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # its failures come back as exceptions (400s), not log lines
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(f"model {name!r}: onnxruntime cannot load {path}: {_first_line(exc)}") from None
        graph_inputs, graph_outputs = self.session.get_inputs(), self.session.get_outputs()
        #: The ZipMap outputs: one map per row, whatever their (empty) shape says.
        self._zipmaps = {t.name for t in graph_outputs if ZIPMAP.fullmatch(t.type)}
        tensors = [t for t in [*graph_inputs, *graph_outputs] if t.name not in self._zipmaps]
        # The batch: a dynamic first dimension in every input and output, named alike where it
        # is named ("batch" in each, or "N"; skl2onnx names none), so that requests can be
        # joined and split by it (and a model answering other than one row per row is a 500).
        # Anything else (a fixed first dimension, a scalar, two names) is served as it is.
        firsts = [t.shape[0] if t.shape else 0 for t in tensors]
        dynamic = all(not isinstance(d, int) or d < 0 for d in firsts)
        batched = dynamic and len({d for d in firsts if isinstance(d, str)}) <= 1
        self.max_batch_size = MAX_BATCH_SIZE if batched else 0
        self.inputs = tuple(self._spec(t) for t in graph_inputs)
        self.outputs = tuple(self._spec(t) for t in graph_outputs)

    def _spec(self, tensor: Any) -> TensorSpec:
        if tensor.name in self._zipmaps:
            return TensorSpec(tensor.name, "FP32", (-1, -1))
        datatype = DATATYPES.get(tensor.type)
        if datatype is None:
            raise ModelError(
                f"model {self.name!r}: {tensor.name!r} is a {tensor.type}, which this server cannot carry "
                f"(it serves {', '.join(sorted(set(DATATYPES.values())))}, and ZipMap's sequences of maps)"
            )
        # A named or unknown dimension is dynamic: -1.
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in tensor.shape)
        return TensorSpec(tensor.name, datatype, shape)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        names = [spec.name for spec in self.outputs]
        feed = {spec.name: _feed(spec, inputs[spec.name]) for spec in self.inputs}
        try:
            results = self.session.run(names, feed)
        except Exception as exc:  # onnxruntime's own types: a shape the graph cannot take, say
            raise ModelError(_first_line(exc)) from None
        return {
            name: _unzip(result) if name in self._zipmaps else result
            for name, result in zip(names, results, strict=True)
        }


def _unzip(maps: list[dict[Any, float]]) -> np.ndarray:
    """A ZipMap's maps as rows of their values: [rows, classes]."""
    if not maps:
        return np.zeros((0, 0), dtype=np.float32)
    return np.array([list(row.values()) for row in maps], dtype=np.float32)


def _feed(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """An input as onnxruntime takes it: BYTES (bytes) as the str its string tensors hold."""
    return as_text(array, spec.name) if spec.datatype == "BYTES" else np.asarray(array, dtype=spec.dtype)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
