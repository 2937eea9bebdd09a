"""The compile pipeline: a named list of steps, each reading and extending one state.

import -> optimize -> calibrate -> lower -> plan. ``compile_model(..., save_steps=dir)`` writes
what each
step produced (graph structure, calibration record, program) as ``NN_<step>.json`` for
debugging; ``progress(step, done, total)`` is told as steps (and calibration batches) finish.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fpga_serve.compiler import float_exec
from fpga_serve.compiler.analysis import totals
from fpga_serve.compiler.calibration import CalibrationRecord, Progress, calibrate
from fpga_serve.compiler.ir import Graph
from fpga_serve.compiler.keras_import import import_keras_with_layers
from fpga_serve.compiler.lower import lower
from fpga_serve.compiler.options import CompileOptions
from fpga_serve.compiler.passes import optimize
from fpga_serve.compiler.plan import fuse_adds, plan, schedule
from fpga_serve.core import descriptors
from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import Program, preset


@dataclass
class CompiledModel:
    """A compiled featurizer: the program and how it was made."""

    program: Program
    options: CompileOptions
    calibration: dict[str, Any]
    """The calibration record as JSON: method, percentile, samples, per-tensor ranges and
    scales, shared-scale groups, dead tensors."""
    summary: list[dict[str, Any]]
    """Per node (one per instruction, plus input and concatenations): name, op, Keras source
    and fused layers, output shape, MACs, weight bytes, output / input scales, weight scales."""
    graph: Graph = field(repr=False)
    """The optimised float graph the program quantises."""
    passes: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    """The Keras layers compiled into the program (the featurizer cut)."""

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        """The optimised float graph on x: what the int8 program approximates."""
        return float_exec.run(self.graph, x)

    def save(self, directory: Path) -> None:
        """program.json + weights.npz, calibration.json, compile_options.json, summary.json."""
        self.program.save(directory)
        (directory / "calibration.json").write_text(json.dumps(self.calibration, indent=1))
        self.options.save(directory)
        (directory / "summary.json").write_text(json.dumps(self.summary, indent=1))


@dataclass
class _State:
    model: Any
    data: np.ndarray
    options: CompileOptions
    progress: Progress | None
    graph: Graph | None = None
    layers: list[str] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    record: CalibrationRecord | None = None
    program: Program | None = None
    summary: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)

    def need_graph(self) -> Graph:
        if self.graph is None:
            raise CompileError("compile steps ran out of order: no graph yet")
        return self.graph


def step_import(state: _State) -> dict[str, Any]:
    state.graph, state.layers = import_keras_with_layers(state.model, state.options.output_layer)
    state.graph.check()
    return {"layers": state.layers, "graph": state.graph.to_json()}


def step_optimize(state: _State) -> dict[str, Any]:
    state.graph, state.passes = optimize(state.need_graph())
    return {"passes": state.passes, "totals": totals(state.graph), "graph": state.graph.to_json()}


def step_calibrate(state: _State) -> dict[str, Any]:
    graph = state.need_graph()
    expected = graph.node(graph.input).shape
    if tuple(state.data.shape[1:]) != expected:
        raise CompileError(
            f"calibration inputs are {list(state.data.shape[1:])}, the model takes {list(expected)}"
        )
    o = state.options
    state.record = calibrate(
        graph, state.data, o.calibration_method, o.percentile, o.calibration_batch, state.progress
    )
    return state.record.to_json()


def step_lower(state: _State) -> dict[str, Any]:
    if state.record is None:
        raise CompileError("compile steps ran out of order: not calibrated")
    state.program, state.summary = lower(state.need_graph(), state.record.scales)
    return state.program.to_json()


def step_plan(state: _State) -> dict[str, Any]:
    """Fuse ADDs, tile for the target preset, place buffers; then pack once (every rule the
    accelerator checks, weights in the array's order) and record the device image's digest."""
    if state.program is None:
        raise CompileError("compile steps ran out of order: not lowered")
    target = preset(state.options.target)
    program = plan(fuse_adds(schedule(state.program)), target)
    try:
        image = descriptors.pack(program, target)
    except descriptors.PackError as exc:
        raise CompileError(f"cannot pack for {target.name}: {exc}") from exc
    state.program = program
    state.device = {
        "target": target.name,
        "instructions": len(program.instrs),
        "image_bytes": image.image_bytes,
        "input_bytes": image.input_bytes,
        "output_bytes": image.output_bytes,
        "weight_bytes": int(image.weights.size),
        "digest": image.digest(),
    }
    return {"device": state.device, "program": program.to_json()}


Step = Callable[[_State], dict[str, Any]]
STEPS: list[tuple[str, Step]] = [
    ("import", step_import),
    ("optimize", step_optimize),
    ("calibrate", step_calibrate),
    ("lower", step_lower),
    ("plan", step_plan),
]


def _calibration_array(data: np.ndarray | Sequence[np.ndarray], limit: int | None) -> np.ndarray:
    batches = [data] if isinstance(data, np.ndarray) else list(data)
    try:
        array = np.concatenate([np.asarray(b, np.float32) for b in batches])
    except ValueError as exc:
        raise CompileError(f"calibration batches do not stack: {exc}") from exc
    if array.ndim != 4 or array.shape[0] == 0:
        raise CompileError(
            f"calibration data must be a non-empty [N, H, W, C] batch, not {array.shape}"
        )
    if not np.isfinite(array).all():
        raise CompileError("calibration data holds NaN or infinite values")
    return array[:limit] if limit is not None else array


def compile_model(
    model: Any,
    calibration_data: np.ndarray | Sequence[np.ndarray],
    options: CompileOptions | None = None,
    progress: Progress | None = None,
    save_steps: Path | None = None,
) -> CompiledModel:
    """Compile a Keras model (up to ``options.output_layer``) for the overlay, calibrated on
    ``calibration_data`` (float inputs exactly as the model takes them, [N, H, W, C], or a list
    of such batches)."""
    options = options or CompileOptions()
    data = _calibration_array(calibration_data, options.calibration_images)
    state = _State(model, data, options, progress)
    if save_steps is not None:
        save_steps.mkdir(parents=True, exist_ok=True)
    for index, (name, step) in enumerate(STEPS):
        produced = step(state)
        if save_steps is not None:
            (save_steps / f"{index:02d}_{name}.json").write_text(json.dumps(produced, indent=1))
        if progress is not None and name != "calibrate":  # calibration reports per batch
            progress(name, 1, 1)
    if state.program is None or state.record is None or state.graph is None:
        raise CompileError("the compile pipeline did not produce a program")
    state.program.meta = {
        "passes": state.passes,
        "source": type(model).__name__,
        "output_layer": options.output_layer,
        "calibration": {"method": state.record.method, "samples": state.record.samples},
        "device": state.device,
    }
    return CompiledModel(
        program=state.program,
        options=options,
        calibration=state.record.to_json(),
        summary=state.summary,
        graph=state.graph,
        passes=state.passes,
        layers=state.layers,
    )
