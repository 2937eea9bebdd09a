"""The one packer of overlay programs into device memory (spec 2, bitstreams/README.md):
128-byte descriptors, the weight stream in the array's order, and the activation layout.

``pack`` turns a planned Program (compiler/plan.py) into a ``DeviceImage``; ``check`` holds the
rules every descriptor must satisfy (the RTL, the simulated board and the twin's packed
executor all refuse what it refuses, with the same error code); ``decode`` reads one descriptor
and its weight segment back into an operation the twin's ops can run. The PYNQ driver uploads a
DeviceImage; the simulated board, the RTL testbenches and hw/twin/packed.py run its bytes.
It is core's, not hw's: the compiler packs with it to check a program (a program the
accelerator would refuse is a compile error), and every device runs what it packs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from fpga_serve.core.errors import FpgaServeError
from fpga_serve.core.isa import (
    CTRL_BITS,
    REGISTERS,
    SPACES,
    SPEC,
    Instr,
    Opcode,
    Preset,
    Program,
    TensorRef,
    by_space,
    preset,
)

_FIELDS: list[tuple[str, str]] = [(str(n), str(t)) for n, t in SPEC["descriptor"]["fields"]]
_NUMPY = {"u8": "<u1", "i8": "<i1", "u16": "<u2", "u32": "<u4", "i32": "<i4"}
DESCRIPTOR = np.dtype([(name, _NUMPY[kind]) for name, kind in _FIELDS])
DESCRIPTOR_BYTES = int(SPEC["descriptor"]["bytes"])
FLAGS = {k: int(v) for k, v in SPEC["descriptor"]["flags"].items()}
ALIGN = int(SPEC["descriptor"]["alignment"])
CONST_WORDS = int(SPEC["weight_stream"]["const_words"])
IDENTITY_M = int(SPEC["weight_stream"]["identity_requant"]["multiplier"])
IDENTITY_S = int(SPEC["weight_stream"]["identity_requant"]["shift"])
SHIFT_MIN, SHIFT_MAX = int(SPEC["numerics"]["shift"]["min"]), int(SPEC["numerics"]["shift"]["max"])
WEIGHT_MIN = int(SPEC["numerics"]["weight"]["min"])
RELU_FLAG = FLAGS["RELU"]
SPACE_FIELDS = {k: int(v) for k, v in SPEC["descriptor"]["space_fields"].items()}
"""Bit position, in the descriptor's ``spaces`` byte, of each access's 2-bit region code."""
SPACE_NAMES = {code: name for name, code in SPACES.items()}

if DESCRIPTOR.itemsize != DESCRIPTOR_BYTES:  # pragma: no cover - a broken spec file
    raise ValueError(f"descriptor fields take {DESCRIPTOR.itemsize} bytes, not {DESCRIPTOR_BYTES}")


class PackError(FpgaServeError):
    """The program cannot be packed for this preset (a rule of ``check`` or a weight range)."""


class ConstantError(PackError):
    """A weight segment the datapath refuses (ERROR_CODE BAD_CONSTANT on the accelerator)."""


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# Geometry: what the hardware derives from a descriptor -------------------------------------


@dataclass(frozen=True)
class Geometry:
    """A descriptor as the accelerator runs it. ``mode``: "mac" (CONV), "max" (MAXPOOL) or
    "sum" (the other opcodes, per channel). The input buffer holds the input as ``heff`` rows
    of ``weff`` pixels of ``ceff`` channels, ``pw`` words of ``array_co`` bytes per pixel
    (FOLD: pixel x of a row holds input columns x*stride_w - pad_left .. + kernel_w - 1, all
    channels, so the kernel becomes kernel_h x 1 with stride (stride_h, 1), no column pads)."""

    mode: str
    heff: int
    weff: int
    ceff: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pl: int
    pw: int
    row_words: int
    ci_blocks: int
    passes: int
    coblocks: int
    segment_bytes: int


def derive(row: np.void, f: Preset) -> Geometry:
    op, flags = int(row["opcode"]), int(row["flags"])
    fold = bool(flags & FLAGS["FOLD"])
    kh, kw = int(row["kernel_h"]), int(row["kernel_w"])
    sh, sw = int(row["stride_h"]), int(row["stride_w"])
    in_c, out_c = int(row["in_c"]), int(row["out_c"])
    if fold:
        heff, weff, ceff = int(row["in_h"]), int(row["out_w"]), kw * in_c
        kw_eff, sw_eff, pl = 1, 1, 0
    else:
        heff, weff, ceff = int(row["in_h"]), int(row["in_w"]), in_c
        kw_eff, sw_eff, pl = kw, sw, int(row["pad_left"])
    pw = ceil_div(ceff, f.array_co)
    mode = {Opcode.CONV: "mac", Opcode.MAXPOOL: "max"}.get(Opcode(op), "sum")
    ci_blocks = ceil_div(ceff, f.array_ci)
    passes = kh * kw_eff * (ci_blocks if mode == "mac" else 1)
    coblocks = ceil_div(out_c, f.array_co)
    per_block = CONST_WORDS + (passes * f.array_ci if mode == "mac" else 0)
    return Geometry(
        mode=mode,
        heff=heff,
        weff=weff,
        ceff=ceff,
        kh=kh,
        kw=kw_eff,
        sh=sh,
        sw=sw_eff,
        pt=int(row["pad_top"]),
        pl=pl,
        pw=pw,
        row_words=weff * pw,
        ci_blocks=ci_blocks,
        passes=passes,
        coblocks=coblocks,
        segment_bytes=coblocks * per_block * f.array_co,
    )


def _out_size(size: int, k: int, s: int, before: int, after: int) -> int:
    return (size + before + after - k) // s + 1 if size + before + after >= k else 0


def space(row: np.void, access: str) -> int:
    """The region code (SPACES) of one access of a descriptor: "in", "res" or "out"."""
    return (int(row["spaces"]) >> SPACE_FIELDS[access]) & 3


def check(
    row: np.void, f: Preset, region_bytes: tuple[int, int, int], wgt_bytes: int
) -> tuple[str, str] | None:
    """The first rule ``row`` breaks, as (error name, reason), or None. Rules are checked in
    this order (bitstreams/README.md, "Errors"): opcode, descriptor, addresses.
    ``region_bytes``: each region's bytes per image (its stride), by SPACES code."""
    op = int(row["opcode"])
    if op not in {int(o) for o in Opcode}:
        return "BAD_OPCODE", f"opcode {op}"
    bad = _descriptor_rule(row, f)
    if bad:
        return "BAD_DESCRIPTOR", bad
    bad = _address_rule(row, region_bytes, wgt_bytes)
    if bad:
        return "BAD_ADDRESS", bad
    return None


def _descriptor_rule(row: np.void, f: Preset) -> str | None:
    op, flags = Opcode(int(row["opcode"])), int(row["flags"])
    has = {name: bool(flags & bit) for name, bit in FLAGS.items()}
    if flags & ~sum(FLAGS.values()):
        return f"unknown flags 0x{flags:02x}"
    spaces = int(row["spaces"])
    known = sum(3 << at for at in SPACE_FIELDS.values())
    if spaces & ~known or any(space(row, a) not in SPACE_NAMES for a in SPACE_FIELDS):
        return f"unknown region codes 0x{spaces:02x}"
    kh, kw, sh, sw = (int(row[k]) for k in ("kernel_h", "kernel_w", "stride_h", "stride_w"))
    pt, pb, pl, pr = (int(row[k]) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
    in_h, in_w, in_c = int(row["in_h"]), int(row["in_w"]), int(row["in_c"])
    out_h, out_w, out_c = int(row["out_h"]), int(row["out_w"]), int(row["out_c"])
    if min(kh, kw, sh, sw, in_h, in_w, in_c, out_h, out_w, out_c) < 1:
        return "a zero size, kernel or stride"
    if sh != sw:
        return "stride_h and stride_w differ"
    if int(row["in_ch_off"]) + in_c > int(row["in_buf_c"]):
        return "input channel slice outside its buffer"
    if int(row["out_ch_off"]) + out_c > int(row["out_buf_c"]):
        return "output channel slice outside its buffer"
    if (out_h, out_w) != (_out_size(in_h, kh, sh, pt, pb), _out_size(in_w, kw, sw, pl, pr)):
        return "output size is not what input, kernel, stride and padding give"
    if op is Opcode.GLOBAL_AVGPOOL and ((kh, kw) != (in_h, in_w) or pt + pb + pl + pr):
        return "GLOBAL_AVGPOOL's window must be its whole input, unpadded"
    if op in (Opcode.ADD, Opcode.SCALE_SHIFT) and (kh, kw, sh, sw, pt + pb + pl + pr) != (
        1,
        1,
        1,
        1,
        0,
    ):
        return f"{op.name} is 1x1, stride 1, unpadded"
    if op is not Opcode.CONV and out_c != in_c:
        return f"{op.name} keeps its channel count"
    if (op is Opcode.ADD) != has["ADD"] and not (op is Opcode.CONV and has["ADD"]):
        return "the ADD flag goes with ADD (always) or CONV (a fused ADD)"
    if has["ADD_RELU"] and not has["ADD"]:
        return "ADD_RELU without ADD"
    if has["ADD"]:
        if not SHIFT_MIN <= int(row["add_shift"]) <= SHIFT_MAX:
            return "add_shift outside 1..62"
        if int(row["res_ch_off"]) + out_c > int(row["res_buf_c"]):
            return "residual channel slice outside its buffer"
    if has["FOLD"] and (
        op is not Opcode.CONV
        or kw * in_c > f.array_ci
        or in_c != int(row["in_buf_c"])
        or has["IN_IBUF"]
    ):
        return "FOLD needs a CONV with kernel_w x in_c <= array_ci, on a whole buffer from DDR"
    if not (has["OUT_DDR"] or has["OUT_IBUF"]):
        return "the output goes nowhere (neither OUT_DDR nor OUT_IBUF)"
    in_bank, out_bank = int(row["in_bank"]), int(row["out_bank"])
    if in_bank >= f.ibuf_banks or out_bank >= f.ibuf_banks:
        return "input buffer bank out of range"
    if has["OUT_IBUF"] and out_bank == in_bank:
        return "the output cannot be forwarded into the input's bank"
    res_bank = int(row["res_bank"])
    if has["RES_IBUF"]:
        if not has["ADD"]:
            return "RES_IBUF without ADD"
        if res_bank >= f.ibuf_banks:
            return "residual bank out of range"
        if res_bank == in_bank or (has["OUT_IBUF"] and res_bank == out_bank):
            return "the residual's bank is the input's or the output's"
    g = derive(row, f)
    band_rows, bands, ring = int(row["band_rows"]), int(row["bands"]), int(row["ring_rows"])
    if band_rows < 1 or band_rows * out_w > f.acc_depth:
        return f"a band of {band_rows} x {out_w} pixels does not fit the accumulator"
    if bands != ceil_div(out_h, band_rows):
        return "bands is not ceil(out_h / band_rows)"
    if not 1 <= ring <= g.heff or ring * g.row_words > f.ibuf_words:
        return f"a ring of {ring} rows of {g.row_words} words does not fit the input buffer"
    if min(g.heff, (band_rows - 1) * g.sh + g.kh) > ring:
        return "a band's input rows do not fit the ring"
    if g.sh > ring and out_h > 1:
        return "stride_h exceeds ring_rows"
    if has["IN_IBUF"] and ring != g.heff:
        return "an input resident in the input buffer is whole (ring_rows = its height)"
    if (has["OUT_IBUF"] or has["RES_IBUF"]) and out_h * out_w * ceil_div(
        out_c, f.array_co
    ) > f.ibuf_words:
        return "the forwarded output (or the residual) does not fit a bank"
    if int(row["wgt_bytes"]) != g.segment_bytes:
        return f"wgt_bytes {int(row['wgt_bytes'])} is not the {g.segment_bytes} this op streams"
    return None


def _extent(offset: int, h: int, w: int, buf_c: int, ch_off: int, c: int) -> int:
    return offset + (h * w - 1) * buf_c + ch_off + c


def _address_rule(row: np.void, region_bytes: tuple[int, int, int], wgt_bytes: int) -> str | None:
    flags = int(row["flags"])
    woff, wlen = int(row["wgt_offset"]), int(row["wgt_bytes"])
    if woff % ALIGN:
        return "weight segment not 64-byte aligned"
    if woff + wlen > wgt_bytes:
        return "weight segment outside the weight region"
    out_h, out_w, out_c = int(row["out_h"]), int(row["out_w"]), int(row["out_c"])
    tensors = []
    if not flags & FLAGS["IN_IBUF"]:
        tensors.append(("input", "in", int(row["in_h"]), int(row["in_w"]), int(row["in_c"])))
    if flags & FLAGS["OUT_DDR"]:
        tensors.append(("output", "out", out_h, out_w, out_c))
    if flags & FLAGS["ADD"] and not flags & FLAGS["RES_IBUF"]:
        tensors.append(("residual", "res", out_h, out_w, out_c))
    for what, a, h, w, c in tensors:
        extent = _extent(int(row[f"{a}_offset"]), h, w, int(row[f"{a}_buf_c"]),
                         int(row[f"{a}_ch_off"]), c)  # fmt: skip
        if extent > region_bytes[space(row, a)]:
            return f"{what} outside the image's {SPACE_NAMES[space(row, a)]} region"
    return None


# Packing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceImage:
    """A program as the accelerator takes it: descriptors, weight region, and the per-image
    sizes of the three memory regions (image n's part of a region starts at n times its
    size): the activation scratch ``image_bytes``, the input ``input_bytes`` and the output
    ``output_bytes``; the program's input and output tensors are in regions ``input_space``
    and ``output_space`` (SPACES codes)."""

    preset: Preset
    descriptors: np.ndarray
    """uint8, count x 128"""
    weights: np.ndarray
    """uint8, the weight region (64-byte aligned segments in execution order)"""
    image_bytes: int
    input_at: tuple[int, int, int]
    """(byte offset, buffer channels, channel offset) of the program input"""
    input_shape: tuple[int, int, int]
    output_at: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    input_bytes: int
    output_bytes: int
    input_space: int
    output_space: int

    @property
    def region_bytes(self) -> tuple[int, int, int]:
        """Bytes per image of each region, indexed by SPACES code (the strides of a run)."""
        return by_space(self.image_bytes, self.input_bytes, self.output_bytes)

    @property
    def count(self) -> int:
        return len(self.descriptors) // DESCRIPTOR_BYTES

    def table(self) -> np.ndarray:
        return self.descriptors.view(DESCRIPTOR)

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.descriptors, self.weights):
            h.update(np.ascontiguousarray(part).tobytes())
        h.update(f"{self.region_bytes} {self.preset.name}".encode())
        return h.hexdigest()


def _space(program: Program, ref: TensorRef) -> int:
    assert program.placement is not None
    return program.placement.spaces[ref.buffer]


def _at(program: Program, ref: TensorRef) -> tuple[int, int, int]:
    assert program.placement is not None
    offset = program.placement.offsets[ref.buffer]
    if offset < 0:
        raise PackError(f"buffer {ref.buffer} has no place in DDR but is read or written there")
    return offset, program.buffer(ref).channels, ref.offset


def _op_constants(program: Program, instr: Instr, channels: int) -> tuple[np.ndarray, ...]:
    """(bias, multiplier, addend, shift) per output channel, int64 arrays."""
    w = program.weights

    def per_channel(index: int) -> np.ndarray:
        return w[index].astype(np.int64).reshape(-1)

    def scalar(index: int) -> np.ndarray:
        return np.full(channels, int(w[index].reshape(-1)[0]), np.int64)

    zero = np.zeros(channels, np.int64)
    identity = (np.full(channels, IDENTITY_M, np.int64), np.full(channels, IDENTITY_S, np.int64))
    op = instr.op
    if op is Opcode.CONV:
        return (
            per_channel(instr.bias),
            per_channel(instr.multiplier),
            zero,
            per_channel(instr.shift),
        )
    if op in (Opcode.MAXPOOL, Opcode.ADD):
        return zero, identity[0], zero, identity[1]
    if op in (Opcode.AVGPOOL, Opcode.GLOBAL_AVGPOOL):
        return zero, scalar(instr.multiplier), zero, scalar(instr.shift)
    return zero, per_channel(instr.multiplier), per_channel(instr.bias), scalar(instr.shift)


def _pass_weights(weight: np.ndarray, g: Geometry, f: Preset, fold: bool) -> np.ndarray:
    """Weights [kh, kw, cin, cout] as the array takes them: [passes, array_ci, cout_padded]
    (pass order: kernel row, kernel column, input-channel block; FOLD: kernel row, with lane
    kx * cin + c)."""
    kh, kw, cin, cout = weight.shape
    cout_p = g.coblocks * f.array_co
    if fold:
        lanes = np.zeros((kh, f.array_ci, cout_p), np.int8)
        lanes[:, : kw * cin, :cout] = weight.reshape(kh, kw * cin, cout)
        return lanes
    cin_p = g.ci_blocks * f.array_ci
    padded = np.zeros((kh, kw, cin_p, cout_p), np.int8)
    padded[:, :, :cin, :cout] = weight
    return padded.reshape(kh * kw * g.ci_blocks, f.array_ci, cout_p)


def _const_block(consts: tuple[np.ndarray, ...], k: int, co: int) -> np.ndarray:
    def lanes(values: np.ndarray, fill: int) -> np.ndarray:
        out = np.full(co, fill, np.int64)
        part = values[k * co : (k + 1) * co]
        out[: part.size] = part
        return out

    bias, mult, addend, shift = consts
    parts = [
        lanes(bias, 0).astype("<i4").view(np.uint8),
        lanes(mult, IDENTITY_M).astype("<i4").view(np.uint8),
        lanes(addend, 0).astype("<i4").view(np.uint8),
        lanes(shift, IDENTITY_S).astype(np.uint8),
    ]
    return np.concatenate(parts)


def segment(program: Program, instr: Instr, g: Geometry, f: Preset, fold: bool) -> np.ndarray:
    """One band's weight stream for ``instr``: per output-channel block, a constant block
    (bias, multiplier, addend, shift for array_co channels: 13 words), then (CONV) each pass's
    array_ci words of array_co weights."""
    consts = _op_constants(program, instr, g.coblocks * f.array_co)
    passes = None
    if g.mode == "mac":
        weight = program.weights[instr.weight]
        if (weight == WEIGHT_MIN - 1).any():
            raise PackError(
                f"{instr.name or instr.op.name}: a weight of -128; the array packs two weights "
                "per DSP and needs [-127, 127] (the quantiser guarantees it)"
            )
        passes = _pass_weights(weight, g, f, fold)
    co = f.array_co
    chunks = []
    for k in range(g.coblocks):
        chunks.append(_const_block(consts, k, co))
        if passes is not None:
            chunks.append(np.ascontiguousarray(passes[:, :, k * co : (k + 1) * co]).view(np.uint8))
    data = np.concatenate([c.reshape(-1) for c in chunks])
    assert data.size == g.segment_bytes, (data.size, g.segment_bytes)
    return data


def _descriptor(program: Program, instr: Instr, f: Preset, woff: int) -> np.void:
    tile = instr.tile
    if tile is None:
        raise PackError(f"{instr.name or instr.op.name}: not planned for a preset")
    row = np.zeros(1, DESCRIPTOR)[0]
    row["opcode"] = int(instr.op)
    flags = FLAGS["RELU"] * instr.relu
    residual = instr.residual if instr.op is Opcode.CONV else None
    if instr.op is Opcode.ADD:
        residual = instr.inputs[1]
    if residual is not None:
        flags |= FLAGS["ADD"] | FLAGS["ADD_RELU"] * (
            instr.add_relu or (instr.op is Opcode.ADD and instr.relu)
        )
    if instr.op is Opcode.ADD:
        flags &= ~FLAGS["RELU"]  # an ADD's ReLU is its add's
    flags |= FLAGS["IN_IBUF"] * tile.in_ibuf | FLAGS["OUT_DDR"] * tile.out_ddr
    flags |= FLAGS["OUT_IBUF"] * tile.out_ibuf | FLAGS["FOLD"] * tile.fold
    row["flags"] = flags
    row["in_bank"], row["out_bank"] = tile.in_bank, tile.out_bank
    src = instr.inputs[0]
    in_h, in_w, in_c = program.shape(src)
    if instr.op is Opcode.GLOBAL_AVGPOOL:
        row["kernel_h"], row["kernel_w"] = in_h, in_w
        row["stride_h"] = row["stride_w"] = 1
    else:
        row["kernel_h"], row["kernel_w"] = instr.kernel
        row["stride_h"] = row["stride_w"] = instr.stride
        row["pad_top"], row["pad_bottom"], row["pad_left"], row["pad_right"] = instr.pad
    if instr.op is Opcode.CONV:
        kh, kw = program.weights[instr.weight].shape[:2]
        row["kernel_h"], row["kernel_w"] = kh, kw
    row["pad_value"] = instr.pad_value
    row["in_h"], row["in_w"], row["in_c"] = in_h, in_w, in_c
    if not tile.in_ibuf:
        row["in_offset"], row["in_buf_c"], row["in_ch_off"] = _at(program, src)
    else:
        row["in_buf_c"], row["in_ch_off"] = program.buffer(src).channels, src.offset
    out_h, out_w, out_c = program.shape(instr.output)
    row["out_h"], row["out_w"], row["out_c"] = out_h, out_w, out_c
    if tile.out_ddr:
        row["out_offset"], row["out_buf_c"], row["out_ch_off"] = _at(program, instr.output)
    else:
        row["out_buf_c"], row["out_ch_off"] = (
            program.buffer(instr.output).channels,
            instr.output.offset,
        )
    if residual is not None and tile.res_ibuf:
        row["res_buf_c"], row["res_ch_off"] = program.buffer(residual).channels, residual.offset
        row["res_bank"] = tile.res_bank
        row["flags"] = int(row["flags"]) | FLAGS["RES_IBUF"]
    elif residual is not None:
        row["res_offset"], row["res_buf_c"], row["res_ch_off"] = _at(program, residual)
    if residual is not None:
        m_index = instr.add_multiplier if instr.op is Opcode.CONV else instr.multiplier
        s_index = instr.add_shift if instr.op is Opcode.CONV else instr.shift
        m = program.weights[m_index].reshape(-1)
        row["add_m0"], row["add_m1"] = int(m[0]), int(m[1])
        row["add_shift"] = int(program.weights[s_index].reshape(-1)[0])
    row["band_rows"], row["bands"], row["ring_rows"] = tile.band_rows, tile.bands, tile.ring_rows
    ddr = {
        "in": src if not tile.in_ibuf else None,
        "out": instr.output if tile.out_ddr else None,
        "res": residual if residual is not None and not tile.res_ibuf else None,
    }
    row["spaces"] = sum(
        _space(program, ref) << SPACE_FIELDS[a] for a, ref in ddr.items() if ref is not None
    )
    row["wgt_offset"] = woff
    row["wgt_bytes"] = derive(row, f).segment_bytes
    return row


def pack(program: Program, f: Preset | None = None) -> DeviceImage:
    """The device image of a planned program (compiler.plan). Raises PackError for a rule of
    ``check`` the plan breaks or a weight the datapath cannot take."""
    if not program.planned or program.placement is None:
        raise PackError("the program is not planned for a preset (compiler.plan.plan)")
    f = f or preset(str(program.target))
    if f.name != program.target:
        raise PackError(f"the program is planned for {program.target}, not {f.name}")
    rows = np.zeros(len(program.instrs), DESCRIPTOR)
    segments: list[np.ndarray] = []
    woff = 0
    for index, instr in enumerate(program.instrs):
        row = _descriptor(program, instr, f, woff)
        g = derive(row, f)
        data = segment(program, instr, g, f, bool(int(row["flags"]) & FLAGS["FOLD"]))
        try:
            decode(row, data, f)  # every constant in the form the datapath takes
        except ConstantError as exc:
            raise PackError(f"instruction {index} ({instr.name or instr.op.name}): {exc}") from exc
        segments.append(np.pad(data, (0, align(data.size) - data.size)))
        woff += align(data.size)
        rows[index] = row
    weights = np.concatenate(segments) if segments else np.zeros(0, np.uint8)
    if weights.size == 0:
        weights = np.zeros(ALIGN, np.uint8)
    placement = program.placement
    for index, row in enumerate(rows):
        bad = check(row, f, placement.region_bytes(), weights.size)
        if bad:
            name = program.instrs[index].name or program.instrs[index].op.name
            raise PackError(f"instruction {index} ({name}): {bad[0]}: {bad[1]}")
    return DeviceImage(
        preset=f,
        descriptors=rows.view(np.uint8).reshape(-1),
        weights=weights,
        image_bytes=placement.image_bytes,
        input_at=_at(program, program.input),
        input_shape=program.input_shape(),
        output_at=_at(program, program.output),
        output_shape=program.output_shape(),
        input_bytes=placement.input_bytes,
        output_bytes=placement.output_bytes,
        input_space=_space(program, program.input),
        output_space=_space(program, program.output),
    )


def traffic(row: np.void) -> dict[str, int]:
    """DDR bytes one descriptor moves for one image: its weight segment once per band, the
    input rows a band reads (unless resident), the residual (unless resident), the output."""
    flags = int(row["flags"])
    out = int(row["out_h"]) * int(row["out_w"]) * int(row["out_c"])
    kh, sh, pt = int(row["kernel_h"]), int(row["stride_h"]), int(row["pad_top"])
    rows = max(0, min(int(row["in_h"]), (int(row["out_h"]) - 1) * sh - pt + kh))
    return {
        "weights": int(row["wgt_bytes"]) * int(row["bands"]),
        "input": 0 if flags & FLAGS["IN_IBUF"] else rows * int(row["in_w"]) * int(row["in_c"]),
        "residual": out if flags & FLAGS["ADD"] and not flags & FLAGS["RES_IBUF"] else 0,
        "output": out if flags & FLAGS["OUT_DDR"] else 0,
    }


# The host's side of a run --------------------------------------------------------------------


REGION_REGISTERS = {
    SPACES["ACT"]: ("ACT_ADDR", "ACT_STRIDE"),
    SPACES["IN"]: ("IN_ADDR", "IN_STRIDE"),
    SPACES["OUT"]: ("OUT_ADDR", "OUT_STRIDE"),
}
"""Each region's address register pair (``_LO``/``_HI``) and stride register, by SPACES code."""


def run_registers(
    image: DeviceImage,
    descs: int,
    regions: tuple[int, int, int],
    weights: int,
    batch: int,
) -> list[tuple[int, int]]:
    """The register writes that start a run (offset, value), in order: what the PYNQ driver
    writes and what the RTL testbenches play. ``regions``: the device addresses of the
    activation scratch, the input and the output buffers (by SPACES code), image 0's."""

    def split(name: str, address: int) -> list[tuple[int, int]]:
        return [
            (REGISTERS[f"{name}_LO"], address & 0xFFFFFFFF),
            (REGISTERS[f"{name}_HI"], address >> 32),
        ]

    where = []
    for code, (addr, stride) in sorted(REGION_REGISTERS.items()):
        where += [*split(addr, regions[code]), (REGISTERS[stride], image.region_bytes[code])]
    return [
        *split("DESC_ADDR", descs),
        (REGISTERS["DESC_COUNT"], image.count),
        *where,
        *split("WGT_ADDR", weights),
        (REGISTERS["WGT_BYTES"], int(image.weights.size)),
        (REGISTERS["BATCH"], batch),
        (REGISTERS["IRQ_STATUS"], 0x3),
        (REGISTERS["IRQ_ENABLE"], 0x3),
        (REGISTERS["CTRL"], CTRL_BITS["START"]),
    ]


def features(preset_: Preset) -> dict[str, int]:
    """The FEATURES registers a bitstream of this preset reports (spec.json "features")."""
    values = {
        "array_ci": preset_.array_ci,
        "array_co": preset_.array_co,
        "axi_data_bytes": preset_.axi_data_bytes,
        "weight_ports": preset_.weight_ports,
        "ibuf_banks": preset_.ibuf_banks,
        "acc_depth": preset_.acc_depth,
        "ibuf_words": preset_.ibuf_words,
        "wfifo_words": preset_.wfifo_words,
        "perf_depth": preset_.perf_depth,
        "max_burst": preset_.max_burst,
    }
    words = {}
    for reg, parts in SPEC["features"].items():
        words[reg] = sum(values[name] << int(at) for name, at, _ in parts)
    return words


def read_features(words: dict[str, int]) -> dict[str, int]:
    """FEATURES register values -> the named fields."""
    out = {}
    for reg, parts in SPEC["features"].items():
        for name, at, width in parts:
            out[name] = (words[reg] >> int(at)) & ((1 << int(width)) - 1)
    return out


# Decoding (the twin's packed executor and the simulated board) -----------------------------


@dataclass(frozen=True)
class Decoded:
    """One descriptor and its weight segment, read back into what the twin's ops take."""

    op: Opcode
    geometry: Geometry
    weight: np.ndarray | None
    """int8 [kh, kw, in_c, out_c] (CONV)"""
    bias: np.ndarray
    multiplier: np.ndarray
    addend: np.ndarray
    shift: np.ndarray
    """int32 per output channel"""


def decode(row: np.void, data: np.ndarray, f: Preset) -> Decoded:
    """Read a (checked) descriptor's one-band weight segment back. Raises PackError for a
    constant the datapath refuses (ERROR_CODE BAD_CONSTANT on the accelerator)."""
    g = derive(row, f)
    op = Opcode(int(row["opcode"]))
    co, ci = f.array_co, f.array_ci
    per_block = (CONST_WORDS + (g.passes * ci if g.mode == "mac" else 0)) * co
    blocks = np.asarray(data, np.uint8)[: g.segment_bytes].reshape(g.coblocks, per_block)
    consts = blocks[:, : CONST_WORDS * co]

    def lanes32(i: int) -> np.ndarray:
        part = np.ascontiguousarray(consts[:, i * 4 * co : (i + 1) * 4 * co])
        return part.view("<i4").reshape(-1)

    shift = consts[:, 12 * co : 13 * co].reshape(-1).astype(np.int32)
    bias, mult, addend = lanes32(0), lanes32(1), lanes32(2)
    bad = constant_rule(op, g.mode, bias, mult, addend, shift, co)
    if bad:
        raise ConstantError(bad)
    weight = None
    out_c = int(row["out_c"])
    if g.mode == "mac":
        raw = np.ascontiguousarray(blocks[:, CONST_WORDS * co :]).view(np.int8)
        passes = raw.reshape(g.coblocks, g.passes, ci, co).transpose(1, 2, 0, 3)
        passes = passes.reshape(g.passes, ci, g.coblocks * co)
        if (passes == WEIGHT_MIN - 1).any():
            raise ConstantError("a weight of -128 in the weight stream")
        in_c, kh, kw = int(row["in_c"]), int(row["kernel_h"]), int(row["kernel_w"])
        if int(row["flags"]) & FLAGS["FOLD"]:
            weight = passes[:, : kw * in_c, :out_c].reshape(kh, kw, in_c, out_c)
        else:
            full = passes.reshape(kh, kw, g.ci_blocks * ci, g.coblocks * co)
            weight = full[:, :, :in_c, :out_c]
        weight = np.ascontiguousarray(weight)
    return Decoded(
        op=op,
        geometry=g,
        weight=weight,
        bias=bias[:out_c].copy(),
        multiplier=mult[:out_c].copy(),
        addend=addend[:out_c].copy(),
        shift=shift[:out_c].copy(),
    )


def constant_rule(
    op: Opcode,
    mode: str,
    bias: np.ndarray,
    mult: np.ndarray,
    addend: np.ndarray,
    shift: np.ndarray,
    lanes: int,
) -> str | None:
    """What is wrong with the constant blocks of one segment (every lane, padding lanes
    included; ``lanes`` per block), or None. Each opcode has one canonical form
    (bitstreams/README.md, "Weight
    stream"); the accelerator refuses any other with BAD_CONSTANT."""
    if ((shift < SHIFT_MIN) | (shift > SHIFT_MAX)).any():
        return "a shift outside 1..62"
    if addend.any() and op is not Opcode.SCALE_SHIFT:
        return f"a nonzero addend for {op.name}"
    if mode != "mac" and bias.any():
        return f"a nonzero bias for {op.name}"
    if op in (Opcode.MAXPOOL, Opcode.ADD) and (
        (mult != IDENTITY_M).any() or (shift != IDENTITY_S).any()
    ):
        return f"{op.name} requantises with the identity (M = 2^30, S = 30)"
    if op in (Opcode.AVGPOOL, Opcode.GLOBAL_AVGPOOL, Opcode.SCALE_SHIFT):
        blocks_s, blocks_m = shift.reshape(-1, lanes), mult.reshape(-1, lanes)
        if (blocks_s != blocks_s[:, :1]).any() or (
            op is not Opcode.SCALE_SHIFT and (blocks_m != blocks_m[:, :1]).any()
        ):
            return f"{op.name} has one shift{'' if op is Opcode.SCALE_SHIFT else ' and multiplier'}"
    return None


def unpack(raw: bytes | np.ndarray, count: int) -> np.ndarray:
    data = np.frombuffer(bytes(raw), dtype=np.uint8)[: count * DESCRIPTOR_BYTES]
    return data.view(DESCRIPTOR)


__all__ = [
    "DESCRIPTOR",
    "Decoded",
    "DeviceImage",
    "Geometry",
    "PackError",
    "align",
    "check",
    "decode",
    "derive",
    "pack",
    "segment",
    "unpack",
]
