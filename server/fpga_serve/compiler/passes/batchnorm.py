"""Batch normalisation at inference: an affine map per channel."""

from __future__ import annotations

import numpy as np

from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.compiler.passes._util import absorb, sole_consumer


def bn_affine(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) with bn(x) = x * scale + shift, per channel."""
    p = bn.params
    scale = p["gamma"] / np.sqrt(p["var"] + np.float32(bn.attrs["eps"]))
    return scale.astype(np.float32), (p["beta"] - p["mean"] * scale).astype(np.float32)


def fold_batchnorm(graph: Graph) -> tuple[Graph, bool]:
    """conv -> batch norm (the conv's only reader, no ReLU between): the norm scales the conv's
    output channels, so it folds into the weights and bias."""
    changed = False
    for node in graph:
        if node.op != "bn":
            continue
        src = graph.node(node.inputs[0])
        if src.op != "conv" or src.attrs.get("relu") or sole_consumer(graph, src) is not node:
            continue
        scale, shift = bn_affine(node)
        src.params["w"] = (src.params["w"] * scale).astype(np.float32)
        src.params["b"] = (src.params["b"] * scale + shift).astype(np.float32)
        absorb(graph, node, src)
        changed = True
    return graph, changed


def batchnorm_to_scale_shift(graph: Graph) -> tuple[Graph, bool]:
    """A norm with no convolution to fold into (DenseNet's pre-activation norm after a concat)
    becomes the overlay's per-channel scale-shift."""
    changed = False
    for node in graph:
        if node.op == "bn":
            scale, shift = bn_affine(node)
            node.op = "scale_shift"
            node.params = {"scale": scale, "shift": shift}
            node.attrs = {"relu": False}
            changed = True
    return graph, changed
