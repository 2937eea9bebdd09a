"""CompileOptions: how a model is compiled, saved beside every compiled artefact
(``compile_options.json``) so that a model zip says how it was made."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import DEFAULT_TARGET, PRESETS

OPTIONS_FILE = "compile_options.json"


@dataclass
class CompileOptions:
    """Every choice the compiler makes that is not dictated by the model."""

    calibration_method: Literal["max", "percentile"] = "percentile"
    """Activation range estimate: ``max`` (largest |x| seen) or ``percentile`` (that
    percentile of |x| over all calibration values of the tensor)."""
    percentile: float = 99.99
    """For ``percentile``: in [90, 100]; 100 equals ``max``."""
    calibration_images: int | None = None
    """Use at most this many of the given calibration images (None: all)."""
    calibration_batch: int = 8
    """Images per float forward pass during calibration (memory, not results)."""
    output_layer: str | None = None
    """Featurizer cut: compile the model up to this (top-level) Keras layer, e.g. the global
    pool, and leave the rest (the classifier head) to a Keras stage. None: the whole model."""
    target: str = DEFAULT_TARGET
    """The accelerator preset (spec.json "presets") the program is tiled and packed for; a
    board must run a bitstream of the same array shape and buffers."""

    def __post_init__(self) -> None:
        if self.calibration_method not in ("max", "percentile"):
            raise CompileError(
                f"calibration_method must be 'max' or 'percentile', not {self.calibration_method!r}"
            )
        if not 90.0 <= float(self.percentile) <= 100.0:
            raise CompileError(f"percentile must be within [90, 100], not {self.percentile}")
        if self.calibration_images is not None and self.calibration_images < 1:
            raise CompileError("calibration_images must be at least 1")
        if self.calibration_batch < 1:
            raise CompileError("calibration_batch must be at least 1")
        if self.target not in PRESETS:
            raise CompileError(
                f"unknown target {self.target!r} (presets: {', '.join(sorted(PRESETS))})"
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CompileOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CompileError(f"unknown compile options: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise CompileError(f"bad compile options: {exc}") from exc

    def save(self, directory: Path) -> None:
        (directory / OPTIONS_FILE).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, directory: Path) -> CompileOptions:
        try:
            data = json.loads((directory / OPTIONS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise CompileError(f"cannot read {OPTIONS_FILE}: {exc}") from exc
        if not isinstance(data, dict):
            raise CompileError(f"{OPTIONS_FILE} must hold an object")
        return cls.from_json(data)
