"""A real Prometheus (Debian's package) on a loopback port, for the scrape tests."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import external_tools
from waiting import wait_until


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
    """Poll an instant query until ``done(value)`` and return the value; fail after the timeout
    with the last value seen (-1 when the query never returned a sample)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    seen = [-1.0]

    def answered() -> bool:
        try:
            result = json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]
        except OSError:  # Prometheus not listening yet
            return False
        if result:
            seen.append(float(result[0]["value"][1]))
        return bool(result) and done(seen[-1])

    wait_until(answered, timeout, what=lambda: f"{query} (last value {seen[-1]})", interval=0.5)
    return seen[-1]
