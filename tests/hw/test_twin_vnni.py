"""The fused VNNI CONV kernel (hw/twin/vnni.py) against the reference (the spec), bit for bit:
every tile width and row remainder, K not a multiple of four, both ReLUs, the fused ADD, an
accumulator that wraps int32; its self-check refusing a wrong kernel; and the choice between it
and the GEMM path. The whole-program and op-by-op tests of test_twin_native.py also run with it
(their ``conv_form`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest
from fpga_serve.hw.twin import native, reference, vnni

RNG = np.random.default_rng(11)

needs_vnni = pytest.mark.skipif(not vnni.available(), reason="no AVX-512 VNNI here")


def offset_bytes(v: np.ndarray) -> np.ndarray:
    return (v.astype(np.int16) + 128).astype(np.uint8)


def spec_conv(u: np.ndarray, w: np.ndarray, bias: np.ndarray, mult: np.ndarray,
              shift: np.ndarray, relu: bool) -> np.ndarray:  # fmt: skip
    """reference.conv on a patch matrix of offset bytes (as a 1 x M image of K channels)."""
    x = (u.astype(np.int16) - 128).astype(np.int8)[None, :, None, :]
    return offset_bytes(
        reference.conv(x, w[None, None], bias, mult, shift, 1, (0,) * 4, relu)[0, :, 0]
    )


def constants(cout: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bias = RNG.integers(-(1 << 16), 1 << 16, cout).astype(np.int32)
    mult = RNG.integers(1 << 20, 1 << 30, cout).astype(np.int32)
    shift = RNG.integers(26, 34, cout).astype(np.int32)
    return bias, mult, shift


def test_a_vnni_cpu_gets_the_kernel() -> None:
    """Outside the skip: on a CPU with AVX-512 VNNI and BW the self-check must pass, so a
    broken kernel fails here instead of turning every test below into a skip."""
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features()
    if not (features.get("avx512vnni", False) and features.get("avx512bw", False)):
        pytest.skip("no AVX-512 VNNI here")
    assert vnni.available()
    assert native.fused_vnni()


@needs_vnni
@pytest.mark.parametrize("rows", [1, 5, 6, 7, 13])
@pytest.mark.parametrize("cout", [1, 16, 17, 33, 48, 64, 65, 100, 130])
@pytest.mark.parametrize("k", [3, 4, 64, 147])
def test_the_kernel_equals_the_spec_on_every_tile_shape(rows: int, cout: int, k: int) -> None:
    """Tiles of 1-4 vectors with a partly valid last one, 1..MR rows, K past a group of four."""
    u = RNG.integers(0, 256, (rows, k), dtype=np.uint8)
    w = RNG.integers(-128, 128, (k, cout), dtype=np.int8)
    bias, mult, shift = constants(cout)
    packed = vnni.Packed(w, bias, mult, shift)
    for relu in (False, True):
        assert np.array_equal(vnni.run(u, packed, relu), spec_conv(u, w, bias, mult, shift, relu))


@needs_vnni
def test_the_kernel_writes_only_its_rows_and_channels_and_reads_a_slice() -> None:
    """Rows of a strided buffer's channel slice in, a channel slice of a wider buffer out; the
    bytes around the output slice stay as they were."""
    rows, width, off, k, cout = 11, 40, 8, 24, 21
    x = RNG.integers(0, 256, (rows, width), dtype=np.uint8)
    w = RNG.integers(-128, 128, (k, cout), dtype=np.int8)
    bias, mult, shift = constants(cout)
    packed = vnni.Packed(w, bias, mult, shift)
    out = np.full((rows, 50), 7, np.uint8)
    flat = out.reshape(-1)
    rb, taps = vnni.rows_of(rows, width, off), vnni.one_tap()
    vnni.conv(x.reshape(-1), rb, rows, taps, packed.k4, *packed.args(), np.int64(-128), cout,
              flat, 5, 50, flat, 0, 50, *vnni.NO_ADD, False)  # fmt: skip
    assert np.array_equal(out[:, 5 : 5 + cout], spec_conv(x[:, off : off + k], w, bias, mult,
                                                         shift, False))  # fmt: skip
    assert (out[:, :5] == 7).all() and (out[:, 5 + cout :] == 7).all()


@needs_vnni
@pytest.mark.parametrize("relu", [False, True])
def test_results_past_the_int8_range_saturate_like_the_spec(relu: bool) -> None:
    """Biases of +-2^30 put most results far past 127 and far below -128 (or the ReLU's 0):
    the store's saturating truncation gives the spec's clamp, and both ends occur."""
    rows, k, cout = 13, 8, 48
    u = RNG.integers(0, 256, (rows, k), dtype=np.uint8)
    w = RNG.integers(-128, 128, (k, cout), dtype=np.int8)
    bias = np.where(np.arange(cout) % 2 == 0, 1 << 30, -(1 << 30)).astype(np.int32)
    mult, shift = np.full(cout, (1 << 31) - 1, np.int32), np.full(cout, 40, np.int32)
    got = vnni.run(u, vnni.Packed(w, bias, mult, shift), relu)
    assert np.array_equal(got, spec_conv(u, w, bias, mult, shift, relu))
    assert {int(got.min()), int(got.max())} == {128 if relu else 0, 255}


@needs_vnni
@pytest.mark.parametrize("add_relu", [False, True])
@pytest.mark.parametrize(
    ("m0", "m1", "s2"), [(1 << 29, -(1 << 28), 30), ((1 << 31) - 1, -(1 << 31), 29)]
)
def test_the_fused_add_equals_the_spec(add_relu: bool, m0: int, m1: int, s2: int) -> None:
    """The ADD's multipliers up to int32's ends (the second set saturates both ways)."""
    rows, k, cout = 9, 40, 70
    u = RNG.integers(0, 256, (rows, k), dtype=np.uint8)
    w = RNG.integers(-128, 128, (k, cout), dtype=np.int8)
    bias, mult, shift = constants(cout)
    packed = vnni.Packed(w, bias, mult, shift)
    res = RNG.integers(0, 256, (rows, cout), dtype=np.uint8)
    m = np.array([m0, m1], np.int32)
    a = np.zeros(rows * k + 4, np.uint8)
    a[: rows * k] = u.reshape(-1)
    out = np.zeros((rows, cout), np.uint8)
    add = (np.int64(m[0]), np.int64(m[1]), np.int64(1) << (s2 - 1), np.int64(s2),
           np.int64(0 if add_relu else -128))  # fmt: skip
    rb, taps = vnni.rows_of(rows, k), vnni.one_tap()
    vnni.conv(a, rb, rows, taps, packed.k4, *packed.args(), np.int64(0), cout, out.reshape(-1), 0,
              cout, res.reshape(-1), 0, cout, *add, True)  # fmt: skip
    conv = (spec_conv(u, w, bias, mult, shift, True).astype(np.int16) - 128).astype(np.int8)
    want = reference.add(conv, (res.astype(np.int16) - 128).astype(np.int8), m,
                         np.array([s2], np.int32), add_relu)  # fmt: skip
    assert np.array_equal(out, offset_bytes(want))


@needs_vnni
def test_a_wrapped_accumulator_comes_back_with_the_bias() -> None:
    """sum(u * w) passes 2^31 (255 * 127 * 70000) while the spec's sum (127 * 127 * 70000
    + bias) does not: the zero point folded into the bias modulo 2^32 gives the spec's value."""
    k = 70000
    u, w = np.full((2, k), 255, np.uint8), np.full((k, 3), 127, np.int8)
    bias = np.array([-(1 << 30), 0, 1 << 29], np.int32)
    mult, shift = np.ones(3, np.int32), np.full(3, 24, np.int32)  # values 3, 67 and 99
    got = vnni.run(u, vnni.Packed(w, bias, mult, shift), False)
    assert np.array_equal(got, spec_conv(u, w, bias, mult, shift, False))
    assert len(set(got[0].tolist())) == 3  # the three biases give three values


def test_the_self_check_refuses_a_wrong_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel one off in a single lane fails the check, and the plan keeps the GEMM path."""
    if not vnni.available():
        pytest.skip("no AVX-512 VNNI here")
    real = vnni.conv

    def off_by_one(*args: object) -> None:
        real(*args)
        out = args[13]
        assert isinstance(out, np.ndarray)
        out[int(args[14])] ^= 1  # type: ignore[call-overload]

    monkeypatch.setattr(vnni, "conv", off_by_one)
    vnni.available.cache_clear()
    try:
        assert vnni._self_check() is False
        assert vnni.available() is False
        assert native.fused_vnni() is False
    finally:
        monkeypatch.undo()
        vnni.available.cache_clear()
    assert vnni.available() is True
