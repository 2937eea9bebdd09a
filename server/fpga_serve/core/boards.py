"""The boards fpga_cnn is built for: bitstreams/boards/boards.json joined with the presets.

boards.json holds what a block design around the accelerator needs beyond its preset (the PS,
its board preset, which HP port each AXI master uses, the control port's address, the interrupt
line, how the PL clock is made, the Vivado version assumed). The preset (spec.json "presets")
holds the part, the clock and the bus widths; nothing here repeats them. ``Board.problems()``
says where the two disagree with each other or with what the PS can do; the board flow refuses
to generate anything for a board with problems, and the driver refuses a board whose PL clock
cannot be set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpga_serve.core.errors import FpgaServeError, Status
from fpga_serve.core.isa import PRESETS, Preset

BOARDS_FILE = Path(__file__).with_name("boards.json")
BOARDS_DIR = BOARDS_FILE.resolve().parent  # bitstreams/boards: boards.json here is a link to it
DIVISOR_MAX = 63  # both PL clock divisors are 6-bit fields on ZynqMP and Zynq-7000
CLOCK_TOLERANCE_MHZ = 0.01


class BoardError(FpgaServeError):
    """A board definition, or a bitstream's metadata, does not fit the board."""

    status = Status.FAILED_PRECONDITION


def load_boards_json() -> dict[str, Any]:
    return dict(json.loads(BOARDS_FILE.read_text()))


BOARDS_JSON = load_boards_json()


@dataclass(frozen=True)
class HpPort:
    """A PS slave port a master of the accelerator reaches DDR through."""

    name: str
    enable: str
    width_param: str
    hwh_width_param: str
    clock_pin: str
    space: str
    segment: str
    widths: tuple[int, ...]
    protocol: str
    ddr_path: str

    @property
    def max_burst(self) -> int:
        return 16 if self.protocol == "AXI3" else 256


@dataclass(frozen=True)
class PsType:
    """One kind of processing system IP and the names its pins and parameters have."""

    name: str
    vlnv: str
    instance: str
    arch: str
    hwh_arch: str
    automation: str
    automation_config: str
    base_config: dict[str, str]
    data_space: str
    pl_clock: dict[str, str]
    reset_pin: str
    control_masters: dict[str, dict[str, Any]]
    hp_ports: dict[str, HpPort]
    ddr_low: tuple[int, int]
    irq_pin: str
    irq_enable: dict[str, str]
    raw_irq: int
    clock_registers: dict[str, int]

    @property
    def version(self) -> str:
        return self.vlnv.rsplit(":", 1)[1]


@dataclass(frozen=True)
class Board:
    """A board, its PS and the accelerator preset it is built with."""

    name: str
    title: str
    preset: Preset
    ps: PsType
    board_part: str
    board_connections: str
    board_files: str
    pynq_boards: tuple[str, ...]
    pynq_image: dict[str, str]
    clock_source: str
    pll_mhz: float
    ps_clock_request_mhz: float | None
    control_master: str
    control_base: int
    control_range: int
    intc_base: int
    intc_range: int
    hp_ports: dict[str, str]

    @property
    def clock_mhz(self) -> float:
        """The accelerator's clock: the preset's."""
        return float(self.preset.clock_mhz)

    @property
    def ps_clock_mhz(self) -> float:
        """What the PS's PL clock 0 must run at: the accelerator's clock, or the clk_wiz input."""
        if self.clock_source == "ps":
            return self.clock_mhz
        assert self.ps_clock_request_mhz is not None
        return self.ps_clock_request_mhz

    def ps_divisors(self) -> tuple[int, int] | None:
        """The two PL clock divisors that make ``ps_clock_mhz`` from the PLL exactly, or None."""
        best: tuple[int, int] | None = None
        for d0 in range(1, DIVISOR_MAX + 1):
            for d1 in range(1, DIVISOR_MAX + 1):
                exact = abs(self.pll_mhz / (d0 * d1) - self.ps_clock_mhz) <= CLOCK_TOLERANCE_MHZ
                if exact and (best is None or d1 < best[1]):
                    best = (d0, d1)
        return best

    def used_hp_ports(self) -> dict[str, list[str]]:
        """HP port -> the masters that reach DDR through it (one SmartConnect each)."""
        out: dict[str, list[str]] = {}
        for master, port in self.hp_ports.items():
            if port:
                out.setdefault(port, []).append(master)
        return out

    def problems(self) -> list[str]:
        """Every way this board's definition contradicts its preset or its PS."""
        p = self.preset
        errs: list[str] = []
        if not p.part:
            errs.append(f"preset {p.name} names no part")
        family = {"zynq_ultra_ps_e": "xcup", "processing_system7": "xc7"}[self.ps.name]
        if p.family != family:
            errs.append(f"preset {p.name} is family {p.family}, the {self.ps.name} PS is {family}")
        if self.ps_divisors() is None:
            errs.append(
                f"the PS cannot make {self.ps_clock_mhz:g} MHz from its {self.ps.pl_clock['pll']} "
                f"at {self.pll_mhz:g} MHz (two divisors of 1..{DIVISOR_MAX})"
            )
        if self.clock_source not in ("ps", "mmcm"):
            errs.append(f"pl_clock source {self.clock_source!r} is neither 'ps' nor 'mmcm'")
        for master, port in self.hp_ports.items():
            if not port:
                continue
            hp = self.ps.hp_ports.get(port)
            if hp is None:
                errs.append(f"{master}: {self.ps.name} has no port {port}")
                continue
            if p.axi_data_bytes * 8 not in hp.widths:
                errs.append(f"{master}: {port} cannot be {p.axi_data_bytes * 8} bits wide")
            if p.max_burst > hp.max_burst:
                errs.append(
                    f"{master}: preset {p.name} bursts up to {p.max_burst} beats, "
                    f"{port} is {hp.protocol} ({hp.max_burst})"
                )
        wt1 = self.hp_ports.get("m_axi_wt1", "")
        if (p.weight_ports == 1) != (wt1 == ""):
            errs.append(
                f"preset {p.name} has {p.weight_ports} weight port(s): m_axi_wt1 must be "
                f"{'unconnected' if p.weight_ports == 1 else 'connected'}"
            )
        control = self.ps.control_masters.get(self.control_master)
        if control is None:
            errs.append(f"{self.ps.name} has no master {self.control_master}")
        else:
            low, high = (int(a, 16) for a in control["aperture"])
            for what, base, size in (
                ("control", self.control_base, self.control_range),
                ("intc", self.intc_base, self.intc_range),
            ):
                if base % size or not (low <= base and base + size - 1 <= high):
                    errs.append(
                        f"{what} port at 0x{base:x} (+0x{size:x}) is not aligned inside "
                        f"{self.control_master}'s 0x{low:x}-0x{high:x}"
                    )
            if abs(self.control_base - self.intc_base) < max(self.control_range, self.intc_range):
                errs.append("the control port and the interrupt controller overlap")
        return errs


def _ps_type(name: str, data: dict[str, Any]) -> PsType:
    return PsType(
        name=name,
        vlnv=data["vlnv"],
        instance=data["instance"],
        arch=data["arch"],
        hwh_arch=data["hwh_arch"],
        automation=data["automation"],
        automation_config=data["automation_config"],
        base_config=dict(data["base_config"]),
        data_space=data["data_space"],
        pl_clock=dict(data["pl_clock"]),
        reset_pin=data["reset_pin"],
        control_masters=dict(data["control_masters"]),
        hp_ports={
            port: HpPort(
                name=port, widths=tuple(v["widths"]), **{k: v[k] for k in v if k != "widths"}
            )
            for port, v in data["hp_ports"].items()
        },
        ddr_low=(int(data["ddr_low"][0], 16), int(data["ddr_low"][1], 16)),
        irq_pin=data["irq"]["pin"],
        irq_enable=dict(data["irq"]["enable"]),
        raw_irq=int(data["irq"]["raw_irq"]),
        clock_registers={k: int(v, 16) for k, v in data["clock_registers"].items()},
    )


PS_TYPES: dict[str, PsType] = {n: _ps_type(n, d) for n, d in BOARDS_JSON["ps_types"].items()}


def _board(name: str, data: dict[str, Any]) -> Board:
    if data["preset"] not in PRESETS:
        raise BoardError(f"boards.json: board {name} names an unknown preset {data['preset']!r}")
    clock = data["pl_clock"]
    return Board(
        name=name,
        title=data["title"],
        preset=PRESETS[data["preset"]],
        ps=PS_TYPES[data["ps"]],
        board_part=data["board_part"],
        board_connections=data["board_connections"],
        board_files=data["board_files"],
        pynq_boards=tuple(data["pynq_boards"]),
        pynq_image=dict(data["pynq_image"]),
        clock_source=clock["source"],
        pll_mhz=float(clock["pll_mhz"]),
        ps_clock_request_mhz=float(clock["ps_mhz"]) if "ps_mhz" in clock else None,
        control_master=data["control"]["master"],
        control_base=int(data["control"]["base"], 16),
        control_range=int(data["control"]["range"]),
        intc_base=int(data["intc_base"], 16),
        intc_range=int(BOARDS_JSON["intc"]["range"]),
        hp_ports=dict(data["hp_ports"]),
    )


BOARDS: dict[str, Board] = {n: _board(n, d) for n, d in BOARDS_JSON["boards"].items()}
VIVADO_VERSION: str = BOARDS_JSON["vivado_version"]
OVERLAY_NAME: str = BOARDS_JSON["overlay_name"]
ACCELERATOR: dict[str, str] = dict(BOARDS_JSON["accelerator"])
INTC: dict[str, Any] = dict(BOARDS_JSON["intc"])


def board(name: str) -> Board:
    """The board called ``name`` in boards.json (BoardError naming the known ones)."""
    if name not in BOARDS:
        raise BoardError(f"unknown board {name!r}: boards.json knows {', '.join(sorted(BOARDS))}")
    return BOARDS[name]


def board_for_pynq(pynq_board: str) -> Board | None:
    """The board a PYNQ image calls ``pynq_board`` (its $BOARD), if boards.json knows it."""
    for b in BOARDS.values():
        if pynq_board in b.pynq_boards:
            return b
    return None
