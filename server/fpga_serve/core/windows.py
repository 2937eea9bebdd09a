"""NHWC window helpers, the one copy shared by the compiler's float interpreter
(compiler/float_exec.py) and the twin's ops (hw/twin/reference.py, hw/twin/numpy_path.py): spatial
padding, the strided view of every kernel window, and im2col with K ordered (kh, kw, cin) as
the weights are laid out."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pad = tuple[int, int, int, int]
"""top, bottom, left, right"""


def pad_hw(x: np.ndarray, pad: Pad, value: float) -> np.ndarray:
    """x [N, H, W, C] padded in H and W with ``value``; x itself when ``pad`` is all zero."""
    top, bottom, left, right = pad
    if not (top or bottom or left or right):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def windows(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """[N, Ho, Wo, C, kh, kw] strided view of x [N, H, W, C] (no copy)."""
    view = sliding_window_view(x, (kh, kw), axis=(1, 2))  # type: ignore[call-overload]
    return view[:, ::stride, ::stride]


def im2col(x: np.ndarray, kh: int, kw: int, stride: int) -> tuple[np.ndarray, int, int]:
    """The rows a convolution's GEMM reads from the (already padded) x [N, H, W, C]:
    [N * Ho * Wo, kh * kw * C], K ordered (kh, kw, C) like a [kh, kw, C, Cout] weight; a 1 x 1
    kernel is a strided view, reshaped (a copy only when strided). Returns (rows, Ho, Wo)."""
    n, c = x.shape[0], x.shape[3]
    if kh == 1 and kw == 1:
        src = x[:, ::stride, ::stride] if stride > 1 else x
        ho, wo = src.shape[1], src.shape[2]
        return src.reshape(n * ho * wo, c), ho, wo
    win = windows(x, kh, kw, stride)
    ho, wo = win.shape[1], win.shape[2]
    cols = np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * ho * wo, kh * kw * c)
    return cols, ho, wo
