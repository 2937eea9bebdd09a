"""Runs the fpga_cnn accelerator RTL (bitstreams/fpga_cnn/rtl/) cycle by cycle in Verilator.

``build(preset)`` verilates cnn_accel with the preset's parameters and the C++ testbench
(verilator/tb_accel.cpp: a DDR model with latency and bandwidth, AXI4 slaves for the five
masters, a per-cycle protocol checker), cached by a hash of everything that goes in. ``run``
packs nothing itself: it takes a DeviceImage from fpga_serve.core.descriptors (exactly what the
PYNQ driver uploads), places descriptors, weights and activations above 4 GiB, writes the
input images into their buffer, programs the registers with descriptors.run_registers (the
driver's sequence), waits for the interrupt, and reads back STATUS, ERROR_CODE, ERROR_INDEX,
CYCLES, the per-descriptor cycle counters, the three memory regions and per-port traffic. The
activation scratch, the input and the output regions lie 512 MiB apart, each declared to the
DDR model at exactly its size: an access through the wrong region's base reads or writes
another region's bytes (a twin mismatch) or undeclared memory (a FATAL in the testbench).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fpga_serve.core import descriptors
from fpga_serve.core.isa import ERROR_NAMES, REGISTERS, STATUS_BITS, Preset
from fpga_serve.hw.twin import packed

ROOT = Path(__file__).resolve().parents[2]
RTL_DIR = ROOT / "bitstreams" / "fpga_cnn" / "rtl"
TB = Path(__file__).resolve().parent / "verilator" / "tb_accel.cpp"
RTL_SOURCES = [
    RTL_DIR / f"{name}.v"
    for name in (
        "cnn_lib",
        "cnn_axi",
        "cnn_gather",
        "cnn_array",
        "cnn_lane",
        "cnn_check",
        "cnn_core",
        "cnn_fetch",
        "cnn_move",
        "cnn_accel",
    )
]
DESC_BASE = 0x1_0000_0000
WGT_BASE = 0x1_4000_0000
ACT_BASE = 0x1_8000_0000
IN_BASE = 0x1_A000_0000
OUT_BASE = 0x1_C000_0000
REGION_BASES = (ACT_BASE, IN_BASE, OUT_BASE)
"""Image 0's part of each region (SPACES codes: ACT, IN, OUT)."""
CACHE = Path(
    os.environ.get(
        "FPGA_SERVE_VERILATOR_CACHE", Path(tempfile.gettempdir()) / "fpga-serve-verilator"
    )
)
# Lint: -Wall less the file-name rule and WIDTH (implicit zero extension of narrower operands,
# used throughout for address arithmetic).
LINT = ["-Wall", "-Wno-DECLFILENAME", "-Wno-WIDTH"]


def _key(f: Preset, extra: Sequence[str]) -> str:
    h = hashlib.sha256()
    for path in [*RTL_SOURCES, *sorted(RTL_DIR.glob("*.vh")), TB]:
        h.update(path.read_bytes())
    h.update(repr(sorted(f.rtl_parameters().items())).encode())
    h.update(repr(list(extra)).encode())
    version = subprocess.run(
        ["verilator", "--version"], check=True, capture_output=True, text=True
    ).stdout
    h.update(version.encode())
    return h.hexdigest()[:20]


TRACE = ["--trace", "-CFLAGS", "-DTRACE"]


def build(f: Preset, extra: Sequence[str] = ()) -> Path:
    """The testbench executable for preset ``f`` (built once, then cached). ``TRACE`` as
    ``extra`` adds VCD tracing: FPGA_SERVE_TRACE=file.vcd[:from[:to]] when it runs."""
    key = _key(f, extra)
    exe = CACHE / key / "tb_accel"
    if exe.is_file():
        return exe
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    params = [f"-G{k}={v}" for k, v in f.rtl_parameters().items()]
    cmd = [
        "verilator", "--cc", "--exe", "--build", "-j", "2", "-O3", *LINT, "-Wno-fatal",
        "--x-assign", "fast", "--x-initial", "fast", "--top-module", "cnn_accel",
        f"-I{RTL_DIR}", *params, *extra,
        "-CFLAGS", f"-O2 -std=c++17 -DAXI_DB={f.axi_data_bytes}",
        *map(str, RTL_SOURCES), str(TB), "-Mdir", str(work / "obj"), "-o", "tb_accel",
    ]  # fmt: skip
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"verilator failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    (work / "obj" / "tb_accel").rename(work / "tb_accel")
    target = CACHE / key
    try:
        work.rename(target)
    except OSError:  # built meanwhile by another process
        shutil.rmtree(work, ignore_errors=True)
    return exe


@dataclass
class Ddr:
    """The DDR model: read latency (cycles), usable bandwidth (bytes per cycle, all ports
    together), probability that the slave withholds each READY/VALID, seed."""

    latency: int = 1
    bytes_per_cycle: float = 1e6
    stall: float = 0.0
    seed: int = 1

    @classmethod
    def of(cls, f: Preset, stall: float = 0.0, seed: int = 1) -> Ddr:
        """The preset's board: its DDR latency and usable bandwidth at its clock."""
        return cls(
            latency=max(1, round(f.ddr_latency_ns * f.clock_mhz / 1000)),
            bytes_per_cycle=f.ddr_gbps * 1e9 / (f.clock_mhz * 1e6),
            stall=stall,
            seed=seed,
        )


@dataclass
class Result:
    status: int
    error_code: int
    error_index: int
    error_image: int
    cycles: int
    perf: list[int]
    regions: packed.Regions
    """the three regions after the run"""
    stats: dict[str, dict[str, int]]
    snaps: dict[int, np.ndarray]
    lines: list[str] = field(default_factory=list)
    irq: bool = False
    second: Result | None = None

    @property
    def error(self) -> str | None:
        return ERROR_NAMES.get(self.error_code) if self.status & STATUS_BITS["ERROR"] else None

    @property
    def done(self) -> bool:
        return bool(self.status & STATUS_BITS["DONE"])


def run(
    image: descriptors.DeviceImage,
    x: np.ndarray | None = None,
    regions: packed.Regions | None = None,
    ddr: Ddr | None = None,
    errors: Sequence[tuple[str, int, int, int]] = (),
    snaps: Sequence[tuple[int, int, int, int]] = (),
    timeout: int = 2_000_000,
    batch: int | None = None,
    before: Sequence[str] = (),
    registers: Sequence[tuple[int, int]] | None = None,
    wait: str | None = None,
    rerun: bool = False,
    after: Sequence[str] = (),
) -> Result:
    """One run of ``image`` on the simulated accelerator. ``x``: int8 images [N, H, W, C]
    written into the input buffer (or prepared ``regions``); ``errors``: (port, lo, hi,
    resp) error responses; ``snaps``: (descriptor index, region code, offset, bytes) copies of
    memory taken when that descriptor completes (in the last image); ``before``: script lines
    played between the register writes and the wait (``wait`` replaces the wait for the
    interrupt), in the first run only; ``rerun``: then clear the error responses, SOFT_RESET,
    load the regions again, run again and report that run in ``Result.second``; ``after``:
    script lines played at the end (their output is in ``Result.lines``)."""
    f = image.preset
    exe = build(f, TRACE if os.environ.get("FPGA_SERVE_TRACE") else ())
    n = batch if batch is not None else (x.shape[0] if x is not None else 1)
    if regions is None:
        regions = packed.Regions.of(image, n)
        if x is not None:
            packed.write_input(image, regions.memory[image.input_space], x)
    ddr = ddr or Ddr()
    count = min(image.count, f.perf_depth)
    with tempfile.TemporaryDirectory(prefix="tb-") as tmp:
        d = Path(tmp)
        (d / "desc.bin").write_bytes(image.descriptors.tobytes())
        (d / "wgt.bin").write_bytes(image.weights.tobytes())
        lens = [max(m.size, 64) for m in regions.memory]
        for code, m in enumerate(regions.memory):
            (d / f"region{code}.bin").write_bytes(m.tobytes())

        def load_regions() -> list[str]:
            return [f"load {REGION_BASES[code]:x} {d / f'region{code}.bin'}" for code in range(3)]

        lines = [
            f"region {DESC_BASE:x} {max(len(image.descriptors), 64):x} ro",
            f"load {DESC_BASE:x} {d / 'desc.bin'}",
            f"region {WGT_BASE:x} {image.weights.size:x} ro",
            f"load {WGT_BASE:x} {d / 'wgt.bin'}",
            *[f"region {REGION_BASES[code]:x} {lens[code]:x}" for code in range(3)],
            *load_regions(),
            f"ddr {ddr.latency} {ddr.bytes_per_cycle} {ddr.stall} {ddr.seed}",
            f"limits {f.max_burst} {f.outstanding}",
        ]
        lines += [f"error {p} {lo:x} {hi:x} {resp}" for p, lo, hi, resp in errors]
        lines += [
            f"snap {i} {REGION_BASES[code] + (n - 1) * regions.sizes[code] + off:x} {size:x} "
            f"{d / f'snap{i}.bin'}"
            for i, code, off, size in snaps
        ]
        regs = (
            registers
            if registers is not None
            else descriptors.run_registers(image, DESC_BASE, REGION_BASES, WGT_BASE, n)
        )

        def block(tag: str) -> list[str]:
            first = tag == "out"
            out = [f"write {o:x} {v:x}" for o, v in regs] + (list(before) if first else [])
            out.append((wait if first else None) or f"irq {timeout}")
            names = ["STATUS", "ERROR_CODE", "ERROR_INDEX", "ERROR_IMAGE", "CYCLES_LO", "CYCLES_HI"]
            out += [f"read {REGISTERS[r]:x}" for r in names]
            out += [f"read {REGISTERS['PERF_BASE'] + 4 * i:x}" for i in range(count)]
            out += [
                f"dump {REGION_BASES[code]:x} {lens[code]:x} {d / f'{tag}{code}.bin'}"
                for code in range(3)
            ]
            return [*out, "stats"]

        lines += block("out")
        if rerun:
            lines += [
                "clear_errors",
                f"write {REGISTERS['CTRL']:x} 2",
                *load_regions(),
            ]
            lines += block("out2")
        lines += list(after)
        (d / "script").write_text("\n".join(lines) + "\n")
        proc = subprocess.run(
            [str(exe), str(d / "script"), str(d / "out.txt")],
            check=False,
            capture_output=True,
            text=True,
        )
        text = (d / "out.txt").read_text() if (d / "out.txt").exists() else ""
        if proc.returncode != 0:
            raise AssertionError(
                f"testbench failed ({proc.returncode}): {text[-2000:]}{proc.stderr[-2000:]}"
            )
        out_lines = text.splitlines()
        got = {
            i: np.fromfile(d / f"snap{i}.bin", np.uint8)
            for i, _, _, _ in snaps
            if (d / f"snap{i}.bin").exists()
        }
        results = []
        tags = ("out", "out2") if rerun else ("out",)
        for tag, part in zip(tags, _split_runs(out_lines, count), strict=False):
            a, b, c = (
                np.fromfile(d / f"{tag}{code}.bin", np.uint8)[: m.size]
                for code, m in enumerate(regions.memory)
            )
            results.append(_result(part, count, packed.Regions((a, b, c), regions.sizes)))
        first = results[0]
        first.snaps = got
        first.lines = out_lines
        first.second = results[1] if rerun else None
        return first


def _split_runs(lines: list[str], count: int) -> list[list[str]]:
    """The output of each run block: from its wait to its stats."""
    runs: list[list[str]] = [[]]
    for line in lines:
        runs[-1].append(line)
        if line.startswith("cycles "):
            runs.append([])
    return [r for r in runs if any(x.startswith("read ") for x in r)]


def _result(lines: list[str], count: int, regions: packed.Regions) -> Result:
    values = [int(line.split()[2], 16) for line in lines if line.startswith("read ")]
    stats: dict[str, dict[str, int]] = {}
    for line in lines:
        parts = line.split()
        if parts[0] == "port":
            stats[parts[1]] = {parts[i]: int(parts[i + 1]) for i in range(2, len(parts), 2)}
    return Result(
        status=values[0],
        error_code=values[1],
        error_index=values[2],
        error_image=values[3],
        cycles=values[4] | (values[5] << 32),
        perf=values[6 : 6 + count],
        regions=regions,
        stats=stats,
        snaps={},
        lines=lines,
        irq=any(line.startswith("irq ok") for line in lines),
    )


def output(image: descriptors.DeviceImage, result: Result, batch: int = 1) -> np.ndarray:
    return packed.read_output(image, result.regions.memory[image.output_space], batch)
