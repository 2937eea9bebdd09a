"""gRPC on an event loop (adapters/server.py, calls.py): a model whose runs are short is run by
the loop that received the call, a slow one on RPC threads; at most ``workers`` calls are under
way, and the others wait with their requests unread (issue 13: the thread hand-offs of a
thread-pool server cost more than a small model's run)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fpga_serve.adapters import wire
from fpga_serve.adapters.server import Server
from fpga_serve.core.settings import ServerSettings
from fpga_serve.modelzip.stages.onnx_stage import OnnxStage
from fpga_serve.pipeline import ModelDefinition
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc, prediction_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostile import build_hold_model_def, hold_request, infer, save
from onnx import TensorProto, helper
from waiting import wait_until


def _add_one_zip(path: Path) -> Path:
    """FP32 [N, 4] -> [N, 4], x + 1: an ONNX model whose run takes microseconds."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model_def = ModelDefinition(name="add_one")
    model_def.pipeline.append(OnnxStage(model))
    return save(model_def, path)


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("loop")
    return [_add_one_zip(root / "add_one.zip"), save(build_hold_model_def(), root / "hold.zip")]


def _serving(zips: list[Path], **settings: Any) -> Server:
    server = Server(ServerSettings(port=0, metrics_port=-1, device="twin", **settings))
    server.start()
    server.load_models(zips)
    return server


def _threads_of(server: Server) -> list[str]:
    """The name of the thread each request's data plane call runs on, from now on."""
    names: list[str] = []
    infer_one = server.plane.infer

    def recorded(request: Any) -> Any:
        names.append(threading.current_thread().name)
        return infer_one(request)

    server.plane.infer = recorded  # type: ignore[method-assign]
    return names


def _add_one(stub: Any) -> np.ndarray:
    request = infer("add_one", [("x", "FP32", [1, 4])], [np.arange(4, dtype="<f4").tobytes()])
    reply = stub.ModelInfer(request, timeout=30)
    return np.frombuffer(reply.raw_output_contents[0], "<f4")


@pytest.mark.parametrize("inline_max_us", [20_000, 0])
def test_short_runs_are_run_by_the_event_loop_and_slow_ones_on_rpc_threads(
    zips: list[Path], inline_max_us: int
) -> None:
    server = _serving(zips, inline_max_us=inline_max_us)
    try:
        threads = _threads_of(server)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answers = [_add_one(kserve) for _ in range(3)]
            short = list(threads)
            threads.clear()
            for _ in range(3):  # 0.3 s runs: over 10x the bound (20 ms), waited or not
                tfs.Predict(hold_request(0.3), timeout=30)
            slow = list(threads)
    finally:
        server.stop(grace=0)
    for answer in answers:
        np.testing.assert_array_equal(answer, np.arange(4) + 1)
    assert short[0].startswith("rpc")  # its first run: its time was not known yet
    assert all(name.startswith("rpc") for name in slow), slow
    if inline_max_us:
        assert short[1:] == ["grpc-loop", "grpc-loop"], short
    else:
        assert all(name.startswith("rpc") for name in short), short


def test_calls_beyond_the_workers_wait_with_their_requests_unread_and_all_are_answered(
    zips: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[float] = []
    guarded = wire.guarded_deserializer

    def counting(cls: Any, max_fields: int) -> Any:
        parse = guarded(cls, max_fields)

        def deserialize(data: bytes) -> Any:
            parsed.append(time.monotonic())
            return parse(data)

        return deserialize

    monkeypatch.setattr(wire, "guarded_deserializer", counting)
    server = _serving(zips[1:], workers=2, inline_max_us=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(hold_request(0.0), timeout=30)
            parsed.clear()
            calls: list[Future[Any]] = [
                stub.Predict.future(hold_request(1.0), timeout=60) for _ in range(5)
            ]
            wait_until(lambda: len(parsed) >= 2)
            time.sleep(0.5)  # the other three have arrived by now; none is read
            read_while_busy = len(parsed)
            replies = [call.result(timeout=60) for call in calls]
    finally:
        server.stop(grace=0)
    assert read_while_busy == 2, parsed
    assert len(parsed) == 5
    for reply in replies:
        assert np.frombuffer(reply.outputs["y"].tensor_content, "<f4").tolist() == [2.0]


def test_health_watchers_hold_no_rpc_thread(zips: list[Path]) -> None:
    """Watch streams wait on the loop: more watchers than RPC threads still leave the threads
    to the calls that need one (metadata, a model's first run)."""
    server = _serving(zips[:1], workers=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=30) for _ in range(4)]
            for watch in watches:
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            meta = kserve.ModelMetadata(v2.ModelMetadataRequest(name="add_one"), timeout=5)
            answer = _add_one(kserve)
            for watch in watches:
                watch.cancel()
    finally:
        server.stop(grace=0)
    assert meta.name == "add_one"
    np.testing.assert_array_equal(answer, np.arange(4) + 1)
