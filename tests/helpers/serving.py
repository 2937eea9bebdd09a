"""Run ``fpga-serve serve`` in its own process on loopback, as users and orchestrators do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    grpc_port: int
    metrics_port: int | None
    log: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _pump(stream: IO[str], sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


@contextmanager
def run_server(
    models: Sequence[Path],
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    entry: Sequence[str] = ("-m", "fpga_serve.cli"),
) -> Iterator[RunningServer]:
    """Start a server on free loopback ports; stop it with SIGTERM and require exit code 0.
    ``entry``: what Python runs instead of the CLI module (a test's instrumented CLI)."""
    cmd = [
        sys.executable,
        *entry,
        "serve",
        *map(str, models),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "0",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(env),
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    log: list[str] = []
    threading.Thread(target=_pump, args=(proc.stderr, log), daemon=True).start()
    deadline = time.monotonic() + timeout
    ready: dict[str, object] | None = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            ready = json.loads(line)
            break
    if ready is None:
        proc.kill()
        proc.wait()
        raise RuntimeError("server did not start:\n" + "".join(log))
    threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True).start()
    server = RunningServer(proc, int(ready["grpc_port"]), ready.get("metrics_port"), log)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("server did not stop within 30 s of SIGTERM") from None
            assert code == 0, f"server exited with {code}:\n" + "".join(log)


def metric_value(server: RunningServer, name: str, **labels: str) -> float:
    """The sum of metric ``name``'s samples whose labels include ``labels`` (0 when absent)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def wait_for_metric(
    server: RunningServer,
    name: str,
    predicate: Callable[[float], bool],
    timeout: float = 30.0,
    **labels: str,
) -> float:
    """Poll /metrics until ``predicate(metric_value(...))`` holds; fail after ``timeout``."""
    seen: list[float] = []

    def holds() -> bool:
        seen.append(metric_value(server, name, **labels))
        return predicate(seen[-1])

    wait_until(holds, timeout, what=lambda: f"{name}{labels} (stayed at {seen[-1]})")
    return seen[-1]


def run_server_expect_failure(models: Sequence[Path], *args: str, timeout: float = 120.0) -> str:
    """Run a server that must refuse to start; return its stderr."""
    cmd = [
        sys.executable,
        "-m",
        "fpga_serve.cli",
        "serve",
        *map(str, models),
        "--port",
        "0",
        "--metrics-port",
        "-1",
        *args,
    ]
    done = subprocess.run(  # noqa: PLW1510 - the exit code is checked below
        cmd, capture_output=True, text=True, env=server_env(), cwd=ROOT, timeout=timeout
    )
    assert done.returncode != 0, "server started but should have refused:\n" + done.stderr
    return done.stderr


def scores_in_process(zip_path: Path, image: bytes) -> Any:
    """What the saved zip computes for one image, loaded as the server loads it, in this
    process (its first output's first row)."""
    import numpy as np
    from fpga_serve.modelzip import LoadContext, load_pipeline
    from fpga_serve.runtime import Pipeline

    archive = load_pipeline(zip_path, LoadContext())
    try:
        pipeline = Pipeline(archive.stages, input_aliases=archive.input_aliases)
        (out,) = pipeline.run({"images": np.array([image], dtype=object)}).values()
        return np.asarray(out[0])
    finally:
        archive.close()
