"""Per-image time of the twin (int8, bit-exact) against TensorFlow float32, side by side.

    python bench/bench_twin.py [--size 224] [--reps 5] [--models resnet50,densenet121,...]

Prints one table: median milliseconds per image at batch 1 for TensorFlow float32
(tf.function around model(x, training=False)), for the twin's native path (ONNX Runtime int8
GEMM + numba kernels, twin/native.py) and for its numpy path (float32 BLAS, twin/fast.py), the
native/TF ratio, and whether both paths equal the reference (the spec) on the same input at
--exact-size. The three are timed in turns, rep by rep, so machine noise hits all alike.
Random weights: speed does not depend on weight values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def median_ms(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    return interleaved_ms([fn], reps)[0]


def interleaved_ms(fns, reps: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Median ms of each function, timed in turns (a, b, c, a, b, c, ...) after a warm-up."""
    for fn in fns:
        fn()  # warm up (tracing, allocation, kernel compilation)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, bucket in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--exact-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models", default="resnet50,resnet152,densenet121,vgg16")
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
        tf_ms, native_ms, numpy_ms = interleaved_ms(
            [
                lambda f=forward, t=x: f(tf.constant(t)).numpy(),
                lambda p=native, t=q: p.run(t),
                lambda p=numpy_path, t=q: p.run(t),
            ],
            ns.reps,
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
        rows.append(
            (family, macs / 1e9, tf_ms, native_ms, numpy_ms, native_ms / tf_ms, exact, native.path)
        )
    print(f"\nbatch 1, {ns.size}x{ns.size}, median of {ns.reps}; {os.cpu_count()} cores")
    print(
        f"{'model':12} {'GMAC':>6} {'TF fp32 ms':>11} {'twin ms':>8} {'numpy-path ms':>14} "
        f"{'twin/TF':>8} {'exact @' + str(ns.exact_size):>10}"
    )
    for family, gmac, tf_ms, native_ms, numpy_ms, ratio, exact, path in rows:
        label = "" if path == "native" else f" (twin ran the {path} path)"
        print(
            f"{family:12} {gmac:6.2f} {tf_ms:11.1f} {native_ms:8.1f} {numpy_ms:14.1f} "
            f"{ratio:8.2f} {'yes' if exact else 'NO':>10}{label}"
        )


if __name__ == "__main__":
    main()
