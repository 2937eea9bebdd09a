"""Runs a Program instruction by instruction over int8 activation buffers with a given op set,
and the one opcode -> kernel dispatch: ``KERNELS`` names each opcode's function in an op set
(twin/reference.py, twin/numpy_path.py; the native plan's step builders are ``_`` + that name) and
``apply`` calls it with an instruction's operands, which come from an ``Instr`` here and from a
decoded descriptor in the packed executor (twin/packed.py, the simulated board)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from fpga_serve.core.isa import Instr, Opcode, Program, TensorRef
from fpga_serve.core.windows import Pad

KERNELS: dict[Opcode, str] = {op: op.name.lower() for op in Opcode}
"""Opcode -> the name of its function in an op set: conv, maxpool, avgpool, global_avgpool,
add, scale_shift."""


@dataclass(frozen=True)
class Operands:
    """What an opcode's arithmetic takes besides its input tensors; constants unused by the
    opcode may be empty."""

    kernel: tuple[int, int]
    stride: int
    pad: Pad
    relu: bool
    pad_value: int
    weight: np.ndarray | None
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray

    @classmethod
    def of(cls, instr: Instr, weights: Sequence[np.ndarray]) -> Operands:
        empty = np.zeros(0, np.int32)

        def constant(index: int) -> np.ndarray:
            return weights[index] if index >= 0 else empty

        return cls(
            kernel=instr.kernel,
            stride=instr.stride,
            pad=instr.pad,
            relu=instr.relu,
            pad_value=instr.pad_value,
            weight=weights[instr.weight] if instr.weight >= 0 else None,
            bias=constant(instr.bias),
            multiplier=constant(instr.multiplier),
            shift=constant(instr.shift),
        )


def apply(ops: ModuleType, op: Opcode, args: Sequence[np.ndarray], p: Operands) -> np.ndarray:
    """One opcode's arithmetic on [N, H, W, C] inputs through op set ``ops``. The ops with
    one requantisation take multiplier[0] and shift[0]; the pools, whose kernels have no ReLU,
    are clamped at 0 after them when ``relu`` is set (the accelerator's RELU flag)."""
    kernel = getattr(ops, KERNELS[op])
    m1, s1 = p.multiplier[:1], p.shift[:1]
    if op is Opcode.CONV:
        assert p.weight is not None
        return np.asarray(
            kernel(args[0], p.weight, p.bias, p.multiplier, p.shift, p.stride, p.pad, p.relu)
        )
    if op is Opcode.ADD:
        return np.asarray(kernel(args[0], args[1], p.multiplier, s1, p.relu))
    if op is Opcode.SCALE_SHIFT:
        return np.asarray(kernel(args[0], p.multiplier, p.bias, s1, p.relu))
    if op is Opcode.MAXPOOL:
        y = np.asarray(kernel(args[0], p.kernel, p.stride, p.pad, p.pad_value))
    elif op is Opcode.AVGPOOL:
        y = np.asarray(kernel(args[0], p.kernel, p.stride, p.pad, m1, s1))
    else:
        y = np.asarray(kernel(args[0], m1, s1))
    return np.maximum(y, 0) if p.relu else y


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
        result = apply(ops, instr.op, [read(r) for r in instr.inputs], Operands.of(instr, w))
        if instr.residual is not None:  # a fused ADD: exactly ADD(result, residual)
            result = ops.add(
                result, read(instr.residual), w[instr.add_multiplier], w[instr.add_shift],
                instr.add_relu,
            )  # fmt: skip
        write(instr.output, result)
        if on_step is not None:
            on_step(instr, time.perf_counter() - start)
    return np.array(read(program.output))
