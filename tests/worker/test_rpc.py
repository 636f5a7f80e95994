"""gRPC's service in-process (grpcio's server on a loopback port, an aio channel): each method
as tritonclient calls it, typed and raw contents in, raw out, refusals as status codes, the
HTTP API's batcher shared, and the .proto's messages as Triton's."""

from __future__ import annotations

import json
import threading

import anyio
import numpy as np
import pytest

grpc = pytest.importorskip("grpc")

from ipc.contract.settings import WorkerSettings  # noqa: E402
from worker.api import InferenceApp, ServingState  # noqa: E402
from worker.models import Model, TensorSpec, demo_model  # noqa: E402
from worker.rpc import protocol, server  # noqa: E402

from .asgi import call  # noqa: E402
from .test_tensors import Echo  # noqa: E402

pytestmark = pytest.mark.anyio


class HeldDoubler(Model):
    """Doubles its input, batching; its first call waits for ``release``; records each call's rows."""

    name = "double"
    inputs = (TensorSpec("INPUT0", "FP32", (-1, 4)),)
    outputs = (TensorSpec("OUTPUT0", "FP32", (-1, 4)),)
    max_batch_size = 8

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def predict(self, inputs):
        x = np.asarray(inputs["INPUT0"])
        self.calls.append(x.shape[0])
        self.entered.set()
        self.release.wait(30)
        return {"OUTPUT0": x * 2}


class Client:
    def __init__(self, channel) -> None:
        self.channel = channel

    async def __call__(self, method: str, request):
        _, response_class, _ = protocol.METHODS[method]
        stub = self.channel.unary_unary(
            f"/{protocol.SERVICE}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        return await stub(request, timeout=30)


def message(kind: str, **fields):
    return protocol.message(kind)(**fields)


@pytest.fixture
async def served():
    models = [demo_model(), HeldDoubler(), *(Echo(t) for t in ("BOOL", "INT8", "UINT64", "FP16", "FP64", "BYTES"))]
    app = InferenceApp(models, ServingState(), max_body_size=1 << 20, batch_delays={"double": 10.0})
    grpc_server, port = await server.start(app, WorkerSettings(max_body_size=1 << 20))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield app, Client(channel)
    finally:
        await grpc_server.stop(None)


def infer_request(model: str, name: str, datatype: str, shape, **tensor):
    request = message("ModelInferRequest", model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape, **tensor)
    return request


def output(response, index: int = 0, dtype=np.float32) -> np.ndarray:
    return np.frombuffer(response.raw_output_contents[index], dtype=dtype).reshape(response.outputs[index].shape)


async def test_health_and_metadata(served):
    app, client = served
    assert (await client("ServerLive", message("ServerLiveRequest"))).live
    assert (await client("ServerReady", message("ServerReadyRequest"))).ready
    assert (await client("ModelReady", message("ModelReadyRequest", name="mlp"))).ready
    metadata = await client("ServerMetadata", message("ServerMetadataRequest"))
    assert metadata.name == "inference-supervisor" and "binary_tensor_data" in metadata.extensions
    model = await client("ModelMetadata", message("ModelMetadataRequest", name="mlp", version="1"))
    assert (model.name, list(model.versions), model.platform) == ("mlp", ["1"], "numpy_mlp")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("OUTPUT0", "FP32", [-1, 10])]
    index = await client("RepositoryIndex", message("RepositoryIndexRequest", ready=True))
    assert {(m.name, m.state) for m in index.models} >= {("mlp", "READY"), ("double", "READY")}
    app.state.draining = True
    assert not (await client("ServerReady", message("ServerReadyRequest"))).ready
    assert not (await client("ModelReady", message("ModelReadyRequest", name="mlp"))).ready
    assert not (await client("RepositoryIndex", message("RepositoryIndexRequest", ready=True))).models


async def test_raw_in_raw_out_is_the_rest_answer(served):
    app, client = served
    x = np.linspace(-1, 1, 2 * 64, dtype=np.float32).reshape(2, 64)
    request = infer_request("mlp", "INPUT0", "FP32", [2, 64])
    request.raw_input_contents.append(x.tobytes())
    request.id = "seven"
    response = await client("ModelInfer", request)
    assert (response.model_name, response.model_version, response.id) == ("mlp", "1", "seven")
    rest = await call(app, "POST", "/v2/models/mlp/infer", json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [2, 64], "data": x.ravel().tolist()}
    ]}).encode())  # fmt: skip
    assert np.array_equal(output(response), np.array(rest.json()["outputs"][0]["data"], np.float32).reshape(2, 10))


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("BOOL", "bool_contents", [True, False, True, True], np.bool_),
        ("INT8", "int_contents", [-128, 0, 5, 127], np.int8),
        ("UINT64", "uint64_contents", [0, 1, 2**64 - 1, 7], np.uint64),
        ("FP64", "fp64_contents", [0.5, -1.25, 3.0, 1e300], np.float64),
    ],
)
async def test_typed_contents_in(served, datatype, field, values, dtype):
    _, client = served
    request = infer_request(datatype.lower(), "INPUT0", datatype, [2, 2], contents={field: values})
    response = await client("ModelInfer", request)
    assert output(response, dtype=dtype).tolist() == np.array(values, dtype=dtype).reshape(2, 2).tolist()


async def test_bytes_typed_in_raw_out(served):
    _, client = served
    request = infer_request("bytes", "INPUT0", "BYTES", [1, 3], contents={"bytes_contents": [b"a", b"", b"\x00z"]})
    response = await client("ModelInfer", request)
    raw = response.raw_output_contents[0]
    assert raw == b"".join(len(s).to_bytes(4, "little") + s for s in [b"a", b"", b"\x00z"])


async def refusal(client, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client("ModelInfer", request)
    return refused.value.code(), refused.value.details()


async def test_refusals_are_status_codes_with_the_rest_message(served):
    _, client = served
    unknown = infer_request("nope", "INPUT0", "FP32", [1, 64], contents={"fp32_contents": [0.0] * 64})
    assert await refusal(client, unknown) == (grpc.StatusCode.NOT_FOUND, "unknown model 'nope'")
    wrong = infer_request("mlp", "INPUT0", "FP64", [1, 64], contents={"fp64_contents": [0.0] * 64})
    assert await refusal(client, wrong) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'INPUT0': datatype must be FP32, not 'FP64'",
    )
    short = infer_request("mlp", "INPUT0", "FP32", [1, 64], contents={"fp32_contents": [0.0] * 63})
    code, details = await refusal(client, short)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "contents has 63 values but shape [1, 64] needs 64" in details
    raw = infer_request("mlp", "INPUT0", "FP32", [1, 64])
    raw.raw_input_contents.extend([b"\x00" * 256, b""])
    code, details = await refusal(client, raw)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents has 2 entries for 1 inputs" in details
    half = infer_request("fp16", "INPUT0", "FP16", [1, 1])
    code, details = await refusal(client, half)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "FP16 has no typed contents" in details
    huge = infer_request("mlp", "INPUT0", "FP32", [4096, 64])
    huge.raw_input_contents.append(b"\x00" * (4096 * 64 * 4))  # 1 MiB and more: over --max-body-size
    code, _ = await refusal(client, huge)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_grpc_and_an_http_request_share_one_batch(served):
    app, client = served
    model = app.versions["double", "1"]
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    results: dict[str, object] = {}

    async def over_http(key: str) -> None:
        body = json.dumps(
            {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]}
        )
        results[key] = (await call(app, "POST", "/v2/models/double/infer", body.encode())).json()

    async def over_grpc() -> None:
        request = infer_request("double", "INPUT0", "FP32", [1, 4])
        request.raw_input_contents.append(x.tobytes())
        results["grpc"] = output(await client("ModelInfer", request))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(over_http, "first")
        await anyio.to_thread.run_sync(model.entered.wait, 30)  # the model is busy with the first
        tasks.start_soon(over_grpc)
        tasks.start_soon(over_http, "http")
        for _ in range(3000):  # 30 s at most; the gRPC request comes over a socket: no event to wait on
            if app.state.in_flight == 3:
                break
            await anyio.sleep(0.01)
        assert app.state.in_flight == 3
        model.release.set()
    assert model.calls == [1, 2]  # the gRPC and the second HTTP request: one call
    assert results["grpc"].tolist() == [[0, 2, 4, 6]]
    assert results["http"]["outputs"][0]["data"] == [0, 2, 4, 6]


async def test_stream_answers_each_request_and_carries_on_after_a_refusal(served):
    _, client = served
    stub = client.channel.stream_stream(
        f"/{protocol.SERVICE}/ModelStreamInfer",
        request_serializer=protocol.ModelInferRequest.SerializeToString,
        response_deserializer=protocol.message("ModelStreamInferResponse").FromString,
    )
    good = infer_request("fp64", "INPUT0", "FP64", [1, 1], contents={"fp64_contents": [2.5]})
    bad = infer_request("nope", "INPUT0", "FP64", [1, 1], contents={"fp64_contents": [2.5]})
    answers = [answer async for answer in stub(iter([good, bad, good]), timeout=30)]
    assert [answer.error_message for answer in answers] == ["", "unknown model 'nope'", ""]
    assert output(answers[2].infer_response, dtype=np.float64).tolist() == [[2.5]]


def tritons_descriptors():
    """tritonclient's grpc_service.proto, read from its modules' source into a pool of its own:
    importing them fails once kserve's (the same names) is in protobuf's default pool, as it is
    when another test of the same process has imported kserve."""
    import ast
    import importlib.util
    from pathlib import Path

    from google.protobuf import descriptor_pb2, descriptor_pool

    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "grpc"
    pool = descriptor_pool.DescriptorPool()
    for module in ("model_config_pb2.py", "service_pb2.py"):
        tree = ast.parse((folder / module).read_text())
        (serialized,) = [
            node.args[0].value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile"
        ]
        pool.Add(descriptor_pb2.FileDescriptorProto.FromString(serialized))
    return pool.FindFileByName("grpc_service.proto")


def test_the_messages_are_tritons_field_for_field():
    """Every field declared has Triton's number and type; ModelInfer's messages have all of
    Triton's, ModelConfig only those the pool fills in."""
    theirs_file = tritons_descriptors()

    def fields(descriptor) -> dict:
        own = {f.name: (f.number, f.type, f.label) for f in descriptor.fields}
        return {"fields": own, "nested": {n.name: fields(n) for n in descriptor.nested_types}}

    def within(ours: dict, theirs: dict, where: str) -> None:
        for name, field in ours["fields"].items():
            assert theirs["fields"].get(name) == field, f"{where}.{name}"
        for name, nested in ours["nested"].items():
            within(nested, theirs["nested"][name], f"{where}.{name}")

    service = theirs_file.services_by_name["GRPCInferenceService"]
    for name, (request_class, response_class, streaming) in protocol.METHODS.items():
        theirs = service.methods_by_name[name]
        assert streaming == theirs.client_streaming, name
        for ours, their in ((request_class, theirs.input_type), (response_class, theirs.output_type)):
            assert ours.DESCRIPTOR.full_name == their.full_name
            within(fields(ours.DESCRIPTOR), fields(their), their.full_name)
            if name != "ModelConfig":
                assert fields(ours.DESCRIPTOR) == fields(their), their.full_name
    config = protocol.message("ModelConfig").DESCRIPTOR
    their_config = theirs_file.message_types_by_name["ModelConfigResponse"].fields_by_name["config"].message_type
    within(fields(config), fields(their_config), "ModelConfig")
    for field in config.fields:
        if field.message_type is not None:
            within(fields(field.message_type), fields(their_config.fields_by_name[field.name].message_type), field.name)


async def test_config_and_statistics_are_rests(served):
    app, client = served
    config = await client("ModelConfig", message("ModelConfigRequest", name="double"))
    rest = (await call(app, "GET", "/v2/models/double/config")).json()
    assert config.config.max_batch_size == rest["max_batch_size"] == 8
    assert config.config.dynamic_batching.max_queue_delay_microseconds == 10_000_000
    assert [(t.name, t.data_type, list(t.dims)) for t in config.config.input] == [("INPUT0", 11, [4])]  # TYPE_FP32
    request = infer_request("mlp", "INPUT0", "FP32", [3, 64], contents={"fp32_contents": [0.0] * 192})
    await client("ModelInfer", request)
    stats = await client("ModelStatistics", message("ModelStatisticsRequest", name="mlp"))
    (entry,) = stats.model_stats
    assert (entry.name, entry.version, entry.inference_count, entry.execution_count) == ("mlp", "1", 3, 1)
    assert entry.inference_stats.success.count == 1
    every = await client("ModelStatistics", message("ModelStatisticsRequest"))
    assert {e.name for e in every.model_stats} == {m.name for m in app.versions.values()}
    unknown = message("ModelConfigRequest", name="nope")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client("ModelConfig", unknown)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
