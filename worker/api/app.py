"""The ASGI application: routing, errors, draining and in-flight accounting (bodies: :mod:`.bodies`)."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from typing import Any

import anyio
import anyio.to_thread

import ipc
from ipc.contract.inflight import Record

from ..models import Model
from . import inference, jsonio, metadata, openapi, tensors
from .batching import Batcher
from .bodies import SMALL_BODY, Bodies, Receive, RequestBody, Scope, request_headers
from .counters import Changes
from .errors import HTTPError, bad_request, not_found
from .metrics import Metrics
from .state import ServingState
from .stats import ModelStats, as_triton, highest
from .tensors import REQUEST_OVERHEAD
from .tracing import UNTRACED, Tracing

logger = logging.getLogger("worker.api")
access = logging.getLogger("worker.access")

Send = Callable[[dict[str, Any]], Awaitable[None]]
#: The pool-wide statistics of the model versions named (NAME/VERSION; none: all), or None when
#: the supervisor does not answer in time.
PoolStats = Callable[[list[str]], Awaitable[dict[str, Any] | None]]

SERVER_NAME = "inference-supervisor"
SERVER_VERSION = ipc.__version__
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
JSON = [(b"content-type", b"application/json")]

FIXED_PATHS = frozenset(
    ("/v2/health/live", "/v2/health/ready", "/", "/v2", "/v1/models", "/v2/models/stats", "/openapi.json")
)
_V2_MODEL = re.compile(
    r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/ready|/config|/stats|/infer)?"
)
_V1_MODEL = re.compile(r"/v1/models/(?P<model>[^/:]+)(?P<verb>:predict|:explain)?")


class InferenceApp:
    """ASGI app serving ``models``; ``pool_stats`` answers ``/stats`` for the whole pool."""

    def __init__(
        self,
        models: list[Model],
        state: ServingState,
        *,
        max_body_size: int = 64 * 1024 * 1024,
        body_timeout: float = 30.0,
        access_log: bool = False,
        pool_stats: PoolStats | None = None,
        batch_delays: Mapping[str, float] | None = None,
        gone: Collection[str] = (),
        inflight: Record | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        #: Every version of every model, and by name the default: its highest version.
        self.versions = {(model.name, model.version): model for model in models}
        self.models: dict[str, Model] = {}  # in the order they were given
        for model in models:
            if model.name not in self.models or model.order > self.models[model.name].order:
                self.models[model.name] = model
        #: The repository versions the pool serves that were gone from the folder when this
        #: worker loaded (``NAME/VERSION``): answered 503, the default too when it is one of
        #: them, never another version in its place (the pool's other workers serve them).
        self.gone = {tuple(entry.rsplit("/", 1)) for entry in gone}
        self._gone_defaults: dict[str, str] = {}
        for name, version in sorted(self.gone, key=lambda entry: _number(entry[1])):
            if name not in self.models or _number(version) > _number(self.models[name].version):
                self._gone_defaults[name] = version
        #: Statistics of every model version, by its key (``Model.key``).
        #: Which counters changed since the supervisor was last sent them.
        self.changes = Changes()
        self.stats = {model.key: ModelStats(model.name, model.version, self.changes) for model in models}
        self.state = state
        self.access_log = access_log
        self.bodies = Bodies(max_body_size, body_timeout)
        self._pool_stats = pool_stats
        #: Dynamic batching, by model name: the models given a delay (in seconds) that can batch.
        delays = batch_delays or {}
        self.batchers = {
            model.key: Batcher(model, delays[model.name], lambda: self.state.in_flight)
            for model in models
            if delays.get(model.name, 0) > 0 and model.max_batch_size > 0
        }
        #: The highest pool-wide counters answered so far (see ``_model_stats``).
        self._pool_seen: dict[str, Any] = {}
        self._pid = str(os.getpid()).encode()
        self.openapi = openapi.document(list(self.models.values()))
        #: Where this worker notes the requests it has in flight, for its supervisor to read
        #: should it die (``ipc.contract.inflight``); the ones without an X-Request-ID are numbered.
        self._inflight = inflight
        self._numbers = itertools.count(1)
        #: Model versions (NAME/VERSION) the pool quarantined, and why: answered 503.
        self.quarantined: dict[str, str] = {}
        self.metrics = Metrics(list(self.models), self.changes)
        #: Inference requests traced, when asked for (``--otel-endpoint``): None, nothing done.
        self.tracing = tracing

    def own_stats(self, keys: Collection[str] | None = None) -> dict[str, Any]:
        """This worker's statistics of the model versions ``keys`` (NAME/VERSION), else of all."""
        chosen = self.stats if keys is None else {key: self.stats[key] for key in keys}
        return {key: stats.snapshot() for key, stats in chosen.items()}

    def counters(self, entries: Mapping[str, Collection[str]]) -> dict[str, dict[str, Any]]:
        """The current values of ``entries`` (keys by section), as the supervisor keeps them."""
        return {
            section: {key: self.stats[key].snapshot() for key in keys}
            if section == "stats"
            else {key: self.metrics.entry(section, key) for key in keys}
            for section, keys in entries.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.state.started.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.state.in_flight += 1
        arrived = time.perf_counter_ns()
        started = False
        request_body = RequestBody(scope, receive)
        try:
            try:
                status, body, headers = await self._route(scope, request_body.receive)
            except HTTPError as exc:
                status, body, headers = exc.status, _error_body(exc.message), [*JSON, *exc.headers]
            except Exception as exc:
                # A bug of ours must still answer in the protocol's shape, and the worker serve on.
                logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
                status, body, headers = 500, _error_body(f"internal error: {type(exc).__name__}"), JSON
            headers = [*headers, (b"content-length", str(len(body)).encode()), (b"x-worker-pid", self._pid)]
            if not request_body.done and not await request_body.drain(SMALL_BODY, min(self.bodies.timeout, 2.0)):
                # Refused before its body was read, and the body is too large or too slow to
                # read now: the connection cannot carry another request. Say so, not just close it.
                headers.append((b"connection", b"close"))
            elif self.state.draining or self.state.closes():
                # The client reconnects for its next request, to a worker that still accepts (or,
                # when the supervisor spreads connections, to whichever accepts first).
                headers.append((b"connection", b"close"))
            started = True
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            self.state.completed += 1
            took = time.perf_counter_ns() - arrived
            self.metrics.request(_model_of(scope["path"]), status, took)
            if self.access_log:
                method, path, ms = scope["method"], scope["path"], round(took / 1e6, 3)
                fields = {"method": method, "path": path, "status": status, "duration_ms": ms}
                access.info("%s %s %d %.1fms", method, path, status, ms, extra=fields)
        except anyio.get_cancelled_exc_class():
            # Cut off: the stop's grace period ran out. Say so in the protocol's shape, if the
            # answer has not begun, before the connection goes.
            self.state.dropped += 1
            if not started:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    body = _error_body("the worker stopped before this request finished")
                    refusal = [*JSON, (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
                    await send({"type": "http.response.start", "status": 503, "headers": refusal})
                    await send({"type": "http.response.body", "body": body})
            raise
        finally:
            self.state.in_flight -= 1
            self.ended()

    def ended(self) -> None:
        """A request of either transport is no longer in flight."""
        for batcher in self.batchers.values():
            batcher.recheck()  # a batch waiting for this request to join may not need to wait

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        method, path = scope["method"], scope["path"]
        if path in FIXED_PATHS:
            _allow(method, "GET")
            if path == "/openapi.json":
                return _json(self.openapi)
            if path == "/v2/health/live":
                return _json({"live": True})
            if path == "/v2/health/ready":
                return _json({"ready": not self.state.draining}, 503 if self.state.draining else 200)
            if path == "/":
                return _json({"status": "alive"})
            if path == "/v2":
                return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})
            if path == "/v1/models":
                return _json({"models": list(self.models)})
            return _json({"model_stats": await self.model_stats(list(self.versions.values()))})
        if path == "/v2/repository/index":
            _allow(method, "POST")
            return await self._index(scope, receive)
        if match := _V2_MODEL.fullmatch(path):
            model = self.model(match["model"], match["version"])
            action = match["action"]
            if action == "/infer":
                _allow(method, "POST")
                return await self._infer(model, scope, receive)
            _allow(method, "GET")
            if action is None:
                return _json(metadata.model_metadata(model, self.versions_of(model.name)))
            if action == "/ready":
                return self._ready(model)
            if action == "/config":
                return _json(self.config(model))
            return _json({"model_stats": await self.model_stats(self.chosen(model, match["version"]))})
        if match := _V1_MODEL.fullmatch(path):
            model = self.model(match["model"], None)
            if match["verb"] == ":predict":
                _allow(method, "POST")
                return await self._infer(model, scope, receive, v1=True)
            if match["verb"] == ":explain":
                raise not_found(f"model {model.name!r} has no explainer")
            _allow(method, "GET")
            return self._ready(model)
        raise not_found(f"no route for {method} {path}")

    def model(self, name: str, version: str | None) -> Model:
        """The model ``name``, at ``version`` (its default: the highest)."""
        version = version if version is not None else self._gone_defaults.get(name)
        if (name, version) in self.gone:
            raise HTTPError(
                503,
                f"model {name!r} version {version} is gone from the repository since the pool read it: "
                "this worker cannot serve it (supervisor reload serves what the repository holds now)",
            )
        model = self.models.get(name)
        if model is None:
            raise not_found(f"unknown model {name!r}")
        if version is not None:
            versioned = self.versions.get((name, version))
            if versioned is None:
                raise not_found(f"model {name!r} has no version {version!r}; it has {self.versions_of(name)}")
            model = versioned
        reason = self.quarantined.get(model.key)
        if reason is not None:
            raise HTTPError(503, reason)
        return model

    def config(self, model: Model) -> dict[str, Any]:
        batcher = self.batchers.get(model.key)
        return metadata.model_config(model, batcher.delay if batcher else 0.0, len(self.versions_of(model.name)))

    def chosen(self, model: Model, version: str | None) -> list[Model]:
        """Triton's: a model's statistics are those of all its versions, unless one is named."""
        return [model] if version else [self.versions[model.name, v] for v in self.versions_of(model.name)]

    def versions_of(self, name: str) -> list[str]:
        """The versions of model ``name``, lowest first."""
        return [model.version for model in sorted(self.versions.values(), key=_order_of) if model.name == name]

    async def _index(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The repository index (``POST /v2/repository/index``): every version served, READY, or
        UNAVAILABLE once this worker drains (as its readiness says). Its body may be empty, or
        ``{"ready": true}``: only the ready ones."""
        async with self.bodies.read(scope, receive, REQUEST_OVERHEAD) as body:
            request = jsonio.loads(body) if body.strip() else {}
        if not isinstance(request, dict) or not isinstance(request.get("ready", False), bool):
            raise bad_request('the index request must be empty or a JSON object such as {"ready": true}')
        return _json(self.index(request.get("ready", False)))

    def index(self, ready: bool) -> list[dict[str, str]]:
        """Every version served (only if READY, when ``ready``), for either transport."""
        state, reason = ("UNAVAILABLE", "the worker is draining") if self.state.draining else ("READY", "")
        if ready and state != "READY":
            return []
        ordered = sorted(self.versions.values(), key=_order_of)
        return [{"name": m.name, "version": m.version, "state": state, "reason": reason} for m in ordered]

    def _ready(self, model: Model) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Model readiness, V1 and V2 alike: 503 from the moment this worker drains."""
        return _json({"name": model.name, "ready": not self.state.draining}, 503 if self.state.draining else 200)

    async def model_stats(self, models: list[Model]) -> list[dict[str, Any]]:
        keys = [model.key for model in models]
        own = self.own_stats(keys)
        every = len(keys) == len(self.stats)  # ask for all, rather than name thousands
        pool = await self._pool_stats([] if every else keys) if self._pool_stats is not None else None
        if pool is None:
            pool = own
        # When the supervisor cannot answer in time the link falls back to this worker's own
        # counters, a fraction of the pool's. Clients poll these counters and subtract: none may
        # ever be less than it was in an earlier answer.
        self._pool_seen = highest(self._pool_seen, highest(own, pool))
        return [as_triton(model.name, self._pool_seen[model.key]) for model in models]

    async def _infer(
        self, model: Model, scope: Scope, receive: Receive, v1: bool = False
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """A V2 inference, or a KServe V1 ``:predict`` (counted alike: V1 was not counted at all)."""
        body = self.bodies.read(scope, receive, tensors.largest_body(model))
        answer = await self.infer(model, body, request_headers(scope), None if v1 else inference.REST)
        return 200, answer.payload, answer.headers

    async def infer(
        self,
        model: Model,
        body: AbstractAsyncContextManager[Any],
        headers: Mapping[str, str],
        wire: inference.Wire | None,
        size: Callable[[Any], int] = len,
    ) -> inference.Answer:
        """One inference over either transport, noted, batched and counted: ``body`` gives the
        request as ``wire`` decodes it (``None``: a KServe V1 ``:predict``), ``size`` its size."""
        arrived = time.perf_counter_ns()
        stats = self.stats[model.key]
        header_length = headers.get(tensors.HEADER_LENGTH)
        batcher = self.batchers.get(model.key)
        trace = self.tracing.begin(model, wire, headers, arrived) if self.tracing is not None else UNTRACED
        try:
            with trace, self._noted(model, headers) as calling:
                async with body as data:
                    trace.read = time.perf_counter_ns()
                    if wire is None:
                        answer = await anyio.to_thread.run_sync(inference.predict_v1, model, data, calling)
                    elif batcher is not None and size(data) <= SMALL_BODY:
                        answer = await batcher.infer(data, header_length, calling, wire, trace.span)
                    else:
                        # Decoding, the model and encoding in one hop off the event loop: a large body
                        # must not stall health checks and the other requests this worker serves.
                        work = inference.infer
                        answer = await anyio.to_thread.run_sync(work, model, data, header_length, calling, wire)
                trace.answer = answer
        except HTTPError:
            stats.record_failure(time.perf_counter_ns() - arrived)
            raise
        # Queued: from arrival until a thread began on it (reading the body, and waiting for a
        # batch, included).
        timings = answer.timings
        queue_ns = timings.started - arrived
        stats.record_success(
            answer.batch, queue_ns, timings.decode, timings.infer, timings.encode, executions=answer.executions
        )
        self.metrics.inferred(model.name, answer.batch, queue_ns)
        return answer

    def _noted(self, model: Model, headers: Mapping[str, str]) -> AbstractContextManager[inference.Calling]:
        """Note the request in the in-flight record while it is served; what marks it as inside
        its model's call."""
        if self._inflight is None:
            return nullcontext(nullcontext)
        request_id = headers.get("x-request-id") or f"#{next(self._numbers)}"
        length = headers.get("content-length", "")
        return self._inflight.noted(model.name, model.version, request_id, int(length) if length.isdigit() else 0)

    def flush_batches(self) -> None:
        """The worker drains: run every waiting batch now, and later ones without waiting."""
        for batcher in self.batchers.values():
            batcher.flush()


def _number(version: str) -> int:
    return int(version) if version.isascii() and version.isdigit() else -1


def _order_of(model: Model) -> tuple[str, bool, int, str]:
    return model.order


def _model_of(path: str) -> str | None:
    match = _V2_MODEL.fullmatch(path) or _V1_MODEL.fullmatch(path)
    return match["model"] if match else None


def _allow(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        methods = "GET, HEAD" if allowed == "GET" else allowed
        raise HTTPError(405, f"method {method} is not allowed here; use {allowed}", [(b"allow", methods.encode())])


def _json(body: Any, status: int = 200) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return status, jsonio.dumps(body), JSON


def _error_body(message: str) -> bytes:
    return jsonio.dumps({"error": message or "error"})
