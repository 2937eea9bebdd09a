"""docker/compose.yaml for one FPGA host: valid for the compose specification's JSON schema
(vendored in tests/deploy/schemas/, its source named there), its fpga-serve settings and security
options in agreement with the code and the image, its Prometheus scraping the server with the
key (a real Prometheus with the shipped prometheus.yml, against a real server with keys on),
and Grafana provisioned with the dashboard."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import external_tools
import jsonschema
import pytest
import yaml
from fpga_serve.core.settings import ServerSettings
from prometheus_run import prometheus, wait_for_value
from test_deploy_manifests import check_container, image_user

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    document = json.loads(SCHEMA.read_text())
    assert document.pop("x-source")["repository"] == "compose-spec/compose-spec"
    return dict(document)


def container_of(service: dict[str, Any]) -> dict[str, Any]:
    """A compose service as check_container reads a Kubernetes container."""
    env = [{"name": k, "value": str(v)} for k, v in service["environment"].items()]
    return {"env": env, "args": service["command"]}


def settings_of(service: dict[str, Any]) -> ServerSettings:
    return ServerSettings.model_validate(check_container(container_of(service)))


def bind_sources(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service["volumes"] if v["type"] == "bind"}


def test_compose_file_is_valid_for_the_compose_specification(
    compose: dict[str, Any], schema: dict[str, Any]
) -> None:
    jsonschema.validate(compose, schema)
    broken = copy.deepcopy(compose)
    broken["services"]["fpga-serve-twin"]["read_onyl"] = True
    with pytest.raises(jsonschema.ValidationError, match="read_onyl"):
        jsonschema.validate(broken, schema)


def test_twin_and_board_profiles(compose: dict[str, Any]) -> None:
    from pynq.pl_server.embedded_device import EmbeddedDevice

    twin = compose["services"]["fpga-serve-twin"]
    board = compose["services"]["fpga-serve-board"]
    assert twin["profiles"] == ["twin"] and board["profiles"] == ["board"]
    assert settings_of(twin).device == "twin" and settings_of(board).device == "pynq"
    uid, gid = image_user()
    assert twin["user"] == f"{uid}:{gid}" and twin["cap_drop"] == ["ALL"]
    assert twin["read_only"] is True and board["read_only"] is False  # pynq writes its state
    for service in (twin, board):
        assert "/tmp" in service["tmpfs"]
        settings = settings_of(service)
        assert f"127.0.0.1:{settings.port}:{settings.port}" in service["ports"]
        assert float(service["stop_grace_period"].rstrip("s")) > settings.shutdown_grace_s
        assert bind_sources(service)["/models"]["read_only"] is True
        assert "fpga-serve" in service["networks"]["default"]["aliases"]
    # The board: root and privileged for pynq, and exactly the host paths pynq opens, never
    # created on a host without the board (Docker then names the missing path).
    assert board["user"] == "0:0" and board["privileged"] is True
    assert "/dev/dri/renderD128" in board["devices"]
    paths = bind_sources(board)
    fpga_manager = str(Path(EmbeddedDevice.BS_FPGA_MAN).parent)
    for target in (fpga_manager, "/lib/firmware"):
        assert paths[target]["source"] == target
        assert paths[target]["bind"]["create_host_path"] is False


def test_keys_secrets_and_the_scrape_key(compose: dict[str, Any]) -> None:
    twin = compose["services"]["fpga-serve-twin"]
    settings = settings_of(twin)
    assert settings.metrics_auth is True  # here Prometheus sends a key
    (secret,) = twin["secrets"]
    assert str(settings.api_keys_file) == f"/run/secrets/{secret}"
    scrape = yaml.safe_load((DOCKER / "compose" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    (prom_secret,) = compose["services"]["prometheus"]["secrets"]
    assert job["authorization"]["credentials_file"] == f"/run/secrets/{prom_secret}"
    assert job["static_configs"][0]["targets"] == [f"fpga-serve:{settings.metrics_port}"]
    for name in (secret, prom_secret):
        assert compose["secrets"][name]["file"].startswith("./compose/secrets/")


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v["target"]: v["source"] for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = DOCKER / mounts["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "fpga-serve.yaml").read_text())[
        "providers"
    ]
    dashboards = DOCKER / mounts[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "fpga-serve-dashboard.json").read_text())
    assert dashboard["uid"] == "fpga-serve"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


def loopback_config(server: Any, key_file: Path | None) -> str:
    """The shipped prometheus.yml with the target and the secret's path moved to this host."""
    config = yaml.safe_load((DOCKER / "compose" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]
    if key_file is None:
        del job["authorization"]
    else:
        job["authorization"]["credentials_file"] = str(key_file)
    return str(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def keyed_server(
    compose: dict[str, Any], tiny_zip: Path, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """A server with the compose file's fpga-serve settings: keys from a file, metrics keyed."""
    from serving import run_server

    keys = tmp_path_factory.mktemp("compose-keys") / "api-keys"
    keys.write_text("primary\nsecondary\n")
    twin = compose["services"]["fpga-serve-twin"]
    env = {e["name"]: e["value"] for e in container_of(twin)["env"]}
    env["FPGA_SERVE_API_KEYS_FILE"] = str(keys)
    with run_server([tiny_zip], env=env) as server:
        yield server


def test_promtool_accepts_the_prometheus_config(keyed_server: Any, tmp_path: Path) -> None:
    key = tmp_path / "scrape-key"
    key.write_text("secondary\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(loopback_config(keyed_server, key))
    done = subprocess.run(
        [external_tools.which("promtool"), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("with_key", [True, False])
def test_prometheus_scrapes_the_server_with_the_key(
    keyed_server: Any, tmp_path: Path, with_key: bool
) -> None:
    """With the scrape key the target is up; without it (the bug this file fixes on
    Kubernetes) every scrape is refused and the target is down."""
    key = tmp_path / "scrape-key"
    key.write_text("secondary\n")  # any accepted key; the file's trailing newline is trimmed
    config = loopback_config(keyed_server, key if with_key else None)
    with prometheus(config, tmp_path) as port:
        up = wait_for_value(port, 'up{job="fpga-serve"}', lambda v: v == (1 if with_key else 0))
    assert up == (1.0 if with_key else 0.0)
