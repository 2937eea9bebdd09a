"""The Kubernetes and KServe manifests in docker/k8s/ agree with the code: every FPGA_SERVE_*
variable is a setting with a valid value, the container args parse with `fpga-serve serve`, and
probes, ports and grace periods line up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fpga_serve.cli import build_parser
from fpga_serve.core.settings import ServerSettings

yaml = pytest.importorskip("yaml")
K8S = Path(__file__).resolve().parent.parent / "docker" / "k8s"
PREFIX = "FPGA_SERVE_"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def check_container(container: dict[str, Any]) -> dict[str, str]:
    """Env names and values are settings; args parse; returns the literal env values."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    settings: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(PREFIX):
            continue
        field = name[len(PREFIX) :].lower()
        assert field in ServerSettings.model_fields, f"{name} is not a setting"
        if value is not None:
            settings[field] = value
    # pydantic parses the strings as the environment would (bad values raise)
    ServerSettings.model_validate(settings)
    build_parser().parse_args(["serve", *container.get("args", [])])
    return settings


def grpc_probes(container: dict[str, Any]) -> list[dict[str, Any]]:
    probes = [container.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")]
    return [p["grpc"] for p in probes if p]


def test_deployment_and_service() -> None:
    deployment, service = documents("fpga-serve.yaml")
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = check_container(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == int(settings["port"]) and ports["metrics"] == int(
        settings["metrics_port"]
    )
    probes = grpc_probes(container)
    assert len(probes) == 3
    assert all(p["port"] == ports["grpc"] and p["service"] == "" for p in probes)
    annotations = pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(settings["shutdown_grace_s"])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["appProtocol"] == "kubernetes.io/h2c"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert container["args"][container["args"].index("--model-repository") + 1] in mounts


def test_kserve_inference_service() -> None:
    (isvc,) = documents("kserve-inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    settings = check_container(container)
    (port,) = container["ports"]
    assert port["name"] == "h2c" and port["containerPort"] == int(settings["port"])
    assert all(p["port"] == port["containerPort"] for p in grpc_probes(container))
    assert container["args"][0].startswith("/mnt/models/")  # where KServe puts STORAGE_URI


def test_the_check_catches_a_misspelt_setting(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="FPGA_SERVE_BATCH_SIZE is not a setting"):
        check_container({"env": [{"name": "FPGA_SERVE_BATCH_SIZE", "value": "8"}]})
    with pytest.raises(SystemExit):
        check_container({"args": ["--no-such-flag"]})
