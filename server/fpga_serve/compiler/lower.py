"""Quantisation and lowering: calibrated float IR -> overlay Program (int8, per-channel weights).

Scales: every tensor gets one symmetric scale, range / 127. Tensors joined by a concat share one
scale and live in slices of one buffer (concatenation by addressing); a max-pool's output keeps
its input's scale (it does not requantise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import Buffer, Instr, Opcode, Program, TensorRef, quantize_multiplier

INT32_MAX = 2**31 - 1


class _Groups:
    """Union-find over node names: members share one activation scale."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def assign_scales(graph: Graph, ranges: dict[str, float]) -> dict[str, float]:
    groups = _Groups()
    for node in graph:
        groups.find(node.name)
        if node.op in ("concat", "maxpool"):
            for i in node.inputs:
                groups.union(i, node.name)
    group_range: dict[str, float] = {}
    for node in graph:
        root = groups.find(node.name)
        group_range[root] = max(group_range.get(root, 0.0), ranges[node.name])
    return {n.name: max(group_range[groups.find(n.name)], 1e-6) / 127.0 for n in graph}


def assign_buffers(
    graph: Graph, scales: dict[str, float]
) -> tuple[list[Buffer], dict[str, TensorRef]]:
    buffers: list[Buffer] = []
    refs: dict[str, TensorRef] = {}

    def new_buffer(node: Node) -> TensorRef:
        h, w, c = node.shape
        buffers.append(Buffer(len(buffers), h, w, c, scales[node.name]))
        return TensorRef(len(buffers) - 1, 0, c)

    for node in reversed(list(graph)):
        if node.op != "concat":
            continue
        if node.name not in refs:
            refs[node.name] = new_buffer(node)
        base = refs[node.name]
        offset = base.offset
        for name in node.inputs:
            channels = graph.node(name).shape[2]
            ref = TensorRef(base.buffer, offset, channels)
            if name in refs and refs[name] != ref:
                raise CompileError(f"tensor {graph.node(name).source} feeds two concatenations")
            refs[name] = ref
            offset += channels
    for node in graph:
        if node.name not in refs:
            refs[node.name] = new_buffer(node)
    return buffers, refs


@dataclass
class _Emitter:
    weights: list[np.ndarray]

    def const(self, array: Any, dtype: str) -> int:
        self.weights.append(np.ascontiguousarray(array, dtype=dtype))
        return len(self.weights) - 1


def _shared_shift(reals: np.ndarray, extra: np.ndarray | None = None) -> int:
    """The largest shift S (1..62) with every |real| * 2^S (and |extra| * 2^S) below 2^31."""
    peak = float(np.max(np.abs(reals)))
    if extra is not None and extra.size:
        peak = max(peak, float(np.max(np.abs(extra))))
    if peak == 0:
        return 31
    exponent = math.frexp(peak)[1]  # peak < 2^exponent
    return int(min(62, max(1, 30 - exponent)))


def lower(graph: Graph, scales: dict[str, float]) -> tuple[Program, list[dict[str, Any]]]:
    """Emit the program and a per-node summary (for `fpga-serve inspect`)."""
    buffers, refs = assign_buffers(graph, scales)
    emit = _Emitter([])
    instrs: list[Instr] = []
    for node in graph:
        if node.op in ("input", "concat"):
            continue
        s_out = scales[node.name]
        ins = tuple(refs[i] for i in node.inputs)
        s_in = [scales[i] for i in node.inputs]
        relu = bool(node.attrs.get("relu"))
        common = {"inputs": ins, "output": refs[node.name], "name": node.name}
        if node.op == "conv":
            w, b = node.params["w"], node.params["b"]
            w_scale = np.abs(w).max(axis=(0, 1, 2)) / 127.0
            w_scale[w_scale == 0] = 1.0
            wq = np.clip(np.rint(w / w_scale), -127, 127).astype(np.int8)
            bq = np.clip(np.rint(b / (s_in[0] * w_scale)), -INT32_MAX, INT32_MAX).astype(np.int32)
            pairs = [quantize_multiplier(float(s_in[0] * ws / s_out)) for ws in w_scale]
            instr = Instr(
                Opcode.CONV,
                kernel=(w.shape[0], w.shape[1]),
                stride=node.attrs["stride"],
                pad=tuple(node.attrs["pad"]),
                relu=relu,
                weight=emit.const(wq, "int8"),
                bias=emit.const(bq, "int32"),
                multiplier=emit.const([m for m, _ in pairs], "int32"),
                shift=emit.const([s for _, s in pairs], "int32"),
                **common,
            )
        elif node.op in ("maxpool", "avgpool"):
            if node.op == "maxpool":
                instr = Instr(
                    Opcode.MAXPOOL,
                    kernel=node.attrs["kernel"],
                    stride=node.attrs["stride"],
                    pad=tuple(node.attrs["pad"]),
                    pad_value=int(node.attrs["pad_value"]),
                    **common,
                )
            else:
                kh, kw = node.attrs["kernel"]
                m, s = quantize_multiplier(s_in[0] / (s_out * kh * kw))
                instr = Instr(
                    Opcode.AVGPOOL,
                    kernel=(kh, kw),
                    stride=node.attrs["stride"],
                    pad=tuple(node.attrs["pad"]),
                    multiplier=emit.const([m], "int32"),
                    shift=emit.const([s], "int32"),
                    **common,
                )
        elif node.op == "gap":
            src = graph.node(node.inputs[0])
            m, s = quantize_multiplier(s_in[0] / (s_out * src.shape[0] * src.shape[1]))
            instr = Instr(
                Opcode.GLOBAL_AVGPOOL,
                multiplier=emit.const([m], "int32"),
                shift=emit.const([s], "int32"),
                **common,
            )
        elif node.op == "add":
            reals = np.array([s_in[0] / s_out, s_in[1] / s_out])
            shift = _shared_shift(reals)
            mults = np.rint(reals * 2.0**shift)
            instr = Instr(
                Opcode.ADD,
                relu=relu,
                multiplier=emit.const(mults, "int32"),
                shift=emit.const([shift], "int32"),
                **common,
            )
        elif node.op == "scale_shift":
            reals = node.params["scale"] * s_in[0] / s_out
            offsets = node.params["shift"] / s_out
            shift = _shared_shift(reals, offsets)
            instr = Instr(
                Opcode.SCALE_SHIFT,
                relu=relu,
                multiplier=emit.const(np.rint(reals * 2.0**shift), "int32"),
                bias=emit.const(np.rint(offsets * 2.0**shift), "int32"),
                shift=emit.const([shift], "int32"),
                **common,
            )
        else:
            raise CompileError(f"cannot lower {node.op!r} ({node.source})")
        instrs.append(instr)
    program = Program(buffers, instrs, refs[graph.input], refs[graph.output], emit.weights)
    summary = []
    by_name = {i.name: i for i in instrs}
    for node in graph:
        found = by_name.get(node.name)
        summary.append(
            {
                "name": node.name,
                "op": node.op,
                "source": node.source,
                "shape": list(node.shape),
                "scale": scales[node.name],
                "macs": program.macs(found) if found else 0,
                "weight_bytes": program.weight_bytes(found) if found else 0,
            }
        )
    return program, summary
