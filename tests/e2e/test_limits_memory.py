"""What one request may cost the server in memory is a documented multiple of its limits
(README, "Limits"), measured on a server process (its peak resident size, VmHWM) around
requests at the limits and over them, with small limits so the bound is tight."""

from __future__ import annotations

import io
from collections.abc import Iterator
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
    memory_bound,
    peak,
    predict,
    reset_peak,
    save,
    tensor_proto,
)
from PIL import Image
from serving import RunningServer, run_server

MiB = 1 << 20
MESSAGE = 8 * MiB
REQUEST_BYTES = 8 * MiB
ELEMENTS = 1 << 21
FIELDS = 1 << 16
PIXELS = 1 << 22  # 4 Mpx

BOUND = memory_bound(MESSAGE, REQUEST_BYTES, FIELDS, PIXELS)
"""Here 32 + 16 + 4 + 64 = 116 MiB."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("limits")
    zips = [
        save(build_tiny_model_def("tiny"), root / "tiny.zip"),
        save(build_strings_model_def(), root / "strings.zip"),
        save(build_widths_model_def(), root / "widths.zip"),
    ]
    limits = {
        "--max-message-bytes": MESSAGE,
        "--max-request-bytes": REQUEST_BYTES,
        "--max-request-elements": ELEMENTS,
        "--max-request-fields": FIELDS,
        "--max-image-pixels": PIXELS,
    }
    args = [str(v) for pair in limits.items() for v in pair]
    with run_server(zips, *args) as running:
        yield running


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _cases() -> list[tuple[str, str, Any]]:
    width = (MESSAGE - 4096) // 4 // 64
    floats = np.ones((64, width), "<f4")
    typed = 64 * ((MESSAGE - 4096) // 5 // 64)  # float_val: ~5 bytes per value on the wire
    big_png = png(2048, 2047)  # just under 4 Mpx
    strings = [b"s" * (MESSAGE // 64 - 256)] * 64
    dims = predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [])})
    for _ in range((MESSAGE - 1024) // 2):
        dims.inputs["x"].tensor_shape.dim.add()
    v2_bytes = infer("strings", [("s", "BYTES", [64])])
    v2_bytes.inputs[0].contents.bytes_contents.extend(strings)
    return [
        (
            "8 MiB tensor_content",
            "tfs",
            predict(
                "widths",
                {"x": tensor_proto(tf.DT_FLOAT, [64, width], tensor_content=floats.tobytes())},
            ),
        ),
        (
            "8 MiB of float_val",
            "tfs",
            predict(
                "widths",
                {
                    "x": tensor_proto(
                        tf.DT_FLOAT,
                        [64, typed // 64],
                        float_val=np.ones(typed, np.float32).tolist(),
                    )
                },
            ),
        ),
        (
            "one string filling 8 MiB",
            "tfs",
            predict(
                "strings",
                {
                    "s": tensor_proto(
                        tf.DT_STRING, [64], string_val=[b"s" * (REQUEST_BYTES // 64 - 64)]
                    )
                },
            ),
        ),
        (
            "64 strings, 8 MiB",
            "tfs",
            predict("strings", {"s": tensor_proto(tf.DT_STRING, [64], string_val=strings)}),
        ),
        ("v2 64 strings, 8 MiB", "v2", v2_bytes),
        (
            "8 PNGs of 4 Mpx",
            "tfs",
            predict("tiny", {"images": tensor_proto(tf.DT_STRING, [8], string_val=[big_png] * 8)}),
        ),
        ("8 MiB of empty dims (refused)", "tfs", dims),
        (
            "a PNG of 5 Mpx (refused)",
            "tfs",
            predict(
                "tiny", {"images": tensor_proto(tf.DT_STRING, [1], string_val=[png(2500, 2000)])}
            ),
        ),
        (
            "a float filling 2^21 x 64 (refused)",
            "tfs",
            predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [64, 1 << 21], float_val=[1.0])}),
        ),
    ]


def test_one_request_costs_at_most_the_documented_multiple_of_its_limits(
    server: RunningServer,
) -> None:
    options = [("grpc.max_send_message_length", 2 * MESSAGE)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        small = png(64, 48)
        for _ in range(2):  # first-run allocations of every model are not the requests' cost
            tfs.Predict(
                predict("tiny", {"images": tensor_proto(tf.DT_STRING, [2], string_val=[small])})
            )
            tfs.Predict(
                predict("strings", {"s": tensor_proto(tf.DT_STRING, [3], string_val=[b"a"])})
            )
            tfs.Predict(
                predict("widths", {"x": tensor_proto(tf.DT_FLOAT, [4, 5], float_val=[1.0])})
            )
        pid = server.process.pid
        measured = []
        for case, protocol, request in _cases():
            base = reset_peak(pid)
            call = tfs.Predict if protocol == "tfs" else kserve.ModelInfer
            code, details = code_of(call, request, timeout=120)
            grown = peak(pid) - base
            measured.append((case, code, grown, details[:100]))
    table = "\n".join(f"{c:38s} {code:18s} +{g / MiB:6.1f} MiB {d}" for c, code, g, d in measured)
    for case, code, grown, _ in measured:
        expected = "INVALID_ARGUMENT" if "refused" in case else "OK"
        assert code == expected, table
        assert grown <= BOUND, f"{case}: +{grown / MiB:.1f} MiB over {BOUND / MiB:.0f} MiB\n{table}"
    print(table)
