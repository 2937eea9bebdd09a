"""Everything a board's build needs, in one place: boards.json + the preset + the RTL header.

``facts(board)`` is what the generated Vivado config (``config.py``) and the generated .hwh
(``hwh.py``) are made from. It refuses a board whose definition contradicts its preset, its PS
or the RTL (BoardError listing every problem), so nothing is generated from a bad definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fpga_serve.boardflow.rtl import AxiInterface, TopModule, read_top
from fpga_serve.core.boards import (
    ACCELERATOR,
    BOARDS_DIR,
    BOARDS_JSON,
    OVERLAY_NAME,
    Board,
    BoardError,
)
from fpga_serve.core.isa import SPEC

ROOT = Path(__file__).resolve().parents[3]
RTL_DIR = ROOT / "bitstreams" / "fpga_cnn" / "rtl"
DESIGN_NAME: str = BOARDS_JSON["design_name"]
IP_VLNV: str = SPEC["ip"]["vlnv"]


@dataclass(frozen=True)
class Facts:
    """One board's build, resolved."""

    board: Board
    top: TopModule
    params: dict[str, int]
    masters: list[AxiInterface]
    control: AxiInterface
    ps_config: dict[str, str] = field(default_factory=dict)

    @property
    def axi_data_bits(self) -> int:
        return self.board.preset.axi_data_bytes * 8

    @property
    def control_addr_bits(self) -> int:
        return self.control.addr_width(self.params)

    def out_dir(self, root: Path = BOARDS_DIR) -> Path:
        """Where the .bit and .hwh of this board go, under one basename (pynq's layout)."""
        return root / self.board.name

    def hwh_path(self, root: Path = BOARDS_DIR) -> Path:
        return self.out_dir(root) / f"{OVERLAY_NAME}.hwh"


def read_accelerator() -> TopModule:
    module = ACCELERATOR["module"]
    return read_top(RTL_DIR / f"{module}.v", module)


def ps_config(board: Board) -> dict[str, str]:
    """The PS's CONFIG values this build sets (on top of the board preset)."""
    ps = board.ps
    clk = ps.pl_clock
    out = dict(ps.base_config)
    out[clk["enable"]] = "1"
    out[clk["srcsel"]] = clk["pll"]
    out[clk["freq"]] = f"{board.ps_clock_mhz:g}"
    master = ps.control_masters[board.control_master]
    out[master["enable"]] = "1"
    if master["width_param"]:
        out[master["width_param"]] = "32"
    out.update(ps.irq_enable)
    for port in board.used_hp_ports():
        hp = ps.hp_ports[port]
        out[hp.enable] = "1"
        out[hp.width_param] = str(board.preset.axi_data_bytes * 8)
    return out


def facts(board: Board) -> Facts:
    """Resolve ``board``; BoardError lists every contradiction found."""
    top = read_accelerator()
    problems = list(board.problems())
    try:
        params = top.params(board.preset.rtl_parameters())
    except Exception as exc:  # an RtlError: the preset names a parameter the RTL lacks
        raise BoardError(f"board {board.name}: {exc}") from exc
    masters = top.masters()
    names = {m.name for m in masters}
    if set(board.hp_ports) != names:
        problems.append(
            f"boards.json maps masters {sorted(board.hp_ports)}; "
            f"{top.path.name} has {sorted(names)}"
        )
    for m in masters:
        if board.hp_ports.get(m.name) and m.data_width(params) != board.preset.axi_data_bytes * 8:
            problems.append(
                f"{m.name} is {m.data_width(params)} bits wide in the RTL, the preset says "
                f"{board.preset.axi_data_bytes * 8}"
            )
    controls = [a for a in top.axi() if a.name == ACCELERATOR["control"]]
    for name in (ACCELERATOR["clock"], ACCELERATOR["reset"], ACCELERATOR["interrupt"]):
        if all(p.name != name for p in top.ports):
            problems.append(f"{top.path.name} has no port {name}")
    if not controls:
        problems.append(f"{top.path.name} has no {ACCELERATOR['control']} interface")
    elif 1 << controls[0].addr_width(params) != board.control_range:
        problems.append(
            f"{ACCELERATOR['control']} decodes {controls[0].addr_width(params)} address bits: "
            f"boards.json's control range {board.control_range} should be "
            f"{1 << controls[0].addr_width(params)}"
        )
    if problems:
        raise BoardError(f"board {board.name}: " + "; ".join(problems))
    return Facts(board, top, params, masters, controls[0], ps_config(board))
