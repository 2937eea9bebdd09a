"""The overlay's arithmetic, one plain numpy function per opcode: the specification.

Written for obviousness, not speed: int64 everywhere, explicit loops over kernel taps.
Every faster path (twin/numpy_path.py, twin/native.py, the PYNQ device) must equal these bit
for bit.
"""

from __future__ import annotations

import numpy as np

from fpga_serve.core.isa import round_shift, saturate
from fpga_serve.core.windows import pad_hw


def requantize(
    acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, relu: bool
) -> np.ndarray:
    """int32 accumulators -> int8: sat8(round_shift(acc * M, S)), then ReLU if fused."""
    product = acc.astype(np.int64) * multiplier.astype(np.int64)
    return saturate(round_shift(product, shift.astype(np.int64)), relu)


def conv(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    stride: int,
    pad: tuple[int, int, int, int],
    relu: bool,
) -> np.ndarray:
    """x int8 [N,H,W,Cin], weight int8 [kh,kw,Cin,Cout], bias int32 [Cout] -> int8 output."""
    kh, kw, _, cout = weight.shape
    xp = pad_hw(x, pad, 0).astype(np.int64)
    n, hp, wp, _ = xp.shape
    ho = (hp - kh) // stride + 1
    wo = (wp - kw) // stride + 1
    acc = np.zeros((n, ho, wo, cout), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[
                :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride
            ]
            acc += np.einsum("nhwc,cd->nhwd", patch, weight[i, j].astype(np.int64))
    acc += bias.astype(np.int64)
    if np.abs(acc).max(initial=0) >= 2**31:
        raise OverflowError("int32 accumulator overflow (the compiler must prevent this)")
    return requantize(acc, multiplier, shift, relu)


def maxpool(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: int,
    pad: tuple[int, int, int, int],
    pad_value: int,
) -> np.ndarray:
    kh, kw = kernel
    xp = pad_hw(x, pad, pad_value)
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    out = np.full((n, ho, wo, c), -128, dtype=np.int8)
    for i in range(kh):
        for j in range(kw):
            patch = xp[
                :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride
            ]
            out = np.maximum(out, patch)
    return out


def avgpool(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: int,
    pad: tuple[int, int, int, int],
    multiplier: np.ndarray,
    shift: np.ndarray,
) -> np.ndarray:
    """Window sum (zero padding counted), requantised by M/S (which include 1/window)."""
    kh, kw = kernel
    xp = pad_hw(x, pad, 0).astype(np.int64)
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    acc = np.zeros((n, ho, wo, c), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += xp[
                :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride
            ]
    return requantize(acc, multiplier, shift, False)


def global_avgpool(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    acc = x.astype(np.int64).sum(axis=(1, 2), keepdims=True)
    return requantize(acc, multiplier, shift, False)


def add(
    a: np.ndarray, b: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, relu: bool
) -> np.ndarray:
    """sat8(round_shift(a * M0 + b * M1, S)): two scales brought to one."""
    acc = a.astype(np.int64) * np.int64(multiplier[0]) + b.astype(np.int64) * np.int64(
        multiplier[1]
    )
    return saturate(round_shift(acc, np.int64(shift[0])), relu)


def scale_shift(
    x: np.ndarray, multiplier: np.ndarray, bias: np.ndarray, shift: np.ndarray, relu: bool
) -> np.ndarray:
    """Per channel: sat8(round_shift(x * M[c] + B[c], S))."""
    acc = x.astype(np.int64) * multiplier.astype(np.int64) + bias.astype(np.int64)
    return saturate(round_shift(acc, np.int64(shift[0])), relu)
