"""The simulated board's processing system, as the board in bitstreams/boards/boards.json has it:
the PLL and PL clock registers pynq's clock code programs (ZynqMP CRL_APB or Zynq-7000 SLCR, with
the PLL rate the PYNQ boot leaves), the AXI port-width registers pynq sets from the .hwh (ZynqMP
FPD_SLCR and AFIFM), an AXI interrupt controller at the board's address wired to the PS interrupt
line, and that line's UIO device as pynq.Interrupt reaches it.

After a download the board checks what pynq programmed against what its block design needs: the
width of every HP port the accelerator's masters use, and of the control master. A disagreement
fails the download, naming both. A PL clock off the design's rate is not refused here: a board
runs at whatever rate it is given (``pl0_mhz`` says which); the driver must notice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from fpga_serve.core.boards import Board

ZU_REF_MHZ = 33.333  # pynq's _ClocksUltrascale.DEFAULT_SRC_CLK_MHZ
Z7_REF_MHZ = 50.0  # pynq's _ClocksZynq.DEFAULT_SRC_CLK_MHZ
ZU_AFIFM = {f"S_AXI_HP{i}_FPD": 0xFD380000 + 0x10000 * i for i in range(4)}  # AFIFM2..5 RDCTRL
ZU_AFIFM_BITS = {0: 128, 1: 64, 2: 32}  # FABRIC_WIDTH field, pynq's ZU_AXIFM_VALUE reversed
ZU_FPD_SLCR_AXI_FS = 0xFD615000  # M_AXI_HPM0_FPD width, bits [9:8]
ZU_HPM_BITS = {0: 32, 1: 64, 2: 128}


class SimIntc:
    """An AXI interrupt controller (PG099's ISR, IPR, IER, IAR, SIE, CIE, MER), level inputs."""

    ISR, IPR, IER, IAR, SIE, CIE, IVR, MER = range(0, 32, 4)

    def __init__(self, irq: Callable[[], None]) -> None:
        self.isr = self.ier = self.mer = 0
        self.inputs = 0
        self._irq = irq
        self._high = False

    def read(self, offset: int) -> int:
        if offset == self.ISR:
            return self.isr
        if offset == self.IPR:
            return self.isr & self.ier
        if offset == self.IER:
            return self.ier
        if offset == self.MER:
            return self.mer
        if offset == self.IVR:
            pending = self.isr & self.ier
            return (pending & -pending).bit_length() - 1 if pending else 0xFFFFFFFF
        return 0

    def write(self, offset: int, value: int) -> None:
        if offset == self.IAR:
            self.isr &= ~value
        elif offset == self.IER:
            self.ier = value
        elif offset == self.SIE:
            self.ier |= value
        elif offset == self.CIE:
            self.ier &= ~value
        elif offset == self.MER:
            self.mer = value & 3
        self._update()

    def set_input(self, index: int, level: bool) -> None:
        self.inputs = (self.inputs | (1 << index)) if level else (self.inputs & ~(1 << index))
        self._update()

    def _update(self) -> None:
        self.isr |= self.inputs  # level inputs re-latch while high
        high = bool(self.mer & 1) and bool(self.isr & self.ier)
        if high and not self._high:
            self._irq()
        self._high = high


class SimUio:
    """The UIO device of the PS interrupt line, as pynq's UioController is to pynq.Interrupt:
    ``add_event`` arms it; the line going high sets the armed events from the event loop of the
    waiter (as the UIO file's reader callback does on a board)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.fired = 0

    def add_event(self, event: Any, number: int) -> None:
        with self.lock:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                self.loop = asyncio.get_event_loop()
            self.events.append(event)

    def fire(self) -> None:
        with self.lock:
            events, self.events = self.events, []
            loop = self.loop
            self.fired += 1
        for event in events:
            if loop is not None:
                loop.call_soon_threadsafe(event.set)
            else:
                event.set()


class SimPs:
    """PS registers at their boot values for ``board``; what pynq writes lands here."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.zynqmp = board.ps.name == "zynq_ultra_ps_e"
        self.registers: dict[int, int] = {}
        pll = board.ps.clock_registers["pll_ctrl"]
        if self.zynqmp:  # IOPLL_CTRL: FBDIV [14:8], DIV2 bit 16
            self.registers[pll] = (round(board.pll_mhz * 2 / ZU_REF_MHZ) << 8) | (1 << 16)
        else:  # IO_PLL_CTRL: PLL_FDIV [18:12]
            self.registers[pll] = round(board.pll_mhz / Z7_REF_MHZ) << 12

    def read(self, address: int) -> int:
        return self.registers.get(address, 0)

    def write(self, address: int, value: int) -> None:
        self.registers[address] = value

    def pl0_mhz(self) -> float:
        """PL clock 0 as the registers pynq wrote make it."""
        ctrl = self.read(self.board.ps.clock_registers["pl0_ctrl"])
        d0, d1 = (ctrl >> 8) & 0x3F, (ctrl >> 16 if self.zynqmp else ctrl >> 20) & 0x3F
        pll = self.read(self.board.ps.clock_registers["pll_ctrl"])
        if self.zynqmp:
            src = ZU_REF_MHZ * ((pll >> 8) & 0x7F) / (2 if pll >> 16 & 1 else 1)
        else:
            src = Z7_REF_MHZ * ((pll >> 12) & 0x7F)
        return src / (d0 * d1) if d0 and d1 else 0.0

    def problems(self) -> list[str]:
        """The port widths pynq left programmed that this board's block design cannot use."""
        b = self.board
        errs = []
        if self.zynqmp:
            want = b.preset.axi_data_bytes * 8
            for port in b.used_hp_ports():
                field = self.read(ZU_AFIFM[port]) & 3
                if ZU_AFIFM_BITS.get(field) != want:
                    errs.append(f"{port} is {ZU_AFIFM_BITS.get(field)}-bit, the masters {want}-bit")
            hpm = (self.read(ZU_FPD_SLCR_AXI_FS) >> 8) & 3
            if ZU_HPM_BITS.get(hpm) != 32:
                errs.append(
                    f"M_AXI_HPM0_FPD is {ZU_HPM_BITS.get(hpm)}-bit, the control port 32-bit"
                )
        return errs
