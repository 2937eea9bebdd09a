"""Helpers for the hostile-input, fault and lifecycle tests: small test models, the memory of a
server process, hand-made wire requests."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import predict_pb2, tf_tensor_pb2
from PIL import Image


def memory_bound(message_bytes: int, request_bytes: int, fields: int, pixels: int) -> int:
    """README, Limits: the most a request may grow the server's memory, 4 x max_message_bytes +
    2 x max_request_bytes + 64 B x max_request_fields + 16 B x max_image_pixels (+ the model's
    own work on the batch, ~nothing for the test models)."""
    return 4 * message_bytes + 2 * request_bytes + 64 * fields + 16 * pixels


def build_strings_model_def(name: str = "strings") -> Any:
    """BYTES [-1] -> INT32 [-1]: the length of every string, so a test sees what arrived."""
    import tensorflow as tf
    from fpga_serve.pipeline import ModelDefinition, TensorflowStage

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
    def lengths(s: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"n": tf.strings.length(s)}

    model_def = ModelDefinition(name=name)
    model_def.pipeline.append(TensorflowStage(lengths))
    return model_def


def build_widths_model_def(name: str = "widths", scale: float = 1.0) -> Any:
    """FP32 [-1, -1] -> FP32 [-1, 1]: each row's sum times ``scale`` (variable-width rows)."""
    import tensorflow as tf
    from fpga_serve.pipeline import ModelDefinition, TensorflowStage

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
    def row_sums(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.reduce_sum(x, axis=1, keepdims=True) * scale}

    model_def = ModelDefinition(name=name)
    model_def.pipeline.append(TensorflowStage(row_sums))
    return model_def


def save(model_def: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    model_def.save(path)
    return path


# Memory of a process ------------------------------------------------------------------------


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss(pid: int) -> int:
    return _status(pid, "VmRSS")


def reset_peak(pid: int) -> int:
    """Reset the process's peak resident size (VmHWM) to its current size; return that."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")
    return _status(pid, "VmHWM")


def peak(pid: int) -> int:
    """The peak resident size since the last ``reset_peak``."""
    return _status(pid, "VmHWM")


def children(pid: int) -> list[int]:
    """Direct child processes (the twin's worker of a server)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(t) for t in text]
    return found


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


# Wire requests ------------------------------------------------------------------------------


def tensor_proto(dtype: int, shape: list[int], **values: Any) -> tf_tensor_pb2.TensorProto:
    proto = tf_tensor_pb2.TensorProto(dtype=dtype)  # type: ignore[arg-type]
    for d in shape:
        proto.tensor_shape.dim.add(size=d)
    for field, items in values.items():
        if field == "tensor_content":
            proto.tensor_content = items
        else:
            getattr(proto, field).extend(items)
    return proto


def predict(name: str, inputs: dict[str, tf_tensor_pb2.TensorProto]) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    if name:
        request.model_spec.name = name
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    return request


def infer(
    name: str, tensors: list[tuple[str, str, list[int]]], raw: list[bytes] | None = None
) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=name)
    for input_name, datatype, shape in tensors:
        request.inputs.add(name=input_name, datatype=datatype, shape=shape)
    for item in raw or []:
        request.raw_input_contents.append(item)
    return request


def code_of(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """(status code name, details) of one call; ("OK", "") when it succeeds."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


# Corrupt archives ---------------------------------------------------------------------------


def _central_entry(data: bytes, member: str) -> int:
    """Offset of ``member``'s central directory record."""
    name = member.encode()
    at = data.find(b"PK\x01\x02")
    while at != -1:
        length = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + length] == name:
            return at
        at = data.find(b"PK\x01\x02", at + 4)
    raise KeyError(member)


def corrupt_zip(source: Path, dest: Path, member: str, how: str) -> Path:
    """A copy of ``source`` with one member damaged: ``deflate`` (its compressed data's first
    byte set to 0x07, a reserved block type), ``crc`` (its recorded CRC-32 changed) or
    ``truncated`` (its compressed size halved: the deflate stream ends early)."""
    import zipfile

    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as zf:
        info = zf.getinfo(member)
    local = info.header_offset
    start = (
        local
        + 30
        + int.from_bytes(data[local + 26 : local + 28], "little")
        + int.from_bytes(data[local + 28 : local + 30], "little")
    )
    central = _central_entry(bytes(data), member)
    if how == "deflate":
        data[start] = 0x07
    elif how == "crc":
        bad = ((info.CRC ^ 0x5A5A5A5A) & 0xFFFFFFFF).to_bytes(4, "little")
        data[local + 14 : local + 18] = bad
        data[central + 16 : central + 20] = bad
    elif how == "truncated":
        short = (info.compress_size // 2).to_bytes(4, "little")
        data[local + 18 : local + 22] = short
        data[central + 20 : central + 24] = short
    else:
        raise ValueError(how)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(data))
    return dest


def largest_member(zip_path: Path) -> str:
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        return max(zf.infolist(), key=lambda i: i.compress_size).filename


def build_fpga_model_def(name: str = "conv") -> Any:
    """FP32 [-1, 8, 8, 1] -> a small CNN's features on the FPGA overlay (the twin here); random
    weights, calibrated on random images (what the arithmetic is does not matter to the tests
    that use it, only that the device runs it)."""
    import keras
    import numpy as np
    from fpga_serve.compiler import CompileOptions, compile_model
    from fpga_serve.pipeline import FpgaStage, ModelDefinition

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    model = keras.Model(inp, x)
    calibration = np.random.default_rng(2).random((32, 8, 8, 1)).astype(np.float32)
    compiled = compile_model(model, calibration, CompileOptions(output_layer="features"))
    model_def = ModelDefinition(name=name)
    model_def.pipeline.append(FpgaStage(compiled))
    return model_def


def twin_worker_pid(server_pid: int) -> int:
    """The server's twin worker process (started by multiprocessing's spawn)."""
    for pid in children(server_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            return pid
    raise LookupError(f"server {server_pid} has no twin worker")


def build_hold_model_def(name: str = "hold") -> Any:
    """FP32 [-1, 1] -> FP32 [-1, 1], y = 2x, after busy-waiting x[0, 0] seconds in the graph
    (a batch that runs as long as the test needs, on one core)."""
    import tensorflow as tf
    from fpga_serve.pipeline import ModelDefinition, TensorflowStage

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def hold(x: tf.Tensor) -> dict[str, tf.Tensor]:
        end = tf.timestamp() + tf.cast(x[0, 0], tf.float64)
        spun = tf.while_loop(lambda i: tf.timestamp() < end, lambda i: i + 1, [tf.constant(0)])
        return {"y": x * 2.0 + tf.cast(spun[0] * 0, tf.float32)}

    model_def = ModelDefinition(name=name)
    model_def.pipeline.append(TensorflowStage(hold))
    return model_def


HOLD_INLINE_MAX_US = 0
"""The hold model's run time is the request's to choose: the event loop, having timed a short
one, would run a long one itself (the ``inline_max_us`` setting's caveat), where these tests
need it on an RPC thread. Their servers never run a model on the loop."""


def hold_request(seconds: float, model: str = "hold") -> Any:
    return predict(model, {"x": tensor_proto(1, [1, 1], float_val=[seconds])})  # 1: DT_FLOAT


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR is rewritten to claim another size (CRC fixed up)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    start = 8 + 8  # signature, then IHDR length + type
    data[start : start + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : start + 13]))
    data[start + 13 : start + 17] = struct.pack(">I", crc)
    return bytes(data)


def rewrite_archive(
    src: Path, dst: Path, edit: Callable[[dict[str, bytes]], None], fix_hashes: bool = False
) -> Path:
    """Copy an archive with members edited (and, optionally, the manifest's hashes redone)."""
    with zipfile.ZipFile(src) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    edit(members)
    if fix_hashes:
        manifest = json.loads(members["service_def.json"])
        for name in manifest["files"]:
            if name in members:
                manifest["files"][name] = {
                    "sha256": hashlib.sha256(members[name]).hexdigest(),
                    "size": len(members[name]),
                }
        members["service_def.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


def tamper_member(members: dict[str, bytes]) -> None:
    name = next(n for n in members if n.endswith("model.keras"))
    members[name] = members[name][:-1] + bytes([members[name][-1] ^ 1])


ARCHIVE_CASES: list[tuple[str, Callable[[dict[str, bytes]], None], bool, str]] = [
    ("tampered member", tamper_member, False, "model.keras' does not match its sha256"),
    ("missing member", lambda m: m.pop("labels.txt"), False, "'labels.txt' is listed"),
    (
        "extra member",
        lambda m: m.update({"stages/0/extra.bin": b"x"}),
        False,
        "'stages/0/extra.bin' is not listed",
    ),
    (
        "escaping path",
        lambda m: m.update({"../evil.py": b"x"}),
        False,
        "'../evil.py' has an unsafe",
    ),
    ("absolute path", lambda m: m.update({"/etc/evil": b"x"}), False, "'/etc/evil' has an unsafe"),
    ("bad json", lambda m: m.update({"service_def.json": b"{nope"}), False, "not valid JSON"),
    (
        "future version",
        lambda m: m.update(
            {
                "service_def.json": m["service_def.json"].replace(
                    b'"format_version": 1', b'"format_version": 99'
                )
            }
        ),
        False,
        "format_version 99",
    ),
    (
        "missing field",
        lambda m: m.update(
            {"service_def.json": m["service_def.json"].replace(b'"created_by"', b'"made_by"')}
        ),
        False,
        "missing 'created_by'",
    ),
    ("no manifest", lambda m: m.pop("service_def.json"), False, "missing service_def.json"),
]
