"""The contract between a loaded pipeline stage and the runtime that executes it.

Every stage kind (TensorFlow SavedModel, frozen GraphDef, Keras, FPGA) loads into an object
with this shape. Tensors pass positionally: stage i's outputs are stage i+1's inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from fpga_serve.core.types import TensorSpec


@runtime_checkable
class StageRunner(Protocol):
    """An executable, loaded stage. ``run`` may be called from several threads."""

    name: str
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Compute the outputs for one batch; raise InvalidInput for bad data, DeviceError
        for accelerator faults. Arrays follow ``inputs``/``outputs`` order and dtypes."""
        ...

    def close(self) -> None:
        """Release what the stage holds (graphs, device buffers). Idempotent."""
        ...
