"""Inference requests in: JSON, Triton's binary tensor extension and KServe V1, decoded to arrays.

Sans-IO, like the codec in ``ipc``: bytes and headers in, arrays out (the way back is
:mod:`.outputs`). Every refusal is an :class:`~worker.api.errors.HTTPError` with a one-line
reason, and a request is checked against its model's inputs before its data is decoded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import reprlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..models import Model, TensorSpec
from . import jsonio, strings
from .errors import HTTPError, bad_request

HEADER_LENGTH = "inference-header-content-length"


@dataclasses.dataclass
class InferRequest:
    """A decoded request: arrays by input name, and how each output is to be returned."""

    id: str | None
    inputs: dict[str, np.ndarray]
    #: (output spec, as binary?) in response order.
    outputs: list[tuple[TensorSpec, bool]]


#: The most elements a tensor's shape may describe, zero dimensions aside: numpy cannot even
#: describe an empty array of shape [0, 2**62] (and nothing real comes near this).
MAX_NOMINAL_ELEMENTS = 2**40


def _shape(raw: object, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise bad_request(f"{where}: 'shape' must be a list of non-negative integers")
    if math.prod(max(d, 1) for d in raw) > MAX_NOMINAL_ELEMENTS:
        raise bad_request(f"{where}: shape {raw} is too large")
    return tuple(raw)


def _json_array(data: object, spec: TensorSpec, shape: tuple[int, ...], where: str) -> np.ndarray:
    if data is None:
        raise bad_request(f"{where}: needs 'data' or parameters.binary_data_size")
    if isinstance(data, jsonio.Numbers):
        return _numbers(data, spec, shape, where)
    return _typed(_leaves(data, shape, where), spec, where).reshape(shape)


def _leaves(data: object, shape: tuple[int, ...], where: str) -> list[Any]:
    """The values of JSON ``data`` for a tensor of ``shape``, flat: ``data`` is either flat, or
    nested list by list exactly as the shape says. Nothing is allocated for data that does not
    fit: its lengths are checked first."""
    if not isinstance(data, list):
        raise bad_request(f"{where}: 'data' must be a list")
    if len(shape) > 1 and data and isinstance(data[0], list):
        return _unnest(data, shape, where, shape)
    if len(data) != math.prod(shape):
        raise bad_request(f"{where}: 'data' has {len(data)} elements but shape {list(shape)} needs {math.prod(shape)}")
    return data


def _unnest(rows: list[Any], shape: tuple[int, ...], where: str, whole: tuple[int, ...]) -> list[Any]:
    """The values of ``rows`` nested as ``shape`` says (part of a tensor of shape ``whole``)."""
    rows = [rows]
    for dim in shape:
        if any(type(row) is not list or len(row) != dim for row in rows):
            nested = "equal-length lists, one level a dimension"
            raise bad_request(f"{where}: the nested lists do not make shape {list(whole)} ({nested})")
        rows = list(itertools.chain.from_iterable(rows))
    return rows


def _numbers(
    data: jsonio.Numbers, spec: TensorSpec, shape: tuple[int, ...], where: str, v1: bool = False
) -> np.ndarray:
    """An array of numbers left in a large body (:mod:`.jsonio`), checked as :func:`_leaves` and
    :func:`_typed` check a list, made a piece at a time into the array it fills: what it costs is
    that array and a piece's Python values."""
    nested = len(shape) > 1 and data.nested
    elements = len(data)
    # Nested, its values are checked a piece at a time: a shape it cannot make (more values than
    # it has bytes) is refused before its array is allocated.
    if nested and (elements != shape[0] or math.prod(shape) > data.end - data.start):
        nesting = "equal-length lists, one level a dimension"
        raise bad_request(f"{where}: the nested lists do not make shape {list(shape)} ({nesting})")
    if not nested and elements != math.prod(shape):
        raise bad_request(f"{where}: 'data' has {elements} elements but shape {list(shape)} needs {math.prod(shape)}")
    array = np.empty(math.prod(shape), dtype=spec.dtype)
    filled = 0
    for values in data.pieces():
        if nested:
            values = _unnest(values, (len(values), *shape[1:]), where, shape)
        typed = strings.from_v1(values, where) if v1 and spec.datatype == "BYTES" else _typed(values, spec, where)
        array[filled : filled + len(typed)] = typed
        filled += len(typed)
    return array.reshape(shape)


#: Per kind of datatype (numpy's kind codes): the Python types its JSON values may have, and
#: what to call them. type(), not isinstance(): a bool is no integer here.
_TAKES: dict[str, tuple[set[type], str]] = {
    "b": ({bool}, "true or false"),
    "i": ({int}, "integers"),
    "u": ({int}, "integers"),
    "f": ({int, float}, "numbers"),
}


def _typed(values: list[Any], spec: TensorSpec, where: str) -> np.ndarray:
    """JSON ``values`` as a flat array of ``spec``'s datatype.

    A 400 for values of the wrong JSON type (strings, null, booleans as numbers, numbers as
    booleans, fractions as integers) and for values the datatype cannot hold, which numpy would
    wrap or round to infinity. The types are checked before numpy sees the values: left to
    itself, numpy reads a list with one long string among many numbers as an array of strings
    that long, and a 1 MB request would take gigabytes.
    """
    if spec.datatype == "BYTES":
        return strings.from_json(values, where)
    allowed, what = _TAKES[spec.dtype.kind]
    if not set(map(type, values)) <= allowed:
        wrong = next(value for value in values if type(value) not in allowed)
        name = "null" if wrong is None else type(wrong).__name__
        raise bad_request(f"{where}: {spec.datatype} data must be {what}, not {name}")
    if not values or spec.dtype.kind == "b":
        return np.array(values, dtype=spec.dtype)
    if spec.dtype.kind == "f":
        try:
            wide = np.array(values, dtype=np.float64)
        except OverflowError:
            raise bad_request(f"{where}: a value is out of range for {spec.datatype}") from None
        with np.errstate(over="ignore"):
            array = wide.astype(spec.dtype)
        finite = np.isfinite(array)
        if not finite.all():
            raise bad_request(f"{where}: value {values[int(np.argmin(finite))]} is not finite as {spec.datatype}")
        return array
    try:
        wide = np.array(values, dtype=np.int64)
    except OverflowError:
        wide = np.array(values, dtype=object)  # past int64 (UINT64 takes some): Python's integers
    info = np.iinfo(spec.dtype)
    low, high = wide.min(), wide.max()
    if low < info.min or high > info.max:
        raise bad_request(f"{where}: value {low if low < info.min else high} is out of range for {spec.datatype}")
    return wide.astype(spec.dtype)


#: The most bytes one value takes in a JSON request (a float's repr, a comma, some spacing).
JSON_BYTES_PER_VALUE = 48
#: Room in a request for everything that is not the values (names, shapes, parameters).
REQUEST_OVERHEAD = 64 * 1024


def largest_body(model: Model) -> int | None:
    """The largest body a valid request for ``model`` can have, when its batch is limited and its
    tensors' other dimensions are fixed; ``None`` when nothing bounds it but --max-body-size.

    A larger body cannot hold a request the model would take: it is refused before it is read,
    instead of costing the worker the memory of parsing it first."""
    if model.max_batch_size <= 0:
        return None
    values = 0
    for spec in model.inputs:
        rest = spec.shape[1:]
        if -1 in rest or spec.datatype == "BYTES":  # a string can be as long as the body
            return None
        values += model.max_batch_size * math.prod(rest)
    return values * max(JSON_BYTES_PER_VALUE, 8) + REQUEST_OVERHEAD


def decode_infer(model: Model, body: bytes, header_length: str | None) -> InferRequest:
    """Decode an infer request body for ``model``."""
    blobs = b""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()):  # int() takes "+5", " 5", "5_0"
            raise bad_request(f"{HEADER_LENGTH} must be a number of bytes, not {reprlib.repr(header_length)}")
        json_length = int(header_length)
        if json_length > len(body):
            raise bad_request(f"{HEADER_LENGTH} is {json_length} but the body has {len(body)} bytes")
        if json_length == 0:
            return _decode_raw(model, body)
        body, blobs = body[:json_length], body[json_length:]
    request, numbers = jsonio.loads_large(body)
    with _json_first(numbers):
        return decode_request(model, request, blobs)


def decode_request(model: Model, request: Any, blobs: bytes) -> InferRequest:
    if not isinstance(request, dict):
        raise bad_request("the request must be a JSON object")
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_request("'inputs' must be a non-empty list")
    if len(raw_inputs) > len(model.inputs):
        raise bad_request(f"'inputs' has {len(raw_inputs)} entries; model {model.name!r} takes {len(model.inputs)}")

    specs = {spec.name: spec for spec in model.inputs}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise bad_request(f"inputs[{i}] must be an object with a 'name'")
        name = raw["name"]
        where = f"input {name!r}"
        spec = specs.get(name)
        if spec is None:
            raise bad_request(f"unknown input {name!r} for model {model.name!r}; expected {sorted(specs)}")
        if name in inputs:
            raise bad_request(f"{where} is given twice")
        if raw.get("datatype") != spec.datatype:
            raise bad_request(f"{where}: datatype must be {spec.datatype}, not {raw.get('datatype')!r}")
        shape = _shape(raw.get("shape"), where)
        if not spec.accepts(shape):
            raise bad_request(f"{where}: shape {list(shape)} does not match {list(spec.shape)}")
        _check_size(model, spec, shape, where)
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise bad_request(f"{where}: 'parameters' must be an object")
        size = parameters.get("binary_data_size")
        if size is None:
            inputs[name] = _json_array(raw.get("data"), spec, shape, where)
            continue
        count = math.prod(shape)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad_request(f"{where}: binary_data_size must be a non-negative integer, not {size!r}")
        if spec.datatype != "BYTES" and size != count * spec.dtype.itemsize:
            needs = count * spec.dtype.itemsize
            raise bad_request(
                f"{where}: binary_data_size is {size} but shape {list(shape)} of {spec.datatype} needs {needs}"
            )
        if offset + size > len(blobs):
            raise bad_request(f"{where}: the body holds {len(blobs) - offset} bytes of binary data, not {size}")
        if spec.datatype == "BYTES":
            array = strings.from_binary(memoryview(blobs)[offset : offset + size], count, where)
        else:
            array = np.frombuffer(blobs, dtype=spec.dtype, count=count, offset=offset)
        inputs[name] = array.reshape(shape)
        offset += size
    if offset != len(blobs):
        raise bad_request(f"the body has {len(blobs) - offset} bytes of binary data that no input claims")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise bad_request(f"missing inputs {missing} for model {model.name!r}")
    _check_batch(model, inputs)
    return InferRequest(_request_id(request), inputs, _requested_outputs(model, request))


@contextlib.contextmanager
def _json_first(numbers: list[jsonio.Numbers]) -> Iterator[None]:
    """A large body's arrays of numbers, parsed as the block ends if no tensor took them, and
    before any other refusal of it: a body that is not JSON is refused as such, whatever else
    is wrong with it or how much of it was read, as a parse of the whole would."""
    try:
        yield
    except HTTPError:
        for array in numbers:
            array.check()
        raise
    for array in numbers:
        if not array.read:
            array.check()


def _request_id(request: Mapping[str, Any]) -> str | None:
    value = request.get("id")
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request("'id' must be a string")
    return value


def _requested_outputs(model: Model, request: Mapping[str, Any]) -> list[tuple[TensorSpec, bool]]:
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad_request("'parameters' must be an object")
    default_binary = parameters.get("binary_data_output") is True
    raw_outputs = request.get("outputs")
    if raw_outputs is None:
        return [(spec, default_binary) for spec in model.outputs]
    if not isinstance(raw_outputs, list):
        raise bad_request("'outputs' must be a list")
    specs = {spec.name: spec for spec in model.outputs}
    if len(raw_outputs) > len(specs):
        # Each output at most once: naming one a thousand times must not make a response a
        # thousand times its size.
        raise bad_request(
            f"'outputs' names {len(raw_outputs)} outputs; model {model.name!r} has {len(specs)}: each at most once"
        )
    chosen: list[tuple[TensorSpec, bool]] = []
    for i, raw in enumerate(raw_outputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise bad_request(f"outputs[{i}] must be an object with a 'name'")
        spec = specs.get(raw["name"])
        if spec is None:
            raise bad_request(f"unknown output {raw['name']!r} for model {model.name!r}; expected {sorted(specs)}")
        if any(spec is seen for seen, _ in chosen):
            raise bad_request(f"output {spec.name!r} is asked for twice: each at most once")
        out_parameters = raw.get("parameters") or {}
        if not isinstance(out_parameters, dict):
            raise bad_request(f"output {spec.name!r}: 'parameters' must be an object")
        binary = out_parameters.get("binary_data", default_binary)
        chosen.append((spec, binary is True))
    return chosen


def _decode_raw(model: Model, body: bytes) -> InferRequest:
    """``Inference-Header-Content-Length: 0``: the whole body is the model's only input."""
    if len(model.inputs) != 1:
        raise bad_request(f"a raw binary request needs a model with one input; {model.name!r} has {len(model.inputs)}")
    (spec,) = model.inputs
    if spec.datatype == "BYTES":
        raise bad_request(f"a raw binary request cannot carry BYTES input {spec.name!r}; send a JSON header")
    fixed = math.prod(d for d in spec.shape if d != -1)
    itemsize = spec.dtype.itemsize
    if spec.shape.count(-1) > 1 or fixed == 0 or len(body) % (fixed * itemsize):
        raise bad_request(f"a raw body of {len(body)} bytes does not fit input {spec.name!r} {list(spec.shape)}")
    free = len(body) // (fixed * itemsize)
    shape = tuple(free if d == -1 else d for d in spec.shape)
    inputs = {spec.name: np.frombuffer(body, dtype=spec.dtype).reshape(shape)}
    _check_batch(model, inputs)
    return InferRequest(None, inputs, [(out, True) for out in model.outputs])


#: The most BYTES elements one input of a request may have (a batch of 64 sequences of 1024
#: tokens, say): each becomes a Python object of about 40 bytes more than its length, and a
#: model such as onnxruntime's copies them as str, so that a body of 4- or 5-byte elements would
#: otherwise make a worker take 20 times its size (a 63 MB body took 1.6 GB).
MAX_BYTES_ELEMENTS = 2**16


def _check_size(model: Model, spec: TensorSpec, shape: tuple[int, ...], where: str) -> None:
    """Before any data is decoded: a batch over ``max_batch_size`` and more BYTES elements than
    MAX_BYTES_ELEMENTS are refused while they cost nothing."""
    if model.max_batch_size > 0 and shape and shape[0] > model.max_batch_size:
        raise bad_request(f"{where}: batch of {shape[0]} is over max_batch_size {model.max_batch_size}")
    if spec.datatype == "BYTES" and math.prod(shape) > MAX_BYTES_ELEMENTS:
        count = math.prod(shape)
        raise bad_request(f"{where}: {count} BYTES elements are over the {MAX_BYTES_ELEMENTS} one input may have")


def _check_batch(model: Model, inputs: Mapping[str, np.ndarray]) -> None:
    """For a model that batches, the first dimension of every input is the batch: the same for
    all of them (as Triton requires; requests are joined and split by it), and at most
    ``max_batch_size``."""
    if model.max_batch_size <= 0:
        return
    sizes = {name: array.shape[0] if array.ndim else None for name, array in inputs.items()}
    if len(set(sizes.values())) > 1 or None in sizes.values():
        described = ", ".join(f"{name!r} {size}" for name, size in sizes.items())
        raise bad_request(f"every input's first dimension is the batch and must be the same: {described}")
    for name, size in sizes.items():
        if size is not None and size > model.max_batch_size:
            raise bad_request(f"input {name!r}: batch of {size} is over max_batch_size {model.max_batch_size}")


def v1_instances(model: Model, body: bytes) -> np.ndarray:
    """The single input of a V1 ``:predict`` request, from ``instances`` (or ``inputs``)."""
    request, numbers = jsonio.loads_large(body)
    with _json_first(numbers):
        return _v1_array(model, request)


def _v1_array(model: Model, request: Any) -> np.ndarray:
    if not isinstance(request, dict):
        raise bad_request("the request must be a JSON object")
    instances = request.get("instances", request.get("inputs"))
    if not isinstance(instances, (list, jsonio.Numbers)) or not instances:
        raise bad_request("'instances' must be a non-empty list")
    if len(model.inputs) != 1:
        raise bad_request(f"V1 predict needs a model with one input; {model.name!r} has {len(model.inputs)}")
    (spec,) = model.inputs
    # The shape the instances claim, read down their first elements; _leaves checks the rest.
    shape: list[int] = []
    node: Any = instances
    while isinstance(node, (list, jsonio.Numbers)) and len(shape) < len(spec.shape):
        shape.append(len(node))
        node = (node[0] if isinstance(node, list) else next(node.pieces())[0]) if node else None
    if not spec.accepts(tuple(shape)):
        raise bad_request(f"'instances' has shape {shape}, but {spec.name!r} needs {list(spec.shape)}")
    where = f"input {spec.name!r}"
    _check_size(model, spec, tuple(shape), where)
    if isinstance(instances, jsonio.Numbers):
        array = _numbers(instances, spec, tuple(shape), where, v1=True)
    else:
        values = _leaves(instances, tuple(shape), where)
        flat = strings.from_v1(values, where) if spec.datatype == "BYTES" else _typed(values, spec, where)
        array = flat.reshape(shape)
    _check_batch(model, {spec.name: array})
    return array
