"""A loaded pipeline ready to execute: input binding, validation, stage-by-stage execution."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from fpga_serve.core.errors import FpgaServeError, InvalidInput, shown
from fpga_serve.core.stage import StageRunner
from fpga_serve.core.types import DType, RequestLimits, TensorHeader, TensorSpec
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
        limits: RequestLimits | None = None,
    ) -> None:
        if not stages:
            raise InvalidInput("a pipeline needs at least one stage")
        self.stages = tuple(stages)
        self.inputs: tuple[TensorSpec, ...] = self.stages[0].inputs
        self.outputs: tuple[TensorSpec, ...] = self.stages[-1].outputs
        self.input_aliases = dict(input_aliases or {})
        self.limits = limits or RequestLimits(max_image_pixels=None)
        for alias, target in self.input_aliases.items():
            if target not in {s.name for s in self.inputs}:
                raise InvalidInput(f"input alias {alias!r} points to unknown input {target!r}")
        names = {s.name for s in self.inputs}
        # Request name -> input name: real names first, then aliases that do not shadow one.
        self._targets = {**self.input_aliases, **{name: name for name in names}}
        if self.limits.max_image_pixels is not None and any(
            s.dtype is DType.BYTES for s in self.inputs
        ):
            images.prepare()  # at load time, not in the first image request

    def input_names(self) -> list[str]:
        """Every name a request may use for an input: real names, then aliases."""
        return [s.name for s in self.inputs] + [
            a for a in self.input_aliases if a not in {s.name for s in self.inputs}
        ]

    def route(self, declared: Mapping[str, TensorHeader]) -> list[str]:
        """Check what a request declares (names, dtypes, shapes, every limit) before any of its
        data is decoded; return, for each pipeline input in order, the request key feeding it.

        Raises InvalidInput naming the unknown, missing or malformed input, or the limit.
        """
        keys: dict[str, str] = {}
        for key in declared:
            target = self._targets.get(key)
            if target is None:
                known = ", ".join(map(repr, self.input_names()))
                raise InvalidInput(f"unknown input {shown(key)}; this model takes {known}")
            if target in keys:
                raise InvalidInput(
                    f"input {target!r} given twice (as {shown(key)} and by another name)"
                )
            keys[target] = key
        limits = self.limits
        batch: int | None = None
        elements = nbytes = 0
        for spec in self.inputs:
            if spec.name not in keys:
                raise InvalidInput(f"missing input {spec.name!r} ({spec.describe()})")
            header = declared[keys[spec.name]]
            spec.check_header(header, limits)
            if batch is None:
                batch = header.shape[0] if header.shape else 1
            elif header.shape[0] != batch:
                raise InvalidInput(
                    f"input {spec.name!r} has batch {header.shape[0]}, other inputs have {batch}"
                )
            elements += header.elements
            nbytes += header.nbytes
        if elements > limits.max_elements:
            raise InvalidInput(
                f"the request declares {elements:,} elements, over the limit of "
                f"{limits.max_elements:,} (max_request_elements)"
            )
        if nbytes > limits.max_bytes:
            raise InvalidInput(
                f"the request's inputs take {nbytes:,} bytes, over the limit of "
                f"{limits.max_bytes:,} (max_request_bytes)"
            )
        return [keys[spec.name] for spec in self.inputs]

    def take(self, arrays: Mapping[str, np.ndarray], keys: Sequence[str]) -> list[np.ndarray]:
        """The decoded inputs of a routed request, in input order, after the checks that need
        their data: BYTES items are non-empty bytes, images within the pixel limits."""
        bound: list[np.ndarray] = []
        for spec, key in zip(self.inputs, keys, strict=True):
            array = arrays[key]
            if spec.dtype is DType.BYTES:
                _check_bytes(spec.name, array)
                if self.limits.max_image_pixels is not None:
                    images.check_image_pixels(spec.name, array, self.limits.max_image_pixels)
            bound.append(array)
        return bound

    def bind(self, named: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Map in-process arrays (by name or alias) onto the inputs and validate them."""
        for key, array in named.items():
            if not isinstance(array, np.ndarray):
                raise InvalidInput(f"input {shown(key)} is {type(array).__name__}, not an array")
        keys = self.route({key: TensorHeader.of(array) for key, array in named.items()})
        return self.take(named, keys)

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
    if array.dtype.kind != "O":
        raise InvalidInput(f"input {name!r} holds {array.dtype}, not bytes objects")
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
