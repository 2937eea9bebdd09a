"""A bounded property-based fuzz of both protocols and the repository API against a server in
its own process (issue 10): whatever a client sends, the answer is a status a client can act on
(never INTERNAL or UNKNOWN), messages stay bounded, the server does not crash, and its peak
memory stays within the documented per-request bound (README, Limits).

Hypothesis generates the requests from strategies shaped like the wire messages (names, dtypes,
shapes with zeros beside huge dimensions, fill-rule values, raw contents with right and wrong
length prefixes, images that are bombs or garbage, random bytes instead of a message); it is
derandomized (the same cases every run) and bounded (2 x 600 examples + 300 raw messages +
300 repository calls; ~30 s here)."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import build_tiny_model_def
from fpga_serve_client.protos import (
    get_model_metadata_pb2,
    grpc_predict_v2_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    triton_pb2,
)
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import tf_tensor_pb2 as tf
from hostile import (
    build_strings_model_def,
    build_widths_model_def,
    memory_bound,
    peak,
    png_claiming,
    reset_peak,
    save,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from serving import RunningServer, run_server

MiB = 1 << 20
MESSAGE = 4 * MiB
REQUEST_BYTES = 8 * MiB
FIELDS = 1 << 16
PIXELS = 1 << 22
BOUND = memory_bound(MESSAGE, REQUEST_BYTES, FIELDS, PIXELS)
ACCEPTABLE = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "FAILED_PRECONDITION",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "UNIMPLEMENTED",
}
FUZZ = settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("fuzz")
    zips = [
        save(build_tiny_model_def("tiny"), root / "tiny.zip"),
        save(build_strings_model_def(), root / "strings.zip"),
    ]
    repo = root / "repo"
    save(build_widths_model_def(), repo / "widths" / "1" / "model.zip")
    shutil.copytree(repo / "widths", repo / "spare")
    (repo / "junk").mkdir()
    limits = {
        "--max-message-bytes": MESSAGE,
        "--max-request-bytes": REQUEST_BYTES,
        "--max-request-fields": FIELDS,
        "--max-image-pixels": PIXELS,
        "--model-repository": repo,
    }
    args = [str(v) for pair in limits.items() for v in pair]
    with run_server(zips, *args) as running:
        yield running


@pytest.fixture(scope="module")
def stubs(server: RunningServer) -> Iterator[tuple[Any, Any, grpc.Channel]]:
    with grpc.insecure_channel(server.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield (
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel),
            channel,
        )


@pytest.fixture(scope="module")
def memory(server: RunningServer, stubs: Any) -> dict[str, int]:
    """The server's resident size before the fuzz (peak reset), after a warm-up of every model."""
    tfs, _, _ = stubs
    for model, key, value in (("tiny", "images", _jpeg()), ("strings", "s", b"a")):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.inputs[key].dtype = tf.DT_STRING
        request.inputs[key].tensor_shape.dim.add(size=1)
        request.inputs[key].string_val.append(value)
        tfs.Predict(request, timeout=30)
    return {"base": reset_peak(server.process.pid)}


def _jpeg(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buf, format="JPEG")
    return buf.getvalue()


SEEN: Counter[str] = Counter()
"""Status codes answered over the module (the last test checks the fuzz reached the models)."""


def _check(server: RunningServer, call: Any, request: Any) -> None:
    try:
        call(request, timeout=30)
        code, details = "OK", ""
    except grpc.RpcError as exc:
        code, details = exc.code().name, exc.details() or ""
    SEEN[code] += 1
    assert server.process.poll() is None, "the server died:\n" + "".join(server.log[-50:])
    assert code in ACCEPTABLE, f"{code}: {details}\n{str(request)[:2000]}"
    assert len(details) <= 1024, f"{len(details)} characters: {details[:300]}"


# Strategies --------------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["tiny", "strings", "widths", "spare", "", "images", "s", "x", "output_alias"]),
    st.text(max_size=40),
    st.text(min_size=200, max_size=3000).map(lambda t: t * 7),
)
DIMS = st.sampled_from([0, 1, 2, 3, 5, 64, 65, 4096, 1 << 31, 1 << 40, (1 << 62) - 1, -1, -7])
SHAPES = st.lists(DIMS, max_size=6)
IMAGES = st.sampled_from(
    [
        _jpeg(),
        _jpeg((650, 1)),
        _jpeg()[:100],
        png_claiming(50_000, 50_000),
        png_claiming(1, 64_000_000),
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"GIF89a" + b"\x01" * 30,
        b"not an image",
        b"",
        b"ab\x00\x00",
    ]
)
BLOBS = st.one_of(IMAGES, st.binary(max_size=300))
TF_DTYPES = st.one_of(st.sampled_from(list(tf.DataType.values())), st.integers(-5, 400))


@st.composite
def tensor_protos(draw: Any) -> tf.TensorProto:
    proto = tf.TensorProto()
    proto.dtype = draw(TF_DTYPES)
    for size in draw(SHAPES):
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    kind = draw(st.sampled_from(["string", "float", "int", "int64", "content", "none", "double"]))
    if kind == "string":
        proto.string_val.extend(draw(st.lists(BLOBS, max_size=5)))
    elif kind == "float":
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    elif kind == "double":
        proto.double_val.extend(draw(st.lists(st.floats(), max_size=8)))
    elif kind == "int":
        proto.int_val.extend(draw(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=8)))
    elif kind == "int64":
        proto.int64_val.extend(draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=8)))
    elif kind == "content":
        proto.tensor_content = draw(st.binary(max_size=400))
    return proto


@st.composite
def plausible_predicts(draw: Any) -> predict_pb2.PredictRequest:
    """Near-valid requests (a model's own input name and dtype), so that the fuzz reaches the
    models: images, strings (fill rule included), widths of any shape."""
    request = predict_pb2.PredictRequest()
    model = draw(st.sampled_from(["tiny", "strings", "widths", ""]))
    request.model_spec.name = model
    key = {"tiny": "images", "": "images", "strings": "s", "widths": "x"}[model]
    tensor = request.inputs[key]
    if model == "widths":
        tensor.dtype = tf.DT_FLOAT
        for size in draw(
            st.lists(st.sampled_from([0, 1, 2, 3, 7, 64, 65, 1 << 40]), min_size=1, max_size=3)
        ):
            tensor.tensor_shape.dim.add(size=size)
        tensor.float_val.extend(draw(st.lists(st.floats(width=32), max_size=12)))
    else:
        tensor.dtype = tf.DT_STRING
        items = draw(st.lists(BLOBS, min_size=1, max_size=4))
        tensor.tensor_shape.dim.add(size=draw(st.sampled_from([len(items), 1, 64, 65, 1 << 27])))
        tensor.string_val.extend(items)
    request.output_filter.extend(
        draw(st.lists(st.sampled_from(["output_alias", "n", "y", "x"]), max_size=1))
    )
    return request


@st.composite
def predict_requests(draw: Any) -> predict_pb2.PredictRequest:
    if draw(st.booleans()):
        return draw(plausible_predicts())
    request = predict_pb2.PredictRequest()
    request.model_spec.name = draw(NAMES)
    version = draw(st.sampled_from(["none", "number", "label"]))
    if version == "number":
        request.model_spec.version.value = draw(st.integers(-(1 << 63), (1 << 63) - 1))
    elif version == "label":
        request.model_spec.version_label = draw(NAMES)
    if draw(st.booleans()):
        request.model_spec.signature_name = draw(NAMES)
    for key in draw(st.lists(NAMES, max_size=3)):
        request.inputs[key].CopyFrom(draw(tensor_protos()))
    request.output_filter.extend(draw(st.lists(NAMES, max_size=2)))
    return request


V2_TYPES = st.one_of(
    st.sampled_from(
        [
            "BOOL",
            "UINT8",
            "UINT16",
            "UINT32",
            "UINT64",
            "INT8",
            "INT16",
            "INT32",
            "INT64",
            "FP16",
            "FP32",
            "FP64",
            "BYTES",
            "BF16",
        ]
    ),
    NAMES,
)


def _prefixed(items: list[bytes], lie: int) -> bytes:
    return b"".join((len(i) + lie).to_bytes(4, "little", signed=False) + i for i in items)


@st.composite
def plausible_infers(draw: Any) -> v2.ModelInferRequest:
    """Near-valid ModelInfer requests (each model's own input name and datatype)."""
    model = draw(st.sampled_from(["tiny", "strings", "widths"]))
    name, datatype = {
        "tiny": ("images", "BYTES"),
        "strings": ("s", "BYTES"),
        "widths": ("x", "FP32"),
    }[model]
    request = v2.ModelInferRequest(model_name=model)
    shape = draw(st.lists(DIMS.filter(lambda d: d >= 0), min_size=1, max_size=3))
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    if datatype == "BYTES":
        items = draw(st.lists(BLOBS, max_size=4))
        request.raw_input_contents.append(_prefixed(items, 0))
    else:
        request.raw_input_contents.append(draw(st.binary(max_size=64)))
    return request


@st.composite
def infer_requests(draw: Any) -> v2.ModelInferRequest:
    if draw(st.booleans()):
        return draw(plausible_infers())
    request = v2.ModelInferRequest(
        model_name=draw(NAMES), model_version=draw(NAMES), id=draw(NAMES)
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(NAMES), datatype=draw(V2_TYPES), shape=[max(d, 0) for d in draw(SHAPES)]
        )
        if raw:
            items = draw(st.lists(BLOBS, max_size=4))
            lie = draw(st.sampled_from([0, 0, 0, 1, -1, 1 << 20]))
            data = _prefixed(items, lie) if lie >= 0 or all(items) else _prefixed(items, 0)
            request.raw_input_contents.append(
                data if draw(st.booleans()) else draw(st.binary(max_size=64))
            )
        else:
            field = draw(st.sampled_from(["bytes", "fp32", "int", "int64", "bool", "none"]))
            contents = tensor.contents
            if field == "bytes":
                contents.bytes_contents.extend(draw(st.lists(BLOBS, max_size=4)))
            elif field == "fp32":
                contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
            elif field == "int":
                contents.int_contents.extend(
                    draw(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), max_size=8))
                )
            elif field == "int64":
                contents.int64_contents.extend(
                    draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=8))
                )
            elif field == "bool":
                contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=8)))
    if draw(st.booleans()) and request.raw_input_contents:
        request.raw_input_contents.append(b"extra")  # a count mismatch
    for name in draw(st.lists(NAMES, max_size=2)):
        request.outputs.add(name=name)
    return request


# Tests -------------------------------------------------------------------------------------


@FUZZ
@given(request=predict_requests())
def test_fuzz_tf_serving_predict(
    server: RunningServer, stubs: Any, memory: dict[str, int], request: predict_pb2.PredictRequest
) -> None:
    _check(server, stubs[0].Predict, request)


@FUZZ
@given(request=infer_requests())
def test_fuzz_kserve_v2_model_infer(
    server: RunningServer, stubs: Any, memory: dict[str, int], request: v2.ModelInferRequest
) -> None:
    _check(server, stubs[1].ModelInfer, request)


METHODS = [
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/ModelConfig",
]


@settings(FUZZ, max_examples=300)
@given(method=st.sampled_from(METHODS), data=st.binary(max_size=2000))
def test_fuzz_any_bytes_as_a_message(
    server: RunningServer, stubs: Any, memory: dict[str, int], method: str, data: bytes
) -> None:
    call = stubs[2].unary_unary(method, request_serializer=None, response_deserializer=None)
    _check(server, call, data)


@st.composite
def control_calls(draw: Any) -> tuple[str, Any]:
    name, version = draw(NAMES), draw(NAMES)
    kind = draw(
        st.sampled_from(
            ["index", "load", "unload", "ready", "metadata", "config", "statistics", "tf_meta"]
        )
    )
    if kind == "index":
        return "RepositoryIndex", v2.RepositoryIndexRequest(ready=draw(st.booleans()))
    if kind == "load":
        return "RepositoryModelLoad", v2.RepositoryModelLoadRequest(model_name=name)
    if kind == "unload":  # not the models the other tests fuzz (unloading them is allowed)
        target = name if name not in ("tiny", "strings", "widths") else "spare"
        return "RepositoryModelUnload", v2.RepositoryModelUnloadRequest(model_name=target)
    if kind == "ready":
        return "ModelReady", v2.ModelReadyRequest(name=name, version=version)
    if kind == "metadata":
        return "ModelMetadata", v2.ModelMetadataRequest(name=name, version=version)
    if kind == "config":
        return "ModelConfig", triton_pb2.ModelConfigRequest(name=name, version=version)
    if kind == "statistics":
        return "ModelStatistics", triton_pb2.ModelStatisticsRequest(name=name, version=version)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = name
    request.metadata_field.extend(draw(st.lists(NAMES, max_size=3)))
    return "GetModelMetadata", request


@settings(FUZZ, max_examples=300)
@given(call=control_calls())
def test_fuzz_repository_and_metadata_calls(
    server: RunningServer, stubs: Any, memory: dict[str, int], call: tuple[str, Any]
) -> None:
    method, request = call
    stub = stubs[0] if method == "GetModelMetadata" else stubs[1]
    _check(server, getattr(stub, method), request)


def test_after_the_fuzz_the_server_serves_and_its_memory_stayed_bounded(
    server: RunningServer, stubs: Any, memory: dict[str, int]
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["images"].dtype = tf.DT_STRING
    request.inputs["images"].tensor_shape.dim.add(size=1)
    request.inputs["images"].string_val.append(_jpeg())
    assert "output_alias" in stubs[0].Predict(request, timeout=30).outputs
    # The fuzz reached the models and their checks, not only the front door.
    assert SEEN["OK"] >= 100 and SEEN["INVALID_ARGUMENT"] >= 500 and SEEN["NOT_FOUND"] >= 100, SEEN
    grown = peak(server.process.pid) - memory["base"]
    # Requests came one at a time: the peak over all of them is one request's bound (plus the
    # metric series the fuzz created, a few MiB).
    assert grown <= BOUND + 16 * MiB, (
        f"peak RSS grew {grown / MiB:.0f} MiB, bound {BOUND / MiB:.0f}"
    )
