"""The pool's Prometheus metrics, served by the supervisor at ``http://--metrics-bind/metrics``.

One endpoint for the whole pool (not one registry per process, which a scrape can only see a
slice of): the workers' cumulative counters and histogram buckets arrive with their heartbeats
and add up exactly, those of workers gone included, so counters never go down when a worker is
replaced; the supervisor adds what only it knows (worker states, losses, recycling, heartbeat
ages). Rendering reads what the supervisor already holds, so the endpoint answers at once even
while every worker is busy. The text format is prometheus-client's.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Iterator
from typing import Any

import anyio
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .pool import Pool

logger = logging.getLogger("supervisor")

PREFIX = "inference_pool_"


class PoolCollector(Collector):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        pool = self.pool
        totals = {section: pool.counters.totals(section) for section in ("requests", "rows", "latency", "queue")}
        requests = CounterMetricFamily(PREFIX + "requests", "HTTP requests answered", labels=["model", "status"])
        for key, count in sorted(totals.get("requests", {}).items()):
            model, _, status = key.rpartition("|")
            requests.add_metric([model, status], count)
        yield requests
        rows = CounterMetricFamily(PREFIX + "inferences", "rows inferred (batch sizes summed)", labels=["model"])
        for model, count in sorted(totals.get("rows", {}).items()):
            rows.add_metric([model], count)
        yield rows
        yield _histogram(PREFIX + "request_duration_seconds", "time to answer a request", totals.get("latency", {}))
        yield _histogram(PREFIX + "queue_duration_seconds", "time before inference began", totals.get("queue", {}))

        now = anyio.current_time()
        in_flight = GaugeMetricFamily(PREFIX + "in_flight_requests", "requests in flight", labels=["slot"])
        memory = GaugeMetricFamily(PREFIX + "worker_resident_memory_bytes", "worker resident memory", labels=["slot"])
        lag = GaugeMetricFamily(PREFIX + "worker_loop_lag_seconds", "how late the event loop woke", labels=["slot"])
        age = GaugeMetricFamily(PREFIX + "worker_heartbeat_age_seconds", "since the last heartbeat", labels=["slot"])
        states: dict[str, int] = {}
        for slot in pool.slots:
            for process in slot.processes:
                states[process.state.value] = states.get(process.state.value, 0) + 1
            current = slot.current
            if current is None or current.heartbeat is None:
                continue
            label = [str(slot.index)]
            in_flight.add_metric(label, current.heartbeat.in_flight)
            memory.add_metric(label, current.heartbeat.rss)
            lag.add_metric(label, current.heartbeat.loop_lag)
            if current.last_heard is not None:
                age.add_metric(label, now - current.last_heard)
        yield from (in_flight, memory, lag, age)
        workers = GaugeMetricFamily(PREFIX + "workers", "worker processes by state", labels=["state"])
        for name, count in sorted(states.items()):
            workers.add_metric([name], count)
        yield workers
        current_state = GaugeMetricFamily(
            PREFIX + "state", "the pool's state (1 for the current one)", labels=["state"]
        )
        current_state.add_metric([pool.state.value], 1)
        yield current_state
        losses = CounterMetricFamily(PREFIX + "worker_losses", "workers lost and replaced", labels=["slot", "cause"])
        for (slot_index, cause), count in sorted(pool.losses.items()):
            losses.add_metric([str(slot_index), cause], count)
        yield losses
        recycled = CounterMetricFamily(PREFIX + "worker_recycles", "workers recycled", labels=["reason"])
        for reason, count in sorted(pool.recycled.items()):
            recycled.add_metric([reason], count)
        yield recycled


def _histogram(name: str, documentation: str, by_model: dict[str, Any]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["model"])
    for model, histogram in sorted(by_model.items()):
        bounds = {_bound(key): count for key, count in histogram.get("buckets", {}).items() if _bound(key) is not None}
        if math.inf not in bounds:
            continue  # not a histogram a worker of ours sends
        buckets, cumulative = [], 0
        for bound in sorted(bounds):  # type: ignore[type-var]
            cumulative += bounds[bound]
            buckets.append(("+Inf" if bound == math.inf else f"{bound:g}", cumulative))
        family.add_metric([model], buckets, sum_value=histogram.get("sum_ns", 0) / 1e9)
    return family


def _bound(key: str) -> float | None:
    try:
        value = float(key)
    except ValueError:
        return None
    return value if value > 0 else None


class MetricsApp:
    """The ASGI app of the metrics address: ``GET /metrics``, nothing else."""

    def __init__(self, pool: Pool) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PoolCollector(pool))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics":
            # The format the scraper asks for (Prometheus 2's 0.0.4 text, OpenMetrics...).
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            encode, kind = choose_encoder(accept)
            status, body = 200, encode(self.registry)
        else:
            status, body, kind = 404, b'{"error": "the metrics are at /metrics"}', "application/json"
        headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def serve_metrics(pool: Pool, sock: socket.socket) -> None:
    """Serve ``/metrics`` on the bound ``sock`` until cancelled."""
    config = Config()
    config.accesslog = None
    errors = logging.getLogger("supervisor.metrics")
    errors.setLevel(logging.WARNING)
    config.errorlog = errors
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    app = wrap_app(MetricsApp(pool), 0, "asgi")  # type: ignore[arg-type]
    await worker_serve(app, config, sockets=sockets, shutdown_trigger=anyio.sleep_forever)
