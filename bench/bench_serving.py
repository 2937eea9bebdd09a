"""Serving overhead and batching, measured in interleaved rounds, all on loopback.

    python bench/bench_serving.py [--rounds 9] [--seconds 2] [--requests 3000] [--workers 32]

This machine's noise (other tenants, 2 cores) moves throughput by tens of percent from one
minute to the next, more than the margins measured here. So nothing is measured once per side:
every process is started up front and stays up, and the sides take turns in short windows, round
after round (who goes first rotates between rounds), so noise hits every side alike. Each round
yields a paired ratio (fpga-serve against raw, served against peak, from windows seconds apart);
the tables give the median over rounds and the range of the ratios.

Table 1: p50/p99 latency and throughput at 1, 8 and 32 requests in flight for a minimal raw
grpcio server (bench/raw_server.py; what it does and skips is in its docstring) and for
fpga-serve twice: with its default settings (dynamic batching max 8, no queue delay, so a lone
request runs inline and concurrent ones share a TensorFlow call) and with batching off (every
request runs its own call, as in the raw server). Same trivial TensorFlow model, same 150 KB
request, same tensor converters, same gRPC thread pool size (--workers), same client.

Table 2: a featurizer on the twin (--model: the seed's resnet50 by default, at --size 224, its
input size, or another zoo featurizer; or "cnn", a 5-conv CNN at 64x64 whose 1-2 ms per image
is of the order of gRPC's own per-request cost, a stress case), at 32 in flight, with dynamic
batching off (batch_max_size 1) and on (the last row also with --batch-concurrency 2: two batches
at once, the host's part of one beside the device's part of the other), against the model's
in-process peak: the same zip loaded in a separate process like the servers (twin device, same
environment, so the same twin/BLAS threads; --twin-threads sets FPGA_SERVE_TWIN_THREADS for all
of them alike) running the stage back to back at batch 1, 8 and 16, in the same rounds as the
servers. A window lasts --seconds or, if longer, the time the peak takes for 12 batches of 16.
Each configuration is compared with the peak at its own max batch size (like for like) and with the
best batch size of that round.

Table 2 also gives a CPU budget: CPU milliseconds per image, from /proc/<pid>/stat (user + system)
sampled at the start and end of every window, for the server process itself, its device worker
(all the server's descendants: the twin's worker process, multiprocessing's resource tracker),
and the load generator (this process); and the peak process's own CPU per image (its twin runs
in-process). "CPU x" is the served path's CPU per image (server + worker + client) over the
peak's: what serving costs in CPU on top of the model. It is no strict bound on served/peak (the
peak may leave part of a core idle, and the cores here may share execution units), but where it
is far above 1.1 the 90% goal needs spare cores that a 2-core machine does not have.

Table 3: the seed's whole pipeline (``fpga-serve build resnet50``, random weights: JPEG
preprocessing in TensorFlow, ResNet-50 on the twin, the classifier), JPEG in and confidences out
over TF Serving Predict at 1 in flight, against the same zip run in process by the SDK
(load_pipeline, Pipeline.run, the twin in that process) on the same photo, in alternating
windows: the served p50 over the in-process median, paired by round (goal: within 1.15x).
Beside it, the same zip served with the twin in the server's own process (--no-twin-isolated)
and by the raw grpcio server (what a gRPC round trip of the JPEG costs at the least).

Every load loop is bounded by --requests and --seconds per window; the client is this process
(its threads share the 2 cores with the servers, as they would with any local client).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import procstat

ROOT = Path(__file__).resolve().parent.parent
PEAK_BATCHES = (1, 8, 16)
WINDOW_BATCHES = 12
RAW = "raw grpc"
OURS = "fpga-serve (defaults)"
OURS_OFF = "fpga-serve, batching off"
LOCAL = "in-process pipeline"
SERVED = "served (TF Serving Predict)"
RAW_ZIP = "raw grpcio server, same zip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def trivial_zip(path: Path) -> None:
    import tensorflow as tf
    from fpga_serve.pipeline import ModelDefinition, TensorflowStage

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def lengths(images: tf.Tensor) -> dict[str, tf.Tensor]:
        n = tf.cast(tf.strings.length(images), tf.float32)[:, None]
        return {"scores": tf.concat([n, n / 2, n / 3, n / 4], axis=1)}

    model_def = ModelDefinition(name="trivial")
    model_def.pipeline.append(TensorflowStage(lengths))
    model_def.save(path)


def cnn_zip(path: Path, size: int) -> np.ndarray:
    import keras
    from fpga_serve.compiler import CompileOptions, compile_model
    from fpga_serve.pipeline import FpgaStage, ModelDefinition

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inp)
    for _ in range(3):
        y = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
        x = keras.layers.Add()([x, y])
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    out = keras.layers.GlobalAveragePooling2D()(x)
    data = np.random.default_rng(0).normal(0, 1, (16, size, size, 3)).astype(np.float32)
    stage = FpgaStage(compile_model(keras.Model(inp, out), data[:8], CompileOptions()))
    model_def = ModelDefinition(name="cnn")
    model_def.pipeline.append(stage)
    model_def.save(path)
    return data


def zoo_zip(path: Path, family: str, size: int) -> np.ndarray:
    """The seed's featurizer (random weights: speed does not depend on them) as one FPGA stage."""
    from fpga_serve.models import ZOO
    from fpga_serve.pipeline import ModelDefinition

    data = np.random.default_rng(0).normal(0, 50, (16, size, size, 3)).astype(np.float32)
    model_def = ModelDefinition(name=family)
    model_def.pipeline.append(ZOO[family](None, input_size=size).compile(data[:4]))
    model_def.save(path)
    return data


def spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def stop(procs: Iterable[subprocess.Popen[str]]) -> None:
    """Terminate every process, then wait for each."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


def wait_ready(proc: subprocess.Popen[str], ready: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if ready in line:
            return
    raise RuntimeError(f"{proc.args} did not start")


def cpu_used(before: procstat.Snapshot, pid: int) -> tuple[float, float]:
    """CPU seconds ``pid`` itself and its descendants used since ``before``; a descendant born
    since counts whole, one that died since is lost (the twin's worker stays)."""
    after = procstat.snapshot()
    kids = procstat.family(after, pid) - {pid}
    return procstat.cpu_between(before, after, {pid}), procstat.cpu_between(before, after, kids)


@dataclass
class Window:
    p50: float
    p99: float
    rate: float
    client_cores: float = 0.0
    """CPU the load generator (this process) used during the window, in cores."""
    server_ms: float = 0.0
    """CPU ms per request of the server process itself (when ``load`` was given its pid)."""
    worker_ms: float = 0.0
    """CPU ms per request of the server's descendants (its device worker)."""

    @property
    def client_ms(self) -> float:
        """CPU ms per request of the load generator."""
        return self.client_cores / self.rate * 1000


def load(
    address: str,
    request: Any,
    inflight: int,
    requests: int,
    seconds: float,
    server_pid: int | None = None,
) -> Window:
    """``inflight`` clients, each on its own channel, send ``request`` back to back; with
    ``server_pid``, the server's and its descendants' CPU is sampled around the window."""
    import grpc
    from fpga_serve_client.protos import prediction_service_pb2_grpc

    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))
    clock = {"deadline": 0.0, "t0": 0.0, "cpu0": 0.0}
    server0: list[procstat.Snapshot] = []

    def start_clock() -> None:  # runs once, before any client is released
        if server_pid is not None:  # first, so the client's CPU leaves the /proc scan out
            server0.append(procstat.snapshot())
        clock["deadline"] = time.monotonic() + seconds
        clock["t0"] = time.perf_counter()
        clock["cpu0"] = time.process_time()

    warm = threading.Barrier(inflight + 1, action=start_clock)  # clock starts when all are warm

    def worker() -> None:
        with grpc.insecure_channel(
            address, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            stub.Predict(request, timeout=30)  # warm-up, not counted
            warm.wait()
            while time.monotonic() < clock["deadline"]:
                with lock:
                    if next(counter, None) is None:
                        return
                t0 = time.perf_counter()
                stub.Predict(request, timeout=30)
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for t in threads:
        t.start()
    warm.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - clock["t0"]
    cores = (time.process_time() - clock["cpu0"]) / elapsed
    window = Window(0.0, 0.0, len(latencies) / elapsed, cores)
    if server_pid is not None:
        server_s, worker_s = cpu_used(server0[0], server_pid)
        window.server_ms = server_s / len(latencies) * 1000
        window.worker_ms = worker_s / len(latencies) * 1000
    latencies.sort()
    window.p50 = statistics.median(latencies) * 1000
    window.p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return window


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}-{format(max(values), fmt)}"


# The peak worker: a separate process holding the CNN, timed on request -----------------------


def peak_worker(zip_path: Path, data_path: Path) -> None:
    """Reads "BATCH SECONDS" lines, runs the stage back to back, answers "IMG/S CPU-MS/IMG": images
    per second and this process's CPU (all threads; the twin runs in-process) per image."""
    from fpga_serve.core.settings import ServerSettings
    from fpga_serve.hw.twin.gemm import set_twin_threads
    from fpga_serve.modelzip import LoadContext, load_pipeline

    set_twin_threads(ServerSettings().twin_threads)  # FPGA_SERVE_TWIN_THREADS, as the servers
    archive = load_pipeline(zip_path, LoadContext())  # no device given: the twin, as --device twin
    stage = archive.stages[0]
    data = np.load(data_path)
    for b in PEAK_BATCHES:
        stage.run([data[:b]])  # warm
    print("ready", flush=True)
    for line in sys.stdin:
        batch, seconds = int(line.split()[0]), float(line.split()[1])
        x = data[:batch]
        n, t0, cpu0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            stage.run([x])
            n += batch
        cpu_ms = (time.process_time() - cpu0) / n * 1000
        print(f"{n / (time.perf_counter() - t0):.3f} {cpu_ms:.4f}", flush=True)
    archive.close()


def ask_peak(proc: subprocess.Popen[str], batch: int, seconds: float) -> tuple[float, float]:
    """The peak worker's images per second and CPU ms per image at ``batch``."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{batch} {seconds}\n")
    proc.stdin.flush()
    rate, cpu_ms = proc.stdout.readline().split()
    return float(rate), float(cpu_ms)


# Tables ----------------------------------------------------------------------------------------


def serve_cmd(zip_path: Path, port: int, workers: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fpga_serve.cli",
        "serve",
        str(zip_path),
        "--port",
        str(port),
        "--metrics-port",
        "-1",
        "--workers",
        str(workers),
        *extra,
    ]


def table1(ns: argparse.Namespace, tmp: Path) -> None:
    from fpga_serve_client.protos import predict_pb2, tf_tensor_pb2

    payload = np.random.default_rng(1).bytes(150_000)
    request = predict_pb2.PredictRequest()
    tensor = request.inputs["images"]
    tensor.dtype = tf_tensor_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=1)
    tensor.string_val.append(payload)

    trivial = tmp / "trivial.zip"
    trivial_zip(trivial)
    raw_script = str(ROOT / "bench" / "raw_server.py")
    sides = {  # name: (port, command, readiness line)
        RAW: (free_port(), [sys.executable, raw_script, str(trivial)], "ready"),
        OURS: (free_port(), [], '"serving"'),
        OURS_OFF: (free_port(), ["--batch-max-size", "1"], '"serving"'),
    }
    procs = {}
    for name, (port, args, _) in sides.items():
        if name == RAW:
            procs[name] = spawn([*args, str(port), str(ns.workers)])
        else:
            procs[name] = spawn(serve_cmd(trivial, port, ns.workers, *args))
    levels = (1, 8, 32)
    got: dict[tuple[str, int], list[Window]] = {}
    try:
        for name, proc in procs.items():
            wait_ready(proc, sides[name][2])
        names = list(sides)
        for r in range(ns.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
            for inflight in levels:
                for name in order:
                    address = f"127.0.0.1:{sides[name][0]}"
                    w = load(address, request, inflight, ns.requests, ns.seconds)
                    got.setdefault((name, inflight), []).append(w)
            print(f"table 1: round {r + 1}/{ns.rounds} done", file=sys.stderr, flush=True)
    finally:
        stop(procs.values())

    print(
        f"\nTable 1: trivial model, 150 KB payload, {ns.rounds} interleaved rounds of "
        f"{ns.seconds:g} s per server and level; medians over rounds"
    )
    print(
        f"{'in flight':>9}  {'server':<26} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>6} | "
        f"{'p50 / raw':>9} {'range':>10}"
    )
    verdicts: dict[str, bool] = {OURS: True, OURS_OFF: True}
    for inflight in levels:
        base = got[(RAW, inflight)]
        for name in (RAW, OURS, OURS_OFF):
            ws = got[(name, inflight)]
            line = (
                f"{inflight:>9}  {name:<26} {med([w.p50 for w in ws]):7.2f} "
                f"{med([w.p99 for w in ws]):7.2f} {med([w.rate for w in ws]):6.0f} |"
            )
            if name != RAW:
                ratios = [x.p50 / y.p50 for x, y in zip(ws, base, strict=True)]
                verdicts[name] = verdicts[name] and med(ratios) <= 1.2
                line += f" {med(ratios):9.2f} {spread(ratios, '.2f'):>10}"
            print(line)
    print("p50 / raw: that server's p50 / raw p50 in the same round; median and range over rounds")
    for name, ok in verdicts.items():
        print(f"{name}: median p50 ratio <= 1.2 at 1, 8 and 32 in flight: {'yes' if ok else 'no'}")


def table2(ns: argparse.Namespace, tmp: Path) -> None:
    from fpga_serve_client.protos import predict_pb2, tf_tensor_pb2

    cnn = tmp / "cnn.zip"
    data = cnn_zip(cnn, ns.size) if ns.model == "cnn" else zoo_zip(cnn, ns.model, ns.size)
    data_path = tmp / "cnn_data.npy"
    np.save(data_path, data)
    request = predict_pb2.PredictRequest()
    tensor = request.inputs["images"]
    tensor.dtype = tf_tensor_pb2.DT_FLOAT
    for d in (1, ns.size, ns.size, 3):
        tensor.tensor_shape.dim.add(size=d)
    tensor.tensor_content = data[:1].tobytes()

    # (max batch size, max queue delay us, batches at once: --batch-concurrency)
    configs = ((1, 0, 1), (8, 0, 1), (8, 2000, 1), (16, 2000, 1), (16, 2000, 2))
    procs: dict[str, subprocess.Popen[str]] = {}
    env = {} if ns.twin_threads is None else {"FPGA_SERVE_TWIN_THREADS": str(ns.twin_threads)}
    ports: dict[str, int] = {}
    labels = []
    try:
        procs["peak"] = spawn(
            [sys.executable, __file__, "--peak-worker", str(cnn), str(data_path)], env
        )
        for max_batch, delay_us, concurrency in configs:
            label = "off" if max_batch == 1 else f"max {max_batch}, {delay_us} us"
            label += f", {concurrency} at once" if concurrency > 1 else ""
            labels.append(label)
            ports[label] = free_port()
            extra = ["--device", "twin", "--batch-max-size", str(max_batch)]
            extra += ["--batch-max-queue-delay-us", str(delay_us)]
            extra += ["--batch-concurrency", str(concurrency)]
            procs[label] = spawn(serve_cmd(cnn, ports[label], ns.workers, *extra), env)
        for name, proc in procs.items():
            wait_ready(proc, "ready" if name == "peak" else '"serving"')
        # Windows hold at least WINDOW_BATCHES batches of 16 at the peak's rate (a window of a
        # few batches would count a batch more or less: +-20% on a big featurizer).
        sizing, _ = ask_peak(procs["peak"], 16, ns.seconds)
        window = max(ns.seconds, WINDOW_BATCHES * 16 / sizing)

        peaks: dict[int, list[float]] = {b: [] for b in PEAK_BATCHES}
        peak_ms: dict[int, list[float]] = {b: [] for b in PEAK_BATCHES}  # CPU ms per image
        served: dict[str, list[Window]] = {label: [] for label in labels}
        turns: list[str] = ["peak", *labels]
        for r in range(ns.rounds):
            order = turns[r % len(turns) :] + turns[: r % len(turns)]  # rotate who goes first
            for turn in order:
                if turn == "peak":
                    for b in PEAK_BATCHES:
                        rate, cpu_ms = ask_peak(procs["peak"], b, window)
                        peaks[b].append(rate)
                        peak_ms[b].append(cpu_ms)
                else:
                    address = f"127.0.0.1:{ports[turn]}"
                    pid = procs[turn].pid
                    served[turn].append(load(address, request, 32, ns.requests, window, pid))
            print(f"table 2: round {r + 1}/{ns.rounds} done", file=sys.stderr, flush=True)
    finally:
        stop(procs.values())

    best = [max(v) for v in zip(*peaks.values(), strict=True)]  # per round, the best batch
    print(
        f"\nTable 2: {ns.model} {ns.size}x{ns.size} on the twin, 32 in flight, {ns.rounds} "
        "interleaved "
        f"rounds of {window:.1f} s per configuration; medians over rounds; twin threads "
        f"{ns.twin_threads or 'default'}"
    )
    print(
        "in-process peak img/s: "
        + ", ".join(
            f"batch {b} {med(v):.0f} ({med(peak_ms[b]):.2f} core-ms/img, "
            f"{med(v) * med(peak_ms[b]) / 1000:.2f} cores)"
            for b, v in peaks.items()
        )
        + f"; best batch per round {med(best):.0f}"
    )
    print(
        f"{'batching':>28} {'p50 ms':>8} {'p99 ms':>8} {'img/s':>7} | {'of peak at':>10} "
        f"{'its batch':>9} {'range':>9} | {'of best':>7} {'range':>9} | {'client cores':>12} | "
        f"{'server ms/img':>13} {'worker ms/img':>13} {'client ms/img':>13} {'CPU x':>6}"
    )
    verdict = False
    for label, (max_batch, _, _) in zip(labels, configs, strict=True):
        ws = served[label]
        same = [w.rate / p for w, p in zip(ws, peaks[max_batch], strict=True)]
        top = [w.rate / p for w, p in zip(ws, best, strict=True)]
        if max_batch > 1:
            verdict = verdict or med(top) >= 0.9
        budget = [med([w.server_ms for w in ws]), med([w.worker_ms for w in ws])]
        budget.append(med([w.client_ms for w in ws]))
        cost = sum(budget) / med(peak_ms[max_batch])
        print(
            f"{label:>28} {med([w.p50 for w in ws]):8.1f} {med([w.p99 for w in ws]):8.1f} "
            f"{med([w.rate for w in ws]):7.0f} | {'batch ' + str(max_batch):>10} "
            f"{med(same):9.0%} {min(same):4.0%}-{max(same):.0%} | {med(top):7.0%} "
            f"{min(top):4.0%}-{max(top):.0%} | {med([w.client_cores for w in ws]):12.2f} | "
            + " ".join(f"{ms:13.2f}" for ms in budget)
            + f" {cost:6.2f}"
        )
    print(
        "of peak: served img/s / the same round's in-process img/s, at the configuration's max\n"
        "batch size (like for like) and at the round's best batch size; median and range;\n"
        f"client cores: CPU the load generator itself used, of the machine's {os.cpu_count()} "
        "(the peak process has no client);\n"
        "ms/img: CPU (user + system) per image of the server process, its device worker (all its\n"
        "descendants) and the load generator, over the same windows; medians over rounds;\n"
        "CPU x: the served path's CPU per image (server + worker + client) over the in-process\n"
        "peak's at the configuration's max batch size"
    )
    print(
        "a batching configuration reaches a median >= 90% of the best in-process peak: "
        + ("yes" if verdict else "no")
    )


def pipeline_worker(zip_path: Path, image_path: Path) -> None:
    """Reads "SECONDS" lines, runs the whole pipeline in process (the SDK's twin, no gRPC) on
    the image back to back, answers "MEDIAN-MS COUNT"."""
    from fpga_serve.modelzip import LoadContext, load_pipeline
    from fpga_serve.runtime import Pipeline

    archive = load_pipeline(zip_path, LoadContext())
    pipeline = Pipeline(archive.stages, input_aliases=archive.input_aliases)
    images = np.empty(1, dtype=object)
    images[0] = image_path.read_bytes()
    pipeline.run({"images": images})  # warm
    print("ready", flush=True)
    for line in sys.stdin:
        seconds = float(line)
        times: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            pipeline.run({"images": images})
            times.append(time.perf_counter() - t0)
        print(f"{statistics.median(times) * 1000:.3f} {len(times)}", flush=True)
    archive.close()


def table3(ns: argparse.Namespace, tmp: Path) -> None:
    """The seed's pipeline served (JPEG in, confidences out, twin) at 1 in flight against the
    same pipeline run in process on the same image."""
    import sklearn.datasets
    from fpga_serve_client.protos import predict_pb2, tf_tensor_pb2

    image = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    zip_path = tmp / "resnet50.zip"
    build = [sys.executable, "-m", "fpga_serve.cli", "build", "resnet50", "-o", str(zip_path)]
    subprocess.run(
        build, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    request = predict_pb2.PredictRequest()
    tensor = request.inputs["images"]
    tensor.dtype = tf_tensor_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=1)
    tensor.string_val.append(image.read_bytes())
    raw_script = str(ROOT / "bench" / "raw_server.py")
    sides = {  # name: (command, readiness line); each on a port of its own
        SERVED: (["--device", "twin"], '"serving"'),
        "served, twin in process": (["--device", "twin", "--no-twin-isolated"], '"serving"'),
        RAW_ZIP: ([sys.executable, raw_script, str(zip_path)], "ready"),
    }
    ports = {name: free_port() for name in sides}
    procs = {
        LOCAL: spawn([sys.executable, __file__, "--pipeline-worker", str(zip_path), str(image)])
    }
    for name, (args, _) in sides.items():
        if args[0] == sys.executable:
            procs[name] = spawn([*args, str(ports[name]), str(ns.workers)])
        else:
            procs[name] = spawn(serve_cmd(zip_path, ports[name], ns.workers, *args))
    windows: dict[str, list[Window]] = {name: [] for name in sides}
    local: list[float] = []
    try:
        wait_ready(procs[LOCAL], "ready")
        for name, (_, ready) in sides.items():
            wait_ready(procs[name], ready)
            load(f"127.0.0.1:{ports[name]}", request, 1, 5, 30)  # warm (the twin's worker)
        window = max(ns.seconds, 5.0)
        stdin, stdout = procs[LOCAL].stdin, procs[LOCAL].stdout
        assert stdin is not None and stdout is not None
        turns = [LOCAL, *sides]
        for r in range(ns.rounds):
            for turn in turns[r % len(turns) :] + turns[: r % len(turns)]:  # each first in turn
                if turn == LOCAL:
                    stdin.write(f"{window}\n")
                    stdin.flush()
                    local.append(float(stdout.readline().split()[0]))
                else:
                    address = f"127.0.0.1:{ports[turn]}"
                    windows[turn].append(load(address, request, 1, ns.requests, window))
            print(f"table 3: round {r + 1}/{ns.rounds} done", file=sys.stderr, flush=True)
    finally:
        stop(procs.values())
    paired = {
        name: [w.p50 / t for w, t in zip(ws, local, strict=True)] for name, ws in windows.items()
    }
    print(
        f"\nTable 3: ResNet-50 pipeline (fpga-serve build resnet50: JPEG preprocessing, the "
        f"featurizer on the twin, classifier), china.jpg, 1 in flight, {ns.rounds} interleaved "
        f"rounds of {window:g} s; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'side':>30} {'p50 ms':>8} {'p99 ms':>8} {'/ in process':>12} {'range':>11}")
    for name, ws in windows.items():
        print(
            f"{name:>30} {med([w.p50 for w in ws]):8.1f} {med([w.p99 for w in ws]):8.1f} "
            f"{med(paired[name]):12.3f} {spread(paired[name], '.2f'):>11}"
        )
    print(f"{LOCAL:>30} {med(local):8.1f}")
    print(
        "/ in process: a side's p50 over the same round's in-process median, median over rounds;\n"
        "served: fpga-serve's defaults (the twin in a worker process of its own); twin in\n"
        "process: --no-twin-isolated; raw grpcio server: bench/raw_server.py on the same zip (the\n"
        "SDK's stages in its RPC thread, the twin in process; no checks, metrics or worker):\n"
        "what a gRPC round trip of this JPEG adds on this machine at the least"
    )
    ratios = paired[SERVED]
    over_raw = [a.p50 / b.p50 for a, b in zip(windows[SERVED], windows[RAW_ZIP], strict=True)]
    print(f"served p50 / raw grpcio server's p50, paired by round: {med(over_raw):.3f}")
    print(
        f"served p50 / in-process median, paired by round: {med(ratios):.3f} "
        f"(range {spread(ratios, '.3f')}); within 1.15x: {'yes' if med(ratios) <= 1.15 else 'no'}"
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--peak-worker":
        peak_worker(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--pipeline-worker":
        pipeline_worker(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per table")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one window")
    parser.add_argument("--requests", type=int, default=3000, help="most requests per window")
    parser.add_argument("--workers", type=int, default=32, help="gRPC threads, every server")
    parser.add_argument(
        "--model",
        default="resnet50",
        choices=["resnet50", "resnet152", "densenet121", "vgg16", "cnn"],
        help="table 2's model: a zoo featurizer, or a 5-conv CNN (serving overhead dominates)",
    )
    parser.add_argument(
        "--size", type=int, default=None, help="table 2's input size (224, the seed's; cnn: 64)"
    )
    parser.add_argument(
        "--twin-threads",
        type=int,
        default=None,
        help="FPGA_SERVE_TWIN_THREADS for every table-2 process (peak and servers alike)",
    )
    parser.add_argument("--tables", default="123", help="which tables to run, e.g. 1 or 23")
    ns = parser.parse_args()
    if ns.size is None:
        ns.size = 64 if ns.model == "cnn" else 224
    warnings.simplefilter("ignore")
    runs: dict[str, Callable[[argparse.Namespace, Path], None]] = {
        "1": table1,
        "2": table2,
        "3": table3,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for key in ns.tables:
            runs[key](ns, Path(tmp))


if __name__ == "__main__":
    main()
