"""Per-image time of the twin (int8, bit-exact) against what a user without a board would run
instead: TensorFlow float32, ONNX Runtime float32 and ONNX Runtime int8, side by side.

    python bench/bench_twin.py [--size 224] [--reps 5] [--models resnet50,densenet121,...]
                               [--kinds]

Prints one table: median milliseconds per image at batch 1 for TensorFlow float32
(tf.function around model(x, training=False)); ONNX Runtime float32 (the same Keras network
converted by tf2onnx, opset 17, ONNX Runtime's default optimisations); ONNX Runtime int8 (that
ONNX model quantised statically by onnxruntime.quantization: QDQ format, per-channel int8
weights, uint8 activations, calibrated on the images the twin's program was calibrated on); the
twin's native path (ONNX Runtime int8 GEMM + numba kernels, twin/native.py) and its numpy path
(float32 BLAS, twin/numpy_path.py); the twin's ratios to TF and to ONNX Runtime int8; and whether
both twin paths equal the reference (the spec) on the same input at --exact-size, and the
load average (1 minute) when the model's row was done; then, for ONNX Runtime int8 and the twin,
the median process CPU time per image (all threads: less sensitive than wall time to other
processes on a shared machine, but it counts any thread still spinning from the call before,
e.g. the shared pool's workers, against the next call). All five are
timed in turns, rep by rep, so machine noise hits all alike; ONNX Runtime and the twin share
one process-wide intra-op pool of one thread per core (the twin's, hw/twin/gemm.py). Random
weights: speed does not depend on weight values.

With --forms, a table per model of the native path in each CONV form this CPU runs exactly
(the AMX and VNNI kernels, the VNNI kernel alone, the int8 GEMM, and its plain form where the
CPU would use it: native.AMX, VNNI, PLAIN_GEMM), timed in turns with ONNX Runtime int8 again,
each form's output compared with the reference's at --exact-size.

With --kinds, a second table per model: the twin's native-path steps grouped by kind (opcode;
for a CONV its kernel, stride and whether it has a fused ADD), the number of steps and the sum of
each step's median time over --reps runs of the native plan (timed after the table above, one
run after another), with each kind's share of the sum.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def median_ms(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    return interleaved_ms([fn], reps)[0]


SETTLE_S = 0.1
"""The pause before each timed call: ONNX Runtime's pools and the twin's OpenMP team spin after
a call before they sleep, and a spinning thread from the call before takes a core from the next
peer (in turns without it, ResNet-50's twin on the VNNI kernel took 20-25 ms against 7-8 alone,
and ONNX Runtime int8 8.3-8.9 against ~7): each call starts on a quiet machine, as a request at
1 in flight does. On the Zen 4 VM the process used 8-13 ms of CPU in each 10 ms for 45-50 ms
after an ONNX Runtime int8 call, and ~9 ms in the first 10 ms after the twin's, then nothing
(process CPU time sampled every 10 ms, twice each): 0.05 s, the value before, let the next call
start inside ONNX Runtime's spin."""


def interleaved_ms(fns, reps: int, cpu: list[float] | None = None) -> list[float]:  # type: ignore[no-untyped-def]
    """Median ms of each function, timed in turns (a, b, c, a, b, c, ...) after a warm-up, each
    call SETTLE_S after the one before; ``cpu``, when given, receives each one's median process
    CPU ms per call (all threads, the spinning after the call included)."""
    for fn in fns:
        fn()  # warm up (tracing, allocation, kernel compilation)
    times: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, bucket, cpu_bucket in zip(fns, times, cpus, strict=True):
            time.sleep(SETTLE_S)
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            bucket.append((time.perf_counter() - start) * 1000)
            cpu_bucket.append((time.process_time() - cpu_start) * 1000)
    if cpu is not None:
        cpu[:] = [statistics.median(c) for c in cpus]
    return [statistics.median(t) for t in times]


def kind(instr) -> str:  # type: ignore[no-untyped-def]
    """A step's kind for --kinds: the opcode; a CONV with kernel, stride and a fused ADD."""
    name = str(instr.op.name)
    if name == "CONV":
        kh, kw = instr.kernel
        name += f" {kh}x{kw}/{instr.stride}" + (" +ADD" if instr.residual is not None else "")
    return name


def step_kinds(plan, x: np.ndarray, reps: int) -> list[tuple[str, int, float]]:  # type: ignore[no-untyped-def]
    """(kind, steps, sum of the steps' median ms) of a NativePlan over ``reps`` runs of x,
    largest first."""
    times: list[list[float]] = [[] for _ in plan.program.instrs]
    for _ in range(reps):
        done: list[float] = []
        plan.run(x, lambda _instr, seconds: done.append(seconds * 1000))  # noqa: B023
        for bucket, ms in zip(times, done, strict=True):
            bucket.append(ms)
    kinds: dict[str, list[float]] = collections.defaultdict(list)
    for instr, ms in zip(plan.program.instrs, times, strict=True):
        kinds[kind(instr)].append(statistics.median(ms))
    return sorted(((k, len(v), sum(v)) for k, v in kinds.items()), key=lambda r: -r[2])


def export_onnx(folder: Path) -> None:
    """In its own process (see onnx_peers): folder/model.keras -> fp32.onnx (tf2onnx) ->
    int8.onnx (static QDQ, per-channel), calibrated on folder/calib.npy."""
    import keras
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = keras.saving.load_model(folder / "model.keras", compile=False)
    calib = np.load(folder / "calib.npy")
    spec = [tf.TensorSpec([None, *calib.shape[1:]], tf.float32, name="x")]
    forward = tf.function(lambda t: model(t, training=False))
    fp32, pre = folder / "fp32.onnx", folder / "pre.onnx"
    tf2onnx.convert.from_function(forward, input_signature=spec, opset=17, output_path=str(fp32))
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # (no sympy)

    class Images(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items = iter([{"x": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.items, None)

    quantize_static(
        str(pre),
        str(folder / "int8.onnx"),
        Images(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def onnx_peers(model, calib: np.ndarray, folder: Path):  # type: ignore[no-untyped-def]
    """ONNX Runtime sessions for ``model`` in float32 and in static QDQ int8 (per channel).

    The conversion and calibration run in a child process: ONNX Runtime's calibration makes
    sessions with pools of their own, which a process whose twin already made the process-wide
    pool refuses. The sessions timed here share that pool."""
    import onnxruntime as ort

    model.save(folder / "model.keras")
    np.save(folder / "calib.npy", calib)
    subprocess.run([sys.executable, __file__, "--export", str(folder)], check=True)
    options = ort.SessionOptions()
    options.use_per_session_threads = False
    return [
        ort.InferenceSession(str(folder / name), options, providers=["CPUExecutionProvider"])
        for name in ("fp32.onnx", "int8.onnx")
    ]


def conv_forms() -> list[tuple[str, dict[str, bool]]]:
    """The CONV forms this CPU runs exactly, as native's switches (most specialised first)."""
    from fpga_serve.hw.twin import amx, gemm, vnni

    forms: list[tuple[str, dict[str, bool]]] = []
    if amx.available():
        forms.append(("AMX + VNNI kernels", {"VNNI": True, "AMX": True}))
    if vnni.available():
        forms.append(("VNNI kernel", {"VNNI": True, "AMX": False}))
    forms.append(("int8 GEMM", {"VNNI": False, "PLAIN_GEMM": False}))
    if gemm.plain_form() is not None:
        forms.append(("int8 GEMM, plain form", {"VNNI": False, "PLAIN_GEMM": True}))
    return forms


def load_in(settings: dict[str, bool], program):  # type: ignore[no-untyped-def]
    """program loaded on the twin's native path with native's switches set (plans read them
    when they are built), the switches put back after."""
    from fpga_serve.hw.twin import native
    from fpga_serve.hw.twin.device import TwinDevice

    before = {name: getattr(native, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(native, name, value)
        return TwinDevice().load(program)
    finally:
        for name, value in before.items():
            setattr(native, name, value)


def form_rows(program, small_prog, q, xq, spec, ort_int8, x, reps):  # type: ignore[no-untyped-def]
    """(form, ms, ms / ONNX Runtime int8's, exact) for each of conv_forms, in turns."""
    forms = conv_forms()
    plans = [load_in(settings, program) for _, settings in forms]
    fns = [lambda p=plan: p.run(q) for plan in plans]
    *ms, int8_ms = interleaved_ms([*fns, lambda: ort_int8.run(None, {"x": x})], reps)
    exact = [np.array_equal(load_in(s, small_prog).run(xq), spec) for _, s in forms]
    return [(name, t, t / int8_ms, ok) for (name, _), t, ok in zip(forms, ms, exact, strict=True)]


def native_forms() -> str:
    """Which exact forms the twin's native path chose on this CPU (twin/gemm.py, kernels.py)."""
    from fpga_serve.hw.twin import gemm, native

    if not native.available():
        return "twin native path: not available here (numpy path)"
    if native.fused_amx():
        return (
            "twin native path: CONVs on AMX tiles where they fit (stride 1 or 1x1, Cin >= 64), "
            "the rest as the fused VNNI kernel; int64 requantisation in registers"
        )
    if native.fused_vnni():
        return "twin native path: CONVs as the fused VNNI kernel (GEMM and int64 requantisation)"
    requant = "float64 where exact" if native.float_requant() else "int64"
    plain = f" ({gemm.PLAIN} on inputs proven >= 0)" if native.plain_gemm() else ""
    return f"twin native path: int8 GEMM form {gemm.exact_form()}{plain}; requantisation {requant}"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--export":
        export_onnx(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--exact-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models", default="resnet50,resnet152,densenet121,vgg16")
    parser.add_argument("--kinds", action="store_true", help="the twin's time by step kind")
    parser.add_argument("--forms", action="store_true", help="the twin in each CONV form")
    ns = parser.parse_args()

    import tensorflow as tf
    from fpga_serve.core.isa import quantize_input
    from fpga_serve.hw.twin.device import TwinDevice
    from fpga_serve.models import ZOO

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    rows = []
    for family in ns.models.split(","):
        zoo = ZOO[family](None, input_size=ns.size)
        calib = rng.normal(0, 50, (2, ns.size, ns.size, 3)).astype(np.float32)
        compiled = zoo.compile(calib).compiled
        x = rng.normal(0, 50, (1, ns.size, ns.size, 3)).astype(np.float32)
        forward = tf.function(lambda t, m=zoo.model: m(t, training=False))
        native = TwinDevice().load(compiled.program)
        numpy_path = TwinDevice(native=False).load(compiled.program)
        q = quantize_input(x, compiled.program.input_scale)
        native.run(q)  # the twin's GEMM sessions and their process-wide pool exist from here
        with tempfile.TemporaryDirectory() as tmp:
            ort_fp32, ort_int8 = onnx_peers(zoo.model, calib, Path(tmp))
        cpu: list[float] = []
        tf_ms, fp32_ms, int8_ms, native_ms, numpy_ms = interleaved_ms(
            [
                lambda f=forward, t=x: f(tf.constant(t)).numpy(),
                lambda s=ort_fp32, t=x: s.run(None, {"x": t}),
                lambda s=ort_int8, t=x: s.run(None, {"x": t}),
                lambda p=native, t=q: p.run(t),
                lambda p=numpy_path, t=q: p.run(t),
            ],
            ns.reps,
            cpu,
        )
        small = ZOO[family](None, input_size=ns.exact_size)
        small_prog = small.compile(calib[:, : ns.exact_size, : ns.exact_size]).compiled.program
        xq = quantize_input(x[:, : ns.exact_size, : ns.exact_size], small_prog.input_scale)
        spec = TwinDevice(reference=True).load(small_prog).run(xq)
        exact = all(
            np.array_equal(TwinDevice(native=flag).load(small_prog).run(xq), spec)
            for flag in (None, False)
        )
        macs = sum(compiled.program.macs(i) for i in compiled.program.instrs)
        times = (tf_ms, fp32_ms, int8_ms, native_ms, numpy_ms)
        at = os.getloadavg()[0]
        kinds = step_kinds(native.plan, q, ns.reps) if ns.kinds and native.plan else []
        forms = (
            form_rows(compiled.program, small_prog, q, xq, spec, ort_int8, x, ns.reps)
            if ns.forms
            else []
        )
        rows.append(
            (family, macs / 1e9, times, (cpu[2], cpu[3]), exact, native.path, at, kinds, forms)
        )
    load = os.getloadavg()[0]
    print(
        f"\nbatch 1, {ns.size}x{ns.size}, median of {ns.reps}; {os.cpu_count()} cores; "
        f"load average at the end {load:.1f}"
    )
    print(native_forms())
    print(
        f"{'model':12} {'GMAC':>6} {'TF fp32 ms':>11} {'ORT fp32 ms':>12} {'ORT int8 ms':>12} "
        f"{'twin ms':>8} {'numpy-path ms':>14} {'twin/TF':>8} {'twin/ORT int8':>14} "
        f"{'exact @' + str(ns.exact_size):>10} {'load':>5}  |  {'CPU ms: ORT int8':>16} "
        f"{'twin':>6} {'twin/ORT int8':>14}"
    )
    for family, gmac, walls, (int8_cpu, twin_cpu), exact, path, at, *_ in rows:
        tf_ms, fp32_ms, int8_ms, native_ms, numpy_ms = walls
        label = "" if path == "native" else f" (twin ran the {path} path)"
        print(
            f"{family:12} {gmac:6.2f} {tf_ms:11.1f} {fp32_ms:12.1f} {int8_ms:12.1f} "
            f"{native_ms:8.1f} {numpy_ms:14.1f} {native_ms / tf_ms:8.2f} "
            f"{native_ms / int8_ms:14.2f} {'yes' if exact else 'NO':>10} {at:5.1f}  |  "
            f"{int8_cpu:16.1f} {twin_cpu:6.1f} {twin_cpu / int8_cpu:14.2f}{label}"
        )

    for family, *_, forms in rows:
        if not forms:
            continue
        print(f"\n{family}: the twin's native path in each CONV form, in turns with ORT int8")
        print(f"{'form':24} {'ms':>7} {'/ORT int8':>10} {'exact':>6}")
        for name, ms, ratio, ok in forms:
            print(f"{name:24} {ms:7.1f} {ratio:10.2f} {'yes' if ok else 'NO':>6}")

    for family, *_, kinds, _ in rows:
        if not kinds:
            continue
        total = sum(ms for _, _, ms in kinds)
        print(f"\n{family}: twin native steps by kind, sum of per-step medians ({total:.2f} ms)")
        print(f"{'kind':18} {'steps':>5} {'ms':>7} {'share':>6}")
        for name, count, ms in kinds:
            print(f"{name:18} {count:5d} {ms:7.3f} {ms / total:6.1%}")


if __name__ == "__main__":
    main()
