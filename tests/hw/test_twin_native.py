"""The twin's native path (numba kernels + ONNX Runtime int8 GEMM) equals the reference, the
spec, bit for bit: op by op on every shape class the four families use, on channel slices
(concatenation by addressing), at the saturation extremes, and on whole compiled programs.
Its CPU self-check refuses a GEMM that saturates like ``vpmaddubsw``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from fpga_serve.core.isa import Buffer, Instr, Opcode, Program, TensorRef, quantize_multiplier
from fpga_serve.hw.twin import amx, gemm, native, reference, share, vnni
from fpga_serve.hw.twin.device import TwinDevice
from fpga_serve.hw.twin.executor import execute

pytestmark = pytest.mark.skipif(not native.available(), reason="native twin path not exact here")

RNG = np.random.default_rng(77)


def i8(*shape: int, low: int = -128, high: int = 127) -> np.ndarray:
    return RNG.integers(low, high, shape, endpoint=True, dtype=np.int8)


def i32(*values: int) -> np.ndarray:
    return np.array(values, np.int32)


def requant(cout: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in RNG.uniform(0.2, 2.0, cout) / (k * 40)]
    return i32(*[m for m, _ in pairs]), i32(*[s for _, s in pairs])


def one_op(
    instr: Instr,
    in_shapes: list[tuple[int, int, int]],
    out_shape: tuple[int, int, int],
    weights: list[np.ndarray],
) -> Program:
    """A program around one instruction; buffer 0.. are its inputs, the last its output."""
    buffers = [Buffer(i, *shape, 0.1) for i, shape in enumerate([*in_shapes, out_shape])]
    return Program(
        buffers=buffers,
        instrs=[instr],
        input=instr.inputs[0],
        output=instr.output,
        weights=weights,
    )


def assert_native_equals_reference(program: Program, *extra_inputs: np.ndarray, n: int = 2) -> None:
    """Runs the native plan and the reference executor on the same input buffers."""
    ref_in = program.input
    b = program.buffers[ref_in.buffer]
    x = i8(n, b.height, b.width, ref_in.channels)
    plan = native.NativePlan(program)
    got = plan.run(x)
    want = execute(program, x, reference)
    assert got.dtype == np.int8 and got.shape == want.shape
    assert np.array_equal(got, want)


CONV_FORMS = ["int64 requant", "float64 requant", "plain gemm", "fused vnni", "fused amx"]


@pytest.fixture(params=CONV_FORMS)
def conv_form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test runs with CONVs as the int8 GEMM and the int64 requantisers, then with the
    float64 ones wherever those are exact (native.FLOAT_REQUANT), then with the GEMMs of CONVs
    on non-negative inputs in the plain form (native.PLAIN_GEMM; the requantisers this CPU
    would choose), whichever form this CPU would choose, then as the fused VNNI kernel
    (native.VNNI; skipped on a CPU without it), then with the CONVs it fits as the AMX kernel
    (native.AMX; skipped on a CPU without AMX-INT8)."""
    form = str(request.param)
    if form == "fused vnni" and not vnni.available():
        pytest.skip("no AVX-512 VNNI here (or its self-check failed)")
    if form == "fused amx" and not amx.available():
        pytest.skip("no AMX-INT8 here (or its self-check failed)")
    monkeypatch.setattr(native, "VNNI", form in ("fused vnni", "fused amx"))
    monkeypatch.setattr(native, "AMX", form == "fused amx")
    monkeypatch.setattr(native, "PLAIN_GEMM", form == "plain gemm")
    floating = None if form == "plain gemm" else form == "float64 requant"
    monkeypatch.setattr(native, "FLOAT_REQUANT", floating)
    return form


def share_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Element-wise passes of more than 1024 elements split over threads (share.bind)."""
    monkeypatch.setattr(share, "SPLIT_ELEMENTS", 1024)


CONV_CASES = [
    # (name, H, W, Cin, Cout, k, stride, pad, n)
    ("7x7/2 pad 3 (stem)", 20, 20, 3, 16, 7, 2, (3, 3, 3, 3), 2),
    ("3x3/1 pad 1", 9, 9, 32, 24, 3, 1, (1, 1, 1, 1), 2),
    ("3x3/2 pad right-bottom", 9, 9, 16, 8, 3, 2, (0, 1, 0, 1), 2),
    ("1x1/1 direct", 7, 7, 64, 32, 1, 1, (0, 0, 0, 0), 2),
    ("1x1/2 projection", 8, 8, 32, 64, 1, 2, (0, 0, 0, 0), 2),
    ("3x3x512 K=4608", 4, 4, 512, 8, 3, 1, (1, 1, 1, 1), 2),
    ("dense as 1x1 K=2048", 1, 1, 2048, 10, 1, 1, (0, 0, 0, 0), 3),
    ("rows split over threads", 48, 48, 8, 16, 3, 1, (1, 1, 1, 1), 1),
    ("5x5/2 a different pad on every side, odd sizes", 11, 13, 5, 7, 5, 2, (2, 1, 0, 3), 3),
    ("1x1/1 direct, odd sizes, batch 3", 5, 3, 3, 5, 1, 1, (0, 0, 0, 0), 3),
    ("3x3/1 pad 1, Cin 64 (AMX's virtual rows)", 9, 9, 64, 40, 3, 1, (1, 1, 1, 1), 2),
    ("1x1/1 Cin 128, one image (AMX)", 6, 6, 128, 48, 1, 1, (0, 0, 0, 0), 1),
]


def _case_program(case: tuple, relu: bool, bias: int = 500) -> tuple[Program, tuple[int, int, int]]:  # type: ignore[type-arg]
    """A one-CONV program of a CONV_CASES case (biases in [-bias, bias)), and its input's
    (H, W, Cin)."""
    _, h, w, cin, cout, k, stride, pad, _ = case
    ho = (h + pad[0] + pad[1] - k) // stride + 1
    wo = (w + pad[2] + pad[3] - k) // stride + 1
    m, s = requant(cout, k * k * cin)
    weights = [
        i8(k, k, cin, cout, low=-127),
        RNG.integers(-bias, bias, cout).astype(np.int32),
        m,
        s,
    ]
    instr = Instr(
        Opcode.CONV, (TensorRef(0, 0, cin),), TensorRef(1, 0, cout), kernel=(k, k),
        stride=stride, pad=pad, relu=relu, weight=0, bias=1, multiplier=2, shift=3,
    )  # fmt: skip
    return one_op(instr, [(h, w, cin)], (ho, wo, cout), weights), (h, w, cin)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv(case: tuple, relu: bool, monkeypatch: pytest.MonkeyPatch, conv_form: str) -> None:  # type: ignore[type-arg]
    if "split" in case[0]:
        share_rows(monkeypatch)
    program, _ = _case_program(case, relu, bias=5000)
    assert_native_equals_reference(program, n=case[-1])


@pytest.mark.parametrize("case", CONV_CASES[:3], ids=[c[0] for c in CONV_CASES[:3]])
def test_conv_in_blocks_of_output_rows(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    """Patch matrices made, multiplied and requantised block by block (BLOCK_BYTES small
    enough for a block of one or two output rows) equal the reference, at batch 2 and 3, with
    and without a fused residual ADD (the GEMM path's CONVs: the fused kernel reads these
    patches in place)."""
    monkeypatch.setattr(native, "VNNI", False)
    monkeypatch.setattr(native, "BLOCK_BYTES", 400)
    monkeypatch.setattr(native, "BLOCKED_BYTES", 800)
    program, (h, w, cin) = _case_program(case, relu=True)
    ho = program.buffers[1].height
    plan = native.NativePlan(program)
    for n in (2, 3, 3):
        x = i8(n, h, w, cin)
        assert np.array_equal(plan.run(x), execute(program, x, reference))
    assert len(plan._gathers[0](plan._kept)[1]) >= 3 * ho // 2  # blocks of <= 2 output rows
    fused = _residual_program(12, 1 << 29, True)
    x = i8(2, 12, 12, 8)
    assert np.array_equal(native.NativePlan(fused).run(x), execute(fused, x, reference))


@pytest.mark.parametrize("k", [1, 3])
def test_conv_reads_and_writes_channel_slices(k: int) -> None:
    """DenseNet's concatenation by addressing: read channels [8, 24) of a 40-channel buffer,
    write channels [16, 28) of a 32-channel one (the rest stays zero)."""
    m, s = requant(12, k * k * 16)
    weights = [i8(k, k, 16, 12, low=-127), np.zeros(12, np.int32), m, s]
    instr = Instr(
        Opcode.CONV,
        (TensorRef(0, 8, 16),),
        TensorRef(1, 16, 12),
        kernel=(k, k),
        pad=(k // 2,) * 4,
        relu=True,
        weight=0,
        bias=1,
        multiplier=2,
        shift=3,
    )
    program = one_op(instr, [(6, 6, 40)], (6, 6, 32), weights)
    x = i8(2, 6, 6, 40)
    # The program input is channels [8, 24) of buffer 0: run both on the full buffer contents.
    program.input = TensorRef(0, 0, 40)
    program.output = TensorRef(1, 0, 32)
    got = native.NativePlan(program).run(x)
    want = execute(program, x, reference)
    assert np.array_equal(got, want)
    assert (got[..., :16] == 0).all() and (got[..., 28:] == 0).all()


def test_conv_saturates_at_the_extremes(conv_form: str) -> None:
    """|sum| far beyond int16 and the int8 range: -128 inputs (offset byte 0) against -127,
    127 against 127, with the smallest and largest shifts the spec allows."""
    for value, wval, (mult, shift) in (
        (-128, -127, (1 << 30, 62)),
        (127, 127, (2**31 - 1, 1)),
        (-128, 127, quantize_multiplier(1e-6)),
    ):
        weights = [
            np.full((3, 3, 300, 2), wval, np.int8),
            i32(0, -(2**30)),
            i32(mult, mult),
            i32(shift, shift),
        ]
        instr = Instr(
            Opcode.CONV,
            (TensorRef(0, 0, 300),),
            TensorRef(1, 0, 2),
            kernel=(3, 3),
            pad=(1, 1, 1, 1),
            weight=0,
            bias=1,
            multiplier=2,
            shift=3,
        )
        program = one_op(instr, [(4, 4, 300)], (4, 4, 2), weights)
        x = np.full((1, 4, 4, 300), value, np.int8)
        assert np.array_equal(native.NativePlan(program).run(x), execute(program, x, reference))


def _residual_program(size: int, mult: int, add_relu: bool) -> Program:
    """A 1x1 CONV writes the residual into channels [4, 12) of buffer 1; a 3x3 CONV with a
    fused ADD of that residual writes buffer 2. ``mult`` large makes the CONV's own result
    saturate before the ADD (the ADD sees the clamped int8 value)."""
    m, s = requant(8, 8)
    weights = [
        i8(1, 1, 8, 8, low=-127),
        RNG.integers(-3000, 3000, 8).astype(np.int32),
        m,
        s,
        i8(3, 3, 8, 8, low=-127),
        i32(*[mult] * 8),
        i32(*[30] * 8),
        i32(1_500_000_000, 700_000_000),
        i32(31),
    ]
    common = {"kernel": (3, 3), "pad": (1, 1, 1, 1), "relu": True, "multiplier": 5, "shift": 6}
    producer = Instr(
        Opcode.CONV, (TensorRef(0, 0, 8),), TensorRef(1, 4, 8), weight=0, bias=1, multiplier=2,
        shift=3,
    )  # fmt: skip
    fused = Instr(
        Opcode.CONV, (TensorRef(0, 0, 8),), TensorRef(2, 0, 8), weight=4, bias=1,
        residual=TensorRef(1, 4, 8), add_multiplier=7, add_shift=8, add_relu=add_relu, **common,
    )  # fmt: skip
    return Program(
        buffers=[Buffer(0, size, size, 8, 0.1), Buffer(1, size, size, 12, 0.1),
                 Buffer(2, size, size, 8, 0.1)],
        instrs=[producer, fused],
        input=TensorRef(0, 0, 8),
        output=TensorRef(2, 0, 8),
        weights=weights,
    )  # fmt: skip


@pytest.mark.parametrize("add_relu", [False, True])
@pytest.mark.parametrize("mult", [1 << 18, 1 << 29])
@pytest.mark.parametrize("size", [9, 48])
def test_conv_with_a_fused_residual_add(
    size: int, mult: int, add_relu: bool, monkeypatch: pytest.MonkeyPatch, conv_form: str
) -> None:
    """CONV + fused ADD in one pass (kernels.requant_add) equals the CONV then the ADD of the
    spec, also when the CONV saturates and over rows split between threads (48 x 48)."""
    if size == 48:
        share_rows(monkeypatch)
    program = _residual_program(size, mult, add_relu)
    x = i8(1, size, size, 8)
    want = execute(program, x, reference)
    assert np.array_equal(native.NativePlan(program).run(x), want)
    w = program.weights
    own = reference.conv(x, w[4], w[1], w[5], w[6], 1, (1, 1, 1, 1), True)
    assert ((own == 127).mean() > 0.2) == (mult == 1 << 29)  # saturating where meant to


@pytest.mark.parametrize("native_path", [None, False], ids=["native", "numpy"])
def test_a_wrapped_accumulator_comes_back_with_the_bias(
    native_path: bool | None, conv_form: str
) -> None:
    """140,000 products of +-16,256 (x = -128, w = -+127) sum beyond int32 and the bias brings
    the spec's sum back into range (the reference accepts it, 1.2e9 and -1.2e9): the twin's
    int32 GEMM accumulator wrapped on the way, and the bias added modulo 2^32 undoes that."""
    k = 140_000
    weight = np.stack([np.full(k, -127), np.full(k, 127)], axis=-1).astype(np.int8)
    weights = [weight.reshape(1, 1, k, 2), i32(-(2**30), 2**30), i32(2**30, 2**30), i32(54, 54)]
    instr = Instr(
        Opcode.CONV, (TensorRef(0, 0, k),), TensorRef(1, 0, 2), weight=0, bias=1, multiplier=2,
        shift=3,
    )  # fmt: skip
    program = one_op(instr, [(1, 1, k)], (1, 1, 2), weights)
    x = np.full((1, 1, 1, k), -128, np.int8)
    want = execute(program, x, reference)
    assert want.ravel().tolist() == [72, -72]
    loaded = TwinDevice(native=native_path).load(program)
    assert loaded.path == ("native" if native_path is None else "numpy")  # type: ignore[attr-defined]
    assert np.array_equal(loaded.run(x), want)


@pytest.mark.parametrize(
    ("kernel", "stride", "pad", "pad_value"),
    [((3, 3), 2, (1, 1, 1, 1), 0), ((3, 3), 2, (0, 1, 0, 1), -128), ((2, 2), 2, (0, 0, 0, 0), 0)],
)
@pytest.mark.parametrize("shared", [False, True], ids=["one thread", "rows shared"])
def test_maxpool(
    kernel: tuple[int, int],
    stride: int,
    pad: tuple[int, int, int, int],
    pad_value: int,
    shared: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if shared:
        monkeypatch.setattr(share, "SPLIT_ELEMENTS", 64)
    ho = (11 + pad[0] + pad[1] - kernel[0]) // stride + 1
    instr = Instr(
        Opcode.MAXPOOL,
        (TensorRef(0, 0, 8),),
        TensorRef(1, 0, 8),
        kernel=kernel,
        stride=stride,
        pad=pad,
        pad_value=pad_value,
    )
    assert_native_equals_reference(one_op(instr, [(11, 11, 8)], (ho, ho, 8), []))


def test_avgpool_counts_padding_and_global_avgpool() -> None:
    m, s = quantize_multiplier(1 / 9 * 0.9)
    instr = Instr(
        Opcode.AVGPOOL,
        (TensorRef(0, 0, 16),),
        TensorRef(1, 0, 16),
        kernel=(3, 3),
        stride=2,
        pad=(1, 1, 1, 1),
        multiplier=0,
        shift=1,
    )
    assert_native_equals_reference(one_op(instr, [(8, 8, 16)], (4, 4, 16), [i32(m), i32(s)]))
    m, s = quantize_multiplier(1 / 64 * 1.3)
    instr = Instr(
        Opcode.GLOBAL_AVGPOOL, (TensorRef(0, 0, 16),), TensorRef(1, 0, 16), multiplier=0, shift=1
    )
    assert_native_equals_reference(one_op(instr, [(8, 8, 16)], (1, 1, 16), [i32(m), i32(s)]))


@pytest.mark.parametrize("relu", [False, True])
def test_add_with_different_scales(relu: bool) -> None:
    weights = [i32(1_500_000_000, 700_000_000), i32(31)]
    instr = Instr(
        Opcode.ADD,
        (TensorRef(0, 0, 12), TensorRef(1, 4, 12)),
        TensorRef(2, 0, 12),
        relu=relu,
        multiplier=0,
        shift=1,
    )
    program = one_op(instr, [(5, 5, 12), (5, 5, 20)], (5, 5, 12), weights)
    plan = native.NativePlan(program)
    # Fill both inputs: the second through a program that copies nothing, so run by steps.
    a, b = i8(2, 5, 5, 12), i8(2, 5, 5, 20)
    bufs = {
        0: a.view(np.uint8) ^ 0x80,
        1: b.view(np.uint8) ^ 0x80,
        2: np.zeros((2, 5, 5, 12), np.uint8),
    }
    for _, step in plan.steps:
        step(bufs)
    got = (bufs[2] ^ 0x80).view(np.int8)
    want = reference.add(a, b[..., 4:16], weights[0], weights[1], relu)
    assert np.array_equal(got, want)


def test_scale_shift_on_a_channel_slice(conv_form: str) -> None:
    mult = RNG.integers(-(2**30), 2**30, 16).astype(np.int32)
    bias = RNG.integers(-(2**30), 2**30, 16).astype(np.int32)
    instr = Instr(
        Opcode.SCALE_SHIFT,
        (TensorRef(0, 8, 16),),
        TensorRef(1, 0, 16),
        relu=True,
        multiplier=0,
        bias=1,
        shift=2,
    )
    program = one_op(instr, [(4, 4, 32)], (4, 4, 16), [mult, bias, i32(30)])
    program.input = TensorRef(0, 0, 32)
    x = i8(2, 4, 4, 32)
    assert np.array_equal(native.NativePlan(program).run(x), execute(program, x, reference))


def _read_before_write_program() -> Program:
    """Two CONVs: the first reads buffer 1 before the second writes it (the spec's initial
    zeros), so a run on buffers kept from the last run must reset them to be exact."""
    m, s = requant(8, 8)
    weights = [i8(1, 1, 8, 8, low=-127), np.full(8, 5000, np.int32), m, s]
    common = {"kernel": (1, 1), "weight": 0, "bias": 1, "multiplier": 2, "shift": 3}
    first = Instr(Opcode.CONV, (TensorRef(1, 0, 8),), TensorRef(2, 0, 8), **common)
    second = Instr(Opcode.CONV, (TensorRef(0, 0, 8),), TensorRef(1, 0, 8), **common)
    return Program(
        buffers=[Buffer(i, 4, 4, 8, 0.1) for i in range(3)],
        instrs=[first, second],
        input=TensorRef(0, 0, 8),
        output=TensorRef(2, 0, 8),
        weights=weights,
    )


def test_only_buffers_read_before_written_are_reset() -> None:
    """The read-before-write buffer and an output channel range nothing writes need a reset
    between runs; buffers every run writes before reading do not."""
    assert native.reset_buffers(_read_before_write_program()) == {1}
    program = _residual_program(6, 1 << 20, False)
    assert native.reset_buffers(program) == set()
    program.output = TensorRef(1, 0, 12)  # channels [0, 4) of buffer 1: never written
    assert native.reset_buffers(program) == {1}


def test_runs_on_kept_buffers_equal_the_reference_run_after_run() -> None:
    """Buffers are kept between runs: every run, after other inputs and another batch size,
    still equals the reference, also for a program that reads a buffer before writing it; runs
    that overlap in time (the kept buffers busy) get buffers of their own."""
    import threading

    program = _read_before_write_program()
    plan = native.NativePlan(program)
    for n in (2, 2, 3, 2):
        x = i8(n, 4, 4, 8)
        assert np.array_equal(plan.run(x), execute(program, x, reference))
    inputs = [i8(2, 4, 4, 8) for _ in range(6)]
    got: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        got[i] = plan.run(inputs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(inputs):
        assert np.array_equal(got[i], execute(program, x, reference))


def test_kept_buffers_serve_smaller_batches_and_stop_at_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kept buffers are made for the largest batch seen; a smaller batch runs on views of
    them (dynamic batching mixes sizes) and a larger one replaces them, unless it would take
    more than REUSE_BYTES."""
    program = _read_before_write_program()
    plan = native.NativePlan(program)
    for n in (3, 2, 1, 3):
        x = i8(n, 4, 4, 8)
        assert np.array_equal(plan.run(x), execute(program, x, reference))
    kept = {k: v for k, v in plan._kept.items()}
    assert plan._kept_n == 3 and sorted(plan._bound) == [1, 2, 3]
    x = i8(2, 4, 4, 8)
    assert np.array_equal(plan.run(x), execute(program, x, reference))
    assert all(plan._kept[k] is v for k, v in kept.items())  # nothing made anew
    monkeypatch.setattr(native, "REUSE_BYTES", sum(v.nbytes for v in kept.values()))
    x = i8(4, 4, 4, 8)
    assert np.array_equal(plan.run(x), execute(program, x, reference))
    assert plan._kept_n == 3  # a batch of 4 would pass the cap: its buffers were not kept


def test_a_batch_runs_in_passes_sized_by_its_scratch(
    monkeypatch: pytest.MonkeyPatch, conv_form: str
) -> None:
    """Images per pass: PASS_BYTES over the patch matrix and accumulator bytes an image needs
    (4x4x72 patches + 4x4x8 int32 for the GEMM path's 3x3 CONV below: 1,664). A batch above it
    runs in passes, the last one shorter, on buffers kept for one pass; the result is the
    reference's. The fused kernels read this CONV's patches in place: no scratch, so any batch
    is one pass."""
    program = _padded_conv_program()
    x = i8(5, 4, 4, 8)
    if conv_form in ("fused vnni", "fused amx"):
        plan = native.NativePlan(program)
        assert plan.images_per_pass == native.PASS_BYTES
        assert np.array_equal(plan.run(x), execute(program, x, reference))
        return
    per_image = 1664
    monkeypatch.setattr(native, "PASS_BYTES", 2 * per_image + per_image - 1)
    plan = native.NativePlan(program)
    assert plan.images_per_pass == 2
    assert np.array_equal(plan.run(x), execute(program, x, reference))
    assert plan._kept_n == 2 and sorted(plan._bound) == [1, 2]
    monkeypatch.setattr(native, "PASS_BYTES", 1)
    one = native.NativePlan(program)
    assert one.images_per_pass == 1
    assert np.array_equal(one.run(x), execute(program, x, reference))


def _padded_conv_program() -> Program:
    m, s = requant(8, 72)
    weights = [i8(3, 3, 8, 8, low=-127), np.zeros(8, np.int32), m, s]
    conv = Instr(Opcode.CONV, (TensorRef(0, 0, 8),), TensorRef(1, 0, 8), kernel=(3, 3),
                 pad=(1, 1, 1, 1), weight=0, bias=1, multiplier=2, shift=3)  # fmt: skip
    return Program(
        buffers=[Buffer(0, 4, 4, 8, 0.1), Buffer(1, 4, 4, 8, 0.1)],
        instrs=[conv],
        input=TensorRef(0, 0, 8),
        output=TensorRef(1, 0, 8),
        weights=weights,
    )


def test_gathering_convs_on_kept_buffers_follow_batch_size_and_input() -> None:
    """Padded and strided CONVs gather through views of the kept buffers built once per batch
    size: after every change of input and batch size the result is still the reference's."""
    m, s = requant(8, 72)
    weights = [i8(3, 3, 8, 8, low=-127), np.zeros(8, np.int32), m, s]
    common = {"kernel": (3, 3), "weight": 0, "bias": 1, "multiplier": 2, "shift": 3}
    first = Instr(Opcode.CONV, (TensorRef(0, 0, 8),), TensorRef(1, 0, 8), pad=(1, 1, 1, 1),
                  relu=True, **common)  # fmt: skip
    second = Instr(Opcode.CONV, (TensorRef(1, 0, 8),), TensorRef(2, 0, 8), stride=2, **common)
    program = Program(
        buffers=[Buffer(0, 7, 7, 8, 0.1), Buffer(1, 7, 7, 8, 0.1), Buffer(2, 3, 3, 8, 0.1)],
        instrs=[first, second],
        input=TensorRef(0, 0, 8),
        output=TensorRef(2, 0, 8),
        weights=weights,
    )
    plan = native.NativePlan(program)
    for n in (2, 2, 3, 1, 3):
        x = i8(n, 7, 7, 8)
        assert np.array_equal(plan.run(x), execute(program, x, reference))


@pytest.mark.parametrize("family", ["resnet50", "densenet121", "vgg16"])
def test_whole_zoo_programs_equal_the_reference(family: str, conv_form: str) -> None:
    """Every op the family compiles to, in sequence, at 32x32 with random weights."""
    from fpga_serve.core.isa import quantize_input
    from fpga_serve.models import ZOO

    zoo = ZOO[family](None, input_size=32)
    calib = RNG.normal(0, 50, (2, 32, 32, 3)).astype(np.float32)
    program = zoo.compile(calib).compiled.program
    x = quantize_input(RNG.normal(0, 50, (2, 32, 32, 3)).astype(np.float32), program.input_scale)
    loaded = TwinDevice().load(program)
    assert loaded.path == "native"  # type: ignore[attr-defined]
    assert np.array_equal(loaded.run(x), TwinDevice(reference=True).load(program).run(x))


def _saturating_gemm(cols: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """u8 x s8 the way ``vpmaddubsw`` does it: adjacent products summed with int16 saturation."""
    prod = cols.astype(np.int64)[:, :, None] * weight.astype(np.int64)[None]
    k = prod.shape[1] - prod.shape[1] % 2
    pairs = np.clip(prod[:, 0:k:2] + prod[:, 1:k:2], -32768, 32767).sum(axis=1)
    rest = prod[:, k:].sum(axis=1)
    zero_point = 128 * weight.astype(np.int64).sum(axis=0)
    return (pairs + rest - zero_point).astype(np.int32)


def _chain_program() -> tuple[Program, set[int]]:
    """CONVs whose inputs come from every kind of producer, and the indices of those whose
    inputs are all >= 0 on every run: after a ReLU or a fused ADD's ReLU (direct 1x1, padded
    3x3 with a fused ADD, strided 1x1, a channel slice), a MAXPOOL padding with 0 and an
    AVGPOOL or GLOBAL_AVGPOOL (M >= 0) of such values, channels no op has written (zeros).
    Not: the program's input, a CONV without ReLU, a fused ADD without ReLU, a MAXPOOL padding
    with -128, a slice of which part was written without ReLU."""
    weights: list[np.ndarray] = []

    def const(*arrays: np.ndarray) -> list[int]:
        weights.extend(arrays)
        return list(range(len(weights) - len(arrays), len(weights)))

    def conv(
        src: TensorRef,
        dst: TensorRef,
        k: int = 1,
        relu: bool = True,
        res: TensorRef | None = None,
        add_relu: bool = False,
        stride: int = 1,
    ) -> Instr:
        m, s = requant(dst.channels, k * k * src.channels)
        bias = RNG.integers(-500, 500, dst.channels).astype(np.int32)
        wi, bi, mi, si = const(i8(k, k, src.channels, dst.channels, low=-127), bias, m, s)
        am, ash = const(i32(1_100_000_000, 900_000_000), i32(31)) if res else (-1, -1)
        return Instr(
            Opcode.CONV, (src,), dst, kernel=(k, k), stride=stride,
            pad=(1, 1, 1, 1) if k == 3 else (0, 0, 0, 0), relu=relu, weight=wi, bias=bi,
            multiplier=mi, shift=si, residual=res, add_multiplier=am, add_shift=ash,
            add_relu=add_relu,
        )  # fmt: skip

    def pool(op: Opcode, src: TensorRef, dst: TensorRef, pad_value: int = 0) -> Instr:
        m, s = const(*(i32(v) for v in quantize_multiplier(1 / 9)))
        return Instr(op, (src,), dst, kernel=(3, 3), pad=(1, 1, 1, 1), pad_value=pad_value,
                     multiplier=m, shift=s)  # fmt: skip

    def ref(b: int, c: int, off: int = 0) -> TensorRef:
        return TensorRef(b, off, c)

    shapes = [(6, 6, 8), (6, 6, 16), (6, 6, 16), (6, 6, 16), (3, 3, 16), (3, 3, 16),
              (3, 3, 32), (3, 3, 8), (3, 3, 8), (3, 3, 8), (3, 3, 8), (3, 3, 8), (3, 3, 8),
              (1, 1, 8), (1, 1, 8)]  # fmt: skip
    gap_m, gap_s = const(*(i32(v) for v in quantize_multiplier(1 / 9)))
    instrs = [
        conv(ref(0, 8), ref(1, 16), k=3),  # 0: reads the program's input
        conv(ref(1, 16), ref(2, 16), relu=False),  # 1: direct 1x1 on a ReLU's output
        conv(ref(1, 16), ref(3, 16), k=3, res=ref(2, 16)),  # 2: padded 3x3, ADD without ReLU
        conv(ref(3, 16), ref(2, 16), res=ref(1, 16), add_relu=True),  # 3: reads 2's output
        conv(ref(2, 16), ref(4, 16), stride=2),  # 4: strided, on 3's ADD + ReLU
        pool(Opcode.MAXPOOL, ref(4, 16), ref(5, 16), pad_value=-128),
        conv(ref(5, 16), ref(7, 8)),  # 6: a MAXPOOL that pads with -128
        pool(Opcode.MAXPOOL, ref(4, 16), ref(6, 16)),
        pool(Opcode.AVGPOOL, ref(4, 16), ref(6, 16, 16)),
        conv(ref(6, 32), ref(8, 8), k=3, relu=False),  # 9: the two pools' channels
        conv(ref(6, 16, 8), ref(10, 8)),  # 10: a slice across both pools
        conv(ref(9, 8), ref(11, 8)),  # 11: a buffer no op writes
        conv(
            ref(8, 8), ref(6, 8, 24), relu=False
        ),  # 12: on 9's output (no ReLU); rewrites 6[24:32]
        conv(ref(6, 16, 16), ref(12, 8)),  # 13: half of it now from 12
        conv(ref(6, 16), ref(7, 8)),  # 14: the MAXPOOL's half, still >= 0
        Instr(Opcode.GLOBAL_AVGPOOL, (ref(7, 8),), ref(13, 8), multiplier=gap_m, shift=gap_s),
        conv(ref(13, 8), ref(14, 8)),  # 16: on a GLOBAL_AVGPOOL of a ReLU's output
    ]
    program = Program(
        buffers=[Buffer(i, *shape, 0.1) for i, shape in enumerate(shapes)],
        instrs=instrs,
        input=ref(0, 8),
        output=ref(14, 8),
        weights=weights,
    )
    return program, {1, 2, 4, 9, 10, 11, 14, 16}


def test_nonnegative_inputs_are_proven_only_where_every_channel_read_is_clamped() -> None:
    program, proven = _chain_program()
    assert native.nonnegative_inputs(program) == proven


def test_convs_on_nonnegative_inputs_take_the_plain_gemm_and_equal_the_spec(
    conv_form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every CONV's output of the chain program (each in turn the program's output) equals
    the reference's; with the plain form, exactly the proven CONVs' GEMMs are made in it."""
    program, proven = _chain_program()
    gemm.exact_form()  # the self-checks' GEMMs are made before the recording starts
    gemm.plain_form()
    forms: list[str] = []
    real = gemm.Int8Gemm

    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, weight: np.ndarray, form: str | None = None) -> None:
            super().__init__(weight, form)
            forms.append(self.form)

    monkeypatch.setattr(gemm, "Int8Gemm", Recording)
    x = i8(2, 6, 6, 8)
    for index, instr in enumerate(program.instrs):
        if instr.op is not Opcode.CONV:
            continue
        one = Program(program.buffers, program.instrs, program.input, instr.output,
                      program.weights)  # fmt: skip
        forms.clear()
        got = native.NativePlan(one).run(x)
        assert np.array_equal(got, execute(one, x, reference)), index
        plain = [i for i, form in enumerate(forms) if form == gemm.PLAIN]
        conv_indices = [i for i, ins in enumerate(program.instrs) if ins.op is Opcode.CONV]
        want = (
            [n for n, i in enumerate(conv_indices) if i in proven]
            if conv_form == "plain gemm"
            else []
        )
        assert plain == want


def test_a_bound_gemm_reads_its_input_at_each_call_and_refuses_copies() -> None:
    """Int8Gemm.bind: the call multiplies what the bound input holds when it is called, into
    the bound output; an array ONNX Runtime would bind as a copy (not C-contiguous) is refused."""
    weight = i8(40, 12)
    g = gemm.Int8Gemm(weight)
    cols = RNG.integers(0, 256, (7, 40), dtype=np.uint8)
    out = np.zeros((7, 12), np.int32)
    call = g.bind(cols, out)
    for _ in range(2):
        cols[:] = RNG.integers(0, 256, cols.shape, dtype=np.uint8)
        call()
        assert np.array_equal(out, (cols.astype(np.int64) - 128) @ weight.astype(np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        g.bind(np.zeros((7, 80), np.uint8)[:, ::2], out)
    with pytest.raises(ValueError, match="C-contiguous"):
        g.bind(cols, np.zeros((7, 24), np.int32)[:, ::2])


def _saturating_in(forms: tuple[str, ...], how: str) -> type:
    """An Int8Gemm that saturates like ``vpmaddubsw`` in ``forms``, in one way the plan uses it
    (``how``: a call, or bound in place to kept arrays), and is the real one otherwise."""
    real = gemm.Int8Gemm

    class Saturating(real):  # type: ignore[misc, valid-type]
        def __init__(self, weight: np.ndarray, form: str | None = None) -> None:
            super().__init__(weight, form)
            self.weight = weight
            self.saturates = self.form in forms

        def __call__(self, cols: np.ndarray) -> np.ndarray:
            if self.saturates and how == "call":
                return _saturating_gemm(cols, self.weight)
            return super().__call__(cols)

        def bind(self, cols: np.ndarray, out: np.ndarray) -> Callable[[], None]:
            if not (self.saturates and how == "bound"):
                return super().bind(cols, out)

            def call() -> None:
                out[:] = _saturating_gemm(cols, self.weight)

            return call

    return Saturating


@pytest.mark.parametrize("how", ["call", "bound"])
def test_self_check_refuses_a_saturating_gemm(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GEMM that saturates like ``vpmaddubsw`` in every form, in either way the plan uses it
    (a call, or bound in place to kept arrays), makes the self-check refuse the native path."""
    gemm.exact_form.cache_clear()
    try:
        assert gemm.exact_here()  # the real runtime on this CPU
        gemm.exact_form.cache_clear()
        monkeypatch.setattr(gemm, "Int8Gemm", _saturating_in(gemm.FORMS, how))
        assert gemm.exact_form() is None and not gemm.exact_here()
        assert TwinDevice().native is False  # falls back to the numpy path
    finally:
        gemm.exact_form.cache_clear()


def test_a_cpu_whose_u8s8_gemm_saturates_gets_u8u8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the u8 x s8 kernels saturate (x86 without VNNI), the self-check picks the u8 x u8
    form, the plan's GEMMs are made in it, and the native path stays exact and in use."""
    monkeypatch.setattr(native, "VNNI", False)  # the GEMM path's CONVs
    gemm.exact_form.cache_clear()
    try:
        monkeypatch.setattr(gemm, "Int8Gemm", _saturating_in(("u8s8",), "call"))
        assert gemm.exact_form() == "u8u8"
        made: list[str] = []
        real = gemm.Int8Gemm

        class Recording(real):  # type: ignore[misc, valid-type]
            def __init__(self, weight: np.ndarray, form: str | None = None) -> None:
                super().__init__(weight, form)
                made.append(self.form)

        monkeypatch.setattr(gemm, "Int8Gemm", Recording)
        assert TwinDevice().native is True
        program = _padded_conv_program()
        x = i8(2, 4, 4, 8)
        assert np.array_equal(native.NativePlan(program).run(x), execute(program, x, reference))
        assert made and set(made) == {"u8u8"}
    finally:
        gemm.exact_form.cache_clear()


def test_the_numpy_path_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    program = one_op(
        Instr(Opcode.MAXPOOL, (TensorRef(0, 0, 4),), TensorRef(1, 0, 4), kernel=(2, 2), stride=2),
        [(4, 4, 4)],
        (2, 2, 4),
        [],
    )
    assert TwinDevice().load(program).path == "native"  # type: ignore[attr-defined]
    assert TwinDevice(native=False).load(program).path == "numpy"  # type: ignore[attr-defined]
    # The deprecated FPGA_SERVE_TWIN_NATIVE=0 still chooses it, through the server's settings.
    from fpga_serve.core.settings import ServerSettings
    from fpga_serve.hw.registry import select_device

    monkeypatch.setenv("FPGA_SERVE_TWIN_NATIVE", "0")
    path = ServerSettings().twin_path
    assert path == "numpy"
    assert select_device("twin", {"twin_path": path}).load(program).path == "numpy"  # type: ignore[attr-defined]
    monkeypatch.setenv("FPGA_SERVE_TWIN_PATH", "native")  # the current name wins
    assert ServerSettings().twin_path == "native"


def test_rounding_ties_go_up_in_every_requantiser(conv_form: str) -> None:
    """M = 2^30 with S = 31 (x 0.5) and S = 32 (x 0.25) make exact halves common: the spec
    rounds them up (toward +inf), for positive and negative sums alike."""
    half, quarter = (1 << 30, 31), (1 << 30, 32)
    x_small = RNG.integers(-20, 20, (2, 6, 6, 8), endpoint=True).astype(np.int8)
    conv = Instr(
        Opcode.CONV,
        (TensorRef(0, 0, 8),),
        TensorRef(1, 0, 4),
        kernel=(1, 1),
        weight=0,
        bias=1,
        multiplier=2,
        shift=3,
    )
    weights = [
        i8(1, 1, 8, 4, low=-3, high=3),
        i32(1, -1, 0, 3),
        i32(*[half[0]] * 4),
        i32(*[half[1]] * 4),
    ]
    avg = Instr(
        Opcode.AVGPOOL,
        (TensorRef(0, 0, 8),),
        TensorRef(1, 0, 8),
        kernel=(2, 2),
        stride=2,
        multiplier=0,
        shift=1,
    )
    scale = Instr(
        Opcode.SCALE_SHIFT,
        (TensorRef(0, 0, 8),),
        TensorRef(1, 0, 8),
        multiplier=0,
        bias=1,
        shift=2,
    )
    cases = [
        (one_op(conv, [(6, 6, 8)], (6, 6, 4), weights)),
        (one_op(avg, [(6, 6, 8)], (3, 3, 8), [i32(quarter[0]), i32(quarter[1])])),
        (
            one_op(
                scale,
                [(6, 6, 8)],
                (6, 6, 8),
                [i32(*[half[0]] * 8), i32(*range(-4, 4)), i32(half[1])],
            )
        ),
    ]
    for program in cases:
        got = native.NativePlan(program).run(x_small)
        assert np.array_equal(got, execute(program, x_small, reference))
    add = Instr(
        Opcode.ADD,
        (TensorRef(0, 0, 8), TensorRef(1, 0, 8)),
        TensorRef(2, 0, 8),
        multiplier=0,
        shift=1,
    )
    plan = native.NativePlan(
        one_op(add, [(6, 6, 8)] * 2, (6, 6, 8), [i32(half[0], half[0]), i32(half[1])])
    )
    b = RNG.integers(-20, 20, x_small.shape, endpoint=True).astype(np.int8)
    bufs = {
        0: x_small.view(np.uint8) ^ 0x80,
        1: b.view(np.uint8) ^ 0x80,
        2: np.zeros(x_small.shape, np.uint8),
    }
    plan.steps[0][1](bufs)
    want = reference.add(x_small, b, i32(half[0], half[0]), i32(half[1]), False)
    assert np.array_equal((bufs[2] ^ 0x80).view(np.int8), want)


def test_twin_path_setting_reaches_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from fpga_serve.core.errors import DeviceError
    from fpga_serve.core.settings import ServerSettings
    from fpga_serve.hw.registry import select_device

    program = one_op(
        Instr(Opcode.MAXPOOL, (TensorRef(0, 0, 4),), TensorRef(1, 0, 4), kernel=(2, 2), stride=2),
        [(4, 4, 4)],
        (2, 2, 4),
        [],
    )
    monkeypatch.setenv("FPGA_SERVE_TWIN_PATH", "numpy")
    options = {"twin_path": ServerSettings().twin_path}
    assert select_device("twin", options).load(program).path == "numpy"  # type: ignore[attr-defined]
    assert select_device("twin", {"twin_path": "native"}).load(program).path == "native"  # type: ignore[attr-defined]
    monkeypatch.setattr(native, "available", lambda: False)  # a CPU without it
    with pytest.raises(DeviceError, match="native path is not available"):
        select_device("twin", {"twin_path": "native"})
    assert select_device("twin", {"twin_path": "auto"}).load(program).path == "numpy"  # type: ignore[attr-defined]


def _near_boundaries(mult: int, shift: int) -> np.ndarray:
    """int32 sums x whose x * M / 2^S lies on, and one to two multiples of M around, every
    rounding boundary K + 1/2 of the clamp's range and its both sides (K in [-131, 130]); with
    M = 1 these include sums one 2^-S unit below a boundary, the proof's tightest case."""
    xs: list[int] = [-(2**31), 2**31 - 1, -1, 0, 1]
    for k in range(-131, 131):
        edge = (2 * k + 1) << (shift - 1)  # x * M = edge: exactly K + 1/2
        xs += [edge // mult + d for d in (-1, 0, 1, 2)]
    return np.array([x for x in xs if -(2**31) <= x < 2**31], np.int32)


@pytest.mark.parametrize("shift", [1, 2, 12, 24, 31, 32, 44, 45])
@pytest.mark.parametrize("mult", [1, 3, 1 << 30, 2**31 - 1, 1_234_567_891])
def test_the_float_requantiser_equals_the_spec_at_its_rounding_boundaries(
    mult: int, shift: int
) -> None:
    """kernels.requant_f64 (every S <= FLOAT_MAX_SHIFT) against the reference's int64
    requantisation, with both clamps, on sums at and around each rounding boundary; a bias
    that wraps the int32 sum is taken modulo 2^32 as in kernels.requant."""
    from fpga_serve.hw.twin import kernels

    assert shift <= kernels.FLOAT_MAX_SHIFT
    x = _near_boundaries(mult, shift)
    acc = (x.astype(np.int64) - 77).astype(np.int32).reshape(-1, 1)  # + bias 77 gives x back
    bias, m, s = i32(77), i32(mult), i32(shift)
    for relu in (False, True):
        want = reference.requantize(x.reshape(-1, 1), m, s, relu).astype(np.int16) + 128
        out = np.zeros_like(acc, np.uint8)
        scale = np.array([mult * 2.0**-shift])
        kernels.requant_f64(acc, bias, scale, 0.0 if relu else -128.0, out, 0, 0, len(x))
        assert np.array_equal(out, want)


@pytest.mark.parametrize(
    ("m0", "m1", "shift"),
    [
        (1 << 30, 1 << 29, 30),
        (1_500_000_001, 1_234_567_891, 31),  # results over the int8 range, fine fractions
        (2**31 - 1, 2**31 - 3, 32),
        (2**31 - 1, 2**31 - 1, 53),
        (1, 3, 1),
        (987_654_321, 55_555, 40),
    ],
)
def test_the_float_fused_add_equals_the_spec_on_every_pair(m0: int, m1: int, shift: int) -> None:
    """kernels.requant_add_f64 against reference.add on all 65,536 pairs (CONV result v,
    residual b) of int8 values, with and without the ADD's ReLU, at shifts up to
    FLOAT_MAX_SUM_SHIFT and multipliers up to int32's largest."""
    from fpga_serve.hw.twin import kernels

    assert shift <= kernels.FLOAT_MAX_SUM_SHIFT
    v, b = (a.reshape(-1) for a in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    acc = v.astype(np.int32).reshape(-1, 1)  # M = 1, S = 0 as scale 1.0: the CONV's v is acc
    residual = (b + 128).astype(np.uint8).reshape(-1, 1)
    unit = 2.0**-shift
    for relu in (False, True):
        want = reference.add(v, b, i32(m0, m1), i32(shift), relu).astype(np.int16) + 128
        out = np.zeros_like(residual)
        kernels.requant_add_f64(
            acc, i32(0), np.ones(1), -128.0, residual, 0, m0 * unit, m1 * unit,
            0.5 - 128 * m1 * unit, 0.0 if relu else -128.0, out, 0, 0, len(v),
        )  # fmt: skip
        assert np.array_equal(out.reshape(-1), want)


def _kernels_called(monkeypatch: pytest.MonkeyPatch, *names: str) -> list[str]:
    """The names of these kernels (twin/kernels.py), in the order a plan built from now on
    calls them."""
    from fpga_serve.hw.twin import kernels

    used: list[str] = []
    for name in names:
        real = getattr(kernels, name)

        def spy(*args: object, real: Callable[..., None] = real, name: str = name) -> None:
            used.append(name)
            real(*args)

        monkeypatch.setattr(kernels, name, spy)
    return used


@pytest.mark.parametrize(
    ("conv_shift", "add_shift", "floating"), [(45, 53, True), (46, 30, False), (40, 54, False)]
)
def test_a_conv_requantises_in_float64_only_within_the_exact_shifts(
    conv_shift: int, add_shift: int, floating: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FLOAT_REQUANT on, a CONV with a fused ADD takes the float64 kernel only when its
    largest S <= FLOAT_MAX_SHIFT and its ADD's shift <= FLOAT_MAX_SUM_SHIFT, else the int64
    one; both equal the reference."""

    monkeypatch.setattr(native, "FLOAT_REQUANT", True)
    monkeypatch.setattr(native, "VNNI", False)  # the GEMM path's CONVs
    used = _kernels_called(monkeypatch, "requant_add", "requant_add_f64")
    program = _residual_program(9, 1 << 18, False)
    w = program.weights
    w[6] = i32(*[conv_shift - 12] * 7, conv_shift)  # one channel at the largest shift
    w[5] = i32(*[1 << 29] * 8)
    w[7], w[8] = i32(1 << 29, 1 << 28), i32(add_shift)
    x = i8(1, 9, 9, 8)
    assert np.array_equal(native.NativePlan(program).run(x), execute(program, x, reference))
    assert used == ["requant_add_f64" if floating else "requant_add"]


@pytest.mark.parametrize("shift", [1, 2, 30, 31, 45, 52, 53])
def test_the_float_scale_shift_equals_the_spec_on_every_input(shift: int) -> None:
    """kernels.scale_shift_f64 against reference.scale_shift on all 256 int8 inputs, with
    multipliers and offsets of both signs up to int32's extremes, with and without ReLU."""
    from fpga_serve.hw.twin import kernels

    assert shift <= kernels.FLOAT_MAX_SUM_SHIFT
    extremes = [2**31 - 1, -(2**31 - 1), 1, -1, 0, 1 << 30]
    mult = np.array([*extremes, *RNG.integers(-(2**31) + 1, 2**31, 10)], np.int32)
    bias = np.array([*extremes[::-1], *RNG.integers(-(2**31) + 1, 2**31, 10)], np.int32)
    x = np.arange(-128, 128)[:, None] + np.zeros((1, len(mult)), np.int64)
    unit = 2.0**-shift
    a = mult.astype(np.float64) * unit
    b = (bias.astype(np.int64) - 128 * mult.astype(np.int64) + (1 << (shift - 1))) * unit
    for relu in (False, True):
        want = reference.scale_shift(x, mult, bias, i32(shift), relu).astype(np.int16) + 128
        out = np.zeros(x.shape, np.uint8)
        u = (x + 128).astype(np.uint8)
        kernels.scale_shift_f64(u, 0, len(mult), a, b, 0.0 if relu else -128.0, out, 0, 0, 256)
        assert np.array_equal(out, want)


@pytest.mark.parametrize(("shift", "floating"), [(53, True), (54, False)])
def test_a_scale_shift_takes_the_float_kernel_only_within_its_exact_shift(
    shift: int, floating: bool, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(native, "FLOAT_REQUANT", True)
    used = _kernels_called(monkeypatch, "scale_shift", "scale_shift_f64")
    mult = RNG.integers(-(2**30), 2**30, 8).astype(np.int32)
    bias = RNG.integers(-(2**30), 2**30, 8).astype(np.int32)
    instr = Instr(Opcode.SCALE_SHIFT, (TensorRef(0, 0, 8),), TensorRef(1, 0, 8), multiplier=0,
                  bias=1, shift=2)  # fmt: skip
    program = one_op(instr, [(3, 3, 8)], (3, 3, 8), [mult, bias, i32(shift)])
    x = i8(2, 3, 3, 8)
    assert np.array_equal(native.NativePlan(program).run(x), execute(program, x, reference))
    assert used == ["scale_shift_f64" if floating else "scale_shift"]


def test_a_cpu_without_vnni_keeps_the_gemm_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import llvmlite.binding as ll

    features = dict(ll.get_host_cpu_features())
    features["avx512vnni"] = False
    monkeypatch.setattr(ll, "get_host_cpu_features", lambda: features)
    vnni.available.cache_clear()
    try:
        assert vnni.available() is False
        assert native.fused_vnni() is False
        gemm.exact_form()  # its self-check's GEMMs are made before the recording starts
        made: list[int] = []
        real = gemm.Int8Gemm

        class Recording(real):  # type: ignore[misc, valid-type]
            def __init__(self, weight: np.ndarray, form: str | None = None) -> None:
                super().__init__(weight, form)
                made.append(weight.shape[1])

        monkeypatch.setattr(gemm, "Int8Gemm", Recording)
        program = _padded_conv_program()
        x = i8(2, 4, 4, 8)
        assert np.array_equal(native.NativePlan(program).run(x), execute(program, x, reference))
        assert made == [8]
    finally:
        monkeypatch.undo()
        vnni.available.cache_clear()


@pytest.mark.skipif(not vnni.available(), reason="no AVX-512 VNNI here")
def test_the_plan_uses_the_kernel_and_honours_the_twin_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With VNNI the plan's CONVs are vnni.conv calls (no GEMM made), on one thread when the
    twin is set to one, and equal the reference."""
    monkeypatch.setattr(native, "VNNI", None)
    assert vnni.available()  # its self-check's calls are made before the counting starts
    monkeypatch.setattr(gemm, "Int8Gemm", None)  # a GEMM made would fail
    calls: list[int] = []
    real = vnni.conv

    def counted(*args: object) -> None:
        import numba

        calls.append(numba.get_num_threads())
        real(*args)

    monkeypatch.setattr(vnni, "conv", counted)
    program = _padded_conv_program()
    x = i8(2, 4, 4, 8)
    for threads in (0, 1):
        monkeypatch.setattr(gemm, "_THREADS", {"threads": threads})
        assert np.array_equal(native.NativePlan(program).run(x), execute(program, x, reference))
    import numba

    assert calls == [numba.config.NUMBA_NUM_THREADS, 1]


@pytest.mark.skipif(not vnni.available(), reason="no AVX-512 VNNI here")
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_the_kernel_reads_every_conv_in_place(
    case: tuple,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With VNNI no CONV gathers a patch matrix, whatever its Cin (the stem's 3 and a 5 read a
    staging copy widened with zero channels): the plan has no patch gather and no COLS
    scratch, and its result is the reference's."""
    monkeypatch.setattr(native, "VNNI", True)
    program, (h, w, cin) = _case_program(case, relu=False)
    plan = native.NativePlan(program)
    assert plan._gathers == [] and native.COLS not in plan._scratch
    x = i8(case[-1], h, w, cin)
    assert np.array_equal(plan.run(x), execute(program, x, reference))
