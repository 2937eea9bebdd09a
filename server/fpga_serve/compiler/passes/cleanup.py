"""Remove inference-time no-ops."""

from __future__ import annotations

from fpga_serve.compiler.ir import Graph


def remove_identity(graph: Graph) -> tuple[Graph, bool]:
    """Dropout and other identities, linear activations, and a Flatten of a 1 x 1 map (after a
    global pool, where it only drops the spatial axes) disappear."""
    changed = False
    for node in graph:
        if node.op == "identity" or (
            node.op == "flatten" and graph.node(node.inputs[0]).shape[:2] == (1, 1)
        ):
            graph.remove(node.name)
            changed = True
    return graph, changed
