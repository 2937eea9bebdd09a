"""``fpga-serve overlay``: build the accelerator's bitstream for a board with Vivado.

    fpga-serve overlay boards                # the boards, their presets, clocks, images
    fpga-serve overlay build --board zcu104  # -> bitstreams/boards/zcu104/fpga_cnn.{bit,hwh}

``build`` runs bitstreams/boards/vivado/build.tcl in Vivado's batch mode. Without Vivado it says
so, names the version the flow assumes and the command it would have run, and exits 2.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from fpga_serve.boardflow import config
from fpga_serve.boardflow.facts import facts
from fpga_serve.core.boards import BOARDS, BOARDS_DIR, VIVADO_VERSION, BoardError, board

BUILD_TCL = BOARDS_DIR / "vivado" / "build.tcl"
STEPS = ("ip", "bd", "bitstream")


def add_overlay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("overlay", help="build the FPGA overlay for a board (needs Vivado)")
    osub = p.add_subparsers(dest="overlay_command", required=True)
    b = osub.add_parser("build", help="run the Vivado flow: IP, block design, bitstream, .hwh")
    b.add_argument("--board", required=True, choices=sorted(BOARDS))
    b.add_argument(
        "--build-dir", type=Path, help="Vivado's work (default bitstreams/boards/BOARD/build)"
    )
    b.add_argument(
        "--out-dir",
        type=Path,
        help="where fpga_cnn.bit and .hwh go (default bitstreams/boards/BOARD)",
    )
    b.add_argument("--jobs", type=int, default=4, help="parallel Vivado jobs (default 4)")
    b.add_argument("--to", choices=STEPS, default="bitstream", help="last step (default bitstream)")
    b.add_argument(
        "--vivado",
        type=Path,
        help="the vivado program (default: $XILINX_VIVADO/bin/vivado, then PATH)",
    )
    b.set_defaults(func=build)
    ls = osub.add_parser("boards", help="list the boards the flow builds for")
    ls.set_defaults(func=list_boards)


def find_vivado(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit if explicit.is_file() else None
    home = os.environ.get("XILINX_VIVADO")
    if home and (Path(home) / "bin" / "vivado").is_file():
        return Path(home) / "bin" / "vivado"
    found = shutil.which("vivado")
    return Path(found) if found else None


def vivado_version(vivado: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(vivado), "-version"], capture_output=True, text=True, timeout=120, check=False
        )
    except OSError:
        return None
    m = re.search(r"Vivado v(\d{4}\.\d)", out.stdout)
    return m.group(1) if m else None


def build(ns: argparse.Namespace) -> int:
    b = board(ns.board)
    f = facts(b)  # refuses a board whose definition contradicts its preset, PS or RTL
    cfg = BOARDS_DIR / "vivado" / "config" / f"{b.name}.tcl"
    if not cfg.is_file() or cfg.read_text() != config.render(f):
        raise BoardError(f"{cfg} is stale: run python -m fpga_serve.boardflow.generate")
    build_dir = (ns.build_dir or BOARDS_DIR / b.name / "build").resolve()
    out_dir = (ns.out_dir or BOARDS_DIR / b.name).resolve()
    args = [b.name, str(build_dir), str(ns.jobs), ns.to, str(out_dir)]
    command = ["vivado", "-mode", "batch", "-notrace", "-source", str(BUILD_TCL), "-tclargs", *args]
    vivado = find_vivado(ns.vivado)
    if vivado is None:
        home = "unset" if "XILINX_VIVADO" not in os.environ else "has no bin/vivado"
        print(
            f"fpga-serve: Vivado is not installed here (no {ns.vivado or 'vivado on PATH'}, "
            f"XILINX_VIVADO {home}).\nThe board flow was written for Vivado {VIVADO_VERSION} "
            "(bitstreams/boards/boards.json); install it, `source <Vivado>/settings64.sh`, and run "
            "this again. It would run:\n  " + " ".join(command),
            file=sys.stderr,
        )
        return 2
    version = vivado_version(vivado)
    if version != VIVADO_VERSION:
        print(
            f"fpga-serve: warning: {vivado} is Vivado {version or '(version unknown)'}; the flow "
            f"assumes {VIVADO_VERSION} (IP versions may differ: read the warnings it prints)",
            file=sys.stderr,
        )
    build_dir.mkdir(parents=True, exist_ok=True)
    print(f"fpga-serve: building {b.title} ({b.preset.name}, {b.clock_mhz:g} MHz) in {build_dir}")
    done = subprocess.run([str(vivado), *command[1:]], cwd=build_dir, check=False)
    if done.returncode != 0:
        print(
            f"fpga-serve: Vivado failed ({done.returncode}): see {build_dir / 'vivado.log'}",
            file=sys.stderr,
        )
        return 1
    if ns.to == "bitstream":
        print(f"fpga-serve: wrote {out_dir / 'fpga_cnn'}.bit and .hwh (next: docs/boards.md)")
    return 0


def list_boards(ns: argparse.Namespace) -> int:
    for b in BOARDS.values():
        p = b.preset
        clock = f"{b.clock_mhz:g} MHz" + (
            f" (clk_wiz from {b.ps_clock_mhz:g} MHz)" if b.clock_source == "mmcm" else ""
        )
        print(
            f"{b.name:10} {b.title}: preset {p.name} ({p.part}, array {p.array_ci}x{p.array_co}, "
            f"{p.axi_data_bytes * 8}-bit AXI, {clock}); PYNQ image {b.pynq_image['release']}"
        )
    return 0
