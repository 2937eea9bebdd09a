"""The default device recovers (issue 10, finding 5): a DeviceError from any device's run marks
that device failed (in the base class), error types survive the twin's worker pipe, a killed
worker is noticed without a request, health goes NOT_SERVING, the supervisor resets the device
and health is SERVING again."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from fpga_serve.core.errors import DeviceError, FpgaServeError, InvalidInput, Status
from fpga_serve.core.isa import Program
from fpga_serve.hw.base import Device, LoadedProgram
from fpga_serve.hw.twin.device import TwinDevice
from fpga_serve_client.protos import predict_pb2, prediction_service_pb2_grpc
from fpga_serve_client.protos import tf_tensor_pb2 as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostile import build_fpga_model_def, predict, save, tensor_proto, twin_worker_pid
from serving import run_server
from test_twin import tiny_program
from waiting import wait_until

RNG = np.random.default_rng(4)


class FlakyDevice(Device):
    """A device whose runs raise what the test tells them to."""

    name = "flaky"

    def __init__(self) -> None:
        super().__init__()
        self.raise_next: Exception | None = None

    def _load(self, program: Program) -> LoadedProgram:
        return FlakyProgram(self, program)


class FlakyProgram(LoadedProgram):
    def _run(self, x: np.ndarray) -> np.ndarray:
        device = self.device
        assert isinstance(device, FlakyDevice)
        if device.raise_next is not None:
            error, device.raise_next = device.raise_next, None
            raise error
        return x


def test_a_device_error_from_any_device_marks_it_failed_in_the_base_class() -> None:
    device = FlakyDevice()
    loaded = device.load(tiny_program())
    x = np.zeros((1, 6, 6, 4), np.int8)
    device.raise_next = InvalidInput("bad data")  # the caller's fault: the device is fine
    with pytest.raises(InvalidInput):
        loaded.run(x)
    assert device.healthy
    device.raise_next = DeviceError("bus error")
    with pytest.raises(DeviceError, match="bus error"):
        loaded.run(x)
    assert not device.healthy
    with pytest.raises(DeviceError, match="not healthy"):
        loaded.run(x)  # refused until reset
    device.reset()
    assert device.healthy and loaded.run(x) is not None


@pytest.fixture
def isolated() -> Iterator[TwinDevice]:
    device = TwinDevice(isolated=True)
    yield device
    device.close()


def test_error_types_survive_the_worker_pipe(isolated: TwinDevice) -> None:
    loaded = isolated.load(tiny_program())
    assert isolated.worker is not None
    program_id = loaded.program_id  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="device input must be int8"):
        isolated.worker.call("run", program_id, np.zeros((1, 5, 5, 4), np.int8))
    with pytest.raises(FpgaServeError) as err:
        isolated.worker.call("run", program_id + 100, np.zeros((1, 6, 6, 4), np.int8))
    assert err.value.status is Status.INTERNAL and not isinstance(err.value, DeviceError)
    assert "KeyError" in str(err.value)
    assert isolated.healthy  # neither is a device fault


def test_a_killed_worker_is_noticed_without_a_request_and_reset_restores_it(
    isolated: TwinDevice,
) -> None:
    loaded = isolated.load(tiny_program())
    x = RNG.integers(-128, 128, (2, 6, 6, 4), dtype=np.int8)
    want = loaded.run(x)
    assert isolated.worker is not None
    first = isolated.worker.process.pid
    isolated.worker.process.kill()
    isolated.worker.process.join()
    assert not isolated.check()  # the supervisor's probe
    assert not isolated.healthy
    with pytest.raises(DeviceError):
        loaded.run(x)
    isolated.reset()
    assert isolated.check() and isolated.worker.process.pid != first
    assert np.array_equal(loaded.run(x), want)


def test_a_worker_killed_mid_run_fails_that_run_unavailable_and_marks_the_device(
    isolated: TwinDevice,
) -> None:
    loaded = isolated.load(tiny_program())
    assert isolated.worker is not None
    big = RNG.integers(-128, 128, (4096, 6, 6, 4), dtype=np.int8)
    errors: list[BaseException] = []
    runs: list[int] = []

    def run() -> None:
        try:
            for i in range(50):
                loaded.run(big)
                runs.append(i)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: runs or errors)  # runs are going: the kill lands in one (or the next)
    os.kill(isolated.worker.process.pid or 0, signal.SIGKILL)
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], DeviceError), errors
    assert not isolated.healthy
    isolated.reset()
    assert isolated.healthy


@pytest.fixture(scope="module")
def conv_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(build_fpga_model_def(), tmp_path_factory.mktemp("conv") / "conv.zip")


def _request() -> predict_pb2.PredictRequest:
    x = np.random.default_rng(8).random((1, 8, 8, 1)).astype("<f4")
    return predict(
        "conv", {"images": tensor_proto(tf.DT_FLOAT, [1, 8, 8, 1], tensor_content=x.tobytes())}
    )


def test_killing_the_twin_worker_turns_health_not_serving_then_recovers(conv_zip: Path) -> None:
    with (
        run_server([conv_zip], "--device", "twin", "--device-check-interval-s", "0.2") as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        want = stub.Predict(_request(), timeout=30).outputs["features"].tensor_content
        worker = twin_worker_pid(server.process.pid)

        codes: list[str] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    reply = stub.Predict(_request(), timeout=30)
                    same = reply.outputs["features"].tensor_content == want
                    codes.append("OK" if same else "WRONG")
                except grpc.RpcError as exc:
                    codes.append(exc.code().name)
                time.sleep(0.01)

        thread = threading.Thread(target=traffic)
        thread.start()
        statuses: list[int] = []

        def recovered() -> bool:
            for service in ("", "conv"):
                check = health_pb2.HealthCheckRequest(service=service)
                statuses.append(health.Check(check, timeout=5).status)
            serving = health_pb2.HealthCheckResponse.SERVING
            return health_pb2.HealthCheckResponse.NOT_SERVING in statuses and statuses[-2:] == [
                serving,
                serving,
            ]

        try:
            wait_until(lambda: len(codes) >= 3)  # traffic flows
            os.kill(worker, signal.SIGKILL)  # as the OOM killer would
            wait_until(recovered, what="health NOT_SERVING and back to SERVING")
            after = len(codes)
            wait_until(lambda: len(codes) >= after + 5)  # traffic after recovery
        finally:
            stop.set()
            thread.join(30)
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        assert not_serving in statuses, "health never said NOT_SERVING after the worker died"
        assert statuses[-2:] == [serving, serving], "health did not come back to SERVING"
        assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
        assert "UNAVAILABLE" in codes  # the requests in the gap
        assert codes[-5:] == ["OK"] * 5, codes[-10:]  # served again, with the same bits
        assert twin_worker_pid(server.process.pid) != worker
