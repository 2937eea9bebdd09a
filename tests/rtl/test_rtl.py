"""The accelerator RTL (bitstreams/fpga_cnn/rtl/) cycle by cycle in Verilator, against the twin.

Every program is planned by the compiler (compiler/plan.py) and packed by core/descriptors.py
exactly as the PYNQ driver packs it; the testbench (tests/rtl/verilator/tb_accel.cpp) plays the
driver's register writes, models DDR latency and bandwidth behind five AXI4 slaves and checks
the masters' AXI4 obligations every cycle (a violation ends the simulation: the test fails).
Outputs are compared for exact equality with the twin's packed executor on the reference ops
(hw/twin/packed.py) and with the logical program on the reference (hw/twin/executor.py).

Two small builds: ``tiny`` (16 x 32 array, 3 banks, 128-bit AXI4, two weight ports) and
``tiny_z7`` (16 x 16 like the PYNQ-Z2 and Ultra96-V2 presets: one CI block per input-buffer
word; 2 banks, 64-bit data, 16-beat bursts, one weight port, the 7-series packing of two MACs
per multiplier). Without Verilator the tests skip, except under
``FPGA_SERVE_REQUIRE_TOOLS=1`` (``.ci/run``), where a missing simulator fails them
(tests/helpers/external_tools.py).
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from typing import Any

import numpy as np
import pytest
from fpga_serve.compiler.plan import fuse_adds, plan, schedule
from fpga_serve.core import descriptors
from fpga_serve.core.isa import (
    REGISTERS,
    SPACES,
    SPEC_VERSION,
    STATUS_BITS,
    Buffer,
    Instr,
    Opcode,
    Preset,
    Program,
    TensorRef,
    preset,
    quantize_input,
    quantize_multiplier,
    version_word,
)
from fpga_serve.hw.twin import executor, packed, reference

from rtl import harness

pytestmark = pytest.mark.tools("verilator")

TINY = preset("tiny")
Z7 = preset("tiny_z7")
RNG = np.random.default_rng(11)
SLOW_DDR = harness.Ddr(latency=40, bytes_per_cycle=6.0)


# Programs ---------------------------------------------------------------------------------


class _P:
    """A little program builder: buffers and instructions with random constants."""

    def __init__(self) -> None:
        self.buffers: list[Buffer] = []
        self.instrs: list[Instr] = []
        self.weights: list[np.ndarray] = []

    def buf(self, h: int, w: int, c: int) -> TensorRef:
        self.buffers.append(Buffer(len(self.buffers), h, w, c, 1.0))
        return TensorRef(len(self.buffers) - 1, 0, c)

    def const(self, a: Any, dtype: str) -> int:
        self.weights.append(np.ascontiguousarray(np.asarray(a), dtype=dtype))
        return len(self.weights) - 1

    def requant(self, n: int, terms: int) -> tuple[int, int]:
        pairs = [quantize_multiplier(float(RNG.uniform(0.5, 2.0)) / (terms * 40)) for _ in range(n)]
        return self.const([m for m, _ in pairs], "int32"), self.const(
            [s for _, s in pairs], "int32"
        )

    def conv(
        self,
        src: TensorRef,
        cout: int,
        k: tuple[int, int],
        stride: int = 1,
        pad: tuple[int, int, int, int] = (0, 0, 0, 0),
        relu: bool = True,
        out: TensorRef | None = None,
        extreme: bool = False,
    ) -> TensorRef:
        b = self.buffers[src.buffer]
        oh = (b.height + pad[0] + pad[1] - k[0]) // stride + 1
        ow = (b.width + pad[2] + pad[3] - k[1]) // stride + 1
        dst = out or self.buf(oh, ow, cout)
        shape = (*k, src.channels, cout)
        w = (
            np.full(shape, 127, np.int8)
            if extreme
            else RNG.integers(-127, 128, shape, dtype=np.int8)
        )
        if extreme:
            w[..., 1::2] = -127
        m, s = self.requant(cout, k[0] * k[1] * src.channels)
        self.instrs.append(Instr(
            Opcode.CONV, (src,), dst, name=f"conv{len(self.instrs)}", kernel=k, stride=stride,
            pad=pad, relu=relu, weight=self.const(w, "int8"),
            bias=self.const(RNG.integers(-3000, 3000, cout), "int32"), multiplier=m, shift=s,
        ))  # fmt: skip
        return dst

    def pool(
        self,
        op: Opcode,
        src: TensorRef,
        k: tuple[int, int],
        stride: int,
        pad: tuple[int, int, int, int] = (0, 0, 0, 0),
        pad_value: int = 0,
    ) -> TensorRef:
        b = self.buffers[src.buffer]
        if op is Opcode.GLOBAL_AVGPOOL:
            dst = self.buf(1, 1, src.channels)
            m, s = quantize_multiplier(1 / (b.height * b.width))
        else:
            oh = (b.height + pad[0] + pad[1] - k[0]) // stride + 1
            ow = (b.width + pad[2] + pad[3] - k[1]) // stride + 1
            dst = self.buf(oh, ow, src.channels)
            m, s = quantize_multiplier(1 / (k[0] * k[1]))
        extra: dict[str, Any] = {}
        if op is not Opcode.MAXPOOL:
            extra = {"multiplier": self.const([m], "int32"), "shift": self.const([s], "int32")}
        self.instrs.append(Instr(op, (src,), dst, name=f"pool{len(self.instrs)}", kernel=k,
                                 stride=stride, pad=pad, pad_value=pad_value, **extra))  # fmt: skip
        return dst

    def add(self, a: TensorRef, b: TensorRef, relu: bool = True) -> TensorRef:
        ba = self.buffers[a.buffer]
        dst = self.buf(ba.height, ba.width, a.channels)
        self.instrs.append(Instr(
            Opcode.ADD, (a, b), dst, name=f"add{len(self.instrs)}", relu=relu,
            multiplier=self.const(RNG.integers(1 << 20, 1 << 22, 2), "int32"),
            shift=self.const([23], "int32"),
        ))  # fmt: skip
        return dst

    def scale_shift(
        self, src: TensorRef, relu: bool = True, out: TensorRef | None = None
    ) -> TensorRef:
        b = self.buffers[src.buffer]
        dst = out or self.buf(b.height, b.width, src.channels)
        c = src.channels
        self.instrs.append(Instr(
            Opcode.SCALE_SHIFT, (src,), dst, name=f"bn{len(self.instrs)}", relu=relu,
            multiplier=self.const(RNG.integers(-(1 << 14), 1 << 14, c), "int32"),
            bias=self.const(RNG.integers(-(1 << 20), 1 << 20, c), "int32"),
            shift=self.const([15], "int32"),
        ))  # fmt: skip
        return dst

    def program(self, inp: TensorRef, out: TensorRef, f: Preset = TINY) -> Program:
        p = Program(self.buffers, self.instrs, inp, out, self.weights)
        return plan(fuse_adds(schedule(p)), f)


def _x(program: Program, batch: int = 1) -> np.ndarray:
    return RNG.integers(-128, 128, (batch, *program.input_shape()), dtype=np.int8)


def _check(
    program: Program,
    x: np.ndarray,
    ddr: harness.Ddr = SLOW_DDR,
    image: descriptors.DeviceImage | None = None,
    **kw: Any,
) -> harness.Result:
    """RTL == packed twin (reference ops) == the logical program on the reference."""
    image = image or descriptors.pack(program)
    run = harness.run(image, x, ddr=ddr, **kw)
    assert run.done and run.error is None, (run.status, run.error, run.error_index)
    assert run.irq
    got = harness.output(image, run, x.shape[0])
    want = packed.run(image, x, reference)
    assert np.array_equal(want, executor.execute(program, x, reference))
    assert np.array_equal(got, want)
    return run


# Every opcode and the networks' layer shape classes, at small sizes ----------------------


def _stem_fold() -> Program:  # ResNet/DenseNet stem class with FOLD: 7x7/2 over few channels
    p = _P()
    x = p.buf(20, 20, 2)
    return p.program(x, p.conv(x, 20, (7, 7), 2, (3, 3, 3, 3)))


def _stem_vgg() -> Program:  # VGG/DenseNet 3x3 stem over 3 channels: FOLD 9 of 16 lanes
    p = _P()
    x = p.buf(10, 12, 3)
    return p.program(x, p.conv(x, 40, (3, 3), 1, (1, 1, 1, 1)))


def _stem_unfolded() -> Program:  # the 7x7/2 stem over 3 channels (21 > 16 lanes: no FOLD)
    p = _P()
    x = p.buf(14, 14, 3)
    return p.program(x, p.conv(x, 16, (7, 7), 2, (3, 2, 3, 2)))


def _bottleneck() -> Program:  # ResNet: 1x1, 3x3, 1x1 + ADD (identity), projection 1x1/2
    p = _P()
    x = p.buf(12, 12, 32)
    s = p.conv(x, 64, (1, 1), 2, relu=False)
    a = p.conv(x, 16, (1, 1), 2)
    b = p.conv(a, 16, (3, 3), 1, (1, 1, 1, 1))
    c = p.conv(b, 64, (1, 1), relu=False)
    y = p.add(c, s)
    a2 = p.conv(y, 16, (1, 1))
    b2 = p.conv(a2, 16, (3, 3), 1, (1, 1, 1, 1))
    c2 = p.conv(b2, 64, (1, 1), relu=False)
    return p.program(x, p.add(c2, y))


def _dense_block() -> Program:  # DenseNet: BN on a concat prefix, 1x1, 3x3 into a slice
    p = _P()
    cat = p.buf(6, 6, 48)
    x = TensorRef(cat.buffer, 0, 16)
    for k in range(2):
        part = TensorRef(cat.buffer, 0, 16 + 16 * k)
        h = p.scale_shift(part)
        h = p.conv(h, 24, (1, 1))
        p.conv(h, 16, (3, 3), 1, (1, 1, 1, 1), out=TensorRef(cat.buffer, 16 + 16 * k, 16))
    t = p.scale_shift(cat)
    t = p.conv(t, 24, (1, 1))
    return p.program(x, p.pool(Opcode.AVGPOOL, t, (2, 2), 2))


def _vgg_block() -> Program:  # VGG: 3x3 convs, 2x2/2 max pooling, channel tails
    p = _P()
    x = p.buf(8, 8, 20)
    y = p.conv(x, 36, (3, 3), 1, (1, 1, 1, 1))
    y = p.conv(y, 36, (3, 3), 1, (1, 1, 1, 1))
    return p.program(x, p.pool(Opcode.MAXPOOL, y, (2, 2), 2))


def _pools() -> Program:  # 'same' max pooling (-128 pad), zero-pad pooling, AVG counting pads, GAP
    p = _P()
    x = p.buf(9, 9, 40)
    y = p.pool(Opcode.MAXPOOL, x, (3, 3), 2, (1, 1, 1, 1), pad_value=-128)
    y = p.pool(Opcode.MAXPOOL, y, (3, 3), 1, (1, 1, 1, 1), pad_value=0)
    y = p.pool(Opcode.AVGPOOL, y, (3, 3), 1, (1, 0, 1, 0))
    return p.program(x, p.pool(Opcode.GLOBAL_AVGPOOL, y, (5, 5), 1))


def _add_and_scale_shift_from_ddr() -> Program:  # ADD and SCALE_SHIFT, tensors beyond a bank
    p = _P()
    x = p.buf(12, 12, 40)  # 288 words: the input streams, the residual comes from DDR
    a = p.scale_shift(x, relu=False)
    b = p.scale_shift(p.conv(x, 40, (1, 1), relu=False), relu=False)
    return p.program(x, p.add(b, a, relu=False))  # not after a CONV: a standalone ADD


def _streamed_ring() -> Program:  # an input larger than a bank: a ring of rows, many bands
    p = _P()
    x = p.buf(24, 20, 40)  # 24 rows x 40 words: 960 words > 256
    return p.program(x, p.conv(x, 32, (3, 3), 1, (1, 1, 1, 1)))


def _dense_head() -> Program:  # GAP then a dense layer (1x1 on a 1x1 map)
    p = _P()
    x = p.buf(4, 4, 48)
    g = p.pool(Opcode.GLOBAL_AVGPOOL, x, (4, 4), 1)
    return p.program(x, p.conv(g, 10, (1, 1), relu=False))


def _extremes() -> Program:  # the packing's extreme: |x| = 128 with weights +-127 everywhere
    p = _P()
    x = p.buf(4, 4, 64)
    return p.program(x, p.conv(x, 32, (3, 3), 1, (1, 1, 1, 1), relu=False, extreme=True))


CASES = {
    "stem 7x7/2 fold": _stem_fold,
    "stem 3x3 fold": _stem_vgg,
    "stem 7x7/2 unfolded": _stem_unfolded,
    "resnet bottleneck blocks": _bottleneck,
    "densenet block and transition": _dense_block,
    "vgg block": _vgg_block,
    "pools": _pools,
    "add and scale_shift via ddr": _add_and_scale_shift_from_ddr,
    "streamed ring": _streamed_ring,
    "dense head": _dense_head,
    "packing extremes": _extremes,
}


@pytest.mark.parametrize("case", CASES)
def test_every_opcode_and_shape_class_is_exact(case: str) -> None:
    program = CASES[case]()
    x = _x(program)
    if case == "packing extremes":
        x[...] = -128
    _check(program, x)


def test_the_cases_cover_the_datapath_features() -> None:
    tiles = {name: [i.tile for i in fn().instrs] for name, fn in CASES.items()}
    flat = [t for ts in tiles.values() for t in ts if t is not None]
    assert any(t.fold for t in tiles["stem 7x7/2 fold"])
    assert not any(t.fold for t in tiles["stem 7x7/2 unfolded"])
    assert any(t.res_ibuf for t in flat) and any(t.out_ibuf and not t.out_ddr for t in flat)
    ring = tiles["streamed ring"][0]
    assert ring is not None and ring.ring_rows < 24 and ring.bands > 2
    ops = {i.op for fn in CASES.values() for i in fn().instrs}
    assert ops == set(Opcode)
    assert any(i.residual is not None for i in _bottleneck().instrs)


def test_a_bank_of_more_words_than_a_multiple_of_4096_is_exact_in_its_last_words() -> None:
    """An input buffer of 4096 + 512 words a bank (cnn_ibank: 4096 words in one memory, the
    512 above in a block RAM of their own, as the zcu104's 13,312 are 3 x 4096 + 1024): a
    48 x 48 x 64 tensor kept in a bank fills all 4608 words and the next layer reads it back."""
    f = dataclasses.replace(TINY, ibuf_words=4096 + 512)
    p = _P()
    x = p.buf(48, 48, 16)
    y = p.conv(x, 64, (1, 1))
    z = p.conv(y, 32, (3, 3), 1, (1, 1, 1, 1))
    program = p.program(x, z, f)
    first, second = (i.tile for i in program.instrs)
    assert first is not None and second is not None
    assert first.out_ibuf and not first.out_ddr and second.in_ibuf  # y: 48 * 48 * 2 = 4608 words
    image = descriptors.pack(program, f)
    assert image.preset == f
    _check(program, _x(program), image=image)


def test_batch_of_two_under_random_stalls_and_slow_ddr() -> None:
    program = _bottleneck()
    run = _check(
        program,
        _x(program, 2),
        ddr=harness.Ddr(latency=60, bytes_per_cycle=3.0, stall=0.35, seed=7),
    )
    assert sum(run.perf) <= run.cycles


def test_extreme_add_multipliers_on_both_builds() -> None:
    """ADD's int32 multipliers at their limits (the LUT products of tiny_z7 and the DSP ones of
    tiny), a fused and a standalone ADD, inputs at -128 and 127."""
    for f in (TINY, Z7):
        p = _P()
        x = p.buf(4, 4, 16)
        a = p.conv(x, 16, (1, 1), relu=False)
        b = p.scale_shift(x, relu=False)
        y = p.add(a, b, relu=False)  # fused into the conv
        z = p.add(p.scale_shift(y, relu=False), b, relu=True)  # standalone
        for instr, (m0, m1, sh) in zip(
            [i for i in p.instrs if i.op is Opcode.ADD],
            [(-(2**31), 2**31 - 1, 38 if f is TINY else 41), (2**31 - 1, -(2**31), 40)],
            strict=True,
        ):
            p.weights[instr.multiplier] = np.array([m0, m1], np.int32)
            p.weights[instr.shift] = np.array([sh], np.int32)
        program = p.program(x, z, f)
        assert [i.op for i in program.instrs].count(Opcode.ADD) == 1
        assert sum(i.residual is not None for i in program.instrs) == 1
        xs = _x(program, 2)
        xs[0, ::2] = -128
        xs[1, 1::2] = 127
        _check(program, xs)


@functools.cache
def _keras_program(target: str) -> tuple[Program, np.ndarray]:
    """tests/hw/test_pynq.py's small network compiled by fpga_serve.compiler for ``target``."""
    import keras
    from conftest import small_network
    from fpga_serve.compiler import CompileOptions, compile_model

    keras.utils.set_random_seed(4)
    data = RNG.normal(0, 1, (8, 16, 16, 3)).astype(np.float32)
    options = CompileOptions(calibration_method="max", target=target)
    program = compile_model(small_network(), data, options).program
    return program, quantize_input(data[:2], program.input_scale)


@pytest.mark.parametrize("target", ["tiny", "tiny_z7"])
def test_a_compiled_keras_network_runs_exactly(target: str) -> None:
    """On tiny_z7: 64-bit AXI3-sized bursts, one weight port, 17-bit packing groups of 4."""
    program, x = _keras_program(target)
    run = _check(program, x)
    f = preset(target)
    for port, st in run.stats.items():
        assert st["maxout"] <= f.outstanding, port
    if f.weight_ports == 1:
        assert run.stats["wt1"]["bursts"] == 0


# Bad input: every out-of-spec descriptor ends the run with the spec's code, never a hang ----


def _one_conv() -> tuple[Program, descriptors.DeviceImage]:
    p = _P()
    x = p.buf(6, 6, 20)
    y = p.conv(x, 40, (3, 3), 1, (1, 1, 1, 1))
    z = p.conv(y, 24, (1, 1))
    program = p.program(x, z)
    return program, descriptors.pack(program)


def _with(image: descriptors.DeviceImage, index: int, **fields: int) -> descriptors.DeviceImage:
    table = image.table().copy()
    for name, value in fields.items():
        table[name][index] = value
    return dataclasses.replace(image, descriptors=table.view(np.uint8).reshape(-1))


BAD = [
    (1, {"opcode": 9}, "BAD_OPCODE"),
    (1, {"opcode": 0}, "BAD_OPCODE"),
    (1, {"kernel_h": 0}, "BAD_DESCRIPTOR"),
    (1, {"stride_w": 2}, "BAD_DESCRIPTOR"),
    (1, {"out_h": 7}, "BAD_DESCRIPTOR"),
    (0, {"in_ch_off": 5}, "BAD_DESCRIPTOR"),
    (1, {"band_rows": 200}, "BAD_DESCRIPTOR"),
    (1, {"bands": 9}, "BAD_DESCRIPTOR"),
    (1, {"ring_rows": 0}, "BAD_DESCRIPTOR"),
    (1, {"in_bank": 3}, "BAD_DESCRIPTOR"),
    (1, {"wgt_bytes": 64}, "BAD_DESCRIPTOR"),
    (1, {"flags": 0}, "BAD_DESCRIPTOR"),
    (1, {"flags": 16 | 2}, "BAD_DESCRIPTOR"),
    (0, {"spaces": 3}, "BAD_DESCRIPTOR"),
    (1, {"spaces": 0x40}, "BAD_DESCRIPTOR"),
    (1, {"wgt_offset": 32}, "BAD_ADDRESS"),
    (1, {"wgt_offset": 1 << 20}, "BAD_ADDRESS"),
    (0, {"in_offset": 1 << 24}, "BAD_ADDRESS"),
    (1, {"out_offset": 1 << 24}, "BAD_ADDRESS"),
]


@pytest.mark.parametrize(
    "index,fields,code", BAD, ids=[f"{i}:{k}={v}" for i, f, _ in BAD for k, v in f.items()]
)
def test_a_bad_descriptor_ends_the_run_with_its_code(
    index: int, fields: dict[str, int], code: str
) -> None:
    program, image = _one_conv()
    bad = _with(image, index, **fields)
    # the packer's rules say the same (one rule set for the RTL, the twin and the board)
    assert (
        descriptors.check(bad.table()[index], TINY, bad.region_bytes, bad.weights.size)[0] == code
    )
    x = _x(program)
    run = harness.run(bad, x, ddr=SLOW_DDR, timeout=200_000, rerun=True)
    assert run.error == code and run.error_index == index and run.irq
    second = run.second  # after SOFT_RESET the same image fails the same way: no stale state
    assert second is not None and second.error == code and second.error_index == index


def test_bad_constants_in_the_weight_stream() -> None:
    program, image = _one_conv()
    x = _x(program)
    table = image.table()
    g = descriptors.derive(table[0], TINY)
    off = int(table[0]["wgt_offset"])
    co = TINY.array_co
    for what, at, value in (
        ("a weight of -128", off + descriptors.CONST_WORDS * co + 5, 0x80),
        ("a shift of 0", off + 12 * co + 3, 0),
        ("a shift of 63", off + 12 * co, 63),
        ("an addend for CONV", off + 8 * co + 1, 1),
    ):
        weights = image.weights.copy()
        weights[at] = value
        bad = dataclasses.replace(image, weights=weights)
        with pytest.raises(packed.AcceleratorFault, match="BAD_CONSTANT"):
            packed.run(bad, x, reference)
        run = harness.run(bad, x, ddr=SLOW_DDR, timeout=200_000)
        assert run.error == "BAD_CONSTANT" and run.error_index == 0, what
    assert g.mode == "mac"


def test_random_descriptor_faults_match_the_twin_and_never_hang() -> None:
    """Valid descriptors with 1-3 fields nudged (or a flag flipped, or set at random): the RTL
    stops (or finishes) exactly where and how the twin's packed executor does."""
    program, image = _one_conv()
    x = _x(program)
    rng = np.random.default_rng(3)
    names = [n for n, _ in descriptors.DESCRIPTOR.descr if not n.startswith("reserved")]
    outcomes = []
    for _ in range(30):
        table = image.table().copy()
        for _ in range(int(rng.integers(1, 4))):
            name, i = names[int(rng.integers(len(names)))], int(rng.integers(2))
            info = np.iinfo(descriptors.DESCRIPTOR[name])
            old = int(table[name][i])
            if name == "flags":
                new = old ^ (1 << int(rng.integers(8)))
            elif rng.random() < 0.6:
                new = old + int(rng.integers(-2, 3))
            else:
                new = int(rng.integers(info.min, min(info.max, 1 << 17) + 1))
            table[name][i] = min(max(new, info.min), info.max)
        bad = dataclasses.replace(image, descriptors=table.view(np.uint8).reshape(-1))
        regions = packed.Regions.of(bad, 1)
        packed.write_input(bad, regions.memory[bad.input_space], x)
        a, b, c = (m.copy() for m in regions.memory)
        twin = packed.Regions((a, b, c), regions.sizes)
        try:
            packed.execute(TINY, bad.table(), bad.weights, twin, 1, reference)
            want = None
        except packed.AcceleratorFault as fault:
            want = (fault.code, fault.index)
        run = harness.run(bad, regions=regions, ddr=SLOW_DDR, timeout=400_000)
        assert run.irq, "the run did not end"
        got = (run.error, run.error_index) if run.error else None
        assert got == want, [(n, int(table[n][0]), int(table[n][1])) for n in names]
        if want is None:
            for got_region, want_region in zip(run.regions.memory, twin.memory, strict=True):
                assert np.array_equal(got_region, want_region)
        outcomes.append(want[0] if want else "DONE")
    assert {"DONE", "BAD_DESCRIPTOR", "BAD_ADDRESS"} <= set(outcomes), outcomes


MISALIGNED = ["DESC_ADDR", "ACT_ADDR", "IN_ADDR", "OUT_ADDR", "IN_STRIDE", "OUT_STRIDE"]


@pytest.mark.parametrize("register", MISALIGNED)
def test_misaligned_regions_are_a_bad_address(register: str) -> None:
    """Each region's address and each stride must be 64-aligned at START (ERROR_INDEX 0)."""
    program, image = _one_conv()
    regs = descriptors.run_registers(image, harness.DESC_BASE, harness.REGION_BASES,
                                     harness.WGT_BASE, 1)  # fmt: skip
    at = REGISTERS[register if register.endswith("STRIDE") else f"{register}_LO"]
    regs = [(o, v + 8 if o == at else v) for o, v in regs]
    run = harness.run(image, _x(program), registers=regs, timeout=10_000)
    assert run.error == "BAD_ADDRESS" and run.error_index == 0 and run.cycles < 100


@pytest.mark.parametrize("access", ["in", "out"])
def test_an_access_past_its_own_regions_stride_is_a_bad_address(access: str) -> None:
    """The network's input (descriptor 0 reads it) and output (descriptor 1 writes it) are
    bounded by IN_STRIDE and OUT_STRIDE, not by the (here much larger) ACT_STRIDE: one byte
    past its own region, the access is refused before any memory is touched."""
    program, image = _one_conv()
    index = 0 if access == "in" else image.count - 1
    row = image.table()[index]
    code = SPACES["IN" if access == "in" else "OUT"]
    assert descriptors.space(row, access) == code
    roomy = dataclasses.replace(image, image_bytes=1 << 16)  # ACT_STRIDE 64 KiB
    bad = _with(roomy, index, **{f"{access}_offset": int(row[f"{access}_offset"]) + 64})
    assert descriptors.check(bad.table()[index], TINY, bad.region_bytes, bad.weights.size) == (
        "BAD_ADDRESS", f"{'input' if access == 'in' else 'output'} outside the image's "
        f"{'IN' if access == 'in' else 'OUT'} region",
    )  # fmt: skip
    run = harness.run(bad, _x(program), ddr=SLOW_DDR, timeout=200_000)
    assert run.error == "BAD_ADDRESS" and run.error_index == index and run.irq


# The bus: AXI error responses on every port, SOFT_RESET mid-run ---------------------------------


@pytest.mark.parametrize("port", ["wt0", "wt1", "in", "rs", "out"])
def test_an_axi_error_response_on_each_port_is_a_bus_error_then_a_clean_run(port: str) -> None:
    program = _add_and_scale_shift_from_ddr() if port in ("rs", "in") else _bottleneck()
    image = descriptors.pack(program)
    x = _x(program)
    if port.startswith("wt"):
        ranges = [(harness.WGT_BASE, image.weights.size)]
    else:  # every region the port may address
        ranges = list(zip(harness.REGION_BASES, image.region_bytes, strict=True))
    errors = [(port, base, base + size, 2) for base, size in ranges]
    run = harness.run(image, x, ddr=SLOW_DDR, errors=errors, rerun=True)
    assert run.error == "BUS_ERROR" and run.irq, (run.status, run.error)
    second = run.second
    assert second is not None and second.done and second.error is None
    assert np.array_equal(harness.output(image, second), packed.run(image, x, reference))


def test_soft_reset_mid_run_then_an_exact_run_and_start_while_busy_is_ignored() -> None:
    program = _bottleneck()
    image = descriptors.pack(program)
    x = _x(program)
    start = f"write {REGISTERS['CTRL']:x} 1"
    run = harness.run(image, x, ddr=SLOW_DDR, before=["wait 300", start, "wait 200"],
                      wait="wait 100", rerun=True)  # fmt: skip
    assert run.status == STATUS_BITS["BUSY"]  # still running: the extra START changed nothing
    second = run.second
    assert second is not None and second.done and second.error is None
    assert np.array_equal(harness.output(image, second), packed.run(image, x, reference))


# Registers ----------------------------------------------------------------------------------


def test_the_register_file_version_features_and_interrupt() -> None:
    program, image = _one_conv()
    reads = [
        "VERSION",
        "FEATURES0",
        "FEATURES1",
        "FEATURES2",
        "FEATURES3",
        "FEATURES4",
        "IRQ_STATUS",
    ]
    after = [f"read {REGISTERS[r]:x}" for r in reads]
    after += [
        f"write {REGISTERS['VERSION']:x} 0",
        f"write {REGISTERS['STATUS']:x} 7",
        f"write {REGISTERS['IRQ_STATUS']:x} 1",
    ]
    after += [f"read {REGISTERS[r]:x}" for r in ("VERSION", "STATUS", "IRQ_STATUS")]
    run = harness.run(image, _x(program), ddr=SLOW_DDR, after=after)
    tail = run.lines[next(i for i, line in enumerate(run.lines) if line.startswith("cycles ")) :]
    values = [int(v.split()[2], 16) for v in tail if v.startswith("read ")]
    got = dict(zip(reads, values[: len(reads)], strict=True))
    assert got["VERSION"] == version_word(SPEC_VERSION)
    assert {k: got[k] for k in descriptors.features(TINY)} == descriptors.features(TINY)
    assert descriptors.read_features(got)["array_co"] == TINY.array_co
    assert got["IRQ_STATUS"] == 1  # DONE
    version, status, irq = values[len(reads) :]
    assert version == got["VERSION"] and status == STATUS_BITS["DONE"] and irq == 0
    assert run.perf[0] > 0 and run.perf[1] > 0 and sum(run.perf) <= run.cycles


# Lint and synthesis ---------------------------------------------------------------------------


def test_verilator_lints_the_rtl_clean() -> None:
    proc = subprocess.run(
        ["verilator", "--lint-only", *harness.LINT, f"-I{harness.RTL_DIR}", "--top-module",
         "cnn_accel", *map(str, harness.RTL_SOURCES)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_every_rtl_file_is_built_and_synthesised() -> None:
    """harness.RTL_SOURCES is the one list of the RTL's files (Verilator here, yosys in
    bench/bench_resources.py); the Vivado flow takes every .v in the folder."""
    assert sorted(harness.RTL_SOURCES) == sorted(harness.RTL_DIR.glob("*.v"))


def test_the_verilog_header_is_generated_from_spec_json() -> None:
    proc = subprocess.run(
        ["python3", str(harness.ROOT / "bitstreams" / "fpga_cnn" / "gen_spec_vh.py"), "--check"],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
@pytest.mark.tools("yosys")
def test_yosys_synthesises_a_small_build_without_latches(tmp_path: Any) -> None:
    """tiny_z7 through `synth_xilinx -family xc7` (several CPU minutes): no latches, and the MAC
    array is exactly CI x CO / 2 multipliers, one DSP48E1 each (two MACs per multiplier)."""
    import sys

    sys.path.insert(0, str(harness.ROOT / "bench"))
    import bench_resources

    r = bench_resources.run(Z7, tmp_path)
    assert r["ok"], r["error"]
    array = r["array"]
    assert isinstance(array, dict) and array["dsp"] == Z7.array_ci * Z7.array_co // 2
    total = r["total"]
    assert isinstance(total, dict) and total["dsp"] > array["dsp"]  # and the requantisers
