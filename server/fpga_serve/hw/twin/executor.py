"""Runs a Program instruction by instruction over int8 activation buffers with a given op set."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType

import numpy as np

from fpga_serve.core.isa import Instr, Opcode, Program, TensorRef


def execute(
    program: Program,
    x: np.ndarray,
    ops: ModuleType,
    on_step: Callable[[Instr, float], None] | None = None,
) -> np.ndarray:
    """x int8 [N, H, W, C] -> the program's output slice, int8 [N, h, w, c].
    ``on_step`` (benchmarks) is told each instruction's time."""
    n = x.shape[0]
    buffers: dict[int, np.ndarray] = {}

    def buffer(ref: TensorRef) -> np.ndarray:
        if ref.buffer not in buffers:
            b = program.buffers[ref.buffer]
            buffers[ref.buffer] = np.zeros((n, b.height, b.width, b.channels), dtype=np.int8)
        return buffers[ref.buffer]

    def read(ref: TensorRef) -> np.ndarray:
        buf = buffer(ref)
        if ref.offset == 0 and ref.channels == buf.shape[-1]:
            return buf
        return np.ascontiguousarray(buf[..., ref.offset : ref.offset + ref.channels])

    def write(ref: TensorRef, value: np.ndarray) -> None:
        buffer(ref)[..., ref.offset : ref.offset + ref.channels] = value

    write(program.input, x)
    w = program.weights
    for instr in program.instrs:
        start = time.perf_counter()
        result = _step(instr, [read(r) for r in instr.inputs], w, ops)
        if instr.residual is not None:  # a fused ADD: exactly ADD(result, residual)
            result = ops.add(
                result, read(instr.residual), w[instr.add_multiplier], w[instr.add_shift],
                instr.add_relu,
            )  # fmt: skip
        write(instr.output, result)
        if on_step is not None:
            on_step(instr, time.perf_counter() - start)
    return np.array(read(program.output))


def _step(instr: Instr, args: list[np.ndarray], w: list[np.ndarray], ops: ModuleType) -> np.ndarray:
    op = instr.op
    if op is Opcode.CONV:
        return ops.conv(
            args[0],
            w[instr.weight],
            w[instr.bias],
            w[instr.multiplier],
            w[instr.shift],
            instr.stride,
            instr.pad,
            instr.relu,
        )
    if op is Opcode.MAXPOOL:
        return ops.maxpool(args[0], instr.kernel, instr.stride, instr.pad, instr.pad_value)
    if op is Opcode.AVGPOOL:
        return ops.avgpool(
            args[0], instr.kernel, instr.stride, instr.pad, w[instr.multiplier], w[instr.shift]
        )
    if op is Opcode.GLOBAL_AVGPOOL:
        return ops.global_avgpool(args[0], w[instr.multiplier], w[instr.shift])
    if op is Opcode.ADD:
        return ops.add(args[0], args[1], w[instr.multiplier], w[instr.shift], instr.relu)
    if op is Opcode.SCALE_SHIFT:
        return ops.scale_shift(
            args[0], w[instr.multiplier], w[instr.bias], w[instr.shift], instr.relu
        )
    raise ValueError(f"unknown opcode {op}")
