"""Inference on a worker thread: decode, predict, encode, for one request or a batch of them.

Everything here runs off the event loop, in one thread hop per request (or per batch, see
:mod:`.batching`), and reports its failures as :class:`~worker.api.errors.HTTPError`. What a
transport carries is decoded and encoded by its :class:`Wire` (REST's here, gRPC's in
``worker.rpc``); the rest, and the batching, is the same for both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import numpy as np

from ..models import Model, ModelError
from . import outputs, tensors
from .errors import HTTPError, bad_request

logger = logging.getLogger("worker.api")


@dataclasses.dataclass
class Timings:
    """Where one inference's time went, in nanoseconds (Triton's statistics' terms)."""

    started: int = 0
    decode: int = 0
    infer: int = 0
    encode: int = 0
    #: When the model's call began (perf_counter_ns; 0: right after the decode), and the rows it
    #: computed: this request's, or with those it was joined with (:mod:`.batching`).
    called: int = 0
    rows_called: int = 0
    #: The traces of the other requests its model call served (:mod:`.tracing`; empty untraced).
    joined: tuple[Any, ...] = ()


@dataclasses.dataclass
class Answer:
    """One V2 inference's response and its accounting."""

    payload: bytes
    headers: list[tuple[bytes, bytes]]
    #: Rows the model computed for this request (1 for a model without a batch dimension).
    batch: int
    timings: Timings
    #: Model calls this request accounts for: 1, or 0 for every request of a joined call but its first.
    executions: int = 1


#: Marks a request as inside its model's call for a block (``ipc.contract.inflight``).
Calling = Callable[[], AbstractContextManager[Any]]


class Wire(Protocol):
    """One transport's requests in and answers out, around the one core that validates them
    (:func:`tensors.decode_request`) and encodes each output (:func:`outputs.output`)."""

    #: Its name where requests are told apart by transport (traces): ``rest``, ``grpc``.
    protocol: str

    def decode(self, model: Model, body: Any, header_length: str | None) -> tensors.InferRequest:
        """``body`` as the transport carries it, decoded and checked against ``model``."""
        ...

    def encode(
        self, model: Model, request: tensors.InferRequest, results: Mapping[str, Any]
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The answer's payload and its extra headers."""
        ...


class _Rest:
    """The HTTP API's: JSON with Triton's binary tensor extension."""

    protocol = "rest"

    def decode(self, model: Model, body: Any, header_length: str | None) -> tensors.InferRequest:
        return tensors.decode_infer(model, body, header_length)

    def encode(
        self, model: Model, request: tensors.InferRequest, results: Mapping[str, Any]
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        return outputs.encode_infer(model, request, results)


REST: Wire = _Rest()


def infer(
    model: Model, body: Any, header_length: str | None, calling: Calling = nullcontext, wire: Wire = REST
) -> Answer:
    """One V2 inference: decode, predict, encode."""
    timings = Timings(started=time.perf_counter_ns())
    request = wire.decode(model, body, header_length)
    decoded = time.perf_counter_ns()
    with calling():
        results = predict(model, request.inputs)
    if model.max_batch_size > 0:
        _split(model, results, [_rows(model, request.inputs)])  # one row out per row in
    predicted = time.perf_counter_ns()
    payload, headers = wire.encode(model, request, results)
    timings.decode, timings.infer = decoded - timings.started, predicted - decoded
    timings.encode = time.perf_counter_ns() - predicted
    return Answer(payload, headers, _rows(model, request.inputs), timings)


@dataclasses.dataclass
class Job:
    """One request of a batch: its body in, its answer (or refusal) out."""

    #: The request as its wire carries it (bytes over HTTP, a parsed message over gRPC).
    body: Any
    header_length: str | None
    calling: Calling = nullcontext
    wire: Wire = REST
    request: tensors.InferRequest | None = None
    results: Mapping[str, Any] | None = None
    rows: int = 0
    executions: int = 0
    timings: Timings = dataclasses.field(default_factory=Timings)
    outcome: Answer | HTTPError | None = None
    #: Its span, when traced (:mod:`.tracing`): the others of its model call link to it.
    trace: Any = None


def infer_batch(model: Model, jobs: list[Job]) -> None:
    """Every job's inference, requests joined into as few model calls as their inputs allow.

    Requests join when their inputs have the same names, datatypes and shapes beyond the batch
    dimension, up to ``max_batch_size`` rows a call. A request that cannot be decoded is refused
    alone; when a joined call fails, its requests are tried one by one, so that one bad request
    fails alone too."""
    started = time.perf_counter_ns()
    groups: dict[tuple[Any, ...], list[Job]] = {}
    for job in jobs:
        job.timings.started = begun = time.perf_counter_ns()
        try:
            job.request = job.wire.decode(model, job.body, job.header_length)
        except Exception as exc:
            job.outcome = _refusal(model, exc)
            continue
        finally:
            job.timings.decode = time.perf_counter_ns() - begun
        key = tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(job.request.inputs.items()))
        groups.setdefault(key, []).append(job)
    for group in groups.values():
        for call in _calls(model, group):
            _run(model, call)
    for job in jobs:
        job.timings.started = started
        _encode(model, job)


def _calls(model: Model, group: list[Job]) -> list[list[Job]]:
    """``group`` split into model calls of at most ``max_batch_size`` rows."""
    calls: list[list[Job]] = [[]]
    rows = 0
    for job in group:
        assert job.request is not None
        size = _rows(model, job.request.inputs)
        if calls[-1] and rows + size > model.max_batch_size:
            calls.append([])
            rows = 0
        calls[-1].append(job)
        rows += size
    return calls


def _run(model: Model, call: list[Job]) -> None:
    """One model call for the requests of ``call``, its results split back by rows."""
    requests = [job.request for job in call if job.request is not None]
    inputs = requests[0].inputs
    if len(requests) > 1:
        inputs = {name: np.concatenate([r.inputs[name] for r in requests]) for name in inputs}
    begun = time.perf_counter_ns()
    sizes = [_rows(model, r.inputs) for r in requests]
    try:
        with contextlib.ExitStack() as stack:
            for job in call:
                stack.enter_context(job.calling())
            results = predict(model, inputs)
        parts = _split(model, results, sizes)
    except Exception as exc:
        if len(call) == 1:
            call[0].outcome = _refusal(model, exc)
            return
    else:
        took = time.perf_counter_ns() - begun
        traced = len(call) > 1 and any(job.trace is not None for job in call)
        for i, job in enumerate(call):
            job.timings.infer, job.timings.called, job.timings.rows_called = took, begun, sum(sizes)
            if traced:
                job.timings.joined = tuple(other.trace for other in call if other is not job and other.trace)
            job.results = parts[i]
            job.rows, job.executions = sizes[i], 1 if i == 0 else 0
        return
    for job in call:
        _run(model, [job])  # the joined call failed: which of them fails, fails alone


def _split(model: Model, results: Mapping[str, Any], sizes: list[int]) -> list[Mapping[str, Any]]:
    """``results`` of a batching model split by the rows of each request; a 500 for a model
    that does not answer one row per row."""
    total = sum(sizes)
    specs = {spec.name: spec for spec in model.outputs}
    arrays = {name: outputs.output_array(model, specs[name], value) for name, value in results.items()}
    for name, array in arrays.items():
        if not array.ndim or array.shape[0] != total:
            raise HTTPError(500, f"model {model.name!r} returned output {name!r} without one row per input row")
    bounds = np.cumsum([0, *sizes])
    return [{name: array[lo:hi] for name, array in arrays.items()} for lo, hi in itertools.pairwise(bounds)]


def _encode(model: Model, job: Job) -> None:
    if job.outcome is not None or job.request is None or job.results is None:
        return
    begun = time.perf_counter_ns()
    try:
        payload, headers = job.wire.encode(model, job.request, job.results)
    except Exception as exc:
        job.outcome = _refusal(model, exc)
        return
    job.timings.encode = time.perf_counter_ns() - begun
    job.outcome = Answer(payload, headers, job.rows, job.timings, job.executions)


def _refusal(model: Model, exc: Exception) -> HTTPError:
    """What one request of a batch answers for ``exc``: it, or a 500 for a bug of ours (logged),
    for this request alone, never the others of its batch."""
    if isinstance(exc, HTTPError):
        return exc
    logger.error("inference for model %r failed", model.name, exc_info=exc)
    return HTTPError(500, f"internal error: {type(exc).__name__}")


def _rows(model: Model, inputs: Mapping[str, np.ndarray]) -> int:
    return next(iter(inputs.values())).shape[0] if model.max_batch_size > 0 else 1


def predict_v1(model: Model, body: bytes, calling: Calling = nullcontext) -> Answer:
    """One KServe V1 ``:predict``, timed and counted as a V2 inference is."""
    timings = Timings(started=time.perf_counter_ns())
    inputs = {model.inputs[0].name: tensors.v1_instances(model, body)}
    decoded = time.perf_counter_ns()
    with calling():
        results = predict(model, inputs)
    predicted = time.perf_counter_ns()
    payload = outputs.v1_predictions(model, results[model.outputs[0].name])
    timings.decode, timings.infer = decoded - timings.started, predicted - decoded
    timings.encode = time.perf_counter_ns() - predicted
    return Answer(payload, [(b"content-type", b"application/json")], _rows(model, inputs), timings)


def predict(model: Model, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """``model.predict``, its failures in the API's terms."""
    try:
        results = model.predict(inputs)
    except ModelError as exc:
        raise bad_request(f"model {model.name!r} refused the input: {exc}") from None
    except Exception as exc:
        logger.exception("model %r failed", model.name)
        raise HTTPError(500, f"model {model.name!r} failed: {type(exc).__name__}: {exc}") from None
    missing = [spec.name for spec in model.outputs if spec.name not in results]
    if missing:
        raise HTTPError(500, f"model {model.name!r} did not return outputs {missing}")
    return {spec.name: results[spec.name] for spec in model.outputs}  # those served, no others
