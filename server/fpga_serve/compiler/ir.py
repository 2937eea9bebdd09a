"""A small float graph IR: what the Keras importer produces and the passes rewrite.

Ops: input, conv, bn, relu, pad, maxpool, avgpool, gap, add, concat, scale_shift, identity.
Tensors are NHWC; ``shape`` is the per-image (H, W, C) of a node's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fpga_serve.core.errors import CompileError


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    shape: tuple[int, int, int]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    """The Keras layer (and its type) this node came from, for messages."""


class Graph:
    """Nodes in topological order; one input, one output."""

    def __init__(self, nodes: list[Node], output: str) -> None:
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self.output = output
        inputs = [n.name for n in nodes if n.op == "input"]
        if len(inputs) != 1:
            raise CompileError(f"the featurizer must have exactly one input, found {len(inputs)}")
        self.input = inputs[0]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self.nodes.values()))

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if name in n.inputs]

    def replace_uses(self, old: str, new: str) -> None:
        for n in self.nodes.values():
            n.inputs = [new if i == old else i for i in n.inputs]
        if self.output == old:
            self.output = new

    def remove(self, name: str) -> None:
        """Remove a single-input node, rewiring its consumers to its input."""
        node = self.nodes.pop(name)
        self.replace_uses(name, node.inputs[0])

    def prune(self) -> None:
        """Drop nodes the output does not depend on."""
        needed = {self.output}
        for node in reversed(list(self.nodes.values())):
            if node.name in needed:
                needed.update(node.inputs)
        self.nodes = {k: v for k, v in self.nodes.items() if k in needed}

    def ops(self) -> list[str]:
        return [n.op for n in self.nodes.values()]
