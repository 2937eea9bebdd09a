"""The twin in its own worker process (the server's default): the same bits as the reference,
a dead worker is a DeviceError, reset brings it back with its programs, close ends it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fpga_serve.core.errors import DeviceError, FpgaServeError
from fpga_serve.core.settings import ServerSettings
from fpga_serve.hw.registry import select_device
from fpga_serve.hw.twin import segment
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


def test_runs_go_through_a_shared_segment_that_grows_with_the_batch(device: TwinDevice) -> None:
    program = tiny_program()
    loaded = device.load(program)
    reference = TwinDevice(reference=True).load(program)
    worker = device.worker
    assert worker is not None
    x = RNG.integers(-128, 128, (2, 6, 6, 4), dtype=np.int8)
    assert np.array_equal(loaded.run(x), reference.run(x))
    first = worker._segment
    assert first is not None and first.size == segment.GRAIN
    batch = segment.GRAIN // (6 * 6 * 4) + 1  # its input alone needs more than one grain
    big = RNG.integers(-128, 128, (batch, 6, 6, 4), dtype=np.int8)
    out = loaded.run(big)
    assert np.array_equal(out, reference.run(big))
    assert worker._segment is not None and worker._segment.size > first.size
    kept = loaded.run(x)
    loaded.run(RNG.integers(-128, 128, (2, 6, 6, 4), dtype=np.int8))
    assert np.array_equal(kept, reference.run(x))  # its own copy, not a view of the segment


def test_an_output_larger_than_expected_comes_back_pickled(device: TwinDevice) -> None:
    program = tiny_program()
    loaded = device.load(program)
    worker = device.worker
    assert worker is not None
    big = RNG.integers(-128, 128, (segment.GRAIN // (6 * 6 * 4), 6, 6, 4), dtype=np.int8)
    want = TwinDevice(reference=True).load(program).run(big)
    # The host sizes the segment for an output of no bytes: the input fills it to the grain.
    got = worker.run(loaded.program_id, big, (0,))  # type: ignore[attr-defined]
    assert worker._segment is not None and worker._segment.size == segment.GRAIN
    assert np.array_equal(got, want)


def test_without_shared_memory_runs_are_pickled(
    device: TwinDevice, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*_: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(segment.os, "memfd_create", refuse)
    program = tiny_program()
    loaded = device.load(program)
    x = RNG.integers(-128, 128, (3, 6, 6, 4), dtype=np.int8)
    want = TwinDevice(reference=True).load(program).run(x)
    assert np.array_equal(loaded.run(x), want)
    assert np.array_equal(loaded.run(x), want)
    assert device.worker is not None and device.worker._segment is None
    assert [r.message for r in caplog.records if "no shared segment" in r.message] == [
        "twin worker: no shared segment ([Errno 28] No space left on device); inputs go "
        "through the pipe"
    ]  # said once, not per run


def test_a_new_worker_gets_a_new_segment(device: TwinDevice) -> None:
    program = tiny_program()
    loaded = device.load(program)
    x = RNG.integers(-128, 128, (1, 6, 6, 4), dtype=np.int8)
    want = loaded.run(x)
    worker = device.worker
    assert worker is not None and worker._segment is not None
    old = worker._segment
    worker.process.kill()
    worker.process.join()
    with pytest.raises(DeviceError):
        loaded.run(x)
    device.reset()
    assert worker._segment is None  # dropped with the dead worker
    assert np.array_equal(loaded.run(x), want)
    assert worker._segment is not None and worker._segment is not old


def test_segment_views_stay_inside_it() -> None:
    seg = segment.Segment.sized(1)
    try:
        assert seg.size == segment.GRAIN
        seg.array(0, (4,), np.dtype(np.int8))[...] = 7
        assert seg.array(0, (2, 2), np.dtype(np.int8)).tolist() == [[7, 7], [7, 7]]
        with pytest.raises(ValueError, match="outside"):
            seg.array(segment.GRAIN - 1, (2,), np.dtype(np.int8))
    finally:
        seg.close()
