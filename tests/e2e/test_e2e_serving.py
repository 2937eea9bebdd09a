"""End to end: the server in its own process on loopback, called as apps call it."""

from __future__ import annotations

import struct
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import LABELS, build_tiny_model_def
from fpga_serve_client import PredictionClient, anytensor
from fpga_serve_client.protos import (
    get_model_metadata_pb2,
    grpc_predict_v2_pb2,
    grpc_predict_v2_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    tf_tensor_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hostile import png_claiming
from prometheus_client.parser import text_string_to_metric_families
from serving import run_server


@pytest.fixture(scope="module")
def channel(tiny_server: Any) -> Any:
    with grpc.insecure_channel(tiny_server.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


def run_locally(path: Path, images: dict[str, bytes]) -> dict[str, np.ndarray]:
    """What a zip computes in this process for each image, to compare with a server's answer."""
    from fpga_serve.modelzip import LoadContext, load_pipeline
    from fpga_serve.runtime import Pipeline

    archive = load_pipeline(path, LoadContext(device=None, workdir=None))
    try:
        pipeline = Pipeline(archive.stages, input_aliases=archive.input_aliases)
        (name,) = (spec.name for spec in pipeline.inputs)
        out = {}
        for key, data in images.items():
            (out[key],) = pipeline.run({name: np.array([data], dtype=object)}).values()
        return out
    finally:
        archive.close()


@pytest.fixture(scope="module")
def expected(tiny_zip: Path, china_jpg: bytes, flower_jpg: bytes) -> dict[str, np.ndarray]:
    return run_locally(tiny_zip, {"china": china_jpg, "flower": flower_jpg})


@pytest.fixture(scope="module")
def aliased(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """A server of a tiny model whose input is named ``jpeg``: ``images`` is only its alias."""
    path = tmp_path_factory.mktemp("aliased") / "aliased.zip"
    build_tiny_model_def("aliased", input_name="jpeg").save(path)  # type: ignore[attr-defined]
    with run_server([path]) as server:
        yield server, path


def brainwave_request(*images: bytes) -> predict_pb2.PredictRequest:
    """Exactly what the Brainwave clients sent: "images", DT_STRING, shape [N], no model_spec."""
    request = predict_pb2.PredictRequest()
    tensor = request.inputs["images"]
    tensor.dtype = tf_tensor_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=len(images))
    tensor.string_val.extend(images)
    return request


def test_seed_flow_client_scores_a_real_photo_top5(
    tiny_server: Any, china_jpg: bytes, expected: dict[str, np.ndarray], photo_dir: Path
) -> None:
    with PredictionClient(tiny_server.address) as client:
        scores = client.score_file(str(photo_dir / "china.jpg"))
        top = client.top_k(scores, 5)
    np.testing.assert_allclose(scores, expected["china"][0], rtol=1e-5, atol=1e-6)
    assert scores.shape == (len(LABELS),)
    assert abs(float(scores.sum()) - 1.0) < 1e-4
    order = np.argsort(-expected["china"][0])
    assert [label for label, _ in top] == [LABELS[i] for i in order]
    assert [c for _, c in top] == sorted((c for _, c in top), reverse=True)


def test_brainwave_shaped_predict(
    channel: Any, china_jpg: bytes, flower_jpg: bytes, expected: dict[str, np.ndarray]
) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(brainwave_request(china_jpg, flower_jpg), timeout=30)
    assert "output_alias" in response.outputs
    alias = response.outputs["output_alias"]
    assert alias.dtype == tf_tensor_pb2.DT_FLOAT
    assert [d.size for d in alias.tensor_shape.dim] == [2, len(LABELS)]
    values = np.frombuffer(alias.tensor_content, dtype="<f4").reshape(2, len(LABELS))
    np.testing.assert_allclose(values[0], expected["china"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(values[1], expected["flower"][0], rtol=1e-5, atol=1e-6)
    real = [k for k in response.outputs if k != "output_alias"]
    assert len(real) == 1 and response.outputs[real[0]] == alias
    assert response.model_spec.name == "tiny"


def test_output_filter_by_tensor_name(channel: Any, china_jpg: bytes) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = brainwave_request(china_jpg)
    request.model_spec.name = "tiny"
    request.output_filter.append("output_alias")
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["output_alias"]


def test_get_model_metadata_signature_and_labels(channel: Any) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def", "labels"]
    )
    response = stub.GetModelMetadata(request, timeout=10)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sigs)
    sig = sigs.signature_def["serving_default"]
    assert sig.inputs["images"].dtype == tf_tensor_pb2.DT_STRING
    assert sig.outputs["output_alias"].dtype == tf_tensor_pb2.DT_FLOAT
    assert [d.size for d in sig.outputs["output_alias"].tensor_shape.dim] == [-1, len(LABELS)]
    # TensorFlow's type name (tests/adapters/test_tfserving_labels.py unpacks it with
    # TensorFlow's class)
    assert response.metadata["labels"].type_url.endswith("/tensorflow.TensorProto")
    labels = anytensor.unpack(response.metadata["labels"])
    assert [s.decode() for s in labels.string_val] == LABELS


def test_kserve_v2_model_infer_raw_bytes(
    channel: Any, china_jpg: bytes, expected: dict[str, np.ndarray]
) -> None:
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    assert stub.ServerLive(grpc_predict_v2_pb2.ServerLiveRequest()).live
    assert stub.ServerReady(grpc_predict_v2_pb2.ServerReadyRequest()).ready
    assert stub.ModelReady(grpc_predict_v2_pb2.ModelReadyRequest(name="tiny")).ready
    assert not stub.ModelReady(grpc_predict_v2_pb2.ModelReadyRequest(name="nope")).ready
    meta = stub.ModelMetadata(grpc_predict_v2_pb2.ModelMetadataRequest(name="tiny"))
    assert meta.inputs[0].datatype == "BYTES" and meta.outputs[0].datatype == "FP32"
    request = grpc_predict_v2_pb2.ModelInferRequest(model_name="tiny", id="req-1")
    request.inputs.add(name=meta.inputs[0].name, datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", len(china_jpg)) + china_jpg)
    response = stub.ModelInfer(request, timeout=30)
    assert response.id == "req-1" and response.model_name == "tiny"
    out = response.outputs[0]
    assert out.datatype == "FP32" and list(out.shape) == [1, len(LABELS)]
    values = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    np.testing.assert_allclose(values, expected["china"][0], rtol=1e-5, atol=1e-6)


def test_kserve_v2_typed_contents_with_alias(aliased: Any, flower_jpg: bytes) -> None:
    """Typed ``bytes_contents`` under the alias ``images`` and under the real name ``jpeg`` give
    the scores the zip computes in process; a name that is neither is refused, naming both."""
    server, path = aliased
    want = run_locally(path, {"flower": flower_jpg})["flower"][0]
    with grpc.insecure_channel(server.address) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        meta = stub.ModelMetadata(grpc_predict_v2_pb2.ModelMetadataRequest(name="aliased"))
        assert [i.name for i in meta.inputs] == ["jpeg"]
        for name in ("images", "jpeg"):
            request = grpc_predict_v2_pb2.ModelInferRequest(model_name="aliased")
            tensor = request.inputs.add(name=name, datatype="BYTES", shape=[1])
            tensor.contents.bytes_contents.append(flower_jpg)
            response = stub.ModelInfer(request, timeout=30)
            (out,) = response.outputs
            assert out.datatype == "FP32" and list(out.shape) == [1, len(LABELS)]
            values = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
            np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)
        request.inputs[0].name = "photos"
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'jpeg', 'images'" in str(err.value.details())


def test_health_and_reflection(channel: Any) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in (
        "",
        "tensorflow.serving.PredictionService",
        "inference.GRPCInferenceService",
        "tiny",
    ):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="unknown"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(
        stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
    )
    names = {s.name for s in replies[0].list_services_response.service}
    assert {
        "tensorflow.serving.PredictionService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    } <= names
    # Reflection can describe the Predict service (grpcurl needs this).
    replies = list(
        stub.ServerReflectionInfo(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="tensorflow.serving.PredictionService"
                    )
                ]
            ),
            timeout=5,
        )
    )
    assert replies[0].file_descriptor_response.file_descriptor_proto


BAD_INPUTS = [
    ("corrupt", lambda jpg: brainwave_request(b"this is not an image"), "INVALID_ARGUMENT", "0"),
    (
        "truncated",
        lambda jpg: brainwave_request(jpg, jpg[: len(jpg) // 3]),
        "INVALID_ARGUMENT",
        "1",
    ),
    ("empty", lambda jpg: brainwave_request(b""), "INVALID_ARGUMENT", "empty"),
    ("batch over limit", lambda jpg: brainwave_request(*([jpg] * 9)), "INVALID_ARGUMENT", "limit"),
]


def _float_images_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    t = request.inputs["images"]
    t.dtype = tf_tensor_pb2.DT_FLOAT
    t.tensor_shape.dim.add(size=2)
    t.float_val.extend([1.0, 2.0])
    return request


def _two_d_request(jpg: bytes) -> predict_pb2.PredictRequest:
    request = brainwave_request(jpg, jpg)
    dims = request.inputs["images"].tensor_shape.dim
    dims[0].size = 1
    dims.add(size=2)
    return request


def _unknown_input(jpg: bytes) -> predict_pb2.PredictRequest:
    request = brainwave_request(jpg)
    request.inputs["pictures"].CopyFrom(request.inputs["images"])
    del request.inputs["images"]
    return request


def _unknown_model(jpg: bytes) -> predict_pb2.PredictRequest:
    request = brainwave_request(jpg)
    request.model_spec.name = "no-such-model"
    return request


def _unknown_version(jpg: bytes) -> predict_pb2.PredictRequest:
    request = brainwave_request(jpg)
    request.model_spec.name = "tiny"
    request.model_spec.version.value = 42
    return request


def _bad_content_size(jpg: bytes) -> predict_pb2.PredictRequest:
    request = _float_images_request()
    t = request.inputs["images"]
    del t.float_val[:]
    t.tensor_content = b"\x00" * 7
    return request


BAD_INPUTS += [
    ("wrong dtype", lambda jpg: _float_images_request(), "INVALID_ARGUMENT", "dtype"),
    ("wrong shape", _two_d_request, "INVALID_ARGUMENT", "shape"),
    ("unknown input", _unknown_input, "INVALID_ARGUMENT", "pictures"),
    ("unknown model", _unknown_model, "NOT_FOUND", "no-such-model"),
    ("unknown version", _unknown_version, "NOT_FOUND", "42"),
    ("content size", _bad_content_size, "INVALID_ARGUMENT", "images"),
    (
        "decompression bomb",
        lambda jpg: brainwave_request(png_claiming(10_000, 9_000)),
        "INVALID_ARGUMENT",
        "max_image_pixels",
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "code", "needle"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_refused_and_server_keeps_serving(
    channel: Any, china_jpg: bytes, case: str, make: Any, code: str, needle: str
) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(make(china_jpg), timeout=30)
    assert err.value.code().name == code, err.value.details()
    assert needle in err.value.details(), err.value.details()
    ok = stub.Predict(brainwave_request(china_jpg), timeout=30)
    assert "output_alias" in ok.outputs


def test_v2_bad_raw_contents(channel: Any) -> None:
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = grpc_predict_v2_pb2.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", 1000) + b"short")
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request = grpc_predict_v2_pb2.ModelInferRequest(model_name="ghost")
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_metrics_scrape_counts_requests(tiny_server: Any, channel: Any, china_jpg: bytes) -> None:
    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{tiny_server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    ok_key = (
        "fpga_serve_requests_total",
        (("code", "OK"), ("model", "tiny"), ("protocol", "tfserving"), ("version", "1")),
    )
    bad_key = (
        "fpga_serve_requests_total",
        (
            ("code", "INVALID_ARGUMENT"),
            ("model", "tiny"),
            ("protocol", "tfserving"),
            ("version", "1"),
        ),
    )
    before = scrape()
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(3):
        stub.Predict(brainwave_request(china_jpg), timeout=30)
    with pytest.raises(grpc.RpcError):
        stub.Predict(brainwave_request(b"garbage"), timeout=30)
    after = scrape()
    assert after[ok_key] - before.get(ok_key, 0.0) == 3
    assert after[bad_key] - before.get(bad_key, 0.0) == 1
    stage_counts = [
        v
        for (name, labels), v in after.items()
        if name == "fpga_serve_stage_duration_seconds_count" and dict(labels)["model"] == "tiny"
    ]
    assert len(stage_counts) == 2 and all(v >= 3 for v in stage_counts)
    hist = [
        v
        for (name, labels), v in after.items()
        if name == "fpga_serve_request_duration_seconds_count"
        and dict(labels).get("protocol") == "tfserving"
    ]
    assert hist and hist[0] >= 3
