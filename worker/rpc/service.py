"""``inference.GRPCInferenceService``: each call answered by the worker's :class:`InferenceApp`,
the one the HTTP API runs on (the same models, validation, batcher, statistics and drain).

Refusals map the HTTP API's statuses to gRPC's codes (:data:`CODES`): an unknown model is
NOT_FOUND, a bad request INVALID_ARGUMENT, a model quarantined or gone UNAVAILABLE. A message
over ``--max-body-size`` never gets here: grpcio refuses it with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import json_format

from ..api import InferenceApp, metadata
from ..api.app import EXTENSIONS, SERVER_NAME, SERVER_VERSION
from ..api.errors import HTTPError
from ..models import Model
from . import protocol
from .wire import GRPC

logger = logging.getLogger("worker.api")

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

T = TypeVar("T")


class Service:
    """The methods, each ``(request, context) -> response``; :func:`handler` registers them."""

    def __init__(self, app: InferenceApp) -> None:
        self.app = app

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return protocol.message("ServerLiveResponse")(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return protocol.message("ServerReadyResponse")(ready=not self.app.state.draining)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _refused(context, self._model, request.name, request.version)
        return protocol.message("ModelReadyResponse")(ready=not self.app.state.draining)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        reply = protocol.message("ServerMetadataResponse")
        return reply(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = await _refused(context, self._model, request.name, request.version)
        return _parsed(metadata.model_metadata(model, self.app.versions_of(model.name)), "ModelMetadataResponse")

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = await _refused(context, self._model, request.name, request.version)
        return _parsed({"config": self.app.config(model)}, "ModelConfigResponse")

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The pool's statistics, as REST's ``/stats`` answers: every model's when none is named."""
        if request.name:
            model = await _refused(context, self._model, request.name, request.version)
            chosen = self.app.chosen(model, request.version)
        else:
            chosen = list(self.app.versions.values())
        return _parsed({"model_stats": await self.app.model_stats(chosen)}, "ModelStatisticsResponse")

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return _parsed({"models": self.app.index(request.ready)}, "RepositoryIndexResponse")

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await self._infer(request, dict(context.invocation_metadata() or ()))
        except HTTPError as exc:
            await _abort(context, exc)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """tritonclient's stream: one response a request, in order; a refusal is that
        response's ``error_message``, and the stream carries on."""
        headers = dict(context.invocation_metadata() or ())
        async for request in requests:
            try:
                payload = await self._infer(request, headers)
            except HTTPError as exc:
                yield _field(1, exc.message.encode())
            else:
                yield _field(2, payload)

    async def _model(self, name: str, version: str) -> Model:
        return self.app.model(name, version or None)

    async def _infer(self, request: Any, headers: dict[str, str]) -> bytes:
        app, state = self.app, self.app.state
        state.in_flight += 1
        arrived = time.perf_counter_ns()
        status = 200
        try:
            model = await self._model(request.model_name, request.model_version)
            answer = await app.infer(model, _held(request), headers, GRPC, size=lambda message: message.ByteSize())
            state.completed += 1
            return answer.payload
        except HTTPError as exc:
            status = exc.status
            raise
        finally:
            state.in_flight -= 1
            app.ended()
            app.metrics.request(request.model_name or None, status, time.perf_counter_ns() - arrived)


def handler(app: InferenceApp) -> grpc.GenericRpcHandler:
    """The service's methods for ``grpc.aio.server``, requests parsed by its message classes;
    ModelInfer's answers arrive serialized (off the event loop, with the inference)."""
    service = Service(app)
    methods = {}
    for name, (request_class, response_class, streaming) in protocol.METHODS.items():
        method = getattr(service, name)
        raw = name in ("ModelInfer", "ModelStreamInfer")
        serialize = None if raw else response_class.SerializeToString
        make = grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        methods[name] = make(method, request_deserializer=request_class.FromString, response_serializer=serialize)
    return grpc.method_handlers_generic_handler(protocol.SERVICE, methods)


async def _refused(context: grpc.aio.ServicerContext, call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``call(*args)``, its refusal as the call's status."""
    try:
        return await call(*args)
    except HTTPError as exc:
        await _abort(context, exc)


async def _abort(context: grpc.aio.ServicerContext, refusal: HTTPError) -> NoReturn:
    """End the call with ``refusal``'s status and message (``abort`` raises)."""
    await context.abort(CODES.get(refusal.status, grpc.StatusCode.INTERNAL), refusal.message)
    raise AssertionError("unreachable: grpc's abort raises")


def _parsed(document: dict[str, Any], kind: str) -> Any:
    """REST's answer (the same dict, from the same code) as the message ``kind``."""
    return json_format.ParseDict(document, protocol.message(kind)(), ignore_unknown_fields=True)


@contextlib.asynccontextmanager
async def _held(request: Any) -> AsyncIterator[Any]:
    yield request


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: how ModelStreamInferResponse wraps a serialized
    ModelInferResponse (field 2) or an error message (field 1) without parsing it again."""
    tag, length = bytearray([number << 3 | 2]), bytearray()
    size = len(payload)
    while True:
        byte = size & 0x7F
        size >>= 7
        length.append(byte | 0x80 if size else byte)
        if not size:
            break
    return bytes(tag + length) + payload
