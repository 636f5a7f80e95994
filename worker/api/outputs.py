"""Inference responses out: a model's outputs as JSON or Triton's binary tensor extension, and
KServe V1 predictions.

Sans-IO, like :mod:`.tensors` the other way: arrays in, bytes and headers out. What a model
returns that the protocol cannot carry (no array, the wrong shape, NaN in JSON) is a 500 with
a one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..models import Model, TensorSpec
from . import jsonio, strings
from .errors import HTTPError
from .tensors import HEADER_LENGTH, InferRequest


def output_array(model: Model, spec: TensorSpec, value: Any) -> np.ndarray:
    """A model's output as an array: BYTES as objects (numpy's own strings would drop trailing
    NUL bytes); a 500 for what is no array (ragged lists) or not of the shape the model declares."""
    try:
        array = np.asarray(value, dtype=object) if spec.datatype == "BYTES" else np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise HTTPError(500, f"model {model.name!r} returned output {spec.name!r} that is no array: {exc}") from None
    # A shape of [] is a scalar or, as onnxruntime reports it too, a tensor of unknown rank.
    if spec.shape and not spec.accepts(array.shape):
        shape, declared = list(array.shape), list(spec.shape)
        raise HTTPError(500, f"model {model.name!r} returned output {spec.name!r} of shape {shape}, not {declared}")
    return array


def encode_infer(
    model: Model, request: InferRequest, results: Mapping[str, np.ndarray]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The response body and its extra headers."""
    outputs = []
    blobs: list[bytes] = []
    for spec, binary in request.outputs:
        shape, blob, data = output(model, spec, results[spec.name], binary)
        entry: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": shape}
        if blob is not None:
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    header = jsonio.dumps(response)
    if not blobs:
        return header, [(b"content-type", b"application/json")]
    return header + b"".join(blobs), [
        (b"content-type", b"application/octet-stream"),
        (HEADER_LENGTH.encode(), str(len(header)).encode()),
    ]


def output(model: Model, spec: TensorSpec, value: Any, binary: bool) -> tuple[list[int], bytes | None, Any]:
    """One output's shape, and its binary data (when ``binary``) or its values for JSON (flat);
    a 500 for what JSON cannot carry."""
    if spec.datatype == "BYTES":
        array = output_array(model, spec, value)
        elements = strings.as_bytes(array, model.name, spec.name)
        if binary:
            return list(array.shape), strings.to_binary(elements), None
        return list(array.shape), None, strings.to_json(elements, model.name, spec.name)
    array = output_array(model, spec, value)
    try:
        array = np.require(array, dtype=spec.dtype, requirements="C")  # a scalar stays one
    except (ValueError, TypeError, OverflowError) as exc:
        raise HTTPError(
            500, f"model {model.name!r} returned output {spec.name!r} that is no {spec.datatype} array: {exc}"
        ) from None
    if binary:
        return list(array.shape), array.tobytes(), None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        message = f"model {model.name!r} returned NaN or infinity, which JSON cannot carry"
        raise HTTPError(500, f"{message}; ask for binary outputs")
    return list(array.shape), None, array.ravel()


def v1_predictions(model: Model, output: Any) -> bytes:
    """A V1 ``:predict`` response: the first output's values as ``predictions``."""
    spec = model.outputs[0]
    array = output_array(model, spec, output)
    if spec.datatype == "BYTES":
        texts = strings.to_v1(strings.as_bytes(array, model.name, spec.name))
        return jsonio.dumps({"predictions": np.array(texts, dtype=object).reshape(array.shape).tolist()})
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise HTTPError(500, f"model {model.name!r} returned NaN or infinity, which JSON cannot carry")
    return jsonio.dumps({"predictions": array})
