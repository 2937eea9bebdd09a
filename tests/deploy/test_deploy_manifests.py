"""The Kubernetes and KServe manifests in docker/k8s/: valid for the real validators
(kubernetes-validate --strict; the KServe InferenceService CRD's schema, a subset vendored in
tests/deploy/schemas/ with its source named), and in agreement with the code: every FPGA_SERVE_*
variable is a setting with a valid value, args parse with `fpga-serve serve`, probes, ports and
grace periods line up, the annotated metrics port is scrapable with keys on, the twin's pods
meet the restricted Pod Security Standard with the image's own numeric user, and the board's
device paths are the ones pynq opens."""

from __future__ import annotations

import copy
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fpga_serve.cli import build_parser
from fpga_serve.core.settings import ServerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
PREFIX = "FPGA_SERVE_"
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
"""1.30: an old release still met in clusters (gRPC probes are GA since 1.27); and the newest."""


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def by_kind(name: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in documents(name)}


def image_user() -> tuple[int, int]:
    match = re.search(r"^USER (\d+):(\d+)$", (ROOT / "docker" / "Dockerfile").read_text(), re.M)
    assert match, "docker/Dockerfile has no numeric USER uid:gid"
    return int(match[1]), int(match[2])


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_container(container: dict[str, Any]) -> dict[str, str]:
    """Env names and values are settings; args parse; returns the literal settings."""
    settings: dict[str, str] = {}
    for name, value in env_of(container).items():
        if not name.startswith(PREFIX):
            continue
        field = name[len(PREFIX) :].lower()
        assert field in ServerSettings.model_fields, f"{name} is not a setting"
        if value is not None:
            settings[field] = value
    ServerSettings.model_validate(settings)  # pydantic parses the strings as the environment
    build_parser().parse_args(["serve", *container.get("args", [])])
    return settings


def grpc_probes(container: dict[str, Any]) -> list[dict[str, Any]]:
    probes = [container.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")]
    return [p["grpc"] for p in probes if p]


def check_metrics_scrapable(
    settings: dict[str, str], annotations: dict[str, str], key: str
) -> None:
    """An annotation scrape sends no key: with keys on, /metrics must not require them."""
    keys_on = "api_keys" in settings or "api_keys_file" in settings
    assert annotations[key] == settings["metrics_port"]
    if keys_on:
        assert ServerSettings.model_validate(settings).metrics_auth is False, (
            "keys are on and /metrics requires them: every annotation scrape would get 401"
        )


def check_restricted(pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
    """The restricted Pod Security Standard, with the image's numeric user."""
    pod = pod_spec["securityContext"]
    box = container["securityContext"]
    uid, gid = image_user()
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert box["allowPrivilegeEscalation"] is False
    assert box["readOnlyRootFilesystem"] is True
    assert box["capabilities"] == {"drop": ["ALL"]}
    assert not box.get("privileged")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp"


@pytest.mark.parametrize("name", ["fpga-serve.yaml", "fpga-serve-board.yaml"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_validate_strict(name: str, version: str) -> None:
    for document in documents(name):
        kubernetes_validate.validate(document, version, strict=True)


def test_kubernetes_validate_strict_catches_a_misspelt_field() -> None:
    deployment = by_kind("fpga-serve.yaml")["Deployment"]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["securityContext"]["runAsNonRot"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonRot"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_deployment_service_and_network_policy() -> None:
    kinds = by_kind("fpga-serve.yaml")
    deployment, service, policy = kinds["Deployment"], kinds["Service"], kinds["NetworkPolicy"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = check_container(container)
    assert settings["device"] == "twin"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(settings["port"]), "metrics": int(settings["metrics_port"])}
    probes = grpc_probes(container)
    assert len(probes) == 3
    assert all(p["port"] == ports["grpc"] and p["service"] == "" for p in probes)
    check_metrics_scrapable(settings, pod["metadata"]["annotations"], "prometheus.io/port")
    check_restricted(pod["spec"], container)
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(settings["shutdown_grace_s"])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["appProtocol"] == "kubernetes.io/h2c"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert container["args"][container["args"].index("--model-repository") + 1] in mounts
    # The keys: a Secret volume (kubelet says when it is missing), holding api_keys_file.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    keys_dir = str(Path(settings["api_keys_file"]).parent)
    secret = volumes[mounts[keys_dir]]["secret"]
    assert secret.get("optional") is not True
    # The unauthenticated metrics port is opened to a selected scraper only; gRPC to all.
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    rules = {r["ports"][0]["port"]: r for r in policy["spec"]["ingress"]}
    assert set(rules) == set(ports.values())
    assert rules[ports["metrics"]]["from"] and "from" not in rules[ports["grpc"]]


def test_board_deployment_asks_for_the_board_and_what_pynq_opens() -> None:
    from pynq.pl_server.embedded_device import EmbeddedDevice

    deployment = by_kind("fpga-serve-board.yaml")["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = check_container(container)
    assert settings["device"] == "pynq"  # no silent fall-back to the twin off a board
    assert pod["nodeSelector"]["fpga-serve.org/board"]
    assert any(t["key"] == "fpga-serve.org/board" for t in pod["tolerations"])
    box = container["securityContext"]
    assert box["privileged"] is True and box["runAsUser"] == 0  # pynq's /dev/mem needs euid 0
    # pynq writes its global state file beside its own code: the root cannot be read-only.
    from pynq.pl_server import global_state

    assert Path(global_state.STATE_DIR) == Path(global_state.__file__).parent
    assert box["readOnlyRootFilesystem"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    host = {
        m["mountPath"]: volumes[m["name"]]["hostPath"]
        for m in container["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }
    # Typed host paths: a node without them gets an event naming the path, not a crash loop.
    assert host[str(Path(EmbeddedDevice.BS_FPGA_MAN).parent)]["type"] == "Directory"
    assert host["/lib/firmware"]["type"] == "Directory"
    assert host["/dev/dri/renderD128"]["type"] == "CharDevice"
    check_metrics_scrapable(
        settings, deployment["spec"]["template"]["metadata"]["annotations"], "prometheus.io/port"
    )


def strict(schema: Any) -> Any:
    """A CRD schema as the API server's strict field validation applies it: unknown fields are
    errors wherever the schema lists properties and does not preserve unknown fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def isvc_schema() -> dict[str, Any]:
    schema = json.loads((SCHEMAS / "kserve-inferenceservice-v1beta1.json").read_text())
    assert schema["x-source"]["repository"] == "kserve/kserve"
    schema.pop("x-source")
    return dict(strict(schema))


def test_kserve_inference_service(isvc_schema: dict[str, Any]) -> None:
    (isvc,) = documents("kserve-inferenceservice.yaml")
    jsonschema.validate(isvc, isvc_schema)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    settings = check_container(container)
    (port,) = container["ports"]
    assert port["name"] == "h2c" and port["containerPort"] == int(settings["port"])
    assert all(p["port"] == port["containerPort"] for p in grpc_probes(container))
    assert container["args"][0].startswith("/mnt/models/")  # where KServe puts STORAGE_URI
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"
    assert ServerSettings.model_validate(settings).metrics_auth is False  # queue-proxy: no key
    check_metrics_scrapable(settings, annotations, "prometheus.kserve.io/port")
    check_restricted(predictor, container)


def test_the_crd_schema_catches_a_misspelt_field(isvc_schema: dict[str, Any]) -> None:
    (isvc,) = documents("kserve-inferenceservice.yaml")
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        jsonschema.validate(broken, isvc_schema)
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        jsonschema.validate(broken, isvc_schema)


def test_the_checks_catch_a_misspelt_setting_and_a_keyed_scrape() -> None:
    with pytest.raises(AssertionError, match="FPGA_SERVE_BATCH_SIZE is not a setting"):
        check_container({"env": [{"name": "FPGA_SERVE_BATCH_SIZE", "value": "8"}]})
    with pytest.raises(SystemExit):
        check_container({"args": ["--no-such-flag"]})
    with pytest.raises(AssertionError, match="every annotation scrape would get 401"):
        check_metrics_scrapable({"metrics_port": "8502", "api_keys_file": "/k"}, {"p": "8502"}, "p")


def _get(url: str, key: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_manifests_metrics_settings_scrape_without_a_key_while_grpc_needs_one(
    tiny_zip: Path, tmp_path: Path
) -> None:
    """The Deployment's own env (keys file, metrics auth off), on a real server: an annotation
    scrape (no key) gets 200, a gRPC call without a key UNAUTHENTICATED, with one OK."""
    from fpga_serve_client import PredictionClient, ServiceError
    from serving import run_server

    (container,) = by_kind("fpga-serve.yaml")["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ]
    keys = tmp_path / "keys"
    keys.write_text("primary\nsecondary\n")
    env = {k: v for k, v in env_of(container).items() if v is not None}
    env[f"{PREFIX}API_KEYS_FILE"] = str(keys)  # host and ports: run_server's loopback flags
    env[f"{PREFIX}SHUTDOWN_GRACE_S"] = "2"  # run_server allows 30 s for the stop
    with run_server([tiny_zip], env=env) as server:
        assert _get(f"http://127.0.0.1:{server.metrics_port}/metrics")[0] == 200
        with PredictionClient(server.address) as client, pytest.raises(ServiceError) as denied:
            client.labels()
        assert denied.value.code.name == "UNAUTHENTICATED"
        with PredictionClient(server.address, access_token="secondary") as client:
            assert client.labels()


def test_a_keyed_metrics_port_says_what_a_scrape_lacks(tiny_zip: Path) -> None:
    """Keys on and metrics auth on (the compose file's choice): a scrape without a key is told
    it sent none and how to send one; a wrong key is told it is wrong."""
    from serving import run_server

    with run_server([tiny_zip], env={f"{PREFIX}API_KEYS": '["primary"]'}) as server:
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        status, body = _get(url)
        assert status == 401 and "no API key" in body and "Authorization: Bearer" in body
        assert _get(url, "wrong") == (401, "invalid API key\n")
        assert _get(url, "primary")[0] == 200
