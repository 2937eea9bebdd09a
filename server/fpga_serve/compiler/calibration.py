"""Activation calibration: one symmetric int8 scale per tensor, from sample inputs.

Methods (recorded in the compiled model, ``calibration.json``):
- ``max``: the range is the largest |x| seen in any calibration image;
- ``percentile``: the range is the p-th percentile of |x| over every value of the tensor in all
  calibration images together (exactly what ``np.percentile`` of them all would give, linear
  interpolation; computed by keeping only the largest values, so it is cheap and independent
  of the batch size).

Tensors that must share a scale are grouped: the inputs and output of a concatenation (it
works by addressing: each input writes its slice of one buffer) and a max pool with its input
(it compares int8 values without requantising). A group's range is the largest of its members'.
The scale is range / 127; a tensor that was zero on every calibration image gets a tiny range
(it stays zero) and is listed as dead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fpga_serve.compiler import float_exec
from fpga_serve.compiler.ir import Graph
from fpga_serve.core.errors import CompileError

Progress = Callable[[str, int, int], None]
"""progress(step, done, total): called as calibration and compilation advance."""

MIN_RANGE = 1e-6
QMAX = 127


class Observer(Protocol):
    """Watches one tensor over the calibration batches. Extension point for new methods."""

    def update(self, values: np.ndarray) -> None: ...

    def result(self) -> float: ...


class MaxAbs:
    def __init__(self) -> None:
        self.peak = 0.0

    def update(self, values: np.ndarray) -> None:
        if values.size:
            self.peak = max(self.peak, float(np.max(np.abs(values))))

    def result(self) -> float:
        return self.peak


class Percentile:
    """The exact p-th percentile of |x| over ``total`` values seen across updates. Only the
    values at or above the percentile's lower order statistic are kept: for p = 99.99 that is
    one value in ten thousand."""

    def __init__(self, percentile: float, total: int) -> None:
        self.total = total
        self.rank = percentile / 100.0 * (total - 1)  # 0-based, ascending, as numpy's 'linear'
        self.keep = max(1, total - math.floor(self.rank))
        self.top = np.empty(0, np.float32)
        self.seen = 0

    def update(self, values: np.ndarray) -> None:
        mags = np.abs(values.ravel())
        self.seen += mags.size
        if self.top.size >= self.keep:
            mags = mags[mags > self.top.min()]  # most values cannot enter the kept set
        merged = np.concatenate([self.top, mags.astype(np.float32, copy=False)])
        if merged.size > self.keep:
            merged = np.partition(merged, merged.size - self.keep)[-self.keep :]
        self.top = merged

    def result(self) -> float:
        if self.seen != self.total:
            raise CompileError(f"percentile observer saw {self.seen} values, expected {self.total}")
        ordered = np.sort(self.top)
        base = self.total - self.keep  # global index of ordered[0]
        lo = math.floor(self.rank)
        frac = self.rank - lo
        low = float(ordered[lo - base])
        if frac == 0 or lo - base + 1 >= ordered.size:
            return low
        return low + (float(ordered[lo - base + 1]) - low) * frac


@dataclass
class CalibrationRecord:
    """What calibration measured and the scales it chose; saved as calibration.json."""

    method: str
    percentile: float | None
    samples: int
    ranges: dict[str, float]
    """Each tensor's own measured range (before sharing)."""
    scales: dict[str, float]
    """The int8 scale each tensor gets (real value = int8 value * scale)."""
    groups: list[list[str]] = field(default_factory=list)
    """Tensors that share one scale (concatenations, max pools), groups of two or more."""
    dead: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "percentile": self.percentile,
            "samples": self.samples,
            "ranges": self.ranges,
            "scales": self.scales,
            "shared_scale_groups": self.groups,
            "dead_tensors": self.dead,
        }


class _Groups:
    """Union-find over node names: members share one activation scale."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def share_groups(graph: Graph) -> dict[str, list[str]]:
    """Root -> members for tensors that must share a scale (see the module docstring)."""
    groups = _Groups()
    for node in graph:
        groups.find(node.name)
        if node.op in ("concat", "maxpool"):
            for i in node.inputs:
                groups.union(i, node.name)
    members: dict[str, list[str]] = {}
    for node in graph:
        members.setdefault(groups.find(node.name), []).append(node.name)
    return members


def assign_scales(
    graph: Graph, ranges: dict[str, float]
) -> tuple[dict[str, float], list[list[str]]]:
    """Per-tensor scales from measured ranges, equal within each sharing group."""
    scales: dict[str, float] = {}
    shared = []
    for members in share_groups(graph).values():
        peak = max(MIN_RANGE, *(ranges[m] for m in members))
        for m in members:
            scales[m] = peak / QMAX
        if len(members) > 1:
            shared.append(members)
    return scales, shared


def make_observer(method: str, percentile: float, total: int) -> Observer:
    if method == "max":
        return MaxAbs()
    if method == "percentile":
        return Percentile(percentile, total)
    raise CompileError(f"unknown calibration method {method!r} (max or percentile)")


def calibrate(
    graph: Graph,
    data: np.ndarray,
    method: str = "percentile",
    percentile: float = 99.99,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> CalibrationRecord:
    """Run the float graph over ``data`` [N, H, W, C] in batches, observe every tensor, and
    choose the scales."""
    count = int(data.shape[0])
    if count == 0:
        raise CompileError("calibration needs at least one sample input")
    observers = {
        n.name: make_observer(method, percentile, count * math.prod(n.shape)) for n in graph
    }

    def record(name: str, value: np.ndarray) -> None:
        observers[name].update(value)

    starts = range(0, count, max(1, batch_size))
    for index, start in enumerate(starts):
        float_exec.run(graph, data[start : start + batch_size], record)
        if progress is not None:
            progress("calibrate", index + 1, len(starts))
    ranges = {name: obs.result() for name, obs in observers.items()}
    for name, value in ranges.items():
        if not math.isfinite(value):
            raise CompileError(f"tensor {name!r} is not finite on the calibration data")
    scales, groups = assign_scales(graph, ranges)
    return CalibrationRecord(
        method=method,
        percentile=percentile if method == "percentile" else None,
        samples=count,
        ranges=ranges,
        scales=scales,
        groups=groups,
        dead=[name for name, value in ranges.items() if value == 0.0],
    )
