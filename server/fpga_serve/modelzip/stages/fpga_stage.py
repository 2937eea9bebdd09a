"""FPGA stages ("fpga"): a compiled overlay program run on the server's device.

Files: program.json + weights.npz (the program, int8 weights), calibration.json (method and
per-tensor ranges), compile_options.json (how it was made). The host quantises the float input
with the program's input scale, the device runs the program, the host dequantises the output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fpga_serve.compiler import CompiledModel
from fpga_serve.core.errors import DeviceError, FpgaServeError, ModelLoadError
from fpga_serve.core.isa import Program, dequantize_output, quantize_input
from fpga_serve.core.stage import StageRunner
from fpga_serve.core.types import DType, TensorSpec
from fpga_serve.modelzip.manifest import StageRecord
from fpga_serve.modelzip.stages import LoadContext, SavedStage, register_kind

log = logging.getLogger(__name__)


def _specs(program: Program) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    h, w, c = program.input_shape()
    oh, ow, oc = program.output_shape()
    out_shape = (-1, oc) if (oh, ow) == (1, 1) else (-1, oh, ow, oc)
    return (TensorSpec("images", DType.FP32, (-1, h, w, c)),), (
        TensorSpec("features", DType.FP32, out_shape),
    )


class FpgaStage:
    """The quantized featurizer for ``ModelDefinition.pipeline``."""

    kind = "fpga"

    def __init__(self, compiled: CompiledModel, name: str | None = "featurizer") -> None:
        self.compiled = compiled
        self.name = name

    def save(self, dest: Path) -> SavedStage:
        program = self.compiled.program
        dest.mkdir(parents=True, exist_ok=True)
        self.compiled.save(dest)  # program, weights, calibration, options, summary
        inputs, outputs = _specs(program)
        return SavedStage(inputs, outputs, {"spec_version": program.spec_version})


class FpgaRunner:
    """Runs a program on a device: quantise the float input, run, dequantise the output."""

    def __init__(
        self,
        name: str,
        program: Program,
        device: Any,
        validate: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.name = name
        self.kind = "fpga"
        self.inputs, self.outputs = _specs(program)
        self.program = program
        self.device = device
        self.device_name = str(device.name)
        try:
            self.loaded = device.load(program)
        except FpgaServeError as exc:
            raise ModelLoadError(f"stage {name!r}: {exc}") from exc
        self._validate = validate
        self._mismatches = 0
        self._twin = None
        if validate is not None and self.device_name != "twin":
            from fpga_serve.hw.twin.device import TwinDevice

            self._twin = TwinDevice().load(program)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = quantize_input(inputs[0], self.program.input_scale)
        try:
            q = self.loaded.run(x)
        except FpgaServeError:
            raise
        except Exception as exc:  # a driver bug must not escape as a bare exception
            raise DeviceError(f"device {self.device_name} failed: {exc}") from exc
        if self._twin is not None and self._validate is not None:
            # Validate mode: the same job on the twin, the specification; mismatches are counted.
            want = self._twin.run(x)
            matched = bool(np.array_equal(q, want))
            self._validate(self.device_name, matched)
            if not matched:
                self._mismatch(q, want)
        out = dequantize_output(q, self.program.output_scale)
        if len(self.outputs[0].shape) == 2:  # a 1x1 map is served as [N, C] features
            out = out.reshape(out.shape[0], -1)
        return [out]

    def _mismatch(self, got: np.ndarray, want: np.ndarray) -> None:
        """Say so in the log: the 1st, 10th, 100th, ... mismatch (a broken board mismatches
        every batch)."""
        self._mismatches += 1
        if str(self._mismatches).strip("0") != "1":
            return
        differ = got != want
        log.warning(
            "validate: stage %r on %s differs from the twin in %d of %d output values of a "
            "batch of %d (mismatch %d; the device's answer was served; docs/boards.md, "
            "'When they differ')",
            self.name,
            self.device_name,
            int(np.count_nonzero(differ)),
            differ.size,
            got.shape[0],
            self._mismatches,
        )

    def close(self) -> None:
        self.loaded.close()


class FpgaKind:
    kind = "fpga"

    def load(self, record: StageRecord, stage_dir: Path, context: LoadContext) -> StageRunner:
        program = Program.load(stage_dir)
        inputs, outputs = _specs(program)
        if inputs != record.inputs or outputs != record.outputs:
            raise ModelLoadError(f"stage {record.name!r}: the program does not match the manifest")
        device = context.resolve_device()
        if device is None:
            from fpga_serve.hw.twin.device import TwinDevice

            device = TwinDevice()
        return FpgaRunner(record.name, program, device, context.validate)


register_kind(FpgaKind())
