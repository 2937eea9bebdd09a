"""Runs the fpga_cnn RTL (bitstreams/fpga_cnn/rtl/) in Icarus Verilog from Python.

Memory images are built exactly as the PYNQ driver builds its buffers: descriptors.layout,
descriptors.pack and descriptors.pack_weights, the input written into its buffer's channel
slice, the output read back from its own. The testbench (tb_cnn_accel.v) plays a script of
AXI-Lite register operations and writes the memory back; tb_units.v applies vectors to the
datapath units. With an ``AxiBus`` the same testbench, built with -DAXI_GMEM, runs the top
cnn_accel_axi against an AXI4 slave memory with random wait states and a protocol checker
(tb_axi_gmem.vh).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fpga_serve.core.isa import SPEC, Program
from fpga_serve.hw import descriptors

ROOT = Path(__file__).resolve().parents[2]
RTL_DIR = ROOT / "bitstreams" / "fpga_cnn" / "rtl"
TB_DIR = Path(__file__).resolve().parent
RTL_SOURCES = [
    RTL_DIR / "cnn_units.v",
    RTL_DIR / "cnn_engine.v",
    RTL_DIR / "cnn_accel.v",
    RTL_DIR / "cnn_axi_master.v",
    RTL_DIR / "cnn_accel_axi.v",
]
REG = {k: int(v) for k, v in SPEC["registers"].items()}
STATUS = {k: int(v) for k, v in SPEC["status_bits"].items()}
CTRL = {k: int(v) for k, v in SPEC["ctrl_bits"].items()}
ERRORS = {k: int(v) for k, v in SPEC["error_codes"].items()}
DEFAULT_BASE = 0x4000_0000
MEM_BYTES = 4 << 20  # the testbench memory (MEM_WORDS x 4)

WRITE, READ, POLL, WAIT = 1, 2, 3, 4


def simulator_missing() -> str | None:
    """Why the RTL cannot be simulated here, or None."""
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            return f"{tool} (Icarus Verilog) is not installed: apt-get install iverilog"
    return None


_BUILT: dict[tuple[str, tuple[str, ...]], Path] = {}


def build(top: str, defines: tuple[str, ...] = ()) -> Path:
    """Compile a testbench with the RTL it needs, once per process and set of defines;
    returns the vvp file."""
    key = (top, defines)
    if key not in _BUILT:
        out = Path(tempfile.mkdtemp(prefix=f"{top}-")) / f"{top}.vvp"
        rtl = RTL_SOURCES[:1] if top == "tb_units" else RTL_SOURCES
        sources = [*rtl, TB_DIR / f"{top}.v"]
        flags = [*(f"-D{d}" for d in defines), "-I", str(TB_DIR), "-s", top, "-o", str(out)]
        subprocess.run(
            ["iverilog", "-g2005", "-Wall", *flags, *map(str, sources)],
            check=True,
            capture_output=True,
            text=True,
        )
        _BUILT[key] = out
    return _BUILT[key]


def _write_words(path: Path, data: bytes) -> int:
    data = data + bytes(-len(data) % 4)
    words = np.frombuffer(data, dtype="<u4")
    path.write_text("".join(f"{w:08x}\n" for w in words))
    return len(words)


def _read_words(path: Path, count: int) -> bytes:
    words = []
    for raw in path.read_text().splitlines():
        line = raw.split("//")[0].strip()
        if not line:
            continue
        if any(c in line for c in "xXzZ"):
            raise AssertionError(f"the memory holds undefined bits after the run: {line}")
        words.append(int(line, 16))
    assert len(words) == count, (len(words), count)
    return np.array(words, dtype="<u4").tobytes()


# Units -------------------------------------------------------------------------------------


@dataclass
class UnitVector:
    unit: int
    flag: int = 0
    shift: int = 0
    value: int = 0
    p1: int = 0
    p2: int = 0
    p3: int = 0
    x: int = 0
    w: int = 0

    def packed(self) -> int:
        fields = [
            (self.unit, 0, 8),
            (self.flag, 8, 8),
            (self.shift, 16, 8),
            (self.value, 24, 64),
            (self.p1, 88, 32),
            (self.p2, 120, 32),
            (self.p3, 152, 32),
            (self.x, 184, 8),
            (self.w, 192, 8),
        ]
        word = 0
        for val, lo, bits in fields:
            word |= (int(val) & ((1 << bits) - 1)) << lo
        return word


def run_units(vectors: list[UnitVector]) -> list[int]:
    """Each vector's 32-bit result, as a signed int (8-bit results sign-extended)."""
    vvp = build("tb_units")
    with tempfile.TemporaryDirectory() as tmp:
        vec, res = Path(tmp) / "vectors.hex", Path(tmp) / "results.hex"
        vec.write_text("".join(f"{v.packed():064x}\n" for v in vectors))
        _vvp(vvp, [f"+vectors={vec}", f"+results={res}", f"+count={len(vectors)}"])
        raw = [int(line, 16) for line in res.read_text().split()]
    out = []
    for v, r in zip(vectors, raw, strict=True):
        bits = 32 if v.unit in (3, 6) else 8
        out.append(r - (1 << bits) if r >> (bits - 1) else r)
    return out


def _vvp(vvp: Path, args: list[str], timeout: float = 300) -> None:
    proc = subprocess.run(
        ["vvp", "-n", str(vvp), *args], check=False, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0 or "FATAL" in proc.stdout or "ERROR" in proc.stdout:
        raise AssertionError(f"vvp failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


# The core ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxiBus:
    """Run the top cnn_accel_axi, its m_axi_gmem served by tb_axi_gmem.vh's AXI4 slave memory:
    each READY it drives offered with probability ``ready_pct`` % a cycle, BVALID and RVALID
    raised 0..``max_delay`` cycles late, drawn from ``seed``. ``error_at``: the first access to
    that word (physical byte address) is answered ``error_resp`` (2 SLVERR, 3 DECERR)."""

    seed: int = 1
    ready_pct: int = 50
    max_delay: int = 3
    error_at: int | None = None
    error_resp: int = 2

    def plusargs(self) -> list[str]:
        args = [f"+seed={self.seed}", f"+ready_pct={self.ready_pct}"]
        args += [f"+max_delay={self.max_delay}", f"+err_resp={self.error_resp}"]
        return args + ([] if self.error_at is None else [f"+err_addr={self.error_at:x}"])


AXI_COUNTERS = (
    "ar",
    "r",
    "aw",
    "w",
    "b",
    "errors",
    "valid_waits",
    "aw_first",
    "w_first",
    "together",
    "withdrawn",
)


@dataclass
class Run:
    """What a script run left: the memory (from ``base``), the log lines, bad accesses, and on
    an ``AxiBus`` its counters (AXI_COUNTERS: handshakes per channel, error responses sent,
    cycles a VALID of the master waited, how each write's AW and W were ordered, requests the
    engine withdrew with their access in flight)."""

    memory: bytearray
    reads: list[tuple[int, int]] = field(default_factory=list)
    polls: list[tuple[int, int]] = field(default_factory=list)
    bad_accesses: int = 0
    axi: dict[str, int] = field(default_factory=dict)

    def reg(self, name: str) -> int:
        """The last logged read of a register."""
        return next(v for a, v in reversed(self.reads) if a == REG[name])


def run_script(
    image: bytes,
    script: list[tuple[int, int, int]],
    *,
    base: int = DEFAULT_BASE,
    stall: bool = False,
    bus: AxiBus | None = None,
) -> Run:
    vvp = build("tb_cnn_accel", () if bus is None else ("AXI_GMEM",))
    if len(image) > MEM_BYTES:
        raise ValueError("memory image larger than the testbench memory")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        words = _write_words(t / "image.hex", image)
        (t / "script.txt").write_text("".join(f"{o:x} {a:x} {b:x}\n" for o, a, b in script))
        args = [
            f"+image={t / 'image.hex'}",
            f"+out={t / 'out.hex'}",
            f"+script={t / 'script.txt'}",
            f"+log={t / 'log.txt'}",
            f"+words={words}",
            f"+base={base:x}",
        ]
        if bus is not None:
            args += bus.plusargs()
        _vvp(vvp, [*args, *(["+stall"] if stall else [])])
        run = Run(bytearray(_read_words(t / "out.hex", words)))
        for line in (t / "log.txt").read_text().splitlines():
            kind, *rest = line.split()
            if kind == "R":
                run.reads.append((int(rest[0], 16), int(rest[1], 16)))
            elif kind == "P":
                run.polls.append((int(rest[0], 16), int(rest[1])))
            elif kind == "M":
                run.bad_accesses = int(rest[0])
            elif kind == "A":
                run.axi = dict(zip(AXI_COUNTERS, map(int, rest), strict=True))
    return run


def register_writes(
    desc: int, count: int, act: int, wgt: int, batch: int
) -> list[tuple[int, int, int]]:
    """The driver's register programming (PynqDevice.execute), then START."""
    regs = [
        ("DESC_ADDR_LO", desc & 0xFFFFFFFF),
        ("DESC_ADDR_HI", desc >> 32),
        ("DESC_COUNT", count),
        ("ACT_ADDR_LO", act & 0xFFFFFFFF),
        ("ACT_ADDR_HI", act >> 32),
        ("WGT_ADDR_LO", wgt & 0xFFFFFFFF),
        ("WGT_ADDR_HI", wgt >> 32),
        ("BATCH", batch),
        ("CTRL", CTRL["START"]),
    ]
    return [(WRITE, REG[name], value) for name, value in regs]


def dump_registers() -> list[tuple[int, int, int]]:
    return [(READ, offset, 0) for offset in range(0, 0x38, 4)]


@dataclass
class Image:
    """A memory image for one program run: descriptors, activations, weights."""

    program: Program
    batch: int
    lay: descriptors.Layout
    data: bytearray
    desc_at: int
    act_at: int
    wgt_at: int
    count: int


def memory_image(program: Program, x: np.ndarray, descs: np.ndarray | None = None) -> Image:
    """Regions as the driver allocates them (each 64-byte aligned, a gap between), the input
    written into its buffer. ``descs`` replaces the packed descriptors (error tests)."""
    batch = x.shape[0]
    lay = descriptors.layout(program, batch)
    table = descriptors.pack(program, lay) if descs is None else descs
    weights = descriptors.pack_weights(program, lay)
    desc_at = 0
    act_at = descriptors.align(desc_at + table.size + 4096)
    wgt_at = descriptors.align(act_at + lay.activation_bytes + 4096)
    data = bytearray(wgt_at + weights.size)
    data[desc_at : desc_at + table.size] = table.tobytes()
    data[wgt_at : wgt_at + weights.size] = weights.tobytes()
    src = program.input
    b = program.buffer(src)
    size = batch * b.height * b.width * b.channels
    region = np.frombuffer(
        data, dtype=np.int8, count=size, offset=act_at + lay.buffer_offsets[src.buffer]
    ).reshape(batch, b.height, b.width, b.channels)
    region.setflags(write=True)
    region[..., src.offset : src.offset + src.channels] = x
    return Image(program, batch, lay, data, desc_at, act_at, wgt_at, table.size // 64)


def read_output(image: Image, memory: bytes) -> np.ndarray:
    program, lay = image.program, image.lay
    out = program.output
    ob = program.buffer(out)
    size = image.batch * ob.height * ob.width * ob.channels
    at = image.act_at + lay.buffer_offsets[out.buffer]
    full = np.frombuffer(bytes(memory[at : at + size]), dtype=np.int8)
    full = full.reshape(image.batch, ob.height, ob.width, ob.channels)
    return np.array(full[..., out.offset : out.offset + out.channels])


def run_program(
    program: Program,
    x: np.ndarray,
    *,
    base: int = DEFAULT_BASE,
    stall: bool = False,
    bus: AxiBus | None = None,
    descs: np.ndarray | None = None,
    poll_limit: int = 200_000,
) -> tuple[np.ndarray, Run]:
    """Run ``program`` on the RTL for the int8 batch ``x``; returns the output and the run."""
    image = memory_image(program, x, descs)
    script = register_writes(
        base + image.desc_at, image.count, base + image.act_at, base + image.wgt_at, image.batch
    )
    mask = STATUS["DONE"] | STATUS["ERROR"]
    script += [(POLL, mask, poll_limit), *dump_registers()]
    run = run_script(bytes(image.data), script, base=base, stall=stall, bus=bus)
    return read_output(image, run.memory), run
