"""The overlay's hardware source (bitstreams/fpga_cnn/rtl/) simulated in Icarus Verilog against
the twin's reference, bit for bit: the datapath units on random and extreme vectors, every
opcode through the register interface with memory images packed exactly as the PYNQ driver
packs them, errors, and a program from the real compiler. A representative set runs again on
the top cnn_accel_axi, its AXI4 master m_axi_gmem served by a slave memory with random wait
states under a protocol checker (the ``bus`` parameter: "mem" is the engine's simple port,
"axi" the AXI4 adapter), with AXI error responses and SOFT_RESET mid-transaction. Also:
Verilator lints the RTL and yosys synthesises it (no latches). Skipped only where the tools are
not installed (.ci/run installs them)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest
from fpga_serve.core.isa import (
    Buffer,
    Instr,
    Opcode,
    Program,
    TensorRef,
    quantize_input,
    round_shift,
    saturate,
)
from fpga_serve.hw.twin import executor, reference
from rtl import harness
from rtl.harness import CTRL, ERRORS, POLL, READ, REG, STATUS, WAIT, WRITE, AxiBus, UnitVector

pytestmark = pytest.mark.skipif(
    harness.simulator_missing() is not None, reason=str(harness.simulator_missing())
)

RNG = np.random.default_rng(2026)
I32 = np.iinfo(np.int32)

# The engine's simple memory port, or cnn_accel_axi with an AXI4 slave memory that stalls every
# READY/VALID it drives at random (READY half the cycles; responses 0..3 cycles late).
MEM = pytest.param(None, id="mem")
AXI = pytest.param(AxiBus(seed=11), id="axi")
BUSES = [MEM, AXI]


def _mem_cases_and_one_on_axi(values: list[Any], on_axi: Any, bus: AxiBus) -> list[Any]:
    """Parameters (value, bus): every value on the simple port, one of them also on AXI4."""
    return [pytest.param(v, None, id=str(v)) for v in values] + [
        pytest.param(on_axi, bus, id="axi")
    ]


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


# The core: programs through registers and memory -------------------------------------------


def _program(
    shapes: list[tuple[int, int, int]],
    instrs: list[Instr],
    inp: TensorRef,
    out: TensorRef,
    weights: list[np.ndarray],
) -> Program:
    buffers = [Buffer(i, h, w, c, 1.0) for i, (h, w, c) in enumerate(shapes)]
    return Program(buffers, instrs, inp, out, weights)


def _conv_weights(kh: int, kw: int, cin: int, cout: int, shift: int) -> list[np.ndarray]:
    return [
        RNG.integers(-127, 128, (kh, kw, cin, cout)).astype(np.int8),
        RNG.integers(-3000, 3000, cout).astype(np.int32),
        RNG.integers(2**30, 2**31, cout).astype(np.int32),
        (shift + RNG.integers(-1, 2, cout)).astype(np.int32),
    ]


def _x(batch: int, h: int, w: int, c: int) -> np.ndarray:
    return RNG.integers(-128, 128, (batch, h, w, c)).astype(np.int8)


def _check_bus(run: harness.Run, bus: AxiBus | None) -> None:
    """On the AXI4 bus: every transaction answered, none with an error, wait states seen."""
    if bus is None:
        assert not run.axi
        return
    axi = run.axi
    assert axi["ar"] == axi["r"] > 0 and axi["aw"] == axi["w"] == axi["b"] > 0, axi
    assert axi["errors"] == 0 and axi["valid_waits"] > 0, axi


def _check(program: Program, x: np.ndarray, **kwargs: Any) -> harness.Run:
    got, run = harness.run_program(program, x, **kwargs)
    assert run.polls[-1][0] == STATUS["DONE"], (run.polls, run.reg("ERROR_CODE"))
    assert run.bad_accesses == 0
    _check_bus(run, kwargs.get("bus"))
    want = executor.execute(program, x, reference)
    assert got.shape == want.shape
    assert np.array_equal(got, want), (got, want)
    assert len(np.unique(want)) > min(8, want.size // 2), "a test that saturates proves little"
    return run


@pytest.mark.parametrize(
    ("relu", "bus"),
    _mem_cases_and_one_on_axi([False, True], True, AxiBus(seed=3, ready_pct=30)),
)
def test_conv_stride_2_asymmetric_padding_channel_slices_batch_2(
    relu: bool, bus: AxiBus | None
) -> None:
    # Input is channels [2, 5) of a 6-channel buffer; the output goes to channels [1, 5) of 7.
    cin, cout = 3, 4
    conv = Instr(
        Opcode.CONV,
        (TensorRef(0, 2, cin),),
        TensorRef(1, 1, cout),
        kernel=(3, 2),
        stride=2,
        pad=(2, 0, 1, 1),
        relu=relu,
        weight=0,
        bias=1,
        multiplier=2,
        shift=3,
    )
    # H: (5 + 2 - 3) // 2 + 1 = 3; W: (6 + 2 - 2) // 2 + 1 = 4
    program = _program(
        [(5, 6, 6), (3, 4, 7)],
        [conv],
        TensorRef(0, 2, cin),
        TensorRef(1, 1, cout),
        _conv_weights(3, 2, cin, cout, 39),
    )
    run = _check(program, _x(2, 5, 6, cin), bus=bus)
    assert run.reg("CYCLES_LO") > 0 and run.reg("VERSION") == 0x00010000


def test_conv_1x1_on_a_1x1_map_is_a_dense_layer() -> None:
    program = _program(
        [(1, 1, 16), (1, 1, 10)],
        [
            Instr(
                Opcode.CONV,
                (TensorRef(0, 0, 16),),
                TensorRef(1, 0, 10),
                weight=0,
                bias=1,
                multiplier=2,
                shift=3,
            )
        ],
        TensorRef(0, 0, 16),
        TensorRef(1, 0, 10),
        _conv_weights(1, 1, 16, 10, 38),
    )
    _check(program, _x(3, 1, 1, 16))


@pytest.mark.parametrize(
    ("pad_value", "bus"),
    _mem_cases_and_one_on_axi([-128, 0], -128, AxiBus(seed=4, max_delay=6)),
)
def test_maxpool_with_pad_value(pad_value: int, bus: AxiBus | None) -> None:
    # Mostly negative input so that a zero pad_value shows at the borders.
    pool = Instr(
        Opcode.MAXPOOL,
        (TensorRef(0, 1, 3),),
        TensorRef(1, 0, 3),
        kernel=(3, 3),
        stride=2,
        pad=(1, 1, 0, 1),
        pad_value=pad_value,
    )
    program = _program([(6, 5, 4), (3, 2, 3)], [pool], TensorRef(0, 1, 3), TensorRef(1, 0, 3), [])
    x = (RNG.integers(-128, 20, (2, 6, 5, 3))).astype(np.int8)
    _check(program, x, bus=bus)


@pytest.mark.parametrize("bus", BUSES)
def test_avgpool_counts_zero_padding(bus: AxiBus | None) -> None:
    pool = Instr(
        Opcode.AVGPOOL,
        (TensorRef(0, 0, 5),),
        TensorRef(1, 0, 5),
        kernel=(2, 3),
        stride=1,
        pad=(0, 1, 1, 1),
        multiplier=0,
        shift=1,
    )
    weights = [np.array([1431655765], np.int32), np.array([33], np.int32)]  # ~1/6
    program = _program(
        [(4, 4, 5), (4, 4, 5)], [pool], TensorRef(0, 0, 5), TensorRef(1, 0, 5), weights
    )
    _check(program, _x(2, 4, 4, 5), bus=bus)


@pytest.mark.parametrize("bus", BUSES)
def test_global_avgpool(bus: AxiBus | None) -> None:
    gap = Instr(
        Opcode.GLOBAL_AVGPOOL, (TensorRef(0, 0, 24),), TensorRef(1, 4, 24), multiplier=0, shift=1
    )
    weights = [np.array([1374389535], np.int32), np.array([35], np.int32)]  # ~1/25
    program = _program(
        [(5, 5, 24), (1, 1, 30)], [gap], TensorRef(0, 0, 24), TensorRef(1, 4, 24), weights
    )
    _check(program, _x(2, 5, 5, 24), bus=bus)


@pytest.mark.parametrize(
    ("relu", "bus"), _mem_cases_and_one_on_axi([False, True], True, AxiBus(seed=5))
)
def test_add_of_two_slices_with_two_scales(relu: bool, bus: AxiBus | None) -> None:
    # a = channels [0, 4) and b = channels [4, 8) of one buffer; out = channels [2, 6) of 6.
    add = Instr(
        Opcode.ADD,
        (TensorRef(0, 0, 4), TensorRef(0, 4, 4)),
        TensorRef(1, 2, 4),
        relu=relu,
        multiplier=0,
        shift=1,
    )
    weights = [np.array([1518500250, -805306368], np.int32), np.array([32], np.int32)]
    program = _program(
        [(3, 2, 8), (3, 2, 6)], [add], TensorRef(0, 0, 8), TensorRef(1, 2, 4), weights
    )
    _check(program, _x(2, 3, 2, 8), bus=bus)


@pytest.mark.parametrize(
    ("relu", "bus"),
    _mem_cases_and_one_on_axi([False, True], False, AxiBus(seed=6, ready_pct=80)),
)
def test_scale_shift_per_channel(relu: bool, bus: AxiBus | None) -> None:
    ss = Instr(
        Opcode.SCALE_SHIFT,
        (TensorRef(0, 1, 6),),
        TensorRef(1, 0, 6),
        relu=relu,
        multiplier=0,
        bias=1,
        shift=2,
    )
    weights = [
        RNG.integers(-(2**30), 2**30, 6).astype(np.int32),
        RNG.integers(-(2**36), 2**36, 6).astype(np.int64).clip(I32.min, I32.max).astype(np.int32),
        np.array([31], np.int32),
    ]
    program = _program(
        [(3, 3, 7), (3, 3, 6)], [ss], TensorRef(0, 1, 6), TensorRef(1, 0, 6), weights
    )
    _check(program, _x(2, 3, 3, 6), bus=bus)


def _concat_program() -> Program:
    """Two convolutions concatenated by addressing into one buffer, pooled, added, averaged:
    descriptors executed in order, each reading what the previous ones wrote."""
    w0 = _conv_weights(3, 3, 2, 3, 38)
    w1 = _conv_weights(1, 1, 2, 2, 36)
    instrs = [
        Instr(
            Opcode.CONV,
            (TensorRef(0, 0, 2),),
            TensorRef(1, 0, 3),
            kernel=(3, 3),
            pad=(1, 1, 1, 1),
            relu=True,
            weight=0,
            bias=1,
            multiplier=2,
            shift=3,
        ),
        Instr(
            Opcode.CONV,
            (TensorRef(0, 0, 2),),
            TensorRef(1, 3, 2),
            weight=4,
            bias=5,
            multiplier=6,
            shift=7,
        ),
        Instr(Opcode.MAXPOOL, (TensorRef(1, 0, 5),), TensorRef(2, 0, 5), kernel=(2, 2), stride=2),
        Instr(
            Opcode.ADD,
            (TensorRef(2, 0, 5), TensorRef(2, 0, 5)),
            TensorRef(3, 0, 5),
            multiplier=8,
            shift=9,
        ),
        Instr(
            Opcode.GLOBAL_AVGPOOL,
            (TensorRef(3, 0, 5),),
            TensorRef(4, 0, 5),
            multiplier=10,
            shift=11,
        ),
    ]
    weights = [
        *w0,
        *w1,
        np.array([2**30, 2**30], np.int32),
        np.array([31], np.int32),
        np.array([2**30], np.int32),
        np.array([32], np.int32),
    ]
    shapes = [(4, 4, 2), (4, 4, 5), (2, 2, 5), (2, 2, 5), (1, 1, 5)]
    return _program(shapes, instrs, TensorRef(0, 0, 2), TensorRef(4, 0, 5), weights)


def test_a_program_with_concatenation_by_addressing() -> None:
    program = _concat_program()
    x = _x(2, 4, 4, 2)
    got, run = harness.run_program(program, x)
    assert run.polls[-1][0] == STATUS["DONE"] and run.bad_accesses == 0
    assert np.array_equal(got, executor.execute(program, x, reference))


@pytest.mark.parametrize("bus", BUSES)
def test_memory_wait_states_and_a_64_bit_address(bus: AxiBus | None) -> None:
    """Random memory stalls, and regions above 4 GiB (the _HI registers); on AXI4, the
    five-descriptor program with writes whose AW and W the slave took in every order."""
    program = _concat_program()
    x = _x(1, 4, 4, 2)
    got, run = harness.run_program(program, x, base=0x8_0000_0040, stall=True, bus=bus)
    assert run.polls[-1][0] == STATUS["DONE"] and run.bad_accesses == 0
    assert run.reg("DESC_ADDR_HI") == 8 and run.reg("ACT_ADDR_HI") == 8
    assert np.array_equal(got, executor.execute(program, x, reference))
    _check_bus(run, bus)
    if bus is not None:
        assert min(run.axi["aw_first"], run.axi["w_first"], run.axi["together"]) > 0, run.axi


# Errors and registers ----------------------------------------------------------------------


def _descs_with(program: Program, x: np.ndarray, index: int, **fields: int) -> np.ndarray:
    from fpga_serve.hw import descriptors

    table = descriptors.pack(program, descriptors.layout(program, x.shape[0])).copy()
    rows = table.view(descriptors.DESCRIPTOR)
    for name, value in fields.items():
        rows[index][name] = value
    return table


def test_bad_opcode_stops_with_error_1_then_soft_reset_and_a_good_run() -> None:
    program = _concat_program()
    x = _x(1, 4, 4, 2)
    bad = harness.memory_image(program, x, _descs_with(program, x, 2, opcode=9))
    good = harness.memory_image(program, x)
    assert bad.act_at == good.act_at and bad.wgt_at == good.wgt_at
    base = harness.DEFAULT_BASE
    desc_good = len(bad.data)  # the good descriptors, appended after the bad image
    image = bytes(bad.data) + bytes(good.data[good.desc_at : good.desc_at + good.count * 64])
    start = harness.register_writes(base, bad.count, base + bad.act_at, base + bad.wgt_at, 1)
    done_or_error = STATUS["DONE"] | STATUS["ERROR"]
    script = [
        *start,
        (POLL, done_or_error, 10_000),
        (READ, REG["ERROR_CODE"], 0),
        (WRITE, REG["CTRL"], CTRL["SOFT_RESET"]),
        (READ, REG["STATUS"], 0),
        (READ, REG["ERROR_CODE"], 0),
        (WRITE, REG["DESC_ADDR_LO"], base + desc_good),
        (WRITE, REG["CTRL"], CTRL["START"]),
        (READ, REG["STATUS"], 0),
        (POLL, done_or_error, 10_000),
        (READ, REG["ERROR_CODE"], 0),
    ]
    run = harness.run_script(image, script)
    assert run.polls[0][0] == STATUS["ERROR"]
    assert [v for a, v in run.reads] == [
        ERRORS["BAD_OPCODE"],
        0,  # STATUS after SOFT_RESET
        0,  # ERROR_CODE after SOFT_RESET
        STATUS["BUSY"],
        ERRORS["NONE"],
    ]
    assert run.polls[1][0] == STATUS["DONE"]
    assert np.array_equal(
        harness.read_output(good, run.memory), executor.execute(program, x, reference)
    )


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"opcode": 0}, "BAD_OPCODE"),
        ({"opcode": 7}, "BAD_OPCODE"),
        ({"stride": 0}, "BAD_DESCRIPTOR"),
        ({"out_hwc": (3 << 22) | (2 << 12) | 3}, "BAD_DESCRIPTOR"),  # not what 4x4 / 2x2 gives
        ({"out_slice": (5 << 16) | 3}, "BAD_DESCRIPTOR"),  # channels [3, 8) of a 5-channel buffer
        ({"mult_offset": 2}, "BAD_ADDRESS"),  # an int32 constant not 4-byte aligned
    ],
)
def test_bad_descriptors_are_refused(fields: dict[str, int], code: str) -> None:
    program = _concat_program()
    x = _x(1, 4, 4, 2)
    index = 3 if "mult_offset" in fields else 2  # the ADD reads multipliers; MAXPOOL none
    _, run = harness.run_program(program, x, descs=_descs_with(program, x, index, **fields))
    assert run.polls[-1][0] == STATUS["ERROR"]
    assert run.reg("ERROR_CODE") == ERRORS[code]
    assert run.reg("STATUS") == STATUS["ERROR"]


def test_register_file() -> None:
    base = harness.DEFAULT_BASE
    script = [
        (WRITE, REG["DESC_COUNT"], 0x1234_5678),
        (WRITE, REG["BATCH"], 7),
        (WRITE, REG["WGT_ADDR_HI"], 0xDEAD_BEEF),
        (WRITE, REG["VERSION"], 0),  # read-only
        (WRITE, REG["STATUS"], 7),  # read-only
        (WRITE, 0x100, 1),  # unmapped
        *harness.dump_registers(),
        (READ, 0x100, 0),
        (WRITE, REG["DESC_ADDR_LO"], base + 2),  # misaligned descriptor region
        (WRITE, REG["DESC_COUNT"], 1),
        (WRITE, REG["CTRL"], CTRL["START"]),
        (POLL, STATUS["DONE"] | STATUS["ERROR"], 100),
        (READ, REG["ERROR_CODE"], 0),
        (WRITE, REG["DESC_ADDR_LO"], base),
        (WRITE, REG["DESC_COUNT"], 0),
        (WAIT, 20, 0),
        (WRITE, REG["CTRL"], CTRL["SOFT_RESET"] | CTRL["START"]),  # reset, then an empty run
        (POLL, STATUS["DONE"] | STATUS["ERROR"], 100),
        (READ, REG["ERROR_CODE"], 0),
    ]
    run = harness.run_script(bytes(64), script)
    regs = dict(run.reads[:14])
    assert regs[REG["CTRL"]] == 0 and regs[REG["STATUS"]] == 0 and regs[REG["ERROR_CODE"]] == 0
    assert regs[REG["VERSION"]] == 0x00010000
    assert regs[REG["DESC_COUNT"]] == 0x1234_5678 and regs[REG["BATCH"]] == 7
    assert regs[REG["WGT_ADDR_HI"]] == 0xDEAD_BEEF and regs[REG["CYCLES_LO"]] == 0
    assert run.reads[14] == (0x100, 0)
    assert run.polls[0][0] == STATUS["ERROR"] and run.reads[15][1] == ERRORS["BAD_ADDRESS"]
    assert run.polls[1][0] == STATUS["DONE"]  # DESC_COUNT 0: done at once
    assert run.reads[16] == (REG["ERROR_CODE"], ERRORS["NONE"])


def test_start_while_busy_is_ignored() -> None:
    program = _concat_program()
    x = _x(1, 4, 4, 2)
    image = harness.memory_image(program, x)
    base = harness.DEFAULT_BASE
    start = harness.register_writes(
        base + image.desc_at, image.count, base + image.act_at, base + image.wgt_at, 1
    )
    script = [
        *start,
        (WAIT, 500, 0),
        (READ, REG["CYCLES_LO"], 0),
        (WRITE, REG["CTRL"], CTRL["START"]),  # BUSY: ignored, the run goes on
        (READ, REG["STATUS"], 0),
        (READ, REG["CYCLES_LO"], 0),
        (POLL, STATUS["DONE"] | STATUS["ERROR"], 10_000),
    ]
    run = harness.run_script(bytes(image.data), script)
    (_, before), (_, status), (_, after) = run.reads
    assert status == STATUS["BUSY"] and after > before >= 500
    assert run.polls[0][0] == STATUS["DONE"]
    want = executor.execute(program, x, reference)
    assert np.array_equal(harness.read_output(image, run.memory), want)


# AXI4: error responses and SOFT_RESET with transactions in flight -------------------------


def _error_at(image: harness.Image, where: str) -> int:
    """The physical address of a word the concatenation program certainly accesses."""
    base, lay = harness.DEFAULT_BASE, image.lay
    if where == "descriptor read":  # word 4 of the third descriptor
        return base + image.desc_at + 2 * 64 + 16
    if where == "activation read":  # the input's second word
        return base + image.act_at + lay.buffer_offsets[0] + 4
    return base + image.act_at + lay.buffer_offsets[1]  # the first CONV's first output word


@pytest.mark.parametrize(
    ("where", "resp"),
    [("descriptor read", 2), ("activation read", 3), ("output write", 2)],
    ids=["descriptor-read-SLVERR", "activation-read-DECERR", "output-write-SLVERR"],
)
def test_an_axi_error_response_ends_the_run_with_bus_error_then_a_clean_run(
    where: str, resp: int
) -> None:
    """An SLVERR or DECERR on R or B ends the run with STATUS.ERROR and ERROR_CODE BUS_ERROR;
    after SOFT_RESET a START runs the program exactly (the injection fires once)."""
    program = _concat_program()
    x = _x(1, 4, 4, 2)
    image = harness.memory_image(program, x)
    base = harness.DEFAULT_BASE
    bus = AxiBus(seed=21 + resp, error_at=_error_at(image, where), error_resp=resp)
    start = harness.register_writes(
        base + image.desc_at, image.count, base + image.act_at, base + image.wgt_at, 1
    )
    done_or_error = STATUS["DONE"] | STATUS["ERROR"]
    script = [
        *start,
        (POLL, done_or_error, 10_000),
        (READ, REG["STATUS"], 0),
        (READ, REG["ERROR_CODE"], 0),
        (READ, REG["CYCLES_LO"], 0),
        (WAIT, 50, 0),
        (READ, REG["CYCLES_LO"], 0),  # stopped: CYCLES no longer counts
        (WRITE, REG["CTRL"], CTRL["SOFT_RESET"]),
        (READ, REG["STATUS"], 0),
        (READ, REG["ERROR_CODE"], 0),
        (WRITE, REG["CTRL"], CTRL["START"]),
        (POLL, done_or_error, 10_000),
        (READ, REG["ERROR_CODE"], 0),
        (READ, REG["CYCLES_LO"], 0),
    ]
    run = harness.run_script(bytes(image.data), script, bus=bus)
    assert run.polls[0][0] == STATUS["ERROR"]
    status, code, cycles_at_error, cycles_later, *rest = (v for _, v in run.reads)
    assert (status, code) == (STATUS["ERROR"], ERRORS["BUS_ERROR"])
    assert 0 < cycles_at_error == cycles_later
    assert rest[:3] == [0, ERRORS["NONE"], ERRORS["NONE"]]  # SOFT_RESET clears, the run is clean
    assert run.polls[1][0] == STATUS["DONE"] and rest[3] > cycles_at_error
    assert run.axi["errors"] == 1 and run.bad_accesses == 0, run.axi
    want = executor.execute(program, x, reference)
    assert np.array_equal(harness.read_output(image, run.memory), want)


@pytest.mark.parametrize(
    "restart",
    [
        [(WRITE, REG["CTRL"], CTRL["SOFT_RESET"] | CTRL["START"])],
        [(WRITE, REG["CTRL"], CTRL["SOFT_RESET"]), (WRITE, REG["CTRL"], CTRL["START"])],
    ],
    ids=["soft-reset-and-start", "soft-reset-then-start"],
)
def test_soft_reset_with_an_axi_access_in_flight_then_an_exact_run(
    restart: list[tuple[int, int, int]],
) -> None:
    """A SOFT_RESET cannot withdraw an AXI transaction: the adapter finishes it and drops its
    answer, so the run started at once (in the same write, or the next) gets no stale data."""
    program = _concat_program()
    x = _x(1, 4, 4, 2)
    image = harness.memory_image(program, x)
    base = harness.DEFAULT_BASE
    start = harness.register_writes(
        base + image.desc_at, image.count, base + image.act_at, base + image.wgt_at, 1
    )
    script = [
        *start,
        (WAIT, 1500, 0),  # into the first CONV: activation, weight and constant reads
        *restart,
        (POLL, STATUS["DONE"] | STATUS["ERROR"], 10_000),
        (READ, REG["ERROR_CODE"], 0),
    ]
    # a slow bus, so that the SOFT_RESET finds an access in flight, and it is still in flight
    # when the new run asks for its first descriptor word
    bus = AxiBus(seed=31, ready_pct=20, max_delay=8)
    run = harness.run_script(bytes(image.data), script, bus=bus)
    assert run.axi["withdrawn"] == 1, run.axi
    assert run.polls[0][0] == STATUS["DONE"]
    assert run.reads == [(REG["ERROR_CODE"], ERRORS["NONE"])]
    assert run.axi["errors"] == 0 and run.bad_accesses == 0
    want = executor.execute(program, x, reference)
    assert np.array_equal(harness.read_output(image, run.memory), want)


# A program from the real compiler -----------------------------------------------------------


@functools.cache
def _compiled_keras_case() -> tuple[Program, np.ndarray]:
    """A small Keras model compiled by fpga_serve.compiler (all six opcodes) and a quantised
    batch of 2; compiled once for both buses."""
    import keras
    from fpga_serve.compiler import CompileOptions, compile_model

    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.ZeroPadding2D(1)(inp)
    x = keras.layers.Conv2D(6, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = keras.layers.Add()([x, y])
    z = keras.layers.Conv2D(2, 1)(x)
    x = keras.layers.Concatenate()([x, z])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5)(x)
    model = keras.Model(inp, out)
    data = RNG.normal(0, 1, (8, 16, 16, 3)).astype(np.float32)
    program = compile_model(model, data, CompileOptions(calibration_method="max")).program
    ops = {i.op.name for i in program.instrs}
    assert ops == {"CONV", "MAXPOOL", "AVGPOOL", "GLOBAL_AVGPOOL", "ADD", "SCALE_SHIFT"}, ops
    return program, quantize_input(data[:2], program.input_scale)


@pytest.mark.parametrize(
    "bus", [MEM, pytest.param(AxiBus(seed=12, ready_pct=60, max_delay=2), id="axi")]
)
def test_a_compiled_keras_model_runs_exactly_on_the_rtl(bus: AxiBus | None) -> None:
    program, xq = _compiled_keras_case()
    if bus is not None:
        xq = xq[:1]  # one image on AXI4 (about 2.5x the cycles; batch 2 is covered above)
    got, run = harness.run_program(program, xq, bus=bus)
    assert run.polls[-1][0] == STATUS["DONE"] and run.bad_accesses == 0
    assert np.array_equal(got, executor.execute(program, xq, reference))
    _check_bus(run, bus)


# Lint and synthesis ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is not installed")
@pytest.mark.parametrize("top", ["cnn_accel", "cnn_axi_master", "cnn_accel_axi"])
def test_verilator_lints_the_rtl_clean(top: str) -> None:
    proc = subprocess.run(
        [
            "verilator",
            "--lint-only",
            "-Wall",
            "-Wno-DECLFILENAME",
            "--top-module",
            top,
            *map(str, harness.RTL_SOURCES),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
def test_yosys_synthesises_cnn_accel_axi_without_latches() -> None:
    """The AXI4 top and, below it unflattened, cnn_accel and cnn_axi_master."""
    sources = " ".join(map(str, harness.RTL_SOURCES))
    script = (
        f"read_verilog {sources}; synth -top cnn_accel_axi; "
        "select -assert-none t:$dlatch t:$adlatch t:$_DLATCH* t:$_DLATCHSR*; "
        "check -assert; stat"
    )
    proc = subprocess.run(
        ["yosys", "-p", script], check=False, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "Latch inferred" not in proc.stdout
    for module in ("cnn_accel_axi", "cnn_accel", "cnn_axi_master", "cnn_engine"):
        assert f"=== {module} ===" in proc.stdout, module


@pytest.mark.slow
def test_the_pynq_tests_network_runs_exactly_on_the_rtl() -> None:
    """tests/test_pynq.py's small network (7x7/2 stem, 'same' max pooling, residual add,
    concatenation, batch norm on concatenated features, strided 1x1, average pooling, dense) on a
    batch of 2 (about 45 s in Icarus Verilog)."""
    import keras
    from fpga_serve.compiler import CompileOptions, compile_model
    from test_pynq import small_network

    keras.utils.set_random_seed(4)
    data = RNG.normal(0, 1, (8, 16, 16, 3)).astype(np.float32)
    program = compile_model(small_network(), data, CompileOptions(calibration_method="max")).program
    xq = quantize_input(data[:2], program.input_scale)
    got, run = harness.run_program(program, xq, poll_limit=2_000_000)
    assert run.polls[-1][0] == STATUS["DONE"] and run.bad_accesses == 0
    assert np.array_equal(got, executor.execute(program, xq, reference))
