"""Explicit padding layers into the padding of the ops that read them."""

from __future__ import annotations

from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.compiler.passes._util import absorb

_PADDED = ("conv", "maxpool", "avgpool")


def _accepts_zero_padding(node: Node) -> bool:
    if node.op not in _PADDED:
        return False
    # A 'same' max pool pads with -inf; zeros cannot join that padding.
    return not (node.op == "maxpool" and node.attrs.get("pad_min") and any(node.attrs["pad"]))


def fold_pad(graph: Graph) -> tuple[Graph, bool]:
    """ZeroPadding2D read only by convolutions and pools becomes those ops' own zero padding
    (an average pool counts padded zeros in its mean, as after an explicit padding layer)."""
    changed = False
    for node in graph:
        if node.op != "pad" or node.name == graph.output:
            continue
        users = graph.consumers(node.name)
        if not users or not all(_accepts_zero_padding(u) for u in users):
            continue
        for user in users:
            user.attrs["pad"] = tuple(
                a + b for a, b in zip(user.attrs["pad"], node.attrs["pad"], strict=True)
            )
            if user.op == "maxpool":
                user.attrs["pad_min"] = False
        for user in users[1:]:
            user.fused.append(node.source)
        absorb(graph, node, users[0])
        changed = True
    return graph, changed
