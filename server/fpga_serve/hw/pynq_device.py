"""The PYNQ driver: overlay programs executed by the fpga_cnn accelerator through pynq.

Registers are written with ``pynq.MMIO``; descriptors, weights and activations live in buffers
from ``device.allocate`` (``pynq.allocate`` on the device), exactly as on a board. Which board:
``pynq.Device.active_device`` — a Zynq UltraScale+/Versal board under PYNQ, a board reached
through pynq's remote device (PYNQ_REMOTE_DEVICES), or the simulated board (hw/pynq_sim.py,
FPGA_SERVE_PYNQ_SIMULATE=1).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from fpga_serve.core.errors import DeviceError
from fpga_serve.core.isa import SPEC, SPEC_VERSION, Program
from fpga_serve.hw import descriptors
from fpga_serve.hw.base import Device, LoadedProgram

log = logging.getLogger(__name__)

REG = {k: int(v) for k, v in SPEC["registers"].items()}
STATUS = {k: int(v) for k, v in SPEC["status_bits"].items()}
CTRL = {k: int(v) for k, v in SPEC["ctrl_bits"].items()}
ERROR_NAMES = {int(v): k for k, v in SPEC["error_codes"].items()}
VERSION_WORD = (int(SPEC_VERSION.split(".")[0]) << 16) | int(SPEC_VERSION.split(".")[1])
ACCEL_RANGE = 0x1_0000


def _board_env() -> bool:
    return any(os.environ.get(k) for k in ("XILINX_XRT", "PYNQ_REMOTE_DEVICES")) or (
        os.environ.get("FPGA_SERVE_PYNQ_SIMULATE") == "1"
    )


class PynqProgram(LoadedProgram):
    """A program resident in board memory: weights and descriptors uploaded once."""

    def __init__(self, device: PynqDevice, program: Program) -> None:
        super().__init__(device, program)
        self.pdevice = device
        self.capacity = 0
        self.weights = self._upload(
            descriptors.pack_weights(program, descriptors.layout(program, 1))
        )
        self.activations: Any = None
        self.descs: Any = None

    def _upload(self, data: np.ndarray) -> Any:
        buf = self.pdevice.pdev.allocate(data.shape, np.uint8)
        buf[:] = data
        buf.flush()
        return buf

    def _ensure(self, batch: int) -> descriptors.Layout:
        lay = descriptors.layout(self.program, batch)
        if batch > self.capacity:
            self.activations = self.pdevice.pdev.allocate((lay.activation_bytes,), np.uint8)
            self.descs = self._upload(descriptors.pack(self.program, lay))
            self.capacity = batch
        return descriptors.layout(self.program, self.capacity)

    def _run(self, x: np.ndarray) -> np.ndarray:
        batch = x.shape[0]
        lay = self._ensure(batch)
        program = self.program
        src = program.input
        b = program.buffer(src)
        region = np.asarray(self.activations)
        view = region[lay.buffer_offsets[src.buffer] :][
            : lay.batch * b.height * b.width * b.channels
        ]
        view.view(np.int8).reshape(lay.batch, b.height, b.width, b.channels)[
            :batch, ..., src.offset : src.offset + src.channels
        ] = x
        self.activations.flush()
        self.pdevice.execute(
            self.descs, len(program.instrs), self.activations, self.weights, lay.batch
        )
        self.activations.invalidate()
        out = program.output
        ob = program.buffer(out)
        oview = region[lay.buffer_offsets[out.buffer] :][
            : lay.batch * ob.height * ob.width * ob.channels
        ]
        result = oview.view(np.int8).reshape(lay.batch, ob.height, ob.width, ob.channels)
        return np.array(result[:batch, ..., out.offset : out.offset + out.channels])

    def close(self) -> None:
        for buf in (self.weights, self.activations, self.descs):
            if buf is not None and hasattr(buf, "freebuffer"):
                buf.freebuffer()


class PynqDevice(Device):
    """fpga_cnn on a PYNQ board (or the simulated one)."""

    name = "pynq"
    priority = 10
    timeout_s = float(os.environ.get("FPGA_SERVE_DEVICE_TIMEOUT", "10"))

    def __init__(self) -> None:
        super().__init__()
        try:
            import pynq

            if os.environ.get("FPGA_SERVE_PYNQ_SIMULATE") == "1":
                from fpga_serve.hw import pynq_sim  # noqa: F401 - registers the simulated board
            self.pdev = pynq.Device.active_device
        except (ImportError, RuntimeError) as exc:
            raise DeviceError(f"no PYNQ device: {exc}") from exc
        base = getattr(self.pdev, "accelerator_base", None)
        if base is None:
            raise DeviceError(
                "the PYNQ device has no fpga_cnn accelerator: load the overlay in "
                "bitstreams/fpga_cnn/ (no bitstream ships yet; see bitstreams/README.md)"
            )
        self.mmio = pynq.MMIO(int(base), ACCEL_RANGE, device=self.pdev)
        self.verify()
        log.info("PYNQ device %s: fpga_cnn spec %s at 0x%x", self.pdev.name, SPEC_VERSION, base)

    @classmethod
    def probe(cls) -> bool:
        if not _board_env():
            return False
        try:
            import pynq

            if os.environ.get("FPGA_SERVE_PYNQ_SIMULATE") == "1":
                from fpga_serve.hw import pynq_sim  # noqa: F401
            return len(pynq.Device.devices) > 0
        except Exception:  # any probing failure means: no usable board
            return False

    def verify(self) -> None:
        version = self.mmio.read(REG["VERSION"])
        if version != VERSION_WORD:
            self.mark_failed()
            raise DeviceError(
                f"the accelerator reports spec version 0x{version:08x}; this server needs "
                f"{SPEC_VERSION} (0x{VERSION_WORD:08x})"
            )

    def reset(self) -> None:
        """Soft-reset the accelerator and re-verify it before taking work again."""
        with self.lock:
            self.mmio.write(REG["CTRL"], CTRL["SOFT_RESET"])
            self.verify()
        super().reset()

    def _load(self, program: Program) -> LoadedProgram:
        return PynqProgram(self, program)

    def _write64(self, lo: str, hi: str, address: int) -> None:
        self.mmio.write(REG[lo], address & 0xFFFFFFFF)
        self.mmio.write(REG[hi], address >> 32)

    def execute(self, descs: Any, count: int, activations: Any, weights: Any, batch: int) -> None:
        """One run: program the registers, START, poll STATUS (fault -> DeviceError)."""
        self._write64("DESC_ADDR_LO", "DESC_ADDR_HI", int(descs.device_address))
        self.mmio.write(REG["DESC_COUNT"], count)
        self._write64("ACT_ADDR_LO", "ACT_ADDR_HI", int(activations.device_address))
        self._write64("WGT_ADDR_LO", "WGT_ADDR_HI", int(weights.device_address))
        self.mmio.write(REG["BATCH"], batch)
        self.mmio.write(REG["CTRL"], CTRL["START"])
        deadline = time.monotonic() + self.timeout_s
        delay = 1e-5
        while True:
            status = self.mmio.read(REG["STATUS"])
            if status & STATUS["ERROR"]:
                code = self.mmio.read(REG["ERROR_CODE"])
                self.mark_failed()
                raise DeviceError(
                    f"the accelerator reported error {code} "
                    f"({ERROR_NAMES.get(code, 'unknown')}); the device will be reset"
                )
            if status & STATUS["DONE"]:
                return
            if time.monotonic() > deadline:
                self.mark_failed()
                raise DeviceError(
                    f"the accelerator did not finish within {self.timeout_s:g} s; "
                    "the device will be reset"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)
