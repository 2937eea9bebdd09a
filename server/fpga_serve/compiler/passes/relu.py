"""ReLU fusion: the overlay applies ReLU after requantising, as a flag on the producing op."""

from __future__ import annotations

import numpy as np

from fpga_serve.compiler.ir import Graph
from fpga_serve.compiler.passes._util import absorb, sole_consumer

_FUSES_RELU = ("conv", "add", "scale_shift")


def fuse_relu(graph: Graph) -> tuple[Graph, bool]:
    """A ReLU after a conv, add or scale-shift that nothing else reads becomes that op's flag."""
    changed = False
    for node in graph:
        if node.op != "relu":
            continue
        src = graph.node(node.inputs[0])
        if src.op in _FUSES_RELU and sole_consumer(graph, src) is node:
            src.attrs["relu"] = True  # relu(relu(x)) == relu(x): a flag already set stays
            absorb(graph, node, src)
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
