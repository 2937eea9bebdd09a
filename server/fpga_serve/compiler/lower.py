"""Lowering: an optimised, calibrated float graph -> the overlay Program.

Every node but the input and concatenations becomes one instruction. A concatenation is
addressing: the tensors it joins are written into channel slices of its output buffer (they
share its scale, see calibration.py), so it costs nothing at run time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fpga_serve.compiler.analysis import summarize
from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.compiler.quantize import (
    fixed_point,
    quantize_conv,
    requant_pair,
    shared_shift,
)
from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import Buffer, Instr, Opcode, Program, TensorRef

# Descriptor fields (overlay spec "descriptor"): sizes packed as H, W, C in 10, 10, 12 bits;
# kernel, stride and padding in one byte each.
MAX_HW, MAX_CHANNELS, MAX_BYTE = (1 << 10) - 1, (1 << 12) - 1, 255


def assign_buffers(
    graph: Graph, scales: dict[str, float]
) -> tuple[list[Buffer], dict[str, TensorRef]]:
    """A buffer per tensor, except that the inputs of a concatenation are slices of its buffer
    (a concatenation feeding another becomes a slice of that one's)."""
    buffers: list[Buffer] = []
    refs: dict[str, TensorRef] = {}

    def new_buffer(node: Node) -> TensorRef:
        h, w, c = node.shape
        if h > MAX_HW or w > MAX_HW or c > MAX_CHANNELS:
            raise CompileError(
                f"{node.source or node.name}: a {h}x{w}x{c} tensor exceeds the overlay's limits "
                f"({MAX_HW}x{MAX_HW}x{MAX_CHANNELS})"
            )
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
            ref = TensorRef(base.buffer, offset, graph.node(name).shape[2])
            if name in refs and refs[name] != ref:
                raise CompileError(
                    f"{graph.node(name).source or name} feeds two concatenations (or one twice); "
                    "the overlay concatenates by addressing, so a tensor can sit in only one"
                )
            refs[name] = ref
            offset += ref.channels
    for node in graph:
        if node.name not in refs:
            refs[node.name] = new_buffer(node)
    return buffers, refs


@dataclass
class _Emitter:
    weights: list[np.ndarray] = field(default_factory=list)

    def const(self, array: Any, dtype: str) -> int:
        self.weights.append(np.ascontiguousarray(np.asarray(array), dtype=dtype))
        return len(self.weights) - 1

    def requant(self, real: float) -> tuple[int, int]:
        """One requantisation factor as (multiplier, shift) constant indices."""
        m, s = requant_pair(real)
        return self.const([m], "int32"), self.const([s], "int32")


@dataclass
class _Window:
    kernel: tuple[int, int]
    stride: int
    pad: tuple[int, int, int, int]


def _window(node: Node, kernel: tuple[int, int] | None = None) -> _Window:
    k = kernel or (int(node.attrs["kernel"][0]), int(node.attrs["kernel"][1]))
    t, b, left, r = (int(p) for p in node.attrs["pad"])
    stride = int(node.attrs["stride"])
    if max(*k, stride, t, b, left, r) > MAX_BYTE:
        raise CompileError(f"{node.source or node.name}: window, stride or padding above 255")
    return _Window(k, stride, (t, b, left, r))


def _proto(op: Opcode, win: _Window | None = None, **fields: Any) -> Instr:
    """An instruction without its tensors (``lower`` connects them), over window ``win``."""
    if win is not None:
        fields.update(kernel=win.kernel, stride=win.stride, pad=win.pad)
    return Instr(op, (), TensorRef(0, 0, 1), **fields)


def _instr(
    graph: Graph, node: Node, scales: dict[str, float], emit: _Emitter, info: dict[str, Any]
) -> Instr:
    s_out = scales[node.name]
    s_in = [scales[i] for i in node.inputs]
    relu = bool(node.attrs.get("relu"))
    where = node.source or node.name
    if node.op == "conv":
        w = node.params["w"]
        q = quantize_conv(w, node.params["b"], s_in[0], s_out)
        info["weight_scale"] = [float(q.weight_scale.min()), float(q.weight_scale.max())]
        return _proto(
            Opcode.CONV,
            _window(node, (int(w.shape[0]), int(w.shape[1]))),
            relu=relu,
            weight=emit.const(q.weight, "int8"),
            bias=emit.const(q.bias, "int32"),
            multiplier=emit.const(q.multiplier, "int32"),
            shift=emit.const(q.shift, "int32"),
        )
    if node.op == "maxpool":
        return _proto(
            Opcode.MAXPOOL,
            _window(node),
            pad_value=-128 if node.attrs.get("pad_min") else 0,
        )
    if node.op == "avgpool":
        win = _window(node)
        m, s = emit.requant(s_in[0] / (s_out * win.kernel[0] * win.kernel[1]))
        return _proto(Opcode.AVGPOOL, win, multiplier=m, shift=s)
    if node.op == "gap":
        pixels = graph.node(node.inputs[0]).shape[0] * graph.node(node.inputs[0]).shape[1]
        m, s = emit.requant(s_in[0] / (s_out * pixels))
        return _proto(Opcode.GLOBAL_AVGPOOL, multiplier=m, shift=s)
    if node.op == "add":
        reals = np.array([s_in[0] / s_out, s_in[1] / s_out])
        shift = shared_shift(reals)
        return _proto(
            Opcode.ADD,
            relu=relu,
            multiplier=emit.const(fixed_point(reals, shift), "int32"),
            shift=emit.const([shift], "int32"),
        )
    if node.op == "scale_shift":
        reals = node.params["scale"].astype(np.float64) * s_in[0] / s_out
        offsets = node.params["shift"].astype(np.float64) / s_out
        shift = shared_shift(reals, offsets)
        return _proto(
            Opcode.SCALE_SHIFT,
            relu=relu,
            multiplier=emit.const(fixed_point(reals, shift), "int32"),
            bias=emit.const(fixed_point(offsets, shift), "int32"),
            shift=emit.const([shift], "int32"),
        )
    if node.op == "flatten":
        raise CompileError(
            f"{where}: a Flatten of a {node.shape} map must feed a Dense layer on the overlay "
            "(or cut the featurizer before it)"
        )
    raise CompileError(f"{where}: {node.op!r} has no overlay instruction (did the passes run?)")


def lower(graph: Graph, scales: dict[str, float]) -> tuple[Program, list[dict[str, Any]]]:
    """Emit the program and a per-node summary (op, shape, MACs, weight bytes, scales)."""
    buffers, refs = assign_buffers(graph, scales)
    emit = _Emitter()
    instrs: list[Instr] = []
    infos: dict[str, dict[str, Any]] = {}
    for node in graph:
        info: dict[str, Any] = {}
        infos[node.name] = info
        if node.op in ("input", "concat"):
            continue
        proto = _instr(graph, node, scales, emit, info)
        instr = dataclasses.replace(
            proto,
            inputs=tuple(refs[i] for i in node.inputs),
            output=refs[node.name],
            name=node.name,
        )
        info["instr"] = len(instrs)
        instrs.append(instr)
    program = Program(buffers, instrs, refs[graph.input], refs[graph.output], emit.weights)
    summary = summarize(graph)
    for row in summary:
        name = row["name"]
        node = graph.node(name)
        row["scale"] = scales[name]
        row["range"] = scales[name] * 127
        row["input_scales"] = [scales[i] for i in node.inputs]
        row.update(infos[name])
    return program, summary
