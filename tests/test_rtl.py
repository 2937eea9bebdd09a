"""The overlay's hardware source (bitstreams/fpga_cnn/rtl/) simulated in Icarus Verilog against
the twin's reference, bit for bit: the datapath units on random and extreme vectors. Skipped
only where the simulator is not installed."""

from __future__ import annotations

import numpy as np
import pytest
from fpga_serve.core.isa import (
    round_shift,
    saturate,
)
from fpga_serve.hw.twin import reference
from rtl import harness
from rtl.harness import UnitVector

pytestmark = pytest.mark.skipif(
    harness.simulator_missing() is not None, reason=str(harness.simulator_missing())
)

RNG = np.random.default_rng(2026)
I32 = np.iinfo(np.int32)


# Datapath units ----------------------------------------------------------------------------


def _i64(v: int) -> np.ndarray:
    return np.array([v], dtype=np.int64)


def test_round_sat_unit_rounds_half_up_and_saturates() -> None:
    vectors: list[UnitVector] = []
    for s in range(1, 63):
        for k in (-3, -2, -1, 0, 1, 2, 100, -100):  # exact halves: k * 2^S + 2^(S-1)
            v = k * (1 << s) + (1 << (s - 1))
            if -(2**63) <= v < 2**63:
                vectors.append(UnitVector(1, RNG.integers(0, 2), s, v))
        for v in (1 << (s - 1)) - 1, -(1 << (s - 1)), -(1 << (s - 1)) - 1:
            vectors.append(UnitVector(1, 0, s, v))
    for v in (2**63 - 1, -(2**63), 2**62, -(2**62), 127 << 20, 128 << 20, -129 << 20):
        for s in (1, 20, 62):
            vectors += [UnitVector(1, 0, s, v), UnitVector(1, 1, s, v)]
    for _ in range(1500):
        s = int(RNG.integers(1, 63))
        v = int(RNG.integers(-(2**62), 2**62)) >> int(RNG.integers(0, 60))
        vectors.append(UnitVector(1, int(RNG.integers(0, 2)), s, v))
    got = harness.run_units(vectors)
    for vec, g in zip(vectors, got, strict=True):
        want = saturate(round_shift(_i64(vec.value), vec.shift), bool(vec.flag))[0]
        assert g == want, vec


def test_requantiser_matches_the_twin_incl_ties_and_extremes() -> None:
    vectors = []
    # M = 2^30, S = 31 halves the accumulator: every odd one is an exact tie.
    ties = range(-255, 255)
    vectors += [UnitVector(2, 0, 31, p1=a, p2=0, p3=2**30) for a in ties]
    vectors += [UnitVector(2, 0, 31, p1=a, p2=b, p3=2**30) for a, b in ((-255, 0), (3, -258))]
    for acc in (I32.max, I32.min, I32.min + 1, 0, 1, -1):
        for m in (2**30, 2**31 - 1, I32.max):
            for s in (1, 31, 38, 62):
                vectors += [UnitVector(2, r, s, p1=acc, p3=m) for r in (0, 1)]
    for _ in range(1500):
        acc = int(RNG.integers(-(2**24), 2**24))
        bias = int(RNG.integers(-(2**24), 2**24))
        m = int(RNG.integers(2**30, 2**31))
        s = int(RNG.integers(24, 50))
        vectors.append(UnitVector(2, int(RNG.integers(0, 2)), s, p1=acc, p2=bias, p3=m))
    got = harness.run_units(vectors)
    for vec, g in zip(vectors, got, strict=True):
        acc = np.array([vec.p1 + vec.p2], dtype=np.int64)
        want = reference.requantize(acc, np.array([vec.p3]), np.array([vec.shift]), bool(vec.flag))
        assert g == want[0], vec
    # a / 2 for odd a is an exact half: it rounds up (-127.5 -> -127, 0.5 -> 1, 126.5 -> 127)
    assert got[: len(ties)] == [(a + 1) // 2 for a in ties]
    assert got[len(ties) : len(ties) + 2] == [-127, -127]


def test_mac_and_pool_units() -> None:
    vectors = []
    for x, w in ((-128, -128), (-128, 127), (127, 127), (0, -128)):
        vectors += [UnitVector(3, p1=a, x=x, w=w) for a in (0, I32.max - 16384, -(2**31) + 16384)]
    for _ in range(500):
        a, x, w = int(RNG.integers(-(2**30), 2**30)), *RNG.integers(-128, 128, 2)
        vectors.append(UnitVector(3, p1=a, x=int(x), w=int(w)))
    for _ in range(500):
        is_max = int(RNG.integers(0, 2))
        a = int(RNG.integers(-128, 128)) if is_max else int(RNG.integers(-(2**20), 2**20))
        vectors.append(UnitVector(6, is_max, p1=a, x=int(RNG.integers(-128, 128))))
    got = harness.run_units(vectors)
    for vec, g in zip(vectors, got, strict=True):
        if vec.unit == 3:
            want = vec.p1 + vec.x * vec.w
        else:
            want = max(vec.p1, vec.x) if vec.flag else vec.p1 + vec.x
        assert g == want, vec


def test_add_and_scale_shift_units_match_the_twin() -> None:
    vectors = []
    extremes = (I32.min, I32.max, 2**30, -1, 0, 1)
    for m0 in extremes:
        for a in (-128, 127):
            vectors += [UnitVector(4, 0, 31, p1=m0, p2=I32.min, x=a, w=-128)]
            vectors += [UnitVector(5, 1, 31, p1=m0, p2=I32.max, x=a)]
    for _ in range(1000):
        relu, s = int(RNG.integers(0, 2)), int(RNG.integers(1, 63))
        a, b = (int(v) for v in RNG.integers(-128, 128, 2))
        m0, m1, bias = (int(v) for v in RNG.integers(I32.min, I32.max, 3, endpoint=True))
        vectors.append(UnitVector(4, relu, s, p1=m0, p2=m1, x=a, w=b))
        vectors.append(UnitVector(5, relu, s, p1=m0, p2=bias, x=a))
    # SCALE_SHIFT ties: x * 2^30 + 0 with S = 31 is x / 2
    vectors += [UnitVector(5, 0, 31, p1=2**30, p2=0, x=x) for x in range(-128, 128)]
    got = harness.run_units(vectors)
    for vec, g in zip(vectors, got, strict=True):
        m, s, relu = np.array([vec.p1, vec.p2]), np.array([vec.shift]), bool(vec.flag)
        a, b = np.array([vec.x], np.int8), np.array([vec.w], np.int8)
        if vec.unit == 4:
            want = reference.add(a, b, m, s, relu)
        else:
            want = reference.scale_shift(a, m[:1], m[1:], s, relu)
        assert g == want[0], vec
