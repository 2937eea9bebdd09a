"""Helpers shared by the passes."""

from __future__ import annotations

from fpga_serve.compiler.ir import Graph, Node


def absorb(graph: Graph, gone: Node, into: Node) -> None:
    """Remove single-input ``gone``; ``into`` now computes it and remembers its Keras layer."""
    if gone.source and gone.source not in into.fused and gone.source != into.source:
        into.fused.append(gone.source)
    into.fused.extend(f for f in gone.fused if f not in into.fused)
    graph.remove(gone.name)


def sole_consumer(graph: Graph, node: Node) -> Node | None:
    """The one node reading ``node``'s output, when there is exactly one and the output is not
    also the graph's result (folding into it would change what the graph returns)."""
    users = graph.consumers(node.name)
    if len(users) != 1 or node.name == graph.output:
        return None
    return users[0]
