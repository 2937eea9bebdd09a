"""Prometheus metrics, on a registry of our own (several servers may share one process in tests).

Names follow Prometheus conventions (base units, ``_total`` counters); every series carries the
model and its version so one scrape can tell models apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fpga_serve.core.stage import StageRunner
from fpga_serve.runtime import StageObserver
from fpga_serve.runtime.batching import BatchObserver
from fpga_serve.service.statistics import Statistics

# Latency buckets from 0.5 ms to 10 s: FPGA inference lives in the millisecond range.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)


class Metrics:
    """Every metric the server exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.statistics = Statistics()
        """Triton's per-version totals (ModelStatistics), fed by the same hooks."""
        self.requests = Counter(
            "fpga_serve_requests",
            "Inference requests answered, by model, version, protocol and gRPC status code.",
            ["model", "version", "protocol", "code"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "fpga_serve_request_duration_seconds",
            "Time from receiving an inference request to answering it.",
            ["model", "version", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_latency = Histogram(
            "fpga_serve_stage_duration_seconds",
            "Time spent in one pipeline stage for one batch.",
            ["model", "version", "stage", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "fpga_serve_inflight_requests",
            "Inference requests being executed now.",
            ["model", "version"],
            registry=self.registry,
        )
        self.model_load_seconds = Gauge(
            "fpga_serve_model_load_seconds",
            "How long the model took to validate and load.",
            ["model", "version"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "fpga_serve_model_ready",
            "1 when the model version is loaded and ready, else 0.",
            ["model", "version"],
            registry=self.registry,
        )

        self.queue_latency = Histogram(
            "fpga_serve_queue_duration_seconds",
            "Time a request waited in the model's batching queue.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "fpga_serve_batch_size",
            "Items per batch sent to the pipeline.",
            ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "fpga_serve_queue_depth",
            "Requests waiting in the model's batching queue.",
            ["model", "version"],
            registry=self.registry,
        )
        self.device_busy = Counter(
            "fpga_serve_device_busy_seconds",
            "Seconds the accelerator (or its twin) spent executing; its rate is the busy fraction.",
            ["device"],
            registry=self.registry,
        )
        self.layer_cycles = Counter(
            "fpga_serve_device_layer_cycles",
            "Cycles each instruction took on the accelerator, from its per-descriptor counters "
            "(program: the first 12 hex digits of the device image's digest); divided by "
            "fpga_serve_device_program_runs_total, the mean per run.",
            ["device", "program", "layer"],
            registry=self.registry,
        )
        self.program_runs = Counter(
            "fpga_serve_device_program_runs",
            "Runs of a program whose per-instruction cycles were counted.",
            ["device", "program"],
            registry=self.registry,
        )
        self.validations = Counter(
            "fpga_serve_device_validations",
            "Validate mode: batches run on the device and on the twin, by whether they matched.",
            ["device", "result"],
            registry=self.registry,
        )
        self.shutdown_cut = Counter(
            "fpga_serve_shutdown_cut_requests",
            "Requests still in flight when the shutdown grace ran out, answered UNAVAILABLE.",
            registry=self.registry,
        )
        self.dropped = Counter(
            "fpga_serve_dropped_requests",
            "Requests dropped before execution: deadline passed or client cancelled.",
            ["model", "version", "reason"],
            registry=self.registry,
        )

    def validation(self, device: str, matched: bool) -> None:
        self.validations.labels(device, "match" if matched else "mismatch").inc()

    def batch_observer(self, model: str, version: str) -> BatchObserver:
        """Batching hooks that feed this model's queue and batch metrics."""
        metrics = self
        statistics = self.statistics
        depth_gauge = self.queue_depth.labels(model, version)
        sizes = self.batch_size.labels(model, version)
        waits = self.queue_latency.labels(model, version)

        class _Observer(BatchObserver):
            def queued(self, depth: int) -> None:
                depth_gauge.set(depth)

            def batch(self, size: int, requests: int, queue_seconds: Sequence[float]) -> None:
                sizes.observe(size)
                for seconds in queue_seconds:
                    waits.observe(seconds)
                statistics.queued(model, version, queue_seconds)

            def dropped(self, reason: str) -> None:
                metrics.dropped.labels(model, version, reason).inc()

        return _Observer()

    def stage_observer(
        self, model: str, version: str, stages: Sequence[StageRunner] = ()
    ) -> StageObserver:
        """Stage timing hook for one model version (``stages``: its pipeline's, in order, for
        the execution counts of ModelStatistics)."""

        bound: dict[str, Any] = {}  # per stage: its histogram child, looked up once
        executions = self.statistics.stage_observer(model, version, stages)

        def observe(stage: StageRunner, seconds: float, batch: int) -> None:
            latency = bound.get(stage.name)
            if latency is None:
                latency = self.stage_latency.labels(model, version, stage.name, stage.kind)
                bound[stage.name] = latency
            latency.observe(seconds)
            executions(stage, seconds, batch)

        return observe

    def device_busy_hook(self, device: str) -> Callable[[float], None]:
        """The device's busy counter, told each run's seconds on the device (hw/base.py): the
        time a run holds the device, not an FPGA stage's whole time (host-side quantisation,
        waiting for the device behind another batch)."""
        return self.device_busy.labels(device).inc  # type: ignore[no-any-return]

    def device_cycles_hook(self, device: str) -> Callable[[str, list[tuple[str, int]]], None]:
        """The per-layer cycle counters, told each run's instruction cycles (hw/base.py)."""

        def told(program: str, layers: list[tuple[str, int]]) -> None:
            self.program_runs.labels(device, program).inc()
            for layer, cycles in layers:
                self.layer_cycles.labels(device, program, layer).inc(cycles)

        return told

    def forget_model(self, model: str, version: str) -> None:
        """Drop the per-model series of an unloaded model."""
        self.statistics.forget(model, version)
        for gauge in (self.inflight, self.model_load_seconds, self.model_ready, self.queue_depth):
            with contextlib.suppress(KeyError):
                gauge.remove(model, version)
