"""A real Prometheus scrapes the server; promtool lints the exposition."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import external_tools
from fpga_serve_client import PredictionClient
from prometheus_run import prometheus, wait_for_value
from serving import metric_value


def _scrape(server: Any) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=10).read().decode()


def test_promtool_accepts_the_exposition(tiny_server: Any, china_jpg: bytes) -> None:
    promtool = external_tools.which("promtool")
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
    config = (
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: fpga-serve\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{tiny_server.metrics_port}']\n"
    )
    # The session's server has counted other tests' requests: Prometheus must see exactly these
    # four on top of the count before them (nothing else talks to the server meanwhile).
    before = metric_value(tiny_server, "fpga_serve_requests_total", model="tiny", code="OK")
    with prometheus(config, tmp_path) as port:
        with PredictionClient(tiny_server.address) as client:
            for _ in range(4):
                client.score_image(china_jpg)
        query = 'sum(fpga_serve_requests_total{model="tiny",code="OK"})'
        value = wait_for_value(port, query, lambda v: v >= before + 4)
        assert value == before + 4, f"Prometheus saw {value - before} more successful requests"


def test_dashboard_queries_only_exported_metrics(tiny_server: Any, china_jpg: bytes) -> None:
    """Every fpga_serve_* series the Grafana dashboard plots exists in a scrape."""
    import re

    root = Path(__file__).resolve().parents[2]
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
