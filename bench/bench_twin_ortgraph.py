"""One CONV layer of the twin as a single ONNX Runtime graph of integer ops, against the twin's
native path for the same layer (issue 13, item 4: "the whole program as one ONNX Runtime graph"):

    python bench/bench_twin_ortgraph.py [--reps 100]

The graph: MatMulInteger (u8 x s8, zero point 128, as hw/twin/gemm.py), then the spec's
requantisation in exact int64 ops: Add (bias, int32), Cast to int64, Mul (M), Add (2^(S-1)),
Max/Min to +-130 * 2^S (beyond that the result saturates anyway), Add 130 * 2^S so the value is
non-negative and int64 Div (which truncates) floors, Sub to the offset byte, Max/Min to the
ReLU range, Cast to uint8 (ONNX's BitShift is unsigned only). The native path: Int8Gemm bound
to kept arrays, then kernels.requant (one numba pass). Prints, per layer shape, the median and
fastest ms of each (timed in turns) and whether the two outputs are equal; both share the twin's
ONNX Runtime pool.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

SHAPES = [(3136, 64, 256), (784, 1152, 128), (49, 4608, 512)]  # ResNet-50 224 layers: M, K, N


def integer_graph(weight, bias, mult, shift):  # type: ignore[no-untyped-def]
    """uint8 [M, K] -> offset bytes [M, N]: the layer with ReLU, all in ONNX integer ops."""
    import onnxruntime as ort
    from fpga_serve.hw.twin.gemm import _session_options
    from onnx import TensorProto, helper, numpy_helper

    k, n = weight.shape
    lim = np.int64(130) << shift
    consts = {
        "w": weight, "zp": np.array(128, np.uint8), "bias": bias, "m": mult.astype(np.int64),
        "half": np.int64(1) << (shift - 1), "lo": -lim, "hi": lim, "off": lim,
        "den": np.int64(1) << shift, "sub": np.int64(2), "q0": np.int64(128), "q1": np.int64(255),
    }  # fmt: skip
    steps = [
        ("MatMulInteger", ["a", "w", "zp"], {}), ("Add", ["bias"], {}),
        ("Cast", [], {"to": TensorProto.INT64}), ("Mul", ["m"], {}), ("Add", ["half"], {}),
        ("Max", ["lo"], {}), ("Min", ["hi"], {}), ("Add", ["off"], {}), ("Div", ["den"], {}),
        ("Sub", ["sub"], {}), ("Max", ["q0"], {}), ("Min", ["q1"], {}),
        ("Cast", [], {"to": TensorProto.UINT8}),
    ]  # fmt: skip
    nodes, prev = [], None
    for i, (op, extra, attrs) in enumerate(steps):
        out = "y" if i == len(steps) - 1 else f"t{i}"
        ins = extra if prev is None else [prev, *extra]
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        prev = out
    graph = helper.make_graph(
        nodes,
        "conv_requant",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [None, n])],
        [numpy_helper.from_array(v, name) for name, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(
        model.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"]
    )
    return lambda cols: session.run(["y"], {"a": cols})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=100)
    ns = parser.parse_args()
    from fpga_serve.hw.twin import kernels
    from fpga_serve.hw.twin.gemm import Int8Gemm

    rng = np.random.default_rng(0)
    print(f"{'M x K x N':18} {'ORT graph ms':>13} {'native ms':>10} {'ratio':>6} {'equal':>6}")
    for m, k, n in SHAPES:
        weight = rng.integers(-127, 128, (k, n), dtype=np.int8)
        cols = rng.integers(0, 256, (m, k), dtype=np.uint8)
        bias = rng.integers(-5000, 5000, n).astype(np.int32)
        mult = rng.integers(2**29, 2**30, n).astype(np.int32)
        shift = rng.integers(34, 40, n).astype(np.int64)
        half = np.int64(1) << (shift - 1)
        acc, out = np.empty((m, n), np.int32), np.empty((m, n), np.uint8)
        multiply = Int8Gemm(weight).bind(cols, acc)
        graph = integer_graph(weight, bias, mult, shift)

        def native() -> None:
            multiply()  # noqa: B023
            kernels.requant(acc, bias, mult, half, shift, 0, out, 0, 0, m)  # noqa: B023

        native()
        equal = np.array_equal(graph(cols), out)
        times: list[list[float]] = [[], []]
        for _ in range(ns.reps):
            for fn, bucket in zip((lambda: graph(cols), native), times, strict=True):  # noqa: B023
                start = time.perf_counter()
                fn()
                bucket.append((time.perf_counter() - start) * 1000)
        g, t = (statistics.median(b) for b in times)
        same = "yes" if equal else "NO"
        print(f"{f'{m} x {k} x {n}':18} {g:13.3f} {t:10.3f} {g / t:6.1f} {same:>6}")
    print(f"median of {ns.reps}, timed in turns; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
