"""The PYNQ driver: overlay programs executed by the fpga_cnn accelerator through pynq.

Registers are written with ``pynq.MMIO``; descriptors, weights and activations live in buffers
from ``device.allocate`` (``pynq.allocate`` on the device), exactly as on a board. Which board:
``pynq.Device.active_device`` — a Zynq UltraScale+ or Zynq-7000 board under PYNQ, a board reached
through pynq's remote device (PYNQ_REMOTE_DEVICES), or the simulated board (hw/pynq_sim.py,
which ``create`` makes pynq's active device when the ``pynq_simulate`` setting asks for it). Its
overlay is bitstreams/boards/<board>/fpga_cnn.bit of this
installation for the board PYNQ names ($BOARD; bitstreams/boards/boards.json), or ``--overlay``.

At load the driver refuses, naming the file and what it expected: a .bit without its .hwh, an
.hwh for another board's preset or another spec version, an interrupt pin the .hwh wires to the PS
(through an AXI interrupt controller) that this board cannot deliver (no UIO device on the PS
interrupt line), a PL clock the PS does not run at the .hwh's rate after pynq set it, FEATURES
registers that are not the .hwh's preset, and (at each model load) a program planned for another
preset than the bitstream's. A run completes on the interrupt (pynq.Interrupt) where the .hwh has
the pin; where it has none (a block design of the user's that leaves it unwired), and on pynq's
remote device (PYNQ.remote has no interrupts), on a short fixed poll of STATUS, said at start.
Each program has, per batch, an input buffer, an output buffer and an activation scratch of
its own (spec 2.1's IN, OUT and ACT regions): per run only the input buffer is flushed (its
images' bytes) and only the output buffer invalidated; the scratch is flushed once when it is
allocated (no line of it is dirty in the host's caches when the accelerator writes it) and never
synced again. Over pynq's remote device only this batch's input images go to the board and the
output buffer comes back (whole: a remote buffer is read back entire); the scratch never
crosses the network.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fpga_serve.core import descriptors
from fpga_serve.core.boards import (
    ACCELERATOR,
    BOARDS_DIR,
    OVERLAY_NAME,
    PS_TYPES,
    Board,
    board_for_pynq,
)
from fpga_serve.core.errors import DeviceError
from fpga_serve.core.isa import (
    CTRL_BITS,
    ERROR_NAMES,
    PRESETS,
    REGISTERS,
    SPACES,
    SPEC,
    SPEC_VERSION,
    STATUS_BITS,
    Program,
    preset,
    version_word,
)
from fpga_serve.hw.base import Device, LoadedProgram
from fpga_serve.hw.twin import packed

log = logging.getLogger(__name__)

VERSION_WORD = version_word(SPEC_VERSION)
POLL_S = 1e-4  # between STATUS reads where the device delivers no interrupt: 1% of an 8 ms run
WAIT_SLICE_S = 0.1  # STATUS is read again at least this often while waiting for the interrupt
CLOCK_TOLERANCE = 0.005  # how far the PL clock pynq set may be from the .hwh's (pynq warns at 1%)


def _board_env() -> bool:
    """pynq's own variables say a board may be there (XRT sourced, or remote boards named)."""
    return any(os.environ.get(k) for k in ("XILINX_XRT", "PYNQ_REMOTE_DEVICES"))


def device_memory(image: descriptors.DeviceImage, batch: int) -> dict[str, int]:
    """The device (CMA) memory a program takes on a board for ``batch`` images, by buffer:
    its descriptors and weight region, uploaded once, and per image its part of the input
    buffer, the output buffer and the activation scratch (the driver's allocations)."""
    align = descriptors.ALIGN
    return {
        "input": batch * image.input_bytes,
        "output": batch * image.output_bytes,
        "scratch": batch * image.image_bytes,
        "weights": max(image.weights.size, align),
        "descriptors": max(image.descriptors.size, align),
    }


class PynqProgram(LoadedProgram):
    """A program resident in board memory: its device image (core/descriptors.py) packed once,
    descriptors and weights uploaded once; the input buffer, the output buffer and the
    activation scratch (``regions``, by SPACES code) grow with the batch."""

    def __init__(self, device: PynqDevice, program: Program) -> None:
        super().__init__(device, program)
        self.pdevice = device
        device.check_program(program)
        try:
            self.image = descriptors.pack(program)
        except descriptors.PackError as exc:
            raise DeviceError(f"cannot pack the program for {program.target}: {exc}") from exc
        self.digest = self.image.digest()
        recorded = program.meta.get("device", {}).get("digest")
        if recorded and recorded != self.digest:
            raise DeviceError(
                "the program's device image differs from the one its build recorded "
                "(rebuild the model with this fpga-serve)"
            )
        self.capacity = 0
        self.weights = self._upload(self.image.weights)
        self.descs = self._upload(self.image.descriptors)
        self.regions: list[Any] = []

    def _upload(self, data: np.ndarray) -> Any:
        buf = self.pdevice.pdev.allocate((max(data.size, descriptors.ALIGN),), np.uint8)
        buf[: data.size] = data
        buf.flush()
        return buf

    def _grow(self, batch: int) -> None:
        """Buffers for ``batch`` images: the three regions. The scratch is flushed once, here,
        so that no dirty line of it in the host's caches (from the allocator's zeroing) can be
        written back over what the accelerator writes there; the host never touches it again."""
        self._free(self.regions)
        sizes = self.image.region_bytes
        self.regions = [self.pdevice.pdev.allocate((batch * n,), np.uint8) for n in sizes]
        self.capacity = batch
        from pynq.buffer import PynqBuffer

        scratch = self.regions[SPACES["ACT"]]
        if isinstance(scratch, PynqBuffer):  # a remote buffer's flush would send it all
            scratch.flush()

    def _run(self, x: np.ndarray) -> np.ndarray:
        batch = x.shape[0]
        image = self.image
        if batch > self.capacity:
            self._grow(batch)
        inputs = self.regions[image.input_space]
        outputs = self.regions[image.output_space]
        packed.write_input(image, np.asarray(inputs), x)
        # This batch's images are the buffer's first bytes: pynq flushes a PynqBuffer view's own
        # bytes, and a remote buffer's view is written at offset 0, where this prefix belongs.
        inputs[: batch * image.region_bytes[image.input_space]].flush()
        self.pdevice.execute(self, batch)
        self.pdevice.report_cycles(self)
        self._invalidate(outputs, batch * image.region_bytes[image.output_space])
        return packed.read_output(image, np.asarray(outputs), batch)

    @staticmethod
    def _invalidate(buffer: Any, used: int) -> None:
        """The first ``used`` bytes of a buffer from the device; a remote buffer's invalidate
        reads the whole buffer back (into the whole array: a view cannot take it)."""
        from pynq.buffer import PynqBuffer

        (buffer[:used] if isinstance(buffer, PynqBuffer) else buffer).invalidate()

    def cma_bytes(self, batch: int) -> int:
        return sum(device_memory(self.image, batch).values())

    @staticmethod
    def _free(buffers: list[Any]) -> None:
        for buf in buffers:
            if buf is not None and hasattr(buf, "freebuffer"):
                buf.freebuffer()

    def close(self) -> None:
        self._free([self.weights, *self.regions, self.descs])


ACCEL_VLNV = str(SPEC["ip"]["vlnv"])


def running_board(pdev: Any) -> Board | None:
    """The board pynq runs on, as boards.json knows it: the simulated board's, or $BOARD (PYNQ
    images set it; set it on a host that drives a board through PYNQ_REMOTE_DEVICES)."""
    name = getattr(pdev, "pynq_board", None) or os.environ.get("BOARD")
    return board_for_pynq(name) if name else None


def default_overlay(pdev: Any, board: Board | None) -> Path:
    """The overlay loaded when none is given: the simulated board's own simulation image, else
    this installation's build for the board."""
    simulated = getattr(pdev, "default_overlay", None)
    if callable(simulated):
        return Path(simulated())
    if board is None:
        raise DeviceError(
            "no overlay given and the board is unknown ($BOARD names none of bitstreams/boards/"
            "boards.json's boards): pass --overlay PATH/fpga_cnn.bit"
        )
    return BOARDS_DIR / board.name / f"{OVERLAY_NAME}.bit"


@functools.cache
def interrupt_loop() -> asyncio.AbstractEventLoop:
    """The one event loop pynq.Interrupt waits run on: pynq binds its UIO reader to the loop
    current when the interrupt is first made, so every wait must use that loop."""
    return asyncio.new_event_loop()


def _fill_clock_frequencies(overlay: Any) -> None:
    """pynqmetadata 0.2.0 reads no achieved PL clock rate from a Zynq-7000 .hwh (it looks for
    the ZynqMP parameter name), and pynq 4.0's Overlay.download then cannot set the clock
    (``float / None``): take it from the .hwh's own parameter."""
    for name, ip in overlay.ip_dict.items():
        kind = str(ip.get("type", "")).split(":")[2:3]
        ps = PS_TYPES.get(kind[0]) if kind else None
        if ps is None:
            continue
        params = ip.get("parameters", {})
        for i, clock in overlay.clock_dict.items():
            key = ps.pl_clock["act_freq"].replace("0", str(i), 1)
            if clock.get("enable") and clock.get("frequency") is None and key in params:
                clock["frequency"] = float(params[key])
                log.info("PL clock %d: %s MHz from %s's %s", i, params[key], name, key)


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
    timeout_s = 10.0
    """Longest one run may take before it is a device fault (setting ``device_timeout_s``)."""

    def __init__(
        self, overlay: Path | None = None, timeout_s: float | None = None, pdev: Any = None
    ) -> None:
        """Drive ``pdev`` (a ``pynq.Device``; default: pynq's active device)."""
        super().__init__()
        if timeout_s is not None:
            self.timeout_s = timeout_s
        try:
            import pynq

            self.pdev = pynq.Device.active_device if pdev is None else pdev
        except (ImportError, RuntimeError) as exc:
            raise DeviceError(f"no PYNQ device: {exc}") from exc
        self.board = running_board(self.pdev)
        bitfile = Path(overlay) if overlay else default_overlay(self.pdev, self.board)
        self.bitfile = bitfile
        self.ip = self._load_overlay(pynq, bitfile)
        self.mmio = self.ip.mmio
        self.verify()
        log.info(
            "PYNQ device %s: overlay %s (preset %s), fpga_cnn spec %s at 0x%x, FEATURES %s, "
            "completion %s",
            self.pdev.name,
            bitfile,
            self.hwh_preset.name,
            SPEC_VERSION,
            self.mmio.base_addr,
            self.features,
            "by interrupt" if self.interrupt is not None else f"by a {POLL_S * 1e3:g} ms poll",
        )

    @classmethod
    def create(cls, options: dict[str, Any]) -> Device:
        pdev = None
        if options.get("pynq_simulate"):
            from fpga_serve.hw.pynq_sim import simulate

            pdev = simulate(options["pynq_sim_board"])
        return cls(options.get("overlay"), options.get("device_timeout_s"), pdev)

    def _load_overlay(self, pynq: Any, bitfile: Path) -> Any:
        """Check the overlay's .hwh, download it, check the PL clock, and return the
        accelerator bound to our driver by VLNV."""
        if not bitfile.is_file():
            build = f" --board {self.board.name}" if self.board else ""
            raise DeviceError(
                f"overlay bitstream {bitfile} does not exist: build it with `fpga-serve overlay "
                f"build{build}` and copy the .bit with its .hwh (docs/boards.md), or pass --overlay"
            )
        hwh = bitfile.with_suffix(".hwh")
        if not hwh.is_file():
            raise DeviceError(f"{hwh} is missing: pynq needs the .hwh beside {bitfile.name}")
        driver = _accelerator_driver()
        # pynq makes the accelerator's Interrupt when it binds the driver; its UIO reader goes
        # on the loop current then: ours, so that every wait can run on it.
        asyncio.set_event_loop(interrupt_loop())
        try:
            overlay = pynq.Overlay(str(bitfile), device=self.pdev, download=False)
        except Exception as exc:  # pynq raises many types for a bad .bit/.hwh
            raise DeviceError(f"cannot load overlay {bitfile} with {hwh.name}: {exc}") from exc
        names = [n for n, d in overlay.ip_dict.items() if d.get("type") == ACCEL_VLNV]
        if not names:
            found = ", ".join(f"{n} ({d.get('type')})" for n, d in overlay.ip_dict.items())
            raise DeviceError(f"{hwh.name} has no {ACCEL_VLNV} IP (found: {found or 'none'})")
        self.hwh_preset = self._check_hwh(hwh, names[0], overlay)
        _fill_clock_frequencies(overlay)
        try:
            overlay.download()
        except Exception as exc:  # pynq raises many types for a bad .bit/.hwh
            raise DeviceError(f"cannot load overlay {bitfile} with {hwh.name}: {exc}") from exc
        self._check_clock(pynq, hwh, overlay)
        self.ip_name = names[0]
        ip = getattr(overlay, names[0])
        if not isinstance(ip, driver):
            raise DeviceError(
                f"IP {names[0]} in {hwh.name} is bound to {type(ip).__name__}, not the "
                f"fpga-serve driver for {ACCEL_VLNV}"
            )
        self.overlay = overlay
        self.interrupt = self._take_interrupt(pynq, hwh, overlay, ip)
        return ip

    def _take_interrupt(self, pynq: Any, hwh: Path, overlay: Any, ip: Any) -> Any:
        """The accelerator's pynq.Interrupt, or None where runs end on a fixed poll: an .hwh
        that wires no interrupt pin, or pynq's remote device. An .hwh that wires the pin on a
        board that cannot deliver it is refused."""
        pin = f"{self.ip_name}/{ACCELERATOR['interrupt']}"
        if pin not in overlay.interrupt_pins:
            log.warning(
                "%s wires no interrupt pin %s to an AXI interrupt controller on the PS "
                "(pynq finds %s): runs end on a %g ms STATUS poll",
                hwh,
                pin,
                sorted(overlay.interrupt_pins) or "no interrupt pins",
                POLL_S * 1e3,
            )
            return None
        if self.pdev.has_capability("REMOTE"):
            log.info(
                "%s: pynq's remote device delivers no interrupts: runs end on a %g ms STATUS poll",
                self.pdev.name,
                POLL_S * 1e3,
            )
            return None
        interrupt = getattr(ip, ACCELERATOR["interrupt"], None)
        if interrupt is not None:
            return interrupt
        entry = overlay.interrupt_pins[pin]
        try:  # pynq warned and left None: make it again for the reason
            return pynq.Interrupt(pin)
        except Exception as exc:  # pynq raises ValueError, or OSError from the UIO device
            raise DeviceError(
                f"{hwh} wires {pin} through {entry.get('controller') or 'the PS'} to the PS "
                f"interrupt line, but this board cannot deliver it ({exc}): the board's device "
                "tree must give that line a UIO device (PYNQ images' `fabric` node; "
                "docs/boards.md)"
            ) from exc

    def _check_hwh(self, hwh: Path, name: str, overlay: Any) -> Any:
        """The .hwh must be a board-flow build of this spec, for this board: returns the preset
        it was built for."""
        params = overlay.ip_dict[name].get("parameters", {})
        spec, preset_name = params.get("SPEC_VERSION"), params.get("PRESET")
        if spec is None or preset_name not in PRESETS:
            raise DeviceError(
                f"{hwh}: {name} has no SPEC_VERSION and PRESET parameters naming a preset "
                f"(got {spec!r}, {preset_name!r}): not a bitstreams/boards build"
            )
        if spec != SPEC_VERSION:
            raise DeviceError(
                f"{hwh} is a build of fpga_cnn spec {spec}; this server runs spec {SPEC_VERSION}: "
                "rebuild the bitstream (fpga-serve overlay build)"
            )
        if self.board is not None and preset_name != self.board.preset.name:
            raise DeviceError(
                f"{hwh} is a build for preset {preset_name}; this board is a {self.board.title} "
                f"(preset {self.board.preset.name}): use bitstreams/boards/{self.board.name}/"
                f"{OVERLAY_NAME}.bit and .hwh"
            )
        return PRESETS[preset_name]

    def _check_clock(self, pynq: Any, hwh: Path, overlay: Any) -> None:
        """After pynq set the PL clock from the .hwh, the PS must run it at the .hwh's rate."""
        want = overlay.clock_dict.get(0, {}).get("frequency")
        try:
            got = float(pynq.ps.Clocks.fclk0_mhz)
        except Exception as exc:  # a device pynq cannot read clocks on (e.g. remote)
            log.warning("cannot read PL clock 0 on %s (%s): not checked", self.pdev.name, exc)
            return
        if want is None or abs(got - want) > want * CLOCK_TOLERANCE:
            raise DeviceError(
                f"{hwh.name} needs PL clock 0 at {want} MHz; the PS runs it at {got:.3f} MHz "
                "after pynq set it: this board's PLL cannot make that rate (see "
                "bitstreams/boards/boards.json pl_clock)"
            )

    @classmethod
    def probe(cls, options: dict[str, Any]) -> bool:
        """A board pynq finds (where pynq's variables say there may be one), or the simulated
        board when the settings ask for it."""
        if not (options.get("pynq_simulate") or _board_env()):
            return False
        try:
            import pynq

            return bool(options.get("pynq_simulate")) or len(pynq.Device.devices) > 0
        except Exception:  # any probing failure means: no usable board
            return False

    def verify(self) -> None:
        """The accelerator's VERSION must be this spec's; FEATURES say which build it is."""
        version = self.mmio.read(REGISTERS["VERSION"])
        if version != VERSION_WORD:
            self.mark_failed()
            raise DeviceError(
                f"the accelerator reports spec version 0x{version:08x}; this server needs "
                f"{SPEC_VERSION} (0x{VERSION_WORD:08x})"
            )
        words = {name: self.mmio.read(REGISTERS[name]) for name in SPEC["features"]}
        self.features = descriptors.read_features(words)
        built = descriptors.read_features(descriptors.features(self.hwh_preset))
        if self.features != built:
            self.mark_failed()
            differ = {k: (v, built[k]) for k, v in self.features.items() if v != built[k]}
            raise DeviceError(
                f"the bitstream reports FEATURES {differ} (bitstream, .hwh); "
                f"{self.bitfile.with_suffix('.hwh').name} describes preset {self.hwh_preset.name}: "
                "the .bit and the .hwh are not from the same build"
            )

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
                f"the program is built for {want.name} ({want.describe()}); the bitstream "
                f"{self.bitfile} reports array {have['array_ci']}x{have['array_co']}, "
                f"accumulator {have['acc_depth']} pixels, input buffer {have['ibuf_banks']} x "
                f"{have['ibuf_words']} words (rebuild the model with --target "
                f"{self.hwh_preset.name})"
            )

    def reset(self) -> None:
        """Soft-reset the accelerator and re-verify it before taking work again."""
        with self.lock:
            self.mmio.write(REGISTERS["CTRL"], CTRL_BITS["SOFT_RESET"])
            self.verify()
        super().reset()

    def _load(self, program: Program) -> LoadedProgram:
        return PynqProgram(self, program)

    def execute(self, loaded: PynqProgram, batch: int) -> None:
        """One run: program the registers, START, poll STATUS (fault -> DeviceError naming the
        instruction)."""
        a, b, c = (int(r.device_address) for r in loaded.regions)
        regs = descriptors.run_registers(
            loaded.image,
            int(loaded.descs.device_address),
            (a, b, c),
            int(loaded.weights.device_address),
            batch,
        )
        for offset, value in regs:
            self.mmio.write(offset, value)
        deadline = time.monotonic() + self.timeout_s
        while True:
            status = self.mmio.read(REGISTERS["STATUS"])
            if status & STATUS_BITS["ERROR"]:
                code = self.mmio.read(REGISTERS["ERROR_CODE"])
                index = self.mmio.read(REGISTERS["ERROR_INDEX"])
                image = self.mmio.read(REGISTERS["ERROR_IMAGE"])
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
            if status & STATUS_BITS["DONE"]:
                return
            if time.monotonic() > deadline:
                self.mark_failed()
                raise DeviceError(
                    f"the accelerator did not finish within {self.timeout_s:g} s; "
                    "the device will be reset"
                )
            self._wait(deadline)

    def _wait(self, deadline: float) -> None:
        """Until the accelerator's interrupt (a short slice at most), or one poll interval.

        The interrupt is a level (IRQ_STATUS & IRQ_ENABLE) that the next run's register writes
        clear; pynq's controller acknowledges it while it is still high, so the next wait may
        wake once at once, on the latched old level: STATUS decides, and the loop waits again."""
        if self.interrupt is None:
            time.sleep(POLL_S)
            return
        timeout = max(0.0, min(deadline - time.monotonic(), WAIT_SLICE_S))
        loop = interrupt_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(asyncio.wait_for(self.interrupt.wait(), timeout))
        except asyncio.TimeoutError:
            pass  # STATUS decides
        except RuntimeError as exc:  # "Interrupt invalidated by Overlay change": a new download
            import pynq

            log.warning("%s; taking the interrupt again", exc)
            try:
                self.interrupt = pynq.Interrupt(f"{self.ip_name}/{ACCELERATOR['interrupt']}")
            except ValueError as again:
                log.warning("no interrupt (%s): polling STATUS", again)
                self.interrupt = None

    def report_cycles(self, loaded: PynqProgram) -> None:
        """Tell cycles_hook each instruction's cycles of the run that just ended (PERF window:
        one read per instruction, so not done through pynq's remote device, where each read is
        a network round trip)."""
        hook = self.cycles_hook
        if hook is None or self.pdev.has_capability("REMOTE"):
            return
        instrs = loaded.program.instrs
        cycles = self.descriptor_cycles(len(instrs))
        hook(loaded.digest[:12], [(f"{i:03d} {instrs[i].name}", c) for i, c in enumerate(cycles)])

    def descriptor_cycles(self, count: int) -> list[int]:
        """The per-descriptor cycle counters of the last run (PERF window)."""
        depth = self.features.get("perf_depth", 0)
        return [self.mmio.read(REGISTERS["PERF_BASE"] + 4 * i) for i in range(min(count, depth))]
