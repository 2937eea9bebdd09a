"""Per-image time of the twin (int8, bit-exact) against TensorFlow float32, side by side.

    python bench/bench_twin.py [--size 224] [--reps 5] [--models resnet50,densenet121,...]

Prints one table: median milliseconds per image at batch 1 for TensorFlow float32
(tf.function around model(x, training=False)) and for the twin's fast path, their ratio, and
whether the fast path equals the reference (the spec) on the same input at --exact-size.
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
    fn()  # warm up (tracing, allocation)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


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
        tf_ms = median_ms(lambda f=forward, t=x: f(tf.constant(t)).numpy(), ns.reps)
        loaded = TwinDevice().load(compiled.program)
        q = quantize_input(x, compiled.program.input_scale)
        twin_ms = median_ms(lambda p=loaded, t=q: p.run(t), ns.reps)
        small = ZOO[family](None, input_size=ns.exact_size)
        small_prog = small.compile(calib[:, : ns.exact_size, : ns.exact_size]).compiled.program
        xq = quantize_input(x[:, : ns.exact_size, : ns.exact_size], small_prog.input_scale)
        exact = np.array_equal(
            TwinDevice().load(small_prog).run(xq),
            TwinDevice(reference=True).load(small_prog).run(xq),
        )
        macs = sum(compiled.program.macs(i) for i in compiled.program.instrs)
        rows.append((family, macs / 1e9, tf_ms, twin_ms, twin_ms / tf_ms, exact))
    print(f"\nbatch 1, {ns.size}x{ns.size}, median of {ns.reps}; {os.cpu_count()} cores")
    print(
        f"{'model':12} {'GMAC':>6} {'TF fp32 ms':>11} {'twin int8 ms':>13} {'twin/TF':>8} "
        f"{'exact @' + str(ns.exact_size):>10}"
    )
    for family, gmac, tf_ms, twin_ms, ratio, exact in rows:
        print(
            f"{family:12} {gmac:6.2f} {tf_ms:11.1f} {twin_ms:13.1f} {ratio:8.2f} "
            f"{'yes' if exact else 'NO':>10}"
        )


if __name__ == "__main__":
    main()
