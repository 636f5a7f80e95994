"""The pool's Prometheus metrics: one endpoint, exact sums over every worker, counters that never
go down when a worker is replaced, and an answer while every worker is busy."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .conftest import released, started_count
from .harness import http, wait_until
from .test_faults import serving
from .test_pool import gated_infer, pids_serving


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of ``url``: metric sample name -> labels -> value."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})  # as Prometheus 2 asks
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def metrics_url(pool) -> str:
    return pool.wait_for_line(r"metrics at (http://\S+)/metrics").group(1)


def value(samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_one_endpoint_sums_every_worker_and_never_goes_down(launch, platform):
    pool = launch("--metrics-bind", "127.0.0.1:0", workers=2)
    url = pool.wait_ready()
    endpoint = metrics_url(pool) + "/metrics"
    assert len(pids_serving(url, want=2, limit=64)) == 2  # 64 requests, both workers answered some
    assert http("GET", f"{url}/v2/models/no-such-model")[0] == 404
    wait_until(
        lambda: value(scrape(endpoint), "inference_pool_requests_total", model="mlp", status="200") == 64,
        what="the 64 requests in the metrics (heartbeats bring them)",
    )
    samples = scrape(endpoint)
    assert value(samples, "inference_pool_requests_total", model="-", status="404") == 1  # no label per name
    assert value(samples, "inference_pool_inferences_total", model="mlp") == 64
    assert value(samples, "inference_pool_request_duration_seconds_count", model="mlp") == 64
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for labels, count in samples["inference_pool_request_duration_seconds_bucket"].items()
        if dict(labels)["model"] == "mlp"
    )
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), 64)
    assert value(samples, "inference_pool_workers", state="ready") == 2
    assert value(samples, "inference_pool_state", state="ready") == 1
    assert {dict(labels)["slot"] for labels in samples["inference_pool_worker_resident_memory_bytes"]} == {"0", "1"}

    platform.kill(pool.status()["workers"][0]["pid"])
    # Bounded by the loss being seen and healed: slot 0 serves with generation 2.
    wait_until(lambda: serving(pool, 0, 2), what="slot 0's replacement to be ready")
    samples = scrape(endpoint)
    # The lost worker's counts stay (as of its last heartbeat): the total does not go down.
    assert value(samples, "inference_pool_requests_total", model="mlp", status="200") == 64
    # SIGKILL is a crash; Wine's taskkill /F ends a process with code 0, an unexplained exit.
    cause = "exited" if platform.windows else "crashed"
    assert samples["inference_pool_worker_losses_total"] == {(("cause", cause), ("slot", "0")): 1}, pool.output


def test_the_endpoint_answers_while_every_worker_is_busy(launch, gate):
    pool = launch("--model", "slow=tests.models:GatedModel", "--metrics-bind", "127.0.0.1:0", workers=2)
    url = pool.wait_ready()
    endpoint = metrics_url(pool) + "/metrics"
    results: list = []
    requests = [gated_infer(url, results) for _ in range(4)]
    wait_until(lambda: started_count(gate) == 4, what="every worker busy inside the model")
    # Every worker is inside the model, yet the supervisor answers, with their heartbeats' figures.
    wait_until(
        lambda: sum(scrape(endpoint).get("inference_pool_in_flight_requests", {}).values()) == 4,
        what="the four requests in flight in the metrics",
    )
    released(gate)
    for request in requests:
        request.join(30)
    assert [status for status, _ in results] == [200] * 4
