"""The AMX CONV kernel (hw/twin/amx.py) against the reference (the spec), bit for bit: row counts
that leave a partial last block, channel counts that leave partial 16- and 32-channel blocks,
K over several tiles, both ReLUs, windows read through virtual rows (padded and in place, on a
channel slice, over a batch), the fused ADD, an accumulator that wraps int32; its self-check
refusing a wrong kernel; and which CONVs the plan gives it. test_twin_native.py's op-by-op and
whole-program tests also run with it (their ``conv_form`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest
from fpga_serve.core.isa import Buffer, Instr, Opcode, Program, TensorRef
from fpga_serve.hw.twin import amx, native, reference, vnni
from fpga_serve.hw.twin.executor import execute

RNG = np.random.default_rng(13)

needs_amx = pytest.mark.skipif(not amx.available(), reason="no AMX-INT8 here")


def offset_bytes(v: np.ndarray) -> np.ndarray:
    return (v.astype(np.int16) + 128).astype(np.uint8)


def constants(cout: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bias = RNG.integers(-(1 << 16), 1 << 16, cout).astype(np.int32)
    mult = RNG.integers(1 << 20, 1 << 30, cout).astype(np.int32)
    shift = RNG.integers(26, 34, cout).astype(np.int32)
    return bias, mult, shift


def test_an_amx_cpu_gets_the_kernel() -> None:
    """Outside the skip: where the CPU has AMX-INT8 (and the VNNI kernel runs) the self-check
    must pass, so a broken kernel fails here instead of turning every test below into a skip."""
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features()
    if not (features.get("amx-int8", False) and features.get("amx-tile", False)):
        pytest.skip("no AMX-INT8 here")
    if not vnni.available():
        pytest.skip("no VNNI kernel here")
    assert amx.available()
    assert native.fused_amx()


@needs_amx
@pytest.mark.parametrize("rows", [32, 33, 45, 64, 100])
@pytest.mark.parametrize("cout", [1, 16, 17, 32, 33, 64, 100])
@pytest.mark.parametrize("k", [64, 192])
def test_the_kernel_equals_the_spec_on_every_block_shape(rows: int, cout: int, k: int) -> None:
    u = RNG.integers(0, 256, (rows, k), dtype=np.uint8)
    w = RNG.integers(-128, 128, (k, cout), dtype=np.int8)
    bias, mult, shift = constants(cout)
    packed = amx.Packed(w, bias, mult, shift)
    for relu in (False, True):
        assert np.array_equal(amx.run(u, packed, relu), vnni._spec(u, w, bias, mult, shift, relu))


def test_weights_with_k_past_whole_tiles_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        amx.Packed(np.zeros((96, 8), np.int8), *constants(8))


@needs_amx
@pytest.mark.parametrize(
    ("images", "h", "w", "k", "pad"),
    [(1, 9, 9, 3, 1), (3, 5, 7, 3, 1), (2, 8, 6, 5, 2), (2, 6, 9, 3, 0)],
)
def test_windows_read_through_virtual_rows_equal_the_spec(
    images: int, h: int, w: int, k: int, pad: int
) -> None:
    """Stride-1 windows over a batch: from a zero-bordered copy (pad > 0) or in place from a
    channel slice of a wider buffer (pad 0), into a channel slice of a wider output whose
    other bytes stay as they were."""
    cin, cout, width, off = 64, 40, 80, 8
    x = RNG.integers(-128, 128, (images, h, w, cin), dtype=np.int8)
    weight = RNG.integers(-128, 128, (k, k, cin, cout), dtype=np.int8)
    bias, mult, shift = constants(cout)
    packed = amx.Packed(weight.reshape(-1, cout), bias, mult, shift)
    if pad:
        image = np.full((images, h + 2 * pad, w + 2 * pad, cin), 128, np.uint8)
        image[:, pad : pad + h, pad : pad + w] = offset_bytes(x)
        offset = 0
    else:
        image = RNG.integers(0, 256, (images, h, w, width), dtype=np.uint8)
        image[..., off : off + cin] = offset_bytes(x)
        offset = off
    _, hs, ws, cs = image.shape
    ho, wo = hs - k + 1, ws - k + 1
    count, pix = amx.virtual_rows(images, ho, wo, (hs, ws))
    assert count >= amx.ROWS
    out = np.full((images * ho * wo, 50), 7, np.uint8)
    flat = out.reshape(-1)
    taps = vnni.window_taps(ws, cs, (k, k))
    amx.conv(amx.tile_config(), image.reshape(-1), offset, cs, count, taps, 1, *packed.args(),
             np.int64(-128), cout, pix, flat, 5, 50, flat, 0, 50, *vnni.NO_ADD, False)  # fmt: skip
    want = reference.conv(x, weight, bias, mult, shift, 1, (pad,) * 4, False)
    assert np.array_equal(out[:, 5 : 5 + cout], offset_bytes(want.reshape(-1, cout)))
    assert (out[:, :5] == 7).all() and (out[:, 5 + cout :] == 7).all()


@needs_amx
@pytest.mark.parametrize("add_relu", [False, True])
@pytest.mark.parametrize(
    ("m0", "m1", "s2"), [(1 << 29, -(1 << 28), 30), ((1 << 31) - 1, -(1 << 31), 29)]
)
def test_the_fused_add_equals_the_spec(add_relu: bool, m0: int, m1: int, s2: int) -> None:
    rows, k, cout = 45, 128, 70
    u = RNG.integers(0, 256, (rows, k), dtype=np.uint8)
    w = RNG.integers(-128, 128, (k, cout), dtype=np.int8)
    bias, mult, shift = constants(cout)
    packed = amx.Packed(w, bias, mult, shift)
    res = RNG.integers(0, 256, (rows, cout), dtype=np.uint8)
    m = np.array([m0, m1], np.int32)
    out = np.zeros((rows, cout), np.uint8)
    add = (np.int64(m[0]), np.int64(m[1]), np.int64(1) << (s2 - 1), np.int64(s2),
           np.int64(0 if add_relu else -128))  # fmt: skip
    amx.conv(amx.tile_config(), u.reshape(-1), 0, k, rows, vnni.one_tap(), k // 64,
             *packed.args(), np.int64(0), cout, np.arange(rows, dtype=np.int64),
             out.reshape(-1), 0, cout, res.reshape(-1), 0, cout, *add, True)  # fmt: skip
    conv = (vnni._spec(u, w, bias, mult, shift, True).astype(np.int16) - 128).astype(np.int8)
    want = reference.add(conv, (res.astype(np.int16) - 128).astype(np.int8), m,
                         np.array([s2], np.int32), add_relu)  # fmt: skip
    assert np.array_equal(out, offset_bytes(want))


@needs_amx
def test_a_wrapped_accumulator_comes_back_with_the_bias() -> None:
    """sum(u * w) passes 2^31 while the spec's sum does not (vnni's test, in tiles of 64)."""
    k = 70016
    u, w = np.full((32, k), 255, np.uint8), np.full((k, 3), 127, np.int8)
    bias = np.array([-(1 << 30), 0, 1 << 29], np.int32)
    mult, shift = np.ones(3, np.int32), np.full(3, 24, np.int32)
    got = amx.run(u, amx.Packed(w, bias, mult, shift), False)
    assert np.array_equal(got, vnni._spec(u, w, bias, mult, shift, False))
    assert len(set(got[0].tolist())) == 3


def test_the_self_check_refuses_a_wrong_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel one off in a single output byte fails the check; the plan keeps the VNNI
    kernel for every CONV."""
    if not amx.available():
        pytest.skip("no AMX-INT8 here")
    real = amx.conv

    def off_by_one(*args: object) -> None:
        real(*args)
        out = args[16]
        assert isinstance(out, np.ndarray)
        out[int(args[17])] ^= 1  # type: ignore[call-overload]

    monkeypatch.setattr(amx, "conv", off_by_one)
    amx.available.cache_clear()
    try:
        assert amx._self_check() is False
        assert amx.available() is False
        assert native.fused_amx() is False
    finally:
        monkeypatch.undo()
        amx.available.cache_clear()
    assert amx.available() is True


def _mixed_program() -> tuple[Program, list[bool]]:
    """CONVs the AMX kernel takes (>= 32 virtual rows; Cin 64, or 96 read as 128 with zero
    weights: a 1x1 in place, one reading 128 bytes of a 160-channel pixel in place and one
    through a copy with zero channels, a padded 3x3, one with a fused ADD of its own output,
    strided 1x1s on sampled copies) and ones it leaves to the VNNI kernel (Cin 3, too few
    rows, a strided 3x3), with whether each is AMX's."""
    weights: list[np.ndarray] = []

    def conv(src: int, dst: int, k: int, stride: int = 1, res: bool = False,
             cin: int = 0) -> Instr:  # fmt: skip
        cin, cout = cin or shapes[src][2], shapes[dst][2]
        m = RNG.integers(1 << 20, 1 << 24, cout).astype(np.int32)
        base = len(weights)
        weights.extend([RNG.integers(-127, 128, (k, k, cin, cout), dtype=np.int8),
                        RNG.integers(-500, 500, cout).astype(np.int32), m,
                        np.full(cout, 30, np.int32)])  # fmt: skip
        if res:
            weights.extend([np.array([1 << 29, 1 << 28], np.int32), np.array([30], np.int32)])
        return Instr(Opcode.CONV, (TensorRef(src, 0, cin),), TensorRef(dst, 0, cout),
                     kernel=(k, k), stride=stride, pad=(k // 2,) * 4, relu=True, weight=base,
                     bias=base + 1, multiplier=base + 2, shift=base + 3,
                     residual=TensorRef(dst, 0, cout) if res else None,
                     add_multiplier=base + 4 if res else -1,
                     add_shift=base + 5 if res else -1)  # fmt: skip

    shapes = [(12, 12, 3), (12, 12, 64), (12, 12, 64), (6, 6, 96), (6, 6, 64), (12, 12, 96),
              (3, 3, 64), (6, 6, 64), (3, 3, 64), (12, 12, 160), (12, 12, 64)]  # fmt: skip
    instrs = [
        conv(0, 1, 3),  # Cin 3
        conv(1, 2, 1),  # 1x1 in place: 144 rows
        conv(2, 5, 3),  # padded 3x3
        conv(5, 3, 1, stride=2),  # strided, Cin 96
        conv(3, 4, 1),  # Cin 96
        conv(4, 6, 1, stride=2),  # strided: 9 rows
        conv(1, 2, 3, res=True),  # a fused ADD of the buffer it writes
        conv(1, 7, 1, stride=2),  # strided 1x1: 36 sampled pixels
        conv(4, 8, 3, stride=2),  # strided 3x3
        conv(1, 9, 1),  # into a wider buffer
        conv(9, 10, 1, cin=96),  # 96 of its 160 channels, read as 128 in place
    ]
    program = Program(
        buffers=[Buffer(i, *shape, 0.1) for i, shape in enumerate(shapes)],
        instrs=instrs,
        input=TensorRef(0, 0, 3),
        output=TensorRef(2, 0, 64),
        weights=weights,
    )
    return program, [False, True, True, True, True, False, True, True, False, True, True]


def _recording(calls: list[str], name: str, real: object) -> object:
    def kernel(*args: object) -> None:
        calls.append(name)
        real(*args)  # type: ignore[operator]

    return kernel


@needs_amx
def test_the_plan_gives_the_kernel_the_convs_it_fits_and_equals_the_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    program, fits = _mixed_program()
    monkeypatch.setattr(native, "VNNI", True)
    calls: list[str] = []
    monkeypatch.setattr(amx, "conv", _recording(calls, "amx", amx.conv))
    monkeypatch.setattr(vnni, "conv", _recording(calls, "vnni", vnni.conv))
    for setting in (None, True, False):
        monkeypatch.setattr(native, "AMX", setting)
        want = [f and setting is not False for f in fits]
        for out in (2, 4, 6, 7, 8, 10):  # each CONV's result reaches one of these
            ref = TensorRef(out, 0, program.buffers[out].channels)
            one = Program(program.buffers, program.instrs, program.input, ref, program.weights)
            plan = native.NativePlan(one)
            assert [plan._amx_fits(i) for i in program.instrs] == want
            for n in (1, 2):
                calls.clear()
                x = RNG.integers(-128, 128, (n, 12, 12, 3), dtype=np.int8)
                assert np.array_equal(plan.run(x), execute(one, x, reference)), (setting, out)
                assert calls == ["amx" if f else "vnni" for f in want]
