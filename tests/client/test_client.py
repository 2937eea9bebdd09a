"""The thin client against fake servicers on loopback: request shape, auth, retries, CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fpga_serve_client import PredictionClient, ServiceError, to_tensor_proto
from fpga_serve_client.cli import main as client_main
from fpga_serve_client.convert import from_infer_input, to_infer_output
from fpga_serve_client.protos import (
    get_model_metadata_pb2,
    grpc_predict_v2_pb2,
    grpc_predict_v2_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

LABELS = ["cat", "dog", "ship"]
SCORES = np.array([[0.2, 0.7, 0.1]], dtype=np.float32)


class FakePredict(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Records what it receives; fails with scripted codes first."""

    def __init__(self) -> None:
        self.requests: list[predict_pb2.PredictRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.fail_with: list[grpc.StatusCode] = []
        self.fail_details = "scripted failure"
        self.reply_bytes = 0
        self.delay = 0.0
        self.release = threading.Event()  # set at teardown: ends every delay early
        self.scale_by_size = False  # scores times the image's size: each reply says whose it is
        self.times: list[float] = []

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.requests.append(request)
        self.times.append(time.monotonic())
        self.metadata.append(dict(context.invocation_metadata()))
        if self.fail_with:
            context.abort(self.fail_with.pop(0), self.fail_details)
        self.release.wait(self.delay)
        images = request.inputs["images"].string_val
        scores = np.repeat(SCORES, len(images) or 1, 0)
        if self.scale_by_size:
            scores = scores * np.array([[len(b)] for b in images], np.float32)
        response = predict_pb2.PredictResponse()
        response.outputs["output_alias"].CopyFrom(to_tensor_proto(scores))
        response.outputs["probs"].CopyFrom(to_tensor_proto(scores))
        if self.reply_bytes:
            response.outputs["padding"].CopyFrom(
                to_tensor_proto(np.zeros(self.reply_bytes, np.uint8))
            )
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        if "labels" in request.metadata_field:
            response.metadata["labels"].Pack(
                to_tensor_proto(np.array([s.encode() for s in LABELS], dtype=object))
            )
        return response


class FakeV2(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.requests.append(request)
        images = from_infer_input(request.inputs[0], request.raw_input_contents[0])
        out, raw = to_infer_output("probs", np.repeat(SCORES, len(images), 0))
        response = grpc_predict_v2_pb2.ModelInferResponse(model_name=request.model_name)
        response.outputs.append(out)
        response.raw_output_contents.append(raw or b"")
        return response


@pytest.fixture()
def fake() -> Iterator[tuple[str, FakePredict, FakeV2]]:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    predict, v2 = FakePredict(), FakeV2()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predict, server)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(v2, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", predict, v2
    predict.release.set()
    server.stop(0)


def test_request_is_shaped_like_the_brainwave_client(fake: Any) -> None:
    address, predict, _ = fake
    with PredictionClient(address, access_token="k-123") as client:
        scores = client.score_image(b"\xff\xd8jpeg")
    np.testing.assert_array_equal(scores, SCORES[0])
    (request,) = predict.requests
    assert not request.HasField("model_spec")
    tensor = request.inputs["images"]
    assert tensor.dtype == 7 and [d.size for d in tensor.tensor_shape.dim] == [1]
    assert list(tensor.string_val) == [b"\xff\xd8jpeg"]
    assert predict.metadata[0]["authorization"] == "Bearer k-123"


def test_top_k_uses_the_model_labels(fake: Any) -> None:
    address, _, _ = fake
    with PredictionClient(address) as client:
        top = client.top_k(client.score_image(b"x"), 2)
    assert top == [("dog", pytest.approx(0.7)), ("cat", pytest.approx(0.2))]


def test_retries_unavailable_with_back_off_but_never_invalid_argument(fake: Any) -> None:
    address, predict, _ = fake
    predict.fail_with = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    with PredictionClient(address, retries=3, backoff=0.05) as client:
        client.score_image(b"x")
    assert len(predict.requests) == 3
    gaps = np.diff(predict.times)
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # doubling
    predict.requests.clear()
    predict.fail_with = [grpc.StatusCode.INVALID_ARGUMENT]
    with (
        PredictionClient(address, retries=3, backoff=0.01) as client,
        pytest.raises(ServiceError) as err,
    ):
        client.score_image(b"x")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(predict.requests) == 1
    predict.requests.clear()
    predict.fail_with = [grpc.StatusCode.UNAVAILABLE] * 5
    with PredictionClient(address, retries=2, backoff=0.01) as client, pytest.raises(ServiceError):
        client.score_image(b"x")
    assert len(predict.requests) == 3


def test_resource_exhausted_from_its_own_limits_is_not_retried(fake: Any) -> None:
    """A server's RESOURCE_EXHAUSTED (overloaded) is retried; the client's own metadata or
    message-size limit refusing an answer is permanent, and is not."""
    address, predict, _ = fake
    predict.fail_with = [grpc.StatusCode.RESOURCE_EXHAUSTED]
    with PredictionClient(address, retries=3, backoff=0.01) as client:
        client.score_image(b"x")
    assert len(predict.requests) == 2
    predict.requests.clear()
    predict.fail_with = [grpc.StatusCode.NOT_FOUND] * 4
    predict.fail_details = "model " + "m" * 20_000 + " is not loaded"  # over 16 KiB of metadata
    with (
        PredictionClient(address, retries=3, backoff=0.01) as client,
        pytest.raises(ServiceError) as err,
    ):
        client.score_image(b"x")
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "metadata" in err.value.details
    assert len(predict.requests) == 1
    predict.requests.clear()
    predict.fail_with = []
    predict.reply_bytes = 4096
    with (
        PredictionClient(address, retries=3, backoff=0.01, max_message_bytes=2048) as client,
        pytest.raises(ServiceError) as err,
    ):
        client.score_image(b"x")
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(predict.requests) == 1


def test_timeout_is_honoured(fake: Any) -> None:
    address, predict, _ = fake
    predict.delay = 30.0  # an OK reply comes only after 30 s: before it, the deadline must fire
    with (
        PredictionClient(address, timeout=0.2, retries=0) as client,
        pytest.raises(ServiceError) as err,
    ):
        client.score_image(b"x")
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_v2_protocol_sends_raw_bytes(fake: Any) -> None:
    address, _, v2 = fake
    with PredictionClient(address, protocol="v2", model_name="m") as client:
        scores = client.score_images([b"a", b"bc"])
    assert scores.shape == (2, 3)
    (request,) = v2.requests
    assert request.model_name == "m" and request.inputs[0].datatype == "BYTES"


def test_score_numpy_and_file(fake: Any, tmp_path: Path) -> None:
    address, predict, _ = fake
    image = tmp_path / "a.jpg"
    image.write_bytes(b"filebytes")
    with PredictionClient(address, output_name="probs") as client:
        assert client.score_file(image).shape == (3,)
        assert client.score_numpy(np.zeros((1, 4), np.float32)).shape == (3,)
    assert predict.requests[0].output_filter == ["probs"]


def test_cli_prints_label_confidence_lines(
    fake: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, _, _ = fake
    image = tmp_path / "cat.jpg"
    image.write_bytes(b"img")
    assert client_main(["score", str(image), "--address", address, "--top", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "dog confidence: 0.7000",
        "cat confidence: 0.2000",
    ]
    assert client_main(["score", str(tmp_path / "missing.jpg"), "--address", address]) == 1


def test_client_imports_neither_tensorflow_nor_pynq_nor_the_server() -> None:
    code = (
        "import sys, fpga_serve_client, fpga_serve_client.cli; "
        "bad = [m for m in ('tensorflow', 'pynq', 'fpga_serve', 'keras') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_concurrent_use_of_one_client(fake: Any) -> None:
    """Eight threads share one client: each gets its own reply (scores scaled by its image's
    size), and any exception in a thread fails the test (``result()`` raises it here)."""
    address, predict, _ = fake
    predict.scale_by_size = True
    predict.delay = 0.05  # the calls overlap in the server
    sizes = range(1, 9)
    with PredictionClient(address) as client, futures.ThreadPoolExecutor(8) as pool:
        calls = {n: pool.submit(client.score_image, b"x" * n) for n in sizes}
        for n, call in calls.items():
            np.testing.assert_array_equal(call.result(timeout=60), SCORES[0] * n)
    assert sorted(len(r.inputs["images"].string_val[0]) for r in predict.requests) == list(sizes)
