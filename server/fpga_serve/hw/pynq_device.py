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
from fpga_serve.core.isa import SPEC, SPEC_VERSION, Program, preset
from fpga_serve.hw import descriptors
from fpga_serve.hw.base import Device, LoadedProgram
from fpga_serve.hw.twin import packed

log = logging.getLogger(__name__)

REG = {k: int(v) for k, v in SPEC["registers"].items()}
STATUS = {k: int(v) for k, v in SPEC["status_bits"].items()}
CTRL = {k: int(v) for k, v in SPEC["ctrl_bits"].items()}
ERROR_NAMES = {int(v): k for k, v in SPEC["error_codes"].items()}
VERSION_WORD = (int(SPEC_VERSION.split(".")[0]) << 16) | int(SPEC_VERSION.split(".")[1])
POLL_MAX_S = 1e-4  # the longest sleep between STATUS reads: 1% of an 8 ms run


def _board_env() -> bool:
    return any(os.environ.get(k) for k in ("XILINX_XRT", "PYNQ_REMOTE_DEVICES")) or (
        os.environ.get("FPGA_SERVE_PYNQ_SIMULATE") == "1"
    )


class PynqProgram(LoadedProgram):
    """A program resident in board memory: its device image (hw/descriptors.py) packed once,
    descriptors and weights uploaded once; the activation region grows with the batch."""

    def __init__(self, device: PynqDevice, program: Program) -> None:
        super().__init__(device, program)
        self.pdevice = device
        device.check_program(program)
        try:
            self.image = descriptors.pack(program)
        except descriptors.PackError as exc:
            raise DeviceError(f"cannot pack the program for {program.target}: {exc}") from exc
        recorded = program.meta.get("device", {}).get("digest")
        if recorded and recorded != self.image.digest():
            raise DeviceError(
                "the program's device image differs from the one its build recorded "
                "(rebuild the model with this fpga-serve)"
            )
        self.capacity = 0
        self.weights = self._upload(self.image.weights)
        self.descs = self._upload(self.image.descriptors)
        self.activations: Any = None

    def _upload(self, data: np.ndarray) -> Any:
        buf = self.pdevice.pdev.allocate((max(data.size, descriptors.ALIGN),), np.uint8)
        buf[: data.size] = data
        buf.flush()
        return buf

    def _run(self, x: np.ndarray) -> np.ndarray:
        batch = x.shape[0]
        image = self.image
        if batch > self.capacity:
            if self.activations is not None and hasattr(self.activations, "freebuffer"):
                self.activations.freebuffer()
            self.activations = self.pdevice.pdev.allocate((batch * image.image_bytes,), np.uint8)
            self.capacity = batch
        region = np.asarray(self.activations)
        packed.write_input(image, region, x)
        self.activations.flush()
        self.pdevice.execute(self, batch)
        self.activations.invalidate()
        return packed.read_output(image, region, batch)

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
        """The accelerator's VERSION must be this spec's; FEATURES say which build it is."""
        version = self.mmio.read(REG["VERSION"])
        if version != VERSION_WORD:
            self.mark_failed()
            raise DeviceError(
                f"the accelerator reports spec version 0x{version:08x}; this server needs "
                f"{SPEC_VERSION} (0x{VERSION_WORD:08x})"
            )
        words = {name: self.mmio.read(REG[name]) for name in SPEC["features"]}
        self.features = descriptors.read_features(words)

    def check_program(self, program: Program) -> None:
        """Refuse a program packed for another array shape or buffers than the bitstream's."""
        if program.target is None or not program.planned:
            raise DeviceError(
                "the program is not planned for an accelerator preset (rebuild the model with "
                "this version's fpga-serve build)"
            )
        want = preset(program.target)
        have = {k: self.features[k] for k in want.shape()}
        if have != want.shape():
            raise DeviceError(
                f"the program is built for {want.name} ({want.describe()}); the loaded "
                f"bitstream reports array {have['array_ci']}x{have['array_co']}, accumulator "
                f"{have['acc_depth']} pixels, input buffer {have['ibuf_banks']} x "
                f"{have['ibuf_words']} words (rebuild with --target for this board)"
            )

    def reset(self) -> None:
        """Soft-reset the accelerator and re-verify it before taking work again."""
        with self.lock:
            self.mmio.write(REG["CTRL"], CTRL["SOFT_RESET"])
            self.verify()
        super().reset()

    def _load(self, program: Program) -> LoadedProgram:
        return PynqProgram(self, program)

    def execute(self, loaded: PynqProgram, batch: int) -> None:
        """One run: program the registers, START, poll STATUS (fault -> DeviceError naming the
        instruction)."""
        regs = descriptors.run_registers(
            loaded.image,
            int(loaded.descs.device_address),
            int(loaded.activations.device_address),
            int(loaded.weights.device_address),
            batch,
        )
        for offset, value in regs:
            self.mmio.write(offset, value)
        deadline = time.monotonic() + self.timeout_s
        delay = 1e-5
        while True:
            status = self.mmio.read(REG["STATUS"])
            if status & STATUS["ERROR"]:
                code = self.mmio.read(REG["ERROR_CODE"])
                index = self.mmio.read(REG["ERROR_INDEX"])
                image = self.mmio.read(REG["ERROR_IMAGE"])
                self.mark_failed()
                instrs = loaded.program.instrs
                what = (
                    f"instruction {index} ({instrs[index].op.name} {instrs[index].name})"
                    if index < len(instrs)
                    else f"descriptor {index}"
                )
                raise DeviceError(
                    f"the accelerator reported error {code} ({ERROR_NAMES.get(code, 'unknown')}) "
                    f"at {what}, image {image}; the device will be reset"
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
            delay = min(delay * 2, POLL_MAX_S)

    def descriptor_cycles(self, count: int) -> list[int]:
        """The per-descriptor cycle counters of the last run (PERF window)."""
        depth = self.features.get("perf_depth", 0)
        return [self.mmio.read(REG["PERF_BASE"] + 4 * i) for i in range(min(count, depth))]
