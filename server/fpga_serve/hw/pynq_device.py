"""The PYNQ driver: overlay programs executed by the fpga_cnn accelerator through pynq.

Registers are written with ``pynq.MMIO``; descriptors, weights and activations live in buffers
from ``device.allocate`` (``pynq.allocate`` on the device), exactly as on a board. Which board:
``pynq.Device.active_device`` — a Zynq UltraScale+/Versal board under PYNQ, a board reached
through pynq's remote device (PYNQ_REMOTE_DEVICES), or the simulated board (hw/pynq_sim.py,
FPGA_SERVE_PYNQ_SIMULATE=1).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

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


DEFAULT_OVERLAY = Path(__file__).resolve().parents[3] / "bitstreams" / "fpga_cnn" / "fpga_cnn.bit"
ACCEL_VLNV = str(SPEC["ip"]["vlnv"])


@functools.cache
def _accelerator_driver() -> type:
    """The DefaultIP subclass pynq binds to the accelerator by VLNV (defined once, on first use,
    so that importing this module does not import pynq)."""
    from pynq import DefaultIP

    class CnnAccelerator(DefaultIP):  # type: ignore[misc]
        """pynq's driver for fpga-serve.org:overlay:cnn_accel (registers: bitstreams/)."""

        bindto: ClassVar[list[str]] = [ACCEL_VLNV]

    return CnnAccelerator


class PynqDevice(Device):
    """fpga_cnn on a PYNQ board (or the simulated one), loaded as a ``pynq.Overlay``."""

    name = "pynq"
    priority = 10
    timeout_s = float(os.environ.get("FPGA_SERVE_DEVICE_TIMEOUT", "10"))

    def __init__(self, overlay: Path | None = None) -> None:
        super().__init__()
        bitfile = Path(overlay or DEFAULT_OVERLAY)
        try:
            import pynq

            if os.environ.get("FPGA_SERVE_PYNQ_SIMULATE") == "1":
                from fpga_serve.hw import pynq_sim  # noqa: F401 - registers the simulated board
            self.pdev = pynq.Device.active_device
        except (ImportError, RuntimeError) as exc:
            raise DeviceError(f"no PYNQ device: {exc}") from exc
        self.ip = self._load_overlay(pynq, bitfile)
        self.mmio = self.ip.mmio
        self.verify()
        log.info(
            "PYNQ device %s: overlay %s, fpga_cnn spec %s at 0x%x",
            self.pdev.name,
            bitfile,
            SPEC_VERSION,
            self.mmio.base_addr,
        )

    @classmethod
    def create(cls, options: dict[str, Any]) -> Device:
        return cls(options.get("overlay"))

    def _load_overlay(self, pynq: Any, bitfile: Path) -> Any:
        """Download the overlay and return its accelerator, bound to our driver by VLNV."""
        if not bitfile.is_file():
            raise DeviceError(f"overlay bitstream {bitfile} does not exist")
        hwh = bitfile.with_suffix(".hwh")
        if not hwh.is_file():
            raise DeviceError(f"{hwh} is missing: pynq needs the .hwh beside {bitfile.name}")
        driver = _accelerator_driver()
        try:
            overlay = pynq.Overlay(str(bitfile), device=self.pdev)
        except Exception as exc:  # pynq raises many types for a bad .bit/.hwh
            raise DeviceError(f"cannot load overlay {bitfile} with {hwh.name}: {exc}") from exc
        names = [n for n, d in overlay.ip_dict.items() if d.get("type") == ACCEL_VLNV]
        if not names:
            found = ", ".join(f"{n} ({d.get('type')})" for n, d in overlay.ip_dict.items())
            raise DeviceError(f"{hwh.name} has no {ACCEL_VLNV} IP (found: {found or 'none'})")
        ip = getattr(overlay, names[0])
        if not isinstance(ip, driver):
            raise DeviceError(
                f"IP {names[0]} in {hwh.name} is bound to {type(ip).__name__}, not the "
                f"fpga-serve driver for {ACCEL_VLNV}"
            )
        self.overlay = overlay
        return ip

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
