"""Keras model -> overlay program: import, passes, calibration, quantisation, lowering."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from fpga_serve.compiler import float_exec
from fpga_serve.compiler.ir import Graph
from fpga_serve.compiler.keras_import import import_keras
from fpga_serve.compiler.lower import assign_scales, lower
from fpga_serve.compiler.passes import optimize
from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import Program

Progress = Callable[[str, int, int], None]


@dataclass
class CompileOptions:
    """How a model was compiled; saved beside every compiled artefact."""

    calibration_method: Literal["max", "percentile"] = "percentile"
    """max: the largest |x| seen; percentile: that percentile of |x| per batch, max over
    batches."""
    percentile: float = 99.99
    output_layer: str | None = None
    """Compile up to this Keras layer (default: the model's last layer)."""
    calibration_batch: int = 8

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompiledModel:
    program: Program
    options: CompileOptions
    calibration: dict[str, Any]
    summary: list[dict[str, Any]]
    graph: Graph = field(repr=False)
    passes: list[str] = field(default_factory=list)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        """The optimised float graph on x (what the int8 program approximates)."""
        return float_exec.run(self.graph, x)


def calibrate(
    graph: Graph,
    batches: Iterable[np.ndarray],
    options: CompileOptions,
    progress: Progress | None = None,
) -> tuple[dict[str, float], int]:
    ranges: dict[str, float] = {n.name: 0.0 for n in graph}
    count = 0
    batch_list = list(batches)

    def record(name: str, value: np.ndarray) -> None:
        mags = np.abs(value)
        if options.calibration_method == "max":
            r = float(mags.max(initial=0))
        else:
            r = float(np.percentile(mags, options.percentile)) if mags.size else 0.0
        ranges[name] = max(ranges[name], r)

    for index, batch in enumerate(batch_list):
        float_exec.run(graph, batch, record)
        count += int(batch.shape[0])
        if progress is not None:
            progress("calibrate", index + 1, len(batch_list))
    if count == 0:
        raise CompileError("calibration needs at least one sample input")
    return ranges, count


def compile_model(
    model: Any,
    calibration_data: np.ndarray,
    options: CompileOptions | None = None,
    progress: Progress | None = None,
) -> CompiledModel:
    """Compile a Keras model (up to options.output_layer) for the overlay."""
    options = options or CompileOptions()
    data = np.asarray(calibration_data, np.float32)
    if data.ndim != 4 or data.shape[0] == 0:
        raise CompileError(
            f"calibration data must be a non-empty [N, H, W, C] batch, not {data.shape}"
        )
    graph = import_keras(model, options.output_layer)
    if progress:
        progress("import", 1, 1)
    graph, passes = optimize(graph)
    if progress:
        progress("optimize", 1, 1)
    expected = graph.node(graph.input).shape
    if tuple(data.shape[1:]) != expected:
        raise CompileError(
            f"calibration inputs are {list(data.shape[1:])}, the model takes {list(expected)}"
        )
    step = max(1, options.calibration_batch)
    ranges, count = calibrate(
        graph, (data[i : i + step] for i in range(0, len(data), step)), options, progress
    )
    scales = assign_scales(graph, ranges)
    program, summary = lower(graph, scales)
    calibration = {
        "method": options.calibration_method,
        "percentile": options.percentile if options.calibration_method == "percentile" else None,
        "samples": count,
        "ranges": ranges,
        "scales": scales,
    }
    program.meta = {"passes": passes, "source": type(model).__name__}
    if progress:
        progress("lower", 1, 1)
    return CompiledModel(program, options, calibration, summary, graph, passes)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
