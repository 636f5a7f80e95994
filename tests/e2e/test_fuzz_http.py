"""The HTTP API fuzzed from the OpenAPI document it serves (schemathesis), against a real pool:
no 5xx, every status documented, every refusal a JSON ``{"error": ...}``, and the worker alive
and its memory bounded afterwards."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, assume, settings  # noqa: E402
from schemathesis.checks import positive_data_acceptance  # noqa: E402

from worker.api.openapi import document  # noqa: E402
from worker.models import demo_model  # noqa: E402

from .harness import WINDOWS_PYTHON, Platform, Pool, http  # noqa: E402

#: The same document the pool's worker serves at /openapi.json (checked below).
SCHEMA = schemathesis.openapi.from_dict(document([demo_model()]))
EXAMPLES = 15 if WINDOWS_PYTHON else 40  # a few hundred cases over the document's operations


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    platform = Platform(bool(WINDOWS_PYTHON))
    tmp = tmp_path_factory.mktemp("fuzz")
    running = Pool(
        platform, platform.control_address(str(tmp)), ["--workers", "1", "--bind", "127.0.0.1:0"], platform.env({})
    )
    try:
        running.wait_ready()
        yield running
        # Alive, still serving, and its memory bounded after everything it was sent.
        assert http("GET", f"{running.url}/v2/health/ready")[0] == 200
        (worker,) = running.status()["workers"]
        assert worker["restarts"] == 0 and worker["state"] == "ready"
        assert worker["rss"] < 400 * 1024 * 1024, worker
        assert running.cli("stop").returncode == 0
        assert running.wait_exit() == 0, running.output
    finally:
        running.kill_everything()


def test_the_worker_serves_the_document_the_fuzzer_uses(pool):
    import json

    status, _, body = http("GET", f"{pool.url}/openapi.json")
    assert status == 200 and json.loads(body) == SCHEMA.raw_schema


@SCHEMA.parametrize()
# An operation's examples under two suites at once (load average ~20) outlasted the suite's 120 s;
# pytest-timeout's failure inside an example then reads as hypothesis' FlakyFailure.
@pytest.mark.timeout(600)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, pool):
    # /v2/models/stats is every model's statistics, another operation (no model may be named so).
    assume(not (case.path == "/v2/models/{model_name}" and (case.path_parameters or {}).get("model_name") == "stats"))
    response = case.call(base_url=pool.url, timeout=30)
    # The document gives the shape of a request, not every rule a model applies (the data must
    # fit the shape, the names the model's): a schema-valid request may rightly be refused.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
