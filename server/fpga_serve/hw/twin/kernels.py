"""Compiled (numba) kernels for the twin's native path: one memory pass per op.

Activations here are *offset* bytes: uint8 u = v + 128 for the overlay's int8 value v, the form
the int8 GEMM (twin/gemm.py, zero point 128) reads. Every kernel is the reference's arithmetic
(twin/reference.py) on int64, written as loops that LLVM vectorises — except that CPUs whose
vector unit has no int64 multiply (x86 without AVX-512DQ) get the CONV requantisation in
float64 where that is provably exact (``requant_f64``, ``requant_add_f64``):
requantisation sat8(round_shift(acc * M, S)) with round half up, concatenation by addressing
(a kernel reads and writes a channel slice [off, off + n) of an NHWC buffer).

Kernels take a row range [r0, r1) of their output (rows = N * H_out * W_out) so callers can
split the work over threads; they release the GIL. Inner loops run over 1-D row views, which
LLVM vectorises (about eight times faster than indexing the 2-D array in the loop).
tests/hw/test_twin_native.py checks every kernel against the reference for exact equality.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

ZERO = 128  # the offset byte of int8 zero

_jit = njit(cache=True, nogil=True, fastmath=False, boundscheck=False)


@_jit
def requant(acc, bias, mult, half, shift, low, out, o_off, r0, r1):  # type: ignore[no-untyped-def]
    """out[r, o_off + c] = ZERO + clamp(((acc[r,c] + bias[c]) * M[c] + half[c]) >> S[c]).

    acc, bias and M are int32 and acc + bias is taken modulo 2^32: the spec's sum fits int32
    (the reference refuses a program whose sum does not), so this is the spec's sum even when
    the GEMM's int32 accumulator wrapped on the way; the product is int32 x int32 -> int64."""
    cout = acc.shape[1]
    for r in range(r0, r1):
        src = acc[r]
        dst = out[r, o_off : o_off + cout]
        for c in range(cout):
            v = (np.int64(np.int32(src[c] + bias[c])) * np.int64(mult[c]) + half[c]) >> shift[c]
            dst[c] = np.uint8(min(max(v, low), 127) + ZERO)


@_jit
def requant_add(acc, bias, mult, half, shift, low, b, b_off, m0, m1, h2, s2, lo2, out, oo, r0, r1):  # type: ignore[no-untyped-def]
    """A CONV's requantisation and its fused ADD in one pass: v = clamp(((acc + bias[c]) *
    M[c] + half[c]) >> S[c]) exactly as in ``requant``, then out = ZERO + clamp((v * M0 + b * M1 +
    h2) >> S2), exactly ``add`` on v and the residual b."""
    cout = acc.shape[1]
    for r in range(r0, r1):
        src = acc[r]
        rb = b[r, b_off : b_off + cout]
        dst = out[r, oo : oo + cout]
        for c in range(cout):
            v = (np.int64(np.int32(src[c] + bias[c])) * np.int64(mult[c]) + half[c]) >> shift[c]
            v = min(max(v, low), 127)
            s = (v * m0 + (np.int64(rb[c]) - ZERO) * m1 + h2) >> s2
            dst[c] = np.uint8(min(max(s, lo2), 127) + ZERO)


FLOAT_MAX_SHIFT = 45
"""The largest CONV shift S for which ``requant_f64`` is exact (proof in its docstring)."""
FLOAT_MAX_SUM_SHIFT = 53
"""The largest shift for which the float64 forms of a sum of int8 x int32 products (the
fused ADD of ``requant_add_f64``, ``scale_shift_f64``) are exact."""


@functools.cache
def float_requant_pays() -> bool:
    """Whether the float64 requantisers are the faster exact form on this CPU: where the vector
    unit has no 64-bit integer multiply or arithmetic shift (x86 without AVX-512DQ), LLVM does
    not vectorise the int64 loops and float64 ones run 1.6-2x faster (ResNet-50's 3136 x 256
    requantisation on the AVX2 VM: 0.86 against 1.41 ms; with its fused ADD 1.96 against 3.90).
    With AVX-512 the int64 loops vectorise (7-8 G elements/s measured) and stay."""
    import llvmlite.binding as ll

    return not ll.get_host_cpu_features().get("avx512dq", False)


@_jit
def requant_f64(acc, bias, scale, low, out, o_off, r0, r1):  # type: ignore[no-untyped-def]
    """``requant`` computed in float64, exact when every S <= FLOAT_MAX_SHIFT; scale[c] =
    M[c] * 2^-S[c] (exact: M has 31 bits), low and the clamp as floats.

    Why exact: with x = int32(acc + bias) and t = x * M * 2^-S, the spec's value is K =
    floor(t + 1/2), clamped. The product is rounded once, monotonically, to d = fl(x *
    scale[c]). K - 1/2 is representable, so t >= K - 1/2 gives d + 1/2 >= K. t is a multiple of
    2^-S, so t < K + 1/2 means t <= K + 1/2 - 2^-S, and for |K| <= 129 that bound and K + 1 -
    2^-S have at most 8 + 45 = 53 significant bits when S <= 45: representable, so d + 1/2 <=
    K + 1 - 2^-S < K + 1 and floor(fl(d + 1/2)) = K wherever K is not clamped. Where it is,
    the same two bounds at K = 128 and K = low - 1 put the float result on the clamped side.
    tests/hw/test_twin_native.py checks it at the bounds against the int64 form."""
    cout = acc.shape[1]
    for r in range(r0, r1):
        src = acc[r]
        dst = out[r, o_off : o_off + cout]
        for c in range(cout):
            x = np.int32(src[c] + bias[c])
            v = np.floor(np.float64(x) * scale[c] + 0.5)
            dst[c] = np.uint8(np.int32(min(max(v, low), 127.0)) + ZERO)


@_jit
def requant_add_f64(acc, bias, scale, low, b, b_off, a0, a1, c1, lo2, out, oo, r0, r1):  # type: ignore[no-untyped-def]
    """``requant_add`` in float64: the CONV's part v as in ``requant_f64`` (S <=
    FLOAT_MAX_SHIFT), then floor(v * a0 + (b * a1 + c1)) for the residual's offset byte b, with
    a0 = M0 * 2^-S2, a1 = M1 * 2^-S2 and c1 = 1/2 - 128 * a1. Every term and partial sum is an
    integer times 2^-S2 below 2^53 of those units (|v * M0| and |(b - 128) * M1| < 2^38, the
    rounding term 2^(S2-1) <= 2^52 when S2 <= FLOAT_MAX_SUM_SHIFT), so each is exact and the
    floor is the spec's floor((v * M0 + (b - 128) * M1 + 2^(S2-1)) / 2^S2)."""
    cout = acc.shape[1]
    for r in range(r0, r1):
        src = acc[r]
        rb = b[r, b_off : b_off + cout]
        dst = out[r, oo : oo + cout]
        for c in range(cout):
            x = np.int32(src[c] + bias[c])
            v = min(max(np.floor(np.float64(x) * scale[c] + 0.5), low), 127.0)
            s = np.floor(v * a0 + (np.float64(rb[c]) * a1 + c1))
            dst[c] = np.uint8(np.int32(min(max(s, lo2), 127.0)) + ZERO)


@_jit
def scale_shift_f64(x, x_off, c_n, a, b, low, out, o_off, r0, r1):  # type: ignore[no-untyped-def]
    """``scale_shift`` in float64 for S <= FLOAT_MAX_SUM_SHIFT: floor(u * a[c] + b[c]) for the
    offset byte u, with a = M * 2^-S and b = (B - 128 * M + 2^(S-1)) * 2^-S. The sum is the
    spec's x * M + B + 2^(S-1) (x = u - 128) in units of 2^-S, every part an integer below
    2^53 of them (|x * M| < 2^38, |B| < 2^31, 2^(S-1) <= 2^52), so exact; low and the clamp as
    floats."""
    for r in range(r0, r1):
        src = x[r, x_off : x_off + c_n]
        dst = out[r, o_off : o_off + c_n]
        for c in range(c_n):
            v = np.floor(np.float64(src[c]) * a[c] + b[c])
            dst[c] = np.uint8(np.int32(min(max(v, low), 127.0)) + ZERO)


@_jit
def maxpool(x, c_off, c_n, kh, kw, stride, pt, pl, pad_u, ho, wo, out, o_off, r0, r1):  # type: ignore[no-untyped-def]
    """Window max; windows that reach outside the image see ``pad_u`` there."""
    h = x.shape[1]
    w = x.shape[2]
    hw = ho * wo
    for r in range(r0, r1):
        n = r // hw
        oy = (r % hw) // wo
        ox = r % wo
        dst = out[n, oy, ox, o_off : o_off + c_n]
        dst[:] = 0
        for i in range(kh):
            iy = oy * stride - pt + i
            for j in range(kw):
                ix = ox * stride - pl + j
                if 0 <= iy < h and 0 <= ix < w:
                    src = x[n, iy, ix, c_off : c_off + c_n]
                    for c in range(c_n):
                        dst[c] = max(dst[c], src[c])
                else:
                    for c in range(c_n):
                        dst[c] = max(dst[c], pad_u)


@_jit
def avgpool(x, c_off, c_n, kh, kw, stride, pt, pl, mult, half, shift, ho, wo, out, o_off, r0, r1):  # type: ignore[no-untyped-def]
    """Window sum of int8 values (zero padding counted), one requantisation for all channels."""
    h = x.shape[1]
    w = x.shape[2]
    hw = ho * wo
    acc = np.empty(c_n, np.int64)
    for r in range(r0, r1):
        n = r // hw
        oy = (r % hw) // wo
        ox = r % wo
        acc[:] = 0
        for i in range(kh):
            iy = oy * stride - pt + i
            for j in range(kw):
                ix = ox * stride - pl + j
                if 0 <= iy < h and 0 <= ix < w:
                    src = x[n, iy, ix, c_off : c_off + c_n]
                    for c in range(c_n):
                        acc[c] += np.int64(src[c]) - ZERO
        dst = out[n, oy, ox, o_off : o_off + c_n]
        for c in range(c_n):
            v = (acc[c] * mult + half) >> shift
            dst[c] = np.uint8(min(max(v, -128), 127) + ZERO)


@_jit
def global_avgpool(x, c_off, c_n, mult, half, shift, out, o_off):  # type: ignore[no-untyped-def]
    """Sum over H x W per image and channel, one requantisation."""
    n_img, h, w = x.shape[0], x.shape[1], x.shape[2]
    acc = np.empty(c_n, np.int64)
    for n in range(n_img):
        acc[:] = 0
        for y in range(h):
            for xx in range(w):
                src = x[n, y, xx, c_off : c_off + c_n]
                for c in range(c_n):
                    acc[c] += np.int64(src[c]) - ZERO
        dst = out[n, 0, 0, o_off : o_off + c_n]
        for c in range(c_n):
            v = (acc[c] * mult + half) >> shift
            dst[c] = np.uint8(min(max(v, -128), 127) + ZERO)


@_jit
def add(a, a_off, b, b_off, c_n, m0, m1, half, shift, low, out, o_off, r0, r1):  # type: ignore[no-untyped-def]
    """Rows of [N*H*W, C] views: ZERO + clamp((a * M0 + b * M1 + half) >> S)."""
    for r in range(r0, r1):
        ra = a[r, a_off : a_off + c_n]
        rb = b[r, b_off : b_off + c_n]
        dst = out[r, o_off : o_off + c_n]
        for c in range(c_n):
            v = ((np.int64(ra[c]) - ZERO) * m0 + (np.int64(rb[c]) - ZERO) * m1 + half) >> shift
            dst[c] = np.uint8(min(max(v, low), 127) + ZERO)


@_jit
def scale_shift(x, x_off, c_n, mult, bias, half, shift, low, out, o_off, r0, r1):  # type: ignore[no-untyped-def]
    """Rows of [N*H*W, C] views: ZERO + clamp((x * M[c] + B[c] + half) >> S)."""
    for r in range(r0, r1):
        src = x[r, x_off : x_off + c_n]
        dst = out[r, o_off : o_off + c_n]
        for c in range(c_n):
            v = ((np.int64(src[c]) - ZERO) * mult[c] + bias[c] + half) >> shift
            dst[c] = np.uint8(min(max(v, low), 127) + ZERO)
