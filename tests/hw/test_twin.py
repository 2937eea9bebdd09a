"""The twin: numpy-path ops equal the reference (the spec) bit for bit on every shape class the four
model families use; requantisation follows its stated rounding; programs round-trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fpga_serve.core.errors import DeviceError, InvalidInput, ModelLoadError
from fpga_serve.core.isa import (
    SPEC_VERSION,
    Buffer,
    Instr,
    Opcode,
    Program,
    TensorRef,
    load_spec,
    quantize_multiplier,
    round_shift,
)
from fpga_serve.hw import registry
from fpga_serve.hw.registry import available, select_device
from fpga_serve.hw.twin import numpy_path, reference
from fpga_serve.hw.twin.device import TwinDevice
from waiting import wait_until

RNG = np.random.default_rng(2024)


def i8(*shape: int, low: int = -128, high: int = 127) -> np.ndarray:
    return RNG.integers(low, high, shape, endpoint=True, dtype=np.int8)


def requant_params(cout: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in RNG.uniform(0.2, 2.0, cout) / (k * 40)]
    return (np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32))


# (name, H, W, Cin, Cout, k, stride, pad): the conv shapes of ResNet, DenseNet and VGG
CONV_CASES = [
    ("7x7/2 pad 3 (stem)", 20, 20, 3, 16, 7, 2, (3, 3, 3, 3)),
    ("3x3/1 pad 1", 9, 9, 32, 24, 3, 1, (1, 1, 1, 1)),
    ("3x3/2", 9, 9, 16, 8, 3, 2, (0, 1, 0, 1)),
    ("1x1/1", 7, 7, 64, 32, 1, 1, (0, 0, 0, 0)),
    ("1x1/2 (projection)", 8, 8, 32, 64, 1, 2, (0, 0, 0, 0)),
    ("3x3x512 K=4608 > 1024", 4, 4, 512, 8, 3, 1, (1, 1, 1, 1)),
    ("1x1 K=2048 (dense as 1x1)", 1, 1, 2048, 10, 1, 1, (0, 0, 0, 0)),
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_fast_equals_reference(case: tuple, relu: bool) -> None:  # type: ignore[type-arg]
    _, h, w, cin, cout, k, stride, pad = case
    x = i8(2, h, w, cin)
    weight = i8(k, k, cin, cout, low=-127)
    bias = RNG.integers(-5000, 5000, cout).astype(np.int32)
    m, s = requant_params(cout, k * k * cin)
    want = reference.conv(x, weight, bias, m, s, stride, pad, relu)
    got = numpy_path.conv(x, weight, bias, m, s, stride, pad, relu)
    assert got.dtype == np.int8 and np.array_equal(got, want)


def test_conv_saturates_at_the_extremes() -> None:
    x = np.full((1, 3, 3, 1100), 127, np.int8)
    weight = np.full((1, 1, 1100, 2), -127, np.int8)
    weight[..., 1] = 127
    bias = np.zeros(2, np.int32)
    m, s = quantize_multiplier(0.01)
    mult, shift = np.array([m, m], np.int32), np.array([s, s], np.int32)
    want = reference.conv(x, weight, bias, mult, shift, 1, (0, 0, 0, 0), False)
    got = numpy_path.conv(x, weight, bias, mult, shift, 1, (0, 0, 0, 0), False)
    assert np.array_equal(got, want)
    assert (got[..., 0] == -128).all() and (got[..., 1] == 127).all()
    x_min = np.full((1, 2, 2, 1024), -128, np.int8)  # the largest |partial sum| the chunking allows
    w_min = np.full((1, 1, 1024, 1), -127, np.int8)
    got = numpy_path.conv(x_min, w_min, bias[:1], mult[:1], shift[:1], 1, (0, 0, 0, 0), False)
    assert np.array_equal(
        got, reference.conv(x_min, w_min, bias[:1], mult[:1], shift[:1], 1, (0, 0, 0, 0), False)
    )


@pytest.mark.parametrize(
    ("kernel", "stride", "pad", "pad_value"),
    [
        ((3, 3), 2, (1, 1, 1, 1), 0),
        ((3, 3), 2, (0, 1, 0, 1), -128),
        ((2, 2), 2, (0, 0, 0, 0), 0),
    ],
)
def test_maxpool(
    kernel: tuple[int, int], stride: int, pad: tuple[int, int, int, int], pad_value: int
) -> None:
    x = i8(2, 11, 11, 8)
    assert np.array_equal(
        numpy_path.maxpool(x, kernel, stride, pad, pad_value),
        reference.maxpool(x, kernel, stride, pad, pad_value),
    )


def test_avgpool_and_global_avgpool() -> None:
    x = i8(2, 8, 8, 16)
    m, s = quantize_multiplier(1 / 4 * 0.9)
    mult, shift = np.array([m], np.int32), np.array([s], np.int32)
    assert np.array_equal(
        numpy_path.avgpool(x, (2, 2), 2, (0, 0, 0, 0), mult, shift),
        reference.avgpool(x, (2, 2), 2, (0, 0, 0, 0), mult, shift),
    )
    m, s = quantize_multiplier(1 / 64 * 1.3)
    mult, shift = np.array([m], np.int32), np.array([s], np.int32)
    got = numpy_path.global_avgpool(x, mult, shift)
    assert got.shape == (2, 1, 1, 16)
    assert np.array_equal(got, reference.global_avgpool(x, mult, shift))


@pytest.mark.parametrize("relu", [False, True])
def test_add_with_different_scales(relu: bool) -> None:
    a, b = i8(2, 5, 5, 12), i8(2, 5, 5, 12)
    mult = np.array([1_500_000_000, 700_000_000], np.int32)
    shift = np.array([31], np.int32)
    got = numpy_path.add(a, b, mult, shift, relu)
    assert np.array_equal(got, reference.add(a, b, mult, shift, relu))
    assert got.min() >= (0 if relu else -128)


def test_scale_shift_relu_on_a_channel_slice() -> None:
    x = i8(2, 4, 4, 32)[..., 8:24]  # a slice of a concatenated buffer
    mult = RNG.integers(-(2**30), 2**30, 16).astype(np.int32)
    bias = RNG.integers(-(2**30), 2**30, 16).astype(np.int32)
    shift = np.array([30], np.int32)
    got = numpy_path.scale_shift(np.ascontiguousarray(x), mult, bias, shift, True)
    assert np.array_equal(got, reference.scale_shift(x, mult, bias, shift, True))


def test_requant_rounding_is_round_half_up() -> None:
    # Hand-derived: S = 2 divides by 4 after adding 2: 6/4 = 1.5 -> 2, -6/4 = -1.5 -> -1, 5/4 -> 1
    values = np.array([6, -6, 5, -5, 2, -2, 1], np.int64)
    assert round_shift(values, 2).tolist() == [2, -1, 1, -1, 1, 0, 0]
    acc = np.array([[100, -100, 3, 200000]], np.int32)
    m, s = quantize_multiplier(0.5)  # M = 2^30, S = 31
    assert (m, s) == (1 << 30, 31)
    out = reference.requantize(acc, np.full(4, m, np.int32), np.full(4, s, np.int32), False)
    assert out.tolist() == [[50, -50, 2, 127]]
    relu = reference.requantize(acc, np.full(4, m, np.int32), np.full(4, s, np.int32), True)
    assert relu.tolist() == [[50, 0, 2, 127]]


def test_quantize_multiplier_normalises_and_refuses_bad_factors() -> None:
    for real in (1e-6, 0.0123, 0.5, 0.999999, 1.0, 3.7):
        m, s = quantize_multiplier(real)
        assert 2**30 <= m < 2**31 and 1 <= s <= 62
        assert abs(m * 2.0**-s - real) <= real * 2**-30
    for bad in (0.0, -1.0, float("inf"), 1e30):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


def tiny_program() -> Program:
    weights = [
        i8(3, 3, 4, 6, low=-127),
        np.zeros(6, np.int32),
        np.full(6, 1 << 30, np.int32),
        np.full(6, 40, np.int32),
    ]
    return Program(
        buffers=[Buffer(0, 6, 6, 4, 0.1), Buffer(1, 6, 6, 6, 0.2)],
        instrs=[
            Instr(
                Opcode.CONV,
                (TensorRef(0, 0, 4),),
                TensorRef(1, 0, 6),
                name="c",
                kernel=(3, 3),
                pad=(1, 1, 1, 1),
                relu=True,
                weight=0,
                bias=1,
                multiplier=2,
                shift=3,
            )
        ],
        input=TensorRef(0, 0, 4),
        output=TensorRef(1, 0, 6),
        weights=weights,
    )


def test_program_round_trip_and_refusals(tmp_path: Path) -> None:
    program = tiny_program()
    program.save(tmp_path)
    again = Program.load(tmp_path)
    x = i8(3, 6, 6, 4)
    a = TwinDevice().load(program).run(x)
    b = TwinDevice(reference=True).load(again).run(x)
    assert np.array_equal(a, b)
    data = json.loads((tmp_path / "program.json").read_text())
    data["spec_version"] = "0.9"
    (tmp_path / "program.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match=r"compiled for overlay spec '0\.9'"):
        Program.load(tmp_path)
    data["spec_version"] = SPEC_VERSION
    data["instrs"][0]["output"]["channels"] = 7
    (tmp_path / "program.json").write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="out of buffer"):
        Program.load(tmp_path)


def test_device_checks_its_input_and_health() -> None:
    loaded = TwinDevice().load(tiny_program())
    with pytest.raises(InvalidInput, match=r"int8 \[N, 6, 6, 4\]"):
        loaded.run(np.zeros((1, 6, 6, 4), np.float32))
    loaded.device.mark_failed()
    with pytest.raises(DeviceError, match="not healthy"):
        loaded.run(np.zeros((1, 6, 6, 4), np.int8))
    loaded.device.reset()
    assert loaded.run(np.zeros((1, 6, 6, 4), np.int8)).shape == (1, 6, 6, 6)


def test_busy_time_is_the_time_a_run_holds_the_device_not_its_wait() -> None:
    import threading
    import time

    from fpga_serve.hw.twin.device import TwinProgram

    gate = threading.Event()

    class HeldProgram(TwinProgram):  # the first run holds the device until the gate opens
        def _run(self, x: np.ndarray) -> np.ndarray:
            if not gate.is_set():
                gate.wait(5)
            return super()._run(x)

    device = TwinDevice()
    told: list[float] = []
    device.busy_hook = told.append
    loaded = HeldProgram(device, tiny_program())
    x = np.zeros((1, 6, 6, 4), np.int8)
    first = threading.Thread(target=loaded.run, args=(x,))
    waited = time.perf_counter()  # before the first run takes the device: its busy time counts
    first.start()
    wait_until(device.lock.locked)
    second_started = threading.Event()

    def run_second() -> None:
        second_started.set()
        loaded.run(x)  # waits for the device behind the first run

    second = threading.Thread(target=run_second)
    second.start()
    assert second_started.wait(5)
    time.sleep(0.5)  # the stimulus, not a wait: the device held for 0.5 s, the second waiting
    gate.set()
    first.join(5)
    second.join(5)
    waited = time.perf_counter() - waited
    assert len(told) == 2
    assert told[0] >= 0.5  # the first held the device while the gate was shut
    assert told[1] < 0.25  # the second's 0.5 s wait for the device is not busy time
    assert sum(told) <= waited


class _Board(TwinDevice):
    """A device ranked above the twin whose probe says whether its board is present."""

    name = "test-board"
    priority = 100
    present = False

    @classmethod
    def probe(cls, options: dict[str, Any]) -> bool:
        return cls.present


def test_registry_falls_back_to_the_twin_and_names_unknown_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("XILINX_XRT", "PYNQ_REMOTE_DEVICES"):
        monkeypatch.delenv(variable, raising=False)  # no board: the PYNQ device's probe fails
    assert select_device("auto").name == "twin"
    monkeypatch.setitem(registry._DEVICES, _Board.name, _Board)
    assert available()[0] == _Board.name
    assert type(select_device("auto")) is TwinDevice  # the better device is absent
    with pytest.raises(DeviceError, match="'test-board' is not present"):
        select_device(_Board.name)
    monkeypatch.setattr(_Board, "present", True)
    assert type(select_device("auto")) is _Board  # present: it wins over the twin
    assert select_device("twin").name == "twin"
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        select_device("gpu")


def test_spec_file_is_the_one_in_bitstreams() -> None:
    root = Path(__file__).resolve().parents[2]
    on_disk = json.loads((root / "bitstreams" / "fpga_cnn" / "spec.json").read_text())
    assert load_spec() == on_disk and on_disk["spec_version"] == SPEC_VERSION
    assert {k: v.value for k, v in Opcode.__members__.items()} == on_disk["opcodes"]
