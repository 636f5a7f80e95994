"""The messages of ``inference.GRPCInferenceService``, from ``inference.desc`` (compiled from
``inference.proto``), in a descriptor pool of their own: see the comment in the ``.proto``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "inference.GRPCInferenceService"

_files = descriptor_pb2.FileDescriptorSet.FromString((Path(__file__).parent / "inference.desc").read_bytes())
_pool = descriptor_pool.DescriptorPool()
for _file in _files.file:
    _pool.Add(_file)


def message(name: str) -> Any:
    """The class of message ``inference.<name>``."""
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"inference.{name}"))


#: Each method: (request class, response class, client streaming).
METHODS: dict[str, tuple[Any, Any, bool]] = {
    method.name: (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
        method.client_streaming,
    )
    for method in _pool.FindServiceByName(SERVICE).methods
}

ModelInferRequest = message("ModelInferRequest")
ModelInferResponse = message("ModelInferResponse")
InferTensorContents = message("InferTensorContents")
