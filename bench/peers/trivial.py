"""The trivial model every server in bench_peers.py serves, in plain numpy (no fpga-serve code):
UINT8 [N,224,224,3] in, FP32 [N,1000] out, a fixed vector plus the mean of the item's pixels."""

from __future__ import annotations

import numpy as np

MODEL = "trivial"
INPUT = "images"
OUTPUT = "scores"
SHAPE = (1, 224, 224, 3)
CLASSES = 1000
BASE = np.arange(CLASSES, dtype=np.float32) / CLASSES
"""The fixed vector."""


def expected(x: np.ndarray) -> np.ndarray:
    """What every server must answer for ``x`` (float32 [N, 1000])."""
    means = x.reshape(x.shape[0], -1).mean(axis=1, dtype=np.float64).astype(np.float32)
    return BASE[None, :] + means[:, None]


def request_image(seed: int = 1) -> np.ndarray:
    """The request every client sends (random pixels, the same in every venv: PCG64 is stable)."""
    return np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)
