"""A real Prometheus (Debian's package) on a loopback port, for the scrape tests."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import external_tools


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def prometheus(config: str, workdir: Path) -> Iterator[int]:
    """Run Prometheus with ``config`` (YAML text); yields its HTTP port."""
    binary = external_tools.which("prometheus")
    port = free_port()
    path = workdir / "prometheus.yml"
    path.write_text(config)
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for_value(
    port: int, query: str, done: Callable[[float], bool], timeout: float = 45
) -> float:
    """Poll an instant query until ``done(value)`` or the timeout; returns the last value
    (-1 when the query never returned a sample)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    value = -1.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = json.loads(urllib.request.urlopen(url, timeout=5).read())
            result = reply["data"]["result"]
            if result:
                value = float(result[0]["value"][1])
                if done(value):
                    break
        except OSError:
            pass
        time.sleep(0.5)
    return value
