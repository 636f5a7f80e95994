"""Dynamic batching, after Triton's dynamic batcher: requests for one model that arrive within a
short delay of each other are joined into one model call, and its results split back.

A model computes a batch of 64 rows in little more than the time of one, and each request's
thread hand-off costs about as much as the model itself; joined, concurrent requests share
both. The first request of a batch leads it: it waits up to the delay (less when the batch
fills up, ``max_batch_size`` requests, or when no other request in flight could still join:
see :class:`Batcher`), then takes every request that joined meanwhile and runs them in one
thread hop (:func:`~worker.api.inference.infer_batch`). The others wait for
their answer. No task of its own is needed, and a batch is never left without its leader: the
leader's wait and run are shielded from cancellation, and bounded by the delay and the model.

A drain flushes: from then on, a batch runs as soon as its leader arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import anyio
import anyio.to_thread

from ..models import Model, ModelError
from .errors import HTTPError
from .inference import REST, Answer, Calling, Job, Wire, infer_batch


def delays(models: list[Model], default_ms: float, per_model: list[str]) -> dict[str, float]:
    """Each batching model's delay in seconds, by name, from ``--batch-delay`` (every model
    that can batch), its repository config's ``batch_delay_ms``, and ``--model-batch-delay
    NAME=MS`` (one model), each over the one before; models with none do not batch."""
    by_name = {model.name: model for model in models}
    chosen = {
        model.name: default_ms if model.batch_delay_ms is None else model.batch_delay_ms
        for model in models
        if model.max_batch_size > 0
    }
    for spec in per_model:
        name, _, ms = spec.partition("=")
        model = by_name.get(name)
        if model is None:
            raise ModelError(f"--model-batch-delay {spec}: no model {name!r} is served")
        if model.max_batch_size <= 0:
            raise ModelError(f"--model-batch-delay {spec}: model {name!r} cannot batch (its max_batch_size is 0)")
        chosen[name] = float(ms)
    return {name: ms / 1000 for name, ms in chosen.items() if ms > 0}


class Batcher:
    """Joins concurrent inferences for ``model`` (with ``max_batch_size > 0``) within ``delay`` seconds.

    ``in_flight`` says how many requests the worker is handling. A batch waits while the model
    is busy with an earlier batch (a queue forms anyway: company is free), or while some request
    in flight could still join (its body is being read, say). When the model is idle and every
    request in flight is in this batch already, nobody else is coming, and waiting would only
    add the delay to each request: one client sending one request at a time would run at a
    fraction of its speed. So the delay is the most a batch waits, not what it always waits.
    """

    def __init__(self, model: Model, delay: float, in_flight: Callable[[], int]) -> None:
        self.model = model
        self.delay = delay
        self._in_flight = in_flight
        self._pending: list[tuple[Job, anyio.Event]] = []
        #: Set when a request joins the batch (or the batch must run: full, or a drain).
        self._changed = anyio.Event()
        self._computing = 0
        self._flushing = False

    async def infer(
        self, body: Any, header_length: str | None, calling: Calling = nullcontext, wire: Wire = REST, trace: Any = None
    ) -> Answer:
        """``body``'s answer, from a batch of requests of either transport (each its own wire);
        ``trace``: its span, when traced, for the others of its model call to link to."""
        job, done = Job(body, header_length, calling, wire, trace=trace), anyio.Event()
        self._pending.append((job, done))
        self._changed.set()
        if len(self._pending) == 1:
            with anyio.CancelScope(shield=True):
                await self._lead()
        else:
            await done.wait()
        if isinstance(job.outcome, HTTPError):
            raise job.outcome
        assert job.outcome is not None
        return job.outcome

    def _others_may_join(self) -> bool:
        waiting = len(self._pending)
        if self._flushing or waiting >= self.model.max_batch_size:
            return False
        return self._computing > 0 or self._in_flight() > waiting

    async def _lead(self) -> None:
        with anyio.move_on_after(self.delay):
            while self._others_may_join():
                self._changed = anyio.Event()
                await self._changed.wait()
        batch, self._pending = self._pending, []
        self._computing += len(batch)
        try:
            await anyio.to_thread.run_sync(infer_batch, self.model, [job for job, _ in batch])
        except BaseException as exc:  # a bug of ours: every request of the batch gets it
            for job, _ in batch:
                job.outcome = job.outcome or HTTPError(500, f"internal error: {type(exc).__name__}")
            raise
        finally:
            self._computing -= len(batch)
            self._changed.set()  # the model is free: a batch waiting for it may not need to wait more
            for _, done in batch:
                done.set()

    def recheck(self) -> None:
        """Something it waits on changed (a request in flight ended): look again."""
        if self._pending:
            self._changed.set()

    def flush(self) -> None:
        """Run what waits now, and every later batch at once (the worker drains)."""
        self._flushing = True
        self._changed.set()
