"""Graph passes. Contract (qonnx-style): ``apply(graph) -> (graph, changed)``; ``optimize`` runs
them to a fixed point. Each pass keeps the float function of the graph unchanged."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fpga_serve.compiler.ir import Graph, Node

Pass = Callable[[Graph], tuple[Graph, bool]]

_PADDED = ("conv", "maxpool", "avgpool")


def remove_identity(graph: Graph) -> tuple[Graph, bool]:
    """Dropout, linear activations, Flatten of a 1x1 map: gone."""
    changed = False
    for node in graph:
        if node.op == "identity":
            graph.remove(node.name)
            changed = True
    return graph, changed


def fold_pad(graph: Graph) -> tuple[Graph, bool]:
    """ZeroPadding2D followed by a conv or pool becomes that op's own (zero) padding."""
    changed = False
    for node in graph:
        if node.op != "pad":
            continue
        users = graph.consumers(node.name)
        if len(users) != 1 or users[0].op not in _PADDED or node.name == graph.output:
            continue
        user = users[0]
        if user.op == "maxpool" and any(user.attrs["pad"]) and user.attrs["pad_value"] != 0:
            continue  # -inf padding cannot merge with zero padding
        user.attrs["pad"] = tuple(
            a + b for a, b in zip(user.attrs["pad"], node.attrs["pad"], strict=True)
        )
        if user.op == "maxpool":
            user.attrs["pad_value"] = 0
        graph.remove(node.name)
        changed = True
    return graph, changed


def _bn_scale(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    p = bn.params
    scale = p["gamma"] / np.sqrt(p["var"] + bn.attrs["eps"])
    return scale.astype(np.float32), (p["beta"] - p["mean"] * scale).astype(np.float32)


def fold_batchnorm(graph: Graph) -> tuple[Graph, bool]:
    """conv -> batch norm: the norm folds into the conv's weights and bias."""
    changed = False
    for node in graph:
        if node.op != "bn":
            continue
        src = graph.node(node.inputs[0])
        if src.op != "conv" or len(graph.consumers(src.name)) != 1 or src.name == graph.output:
            continue
        scale, shift = _bn_scale(node)
        src.params["w"] = (src.params["w"] * scale).astype(np.float32)
        src.params["b"] = (src.params["b"] * scale + shift).astype(np.float32)
        graph.remove(node.name)
        changed = True
    return graph, changed


def batchnorm_to_scale_shift(graph: Graph) -> tuple[Graph, bool]:
    """A norm with no conv to fold into (DenseNet's pre-activation after a concat) becomes a
    per-channel scale-shift."""
    changed = False
    for node in graph:
        if node.op == "bn":
            scale, shift = _bn_scale(node)
            node.op = "scale_shift"
            node.params = {"scale": scale, "shift": shift}
            node.attrs = {}
            changed = True
    return graph, changed


def fuse_relu(graph: Graph) -> tuple[Graph, bool]:
    """A ReLU after a conv, add or scale-shift (its only consumer) becomes that op's flag."""
    changed = False
    for node in graph:
        if node.op != "relu":
            continue
        src = graph.node(node.inputs[0])
        if (
            src.op in ("conv", "add", "scale_shift")
            and not src.attrs.get("relu")
            and len(graph.consumers(src.name)) == 1
            and src.name != graph.output
        ):
            src.attrs["relu"] = True
            graph.remove(node.name)
            changed = True
    return graph, changed


def standalone_relu(graph: Graph) -> tuple[Graph, bool]:
    """A ReLU with nothing to fuse into becomes an identity scale-shift with ReLU."""
    changed = False
    for node in graph:
        if node.op == "relu":
            c = node.shape[2]
            node.op = "scale_shift"
            node.params = {"scale": np.ones(c, np.float32), "shift": np.zeros(c, np.float32)}
            node.attrs = {"relu": True}
            changed = True
    return graph, changed


PIPELINE: list[tuple[str, Pass]] = [
    ("remove_identity", remove_identity),
    ("fold_pad", fold_pad),
    ("fold_batchnorm", fold_batchnorm),
    ("fuse_relu", fuse_relu),
]
LATE: list[tuple[str, Pass]] = [
    ("batchnorm_to_scale_shift", batchnorm_to_scale_shift),
    ("fuse_relu", fuse_relu),
    ("standalone_relu", standalone_relu),
]


def optimize(graph: Graph) -> tuple[Graph, list[str]]:
    """Run the passes to a fixed point, then the late lowering passes; return what ran."""
    log = []
    for stage in (PIPELINE, LATE):
        changed = True
        while changed:
            changed = False
            for name, fn in stage:
                graph, did = fn(graph)
                if did:
                    log.append(name)
                    changed = True
    return graph, log
