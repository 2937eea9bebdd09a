"""The overlay's instruction set: the program every device (twin, board) executes.

Numerics (bitstreams/README.md states them in full; ``spec.json`` carries the constants):
- activations int8, NHWC, one symmetric scale per tensor, zero point 0;
- weights int8, symmetric, one scale per output channel; bias int32 (scale s_in * s_w);
- accumulation in int32 (int64 in the requantiser's product);
- requantisation: y = sat8(round_shift(acc * M, S)) with M a Q31 multiplier in [2^30, 2^31),
  round_shift(v, S) = floor((v + 2^(S-1)) / 2^S) (round half up), sat8 clamps to [-128, 127],
  then ReLU (when fused) clamps below at 0.

Spec 2 adds what the accelerator needs to run a program fast, none of which changes a result:
an ADD fused into the CONV before it (``Instr.residual``: the same two formulas in the same
order), a per-instruction ``Tile`` (bands of output rows, the input buffer ring, on-chip
residency) decided by the compiler for one ``Preset``, and a ``Placement`` of the buffers in
device memory with liveness-based reuse.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from fpga_serve.core.errors import ModelLoadError

SPEC_FILE = Path(__file__).with_name("overlay_spec.json")


def load_spec() -> dict[str, Any]:
    """The machine-readable overlay spec (bitstreams/fpga_cnn/spec.json, packaged here)."""
    return dict(json.loads(SPEC_FILE.read_text()))


SPEC = load_spec()
SPEC_VERSION: str = SPEC["spec_version"]


def _spec_words(section: str) -> dict[str, int]:
    return {str(name): int(value) for name, value in SPEC[section].items()}


# The accelerator's register map (bitstreams/README.md, "Registers"): the one copy the driver,
# the simulated board, the RTL harness and the tests read.
REGISTERS = _spec_words("registers")
"""Register name -> byte offset in the accelerator's AXI4-Lite window."""
CTRL_BITS = _spec_words("ctrl_bits")
STATUS_BITS = _spec_words("status_bits")
IRQ_BITS = _spec_words("irq_bits")
ERROR_CODES = _spec_words("error_codes")
"""Error name -> the code ERROR_CODE reports."""
ERROR_NAMES = {code: name for name, code in ERROR_CODES.items()}


def version_word(spec_version: str) -> int:
    """What the VERSION register reads for spec "major.minor": major << 16 | minor (0 when the
    version is not two numbers)."""
    major, _, minor = spec_version.partition(".")
    return ((int(major) << 16) | int(minor)) if major.isdigit() and minor.isdigit() else 0


INT8_MIN, INT8_MAX = -128, 127


class Opcode(IntEnum):
    CONV = 1
    MAXPOOL = 2
    AVGPOOL = 3
    GLOBAL_AVGPOOL = 4
    ADD = 5
    SCALE_SHIFT = 6


@dataclass(frozen=True)
class Buffer:
    """An int8 NHWC activation buffer in device memory (per image: height x width x channels)."""

    id: int
    height: int
    width: int
    channels: int
    scale: float


@dataclass(frozen=True)
class TensorRef:
    """A channel slice [offset, offset + channels) of a buffer: concatenation by addressing."""

    buffer: int
    offset: int
    channels: int


@dataclass(frozen=True)
class Preset:
    """One accelerator build (spec.json "presets"): array shape, buffers, bus, clock, part."""

    name: str
    array_ci: int
    array_co: int
    acc_depth: int
    ibuf_words: int
    ibuf_banks: int
    wfifo_words: int
    out_fifo_words: int
    axi_data_bytes: int
    max_burst: int
    weight_ports: int
    outstanding: int
    perf_depth: int
    pack_shift: int
    pack_group: int
    clock_mhz: float
    ddr_gbps: float
    ddr_latency_ns: float
    res_fifo_words: int
    port_fifo_words: int
    block_bytes: int
    read_burst: int
    add_dsp: int
    board: str = ""
    part: str = ""
    family: str = ""
    part_limits: dict[str, int] = field(default_factory=dict)

    def shape(self) -> dict[str, int]:
        """What a packed program depends on: a bitstream must report exactly these."""
        return {
            "array_ci": self.array_ci,
            "array_co": self.array_co,
            "acc_depth": self.acc_depth,
            "ibuf_words": self.ibuf_words,
            "ibuf_banks": self.ibuf_banks,
        }

    def rtl_parameters(self) -> dict[str, int]:
        """The Verilog parameters of bitstreams/fpga_cnn/rtl/cnn_accel.v for this preset."""
        return {
            "ARRAY_CI": self.array_ci,
            "ARRAY_CO": self.array_co,
            "ACC_DEPTH": self.acc_depth,
            "IBUF_WORDS": self.ibuf_words,
            "IBUF_BANKS": self.ibuf_banks,
            "WFIFO_WORDS": self.wfifo_words,
            "OUT_FIFO_WORDS": self.out_fifo_words,
            "RES_FIFO_WORDS": self.res_fifo_words,
            "PORT_FIFO_WORDS": self.port_fifo_words,
            "AXI_DATA_BYTES": self.axi_data_bytes,
            "MAX_BURST": self.max_burst,
            "BURST": self.read_burst,
            "OUTSTANDING": self.outstanding,
            "WEIGHT_PORTS": self.weight_ports,
            "BLOCK_BYTES": self.block_bytes,
            "PERF_DEPTH": self.perf_depth,
            "PACK_SHIFT": self.pack_shift,
            "PACK_GROUP": self.pack_group,
            "ADD_DSP": self.add_dsp,
        }

    def describe(self) -> str:
        s = self.shape()
        return (
            f"array {s['array_ci']}x{s['array_co']}, accumulator {s['acc_depth']} pixels, "
            f"input buffer {s['ibuf_banks']} x {s['ibuf_words']} words"
        )


PRESETS: dict[str, Preset] = {
    name: Preset(name=name, **values) for name, values in SPEC["presets"].items()
}
DEFAULT_TARGET = "zcu104"


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelLoadError(
            f"unknown overlay preset {name!r} (known: {', '.join(sorted(PRESETS))})"
        ) from None


@dataclass(frozen=True)
class Tile:
    """How the accelerator runs one instruction (bitstreams/README.md, "Execution"): output
    rows in ``bands`` bands of ``band_rows``; the input in input-buffer bank ``in_bank``, a ring
    of ``ring_rows`` rows loaded from DDR (or, with ``in_ibuf``, left there whole by an earlier
    instruction); the output written to DDR (``out_ddr``) and/or whole into bank ``out_bank``
    (``out_ibuf``); ``fold``: the kernel's columns folded into the array's input lanes; a fused
    ADD's residual read whole from bank ``res_bank`` (``res_ibuf``) instead of DDR."""

    band_rows: int
    bands: int
    ring_rows: int
    in_bank: int = 0
    out_bank: int = 1
    in_ibuf: bool = False
    out_ibuf: bool = False
    out_ddr: bool = True
    fold: bool = False
    res_ibuf: bool = False
    res_bank: int = 0


@dataclass(frozen=True)
class Instr:
    """One overlay instruction. Fields unused by an opcode keep their defaults.

    CONV: inputs[0], weight[kh,kw,cin,cout] int8, bias[cout] int32, multiplier/shift per cout.
    MAXPOOL/AVGPOOL: window (kh, kw), stride, pad; AVGPOOL divides by the window size
    (padding counted) through multiplier[0]/shift[0]; MAXPOOL pads with ``pad_value``.
    GLOBAL_AVGPOOL: sum over H x W, requantised with multiplier[0]/shift[0].
    ADD: inputs[0] * multiplier[0] + inputs[1] * multiplier[1], one shift[0].
    SCALE_SHIFT: x * multiplier[c] + bias[c], one shift[0] (per-channel affine, e.g. a BN).
    """

    op: Opcode
    inputs: tuple[TensorRef, ...]
    output: TensorRef
    name: str = ""
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    """top, bottom, left, right"""
    relu: bool = False
    pad_value: int = 0
    weight: int = -1
    """Index into Program.weights of the int8 weights (CONV), else -1."""
    bias: int = -1
    """Index into Program.weights of the int32 bias (CONV, SCALE_SHIFT), else -1."""
    multiplier: int = -1
    """Index into Program.weights of the int32 multipliers."""
    shift: int = -1
    """Index into Program.weights of the int32 shifts."""
    residual: TensorRef | None = None
    """A fused ADD (CONV only): the result r of the op above (int8, after its ReLU) becomes
    sat8(round_shift(r * A[0] + residual * A[1], add_shift)), then ReLU if ``add_relu``:
    exactly an ADD instruction with inputs (this output, residual)."""
    add_multiplier: int = -1
    """Index into Program.weights of the fused ADD's two int32 multipliers (self, residual)."""
    add_shift: int = -1
    """Index into Program.weights of the fused ADD's int32 shift."""
    add_relu: bool = False
    tile: Tile | None = None
    """How the accelerator runs it (compiler/plan.py); None until planned."""


SPACES = {str(k): int(v) for k, v in SPEC["descriptor"]["spaces"].items()}
"""The device memory regions a descriptor's accesses address (bitstreams/README.md, "Memory
layout"): ACT the activation scratch, IN the network's input buffer, OUT its output buffer."""


def by_space(act: int, inp: int, out: int) -> tuple[int, int, int]:
    """One value per region (scratch, input, output), in SPACES code order."""
    values = {SPACES["ACT"]: act, SPACES["IN"]: inp, SPACES["OUT"]: out}
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class Placement:
    """Where each buffer lives in device memory, per image: in region ``spaces[b]`` (SPACES) at
    byte offset ``offsets[b]`` (64-aligned; -1 for a buffer that never reaches DDR: its
    producers only forward it on chip). Each region's bytes per image: ``image_bytes`` (the
    activation scratch), ``input_bytes`` and ``output_bytes``."""

    offsets: list[int]
    image_bytes: int
    spaces: list[int]
    input_bytes: int
    output_bytes: int

    def region_bytes(self) -> tuple[int, int, int]:
        """Bytes per image of each region, indexed by its SPACES code."""
        return by_space(self.image_bytes, self.input_bytes, self.output_bytes)


@dataclass
class Program:
    """A compiled featurizer: buffers, instructions in execution order, and their constants."""

    buffers: list[Buffer]
    instrs: list[Instr]
    input: TensorRef
    output: TensorRef
    weights: list[np.ndarray]
    spec_version: str = SPEC_VERSION
    meta: dict[str, Any] = field(default_factory=dict)
    target: str | None = None
    """The preset the tiles were planned for (None: not planned, runs on the twin only)."""
    placement: Placement | None = None

    @property
    def input_scale(self) -> float:
        return self.buffers[self.input.buffer].scale

    @property
    def output_scale(self) -> float:
        return self.buffers[self.output.buffer].scale

    def buffer(self, ref: TensorRef) -> Buffer:
        return self.buffers[ref.buffer]

    def shape(self, ref: TensorRef) -> tuple[int, int, int]:
        b = self.buffer(ref)
        return (b.height, b.width, ref.channels)

    def output_shape(self) -> tuple[int, int, int]:
        b = self.buffer(self.output)
        return (b.height, b.width, self.output.channels)

    def input_shape(self) -> tuple[int, int, int]:
        b = self.buffer(self.input)
        return (b.height, b.width, self.input.channels)

    def macs(self, instr: Instr) -> int:
        """Multiply-accumulates one instruction performs per image (a fused ADD counts as
        the ADD instruction would: one per output element)."""
        out = self.buffer(instr.output)
        pixels = out.height * out.width
        if instr.op is Opcode.CONV:
            kh, kw, cin, cout = self.weights[instr.weight].shape
            fused = pixels * cout if instr.residual is not None else 0
            return pixels * kh * kw * cin * cout + fused
        if instr.op in (Opcode.MAXPOOL, Opcode.AVGPOOL):
            return pixels * instr.output.channels * instr.kernel[0] * instr.kernel[1]
        if instr.op is Opcode.GLOBAL_AVGPOOL:
            src = self.buffer(instr.inputs[0])
            return src.height * src.width * instr.output.channels
        return pixels * instr.output.channels

    def weight_bytes(self, instr: Instr) -> int:
        return sum(
            int(self.weights[i].nbytes)
            for i in (
                instr.weight,
                instr.bias,
                instr.multiplier,
                instr.shift,
                instr.add_multiplier,
                instr.add_shift,
            )
            if i >= 0
        )

    @property
    def planned(self) -> bool:
        return (
            self.target is not None
            and self.placement is not None
            and all(i.tile is not None for i in self.instrs)
        )

    # Serialisation ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "spec_version": self.spec_version,
            "buffers": [asdict(b) for b in self.buffers],
            "instrs": [_instr_json(i) for i in self.instrs],
            "input": asdict(self.input),
            "output": asdict(self.output),
            "weights": [{"dtype": w.dtype.name, "shape": list(w.shape)} for w in self.weights],
            "meta": self.meta,
            "target": self.target,
            "placement": asdict(self.placement) if self.placement is not None else None,
        }

    def save(self, directory: Path) -> None:
        """program.json + weights.npz (plain arrays, no pickles)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "program.json").write_text(json.dumps(self.to_json(), indent=1))
        np.savez(directory / "weights.npz", **{f"w{i}": w for i, w in enumerate(self.weights)})

    @classmethod
    def load(cls, directory: Path) -> Program:
        """Read and validate a saved program; refuses another spec version."""
        try:
            data = json.loads((directory / "program.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read program.json: {exc}") from exc
        version = data.get("spec_version")
        if version != SPEC_VERSION:
            raise ModelLoadError(
                f"the FPGA stage was compiled for overlay spec {version!r}; this server runs "
                f"spec {SPEC_VERSION!r} (rebuild the model with this version's fpga-serve build)"
            )
        try:
            with np.load(directory / "weights.npz", allow_pickle=False) as npz:
                weights = [npz[f"w{i}"] for i in range(len(data["weights"]))]
            program = cls(
                buffers=[Buffer(**b) for b in data["buffers"]],
                instrs=[_instr_from_json(i) for i in data["instrs"]],
                input=TensorRef(**data["input"]),
                output=TensorRef(**data["output"]),
                weights=weights,
                spec_version=version,
                meta=dict(data.get("meta", {})),
                target=data.get("target"),
                placement=Placement(**data["placement"]) if data.get("placement") else None,
            )
        except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ModelLoadError(f"malformed FPGA program: {exc}") from exc
        for declared, w in zip(data["weights"], weights, strict=True):
            if declared["dtype"] != w.dtype.name or list(declared["shape"]) != list(w.shape):
                raise ModelLoadError("FPGA program weights do not match program.json")
        validate(program)
        return program


def _instr_json(instr: Instr) -> dict[str, Any]:
    data = asdict(instr)
    data["op"] = instr.op.name
    return data


def _instr_from_json(data: Mapping[str, Any]) -> Instr:
    data = dict(data)
    data["op"] = Opcode[data["op"]]
    data["inputs"] = tuple(TensorRef(**r) for r in data["inputs"])
    data["output"] = TensorRef(**data["output"])
    if data.get("residual") is not None:
        data["residual"] = TensorRef(**data["residual"])
    if data.get("tile") is not None:
        data["tile"] = Tile(**data["tile"])
    for key in ("kernel", "pad"):
        data[key] = tuple(data[key])
    return Instr(**data)


_ARITY = {Opcode.ADD: 2}
_WEIGHT_DTYPES = {
    "weight": "int8",
    "bias": "int32",
    "multiplier": "int32",
    "shift": "int32",
    "add_multiplier": "int32",
    "add_shift": "int32",
}


def validate(program: Program) -> None:
    """Structural checks a device relies on: references in range, shapes consistent."""

    def check_ref(ref: TensorRef, what: str) -> None:
        if not 0 <= ref.buffer < len(program.buffers):
            raise ModelLoadError(f"{what}: buffer {ref.buffer} does not exist")
        buf = program.buffers[ref.buffer]
        if ref.offset < 0 or ref.channels < 1 or ref.offset + ref.channels > buf.channels:
            raise ModelLoadError(f"{what}: channel slice out of buffer {ref.buffer}")

    if program.target is not None:
        preset(program.target)
    check_ref(program.input, "program input")
    check_ref(program.output, "program output")
    for index, instr in enumerate(program.instrs):
        what = f"instruction {index} ({instr.op.name} {instr.name})"
        if len(instr.inputs) != _ARITY.get(instr.op, 1):
            raise ModelLoadError(f"{what}: wrong number of inputs")
        for ref in (*instr.inputs, instr.output):
            check_ref(ref, what)
        if instr.residual is not None:
            check_ref(instr.residual, what)
            if instr.op is not Opcode.CONV or instr.add_multiplier < 0 or instr.add_shift < 0:
                raise ModelLoadError(f"{what}: a fused ADD needs a CONV and its two constants")
            if program.shape(instr.residual) != program.shape(instr.output):
                raise ModelLoadError(f"{what}: the fused ADD's operands differ in shape")
        for attr, dtype in _WEIGHT_DTYPES.items():
            idx = getattr(instr, attr)
            if idx >= len(program.weights) or (idx >= 0 and program.weights[idx].dtype != dtype):
                raise ModelLoadError(f"{what}: bad {attr} constant")
        if instr.op is Opcode.CONV:
            if instr.weight < 0 or program.weights[instr.weight].ndim != 4:
                raise ModelLoadError(f"{what}: needs 4-D weights")
            _, _, cin, cout = program.weights[instr.weight].shape
            if cin != instr.inputs[0].channels or cout != instr.output.channels:
                raise ModelLoadError(f"{what}: weights do not match its tensors")


def quantize_multiplier(real: float) -> tuple[int, int]:
    """A positive real factor as (M, S): real ~= M * 2^-S with M in [2^30, 2^31) and S in
    [1, 62]. Raises ValueError when the factor is not representable."""
    if not math.isfinite(real) or real <= 0:
        raise ValueError(f"requantisation factor {real} must be positive and finite")
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    m = round(mantissa * (1 << 31))
    if m == 1 << 31:
        m //= 2
        exponent += 1
    shift = 31 - exponent
    if not 1 <= shift <= 62:
        raise ValueError(f"requantisation factor {real} is out of range")
    return int(m), int(shift)


def round_shift(values: np.ndarray, shift: Any) -> np.ndarray:
    """floor((v + 2^(S-1)) / 2^S) on int64: the overlay's rounding (round half up)."""
    s = np.asarray(shift, dtype=np.int64)
    return (values + (np.int64(1) << (s - 1))) >> s


def saturate(values: np.ndarray, relu: bool) -> np.ndarray:
    return np.clip(values, 0 if relu else INT8_MIN, INT8_MAX).astype(np.int8)


def quantize_input(x: np.ndarray, scale: float) -> np.ndarray:
    """Host side: float -> int8 with round half to even (np.rint) and saturation."""
    return np.clip(
        np.rint(np.asarray(x, np.float32) / np.float32(scale)), INT8_MIN, INT8_MAX
    ).astype(np.int8)


def dequantize_output(q: np.ndarray, scale: float) -> np.ndarray:
    return q.astype(np.float32) * np.float32(scale)
