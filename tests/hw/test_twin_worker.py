"""The twin in its own worker process (the server's default): the same bits as the reference,
a dead worker is a DeviceError, reset brings it back with its programs, close ends it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fpga_serve.core.errors import DeviceError, FpgaServeError
from fpga_serve.core.settings import ServerSettings
from fpga_serve.hw.registry import select_device
from fpga_serve.hw.twin.device import TwinDevice
from test_twin import tiny_program  # a 3x3 conv over 6x6x4 with fused ReLU

RNG = np.random.default_rng(11)


@pytest.fixture
def device() -> Iterator[TwinDevice]:
    dev = TwinDevice(isolated=True)
    yield dev
    dev.close()


def test_worker_equals_the_reference_and_frees_programs(device: TwinDevice) -> None:
    program = tiny_program()
    loaded = device.load(program)
    assert loaded.path.endswith("own process")  # type: ignore[attr-defined]
    x = RNG.integers(-128, 128, (3, 6, 6, 4), dtype=np.int8)
    want = TwinDevice(reference=True).load(program).run(x)
    assert np.array_equal(loaded.run(x), want)
    assert device.worker is not None and device.worker.process.pid is not None
    loaded.close()
    assert device.resident == {}
    with pytest.raises(FpgaServeError, match="twin worker: KeyError") as err:
        loaded.run(x)  # freed in the worker too
    assert not isinstance(err.value, DeviceError)  # a host bug, not a device fault
    assert device.healthy


def test_a_dead_worker_is_a_device_error_and_reset_restores_it(device: TwinDevice) -> None:
    program = tiny_program()
    loaded = device.load(program)
    x = RNG.integers(-128, 128, (1, 6, 6, 4), dtype=np.int8)
    want = loaded.run(x)
    assert device.worker is not None
    device.worker.process.kill()
    device.worker.process.join()
    with pytest.raises(DeviceError, match=r"worker process died \(exit code -9\)"):
        loaded.run(x)
    assert not device.healthy  # marked by the base class, not by hand
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


def test_the_worker_sets_a_short_openmp_spin_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker sets GOMP_SPINCOUNT before its kernels' OpenMP runtime loads (libgomp's own
    default spun ~7 ms of CPU a request beside the host's stages) and keeps an operator's."""
    import os
    from multiprocessing import Pipe

    from fpga_serve.hw.twin import worker

    host, child = Pipe()
    for told, want in ((None, str(worker.WORKER_SPINCOUNT)), ("7", "7")):
        if told is None:
            monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
        else:
            monkeypatch.setenv("GOMP_SPINCOUNT", told)
        host.send(("end", 0, None))  # an op the worker does not know ends its loop
        worker._serve(child, None, 0)
        assert os.environ["GOMP_SPINCOUNT"] == want
