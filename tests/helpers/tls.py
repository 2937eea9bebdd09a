"""Throw-away TLS material for the tests: a server certificate, a client CA and a client
certificate it signed (openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _self_signed(subject: str, key: Path, cert: Path) -> tuple[str, ...]:
    """openssl's arguments for a new RSA key and a certificate it signs itself, for a day."""
    return (
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        subject,
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    args = (
        *_self_signed("/CN=localhost", key, cert),
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    )
    subprocess.run(["openssl", *args], check=True, capture_output=True)
    return cert, key


def make_client_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A client CA and a client certificate it signed (for mutual TLS)."""
    ca_key, ca, key, csr, cert = (
        tmp / n for n in ("ca.key", "ca.pem", "client.key", "client.csr", "client.pem")
    )
    run = [
        _self_signed("/CN=fpga-serve test client CA", ca_key, ca),
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
