"""The Docker image, built and run as an operator would (marker ``image``; scripts/ci_image.sh
builds the image and runs these with FPGA_SERVE_TEST_IMAGE set; .ci/run calls it).

The container runs with a read-only root filesystem (a tmpfs on /tmp), every capability dropped,
no new privileges and its numeric user, on the host's network (so every connection stays on
loopback); it must report SERVING, score a JPEG through the thin client exactly as the same
zip scores outside the container, guard /metrics with the key, turn Docker-healthy, and exit 0
on SIGTERM. Bad bases and a missing key file are refused with messages that say what is missing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("FPGA_SERVE_TEST_IMAGE", "")
KEY = "ci-image-key"
CLIENT = str(Path(sys.executable).with_name("fpga-serve-client"))


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check, cwd=ROOT
    )


@pytest.fixture(scope="module", autouse=True)
def _engine() -> None:
    if not IMAGE:
        pytest.skip("FPGA_SERVE_TEST_IMAGE is not set: scripts/ci_image.sh builds the image first")
    if shutil.which("docker") is None or docker("version", check=False).returncode != 0:
        pytest.fail("FPGA_SERVE_TEST_IMAGE is set but no Docker engine answers")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model_dir() -> Iterator[Path]:
    """The sample zip in a directory the image's user (10001, not the owner) can read."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from sample_model import build

    directory = Path(tempfile.mkdtemp(prefix="fpga-serve-image-models-"))
    try:
        directory.chmod(0o755)
        build(directory / "sample.zip").chmod(0o644)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_args(name: str, model_dir: Path, grpc: int, metrics: int, *extra: str) -> list[str]:
    return [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-e",
        "FPGA_SERVE_HOST=127.0.0.1",
        "-e",
        f"FPGA_SERVE_PORT={grpc}",
        "-e",
        f"FPGA_SERVE_METRICS_PORT={metrics}",
        "-v",
        f"{model_dir}:/models:ro",
        *extra,
    ]


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"fpga-serve-test-{os.getpid()}-{time.monotonic_ns()}"
    yield name
    docker("rm", "-f", name, check=False)


def wait_serving(address: str, name: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            [CLIENT, "health", "--address", address, "--timeout", "2"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip() == "SERVING":
            return
        state = docker("inspect", "-f", "{{.State.Status}}", name, check=False).stdout.strip()
        if state not in ("created", "running"):
            break
        time.sleep(1)
    logs = docker("logs", name, check=False)
    raise AssertionError(f"no SERVING from the container:\n{logs.stdout}{logs.stderr}")


def scrape(port: int, key: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_image_serves_a_jpeg_read_only_and_stops_cleanly_on_sigterm(
    model_dir: Path, container_name: str, photo_dir: Path
) -> None:
    import numpy as np
    from fpga_serve_client import PredictionClient
    from serving import run_server

    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", IMAGE).stdout)
    assert config["User"] == "10001:10001"  # numeric: runAsNonRoot can verify it
    assert "fpga-serve-client health" in " ".join(config["Healthcheck"]["Test"])
    grpc, metrics = free_port(), free_port()
    docker(
        *run_args(
            container_name,
            model_dir,
            grpc,
            metrics,
            "-e",
            f'FPGA_SERVE_API_KEYS=["{KEY}"]',
            IMAGE,
            "/models/sample.zip",
        )
    )
    address = f"127.0.0.1:{grpc}"
    wait_serving(address, container_name)

    photo = photo_dir / "china.jpg"
    printed = subprocess.run(
        [CLIENT, "score", str(photo), "--address", address, "--token", KEY, "--top", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert len(printed) == 5 and all(" confidence: " in line for line in printed), printed
    with PredictionClient(address, access_token=KEY) as client:
        in_container = client.score_file(photo)
    with (
        run_server([model_dir / "sample.zip"], "--device", "twin") as outside,
        PredictionClient(outside.address) as client,
    ):
        on_host = client.score_file(photo)
    np.testing.assert_allclose(in_container, on_host, rtol=1e-6, atol=1e-7)

    status, body = scrape(metrics, None)
    assert status == 401 and "API key" in body, (status, body)
    status, body = scrape(metrics, KEY)
    assert status == 200
    ok = [ln for ln in body.splitlines() if ln.startswith("fpga_serve_requests_total{")]
    counted = [float(ln.split()[-1]) for ln in ok if 'model="sample"' in ln and 'code="OK"' in ln]
    assert sum(counted) >= 2, ok  # the CLI's call and the client's

    deadline = time.monotonic() + 60
    health = ""
    while time.monotonic() < deadline:
        health = docker("inspect", "-f", "{{.State.Health.Status}}", container_name).stdout.strip()
        if health == "healthy":
            break
        time.sleep(2)
    assert health == "healthy"

    docker("kill", "--signal", "TERM", container_name)
    code = docker("wait", container_name, timeout=60).stdout.strip()
    logs = docker("logs", container_name).stderr
    assert code == "0", logs
    assert "draining and stopping" in logs and "stopped" in logs


def test_a_missing_key_file_stops_the_container_with_its_name(
    model_dir: Path, container_name: str
) -> None:
    docker(
        *run_args(
            container_name,
            model_dir,
            free_port(),
            free_port(),
            "-e",
            "FPGA_SERVE_API_KEYS_FILE=/run/secrets/fpga-serve-keys",
            IMAGE,
            "/models/sample.zip",
        )
    )
    code = docker("wait", container_name, timeout=120).stdout.strip()
    logs = docker("logs", container_name)
    assert code == "2", logs.stderr
    assert "/run/secrets/fpga-serve-keys" in logs.stderr and "does not exist" in logs.stderr


def _import_base(tag: str, files: dict[str, Path]) -> None:
    """``docker import`` a root filesystem holding just ``files`` (path in image -> host file)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for inside, outside in files.items():
            tar.add(str(outside.resolve()), arcname=inside.lstrip("/"))
    subprocess.run(
        ["docker", "import", "-", tag], input=buffer.getvalue(), capture_output=True, check=True
    )


def _shell_files() -> dict[str, Path]:
    shell = Path("/bin/sh").resolve()
    libraries = subprocess.run(["ldd", str(shell)], capture_output=True, text=True, check=True)
    files = {"/bin/sh": shell}
    for word in libraries.stdout.split():
        if word.startswith("/"):
            files[word] = Path(word)
    return files


def test_a_base_image_without_python_is_refused_with_a_message(tmp_path: Path) -> None:
    tag = "fpga-serve-test-base-without-python:latest"
    _import_base(tag, _shell_files())
    try:
        built = docker(
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={tag}",
            "-f",
            "docker/Dockerfile",
            "-t",
            "fpga-serve-test-never",
            str(ROOT),
            check=False,
            timeout=300,
        )
    finally:
        docker("image", "rm", "-f", tag, "fpga-serve-test-never", check=False)
    assert built.returncode != 0
    assert "BASE_IMAGE has no python3" in built.stdout + built.stderr
