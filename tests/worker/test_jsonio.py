"""A large body's arrays of numbers parsed a piece at a time (worker.api.jsonio) say exactly what a
parse of the whole says: the same arrays, the same refusals in the same words. The thresholds
are made small here, so that bodies of a few hundred bytes are cut into many pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker.api import jsonio, tensors
from worker.api.errors import HTTPError
from worker.models import Model, TensorSpec


class Typed(Model):
    """One input of ``datatype`` and shape (-1, 4), answered as it is."""

    def __init__(self, datatype: str, shape: tuple[int, ...] = (-1, 4)) -> None:
        self.name = "typed"
        self.inputs = (TensorSpec("IN", datatype, shape),)
        self.outputs = (TensorSpec("OUT", datatype, shape),)

    def predict(self, inputs):
        return {"OUT": inputs["IN"]}


def infer(data: str, datatype: str = "FP32", shape: str = "[3, 4]", more: str = "") -> bytes:
    tensor = f'{{"name": "IN", "datatype": "{datatype}", "shape": {shape}, "data": {data}}}'
    return f'{{"id": "r1", "inputs": [{tensor}]{more}}}'.encode()


def outcome(monkeypatch, body: bytes, datatype: str, pieces: bool, v1: bool = False) -> object:
    """What decoding ``body`` comes to: the arrays (and id), or the refusal."""
    with monkeypatch.context() as patch:
        patch.setattr(jsonio, "LARGE_BODY", 0 if pieces else 1 << 62)
        patch.setattr(jsonio, "LONG_ARRAY", 8)
        patch.setattr(jsonio, "PIECE", 7)
        patch.setattr(jsonio, "_SCAN", 16)
        try:
            if v1:
                return tensors.v1_instances(Typed(datatype), body).tolist()
            request = tensors.decode_infer(Typed(datatype), body, None)
        except HTTPError as exc:
            return exc.status, exc.message
    return request.id, {name: (array.dtype.str, array.tolist()) for name, array in request.inputs.items()}


GOOD = [
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", "FP32"),
    ("[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]", "FP32"),
    ("[\n  [1.5e3, -2, 0.25, 1E-2],\n  [5 , 6,7,8],[9,10,11,12]\n]", "FP64"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 127]", "INT8"),
    ("[true, false, true, true, false, false, true, true, false, false, true, true]", "BOOL"),
    ("[18446744073709551615, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", "UINT64"),
]
BAD = [
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]", "FP32"),  # too few
    ("[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]", "FP32"),  # a short row
    ("[[1, 2, 3, 4], [5, 6, 7, 8], 9]", "FP32"),  # a row that is not one
    ("[[1, 2, 3, 4], [5, 6, 7, 8]]", "FP32"),  # too few rows
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, true]", "FP32"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, null]", "INT32"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1.5]", "INT32"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 128]", "INT8"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1e39]", "FP32"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1e999]", "FP32"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", "BYTES"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2]", "FP32"),  # too many
    # Not JSON, inside the array and outside it.
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,, 12]", "FP32"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,]", "FP32"),
    ("[1, 2, 3, 4, 5, 6, 7, x, 9, 10, 11, 12]", "FP32"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1.]", "FP32"),
    ("[01, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", "FP32"),
    ('[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, "12"]', "FP32"),
    ("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, {}]", "FP32"),
    ("[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]", "FP32"),
    ("[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]]", "FP32"),
]


@pytest.mark.parametrize(("data", "datatype"), GOOD + BAD)
def test_pieces_decode_and_refuse_as_a_whole_parse_does(monkeypatch, data, datatype):
    body = infer(data, datatype)
    whole = outcome(monkeypatch, body, datatype, pieces=False)
    assert outcome(monkeypatch, body, datatype, pieces=True) == whole
    assert (isinstance(whole, tuple) and whole[0] == 400) == ((data, datatype) in BAD)


@pytest.mark.parametrize(
    "body",
    [
        # A mistake outside the arrays, said at its place in the whole body (past a non-ASCII id).
        infer("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", more=', "parameters" {}').replace(b'"r1"', '"é\\n"'.encode()),
        infer("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, x]").replace(b'"r1"', '"\\u00e9\\n é"'.encode()),
        infer("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n,\n"),
        # Arrays in strings are strings: an id that looks like one, a newline in one.
        infer("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]").replace(b'"r1"', b'"[1, 2, 3, 4, 5, 6, 7, 8, 9]"'),
        infer("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]").replace(b'"r1"', b'"\\"[1, 2, 3, 4, 5, 6, 7, 8, 9]"'),
        # An array no tensor takes is parsed all the same.
        infer("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", more=', "parameters": {"x": [1, 2, 3, 4, 5, 6, 7]}'),
        infer("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", more=', "parameters": {"x": [1, 2, 3, 4, 5,, 6, 7]}'),
        b"[1, 2, 3, 4, 5, 6, 7, 8, 9]",
        b"[1, 2, 3, 4, 5, 6, 7, 8, 9] 1",
    ],
)
def test_whole_bodies_decode_and_refuse_as_a_whole_parse_does(monkeypatch, body):
    assert outcome(monkeypatch, body, "FP32", pieces=True) == outcome(monkeypatch, body, "FP32", pieces=False)


@pytest.mark.parametrize(
    "instances",
    [
        "[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]",
        "[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]",
        "[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12,]]",
        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]",
    ],
)
def test_v1_instances_decode_and_refuse_as_a_whole_parse_does(monkeypatch, instances):
    body = f'{{"instances": {instances}}}'.encode()
    for datatype in ("FP32", "BYTES"):
        whole = outcome(monkeypatch, body, datatype, pieces=False, v1=True)
        assert outcome(monkeypatch, body, datatype, pieces=True, v1=True) == whole


def test_a_large_body_of_many_small_values_outside_arrays_of_numbers_is_a_413():
    """Strings cost a Python object each: 300,000 of them in 1.2 MB would take 20 MB or more."""
    strings = json.dumps(["ab"] * 300_000)
    body = infer("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]", more=f', "parameters": {{"x": {strings}}}')
    with pytest.raises(HTTPError) as refused:
        tensors.decode_infer(Typed("FP32"), body, None)
    assert refused.value.status == 413
    values = body.count(b",") + body.count(b"[") + body.count(b"{") + 1
    assert refused.value.message == (
        f"a JSON body of {len(body)} bytes may hold {2**17} values outside arrays of numbers, and this one has"
        f" up to {values}: send tensors as arrays of numbers in 'data', or as bytes with the binary tensor"
        " extension (parameters.binary_data_size)"
    )


def test_a_large_array_of_numbers_is_made_a_piece_at_a_time_into_its_tensor():
    """Real thresholds: 2 MiB of one-digit values become the tensor without a list of them."""
    rows = 2 * 1024 * 1024 // 8
    body = infer("[" + ",".join(["7"] * (rows * 4)) + "]", shape=f"[{rows}, 4]").replace(b'"r1"', b'"[7,7]"')
    document, numbers = jsonio.loads_large(body)
    assert [type(array) for array in numbers] == [jsonio.Numbers] and document["id"] == "[7,7]"
    assert document["inputs"][0]["data"] is numbers[0] and len(numbers[0]) == rows * 4
    request = tensors.decode_infer(Typed("FP32"), body, None)
    assert request.inputs["IN"].shape == (rows, 4) and (request.inputs["IN"] == np.float32(7)).all()


def test_a_nested_array_is_not_allocated_for_a_shape_it_cannot_make(monkeypatch):
    """[3, 2**36] of FP32 would be 768 GiB: refused as the lists not making it, as a whole parse says."""
    body = infer("[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]", shape=f"[3, {2**36}]")
    with monkeypatch.context() as patch:
        patch.setattr(jsonio, "LARGE_BODY", 0)
        patch.setattr(jsonio, "LONG_ARRAY", 20)  # the data, not the shape
        with pytest.raises(HTTPError) as refused:
            tensors.decode_infer(Typed("FP32", (-1, -1)), body, None)
    assert refused.value.message == (
        f"input 'IN': the nested lists do not make shape [3, {2**36}] (equal-length lists, one level a dimension)"
    )
