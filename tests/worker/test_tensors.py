"""Tensor data against its datatype, in-process: the wrong JSON types and values out of range
are a 400 naming the input; BYTES tensors both ways, JSON and binary, with tritonclient's own
serialisation."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from worker.api import InferenceApp, ServingState
from worker.models import Model, TensorSpec

from .asgi import call

pytestmark = pytest.mark.anyio

DATATYPES = ("BOOL", "UINT8", "UINT64", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES")


class Echo(Model):
    """Answers its input as it was decoded."""

    def __init__(self, datatype: str) -> None:
        self.name = datatype.lower()
        self.inputs = (TensorSpec("INPUT0", datatype, (-1, -1)),)
        self.outputs = (TensorSpec("OUTPUT0", datatype, (-1, -1)),)

    def predict(self, inputs):
        return {"OUTPUT0": inputs["INPUT0"]}


@pytest.fixture(scope="module")
def app():
    return InferenceApp([Echo(datatype) for datatype in DATATYPES], ServingState())


async def infer(app, datatype, data, shape=None):
    shape = shape or [1, len(data)]
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": shape, "data": data}]})
    return await call(app, "POST", f"/v2/models/{datatype.lower()}/infer", body.encode())


REFUSED = [
    ("FP32", ["1.5", "2"], "input 'INPUT0': FP32 data must be numbers, not str"),
    ("FP32", [1.0, "2"], "input 'INPUT0': FP32 data must be numbers, not str"),
    ("FP32", [True, False], "input 'INPUT0': FP32 data must be numbers, not bool"),
    ("FP32", [1.0, None], "input 'INPUT0': FP32 data must be numbers, not null"),
    ("FP32", [1.0, {"a": 1}], "input 'INPUT0': FP32 data must be numbers, not dict"),
    ("FP32", [0.5, 1e39], "input 'INPUT0': value 1e+39 is not finite as FP32"),
    ("FP32", [-1e39], "input 'INPUT0': value -1e+39 is not finite as FP32"),
    ("FP16", [1, 70000], "input 'INPUT0': value 70000 is not finite as FP16"),
    ("FP64", ["1e308"], "input 'INPUT0': FP64 data must be numbers, not str"),
    ("INT8", [1, 300], "input 'INPUT0': value 300 is out of range for INT8"),
    ("INT8", [-129, 0], "input 'INPUT0': value -129 is out of range for INT8"),
    ("UINT8", [-1], "input 'INPUT0': value -1 is out of range for UINT8"),
    ("INT32", [2**31], "input 'INPUT0': value 2147483648 is out of range for INT32"),
    ("INT64", [2**63], "input 'INPUT0': value 9223372036854775808 is out of range for INT64"),
    ("UINT64", [-1, 1], "input 'INPUT0': value -1 is out of range for UINT64"),
    ("INT32", [1, 1.5], "input 'INPUT0': INT32 data must be integers, not float"),
    ("INT32", ["7"], "input 'INPUT0': INT32 data must be integers, not str"),
    ("INT32", [True], "input 'INPUT0': INT32 data must be integers, not bool"),
    ("BOOL", [1, 0], "input 'INPUT0': BOOL data must be true or false, not int"),
    ("BOOL", [0.5], "input 'INPUT0': BOOL data must be true or false, not float"),
    ("BOOL", ["true"], "input 'INPUT0': BOOL data must be true or false, not str"),
    ("BOOL", [True, None], "input 'INPUT0': BOOL data must be true or false, not null"),
    ("BYTES", ["a", 1], "input 'INPUT0': BYTES data must be strings, not int"),
    ("BYTES", [None], "input 'INPUT0': BYTES data must be strings, not null"),
    ("BYTES", ["a", ["b"]], "input 'INPUT0': BYTES data must be strings, not list"),
]


@pytest.mark.parametrize(
    "datatype, data, message", REFUSED, ids=[f"{dt} {json.dumps(data)}" for dt, data, _ in REFUSED]
)
async def test_json_data_of_the_wrong_type_or_range_is_a_400(app, datatype, data, message):
    response = await infer(app, datatype, data)
    assert response.status == 400, response.body
    assert response.json() == {"error": message}


async def test_nested_data_and_v1_instances_are_checked_alike(app):
    response = await infer(app, "FP32", [[1.0], ["x"]], shape=[2, 1])
    assert response.json() == {"error": "input 'INPUT0': FP32 data must be numbers, not str"}
    for datatype, instances, message in (
        ("FP32", [["1.5"]], "input 'INPUT0': FP32 data must be numbers, not str"),
        ("INT8", [[1], [300]], "input 'INPUT0': value 300 is out of range for INT8"),
        ("BOOL", [[1]], "input 'INPUT0': BOOL data must be true or false, not int"),
    ):
        body = json.dumps({"instances": instances}).encode()
        response = await call(app, "POST", f"/v1/models/{datatype.lower()}:predict", body)
        assert response.status == 400 and response.json() == {"error": message}


ACCEPTED = [
    ("INT8", [-128, 0, 127]),
    ("UINT8", [0, 255]),
    ("UINT64", [0, 2**64 - 1]),
    ("INT64", [-(2**63), 2**63 - 1]),
    ("FP32", [1, 2.5, -3.4e38, 3.4e38]),  # integers are numbers too
    ("FP16", [65504, -0.5]),
    ("FP64", [1e308, -5]),
    ("BOOL", [True, False]),
    ("FP32", []),
    ("BYTES", ["", "héllo", "a\u0000b", "🙂"]),
]


@pytest.mark.parametrize("datatype, data", ACCEPTED, ids=[f"{dt} {json.dumps(data)}" for dt, data in ACCEPTED])
async def test_json_data_at_the_edges_of_its_range_is_taken(app, datatype, data):
    response = await infer(app, datatype, data)
    assert response.status == 200, response.body
    (out,) = response.json()["outputs"]
    dtype = Echo(datatype).outputs[0].dtype
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=dtype), np.asarray(data, dtype=dtype))


async def test_one_long_string_among_numbers_is_refused_before_numpy_reads_it(app):
    # numpy alone reads this 1 MB list as 2,000 strings of 1 MB each: 8 GB.
    response = await infer(app, "FP32", [1.0] * 2000 + ["x" * 1_000_000])
    assert response.status == 400
    assert response.json() == {"error": "input 'INPUT0': FP32 data must be numbers, not str"}


async def test_nested_data_must_have_the_shape_it_claims(app):
    for data in ([[1.0, 2.0], [3.0]], [[1.0, 2.0], 3.0], [[1.0], [2.0], [3.0]]):
        response = await infer(app, "FP32", data, shape=[2, 2])
        assert response.status == 400, data
        assert "the nested lists do not make shape [2, 2]" in response.json()["error"]


def binary_request(datatype: str, array: np.ndarray, binary_output: bool = True) -> tuple[bytes, dict[str, str]]:
    """A request in the binary tensor extension, serialised by tritonclient itself (not in the
    Windows suite's interpreter: there the end-to-end tests drive tritonclient from Linux)."""
    pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
    from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

    tensor = InferInput("INPUT0", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=True)
    body, json_size = InferenceServerClient.generate_request_body(
        [tensor], outputs=[InferRequestedOutput("OUTPUT0", binary_data=binary_output)]
    )
    return body, {"Inference-Header-Content-Length": str(json_size)}


def binary_result(response):
    from tritonclient.http import InferenceServerClient

    length = response.headers.get("inference-header-content-length")
    return InferenceServerClient.parse_response_body(response.body, header_length=int(length) if length else None)


async def test_bytes_both_ways_binary_and_json_as_tritonclient_reads_them(app):
    array = np.array([[b"", b"caf\xc3\xa9", b"\x00\xff raw"], [b"x" * 70_000, b"a,b", b"\n"]], dtype=object)
    body, headers = binary_request("BYTES", array)
    response = await call(app, "POST", "/v2/models/bytes/infer", body, headers)
    assert response.status == 200, response.body
    out = binary_result(response).as_numpy("OUTPUT0")
    assert out.shape == (2, 3) and out.tolist() == array.tolist()
    # The same bytes asked for in JSON: not UTF-8 (b"\xff"), which JSON cannot carry, is a 500 that says so.
    body, headers = binary_request("BYTES", array, binary_output=False)
    response = await call(app, "POST", "/v2/models/bytes/infer", body, headers)
    assert response.status == 500 and "not UTF-8" in response.json()["error"]
    text = np.array([["é", "b"], ["", "d"]], dtype=object)
    body, headers = binary_request("BYTES", text, binary_output=False)
    response = await call(app, "POST", "/v2/models/bytes/infer", body, headers)
    assert response.status == 200, response.body
    assert binary_result(response).as_numpy("OUTPUT0").tolist() == [["é", "b"], ["", "d"]]


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\x01\x00\x00", "3 bytes cannot hold 2 BYTES elements"),
        (b"\x01\x00\x00\x00a\x05\x00\x00\x00ab", "element 1 claims 5 bytes; 2 are left"),
        (b"\xff\xff\xff\xff" + b"\x00" * 4, "element 0 claims 4294967295 bytes; 4 are left"),
        (b"\x03\x00\x00\x00abc\x00\x00", "ends within element 1 of 2"),
        (b"\x00\x00\x00\x00" * 3, "4 bytes of binary data follow the last of 2 elements"),
    ],
    ids=["short", "overlong", "huge length", "cut", "trailing"],
)
async def test_malformed_binary_bytes_are_a_400(app, blob, message):
    header = json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "parameters": {"binary_data_size": len(blob)}}
            ]
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    response = await call(app, "POST", "/v2/models/bytes/infer", header + blob, headers)
    assert response.status == 400, response.body
    assert message in response.json()["error"]


async def test_a_raw_body_cannot_carry_bytes(app):
    response = await call(app, "POST", "/v2/models/bytes/infer", b"abcd", {"Inference-Header-Content-Length": "0"})
    assert response.status == 400 and "cannot carry BYTES" in response.json()["error"]


async def test_v1_predict_takes_and_answers_strings(app):
    body = json.dumps({"instances": [["a", "é"], ["c", ""]]}).encode()
    response = await call(app, "POST", "/v1/models/bytes:predict", body)
    assert response.status == 200, response.body
    assert response.json() == {"predictions": [["a", "é"], ["c", ""]]}
    # V1 has no datatypes: numbers in a row for a string input are the strings they were written as.
    response = await call(
        app, "POST", "/v1/models/bytes:predict", json.dumps({"instances": [["red", 2.5, 3]]}).encode()
    )
    assert response.status == 200 and response.json() == {"predictions": [["red", "2.5", "3"]]}
    for wrong, name in ((True, "bool"), (None, "null"), ({"b64": "AA==", "x": 1}, "dict"), ({"b64": 3}, "dict")):
        response = await call(
            app, "POST", "/v1/models/bytes:predict", json.dumps({"instances": [["a", wrong]]}).encode()
        )
        assert response.status == 400
        assert response.json() == {
            "error": f'input \'INPUT0\': BYTES instances must be strings, numbers or {{"b64": "..."}}, not {name}'
        }


async def test_v1_carries_binary_as_b64_objects_both_ways(app):
    """As TensorFlow Serving's REST API does, which V1 comes from: JSON cannot carry raw bytes."""
    raw = b"\x00\xff\xfe raw"
    instances = [[{"b64": base64.b64encode(raw).decode()}, "caf\u00e9", {"b64": ""}]]
    response = await call(app, "POST", "/v1/models/bytes:predict", json.dumps({"instances": instances}).encode())
    assert response.status == 200, response.body
    # Bytes that are UTF-8 come back as strings, the others as b64 objects.
    assert response.json() == {"predictions": [[{"b64": base64.b64encode(raw).decode()}, "café", ""]]}
    for bad in ("not base64!", "QUJ"):
        body = json.dumps({"instances": [[{"b64": bad}]]}).encode()
        response = await call(app, "POST", "/v1/models/bytes:predict", body)
        assert response.status == 400
        assert response.json() == {"error": "input 'INPUT0': element 0 is not valid base64"}


async def test_bytes_elements_and_batches_are_bounded_before_anything_is_decoded(app):
    from worker.api.tensors import MAX_BYTES_ELEMENTS

    count = MAX_BYTES_ELEMENTS + 1
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "BYTES",
                    "shape": [1, count],
                    "parameters": {"binary_data_size": 4 * count},
                }
            ]
        }
    ).encode()
    response = await call(
        app,
        "POST",
        "/v2/models/bytes/infer",
        header + bytes(4 * count),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status == 400
    assert response.json() == {
        "error": f"input 'INPUT0': {count} BYTES elements are over the {MAX_BYTES_ELEMENTS} one input may have"
    }


class Total(Model):
    """A scalar out: the sum of its input."""

    name = "total"
    inputs = (TensorSpec("INPUT0", "FP32", (-1,)),)
    outputs = (TensorSpec("SUM", "FP32", ()),)

    def predict(self, inputs):
        return {"SUM": np.float32(inputs["INPUT0"].sum())}


async def test_a_scalar_output_has_the_shape_it_declares():
    app = InferenceApp([Total()], ServingState())
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3], "data": [1, 2, 3.5]}]})
    response = await call(app, "POST", "/v2/models/total/infer", body.encode())
    assert response.status == 200, response.body
    assert response.json()["outputs"] == [{"name": "SUM", "datatype": "FP32", "shape": [], "data": [6.5]}]
