"""Soak, swap under load and drain: a server in its own process on loopback, as a stranger sees it.

    python bench/bench_soak.py [--seconds 60] [--clients 6] [--swaps 10] [--grace 3]

Phase 1, soak: --clients threads send for --seconds (at most --requests in all) a mix of valid
requests (JPEGs to an image pipeline over TF Serving Predict, floats to an FPGA featurizer on
the twin over KServe v2) and, one request in five, a hostile one from a fixed list (fill-rule
bombs, a zero beside 2^62, 20,000-character names, garbage bytes instead of a message, a
65000x1 JPEG, a PNG claiming 1x64M pixels, a GIF of 200 frames, variable widths). The server
runs with its default settings (limits included).

Phase 2, swaps: the same traffic continues while the image model moves --swaps times from
version k to k+1 in its repository folder (RepositoryModelLoad; the old folder removed, so the
version number changes every time); the valid requests name no version.

Phase 3, drain: traffic continues, a batch that runs 30 s is in flight on a third model, and
the server gets SIGTERM with --shutdown-grace-s --grace: how long it takes to exit, its exit
code, and how the requests in flight were answered.

Printed: per phase, valid requests answered and failed (by code), hostile requests by code
(INTERNAL or UNKNOWN would be a bug), p50/p99 of the valid requests, the server's RSS after
warm-up, its peak and its end (growth in %), and the exit time. Bounded: every loop stops at
--seconds / --requests; asserts nothing (the tests assert), prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))  # the tests' hostile requests and models
MiB = 1 << 20


# Models ------------------------------------------------------------------------------------


def image_zip(path: Path, scale: float) -> None:
    """JPEG -> preprocessing (32x32) -> a small Keras CNN -> 5 scores; ``scale`` makes the
    versions distinguishable."""
    import keras
    from fpga_serve.pipeline import KerasStage, ModelDefinition
    from fpga_serve.preprocessing import image_preprocess_stage

    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )
    model.set_weights([w * scale for w in model.get_weights()])
    model_def = ModelDefinition(name="images")
    model_def.pipeline.append(image_preprocess_stage(family="resnet50", size=32))
    model_def.pipeline.append(KerasStage(model))
    model_def.save(path)


def fpga_zip(path: Path) -> None:
    import keras
    from fpga_serve.compiler import CompileOptions, compile_model
    from fpga_serve.pipeline import FpgaStage, ModelDefinition

    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    out = keras.layers.GlobalAveragePooling2D()(x)
    data = np.random.default_rng(2).random((32, 16, 16, 3)).astype(np.float32)
    model_def = ModelDefinition(name="conv")
    model_def.pipeline.append(
        FpgaStage(compile_model(keras.Model(inp, out), data, CompileOptions()))
    )
    model_def.save(path)


def hold_zip(path: Path) -> None:
    """FP32 [-1, 1]: busy-waits x[0, 0] seconds, then returns 2x (a long batch for the drain)."""
    from hostile import build_hold_model_def

    build_hold_model_def("hold").save(path)


# Requests ----------------------------------------------------------------------------------


def jpeg(size: tuple[int, int], seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, format="JPEG"
    )
    return buf.getvalue()


def predict(model: str, key: str, dtype: int, shape: list[int], **values: Any) -> Any:
    """A TF Serving PredictRequest of one input tensor (tests/helpers/hostile.py's)."""
    from hostile import predict as predict_request
    from hostile import tensor_proto

    return predict_request(model, {key: tensor_proto(dtype, shape, **values)})


def hostile_requests() -> list[tuple[str, str, Any]]:
    """(name, method, request or raw bytes)."""
    from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
    from fpga_serve_client.protos import tf_tensor_pb2 as tf
    from hostile import png_claiming
    from PIL import Image

    frames = [Image.new("L", (500, 500), (i * 37) % 256).convert("P") for i in range(200)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    zero_huge = v2.ModelInferRequest(model_name="conv")
    zero_huge.inputs.add(name="images", datatype="FP32", shape=[0, 1 << 62])
    zero_huge.raw_input_contents.append(b"")
    long_name = predict("m" * 20_000, "images", tf.DT_STRING, [1], string_val=[b"x"])
    return [
        (
            "fill [2^27] strings",
            "Predict",
            predict("images", "images", tf.DT_STRING, [1 << 27], string_val=[b"x"]),
        ),
        (
            "fill [64, 2^20] floats",
            "Predict",
            predict("images", "images", tf.DT_DOUBLE, [64, 1 << 20], double_val=[1.0]),
        ),
        ("zero beside 2^62", "ModelInfer", zero_huge),
        ("20,000-char model name", "Predict", long_name),
        ("garbage bytes", "raw", b"\xff\xff\xff\xff garbage"),
        (
            "65000x1 JPEG",
            "Predict",
            predict("images", "images", tf.DT_STRING, [1], string_val=[jpeg((65000, 1))]),
        ),
        (
            "PNG claiming 1x64M",
            "Predict",
            predict(
                "images", "images", tf.DT_STRING, [1], string_val=[png_claiming(1, 64_000_000)]
            ),
        ),
        (
            "GIF of 200 frames",
            "Predict",
            predict("images", "images", tf.DT_STRING, [1], string_val=[gif.getvalue()]),
        ),
        (
            "not an image",
            "Predict",
            predict("images", "images", tf.DT_STRING, [1], string_val=[b"not an image"]),
        ),
    ]


# The run -----------------------------------------------------------------------------------


@dataclass
class Tally:
    valid: Counter[str] = field(default_factory=Counter)
    hostile: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def rss(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))


@dataclass(frozen=True)
class Requests:
    """Built once (the GIF and the JPEGs take a while), shared by the client threads."""

    photos: list[bytes]
    conv: Any
    hostile: list[tuple[str, str, Any]]

    @classmethod
    def build(cls) -> Requests:
        from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2

        x = np.random.default_rng(3).random((1, 16, 16, 3)).astype("<f4")
        conv = v2.ModelInferRequest(model_name="conv")
        conv.inputs.add(name="images", datatype="FP32", shape=[1, 16, 16, 3])
        conv.raw_input_contents.append(x.tobytes())
        return cls([jpeg((320, 240), i) for i in range(4)], conv, hostile_requests())


def traffic(
    channel: grpc.Channel,
    tally: Tally,
    stop: threading.Event,
    budget: list[int],
    seed: int,
    requests: Requests,
) -> None:
    from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc, prediction_service_pb2_grpc
    from fpga_serve_client.protos import tf_tensor_pb2 as tf

    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    raw = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=None,
        response_deserializer=None,
    )
    photos, conv, hostile = requests.photos, requests.conv, requests.hostile
    i = 0
    while not stop.is_set():
        with tally.lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        i += 1
        if i % 5 == 0:
            _, method, request = hostile[(i // 5 + seed) % len(hostile)]
            call = (
                raw
                if method == "raw"
                else (tfs.Predict if method == "Predict" else kserve.ModelInfer)
            )
            try:
                call(request, timeout=30)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            with tally.lock:
                tally.hostile[code] += 1
            continue
        start = time.perf_counter()
        try:
            if i % 2:
                reply = tfs.Predict(
                    predict("images", "images", tf.DT_STRING, [1], string_val=[photos[i % 4]]),
                    timeout=30,
                )
                version = str(reply.model_spec.version.value)
            else:
                kserve.ModelInfer(conv, timeout=30)
                version = ""
            code = "OK"
        except grpc.RpcError as exc:
            details = exc.details() or ""
            refused = "failed to connect" in details or "Connection refused" in details
            code = "refused" if refused else f"{exc.code().name}: {details[:80]}"
            version = ""
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                time.sleep(0.01)
        seconds = time.perf_counter() - start
        with tally.lock:
            tally.valid[code] += 1
            if code == "OK":
                tally.latencies.append(seconds)
                if version:
                    tally.versions.add(version)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def phase_row(name: str, tally: Tally, rss_info: str) -> str:
    ok = tally.valid.get("OK", 0)
    failed = sum(v for k, v in tally.valid.items() if k != "OK")
    bad = sum(v for k, v in tally.hostile.items() if k in ("INTERNAL", "UNKNOWN"))
    hostile = " ".join(f"{k} {v}" for k, v in sorted(tally.hostile.items()))
    return (
        f"{name:8s} {ok:7d} {failed:7d} {pct(tally.latencies, 0.5):8.1f} "
        f"{pct(tally.latencies, 0.99):8.1f}"
        f" {bad:8d}  {rss_info}  | hostile: {hostile}"
    )


def run(ns: argparse.Namespace, tmp: Path) -> None:
    from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
    from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc, prediction_service_pb2_grpc
    from fpga_serve_client.protos import tf_tensor_pb2 as tf

    repo = tmp / "repo"
    versions = [tmp / "v_a.zip", tmp / "v_b.zip"]
    image_zip(versions[0], 1.0)
    image_zip(versions[1], 1.7)
    (repo / "images" / "1").mkdir(parents=True)
    shutil.copyfile(versions[0], repo / "images" / "1" / "model.zip")
    fpga_zip(repo / "conv.zip")
    hold_zip(repo / "hold.zip")
    (repo / "conv.zip").rename(tmp / "conv.zip")
    (repo / "hold.zip").rename(tmp / "hold.zip")
    cmd = [
        sys.executable,
        "-m",
        "fpga_serve.cli",
        "serve",
        str(tmp / "conv.zip"),
        str(tmp / "hold.zip"),
        "--model-repository",
        str(repo),
        "--port",
        "0",
        "--metrics-port",
        "-1",
        "--shutdown-grace-s",
        str(ns.grace),
        "--inline-max-us",  # the hold model's long run on an RPC thread (hostile.py)
        "0",
        "--log-level",
        "INFO",
    ]
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["grpc_port"]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    kserve = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    tfs = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    print(f"load {os.getloadavg()[0]:.2f} at start (2 cores shared with other work)")
    print(
        f"{'phase':8s} {'ok':>7s} {'failed':>7s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'INTERNAL':>8s}  RSS"
    )
    # warm-up: every model and every hostile request once
    warm = Tally()
    stop = threading.Event()
    requests = Requests.build()
    traffic(channel, warm, stop, [60], 99, requests)
    base = rss(proc.pid)

    def phase(name: str, seconds: float, during: Any = None) -> Tally:
        tally = Tally()
        stop = threading.Event()
        budget = [ns.requests]
        threads = [
            threading.Thread(target=traffic, args=(channel, tally, stop, budget, s, requests))
            for s in range(ns.clients)
        ]
        start_rss = rss(proc.pid)
        for t in threads:
            t.start()
        extra = during() if during is not None else None
        end = time.monotonic() + seconds
        while time.monotonic() < end and any(t.is_alive() for t in threads):
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(60)
        now = rss(proc.pid)
        growth = (now - start_rss) / start_rss * 100
        info = f"{start_rss / MiB:6.0f} -> {now / MiB:6.0f} MiB ({growth:+.1f}%)"
        print(phase_row(name, tally, info) + (f" | {extra}" if extra else ""), flush=True)
        return tally

    phase("soak", ns.seconds)

    def swaps() -> str:
        done: list[str] = []

        def swapper() -> None:
            for k in range(1, ns.swaps + 1):
                time.sleep(0.5)
                target = repo / "images" / str(k + 1) / "model.zip"
                target.parent.mkdir(parents=True)
                shutil.copyfile(versions[k % 2], target)
                shutil.rmtree(repo / "images" / str(k))
                try:
                    kserve.RepositoryModelLoad(
                        v2.RepositoryModelLoadRequest(model_name="images"), timeout=120
                    )
                    done.append("ok")
                except grpc.RpcError as exc:
                    done.append(exc.code().name)

        thread = threading.Thread(target=swapper)
        thread.start()
        thread.join()
        return f"swaps {done.count('ok')}/{ns.swaps} done, versions 1 -> {ns.swaps + 1}"

    tally = phase("swaps", 0.5, swaps)
    print(f"         versions answered: {sorted(tally.versions, key=int)}")

    # Drain: traffic, a 30 s batch on 'hold', then SIGTERM.
    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(target=traffic, args=(channel, tally, stop, [ns.requests], s, requests))
        for s in range(ns.clients)
    ]
    for t in threads:
        t.start()
    hold = tfs.Predict.future(
        predict("hold", "x", tf.DT_FLOAT, [1, 1], float_val=[30.0]), timeout=60
    )
    end = time.monotonic() + 10
    while sum(tally.valid.values()) < 20 and time.monotonic() < end:
        time.sleep(0.05)  # traffic is flowing
    time.sleep(0.5)
    peak = rss(proc.pid, "VmHWM")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    exited = time.monotonic() - sent
    stop.set()
    for t in threads:
        t.join(60)
    try:
        hold.result()
        hold_code = "OK"
    except grpc.RpcError as exc:
        hold_code = exc.code().name
    codes = Counter({k.split(":")[0]: v for k, v in tally.valid.items()})
    print(
        f"drain    SIGTERM with a 30 s batch in flight, grace {ns.grace:.1f} s: exit code {code} "
        f"after {exited:.2f} s (grace + {exited - ns.grace:.2f} s); the 30 s batch: {hold_code}; "
        f"valid requests during the drain: {dict(codes)} (refused: sent after SIGTERM)"
    )
    print(f"RSS: {base / MiB:.0f} MiB after warm-up, peak {peak / MiB:.0f} MiB over the run")
    log.close()
    stopping = [ln.strip() for ln in (tmp / "server.log").read_text().splitlines()]
    for line in stopping:
        if any(w in line for w in ("draining", "cut off", "stopped in")):
            print("server: " + line.split(": ", 1)[-1])
    channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the soak phase")
    parser.add_argument("--requests", type=int, default=20000, help="most requests per phase")
    parser.add_argument("--clients", type=int, default=6, help="client threads")
    parser.add_argument("--swaps", type=int, default=10, help="version changes under load")
    parser.add_argument("--grace", type=float, default=3.0, help="--shutdown-grace-s of the server")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        run(ns, Path(tmp))


if __name__ == "__main__":
    main()
