"""A loaded pipeline ready to execute: input binding, validation, stage-by-stage execution."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from fpga_serve.core.errors import FpgaServeError, InvalidInput
from fpga_serve.core.stage import StageRunner
from fpga_serve.core.types import DType, TensorSpec
from fpga_serve.runtime import images


class StageObserver(Protocol):
    """Told how long each stage took (metrics hook); must be cheap and never raise."""

    def __call__(self, stage: StageRunner, seconds: float, batch: int) -> None: ...


class Pipeline:
    """Stages executed in order; stage i's outputs are stage i+1's inputs, by position.

    ``inputs``/``outputs`` are the pipeline's tensor specs (first stage's inputs, last stage's
    outputs). ``input_aliases`` maps extra request names (the Brainwave clients' ``images``) to
    input names. Thread-safe as long as the stages are.
    """

    def __init__(
        self,
        stages: Sequence[StageRunner],
        *,
        input_aliases: Mapping[str, str] | None = None,
        max_batch_size: int = 64,
        max_image_pixels: int | None = None,
    ) -> None:
        if not stages:
            raise InvalidInput("a pipeline needs at least one stage")
        self.stages = tuple(stages)
        self.inputs: tuple[TensorSpec, ...] = self.stages[0].inputs
        self.outputs: tuple[TensorSpec, ...] = self.stages[-1].outputs
        self.input_aliases = dict(input_aliases or {})
        self.max_batch_size = max_batch_size
        self.max_image_pixels = max_image_pixels
        for alias, target in self.input_aliases.items():
            if target not in {s.name for s in self.inputs}:
                raise InvalidInput(f"input alias {alias!r} points to unknown input {target!r}")
        names = {s.name for s in self.inputs}
        # Request name -> input name: real names first, then aliases that do not shadow one.
        self._targets = {**self.input_aliases, **{name: name for name in names}}
        if max_image_pixels is not None and any(s.dtype is DType.BYTES for s in self.inputs):
            images.prepare()  # at load time, not in the first image request

    def input_names(self) -> list[str]:
        """Every name a request may use for an input: real names, then aliases."""
        return [s.name for s in self.inputs] + [
            a for a in self.input_aliases if a not in {s.name for s in self.inputs}
        ]

    def bind(self, named: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Map request tensors (by name or alias) onto the first stage's inputs and validate them.

        Raises InvalidInput naming the unknown, missing or malformed input.
        """
        by_name: dict[str, np.ndarray] = {}
        for key, array in named.items():
            target = self._targets.get(key)
            if target is None:
                known = ", ".join(map(repr, self.input_names()))
                raise InvalidInput(f"unknown input {key!r}; this model takes {known}")
            if target in by_name:
                raise InvalidInput(f"input {target!r} given twice (as {key!r} and by another name)")
            by_name[target] = array
        bound: list[np.ndarray] = []
        batch: int | None = None
        for spec in self.inputs:
            if spec.name not in by_name:
                raise InvalidInput(f"missing input {spec.name!r} ({spec.describe()})")
            array = by_name[spec.name]
            spec.check(array, self.max_batch_size)
            if spec.dtype is DType.BYTES:
                _check_bytes(spec.name, array)
                if self.max_image_pixels is not None:
                    images.check_image_pixels(spec.name, array, self.max_image_pixels)
            if batch is None:
                batch = int(array.shape[0])
            elif array.shape[0] != batch:
                raise InvalidInput(
                    f"input {spec.name!r} has batch {array.shape[0]}, other inputs have {batch}"
                )
            bound.append(array)
        return bound

    def run(
        self,
        named: Mapping[str, np.ndarray],
        observer: StageObserver | None = None,
    ) -> dict[str, np.ndarray]:
        """Validate, run every stage, return the outputs by name."""
        outputs = self.execute(self.bind(named), observer)
        return {spec.name: array for spec, array in zip(self.outputs, outputs, strict=True)}

    def execute(
        self, arrays: list[np.ndarray], observer: StageObserver | None = None
    ) -> list[np.ndarray]:
        """Run every stage on already bound and validated inputs; outputs in ``outputs`` order."""
        batch = int(arrays[0].shape[0])
        for stage in self.stages:
            start = time.perf_counter()
            arrays = stage.run(arrays)
            if observer is not None:
                observer(stage, time.perf_counter() - start, batch)
            _check_stage_outputs(stage, arrays, batch)
        return arrays

    def close(self) -> None:
        for stage in self.stages:
            stage.close()


def _check_bytes(name: str, array: np.ndarray) -> None:
    for index, item in enumerate(array.reshape(-1)):
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"input {name!r} item {index} is {type(item).__name__}, not bytes")
        if len(item) == 0:
            raise InvalidInput(f"input {name!r} item {index} is empty (0 bytes)")


def _check_stage_outputs(stage: StageRunner, arrays: Sequence[np.ndarray], batch: int) -> None:
    """A stage that breaks its own declared contract is a server bug, not the caller's."""
    if len(arrays) != len(stage.outputs):
        raise FpgaServeError(
            f"stage {stage.name!r} returned {len(arrays)} tensors, declared {len(stage.outputs)}"
        )
    for spec, array in zip(stage.outputs, arrays, strict=True):
        if array.ndim == 0 or array.shape[0] != batch:
            raise FpgaServeError(
                f"stage {stage.name!r} output {spec.name!r} has shape {list(array.shape)}"
                f" for a batch of {batch}"
            )
