"""Integer constants for the overlay (core/isa.py states the numerics).

Weights: int8, symmetric, one scale per output channel, in [-127, 127]. Bias: int32 at scale
input_scale * weight_scale[c]. Requantisation factors become a Q31 multiplier and a shift.

The int32 accumulator cannot overflow by construction: with |x| <= 128 and |w| <= 127 a
K-term dot product stays within 128 * 127 * K, and a channel's weight scale is raised when
needed so that its bias fits in what is left below 2^31.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import quantize_multiplier

INT32_MAX = 2**31 - 1
W_QMAX = 127
X_ABS_MAX = 128


@dataclass
class QuantizedConv:
    weight: np.ndarray
    """int8 [kh, kw, cin, cout]"""
    bias: np.ndarray
    """int32 [cout]"""
    weight_scale: np.ndarray
    """float64 [cout]: real weight = int8 weight * weight_scale[c]"""
    multiplier: np.ndarray
    shift: np.ndarray


def requant_pair(real: float) -> tuple[int, int]:
    """(M, S) for a positive factor, like ``isa.quantize_multiplier``, but factors outside the
    representable range are clamped where that changes no output: below 2^-32 every |acc| < 2^31
    rounds to 0 either way, and at or above 2^30 every nonzero accumulator saturates either way."""
    if not math.isfinite(real) or real <= 0:
        raise CompileError(f"requantisation factor {real} must be positive and finite")
    if real < 2.0**-32:
        return 1 << 30, 62
    if real >= 2.0**30:
        return INT32_MAX, 1
    return quantize_multiplier(real)


def shared_shift(*reals: np.ndarray) -> int:
    """The largest shift S in [1, 62] that keeps every |real| * 2^S below 2^30 (so rounded
    multipliers and offsets fit int32): for ops with one shift and several multipliers."""
    peak = max((float(np.max(np.abs(r))) for r in reals if r.size), default=0.0)
    if peak == 0:
        return 31
    exponent = math.frexp(peak)[1]  # peak < 2^exponent
    return int(min(62, max(1, 30 - exponent)))


def fixed_point(reals: np.ndarray, shift: int) -> np.ndarray:
    """round(reals * 2^shift) as int32 (saturating: only reachable when outputs saturate)."""
    return np.clip(
        np.rint(np.asarray(reals, np.float64) * 2.0**shift), -INT32_MAX, INT32_MAX
    ).astype(np.int32)


def quantize_conv(w: np.ndarray, b: np.ndarray, s_in: float, s_out: float) -> QuantizedConv:
    """Per-output-channel symmetric weights, int32 bias and per-channel requantisation."""
    kh, kw, cin, cout = w.shape
    w64 = w.astype(np.float64)
    terms = kh * kw * cin
    bias_budget = INT32_MAX - X_ABS_MAX * W_QMAX * terms
    if bias_budget < 1:
        raise CompileError(f"a {kh}x{kw}x{cin} convolution can overflow the int32 accumulator")
    scale = np.abs(w64).reshape(-1, cout).max(axis=0) / W_QMAX
    scale = np.maximum(scale, np.abs(b.astype(np.float64)) / (s_in * bias_budget))
    scale[scale == 0] = 1.0  # an all-zero channel: any scale gives zeros
    wq = np.clip(np.rint(w64 / scale), -W_QMAX, W_QMAX).astype(np.int8)
    bq = np.clip(np.rint(b / (s_in * scale)), -bias_budget, bias_budget).astype(np.int32)
    pairs = [requant_pair(float(s_in * ws / s_out)) for ws in scale]
    return QuantizedConv(
        wq,
        bq,
        scale,
        np.array([m for m, _ in pairs], np.int32),
        np.array([s for _, s in pairs], np.int32),
    )
