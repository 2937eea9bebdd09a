"""The bit-exact software twin of the overlay: the default device when no board is present."""

from __future__ import annotations

from typing import Any

import numpy as np

from fpga_serve.core.errors import DeviceError
from fpga_serve.core.isa import Program
from fpga_serve.hw.base import Device, LoadedProgram
from fpga_serve.hw.twin import native as twin_native
from fpga_serve.hw.twin import numpy_path, reference
from fpga_serve.hw.twin.executor import execute
from fpga_serve.hw.twin.gemm import set_twin_threads
from fpga_serve.hw.twin.worker import TwinWorker


class TwinProgram(LoadedProgram):
    """Runs on the native path (twin/native.py) when this machine has it, else on the numpy
    ops of twin/numpy_path.py; with ``reference=True``, on the spec itself."""

    def __init__(self, device: TwinDevice, program: Program) -> None:
        super().__init__(device, program)
        self.reference = device.reference
        self.plan: twin_native.NativePlan | None = None
        if not self.reference and device.native:
            self.plan = twin_native.NativePlan(program)
            # Warm up: compiles (or loads from numba's cache) every kernel this program uses,
            # so the first request does not pay for it.
            shape = (1, *program.input_shape())
            self.plan.run(np.zeros(shape, np.int8))

    @property
    def path(self) -> str:
        return "reference" if self.reference else "native" if self.plan else "numpy"

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.plan is not None:
            return self.plan.run(x)
        return execute(self.program, x, reference if self.reference else numpy_path)


class IsolatedTwinProgram(LoadedProgram):
    """A program uploaded to the twin's worker process (twin/worker.py)."""

    def __init__(self, device: TwinDevice, program: Program) -> None:
        super().__init__(device, program)
        assert device.worker is not None
        self.worker = device.worker
        self.program_id = self.worker.new_id()
        self.path = f"{self.worker.call('load', self.program_id, program)}, own process"
        device.resident[self.program_id] = program

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.worker.call("run", self.program_id, x))

    def close(self) -> None:
        device = self.device
        assert isinstance(device, TwinDevice)
        program_id = self.program_id
        if device.resident.pop(program_id, None) is not None and self.worker.process.is_alive():
            self.worker.call("close", program_id)


class TwinDevice(Device):
    """The overlay's arithmetic on the CPU. ``native=None`` picks the native path when it is
    available and exact here (twin/native.py), ``False`` forces the numpy path."""

    name = "twin"
    priority = 0

    def __init__(
        self,
        reference: bool = False,
        native: bool | None = None,
        isolated: bool = False,
        threads: int = 0,
    ) -> None:
        super().__init__()
        self.reference = reference
        if threads:  # this process's (and the worker's) compute threads; 0: one per core
            set_twin_threads(threads)
        # isolated: programs run in a worker process with its own GIL (twin/worker.py); the
        # worker, not this process, checks whether the native path is there
        self.worker: TwinWorker | None = None
        self.resident: dict[int, Program] = {}
        if isolated and not reference:
            self.worker = TwinWorker(native, threads)
            try:
                self.native = bool(self.worker.call("native", 0))
            except DeviceError:
                self.worker.stop()
                raise
            return
        self.native = (native is not False) and not reference and twin_native.available()
        if native and not self.native:
            raise DeviceError(
                "the twin's native path is not available here (numba or onnxruntime missing, "
                "or this CPU's int8 GEMM failed the exactness self-check); use --twin-path "
                "numpy or auto"
            )

    @classmethod
    def create(cls, options: dict[str, Any]) -> Device:
        path = options.get("twin_path", "auto")
        native = {"auto": None, "native": True, "numpy": False}[path]
        return cls(
            native=native,
            isolated=bool(options.get("twin_isolated", False)),
            threads=int(options.get("twin_threads", 0)),
        )

    def alive(self) -> bool:
        return self.worker is None or self.worker.alive()

    def reset(self) -> None:
        """A dead worker is replaced and every resident program uploaded again."""
        if self.worker is not None and not self.worker.alive():
            self.worker.restart(self.resident)
        super().reset()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def _load(self, program: Program) -> LoadedProgram:
        if self.worker is not None:
            return IsolatedTwinProgram(self, program)
        return TwinProgram(self, program)
