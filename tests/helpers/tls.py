"""Throw-away TLS material for the tests: a server certificate, a client CA and a client
certificate it signed (openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def make_client_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A client CA and a client certificate it signed (for mutual TLS)."""
    ca_key, ca, key, csr, cert = (
        tmp / n for n in ("ca.key", "ca.pem", "client.key", "client.csr", "client.pem")
    )
    run = [
        (
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=fpga-serve test client CA",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca),
        ),
        (
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=app",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ),
        (
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            str(cert),
        ),
    ]
    for args in run:
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    return ca, key, cert
