"""A small float graph IR: what the Keras importer produces and the passes rewrite.

Tensors are NHWC; a node's ``shape`` is the per-image (H, W, C) of its output (a vector is a
1 x 1 x C map). Ops, with their attributes (``attrs``) and float32 parameters (``params``):

=============  ===============================================  ==========================
op             attrs                                            params
=============  ===============================================  ==========================
input          -                                                -
conv           stride, pad (top, bottom, left, right), relu     w [kh, kw, cin, cout], b
dense          relu (applies to the last axis, any H x W)       w [cin, cout], b
bn             eps                                              gamma, beta, mean, var
scale_shift    relu (y = x * scale[c] + shift[c])               scale, shift
relu           -                                                -
pad            pad (zero padding)                               -
maxpool        kernel (kh, kw), stride, pad, pad_min            -
avgpool        kernel, stride, pad (padding counts in the mean) -
gap            - (global average pool)                          -
add            relu                                             -
concat         - (over channels)                                -
flatten        - (H x W x C -> 1 x 1 x HWC, row-major)          -
identity       -                                                -
=============  ===============================================  ==========================

``maxpool`` pads with zeros, or with -inf when ``pad_min`` (Keras 'same' max pooling).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fpga_serve.core.errors import CompileError

Shape = tuple[int, int, int]

OPS = (
    "input",
    "conv",
    "dense",
    "bn",
    "scale_shift",
    "relu",
    "pad",
    "maxpool",
    "avgpool",
    "gap",
    "add",
    "concat",
    "flatten",
    "identity",
)


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    shape: Shape
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    """The Keras layer (and its type) this node came from, for messages."""
    fused: list[str] = field(default_factory=list)
    """Keras layers that passes folded into this node (batch norms, ReLUs, paddings)."""


def _window_out(size: int, k: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - k) // stride + 1


def infer_shape(node: Node, inputs: list[Shape]) -> Shape:
    """The output shape ``node`` must have given its inputs' shapes; CompileError when the
    node cannot apply to them (the importer builds shapes with it, ``Graph.check`` re-derives
    them after every pass)."""
    op, a = node.op, node.attrs
    where = node.source or node.name
    arity = {"input": 0, "add": 2}.get(op, 1)
    if op != "concat" and len(inputs) != arity:
        raise CompileError(f"{where}: {op} takes {arity} inputs, got {len(inputs)}")
    if op == "input":
        return node.shape
    if op == "concat":
        if not inputs or len({s[:2] for s in inputs}) != 1:
            raise CompileError(f"{where}: concatenated maps differ in size: {inputs}")
        return (inputs[0][0], inputs[0][1], sum(s[2] for s in inputs))
    h, w, c = inputs[0]
    if op == "conv":
        kh, kw, cin, cout = node.params["w"].shape
        if cin != c:
            raise CompileError(f"{where}: weights expect {cin} channels, the input has {c}")
        t, b, left, r = a["pad"]
        ho, wo = _window_out(h, kh, a["stride"], t, b), _window_out(w, kw, a["stride"], left, r)
        if ho < 1 or wo < 1:
            raise CompileError(f"{where}: a {kh}x{kw} kernel does not fit a {h}x{w} map")
        return (ho, wo, cout)
    if op == "dense":
        cin, cout = node.params["w"].shape
        if cin != c:
            raise CompileError(f"{where}: weights expect {cin} features, the input has {c}")
        return (h, w, cout)
    if op in ("maxpool", "avgpool"):
        (kh, kw), s = a["kernel"], a["stride"]
        t, b, left, r = a["pad"]
        ho, wo = _window_out(h, kh, s, t, b), _window_out(w, kw, s, left, r)
        if ho < 1 or wo < 1:
            raise CompileError(f"{where}: a {kh}x{kw} window does not fit a {h}x{w} map")
        return (ho, wo, c)
    if op == "pad":
        t, b, left, r = a["pad"]
        return (h + t + b, w + left + r, c)
    if op == "gap":
        return (1, 1, c)
    if op == "flatten":
        return (1, 1, h * w * c)
    if op == "add":
        if inputs[0] != inputs[1]:
            raise CompileError(f"{where}: added tensors differ in shape: {inputs}")
        return inputs[0]
    if op in ("bn", "scale_shift", "relu", "identity"):
        return (h, w, c)
    raise CompileError(f"{where}: unknown op {op!r}")


class Graph:
    """Nodes in topological order; one input, one output."""

    def __init__(self, nodes: list[Node], output: str) -> None:
        self.nodes: dict[str, Node] = {}
        for n in nodes:
            if n.name in self.nodes:
                raise CompileError(f"two graph nodes are named {n.name!r}")
            self.nodes[n.name] = n
        if output not in self.nodes:
            raise CompileError(f"the graph output {output!r} is not a node")
        self.output = output
        inputs = [n.name for n in nodes if n.op == "input"]
        if len(inputs) != 1:
            raise CompileError(f"the featurizer must have exactly one input, found {len(inputs)}")
        self.input = inputs[0]

    def __iter__(self) -> Iterator[Node]:
        # A snapshot: passes remove nodes while they iterate.
        return iter(list(self.nodes.values()))

    def __len__(self) -> int:
        return len(self.nodes)

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

    def copy(self) -> Graph:
        """A deep copy (parameters included): passes rewrite graphs in place."""
        return copy.deepcopy(self)

    def check(self) -> None:
        """Every input defined before use, every shape what its inputs imply."""
        seen: set[str] = set()
        for node in self.nodes.values():
            if node.op not in OPS:
                raise CompileError(f"{node.source or node.name}: unknown op {node.op!r}")
            for i in node.inputs:
                if i not in seen:
                    raise CompileError(f"node {node.name!r} reads {i!r} before it is computed")
            shape = infer_shape(node, [self.nodes[i].shape for i in node.inputs])
            if shape != node.shape:
                raise CompileError(f"node {node.name!r} has shape {node.shape}, expected {shape}")
            seen.add(node.name)

    def to_json(self) -> dict[str, Any]:
        """The structure (no parameter values), for saved compile steps and debugging."""

        def plain(v: Any) -> Any:
            return list(v) if isinstance(v, tuple) else v

        return {
            "input": self.input,
            "output": self.output,
            "nodes": [
                {
                    "name": n.name,
                    "op": n.op,
                    "inputs": n.inputs,
                    "shape": list(n.shape),
                    "attrs": {k: plain(v) for k, v in n.attrs.items()},
                    "params": {k: list(v.shape) for k, v in n.params.items()},
                    "source": n.source,
                    "fused": n.fused,
                }
                for n in self.nodes.values()
            ],
        }
