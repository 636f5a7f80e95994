"""OpenTelemetry traces of inference requests, when ``--otel-endpoint`` (or OpenTelemetry's own
``OTEL_EXPORTER_OTLP_ENDPOINT``) asks for them; nothing at all otherwise.

Each inference, over HTTP or gRPC, is one server span, ``infer MODEL``, continuing the caller's
trace when its request carries a W3C ``traceparent`` (an HTTP header, or gRPC metadata). Its
children say where the time went: reading the body, waiting (for a batch to form, or a thread),
decoding, the model's call and encoding. They are made when the answer is back, from the times
the request already keeps for Triton's statistics (:class:`~worker.api.inference.Timings`), so
tracing puts nothing on the worker thread and costs the event loop a few spans a request. A
model call that joined several requests (:mod:`.batching`) links, in each request's span of it,
the spans of the others it served. Health, readiness, metadata and metrics are not traced.

Spans leave in batches from OpenTelemetry's own thread (``BatchSpanProcessor``, OTLP over HTTP;
``OTEL_BSP_*`` variables tune it), and what is still queued when the worker stops is flushed
within a bounded time. The sampler is OpenTelemetry's (``OTEL_TRACES_SAMPLER`` and its argument;
by default every request, or as the caller's ``traceparent`` says), and the service's name
``OTEL_SERVICE_NAME`` (by default ``inference-supervisor``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from .errors import HTTPError

logger = logging.getLogger("worker.api")

#: How long a stopping worker waits for its last spans to leave.
FLUSH_MS = 5000
#: perf_counter_ns() + this = nanoseconds since the epoch, as spans want them. Taken once: a wall
#: clock set since the worker started moves its spans' start times, never their durations.
_EPOCH = time.time_ns() - time.perf_counter_ns()


def tracing_for(endpoint: str, slot: int) -> Tracing | None:
    """The worker's tracing, when asked for: by the setting (checked at the pool's start), or by
    OpenTelemetry's own variables, which may be set for other programs: without the otel extra
    those say so once and trace nothing."""
    variables = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and not any(os.environ.get(name) for name in variables):
        return None
    try:
        return Tracing(endpoint, slot)
    except ImportError as exc:
        logger.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but %s: not tracing (pip install '.[otel]')", exc)
        return None


class Tracing:
    """The worker's tracer and where its spans go."""

    def __init__(self, endpoint: str, slot: int) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.propagate import extract
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

        attributes: dict[str, Any] = {"worker.slot": slot, "process.pid": os.getpid()}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = "inference-supervisor"
        self.provider = TracerProvider(resource=Resource.create(attributes))
        # As OTEL_EXPORTER_OTLP_ENDPOINT is read: the collector's base URL, the signal's path added.
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces") if endpoint else OTLPSpanExporter()
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("inference-supervisor")
        self._extract, self._link, self._server = extract, Link, SpanKind.SERVER
        self._error, self._status, self._in_context = StatusCode.ERROR, Status, set_span_in_context

    def begin(self, model: Any, wire: Any, headers: Mapping[str, str], arrived: int) -> Traced:
        """The trace of one inference of ``model`` over ``wire`` (None: KServe V1), begun at
        ``arrived`` (perf_counter_ns), under the caller's trace if its headers carry one."""
        protocol = "v1" if wire is None else wire.protocol
        span = self.tracer.start_span(
            f"infer {model.name}",
            context=self._extract(headers),
            kind=self._server,
            start_time=arrived + _EPOCH,
            attributes={
                "inference.model": model.name,
                "inference.model_version": model.version,
                "inference.protocol": protocol,
            },
        )
        return Traced(self, span)

    def answered(self, span: Any, read: int, timings: Any, batch: int) -> None:
        """End ``span`` with its children: the body read (to ``read``), the wait for a thread or a
        batch, and the decode, model call and encode that ``timings`` measured."""
        answered = time.perf_counter_ns()
        arrived = span.start_time - _EPOCH
        decoded = timings.started + timings.decode
        called = timings.called or decoded
        returned = called + timings.infer
        steps = [
            ("read body", arrived, read),
            ("wait", read, timings.started),
            ("decode", timings.started, decoded),
            ("model", called, returned),
            ("encode", returned, returned + timings.encode),
        ]
        parent = self._in_context(span)
        for name, start, end in steps:
            links = [self._link(other.get_span_context()) for other in timings.joined] if name == "model" else None
            child = self.tracer.start_span(name, context=parent, start_time=start + _EPOCH, links=links)
            if name == "model":
                child.set_attribute("inference.batch_size", timings.rows_called or batch)
            child.end(end_time=max(start, end) + _EPOCH)
        span.set_attribute("inference.batch_size", batch)
        span.set_attribute("inference.status", 200)
        span.end(end_time=answered + _EPOCH)

    def refused(self, span: Any, status: int, message: str) -> None:
        span.set_attribute("inference.status", status)
        span.set_status(self._status(self._error, message))
        span.end(end_time=time.perf_counter_ns() + _EPOCH)

    def close(self) -> None:
        """Flush what is queued (bounded) and stop the exporter's thread."""
        self.provider.force_flush(FLUSH_MS)
        self.provider.shutdown()


class Traced:
    """One inference's trace as a block: the app notes when the body was read and the answer; on
    leaving, the span ends, answered or refused (an HTTP status, or 500 for a stop's cut or a bug)."""

    __slots__ = ("answer", "read", "span", "tracing")

    def __init__(self, tracing: Tracing | None, span: Any) -> None:
        self.tracing, self.span = tracing, span
        self.read = 0
        self.answer: Any = None

    def __enter__(self) -> Traced:
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, traceback: Any) -> None:
        if self.tracing is None:
            return
        if exc is None:
            self.tracing.answered(self.span, self.read, self.answer.timings, self.answer.batch)
        elif isinstance(exc, HTTPError):
            self.tracing.refused(self.span, exc.status, exc.message)
        else:
            self.tracing.refused(self.span, 500, type(exc).__name__)


#: What an untraced request has: the same block, doing nothing (what it is told is not read).
UNTRACED = Traced(None, None)
