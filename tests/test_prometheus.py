"""A real Prometheus scrapes the server; promtool lints the exposition."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fpga_serve_client import PredictionClient


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (.ci/run installs Debian's prometheus package)")
        pytest.skip(f"{name} not installed (apt-get install prometheus)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(server: Any) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=10).read().decode()


def test_promtool_accepts_the_exposition(tiny_server: Any, china_jpg: bytes) -> None:
    promtool = _tool("promtool")
    with PredictionClient(tiny_server.address) as client:
        client.score_image(china_jpg)
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=_scrape(tiny_server),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_request_counts(
    tiny_server: Any, china_jpg: bytes, tmp_path: Path
) -> None:
    prometheus = _tool("prometheus")
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: fpga-serve\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{tiny_server.metrics_port}']\n"
    )
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with PredictionClient(tiny_server.address) as client:
            for _ in range(4):
                client.score_image(china_jpg)
        query = 'sum(fpga_serve_requests_total{model="tiny",code="OK"})'
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        value = -1.0
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            try:
                reply = json.loads(urllib.request.urlopen(url, timeout=5).read())
                result = reply["data"]["result"]
                if result:
                    value = float(result[0]["value"][1])
                    if value >= 4:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        assert value >= 4, f"Prometheus saw {value} successful requests"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_queries_only_exported_metrics(tiny_server: Any, china_jpg: bytes) -> None:
    """Every fpga_serve_* series the Grafana dashboard plots exists in a scrape."""
    import re

    root = Path(__file__).resolve().parent.parent
    dashboard = json.loads((root / "docker" / "grafana" / "fpga-serve-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"fpga_serve_[a-z_]+", e)}
    with PredictionClient(tiny_server.address) as client:
        client.score_image(china_jpg)
    from prometheus_client.parser import text_string_to_metric_families

    exported = set()
    for family in text_string_to_metric_families(_scrape(tiny_server)):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exported |= {family.name + s for s in ["", *suffixes.get(family.type, [])]}
    assert used and used <= exported, sorted(used - exported)
