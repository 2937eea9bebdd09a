"""A simulated board for pynq's own driver code: a ``pynq.Device`` with register access
(``REGISTER_RW``), a memory model that ``allocate`` hands out as real ``PynqBuffer``s, and a
register-level model of the fpga_cnn accelerator that decodes descriptors from that memory and
computes with the twin's numerics. ``pynq.Overlay`` loads on it from a ``.bit`` + ``.hwh`` pair
(parsed by pynq's own metadata parser; the ``.bit`` must be a simulation image, see
``write_simulation_bitstream``), pynq's clock code programs the PS clock registers, and
``pynq.MMIO`` reads and writes go through ``read_registers``/``write_registers`` exactly as they
would reach a board over pynq's remote device. ``simulate(name)`` makes it pynq's active device
(``pynq.Device.active_device``, what pynq's Overlay, MMIO, allocate and clock code use when given
no device): the PYNQ driver calls it when the server's ``pynq_simulate`` setting is on. pynq never
finds it by probing (it has no ``_probe_``), so nothing but that setting switches it on.

Which board it is: the ``pynq_sim_board`` setting (a name in bitstreams/boards/boards.json), or
``use_board``; its PS (hw/pynq_sim_ps.py: clock and port-width registers, the AXI
interrupt controller on the PS interrupt line and that line's UIO device), addresses and memory
are the board's, and a download fails when what pynq programmed from the .hwh does not fit the
board's block design (a PL clock off its rate, an HP port of another width).

Fault injection and completion latency are the tests' (tests/helpers/pynq_sim_faults.py,
a subclass of ``SimulatedAccelerator`` that ``SimulatedPynqDevice.accelerator_class`` selects).
"""

from __future__ import annotations

import atexit
import shutil
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pynq
from pynq.buffer import PynqBuffer

from fpga_serve.core import descriptors
from fpga_serve.core.boards import BOARDS, BOARDS_DIR, OVERLAY_NAME, Board, board
from fpga_serve.core.isa import (
    CTRL_BITS,
    DEFAULT_TARGET,
    ERROR_CODES,
    IRQ_BITS,
    PRESETS,
    REGISTERS,
    SPEC_VERSION,
    STATUS_BITS,
    version_word,
)
from fpga_serve.hw.pynq_sim_ps import SimIntc, SimPs, SimUio
from fpga_serve.hw.twin import numpy_path, packed

SYNCS_KEPT = 1024


def ddr_base(b: Board) -> int:
    """Where the simulated board's allocations start: the middle of the PS's low DDR."""
    low, high = b.ps.ddr_low
    return low + (high - low + 1) // 2


# the default board's (tests/helpers/pynq_remote_fake.py)
ACCEL_BASE = BOARDS["zcu104"].control_base
ACCEL_RANGE = BOARDS["zcu104"].control_range
DDR_BASE = ddr_base(BOARDS["zcu104"])
READ_ONLY = {
    REGISTERS[name]
    for name in ("STATUS", "VERSION", "ERROR_CODE", "ERROR_INDEX", "ERROR_IMAGE", "CYCLES_LO",
                 "CYCLES_HI", "FEATURES0", "FEATURES1", "FEATURES2", "FEATURES3", "FEATURES4")
}  # fmt: skip


class SimulatedAccelerator:
    """The accelerator's register file (spec 2) over the device's memory model: a run checks
    and executes the descriptors with the twin's packed executor (hw/twin/packed.py, the numpy
    path's ops), exactly what the RTL computes, and ends at once; it has no cycle model (CYCLES
    and the per-descriptor counters stay 0). Tests subclass it at ``_execute`` and ``_complete``
    (tests/helpers/pynq_sim_faults.py: faults, completion latency)."""

    def __init__(self, memory: SimMemory) -> None:
        self.memory = memory
        self.regs = np.zeros(ACCEL_RANGE // 4, dtype=np.uint32)
        self.step_seconds: list[float] = []  # per descriptor of the last run, for benchmarks
        self.runs = 0
        self.on_interrupt: Any = None  # called with the interrupt line's level when it may change
        # A run's end (a timer thread) changes STATUS, IRQ_STATUS and the interrupt line at once,
        # as one clock edge does on a board: register accesses never see it half done.
        self._lock = threading.RLock()
        self.perf_model: Callable[[int], int] | None = None
        """The PERF counter descriptor i leaves after a run (no cycle model here: none, 0;
        bench/bench_pynq.py gives it the RTL's counters for the same program)."""
        self.load_image(SPEC_VERSION, DEFAULT_TARGET)

    def interrupt_level(self) -> bool:
        """The level interrupt: IRQ_STATUS & IRQ_ENABLE (spec.json irq_bits)."""
        return bool(self.read(REGISTERS["IRQ_STATUS"]) & self.read(REGISTERS["IRQ_ENABLE"]))

    def load_image(self, spec_version: str, preset_name: str = DEFAULT_TARGET) -> None:
        """A (simulated) bitstream download: VERSION and FEATURES show what was loaded.
        ``spec_version`` may carry the preset as a simulation image does ("2.0;zcu104")."""
        if ";" in spec_version:
            spec_version, _, preset_name = spec_version.partition(";")
        self.preset = PRESETS.get(preset_name, PRESETS[DEFAULT_TARGET])
        self.regs[:] = 0
        self.regs[REGISTERS["VERSION"] // 4] = version_word(spec_version)
        for name, value in descriptors.features(self.preset).items():
            self.regs[REGISTERS[name] // 4] = value
        self.regs[REGISTERS["BATCH"] // 4] = 1

    def read(self, offset: int) -> int:
        with self._lock:
            return int(self.regs[offset // 4])

    def write(self, offset: int, value: int) -> None:
        with self._lock:
            self._write(offset, value)
            if self.on_interrupt is not None:
                self.on_interrupt(self.interrupt_level())

    def _write(self, offset: int, value: int) -> None:
        if offset == REGISTERS["CTRL"]:
            if value & CTRL_BITS["SOFT_RESET"]:
                self.soft_reset()
            busy = self.read(REGISTERS["STATUS"]) & STATUS_BITS["BUSY"]
            if value & CTRL_BITS["START"] and not busy:
                self._start()
            return
        if offset == REGISTERS["IRQ_STATUS"]:
            self.regs[offset // 4] &= ~np.uint32(value)
            return
        if offset in READ_ONLY or offset >= REGISTERS["PERF_BASE"]:
            return
        self.regs[offset // 4] = value

    def soft_reset(self) -> None:
        """CTRL.SOFT_RESET: STATUS and the error registers cleared."""
        for name in ("STATUS", "ERROR_CODE", "ERROR_INDEX", "ERROR_IMAGE"):
            self.regs[REGISTERS[name] // 4] = 0

    def address(self, lo: str, hi: str) -> int:
        """The 64-bit address held in a LO/HI register pair."""
        return (self.read(REGISTERS[hi]) << 32) | self.read(REGISTERS[lo])

    def _start(self) -> None:
        self.runs += 1
        for name in (
            "STATUS",
            "ERROR_CODE",
            "ERROR_INDEX",
            "ERROR_IMAGE",
            "CYCLES_LO",
            "CYCLES_HI",
        ):
            self.regs[REGISTERS[name] // 4] = 0
        try:
            self._execute()
        except packed.AcceleratorFault as fault:
            self._error(fault.code, fault.index, fault.image)
            return
        self._complete()

    def _complete(self) -> None:
        """The end of a run that did not fault: DONE at once."""
        self._done()

    def _done(self) -> None:
        with self._lock:
            self.regs[REGISTERS["STATUS"] // 4] = STATUS_BITS["DONE"]
            self.regs[REGISTERS["IRQ_STATUS"] // 4] |= IRQ_BITS["DONE"]
            if self.on_interrupt is not None:
                self.on_interrupt(self.interrupt_level())

    def _error(self, code: str, index: int, image: int) -> None:
        self.regs[REGISTERS["STATUS"] // 4] = STATUS_BITS["ERROR"]
        self.regs[REGISTERS["ERROR_CODE"] // 4] = ERROR_CODES[code]
        self.regs[REGISTERS["ERROR_INDEX"] // 4] = index
        self.regs[REGISTERS["ERROR_IMAGE"] // 4] = image
        self.regs[REGISTERS["IRQ_STATUS"] // 4] |= IRQ_BITS["ERROR"]

    def _execute(self) -> None:
        """Check and run the descriptors the registers point at (AcceleratorFault where the
        accelerator would stop)."""
        count = self.read(REGISTERS["DESC_COUNT"])
        batch = self.read(REGISTERS["BATCH"])
        where = [descriptors.REGION_REGISTERS[code] for code in range(3)]
        strides = [self.read(REGISTERS[stride]) for _, stride in where]
        bases = [self.address(f"{addr}_LO", f"{addr}_HI") for addr, _ in where]
        addrs = [self.address(f"{r}_LO", f"{r}_HI") for r in ("DESC_ADDR", "WGT_ADDR")]
        if any(a % descriptors.ALIGN for a in (*addrs, *bases, *strides)):
            raise packed.AcceleratorFault(
                "BAD_ADDRESS", 0, 0, "a region or a stride is not 64-byte aligned"
            )
        if count == 0 or batch == 0:
            return
        try:
            table = descriptors.unpack(
                self.memory.view(addrs[0], count * descriptors.DESCRIPTOR_BYTES), count
            )
            weights = self.memory.view(addrs[1], self.read(REGISTERS["WGT_BYTES"]))
            a, b, c = (
                self.memory.view(at, batch * n) for at, n in zip(bases, strides, strict=True)
            )
        except ValueError as exc:  # outside every allocation: a board would see a bus error
            raise packed.AcceleratorFault("BUS_ERROR", 0, 0, str(exc)) from exc
        regions = packed.Regions((a, b, c), (strides[0], strides[1], strides[2]))
        self.step_seconds = []
        last = [time.perf_counter()]

        def timed(image: int, index: int) -> None:
            now = time.perf_counter()
            if image == 0:
                self.step_seconds.append(now - last[0])
            last[0] = now

        packed.execute(self.preset, table, weights, regions, batch, numpy_path, timed)
        if self.perf_model is not None:
            for i in range(min(count, self.preset.perf_depth)):
                self.regs[(REGISTERS["PERF_BASE"] + 4 * i) // 4] = self.perf_model(i)


class SimMemory:
    """Physically addressed DDR: allocations are numpy arrays at made-up physical addresses."""

    def __init__(self, device: SimulatedPynqDevice) -> None:
        self.device = device
        self.next = DDR_BASE
        self.blocks: list[tuple[int, np.ndarray]] = []
        self.lock = threading.Lock()

    def allocate(self, shape: Any, dtype: Any, **kwargs: Any) -> PynqBuffer:
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) * dt.itemsize
        backing = np.zeros(descriptors.align(max(count, 1)), dtype=np.uint8)
        with self.lock:
            address = self.next
            self.next += descriptors.align(max(count, 1)) + 4096
            self.blocks.append((address, backing))
        # Not coherent, as PYNQ's CMA buffers are not to the HP ports: the driver must flush
        # what it wrote and invalidate what it reads (the board counts what it syncs).
        return PynqBuffer(
            shape,
            dt,
            buffer=backing.data,
            device=self.device,
            device_address=address,
            bo=address,
            coherent=False,
        )

    def block(self, address: int) -> np.ndarray:
        """The rest of the allocation that holds ``address``."""
        for base, backing in self.blocks:
            if base <= address < base + backing.size:
                return backing[address - base :]
        raise ValueError(f"address 0x{address:x} is not in any allocation")

    def view(self, address: int, length: int) -> np.ndarray:
        for base, backing in self.blocks:
            if base <= address and address + length <= base + backing.size:
                return backing[address - base : address - base + length]
        raise ValueError(f"address 0x{address:x} (+{length}) is not in any allocation")


SIM_BITSTREAM_MAGIC = b"fpga-serve simulated bitstream for overlay fpga_cnn, spec "


def _field(tag: bytes, text: str) -> bytes:
    data = text.encode("ascii") + b"\0"
    return tag + struct.pack(">H", len(data)) + data


def write_simulation_bitstream(
    path: Path, spec_version: str = SPEC_VERSION, preset_name: str = DEFAULT_TARGET
) -> Path:
    """The stand-in for a .bit that the simulated board accepts (no real bitstream exists): a
    Xilinx .bit header (so pynq can parse it and convert it to .bin) around a marked payload
    naming the spec version and the preset (the array shape and buffers FEATURES reports)."""
    payload = SIM_BITSTREAM_MAGIC + f"{spec_version};{preset_name}".encode()
    payload += b"\0" * (-len(payload) % 4)  # .bit data is 32-bit words
    header = struct.pack(">H", 9) + bytes.fromhex("0ff00ff00ff00ff000") + struct.pack(">H", 1)
    header += _field(b"a", "fpga_cnn;UserID=0XFFFFFFFF;Version=2023.2")
    header += _field(b"b", "xczu7ev-ffvc1156-2-e") + _field(b"c", "2026/11/24")
    header += _field(b"d", "12:00:00") + b"e" + struct.pack(">I", len(payload))
    path.write_bytes(header + payload)
    return path


def simulation_spec_version(image: bytes, from_bin: bool = False) -> str | None:
    """What a simulation image (.bit, or the .bin pynq makes of it) carries, "version;preset",
    or None when the bytes are not a simulation image."""
    data = (
        bytes(np.frombuffer(image[: len(image) // 4 * 4], ">i4").byteswap()) if from_bin else image
    )
    at = data.find(SIM_BITSTREAM_MAGIC)
    if at < 0:
        return None
    return data[at + len(SIM_BITSTREAM_MAGIC) :].rstrip(b"\0\n").decode("ascii", "replace")


class SimulatedPynqDevice(pynq.Device):  # type: ignore[misc]
    """pynq's view of the simulated board."""

    accelerator_class: type[SimulatedAccelerator] = SimulatedAccelerator
    """What ``use_board`` builds the accelerator from (tests put their instrumented one here)."""

    def __init__(self, board_name: str) -> None:
        super().__init__("fpga-serve-sim")
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False}
        self.name = "fpga-serve simulated board"
        self.bitfile_name: str | None = None
        self.timestamp: str | None = None
        self.use_board(board_name)

    def use_board(self, name: str) -> None:
        """Become board ``name`` of boards.json, freshly booted (nothing loaded)."""
        self.board = board(name)
        self.arch = self.board.ps.arch  # for pynq's clock code: aarch64 (ZynqMP) or armv7l
        self.pynq_board = self.board.pynq_boards[0]  # what $BOARD says on the board's image
        self.default_memory = SimMemory(self)
        self.default_memory.next = ddr_base(self.board)
        self.accelerator = self.accelerator_class(self.default_memory)
        self.ps = SimPs(self.board)
        self.uio = SimUio()
        self.intc = SimIntc(self.uio.fire)
        self.accelerator.on_interrupt = lambda level: self.intc.set_input(0, level)
        # The last flush / invalidate calls (tests read them), bounded for a long-running server.
        self.synced: deque[tuple[str, int, int, int]] = deque(maxlen=SYNCS_KEPT)
        self.bitfile_name = None
        from pynq.interrupt import _InterruptController
        from pynq.ps import Clocks

        # pynq.Interrupt reaches the PS interrupt line through a UIO device (pynq/interrupt.py):
        # this board's, for its raw IRQ. pynq's Clocks keeps the first PS it saw: forget it.
        _InterruptController._uio_devices[self.board.ps.raw_irq] = self.uio
        _InterruptController._controllers.clear()
        if "_real_instance" in vars(Clocks):
            delattr(Clocks, "_real_instance")

    def default_overlay(self) -> Path:
        """What the driver loads here when no overlay is given: a simulation image of this
        board's preset beside a copy of the board's committed .hwh, in a folder of this
        process's (removed at exit)."""
        folder = Path(tempfile.mkdtemp(prefix=f"fpga-serve-sim-{self.board.name}-"))
        atexit.register(shutil.rmtree, folder, True)
        shutil.copy(BOARDS_DIR / self.board.name / f"{OVERLAY_NAME}.hwh", folder)
        return write_simulation_bitstream(
            folder / f"{OVERLAY_NAME}.bit", preset_name=self.board.preset.name
        )

    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False) -> Any:
        """Parse the .hwh beside the .bit with pynq's runtime metadata parser."""
        from pynq.pl_server.hwh_parser import get_hwh_name
        from pynqmetadata.frontends import Metadata
        from pynqmetadata.views.runtime import RuntimeMetadataParser

        hwh = Path(get_hwh_name(bitfile_name))
        if not hwh.is_file():
            raise RuntimeError(f"no {hwh.name} beside {bitfile_name}")
        return RuntimeMetadataParser(Metadata(input=hwh))

    def download(self, bitstream: Any, parser: Any = None) -> None:
        carried = simulation_spec_version(Path(bitstream.bitfile_name).read_bytes())
        if carried is None:
            raise RuntimeError(f"{bitstream.bitfile_name} is not a bitstream for this board")
        if carried.partition(";")[2] not in PRESETS:
            raise RuntimeError(f"{bitstream.bitfile_name} is for an unknown preset: {carried!r}")
        from pynq.pl_server.embedded_device import EmbeddedDevice

        EmbeddedDevice.set_axi_port_width(self, parser)  # what a board's download does
        problems = self.ps.problems()
        if problems:
            raise RuntimeError(
                f"{self.board.title} cannot run {Path(bitstream.bitfile_name).name} as pynq "
                f"configured it: {'; '.join(problems)}"
            )
        self.accelerator.load_image(carried)
        self.post_download(bitstream, parser, self.name)

    def _target(self, address: int) -> tuple[Any, int]:
        """Which register file ``address`` is in, and the offset there."""
        b = self.board
        if b.control_base <= address < b.control_base + b.control_range:
            return self.accelerator, address - b.control_base
        if b.intc_base <= address < b.intc_base + b.intc_range:
            return self.intc, address - b.intc_base
        return None, address

    def read_registers(self, address: int, length: int) -> bytes:
        words = []
        for at in range(address, address + max(length, 4), 4):
            target, offset = self._target(at)
            words.append(self.ps.read(at) if target is None else target.read(offset))
        return np.array(words, dtype="<u4").tobytes()[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        if len(data) % 4:
            raise ValueError(f"bad register write at 0x{address:x}")
        for i, word in enumerate(np.frombuffer(data, dtype="<u4")):
            target, offset = self._target(address + 4 * i)
            if target is None:
                self.ps.write(address + 4 * i, int(word))
            else:
                target.write(offset, int(word))

    @property
    def ps_registers(self) -> dict[int, int]:
        return self.ps.registers

    def flush(self, bo: int, offset: int, ptr: Any, size: int) -> None:
        """The host's caches to DDR: recorded as (buffer, offset, bytes); memory is one copy."""
        self.synced.append(("flush", bo, offset, size))

    def invalidate(self, bo: int, offset: int, ptr: Any, size: int) -> None:
        self.synced.append(("invalidate", bo, offset, size))


_SIMULATED: list[SimulatedPynqDevice] = []
"""The process's simulated board, once made (pynq's PS state, its clocks and interrupt
controllers, is per process, as on a board)."""


def simulate(board_name: str) -> SimulatedPynqDevice:
    """The simulated board ``board_name``, made pynq's active device: the first call boots it,
    later ones return it (booted again as ``board_name`` if it is another board)."""
    if not _SIMULATED:
        _SIMULATED.append(SimulatedPynqDevice(board_name))
    sim = _SIMULATED[0]
    if sim.board.name != board_name:
        sim.use_board(board_name)
    pynq.Device.active_device = sim
    return sim
