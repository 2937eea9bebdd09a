"""Running the board flow's Tcl under tclsh against the recording stand-in, and reading what it did.

``run(board, tmp)`` is what `vivado -mode batch -source bitstreams/boards/vivado/build.tcl -tclargs
<board> <build dir> 1 bitstream <out dir>` would do, with the stand-in's commands (stub*.tcl);
``Record`` is the block design it left, read from the stand-in's record file.
"""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import external_tools

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
BUILD_TCL = ROOT / "bitstreams" / "boards" / "vivado" / "build.tcl"
TCLSH = external_tools.find("tclsh")


@dataclass
class Record:
    part: str = ""
    board_part: str = ""
    board_connections: str = ""
    cells: dict[str, str] = field(default_factory=dict)
    config: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    widths: dict[str, str] = field(default_factory=dict)
    freq: dict[str, int] = field(default_factory=dict)
    intf_nets: list[tuple[str, str]] = field(default_factory=list)
    nets: list[list[str]] = field(default_factory=list)
    addr: dict[str, dict[str, tuple[int, int]]] = field(default_factory=lambda: defaultdict(dict))
    cores: dict[str, bool] = field(default_factory=dict)
    user_params: dict[str, str] = field(default_factory=dict)
    blocks: dict[str, int] = field(default_factory=dict)
    log: list[list[str]] = field(default_factory=list)
    validated: bool = False

    @classmethod
    def read(cls, path: Path) -> Record:
        r = cls()
        for line in path.read_text().splitlines():
            kind, *f = line.split("\t")
            if kind == "project":
                r.part, r.board_part, r.board_connections = [*f, "", "", ""][:3]
            elif kind == "cell":
                r.cells[f[0].lstrip("/")] = f[1]
            elif kind == "config":
                r.config[f[0].lstrip("/")][f[1]] = f[2] if len(f) > 2 else ""
            elif kind == "intf":
                r.widths[f[0].lstrip("/")] = f[2]
            elif kind == "freq":
                r.freq[f[0].lstrip("/")] = int(f[1])
            elif kind == "intf_net":
                r.intf_nets.append((f[0].lstrip("/"), f[1].lstrip("/")))
            elif kind == "net":
                r.nets.append([p.lstrip("/") for p in f])
            elif kind == "addr":
                r.addr[f[0].lstrip("/")][f[1].lstrip("/")] = (int(f[2]), int(f[3]))
            elif kind == "core":
                r.cores[f[0]] = f[1] == "1"
            elif kind == "user_param":
                r.user_params[f[1]] = f[2] if len(f) > 2 else ""
            elif kind == "block":
                r.blocks[f"{f[1]}/{f[2]}"] = int(f[3])
            elif kind == "log":
                r.log.append(f)
            elif kind == "validated":
                r.validated = f[0] == "1"
        return r

    def peer(self, pin: str) -> str | None:
        """The other end of the interface net ``pin`` is on."""
        for a, b in self.intf_nets:
            if pin in (a, b):
                return b if pin == a else a
        return None

    def net(self, pin: str) -> list[str]:
        for n in self.nets:
            if pin in n:
                return n
        return []


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    record: Record
    out_dir: Path


def run(board: str, tmp: Path, script: Path = BUILD_TCL, env: dict[str, str] | None = None,
        last_step: str = "bitstream") -> Run:  # fmt: skip
    """Run ``script`` for ``board`` in the stand-in, building in ``tmp``."""
    assert TCLSH, "tclsh is not installed"
    tmp.mkdir(parents=True, exist_ok=True)
    record = tmp / "record.txt"
    out_dir = tmp / "out"
    proc = subprocess.run(
        [
            TCLSH,
            str(HERE / "run.tcl"),
            str(script),
            board,
            str(tmp / "build"),
            "1",
            last_step,
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STUB_RECORD": str(record), **(env or {})},
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, Record.read(record), out_dir)
