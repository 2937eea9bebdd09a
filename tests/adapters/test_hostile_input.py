"""Hostile requests against a server in its own process (issue 10, findings 1, 3 and 8): every
limit is checked from the request's header before anything proportional to the declared shape
is allocated, the fill rule keeps strings exact, huge shapes are INVALID_ARGUMENT, and error
messages stay small enough for a client's default metadata limit."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import build_tiny_model_def
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc, prediction_service_pb2_grpc
from fpga_serve_client.protos import tf_tensor_pb2 as tf
from hostile import (
    build_strings_model_def,
    build_widths_model_def,
    code_of,
    infer,
    peak,
    predict,
    reset_peak,
    save,
    tensor_proto,
)
from PIL import Image
from serving import RunningServer, run_server

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("hostile")
    zips = [
        save(build_tiny_model_def("tiny"), root / "tiny.zip"),
        save(build_strings_model_def(), root / "strings.zip"),
        save(build_widths_model_def(), root / "widths.zip"),
    ]
    with run_server(zips) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:  # gRPC's default limits, as apps have
        grpc.channel_ready_future(ch).result(timeout=30)
        yield ch


def small_jpeg(size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, format="JPEG"
    )
    return buf.getvalue()


def _warm(channel: grpc.Channel, jpg: bytes) -> None:
    """Valid requests to every model first, so that their first-run allocations are not
    counted as the hostile requests' memory."""
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(3):
        tfs.Predict(predict("tiny", {"images": tensor_proto(tf.DT_STRING, [2], string_val=[jpg])}))
        tfs.Predict(predict("strings", {"s": tensor_proto(tf.DT_STRING, [3], string_val=[b"a"])}))
        x = tensor_proto(tf.DT_FLOAT, [4, 5], float_val=[1.0])
        tfs.Predict(predict("widths", {"x": x}))


# Each case: (id, protocol, request builder, expected code, a word the message must contain)
def _hostile_cases(jpg: bytes) -> list[tuple[str, str, Any, str, str]]:
    big_string = b"\xff\xd8\xff" + b"j" * 3500
    return [
        # 1: the fill rule applied before the limits (26 bytes asking for 1 GiB of references)
        (
            "26-byte DT_STRING [2^27]",
            "tfs",
            predict("strings", {"s": tensor_proto(tf.DT_STRING, [1 << 27], string_val=[b"x"])}),
            "INVALID_ARGUMENT",
            "max_batch_size",
        ),
        (
            "60-byte DT_DOUBLE [2^27] to a BYTES input",
            "tfs",
            predict("tiny", {"images": tensor_proto(tf.DT_DOUBLE, [1 << 27], double_val=[1.5])}),
            "INVALID_ARGUMENT",
            "dtype",
        ),
        (
            "one 3.5 KB string filling [4096, 16]",
            "tfs",
            predict(
                "tiny",
                {"images": tensor_proto(tf.DT_STRING, [4096, 16], string_val=[big_string])},
            ),
            "INVALID_ARGUMENT",
            "shape",
        ),
        (
            "one 3.5 KB string filling [65536]",
            "tfs",
            predict("strings", {"s": tensor_proto(tf.DT_STRING, [65536], string_val=[big_string])}),
            "INVALID_ARGUMENT",
            "max_batch_size",
        ),
        (
            "one float filling [64, 2^20] (256 MiB)",
            "tfs",
            predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [64, 1 << 20], float_val=[1.0])}),
            "INVALID_ARGUMENT",
            "max_request_elements",
        ),
        (
            "one 3 MiB string filling [64] (192 MiB)",
            "tfs",
            predict(
                "strings", {"s": tensor_proto(tf.DT_STRING, [64], string_val=[b"s" * (3 << 20)])}
            ),
            "INVALID_ARGUMENT",
            "max_request_bytes",
        ),
        (
            "one float filling [8, 2^40]",
            "tfs",
            predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [8, 1 << 40], float_val=[1.0])}),
            "INVALID_ARGUMENT",
            "max_request_elements",
        ),
        # 3: a zero beside a huge dimension
        (
            "v2 FP32 [0, 2^62]",
            "v2",
            infer("widths", [("x", "FP32", [0, 1 << 62])], [b""]),
            "INVALID_ARGUMENT",
            "x",
        ),
        (
            "v2 BYTES [0, 2^62] to a rank-1 input",
            "v2",
            infer("tiny", [("images", "BYTES", [0, 1 << 62])], [b""]),
            "INVALID_ARGUMENT",
            "images",
        ),
        (
            "v2 BYTES [0, 2^40, 2^40]",
            "v2",
            infer("strings", [("s", "BYTES", [0, 1 << 40, 1 << 40])], [b""]),
            "INVALID_ARGUMENT",
            "s",
        ),
        (
            "v2 FP32 [2, 0] beside [2^62]: every dimension is bounded",
            "v2",
            infer("widths", [("x", "FP32", [1 << 62, 0])], [b""]),
            "INVALID_ARGUMENT",
            "x",
        ),
        (
            "TF DT_FLOAT [0, 2^62]",
            "tfs",
            predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [0, 1 << 62])}),
            "INVALID_ARGUMENT",
            "x",
        ),
        (
            "v2 typed FP32 [2^30, 4] with one value (v2 has no fill rule)",
            "v2",
            _typed_v2(),
            "INVALID_ARGUMENT",
            "x",
        ),
    ]


def _image_cases() -> list[tuple[str, str, Any, str, str]]:
    from hostile import png_claiming

    def images(*data: bytes) -> Any:
        return predict("tiny", {"images": tensor_proto(tf.DT_STRING, [len(data)], string_val=data)})

    frames = [Image.new("L", (500, 500), (i * 37) % 256).convert("P") for i in range(200)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    return [
        # 2: a 65 kpx image whose whole-image resize was 16.6M x 256 pixels (+1.15 GiB)
        ("a 65000x1 JPEG", "tfs", images(small_jpeg((65000, 1))), "OK", ""),
        ("a 1x65000 JPEG", "tfs", images(small_jpeg((1, 65000))), "OK", ""),
        (
            "a PNG claiming 1x64M",
            "tfs",
            images(png_claiming(1, 64_000_000)),
            "INVALID_ARGUMENT",
            "max_image_pixels",
        ),
        (
            "a GIF of 200 500x500 frames",
            "tfs",
            images(gif.getvalue()),
            "INVALID_ARGUMENT",
            "frames",
        ),
    ]


def _typed_v2() -> Any:
    request = infer("widths", [("x", "FP32", [1 << 30, 4])])
    request.inputs[0].contents.fp32_contents.append(1.0)
    return request


def test_hostile_shapes_are_refused_from_the_header_without_allocating(
    server: RunningServer, channel: grpc.Channel
) -> None:
    jpg = small_jpeg()
    _warm(channel, jpg)
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    pid = server.process.pid
    wrong = []
    base = reset_peak(pid)
    for case, protocol, request, code, needle in _hostile_cases(jpg) + _image_cases():
        call = tfs.Predict if protocol == "tfs" else kserve.ModelInfer
        got, details = code_of(call, request, timeout=20)
        if got != code or needle not in details:
            wrong.append(f"{case}: {got} {details[:300]!r}")
    grown = peak(pid) - base
    assert not wrong, "\n".join([*wrong, f"peak RSS grew {grown / MiB:.0f} MiB"])
    # Refused from the header: the server's peak memory hardly moved (each case alone, before
    # the fix, allocated 128 MiB to 1 GiB).
    assert grown < 48 * MiB, f"peak RSS grew {grown / MiB:.0f} MiB"
    # And it keeps serving.
    ok = tfs.Predict(predict("tiny", {"images": tensor_proto(tf.DT_STRING, [1], string_val=[jpg])}))
    assert "output_alias" in ok.outputs


def test_the_fill_rule_keeps_strings_exact(channel: grpc.Channel) -> None:
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for value in (b"ab\0\0", b"\0", "é".encode(), b"\0ab\0"):
        request = predict("strings", {"s": tensor_proto(tf.DT_STRING, [2], string_val=[value])})
        reply = tfs.Predict(request, timeout=20)
        assert list(reply.outputs["n"].int_val or _ints(reply.outputs["n"])) == [len(value)] * 2
    # Without the fill: each value as given.
    request = predict(
        "strings", {"s": tensor_proto(tf.DT_STRING, [3], string_val=[b"a\0", b"b", b"\0\0\0"])}
    )
    reply = tfs.Predict(request, timeout=20)
    assert _ints(reply.outputs["n"]) == [2, 1, 3]


def _ints(proto: Any) -> list[int]:
    return np.frombuffer(proto.tensor_content, "<i4").tolist() or list(proto.int_val)


LONG = "m" * 20_000


def _long_name_cases() -> list[tuple[str, str, Any, str]]:
    version_label = predict("tiny", {"images": tensor_proto(tf.DT_STRING, [1], string_val=[b"x"])})
    version_label.model_spec.version_label = LONG
    long_output = predict("tiny", {"images": tensor_proto(tf.DT_STRING, [1], string_val=[b"x"])})
    long_output.output_filter.append(LONG)
    v2_output = infer("tiny", [("images", "BYTES", [1])], [b"\x01\x00\x00\x00x"])
    v2_output.outputs.add(name=LONG)
    return [
        (
            "model name",
            "tfs",
            predict(LONG, {"images": tensor_proto(tf.DT_STRING, [1])}),
            "NOT_FOUND",
        ),
        (
            "input name",
            "tfs",
            predict("tiny", {LONG: tensor_proto(tf.DT_STRING, [1], string_val=[b"x"])}),
            "INVALID_ARGUMENT",
        ),
        ("version label", "tfs", version_label, "NOT_FOUND"),
        ("output filter", "tfs", long_output, "INVALID_ARGUMENT"),
        ("v2 model name", "v2", infer(LONG, [("images", "BYTES", [1])], [b""]), "NOT_FOUND"),
        ("v2 version", "v2", _v2_version(), "NOT_FOUND"),
        ("v2 input name", "v2", infer("tiny", [(LONG, "BYTES", [1])], [b""]), "INVALID_ARGUMENT"),
        ("v2 output name", "v2", v2_output, "INVALID_ARGUMENT"),
        ("v2 datatype", "v2", infer("tiny", [("images", LONG, [1])], [b""]), "INVALID_ARGUMENT"),
    ]


def _v2_version() -> Any:
    request = infer("tiny", [("images", "BYTES", [1])], [b""])
    request.model_version = LONG
    return request


def test_errors_echo_bounded_names_and_fit_default_metadata_limits(channel: grpc.Channel) -> None:
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    wrong = []
    for case, protocol, request, code in _long_name_cases():
        call = tfs.Predict if protocol == "tfs" else kserve.ModelInfer
        got, details = code_of(call, request, timeout=20)
        if got != code or len(details) > 1024 or "mmmm" not in details:
            wrong.append(f"{case}: {got} ({len(details)} chars) {details[:200]!r}")
    assert not wrong, "\n".join(wrong)


def test_a_non_image_says_what_tensorflow_found_wrong(channel: grpc.Channel) -> None:
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict(
        "tiny", {"images": tensor_proto(tf.DT_STRING, [1], string_val=[b"this is not an image"])}
    )
    code, details = code_of(tfs.Predict, request, timeout=20)
    assert code == "INVALID_ARGUMENT"
    assert "item 0" in details and "image file format" in details.lower(), details
    assert "Graph execution error" not in details and len(details) < 1024, details


def test_sizes_within_the_limits_still_work(channel: grpc.Channel, tmp_path: Path) -> None:
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    # The fill rule itself stays where TensorFlow Serving has it.
    request = predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [3, 1000], float_val=[0.5])})
    reply = tfs.Predict(request, timeout=20)
    y = np.frombuffer(reply.outputs["y"].tensor_content, "<f4")
    np.testing.assert_allclose(y, [500.0] * 3)


def test_variable_width_requests_are_batched_by_width(channel: grpc.Channel) -> None:
    """Finding 4: 80 concurrent valid requests of widths 3-6 on a [-1, -1] model; before the
    fix the batcher concatenated mixed widths and failed whole batches with INTERNAL."""
    from concurrent.futures import ThreadPoolExecutor

    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def one(i: int) -> tuple[str, float]:
        width = 3 + i % 4
        row = [float(i)] * width
        request = predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [1, width], float_val=row)})
        try:
            reply = tfs.Predict(request, timeout=30)
        except grpc.RpcError as exc:
            return exc.code().name, 0.0
        return "OK", float(np.frombuffer(reply.outputs["y"].tensor_content, "<f4")[0])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(80)))
    assert [code for code, _ in results] == ["OK"] * 80, results
    assert [value for _, value in results] == [float(i * (3 + i % 4)) for i in range(80)]


def _raw_call(channel: grpc.Channel, method: str, data: bytes) -> tuple[str, str]:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return code_of(call, data, timeout=30)


PREDICT = "/tensorflow.serving.PredictionService/Predict"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def _many_fields(count: int) -> bytes:
    """A PredictRequest whose input has ``count`` empty dimensions: 2 bytes each on the wire,
    ~48 in a parsed message."""
    request = predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [])})
    dims = request.inputs["x"].tensor_shape.dim
    for _ in range(count):
        dims.add()
    return request.SerializeToString()


def _many_inputs(count: int) -> bytes:
    """A ModelInferRequest of ``count`` empty inputs (2 bytes each on the wire, ~64 parsed)."""
    request = infer("widths", [])
    for _ in range(count):
        request.inputs.add()
    return request.SerializeToString()


def test_malformed_and_field_bomb_messages_are_refused_before_parsing(
    server: RunningServer, channel: grpc.Channel
) -> None:
    """A message that is not protobuf is INVALID_ARGUMENT (gRPC said INTERNAL 'Exception
    deserializing request'); one of millions of tiny fields is refused before protobuf builds
    ~24-33x its size in objects (a 4 MiB message of empty dims cost ~95 MiB)."""
    for method in (PREDICT, MODEL_INFER):
        code, details = _raw_call(channel, method, b"\xff\xff\xff\xff garbage")
        assert code == "INVALID_ARGUMENT", (method, code, details)
    pid = server.process.pid
    bombs = [(PREDICT, _many_fields(2 << 20)), (MODEL_INFER, _many_inputs(2 << 20))]  # 4 MiB each
    base = reset_peak(pid)
    for method, data in bombs:
        code, details = _raw_call(channel, method, data)
        assert code == "INVALID_ARGUMENT" and "max_request_fields" in details, (code, details)
    grown = peak(pid) - base
    assert grown < 24 * MiB, f"peak RSS grew {grown / MiB:.0f} MiB"


def test_every_dimension_is_bounded_not_only_the_product() -> None:
    """In process: a zero anywhere makes the product 0; each dimension is still checked."""
    from fpga_serve.core.errors import InvalidInput
    from fpga_serve.core.types import DType, RequestLimits, TensorHeader, TensorSpec

    spec = TensorSpec("x", DType.FP32, (-1, -1, -1))
    limits = RequestLimits(max_elements=1 << 20)
    for shape in ((1, 0, 1 << 62), (2, 1 << 21, 0)):
        with pytest.raises(InvalidInput, match=r"dimension \d is [\d,]+, over the limit"):
            spec.check_header(TensorHeader("FP32", shape, 0), limits)
    spec.check_header(TensorHeader("FP32", (2, 0, 1 << 20), 0), limits)  # at the limit: fine
