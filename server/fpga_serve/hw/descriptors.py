"""Packing overlay instructions into the 64-byte descriptors of the register-level interface
(bitstreams/README.md), and reading them back. Used by the PYNQ driver and by the simulated
accelerator, so the two can only agree through the bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpga_serve.core.isa import SPEC, Program

_FIELDS: list[tuple[str, str]] = [(str(n), str(t)) for n, t in SPEC["descriptor"]["fields"]]
_NUMPY = {"u8": "<u1", "i8": "<i1", "u16": "<u2", "u32": "<u4"}
DESCRIPTOR = np.dtype([(name, _NUMPY[kind]) for name, kind in _FIELDS])
DESCRIPTOR_BYTES = int(SPEC["descriptor"]["bytes"])
RELU_FLAG = int(SPEC["descriptor"]["flags"]["RELU"])
ALIGN = 64

if DESCRIPTOR.itemsize != DESCRIPTOR_BYTES:  # pragma: no cover - a broken spec file
    raise ValueError(f"descriptor fields take {DESCRIPTOR.itemsize} bytes, not {DESCRIPTOR_BYTES}")


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def hwc(height: int, width: int, channels: int) -> int:
    return (height << 22) | (width << 12) | channels


def unhwc(word: int) -> tuple[int, int, int]:
    return (word >> 22) & 0x3FF, (word >> 12) & 0x3FF, word & 0xFFF


@dataclass(frozen=True)
class Layout:
    """Byte offsets of every buffer (for ``batch`` images) and of every weight array."""

    batch: int
    buffer_offsets: list[int]
    activation_bytes: int
    weight_offsets: list[int]
    weight_bytes: int


def layout(program: Program, batch: int) -> Layout:
    offsets, at = [], 0
    for b in program.buffers:
        offsets.append(at)
        at += align(batch * b.height * b.width * b.channels)
    w_offsets, w_at = [], 0
    for w in program.weights:
        w_offsets.append(w_at)
        w_at += align(w.nbytes)
    return Layout(batch, offsets, at, w_offsets, w_at)


def pack_weights(program: Program, lay: Layout) -> np.ndarray:
    region = np.zeros(max(lay.weight_bytes, ALIGN), dtype=np.uint8)
    for w, off in zip(program.weights, lay.weight_offsets, strict=True):
        raw = np.ascontiguousarray(w).view(np.uint8).reshape(-1)
        region[off : off + raw.size] = raw
    return region


def pack(program: Program, lay: Layout) -> np.ndarray:
    """The descriptor region for ``program`` with activations laid out by ``lay``."""
    table = np.zeros(len(program.instrs), dtype=DESCRIPTOR)
    for row, instr in zip(table, program.instrs, strict=True):
        row["opcode"] = int(instr.op)
        row["flags"] = RELU_FLAG if instr.relu else 0
        row["kernel_h"], row["kernel_w"] = instr.kernel
        row["stride"] = instr.stride
        row["pad_top"], row["pad_bottom"], row["pad_left"], row["pad_right"] = instr.pad
        row["pad_value"] = instr.pad_value
        src = instr.inputs[0]
        b_in = program.buffer(src)
        row["in0_offset"] = lay.buffer_offsets[src.buffer]
        row["in0_hwc"] = hwc(b_in.height, b_in.width, src.channels)
        row["in0_slice"] = (b_in.channels << 16) | src.offset
        if len(instr.inputs) > 1:
            other = instr.inputs[1]
            row["in1_offset"] = lay.buffer_offsets[other.buffer]
            row["in1_slice"] = (program.buffer(other).channels << 16) | other.offset
        b_out = program.buffer(instr.output)
        row["out_offset"] = lay.buffer_offsets[instr.output.buffer]
        row["out_hwc"] = hwc(b_out.height, b_out.width, instr.output.channels)
        row["out_slice"] = (b_out.channels << 16) | instr.output.offset
        for field, index in (
            ("weight_offset", instr.weight),
            ("bias_offset", instr.bias),
            ("mult_offset", instr.multiplier),
            ("shift_offset", instr.shift),
        ):
            row[field] = lay.weight_offsets[index] if index >= 0 else 0xFFFFFFFF
    return table.view(np.uint8).reshape(-1)


def unpack(raw: bytes | np.ndarray, count: int) -> np.ndarray:
    data = np.frombuffer(bytes(raw), dtype=np.uint8)[: count * DESCRIPTOR_BYTES]
    return data.view(DESCRIPTOR)


__all__ = ["DESCRIPTOR", "Layout", "align", "layout", "pack", "pack_weights", "unpack"]
