"""The simulated board instrumented for tests: faults, completion latency and a record of
register writes, on a subclass of the production ``SimulatedAccelerator``.

In this process: ``instrument(board)`` (the simulated pynq Device) makes its accelerator a
``FaultyAccelerator``; then ``fault = "error"`` makes the next run end with STATUS.ERROR and
``fault = "hang"`` leaves it BUSY forever (a SOFT_RESET clears both), ``fault = "corrupt"``
garbles the activations of the next run and reports success (what validate mode is for),
``latency_s`` keeps a run BUSY that long before DONE (from a timer, as a board would),
``writes`` records (offset, value).

In a server: run this file instead of ``-m fpga_serve.cli`` (``SERVER``, the ``entry`` of
tests/serving.run_server) with FAULT_FILE set to a path; writing a fault's name into that file
injects it at the next START.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from fpga_serve.core.isa import DEFAULT_TARGET, REGISTERS, STATUS_BITS
from fpga_serve.hw.pynq_sim import SimMemory, SimulatedAccelerator, SimulatedPynqDevice
from fpga_serve.hw.twin import packed

FAULT_FILE = "FPGA_SERVE_TEST_SIM_FAULT_FILE"
SERVER = (str(Path(__file__).resolve()),)
"""``run_server(..., entry=SERVER)``: the CLI with the instrumented board."""


class FaultyAccelerator(SimulatedAccelerator):
    def __init__(self, memory: SimMemory) -> None:
        self.fault: str | None = None
        self.latency_s = 0.0
        self.writes: list[tuple[int, int]] = []
        self.fault_file = Path(os.environ[FAULT_FILE]) if os.environ.get(FAULT_FILE) else None
        self._timer: threading.Timer | None = None
        self._hung = False
        super().__init__(memory)

    def load_image(self, spec_version: str, preset_name: str = DEFAULT_TARGET) -> None:
        super().load_image(spec_version, preset_name)
        self.fault = None

    def _write(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))
        super()._write(offset, value)

    def soft_reset(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.fault, self._hung = None, False
        super().soft_reset()

    def _execute(self) -> None:
        if self.fault_file is not None and self.fault_file.exists():  # from another process
            self.fault = self.fault_file.read_text().strip() or None
            self.fault_file.unlink()
        if self.fault == "error":
            raise packed.AcceleratorFault("BAD_ADDRESS", 0, 0, "injected")
        if self.fault == "hang":
            self._hung = True
            return
        super()._execute()
        if (
            self.fault == "corrupt"
        ):  # a silent datapath fault in the output: only validate mode sees it
            self.memory.block(self.address("OUT_ADDR_LO", "OUT_ADDR_HI"))[:] ^= 0x5A
            self.fault = None

    def _complete(self) -> None:
        if self._hung or self.latency_s > 0:
            self.regs[REGISTERS["STATUS"] // 4] = STATUS_BITS["BUSY"]
        if self._hung:
            return
        if self.latency_s > 0:
            self._timer = threading.Timer(self.latency_s, self._done)
            self._timer.start()
        else:
            super()._complete()


def instrument(board: SimulatedPynqDevice) -> FaultyAccelerator:
    """Make the simulated board's accelerator (now and after every ``use_board``) faulty."""
    SimulatedPynqDevice.accelerator_class = FaultyAccelerator
    if not isinstance(board.accelerator, FaultyAccelerator):
        board.use_board(board.board.name)
    assert isinstance(board.accelerator, FaultyAccelerator)
    return board.accelerator


def restore() -> None:
    SimulatedPynqDevice.accelerator_class = SimulatedAccelerator


if __name__ == "__main__":
    SimulatedPynqDevice.accelerator_class = FaultyAccelerator
    from fpga_serve.cli import main

    sys.exit(main())
