"""The twin in its own worker process (the server's default): the same bits as the reference,
a dead worker is a DeviceError, reset brings it back with its programs, close ends it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fpga_serve.core.errors import DeviceError
from fpga_serve.core.isa import Buffer, Instr, Opcode, Program, TensorRef, quantize_multiplier
from fpga_serve.core.settings import ServerSettings
from fpga_serve.hw.registry import select_device
from fpga_serve.hw.twin.device import TwinDevice

RNG = np.random.default_rng(11)


def conv_program() -> Program:
    m, s = quantize_multiplier(0.002)
    weights = [
        RNG.integers(-127, 128, (3, 3, 8, 6), dtype=np.int8),
        RNG.integers(-500, 500, 6).astype(np.int32),
        np.full(6, m, np.int32),
        np.full(6, s, np.int32),
    ]
    return Program(
        buffers=[Buffer(0, 10, 10, 8, 0.1), Buffer(1, 10, 10, 6, 0.2)],
        instrs=[
            Instr(
                Opcode.CONV,
                (TensorRef(0, 0, 8),),
                TensorRef(1, 0, 6),
                kernel=(3, 3),
                pad=(1, 1, 1, 1),
                relu=True,
                weight=0,
                bias=1,
                multiplier=2,
                shift=3,
            )
        ],
        input=TensorRef(0, 0, 8),
        output=TensorRef(1, 0, 6),
        weights=weights,
    )


@pytest.fixture
def device() -> Iterator[TwinDevice]:
    dev = TwinDevice(isolated=True)
    yield dev
    dev.close()


def test_worker_equals_the_reference_and_frees_programs(device: TwinDevice) -> None:
    program = conv_program()
    loaded = device.load(program)
    assert loaded.path.endswith("own process")  # type: ignore[attr-defined]
    x = RNG.integers(-128, 128, (3, 10, 10, 8), dtype=np.int8)
    want = TwinDevice(reference=True).load(program).run(x)
    assert np.array_equal(loaded.run(x), want)
    assert device.worker is not None and device.worker.process.pid is not None
    loaded.close()
    assert device.resident == {}
    with pytest.raises(DeviceError, match="twin worker: KeyError"):
        loaded.run(x)  # freed in the worker too


def test_a_dead_worker_is_a_device_error_and_reset_restores_it(device: TwinDevice) -> None:
    program = conv_program()
    loaded = device.load(program)
    x = RNG.integers(-128, 128, (1, 10, 10, 8), dtype=np.int8)
    want = loaded.run(x)
    assert device.worker is not None
    device.worker.process.kill()
    device.worker.process.join()
    with pytest.raises(DeviceError, match=r"worker process died \(exit code -9\)"):
        loaded.run(x)
    device.mark_failed()
    device.reset()
    assert device.healthy and device.worker.process.is_alive()
    assert np.array_equal(loaded.run(x), want)  # the program was uploaded again
    device.close()
    assert not device.worker.process.is_alive()


def test_the_setting_chooses_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerSettings().twin_isolated is True
    monkeypatch.setenv("FPGA_SERVE_TWIN_ISOLATED", "false")
    options = {"twin_isolated": ServerSettings().twin_isolated}
    in_process = select_device("twin", options)
    assert isinstance(in_process, TwinDevice) and in_process.worker is None
    isolated = select_device("twin", {"twin_isolated": True})
    try:
        assert isinstance(isolated, TwinDevice) and isolated.worker is not None
    finally:
        isolated.close()
