"""gRPC's ``ModelInferRequest`` in and ``ModelInferResponse`` out, through the HTTP API's core.

A request becomes the JSON document's shape with every input's data as binary
(``raw_input_contents`` as they are, typed ``contents`` packed the same way), and goes through
:func:`worker.api.tensors.decode_request`: one validation for both transports, the same
refusals word for word. Outputs are always raw (``raw_output_contents``), as tritonclient
expects, encoded by :func:`worker.api.outputs.output` as the binary extension's are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..api import outputs, strings, tensors
from ..api.errors import bad_request
from ..models import Model
from ..models.base import DATATYPES
from .protocol import ModelInferResponse

#: The typed contents field that carries each datatype (FP16 and BF16 have none: raw only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class GrpcWire:
    """:class:`worker.api.inference.Wire` for ``ModelInfer``: a parsed request in, a serialized
    response out."""

    protocol = "grpc"

    def decode(self, model: Model, body: Any, header_length: str | None) -> tensors.InferRequest:
        raw = body.raw_input_contents
        if raw and len(raw) != len(body.inputs):
            raise bad_request(f"raw_input_contents has {len(raw)} entries for {len(body.inputs)} inputs: one each")
        inputs, blobs = [], []
        for i, tensor in enumerate(body.inputs):
            blob = raw[i] if raw else _packed(tensor)
            parameters = {"binary_data_size": len(blob)}
            inputs.append(
                {
                    "name": tensor.name,
                    "datatype": tensor.datatype,
                    "shape": list(tensor.shape),
                    "parameters": parameters,
                }
            )
            blobs.append(blob)
        document: dict[str, Any] = {"inputs": inputs, "parameters": {"binary_data_output": True}}
        if body.id:
            document["id"] = body.id
        if body.outputs:
            document["outputs"] = [{"name": output.name} for output in body.outputs]
        return tensors.decode_request(model, document, b"".join(blobs))

    def encode(
        self, model: Model, request: tensors.InferRequest, results: Mapping[str, Any]
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        response = ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id or "")
        for spec, _ in request.outputs:
            shape, blob, _ = outputs.output(model, spec, results[spec.name], True)
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
            response.raw_output_contents.append(blob)
        return response.SerializeToString(), []


GRPC = GrpcWire()


def _packed(tensor: Any) -> bytes:
    """A tensor's typed ``contents`` in the binary extension's form, so that the core checks
    them as it checks raw data; an input of a datatype no typed field carries gives none (and
    the core refuses its datatype, or its size)."""
    where = f"input {tensor.name!r}"
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        if tensor.datatype in DATATYPES:
            raise bad_request(f"{where}: {tensor.datatype} has no typed contents; send raw_input_contents")
        return b""
    values = getattr(tensor.contents, field)
    if all(d >= 0 for d in tensor.shape) and len(values) != math.prod(tensor.shape):
        needs = math.prod(tensor.shape)
        raise bad_request(f"{where}: contents has {len(values)} values but shape {list(tensor.shape)} needs {needs}")
    if tensor.datatype == "BYTES":
        return strings.to_binary(list(values))
    try:
        return np.asarray(values, dtype=DATATYPES[tensor.datatype]).tobytes()
    except (OverflowError, ValueError) as exc:
        raise bad_request(f"{where}: contents are no {tensor.datatype} values: {exc}") from None
