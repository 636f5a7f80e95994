"""The Dockerfile, the Kubernetes manifests and the KServe runtime in deploy/: valid against the
Kubernetes schemas (offline, kubernetes-validate), and in agreement with the supervisor itself:
every variable a setting, the probes paths it serves, room in the termination grace period for
its drain, one worker per CPU."""

from __future__ import annotations

import os
import re

import pytest

from supervisor import cli, settings
from supervisor.policy import Timeouts
from worker.api.app import FIXED_PATHS

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "deploy")
KUBERNETES_VERSION = "1.30.0"
CORE = ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]


def load(*path: str) -> dict:
    with open(os.path.join(DEPLOY, *path)) as f:
        return yaml.safe_load(f)


def environment(container: dict) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container.get("env", [])}


def resolved(container: dict, args: list[str]) -> settings.Settings:
    """The settings `supervisor start` would run with in this container."""
    parsed = cli.build_parser().parse_args(["start", *args])
    flags = {option.key: getattr(parsed, option.key) for option in settings.options()}
    return settings.resolve(flags, None, environment(container), cwd="/")


@pytest.mark.parametrize("name", CORE)
def test_manifests_are_valid_kubernetes(name):
    kubernetes_validate.validate(load("kubernetes", name), KUBERNETES_VERSION, strict=True)


def test_the_deployment_agrees_with_the_supervisor():
    deployment = load("kubernetes", "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    known = {option.env for option in settings.options()}
    assert set(environment(container)) <= known, set(environment(container)) - known
    config = resolved(container, container["args"])
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == int(config.pool.bind.rsplit(":", 1)[1]) == 8080
    assert ports["metrics"] == int(config.pool.metrics_bind.rsplit(":", 1)[1])
    assert ports["grpc"] == int(config.pool.grpc_bind.rsplit(":", 1)[1]) == 8081  # KServe's gRPC port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in FIXED_PATHS and container[probe]["httpGet"]["port"] == "http"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"  # 503 from the drain's start
    # SIGTERM drains: readiness 503 for the drain delay, then the grace, then the kill margin.
    needed = config.pool.drain_delay + config.worker.grace + Timeouts().exit_margin
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert "lifecycle" not in container  # no preStop: the stop path does it all
    cpus = int(container["resources"]["limits"]["cpu"])
    assert config.pool.workers == cpus and config.pool.threads_per_worker == 1
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_service_reaches_the_deployments_ports():
    service = load("kubernetes", "service.yaml")
    (container,) = load("kubernetes", "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= names
    assert service["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_the_kserve_runtime_serves_what_the_inference_service_asks_for():
    runtime = load("kserve", "servingruntime.yaml")
    service = load("kserve", "inferenceservice.yaml")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["kind"] == "ServingRuntime"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    args = [arg.replace("{{.Name}}", service["metadata"]["name"]) for arg in container["args"]]
    config = resolved(container, args)
    assert config.worker.models == ["mlp=/mnt/models/model.npz"]  # where KServe puts the model's files
    assert container["ports"][0]["containerPort"] == int(config.pool.bind.rsplit(":", 1)[1])
    assert int(config.pool.grpc_bind.rsplit(":", 1)[1]) == 8081 and "grpc-v2" in runtime["spec"]["protocolVersions"]


def test_the_dockerfile_runs_the_supervisor_as_a_non_root_entry_process():
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        dockerfile = f.read()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^USER 10001$", dockerfile, re.M)
    assert 'ENTRYPOINT ["supervisor", "start"]' in dockerfile
    assert re.search(r"^EXPOSE 8080 8081 9090$", dockerfile, re.M)
    assert "INFERENCE_SUPERVISOR_BIND=0.0.0.0:8080" in dockerfile
    assert "INFERENCE_SUPERVISOR_GRPC_BIND=0.0.0.0:8081" in dockerfile and "[grpc]" in dockerfile
    assert "pip wheel" in dockerfile and "/wheels/*.whl" in dockerfile  # built from the wheel
