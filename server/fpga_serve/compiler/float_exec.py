"""A float32 numpy interpreter of the IR: the "float" reference passes are checked against,
and the engine of calibration (it records every node's output)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.core.errors import CompileError


def _pad(x: np.ndarray, pad: tuple[int, int, int, int], value: float) -> np.ndarray:
    t, b, left, r = pad
    if not (t or b or left or r):
        return x
    return np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """[N, Ho, Wo, C, kh, kw] strided view (no copy)."""
    view = sliding_window_view(x, (kh, kw), axis=(1, 2))  # type: ignore[call-overload]
    return view[:, ::stride, ::stride]


def _conv(x: np.ndarray, node: Node) -> np.ndarray:
    w, b = node.params["w"], node.params["b"]
    kh, kw, _, cout = w.shape
    s = node.attrs["stride"]
    xp = _pad(x, node.attrs["pad"], 0.0)
    win = _windows(xp, kh, kw, s)
    n, ho, wo = win.shape[:3]
    cols = np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * ho * wo, -1)
    out = cols @ w.reshape(-1, cout) + b
    if node.attrs.get("relu"):
        np.maximum(out, 0, out=out)
    return out.reshape(n, ho, wo, cout).astype(np.float32)


def _pool(x: np.ndarray, node: Node) -> np.ndarray:
    kh, kw = node.attrs["kernel"]
    s = node.attrs["stride"]
    fill = -np.inf if node.op == "maxpool" and node.attrs.get("pad_value", 0) != 0 else 0.0
    win = _windows(_pad(x, node.attrs["pad"], fill), kh, kw, s)
    return (win.max(axis=(4, 5)) if node.op == "maxpool" else win.mean(axis=(4, 5))).astype(
        np.float32
    )


def _relu(x: np.ndarray, node: Node) -> np.ndarray:
    return np.maximum(x, 0) if node.attrs.get("relu") else x


def _bn(x: np.ndarray, node: Node) -> np.ndarray:
    p = node.params
    return (
        (x - p["mean"]) / np.sqrt(p["var"] + node.attrs["eps"]) * p["gamma"] + p["beta"]
    ).astype(np.float32)


def run(
    graph: Graph, x: np.ndarray, record: Callable[[str, np.ndarray], None] | None = None
) -> np.ndarray:
    """Evaluate the graph on a float batch [N, H, W, C]; ``record`` sees every node's output."""
    values: dict[str, np.ndarray] = {}
    for node in graph:
        args = [values[i] for i in node.inputs]
        op = node.op
        if op == "input":
            out = np.asarray(x, np.float32)
        elif op == "conv":
            out = _conv(args[0], node)
        elif op in ("maxpool", "avgpool"):
            out = _pool(args[0], node)
        elif op == "gap":
            out = args[0].mean(axis=(1, 2), keepdims=True)
        elif op == "add":
            out = _relu(args[0] + args[1], node)
        elif op == "concat":
            out = np.concatenate(args, axis=-1)
        elif op == "scale_shift":
            out = _relu(args[0] * node.params["scale"] + node.params["shift"], node)
        elif op == "bn":
            out = _bn(args[0], node)
        elif op == "relu":
            out = np.maximum(args[0], 0)
        elif op == "pad":
            out = _pad(args[0], node.attrs["pad"], 0.0)
        elif op == "identity":
            out = args[0]
        else:
            raise CompileError(f"float interpreter: unknown op {op!r} ({node.source})")
        values[node.name] = out
        if record is not None:
            record(node.name, out)
    return values[graph.output]
