"""fpga-serve against the servers users would pick instead, one client, interleaved rounds.

    python bench/bench_peers.py [--rounds 9] [--seconds 2] [--levels 1,8,32] [--mlserver]
                                [--never-inline]

The peers are set up by this script in throw-away virtual environments with pinned versions
(``.venv-peers/NAME`` in the repository, rebuilt when a pin changes; delete the folder to start
over), and every server serves the same trivial model (bench/peers/trivial.py: UINT8
[1,224,224,3] in, FP32 [1,1000] out, a fixed vector plus the input's mean):

- floor, sync / floor, aio: a minimal grpcio KServe v2 server (peers/floor_server.py) that
  parses ``raw_input_contents`` with ``np.frombuffer``, computes the model and answers, and does
  nothing else; grpcio pinned to fpga-serve's own version (1.64.0, pynq's pin), stubs generated
  in its venv from the project's .proto, no fpga-serve code. ``sync`` is a grpc.server thread
  pool (what fpga-serve used up to 0c50707), ``aio`` grpc.aio's event loop as KServe and
  fpga-serve use. The lower of the two
  is the floor.
- KServe: the ``kserve`` package's ModelServer (peers/kserve_server.py), a ``kserve.Model``
  subclass as KServe's docs write one, logs quiet.
- MLServer (with --mlserver): MLServer's gRPC server and a custom ``MLModel`` runtime.
- fpga-serve: this checkout's server (``fpga-serve serve``), metrics on (a Prometheus port), the
  model as the stage kind that serves it best (--stage), with default settings and with
  batching off; with --never-inline also with every call handed to an RPC thread and back
  (``--inline-max-us 0``), to measure what running short models on the event loop saves.

One client for all (peers/client.py, in its own venv): tritonclient's asyncio gRPC client,
ModelInfer with raw contents, one channel per server, N requests in flight for --seconds per
window, at 1, 8 and 32 in flight. Every server starts once and stays up; the servers take turns
window by window, level by level, round after round, the first one rotating, so the machine's
noise (it is shared: other engineers' tests and servers) hits every server alike. Each window
records p50/p99 latency, requests per second, CPU per request of the server (its process and
descendants) and of the client, from /proc/<pid>/stat, and the noise: the CPU every other
process on the machine used (/proc/stat's busy time less the server's, the client's and this
script's), the hypervisor's steal time and the load average. The ratios to KServe are paired
(the same round's windows, seconds apart): medians and ranges over rounds. Every answer the
client checks in its warm-up must equal the model's within 1e-3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

import numpy as np
import procstat
from bench_serving import free_port
from trivial import BASE, INPUT, MODEL, OUTPUT, SHAPE

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).resolve().parent / "peers"
PROTO_ROOT = ROOT / "protos"  # imports inside the .proto files are relative to it
FLOOR_PROTOS = ("grpc_predict_v2.proto", "triton.proto")  # the KServe v2 API and its import

# Pinned environments: name -> requirements (the top-level package and what its speed rests on).
VENVS: dict[str, list[str]] = {
    "client": ["tritonclient[grpc]==2.66.0", "grpcio==1.67.1", "protobuf==5.29.6", "numpy==2.4.6"],
    "floor": ["grpcio==1.64.0", "grpcio-tools==1.64.0", "protobuf==5.29.6", "numpy==1.26.4"],
    "kserve": ["kserve==0.21.0", "grpcio==1.85.3", "protobuf==6.33.6", "numpy==2.4.6"],
    # uvloop: mlserver 1.7.1's workers fail on uvloop 0.22+ ("no current event loop")
    "mlserver": [
        "mlserver==1.7.1",
        "uvloop==0.21.0",
        "grpcio==1.85.3",
        "protobuf==6.33.6",
        "numpy==2.4.6",
    ],
}

FLOOR_SYNC = "floor, sync (grpcio)"
FLOOR_AIO = "floor, aio (grpcio)"
KSERVE = "KServe ModelServer"
MLSERVER = "MLServer"
OURS = "fpga-serve (defaults)"
OURS_OFF = "fpga-serve, batching off"
OURS_THREADS = "fpga-serve, never on loop"
"""--never-inline: batching off and --inline-max-us 0, every call handed to an RPC thread and
back (what the event loop saves, measured; an ablation, not a configuration judged)."""


# Environments -----------------------------------------------------------------------------


def venv(name: str, root: Path, log: TextIO) -> Path:
    """The python of venv ``name`` under ``root``, created (or re-created) for its pins."""
    home = root / name
    python = home / "bin" / "python"
    stamp = home / "pins.json"
    pins = VENVS[name]
    stubs = home / "stubs"
    ready = python.exists() and stamp.exists() and json.loads(stamp.read_text()) == pins
    if ready and (name != "floor" or (stubs / "fpga_serve_client" / "protos").is_dir()):
        return python
    print(f"setting up {home} ({' '.join(pins)})", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *pins], check=True, stdout=log, stderr=log)
    if name == "floor":  # its own stubs, from the project's wire-compatible .proto
        stubs.mkdir(exist_ok=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={stubs}",
                f"--grpc_python_out={stubs}",
                *(f"fpga_serve_client/protos/{proto}" for proto in FLOOR_PROTOS),
            ],
            check=True,
        )
    stamp.write_text(json.dumps(pins))
    return python


# fpga-serve's model -------------------------------------------------------------------------


def trivial_onnx() -> Any:
    """The trivial model as an ONNX graph: Cast to double, ReduceMean, Cast, Add the vector."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", [INPUT], ["wide"], to=TensorProto.DOUBLE),
        helper.make_node("ReduceMean", ["wide"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Cast", ["mean"], ["mean32"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mean32", "one"], ["column"]),
        helper.make_node("Add", ["base", "column"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        MODEL,
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", *SHAPE[1:]])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", len(BASE)])],
        initializer=[
            numpy_helper.from_array(BASE[None, :], "base"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fpga_serve_zip(path: Path, stage: str) -> None:
    """The trivial model as an fpga-serve pipeline zip, as the stage kind ``stage``."""
    from fpga_serve.pipeline import ModelDefinition, OnnxStage, TensorflowStage

    model_def = ModelDefinition(name=MODEL)
    if stage == "onnx":
        model_def.pipeline.append(OnnxStage(trivial_onnx()))
        model_def.save(path)
        return
    import tensorflow as tf

    base = tf.constant(BASE)

    @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE[1:]], tf.uint8, name=INPUT)])
    def trivial(images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.reshape(tf.cast(images, tf.float64), [tf.shape(images)[0], -1])
        means = tf.cast(tf.reduce_mean(pixels, axis=1), tf.float32)
        return {OUTPUT: base[None, :] + means[:, None]}

    model_def.pipeline.append(TensorflowStage(trivial))
    model_def.save(path)


# Servers ------------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    port: int
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None


def sides(ns: argparse.Namespace, tmp: Path, log: TextIO) -> list[Side]:
    floor = venv("floor", ns.venvs, log)
    stubs = str(floor.parent.parent / "stubs")
    floor_script = str(PEERS / "floor_server.py")
    out: list[Side] = []

    def add(name: str, make: Callable[[int], list[str]]) -> None:
        port = free_port()
        out.append(Side(name, port, make(port)))

    add(FLOOR_SYNC, lambda p: [str(floor), floor_script, stubs, str(p), "sync", str(ns.workers)])
    add(FLOOR_AIO, lambda p: [str(floor), floor_script, stubs, str(p), "aio"])
    kserve = venv("kserve", ns.venvs, log)
    add(KSERVE, lambda p: [str(kserve), str(PEERS / "kserve_server.py"), str(p), str(free_port())])
    if ns.mlserver:
        mlserver = venv("mlserver", ns.venvs, log)
        add(
            MLSERVER,
            lambda p: [str(mlserver), str(PEERS / "mlserver_server.py"), str(p), str(tmp / "mls")],
        )
    zip_path = tmp / "trivial.zip"
    fpga_serve_zip(zip_path, ns.stage)
    serve = [sys.executable, "-m", "fpga_serve.cli", "serve", str(zip_path), "--metrics-port", "0"]
    serve += ["--workers", str(ns.workers)]
    add(OURS, lambda p: [*serve, "--port", str(p)])
    add(OURS_OFF, lambda p: [*serve, "--port", str(p), "--batch-max-size", "1"])
    if ns.never_inline:
        off = ["--batch-max-size", "1", "--inline-max-us", "0"]
        add(OURS_THREADS, lambda p: [*serve, "--port", str(p), *off])
    return out


def wait_ready(side: Side, timeout: float = 180.0) -> None:
    """Until the server answers ModelReady for the model (or its process ends)."""
    import grpc
    from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
    from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc

    end = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{side.port}") as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < end:
            assert side.proc is not None
            if side.proc.poll() is not None:
                raise RuntimeError(f"{side.name} exited ({side.proc.returncode}); see the log")
            try:
                if stub.ModelReady(v2.ModelReadyRequest(name=MODEL), timeout=2).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"{side.name} not ready after {timeout:.0f} s")


# One window ---------------------------------------------------------------------------------


@dataclass
class Window:
    rate: float
    p50: float
    p99: float
    server_ms: float
    """CPU ms per request of the server process and its descendants."""
    client_ms: float
    others: float
    """Cores every other process used (the machine's busy time less the server, the client and
    this script), averaged over the window."""
    steal: float
    """Cores the hypervisor took for other guests."""
    load: float


class Client:
    """The load generator process (peers/client.py in its venv)."""

    def __init__(self, python: Path, log: TextIO) -> None:
        self.proc = subprocess.Popen(
            [str(python), str(PEERS / "client.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self.expect("ready")

    def expect(self, what: str) -> str:
        assert self.proc.stdout is not None
        got = self.proc.stdout.readline().strip()
        if what and got != what:
            raise RuntimeError(f"client said {got!r}, not {what!r} (its log has why)")
        return got

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def window(self, side: Side, inflight: int, ns: argparse.Namespace) -> Window:
        cmd = {"address": f"127.0.0.1:{side.port}", "inflight": inflight}
        self.send(json.dumps({**cmd, "seconds": ns.seconds, "requests": ns.requests}))
        self.expect("warm")
        before = procstat.snapshot()
        self.send("go")
        self.expect("done")
        after = procstat.snapshot()
        stats = json.loads(self.expect(""))
        if stats["max_error"] > 1e-3 or stats["errors"] or not stats["n"]:
            raise RuntimeError(f"{side.name}: wrong or failed answers: {stats}")
        assert side.proc is not None
        server = procstat.family(after, side.proc.pid)
        client = procstat.family(after, self.proc.pid)
        ours = server | client | {os.getpid()}
        n, seconds = stats["n"], after.at - before.at
        server_s = procstat.cpu_between(before, after, server)
        client_s = procstat.cpu_between(before, after, client)
        mine = procstat.cpu_between(before, after, {os.getpid()})
        others = after.busy - before.busy - server_s - client_s - mine
        NOISE.append(procstat.by_name(before, after, ours))
        return Window(
            rate=n / stats["elapsed"],
            p50=stats["p50"],
            p99=stats["p99"],
            server_ms=server_s / n * 1000,
            client_ms=client_s / n * 1000,
            others=max(0.0, others) / seconds,
            steal=(after.steal - before.steal) / seconds,
            load=after.load,
        )


NOISE: list[dict[str, float]] = []
"""Per window, the CPU seconds of every other process, by name."""


# Tables -------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def ratio_cell(values: list[float]) -> str:
    return f"{med(values):5.2f} {min(values):4.2f}-{max(values):<4.2f}"


def report(
    ns: argparse.Namespace, names: list[str], got: dict[tuple[str, int], list[Window]]
) -> None:
    levels = ns.level_list
    print(
        f"\nTrivial model (UINT8 {list(SHAPE)} -> FP32 [1,1000]); one tritonclient aio client; "
        f"{ns.rounds} interleaved rounds of {ns.seconds:g} s per server and level; medians over "
        f"rounds; {os.cpu_count()} cores"
    )
    print(
        f"{'in flight':>9}  {'server':<26} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>6} "
        f"{'server CPU ms/req':>17} {'client CPU ms/req':>17} | {'others cores':>12} "
        f"{'steal':>5} {'load':>9}"
    )
    for level in levels:
        for name in names:
            ws = got[(name, level)]
            loads = [w.load for w in ws]
            print(
                f"{level:>9}  {name:<26} {med([w.p50 for w in ws]):7.2f} "
                f"{med([w.p99 for w in ws]):7.2f} {med([w.rate for w in ws]):6.0f} "
                f"{med([w.server_ms for w in ws]):17.3f} {med([w.client_ms for w in ws]):17.3f} | "
                f"{med([w.others for w in ws]):12.2f} {med([w.steal for w in ws]):5.2f} "
                f"{min(loads):4.1f}-{max(loads):<4.1f}"
            )
    print(
        "server CPU: the server process and its descendants (user + system) over the window, per\n"
        "request; others cores: CPU every other process on the machine used meanwhile (median of\n"
        "windows); steal: cores the hypervisor gave other guests; load: 1-minute load average"
    )
    ours = [n for n in names if n.startswith("fpga-serve")]
    for base in (KSERVE, FLOOR_SYNC, FLOOR_AIO):
        print(f"\nRatios to {base}, paired by round (median, min-max over rounds)")
        print(f"{'in flight':>9}  {'server':<26} {'req/s':>15} {'p50':>15} {'server CPU/req':>15}")
        for level in levels:
            ref = got[(base, level)]
            for name in [n for n in names if n != base and (n in ours or base == KSERVE)]:
                ws = got[(name, level)]
                pairs = list(zip(ws, ref, strict=True))
                print(
                    f"{level:>9}  {name:<26} {ratio_cell([a.rate / b.rate for a, b in pairs]):>15} "
                    f"{ratio_cell([a.p50 / b.p50 for a, b in pairs]):>15} "
                    f"{ratio_cell([a.server_ms / b.server_ms for a, b in pairs]):>15}"
                )
    print("\nGoals (median paired ratios to KServe):")
    for name in [n for n in ours if n != OURS_THREADS]:
        checks = []
        for level in levels:
            pairs = list(zip(got[(name, level)], got[(KSERVE, level)], strict=True))
            rps = med([a.rate / b.rate for a, b in pairs])
            if level >= 8:
                checks.append((f"rps at {level} >= 1.0x", rps >= 1.0, rps))
            if level == 1:
                p50 = med([a.p50 / b.p50 for a, b in pairs])
                checks.append(("p50 at 1 <= 1.0x", p50 <= 1.0, p50))
            cpu = med([a.server_ms / b.server_ms for a, b in pairs])
            checks.append((f"CPU/req at {level} <= 1.0x", cpu <= 1.0, cpu))
        cells = ", ".join(
            f"{label}: {value:.2f} {'yes' if ok else 'NO'}" for label, ok, value in checks
        )
        print(f"  {name}: {cells}")
    totals: dict[str, float] = {}
    for window in NOISE:
        for proc, seconds in window.items():
            totals[proc] = totals.get(proc, 0.0) + seconds
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:6]
    span = len(NOISE) * ns.seconds
    print(
        "\nOther processes' CPU over all windows (core-seconds in ~"
        f"{span:.0f} s of windows): " + ", ".join(f"{k} {v:.1f}" for k, v in top)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one window")
    parser.add_argument("--requests", type=int, default=20000, help="most requests per window")
    parser.add_argument("--levels", default="1,8,32", help="requests in flight")
    parser.add_argument("--workers", type=int, default=8, help="gRPC threads (fpga-serve, floor)")
    parser.add_argument(
        "--stage",
        default="onnx",
        choices=["onnx", "tensorflow"],
        help="fpga-serve's stage kind for the model (onnx: ONNX Runtime, the cheapest call)",
    )
    parser.add_argument("--mlserver", action="store_true", help="add MLServer (slow: ~250 rps)")
    parser.add_argument(
        "--never-inline",
        action="store_true",
        help="add fpga-serve with every call on an RPC thread (what the event loop saves)",
    )
    parser.add_argument("--venvs", type=Path, default=ROOT / ".venv-peers")
    ns = parser.parse_args()
    ns.level_list = [int(v) for v in ns.levels.split(",")]
    ns.venvs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log_path = ns.venvs / "last-run.log"
        with open(log_path, "w") as log:
            run(ns, tmp, log)


def run(ns: argparse.Namespace, tmp: Path, log: TextIO) -> None:
    client = Client(venv("client", ns.venvs, log), log)
    all_sides = sides(ns, tmp, log)
    got: dict[tuple[str, int], list[Window]] = {}
    try:
        for side in all_sides:
            side.proc = subprocess.Popen(side.command, stdout=log, stderr=log, cwd=tmp)
        for side in all_sides:
            wait_ready(side)
        for r in range(ns.rounds):
            order = all_sides[r % len(all_sides) :] + all_sides[: r % len(all_sides)]
            for level in ns.level_list:
                for side in order:
                    got.setdefault((side.name, level), []).append(client.window(side, level, ns))
            print(f"round {r + 1}/{ns.rounds} done", file=sys.stderr, flush=True)
    finally:
        assert client.proc.stdin is not None
        client.proc.stdin.close()
        client.proc.wait(30)
        for side in all_sides:
            if side.proc is not None:
                side.proc.terminate()
        for side in all_sides:
            if side.proc is not None:
                try:
                    side.proc.wait(30)
                except subprocess.TimeoutExpired:
                    side.proc.kill()
    report(ns, [s.name for s in all_sides], got)


if __name__ == "__main__":
    main()
