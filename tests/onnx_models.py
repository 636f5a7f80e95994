"""ONNX graphs for the tests, built with the ``onnx`` package: never downloaded."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: The protocol's datatypes and ONNX's element types, every one the server carries.
ELEMENT_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
# A opset onnxruntime 1.17 and later all run (and of its ML operators, for LabelEncoder).
OPSET = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]


def _save(graph: onnx.GraphProto, path: str) -> str:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="inference-supervisor tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def classifier(path: str, seed: int = 3) -> str:
    """``features`` FP32 [batch, 4] -> ``scores`` FP32 [batch, 3] (ReLU(xW + b)) and ``label``
    INT64 [batch] (the argmax): a small iris-like classifier with two outputs."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B")
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=[weights, bias],
    )
    return _save(graph, path)


def identity(path: str, datatype: str, batched: bool = True, output_first: str = "batch") -> str:
    """``x`` -> ``y`` of one datatype, [batch, 2] (or [3, 2] when not ``batched``); the output's
    first dimension named ``output_first``."""
    element = ELEMENT_TYPES[datatype] if datatype in ELEMENT_TYPES else getattr(TensorProto, datatype)
    shape: list[int | str] = ["batch", 2] if batched else [3, 2]
    out_shape = [output_first, 2] if batched else shape
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("x", element, shape)],
        [helper.make_tensor_value_info("y", element, out_shape)],
    )
    return _save(graph, path)


#: The words ``vocabulary`` knows, and their ids; any other word is -1.
WORDS = {"cat": 0, "dog": 1, "café": 2, "": 3}


def vocabulary(path: str) -> str:
    """``word`` BYTES [batch] -> ``id`` INT64 [batch] (a LabelEncoder over WORDS) and ``echo``
    BYTES [batch], the words as they came: strings in and out of a real graph."""
    nodes = [
        helper.make_node(
            "LabelEncoder",
            ["word"],
            ["id"],
            domain="ai.onnx.ml",
            keys_strings=list(WORDS),
            values_int64s=list(WORDS.values()),
            default_int64=-1,
        ),
        helper.make_node("Identity", ["word"], ["echo"]),
    ]
    graph = helper.make_graph(
        nodes,
        "vocabulary",
        [helper.make_tensor_value_info("word", TensorProto.STRING, ["batch"])],
        [
            helper.make_tensor_value_info("id", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"]),
        ],
    )
    return _save(graph, path)
