"""The client's command line: --help shows every default; `health` speaks mutual TLS with the
client-certificate flags; the server refuses to start on a key file that is not there."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from fpga_serve_client.cli import main as client_main
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from serving import run_server_expect_failure
from tls import make_cert, make_client_ca


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for command, defaults in (
        ("score", ["(default: 127.0.0.1:8500)", "(default: 10.0)", "(default: 5)", "tfserving"]),
        ("health", ["(default: 127.0.0.1:8500)", "--client-cert", "--client-key"]),
    ):
        with pytest.raises(SystemExit) as done:
            client_main([command, "--help"])
        assert done.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        for default in defaults:
            assert default in text, (command, default, text)
        assert "(default: None)" not in text and "SUPPRESS" not in text


@pytest.fixture(scope="module")
def mtls_health(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, Path]]]:
    """A grpc.health.v1 server that requires a client certificate signed by its client CA."""
    tmp = tmp_path_factory.mktemp("mtls")
    cert, key = make_cert(tmp)
    client_ca, client_key, client_cert = make_client_ca(tmp)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port, {"ca": cert, "cert": client_cert, "key": client_key}
    finally:
        server.stop(0)


def test_health_with_a_client_certificate(
    mtls_health: tuple[int, dict[str, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    port, files = mtls_health
    base = ["health", "--address", f"127.0.0.1:{port}", "--timeout", "5"]
    tls = ["--ca-cert", str(files["ca"]), "--server-name", "localhost"]
    client = ["--client-cert", str(files["cert"]), "--client-key", str(files["key"])]
    assert client_main([*base, *tls, *client]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert client_main([*base, *tls]) == 1  # no client certificate: the handshake is refused
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert client_main([*base, *tls, "--client-cert", str(files["cert"])]) == 1
    assert "--client-cert and --client-key go together" in capsys.readouterr().err


def test_serve_refuses_a_key_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "secrets" / "api-keys"
    stderr = run_server_expect_failure([tmp_path / "any.zip"], "--api-keys-file", str(missing))
    assert f"api_keys_file {missing} does not exist" in stderr
    assert "mount the key Secret there" in stderr
