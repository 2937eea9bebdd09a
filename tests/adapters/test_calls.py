"""The calls interceptor (adapters/calls.py): every error of our services answered with its status,
and every inference request counted once, by the model version the data plane resolved, the
protocol and the final code, in fpga_serve_requests_total, its latency and Triton's statistics
(issue 16: request metrics in one interceptor, not in every servicer)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc, prediction_service_pb2_grpc
from fpga_serve_client.protos import tf_tensor_pb2 as tf
from fpga_serve_client.protos import triton_pb2 as tp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hostile import build_widths_model_def, code_of, infer, predict, save, tensor_proto


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from fpga_serve.adapters.server import Server
    from fpga_serve.core.settings import ServerSettings

    zip_path = save(build_widths_model_def(), tmp_path_factory.mktemp("calls") / "widths.zip")
    server = Server(ServerSettings(port=0, metrics_port=-1, device="twin", twin_isolated=False))
    server.start()
    server.load_models([zip_path])
    yield server
    server.stop(grace=0)


@pytest.fixture(scope="module")
def channel(server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield channel


def _requests(server: Any, model: str, version: str, protocol: str, code: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "fpga_serve_requests_total",
        {"model": model, "version": version, "protocol": protocol, "code": code},
    )
    return value or 0.0


def _latencies(server: Any, model: str, version: str, protocol: str) -> float:
    value = server.metrics.registry.get_sample_value(
        "fpga_serve_request_duration_seconds_count",
        {"model": model, "version": version, "protocol": protocol},
    )
    return value or 0.0


def _row(width: int) -> v2.ModelInferRequest:
    request = infer("widths", [("x", "FP32", [1, width])])
    request.inputs[0].contents.fp32_contents.extend([1.0] * width)
    return request


def test_each_inference_request_is_counted_once_under_its_resolved_version_and_code(
    server: Any, channel: grpc.Channel
) -> None:
    kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = tensor_proto(tf.DT_FLOAT, [1, 3], float_val=[1, 2, 3])
    before = {
        "tfs_ok": _requests(server, "widths", "1", "tfserving", "OK"),
        "v2_ok": _requests(server, "widths", "1", "kserve_v2", "OK"),
        "v2_bad": _requests(server, "widths", "1", "kserve_v2", "INVALID_ARGUMENT"),
        "unknown": _requests(server, "_unknown", "", "kserve_v2", "NOT_FOUND"),
        "tfs_latency": _latencies(server, "widths", "1", "tfserving"),
        "v2_latency": _latencies(server, "widths", "1", "kserve_v2"),
    }
    stats_before = server.metrics.statistics.snapshot().get(("widths", "1"))

    for _ in range(3):
        tfs.Predict(predict("widths", {"x": x}), timeout=30)
    for _ in range(2):
        kserve.ModelInfer(_row(4), timeout=30)
    # Resolved, then refused: counted under the version, with its code, and not as a latency.
    wrong = infer("widths", [("x", "INT32", [1, 2])])
    wrong.inputs[0].contents.int_contents.extend([1, 2])
    assert code_of(kserve.ModelInfer, wrong, timeout=30)[0] == "INVALID_ARGUMENT"
    # Never resolved: counted under _unknown (clients cannot grow the label set).
    assert (
        code_of(kserve.ModelInfer, infer("nope", [("x", "FP32", [1, 1])]), timeout=30)[0]
        == "NOT_FOUND"
    )

    assert _requests(server, "widths", "1", "tfserving", "OK") - before["tfs_ok"] == 3
    assert _requests(server, "widths", "1", "kserve_v2", "OK") - before["v2_ok"] == 2
    assert _requests(server, "widths", "1", "kserve_v2", "INVALID_ARGUMENT") - before["v2_bad"] == 1
    assert _requests(server, "_unknown", "", "kserve_v2", "NOT_FOUND") - before["unknown"] == 1
    assert _latencies(server, "widths", "1", "tfserving") - before["tfs_latency"] == 3
    assert _latencies(server, "widths", "1", "kserve_v2") - before["v2_latency"] == 2
    stats = server.metrics.statistics.snapshot()[("widths", "1")]
    success_before = stats_before.success.count if stats_before else 0
    fail_before = stats_before.fail.count if stats_before else 0
    assert stats.success.count - success_before == 5
    assert stats.fail.count - fail_before == 1
    assert ("nope", "") not in server.metrics.statistics.snapshot()


def test_other_methods_are_answered_by_status_and_not_counted(
    server: Any, channel: grpc.Channel
) -> None:
    kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    counted = server.metrics.requests.collect()[0].samples
    total_before = sum(s.value for s in counted if s.name.endswith("_total"))

    code, details = code_of(kserve.ModelMetadata, v2.ModelMetadataRequest(name="nope"), timeout=30)
    assert code == "NOT_FOUND" and "nope" in details
    code, _ = code_of(kserve.ModelConfig, tp.ModelConfigRequest(name="nope"), timeout=30)
    assert code == "NOT_FOUND"
    code, details = code_of(kserve.ModelReady, v2.ModelReadyRequest(), timeout=30)
    assert code == "INVALID_ARGUMENT" and "model name" in details
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="widths"), timeout=30).status == (
        health_pb2.HealthCheckResponse.SERVING
    )

    counted = server.metrics.requests.collect()[0].samples
    assert sum(s.value for s in counted if s.name.endswith("_total")) == total_before


def test_an_unexpected_exception_is_internal_with_a_generic_message_and_counted(
    server: Any, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def broken(request: Any) -> Any:
        request.resolved("widths", "1")
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setattr(server.plane, "resolve_and_run", broken)
    before = _requests(server, "widths", "1", "tfserving", "INTERNAL")
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = tensor_proto(tf.DT_FLOAT, [1, 1], float_val=[1])
    code, details = code_of(tfs.Predict, predict("widths", {"x": x}), timeout=30)
    assert code == "INTERNAL"
    assert "secret" not in details and "server log" in details
    assert _requests(server, "widths", "1", "tfserving", "INTERNAL") - before == 1
    assert any("secret detail of a bug" in r.getMessage() or r.exc_info for r in caplog.records)


def test_a_refused_message_is_answered_by_the_interceptor(
    server: Any, channel: grpc.Channel
) -> None:
    """Bytes that are not protobuf: the wire deserializer's refusal goes through the same
    answer (INVALID_ARGUMENT) and is counted under _unknown."""
    before = _requests(server, "_unknown", "", "tfserving", "INVALID_ARGUMENT")
    raw = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    code, _ = code_of(raw, b"\xff\xff\xff\xff", timeout=30)
    assert code == "INVALID_ARGUMENT"
    assert _requests(server, "_unknown", "", "tfserving", "INVALID_ARGUMENT") - before == 1


def test_every_call_is_counted_open_until_grpc_finishes_it_and_no_longer(
    server: Any, channel: grpc.Channel
) -> None:
    """The gate behind wait_admitted and wait_answered (shutdown): answered calls of every kind
    (inference OK and failed, a plain method, a refused message) leave nothing open."""
    kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    kserve.ModelInfer(_row(3), timeout=30)
    assert code_of(kserve.ModelInfer, infer("nope", [("x", "FP32", [1, 1])]), timeout=30)[0] == (
        "NOT_FOUND"
    )
    assert kserve.ServerReady(v2.ServerReadyRequest(), timeout=30).ready
    raw = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    assert code_of(raw, b"\xff\xff\xff\xff", timeout=30)[0] == "INVALID_ARGUMENT"
    # gRPC ends a call's task just after its client has the answer: a moment to get there.
    assert server.calls.wait_answered(lambda: 0, timeout=5.0)
    assert server.calls.wait_admitted(timeout=5.0)
