"""Read-only analyses of an optimised graph: plain data, nothing is changed.

Counts are per image and for the overlay form (int8 weights, int32 bias and requantisation
constants), so they equal ``Program.macs`` / ``Program.weight_bytes`` of the lowered program.
"""

from __future__ import annotations

import math
from typing import Any

from fpga_serve.compiler.ir import Graph, Node

_INT32 = 4


def node_macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates (or compare / add steps for pools) of one node per image."""
    h, w, c = node.shape
    if node.op in ("input", "concat"):
        return 0  # concatenation is addressing: no work
    if node.op == "conv":
        kh, kw, cin, cout = node.params["w"].shape
        return h * w * kh * kw * cin * cout
    if node.op == "dense":
        cin, cout = node.params["w"].shape
        return h * w * cin * cout
    if node.op in ("maxpool", "avgpool"):
        kh, kw = node.attrs["kernel"]
        return h * w * c * kh * kw
    if node.op in ("gap", "flatten"):
        return math.prod(graph.node(node.inputs[0]).shape) if node.op == "gap" else 0
    return h * w * c


def node_weight_bytes(node: Node) -> int:
    """Bytes of constants the node needs on the overlay."""
    if node.op in ("conv", "dense"):
        cout = node.params["w"].shape[-1]
        return int(node.params["w"].size) + 3 * _INT32 * cout  # bias, multiplier, shift
    if node.op in ("avgpool", "gap"):
        return 2 * _INT32
    if node.op == "add":
        return 3 * _INT32
    if node.op in ("scale_shift", "bn"):
        return 2 * _INT32 * node.shape[2] + _INT32
    return 0


def summarize(graph: Graph) -> list[dict[str, Any]]:
    """One row per node: name, op, Keras source and fused layers, output shape, MACs, bytes."""
    return [
        {
            "name": n.name,
            "op": n.op,
            "source": n.source,
            "fused": list(n.fused),
            "shape": list(n.shape),
            "relu": bool(n.attrs.get("relu", False)),
            "macs": node_macs(graph, n),
            "weight_bytes": node_weight_bytes(n),
        }
        for n in graph
    ]


def totals(graph: Graph) -> dict[str, int]:
    """Whole-graph counts: nodes, MACs and weight bytes per image."""
    return {
        "nodes": len(graph),
        "macs": sum(node_macs(graph, n) for n in graph),
        "weight_bytes": sum(node_weight_bytes(n) for n in graph),
    }
