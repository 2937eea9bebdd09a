"""The bit-exact software twin of the overlay: the default device when no board is present."""

from __future__ import annotations

import numpy as np

from fpga_serve.core.isa import Program
from fpga_serve.hw.base import Device, LoadedProgram
from fpga_serve.hw.twin import fast, reference
from fpga_serve.hw.twin.executor import execute


class TwinProgram(LoadedProgram):
    def __init__(self, device: TwinDevice, program: Program) -> None:
        super().__init__(device, program)
        self.reference = device.reference

    def _run(self, x: np.ndarray) -> np.ndarray:
        return execute(self.program, x, reference if self.reference else fast)


class TwinDevice(Device):
    """Runs programs with the fast numpy ops (or, with ``reference=True``, the spec itself)."""

    name = "twin"
    priority = 0

    def __init__(self, reference: bool = False) -> None:
        super().__init__()
        self.reference = reference

    def _load(self, program: Program) -> LoadedProgram:
        return TwinProgram(self, program)
