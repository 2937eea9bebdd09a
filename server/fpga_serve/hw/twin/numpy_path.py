"""The twin's numpy path: bit-exact implementations of the overlay ops in numpy (float32 BLAS),
for CPUs where the native path (twin/native.py, about two to three times faster) is not
available or ``twin_path`` is ``numpy``.

int8 x int8 products are summed exactly in float32 as long as every partial sum stays below
2^24: with |x| <= 128 and |w| <= 127 that holds for K <= 1024 terms, so GEMMs run through
float32 BLAS over K chunks of at most 1024 and the chunks are summed in int32. Requantisation
is done in row blocks that stay in cache. tests/hw/test_twin.py checks every function against
twin/reference.py for exact equality.
"""

from __future__ import annotations

import numpy as np

from fpga_serve.core.isa import INT8_MAX, INT8_MIN
from fpga_serve.core.windows import im2col, pad_hw, windows

K_CHUNK = 1024
ROW_BLOCK = 8192


def _requant_block(
    acc: np.ndarray,
    bias: np.ndarray | None,
    m64: np.ndarray,
    s64: np.ndarray,
    half: np.ndarray,
    low: int,
    out: np.ndarray,
) -> None:
    # exact: float32 GEMM results are whole numbers below 2^24; the bias is added modulo 2^32,
    # which gives the spec's sum (it fits int32) also when a K-chunked int32 sum wrapped
    block32 = acc.astype(np.int32)
    if bias is not None:
        block32 += bias
    block = block32.astype(np.int64)
    block *= m64
    block += half
    block >>= s64
    np.clip(block, low, INT8_MAX, out=block)
    out[...] = block


def requantize_rows(
    acc: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    relu: bool,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """[M, C] accumulators (+ bias) -> int8 [M, C], in cache-sized row blocks; the same result
    as the reference."""
    out = np.empty(acc.shape, dtype=np.int8)
    m64 = multiplier.astype(np.int64)
    s64 = shift.astype(np.int64)
    half = np.int64(1) << (s64 - 1)
    b32 = None if bias is None else bias.astype(np.int32)
    low = 0 if relu else INT8_MIN
    # Sequential on purpose: spreading blocks over threads fought OpenBLAS's threads and was
    # slower on 2 cores (bench/bench_twin.py).
    for i in range(0, acc.shape[0], ROW_BLOCK):
        _requant_block(acc[i : i + ROW_BLOCK], b32, m64, s64, half, low, out[i : i + ROW_BLOCK])
    return out


def gemm_int8(cols: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Exact [M, Cout] = cols [M, K] @ int8 weight [K, Cout] via float32 BLAS (cols hold int8
    values, as int8 or float32). One chunk: float32 whole numbers; several: int32 sums."""
    k = cols.shape[1]
    w32 = weight.astype(np.float32)
    if k <= K_CHUNK:
        return cols.astype(np.float32, copy=False) @ w32
    acc = np.zeros((cols.shape[0], weight.shape[1]), dtype=np.int32)
    for start in range(0, k, K_CHUNK):
        part = cols[:, start : start + K_CHUNK].astype(np.float32, copy=False)
        acc += (part @ w32[start : start + K_CHUNK]).astype(np.int32)
    return acc


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
    kh, kw, cin, cout = weight.shape
    cols, ho, wo = im2col(pad_hw(x, pad, 0), kh, kw, stride)  # gathered as int8: 4x less traffic
    acc = gemm_int8(cols, weight.reshape(kh * kw * cin, cout))
    return requantize_rows(acc, multiplier, shift, relu, bias).reshape(x.shape[0], ho, wo, cout)


def maxpool(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: int,
    pad: tuple[int, int, int, int],
    pad_value: int,
) -> np.ndarray:
    win = windows(pad_hw(x, pad, pad_value), kernel[0], kernel[1], stride)
    return np.asarray(win.max(axis=(4, 5)), dtype=np.int8)


def avgpool(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: int,
    pad: tuple[int, int, int, int],
    multiplier: np.ndarray,
    shift: np.ndarray,
) -> np.ndarray:
    win = windows(pad_hw(x, pad, 0), kernel[0], kernel[1], stride)
    acc = win.sum(axis=(4, 5), dtype=np.int32)
    n, ho, wo, c = acc.shape
    return requantize_rows(acc.reshape(-1, c), multiplier, shift, False).reshape(n, ho, wo, c)


def global_avgpool(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    acc = x.sum(axis=(1, 2), dtype=np.int32)
    n, c = acc.shape
    return requantize_rows(acc, multiplier, shift, False).reshape(n, 1, 1, c)


def add(
    a: np.ndarray, b: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, relu: bool
) -> np.ndarray:
    shape = a.shape
    acc = a.reshape(-1).astype(np.int64) * np.int64(multiplier[0])
    acc += b.reshape(-1).astype(np.int64) * np.int64(multiplier[1])
    s = np.int64(shift[0])
    acc += np.int64(1) << (s - 1)
    acc >>= s
    np.clip(acc, 0 if relu else INT8_MIN, INT8_MAX, out=acc)
    return acc.astype(np.int8).reshape(shape)


def scale_shift(
    x: np.ndarray, multiplier: np.ndarray, bias: np.ndarray, shift: np.ndarray, relu: bool
) -> np.ndarray:
    c = x.shape[-1]
    rows = x.reshape(-1, c).astype(np.int64)
    rows *= multiplier.astype(np.int64)
    rows += bias.astype(np.int64)
    s = np.int64(shift[0])
    rows += np.int64(1) << (s - 1)
    rows >>= s
    np.clip(rows, 0 if relu else INT8_MIN, INT8_MAX, out=rows)
    return rows.astype(np.int8).reshape(x.shape)
