"""A simulated board for pynq's own driver code: a ``pynq.Device`` with register access
(``REGISTER_RW``), a memory model that ``allocate`` hands out as real ``PynqBuffer``s, and a
register-level model of the fpga_cnn accelerator that decodes descriptors from that memory and
computes with the twin's numerics. ``pynq.Overlay`` loads on it from a ``.bit`` + ``.hwh`` pair
(parsed by pynq's own metadata parser; the ``.bit`` must be a simulation image, see
``write_simulation_bitstream``), pynq's clock code programs the PS clock registers, and
``pynq.MMIO`` reads and writes go through ``read_registers``/``write_registers`` exactly as they
would reach a board over pynq's remote device. Enabled with FPGA_SERVE_PYNQ_SIMULATE=1 (pynq
then finds it as its active device).

Fault injection (for tests): ``fault = "error"`` makes the next run end with STATUS.ERROR,
``fault = "hang"`` leaves it BUSY forever; a SOFT_RESET clears both. ``fault = "corrupt"``
garbles the activations of the next run and reports success (what validate mode is for). From
another process, write a fault's name into the file named by FPGA_SERVE_PYNQ_SIM_FAULTS: the
next START takes it.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pynq
from pynq.buffer import PynqBuffer

from fpga_serve.core.isa import SPEC, SPEC_VERSION, Opcode
from fpga_serve.hw.descriptors import RELU_FLAG, align, unhwc, unpack
from fpga_serve.hw.twin import fast

REG = {k: int(v) for k, v in SPEC["registers"].items()}
STATUS_BITS = {k: int(v) for k, v in SPEC["status_bits"].items()}
CTRL_BITS = {k: int(v) for k, v in SPEC["ctrl_bits"].items()}
ERRORS = {k: int(v) for k, v in SPEC["error_codes"].items()}
ACCEL_BASE = 0xA000_0000
ACCEL_RANGE = 0x1_0000
DDR_BASE = 0x4000_0000
VERSION_WORD = (int(SPEC_VERSION.split(".")[0]) << 16) | int(SPEC_VERSION.split(".")[1])


class BadOpcodeError(Exception):
    """A descriptor whose opcode the overlay does not have (ERROR_CODE 1, as the RTL)."""


class SimulatedAccelerator:
    """The accelerator's register file and datapath, over the device's memory model."""

    def __init__(self, memory: SimMemory) -> None:
        self.memory = memory
        self.regs = np.zeros(ACCEL_RANGE // 4, dtype=np.uint32)
        self.regs[REG["VERSION"] // 4] = VERSION_WORD
        self.fault: str | None = None
        self.writes: list[tuple[int, int]] = []  # (offset, value), for tests
        self.step_seconds: list[float] = []  # per descriptor of the last run, for benchmarks
        self.runs = 0

    def load_image(self, spec_version: str) -> None:
        """A (simulated) bitstream download: the VERSION register shows what was loaded."""
        major, _, minor = spec_version.partition(".")
        ok = major.isdigit() and minor.isdigit()
        self.regs[REG["VERSION"] // 4] = ((int(major) << 16) | int(minor)) if ok else 0
        self.fault = None

    def read(self, offset: int) -> int:
        return int(self.regs[offset // 4])

    def write(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))
        if offset == REG["CTRL"]:
            if value & CTRL_BITS["SOFT_RESET"]:
                self.fault = None
                self.regs[REG["STATUS"] // 4] = 0
                self.regs[REG["ERROR_CODE"] // 4] = 0
            if value & CTRL_BITS["START"]:
                self._start()
            return
        if offset in (REG["STATUS"], REG["VERSION"], REG["ERROR_CODE"]):
            return  # read-only
        self.regs[offset // 4] = value

    def _addr(self, lo: str, hi: str) -> int:
        return (self.read(REG[hi]) << 32) | self.read(REG[lo])

    def _start(self) -> None:
        self.runs += 1
        fault_file = os.environ.get("FPGA_SERVE_PYNQ_SIM_FAULTS")
        if fault_file and os.path.exists(fault_file):  # a test injecting a fault into a server
            with open(fault_file) as fh:
                self.fault = fh.read().strip() or None
            os.unlink(fault_file)
        status = REG["STATUS"] // 4
        if self.fault == "hang":
            self.regs[status] = STATUS_BITS["BUSY"]
            return
        if self.fault == "error":
            self._error("BAD_ADDRESS")
            return
        try:
            self._execute()
        except BadOpcodeError:
            self._error("BAD_OPCODE")
            return
        except (KeyError, ValueError, IndexError):
            self._error("BAD_DESCRIPTOR")
            return
        if self.fault == "corrupt":  # a silent datapath fault: only validate mode sees it
            self.memory.block(self._addr("ACT_ADDR_LO", "ACT_ADDR_HI"))[:] ^= 0x5A
            self.fault = None
        self.regs[status] = STATUS_BITS["DONE"]

    def _error(self, code: str) -> None:
        self.regs[REG["STATUS"] // 4] = STATUS_BITS["ERROR"]
        self.regs[REG["ERROR_CODE"] // 4] = ERRORS[code]

    def _execute(self) -> None:
        count = self.read(REG["DESC_COUNT"])
        batch = self.read(REG["BATCH"])
        desc = self.memory.view(self._addr("DESC_ADDR_LO", "DESC_ADDR_HI"), count * 64)
        act_base = self._addr("ACT_ADDR_LO", "ACT_ADDR_HI")
        wgt_base = self._addr("WGT_ADDR_LO", "WGT_ADDR_HI")
        self.step_seconds = []
        for row in unpack(desc, count):
            start = time.perf_counter()
            self._instruction(row, batch, act_base, wgt_base)
            self.step_seconds.append(time.perf_counter() - start)

    def _tensor(self, base: int, offset: int, word: int, slice_word: int, batch: int) -> np.ndarray:
        h, w, c = unhwc(int(word))
        buf_c, ch_off = int(slice_word) >> 16, int(slice_word) & 0xFFFF
        region = self.memory.view(base + int(offset), align(batch * h * w * buf_c))
        full = region[: batch * h * w * buf_c].view(np.int8).reshape(batch, h, w, buf_c)
        return full[..., ch_off : ch_off + c]

    def _const(self, base: int, offset: int, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        return self.memory.view(base + int(offset), size).view(dtype)

    def _instruction(self, row: Any, batch: int, act: int, wgt: int) -> None:
        if int(row["opcode"]) not in Opcode.__members__.values():
            raise BadOpcodeError(int(row["opcode"]))
        op = Opcode(int(row["opcode"]))
        relu = bool(int(row["flags"]) & RELU_FLAG)
        x = self._tensor(act, row["in0_offset"], row["in0_hwc"], row["in0_slice"], batch)
        out = self._tensor(act, row["out_offset"], row["out_hwc"], row["out_slice"], batch)
        cin, cout = x.shape[-1], out.shape[-1]
        kernel = (int(row["kernel_h"]), int(row["kernel_w"]))
        stride = int(row["stride"])
        pad = (
            int(row["pad_top"]),
            int(row["pad_bottom"]),
            int(row["pad_left"]),
            int(row["pad_right"]),
        )
        xc = np.ascontiguousarray(x)
        if op is Opcode.CONV:
            weight = self._const(
                wgt, row["weight_offset"], "<i1", kernel[0] * kernel[1] * cin * cout
            )
            result = fast.conv(
                xc,
                weight.reshape(*kernel, cin, cout),
                self._const(wgt, row["bias_offset"], "<i4", cout),
                self._const(wgt, row["mult_offset"], "<i4", cout),
                self._const(wgt, row["shift_offset"], "<i4", cout),
                stride,
                pad,
                relu,
            )
        elif op is Opcode.MAXPOOL:
            result = fast.maxpool(xc, kernel, stride, pad, int(row["pad_value"]))
        elif op is Opcode.AVGPOOL:
            result = fast.avgpool(
                xc,
                kernel,
                stride,
                pad,
                self._const(wgt, row["mult_offset"], "<i4", 1),
                self._const(wgt, row["shift_offset"], "<i4", 1),
            )
        elif op is Opcode.GLOBAL_AVGPOOL:
            result = fast.global_avgpool(
                xc,
                self._const(wgt, row["mult_offset"], "<i4", 1),
                self._const(wgt, row["shift_offset"], "<i4", 1),
            )
        elif op is Opcode.ADD:
            other = self._tensor(act, row["in1_offset"], row["in0_hwc"], row["in1_slice"], batch)
            result = fast.add(
                xc,
                np.ascontiguousarray(other),
                self._const(wgt, row["mult_offset"], "<i4", 2),
                self._const(wgt, row["shift_offset"], "<i4", 1),
                relu,
            )
        elif op is Opcode.SCALE_SHIFT:
            result = fast.scale_shift(
                xc,
                self._const(wgt, row["mult_offset"], "<i4", cin),
                self._const(wgt, row["bias_offset"], "<i4", cin),
                self._const(wgt, row["shift_offset"], "<i4", 1),
                relu,
            )
        else:  # pragma: no cover - Opcode() already refused unknown values
            raise ValueError(op)
        out[...] = result


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
        backing = np.zeros(align(max(count, 1)), dtype=np.uint8)
        with self.lock:
            address = self.next
            self.next += align(max(count, 1)) + 4096
            self.blocks.append((address, backing))
        return PynqBuffer(
            shape,
            dt,
            buffer=backing.data,
            device=self.device,
            device_address=address,
            coherent=True,
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


def write_simulation_bitstream(path: Path, spec_version: str = SPEC_VERSION) -> Path:
    """The stand-in for a .bit that the simulated board accepts (no real bitstream exists): a
    Xilinx .bit header (so pynq can parse it and convert it to .bin) around a marked payload."""
    payload = SIM_BITSTREAM_MAGIC + spec_version.encode()
    payload += b"\0" * (-len(payload) % 4)  # .bit data is 32-bit words
    header = struct.pack(">H", 9) + bytes.fromhex("0ff00ff00ff00ff000") + struct.pack(">H", 1)
    header += _field(b"a", "fpga_cnn;UserID=0XFFFFFFFF;Version=2023.2")
    header += _field(b"b", "xczu7ev-ffvc1156-2-e") + _field(b"c", "2026/11/24")
    header += _field(b"d", "12:00:00") + b"e" + struct.pack(">I", len(payload))
    path.write_bytes(header + payload)
    return path


def simulation_spec_version(image: bytes, from_bin: bool = False) -> str | None:
    """The spec version a simulation image (.bit, or the .bin pynq makes of it) carries, or
    None when the bytes are not a simulation image."""
    data = (
        bytes(np.frombuffer(image[: len(image) // 4 * 4], ">i4").byteswap()) if from_bin else image
    )
    at = data.find(SIM_BITSTREAM_MAGIC)
    if at < 0:
        return None
    return data[at + len(SIM_BITSTREAM_MAGIC) :].rstrip(b"\0\n").decode("ascii", "replace")


class SimulatedPynqDevice(pynq.Device):  # type: ignore[misc]
    """pynq's view of the simulated board."""

    _probe_priority_ = 47
    arch = "aarch64"  # a Zynq UltraScale+ PS, for pynq's clock code

    def __init__(self) -> None:
        super().__init__("fpga-serve-sim")
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False}
        self.name = "fpga-serve simulated board"
        self.default_memory = SimMemory(self)
        self.accelerator = SimulatedAccelerator(self.default_memory)
        # Everything outside the accelerator: the PS. IOPLL_CTRL (CRL_APB + 0x20) as a booted
        # ZynqMP leaves it (FBDIV 90, DIV2: 33.33 MHz x 45 = 1.5 GHz), for pynq's clock code.
        self.ps_registers: dict[int, bytes] = {
            0xFF5E0020: ((90 << 8) | (1 << 16)).to_bytes(4, "little")
        }
        self.bitfile_name: str | None = None
        self.timestamp: str | None = None

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
        version = simulation_spec_version(Path(bitstream.bitfile_name).read_bytes())
        if version is None:
            raise RuntimeError(f"{bitstream.bitfile_name} is not a bitstream for this board")
        self.accelerator.load_image(version)
        self.accelerator.fault = None
        self.post_download(bitstream, parser, self.name)

    @classmethod
    def _probe_(cls) -> list[SimulatedPynqDevice]:
        return [cls()] if os.environ.get("FPGA_SERVE_PYNQ_SIMULATE") == "1" else []

    def read_registers(self, address: int, length: int) -> bytes:
        base = address - ACCEL_BASE
        if not 0 <= base < ACCEL_RANGE:
            return self.ps_registers.get(address, bytes(length))[:length].ljust(length, b"\0")
        words = [self.accelerator.read(base + 4 * i) for i in range((length + 3) // 4)]
        return np.array(words, dtype="<u4").tobytes()[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        base = address - ACCEL_BASE
        if not 0 <= base < ACCEL_RANGE:
            self.ps_registers[address] = bytes(data)
            return
        if len(data) % 4:
            raise ValueError(f"bad register write at 0x{address:x}")
        for i, word in enumerate(np.frombuffer(data, dtype="<u4")):
            self.accelerator.write(base + 4 * i, int(word))

    def flush(self, *args: Any) -> None:
        """Coherent memory: nothing to flush."""

    def invalidate(self, *args: Any) -> None:
        """Coherent memory: nothing to invalidate."""
