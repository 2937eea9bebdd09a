"""The accelerator top's interface read from its Verilog: parameters, ports and their widths.

The board flow takes the AXI interfaces, the clock, the reset and the interrupt from here (the
.hwh generator writes these ports; the tests check the Tcl and the .hwh against them), so a port
added to or renamed in bitstreams/fpga_cnn/rtl/cnn_accel.v shows up everywhere or fails a test.
It reads the ANSI module header only (``module NAME #(parameter ...) (input wire [a:b] x, ...)``),
which is how the top is written; tests/rtl/test_boards.py checks the result against yosys.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fpga_serve.core.errors import FpgaServeError

_PARAM = re.compile(r"parameter\s+(?:integer\s+)?(\w+)\s*=\s*(.+)", re.S)
_PORT = re.compile(
    r"\b(input|output)\s+(?:wire|reg)?\s*(?:signed\s*)?(?:\[([^\]:]+):([^\]]+)\])?\s*(\w+)"
)
_BINOPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.LShift: operator.lshift,
}


class RtlError(FpgaServeError):
    """The top's header cannot be read."""


@dataclass(frozen=True)
class Port:
    name: str
    direction: str  # "in" | "out"
    msb: str
    lsb: str

    def width(self, params: Mapping[str, int]) -> int:
        return evaluate(self.msb, params) - evaluate(self.lsb, params) + 1


@dataclass(frozen=True)
class AxiInterface:
    """An AXI interface of the top: its prefix, role and the ports that carry it."""

    name: str
    mode: str  # "slave" | "master"
    ports: tuple[Port, ...]

    def port(self, signal: str) -> Port | None:
        for p in self.ports:
            if p.name == f"{self.name}_{signal}":
                return p
        return None

    @property
    def reads(self) -> bool:
        return self.port("araddr") is not None

    @property
    def writes(self) -> bool:
        return self.port("awaddr") is not None

    def data_width(self, params: Mapping[str, int]) -> int:
        data = self.port("rdata") or self.port("wdata")
        if data is None:
            raise RtlError(f"{self.name} has neither rdata nor wdata")
        return data.width(params)

    def addr_width(self, params: Mapping[str, int]) -> int:
        addr = self.port("araddr") or self.port("awaddr")
        if addr is None:
            raise RtlError(f"{self.name} has no address")
        return addr.width(params)


def evaluate(expr: str, params: Mapping[str, int]) -> int:
    """A Verilog constant expression of integers, parameters, + - * / <<."""

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in params:
            return int(params[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        raise RtlError(f"cannot evaluate {expr!r} in the top's header")

    text = expr.strip().replace("/", "//")
    return ev(ast.parse(text, mode="eval").body)


@dataclass(frozen=True)
class TopModule:
    """The header of the top module."""

    name: str
    path: Path
    defaults: dict[str, int]
    ports: tuple[Port, ...]

    def params(self, overrides: Mapping[str, int] | None = None) -> dict[str, int]:
        unknown = set(overrides or {}) - set(self.defaults)
        if unknown:
            raise RtlError(f"{self.name} has no parameter(s) {', '.join(sorted(unknown))}")
        return {**self.defaults, **(overrides or {})}

    def port(self, name: str) -> Port:
        for p in self.ports:
            if p.name == name:
                return p
        raise RtlError(f"{self.path.name}: {self.name} has no port {name}")

    def axi(self) -> list[AxiInterface]:
        """Every ``s_axi_*`` and ``m_axi_*`` interface, in port order."""
        groups: dict[str, list[Port]] = {}
        for p in self.ports:
            m = re.match(r"([sm]_axi_[a-z0-9]+)_[a-z]+$", p.name)
            if m:
                groups.setdefault(m.group(1), []).append(p)
        return [
            AxiInterface(name, "slave" if name.startswith("s_") else "master", tuple(ports))
            for name, ports in groups.items()
        ]

    def masters(self) -> list[AxiInterface]:
        return [a for a in self.axi() if a.mode == "master"]


def read_top(path: Path, module: str) -> TopModule:
    """Parse ``module``'s ANSI header in ``path``."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(rf"\bmodule\s+{module}\b\s*(#\s*\((.*?)\))?\s*\((.*?)\);", text, re.S)
    if m is None:
        raise RtlError(f"{path}: no ANSI header for module {module}")
    defaults: dict[str, int] = {}
    for item in (m.group(2) or "").split(","):
        pm = _PARAM.search(item)
        if pm:
            defaults[pm.group(1)] = evaluate(pm.group(2), defaults)
    ports = tuple(
        Port(name, "in" if d == "input" else "out", msb or "0", lsb or "0")
        for d, msb, lsb, name in _PORT.findall(m.group(3))
    )
    if not ports:
        raise RtlError(f"{path}: module {module} has no ports")
    return TopModule(module, path, defaults, ports)
