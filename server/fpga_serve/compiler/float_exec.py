"""A float32 numpy interpreter of the IR: the "float" reference the passes are checked against,
and the engine of calibration (it shows every node's output to a callback).

Convolutions run as im2col GEMMs through BLAS; intermediate tensors are freed as soon as their
last consumer has run, so calibrating a 224x224 network on a batch stays within memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.core.errors import CompileError
from fpga_serve.core.windows import im2col, pad_hw, windows

Recorder = Callable[[str, np.ndarray], None]


def _relu(x: np.ndarray, node: Node) -> np.ndarray:
    return np.maximum(x, 0, out=x) if node.attrs.get("relu") else x


def _conv(x: np.ndarray, node: Node) -> np.ndarray:
    w, b = node.params["w"], node.params["b"]
    kh, kw, _, cout = w.shape
    cols, ho, wo = im2col(pad_hw(x, node.attrs["pad"], 0.0), kh, kw, node.attrs["stride"])
    out = cols @ w.reshape(-1, cout)
    out += b
    return _relu(out, node).reshape(x.shape[0], ho, wo, cout)


def _pool(x: np.ndarray, node: Node) -> np.ndarray:
    kh, kw = node.attrs["kernel"]
    fill = -np.inf if node.op == "maxpool" and node.attrs.get("pad_min") else 0.0
    win = windows(pad_hw(x, node.attrs["pad"], fill), kh, kw, node.attrs["stride"])
    if node.op == "maxpool":
        return np.asarray(win.max(axis=(4, 5)), np.float32)
    return np.asarray(win.mean(axis=(4, 5), dtype=np.float32), np.float32)


def _bn(x: np.ndarray, node: Node) -> np.ndarray:
    p = node.params
    scale = p["gamma"] / np.sqrt(p["var"] + np.float32(node.attrs["eps"]))
    return ((x - p["mean"]) * scale + p["beta"]).astype(np.float32)


def _eval(node: Node, args: list[np.ndarray]) -> np.ndarray:
    op = node.op
    if op == "conv":
        return _conv(args[0], node)
    if op == "dense":
        out = args[0] @ node.params["w"] + node.params["b"]
        return _relu(out.astype(np.float32), node)
    if op in ("maxpool", "avgpool"):
        return _pool(args[0], node)
    if op == "gap":
        return args[0].mean(axis=(1, 2), keepdims=True, dtype=np.float32)
    if op == "add":
        return _relu(args[0] + args[1], node)
    if op == "concat":
        return np.concatenate(args, axis=-1)
    if op == "scale_shift":
        return _relu((args[0] * node.params["scale"] + node.params["shift"]), node)
    if op == "bn":
        return _bn(args[0], node)
    if op == "relu":
        return np.maximum(args[0], 0)
    if op == "pad":
        return pad_hw(args[0], node.attrs["pad"], 0.0)
    if op == "flatten":
        return args[0].reshape(args[0].shape[0], 1, 1, -1)
    if op == "identity":
        return args[0]
    raise CompileError(f"float interpreter: unknown op {op!r} ({node.source or node.name})")


def run(graph: Graph, x: np.ndarray, record: Recorder | None = None) -> np.ndarray:
    """Evaluate the graph on a float batch [N, H, W, C]; ``record`` sees every node's output
    (it must not keep or modify the array)."""
    x = np.asarray(x, np.float32)
    expected = graph.node(graph.input).shape
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise CompileError(f"the graph takes [N, {', '.join(map(str, expected))}], got {x.shape}")
    last_use: dict[str, int] = {}
    order = list(graph)
    for index, node in enumerate(order):
        for i in node.inputs:
            last_use[i] = index
    values: dict[str, np.ndarray] = {}
    for index, node in enumerate(order):
        out = x if node.op == "input" else _eval(node, [values[i] for i in node.inputs])
        values[node.name] = out
        if record is not None:
            record(node.name, out)
        for i in set(node.inputs):
            if last_use[i] == index and i != graph.output:
                del values[i]
    return values[graph.output]
