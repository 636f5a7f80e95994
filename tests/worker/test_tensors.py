"""JSON tensor data against its datatype: the wrong JSON types and values out of range are a
400 naming the input, in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worker.api import InferenceApp, ServingState
from worker.models import Model, TensorSpec

from .asgi import call

pytestmark = pytest.mark.anyio

DATATYPES = ("BOOL", "UINT8", "UINT64", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64")


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
]


@pytest.mark.parametrize("datatype, data", ACCEPTED, ids=[f"{dt} {json.dumps(data)}" for dt, data in ACCEPTED])
async def test_json_data_at_the_edges_of_its_range_is_taken(app, datatype, data):
    response = await infer(app, datatype, data)
    assert response.status == 200, response.body
    (out,) = response.json()["outputs"]
    dtype = Echo(datatype).outputs[0].dtype
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=dtype), np.asarray(data, dtype=dtype))
