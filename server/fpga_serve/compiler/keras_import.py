"""Keras model -> float IR.

The importer walks the Keras graph backwards from the wanted output tensor (the model's, or a
named layer's for a featurizer cut), so layers after the cut (a softmax head) are never looked
at. Functional and Sequential models work, nested models are inlined (their nodes are named
``outer/inner``), and a layer called twice becomes two nodes. Each Keras layer class maps to a
converter in ``CONVERTERS``; any other layer raises a CompileError naming the layer and its type.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fpga_serve.compiler.ir import Graph, Node, Shape, infer_shape
from fpga_serve.core.errors import CompileError


@dataclass
class _Builder:
    """The IR under construction."""

    nodes: list[Node] = field(default_factory=list)
    names: set[str] = field(default_factory=set)

    def add(self, node: Node, inputs: list[Node]) -> Node:
        if node.name in self.names:
            raise CompileError(f"two layers would both be named {node.name!r}")
        node.shape = infer_shape(node, [n.shape for n in inputs])
        self.nodes.append(node)
        self.names.add(node.name)
        return node


@dataclass
class LayerCall:
    """One call of a Keras layer, as a converter sees it."""

    layer: Any
    name: str
    """The IR name for this call's output (layer name, prefixed and suffixed as needed)."""
    inputs: list[Node]
    builder: _Builder

    @property
    def source(self) -> str:
        return f"{self.layer.name} ({type(self.layer).__name__})"

    @property
    def shape(self) -> Shape:
        return self.inputs[0].shape

    def fail(self, why: str) -> CompileError:
        return CompileError(f"layer {self.source}: {why}")

    def emit(
        self,
        op: str,
        inputs: list[Node] | None = None,
        attrs: dict[str, Any] | None = None,
        params: dict[str, np.ndarray] | None = None,
        suffix: str = "",
    ) -> Node:
        """Add an IR node computed from ``inputs`` (default: the layer's inputs)."""
        ins = self.inputs if inputs is None else inputs
        node = Node(
            self.name + suffix,
            op,
            [n.name for n in ins],
            (0, 0, 0),
            attrs or {},
            params or {},
            self.source,
        )
        return self.builder.add(node, ins)


Converter = Callable[[LayerCall], Node]
CONVERTERS: dict[str, Converter] = {}
"""Keras layer class name -> converter. Extension point: a converter turns one layer call
into IR nodes with ``call.emit`` and returns the node holding the layer's output; it raises
``call.fail(why)`` for a configuration the overlay cannot run."""


def converter(*kinds: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for kind in kinds:
            CONVERTERS[kind] = fn
        return fn

    return register


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding: the extra pixel goes after."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _window(call: LayerCall, kernel: tuple[int, int], strides: Any) -> tuple[int, tuple[int, ...]]:
    sh, sw = _pair(strides)
    if sh != sw:
        raise call.fail(f"unequal strides {sh}x{sw}")
    if getattr(call.layer, "data_format", "channels_last") != "channels_last":
        raise call.fail("only channels_last data is supported")
    h, w, _ = call.shape
    if call.layer.padding == "same":
        return sh, (*_same_pad(h, kernel[0], sh), *_same_pad(w, kernel[1], sw))
    return sh, (0, 0, 0, 0)


def _array(variable: Any) -> np.ndarray:
    return np.array(variable.numpy(), dtype=np.float32)


def _with_activation(call: LayerCall, node: Node) -> Node:
    """A fused activation: ReLU becomes the node's flag, linear nothing, others refused."""
    act = getattr(getattr(call.layer, "activation", None), "__name__", "linear")
    if act == "relu":
        node.attrs["relu"] = True
    elif act != "linear":
        raise call.fail(
            f"activation {act!r} is not supported; only relu runs on the overlay (a softmax "
            "belongs in the classifier stage: cut the featurizer before it with output_layer)"
        )
    return node


@converter("Conv2D")
def _conv2d(call: LayerCall) -> Node:
    layer = call.layer
    if _pair(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
        raise call.fail("dilated or grouped convolution is not supported")
    kernel = _array(layer.kernel)
    stride, pad = _window(call, (kernel.shape[0], kernel.shape[1]), layer.strides)
    bias = _array(layer.bias) if layer.use_bias else np.zeros(kernel.shape[-1], np.float32)
    node = call.emit("conv", attrs={"stride": stride, "pad": pad}, params={"w": kernel, "b": bias})
    return _with_activation(call, node)


@converter("Dense")
def _dense(call: LayerCall) -> Node:
    layer = call.layer
    kernel = _array(layer.kernel)
    if kernel.ndim != 2:
        raise call.fail("only 2-D Dense kernels are supported")
    bias = _array(layer.bias) if layer.use_bias else np.zeros(kernel.shape[-1], np.float32)
    return _with_activation(call, call.emit("dense", params={"w": kernel, "b": bias}))


@converter("BatchNormalization")
def _batchnorm(call: LayerCall) -> Node:
    layer = call.layer
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    if axis not in (-1, 3):
        raise call.fail(f"batch norm over axis {axis} (only channels)")
    c = call.shape[2]
    params = {
        "gamma": _array(layer.gamma) if layer.scale else np.ones(c, np.float32),
        "beta": _array(layer.beta) if layer.center else np.zeros(c, np.float32),
        "mean": _array(layer.moving_mean),
        "var": _array(layer.moving_variance),
    }
    return call.emit("bn", attrs={"eps": float(layer.epsilon)}, params=params)


@converter("ReLU")
def _relu(call: LayerCall) -> Node:
    layer = call.layer
    if layer.max_value is not None or float(layer.negative_slope) or float(layer.threshold):
        raise call.fail("only plain ReLU is supported (no max_value, slope or threshold)")
    return call.emit("relu")


@converter("Activation")
def _activation(call: LayerCall) -> Node:
    act = getattr(call.layer.activation, "__name__", "?")
    if act in ("relu", "linear"):
        return call.emit("relu" if act == "relu" else "identity")
    raise call.fail(
        f"activation {act!r} is not supported; only relu runs on the overlay (a softmax "
        "belongs in the classifier stage: cut the featurizer before it with output_layer)"
    )


@converter("ZeroPadding2D")
def _zero_padding(call: LayerCall) -> Node:
    if getattr(call.layer, "data_format", "channels_last") != "channels_last":
        raise call.fail("only channels_last data is supported")
    (t, b), (left, r) = call.layer.padding
    return call.emit("pad", attrs={"pad": (int(t), int(b), int(left), int(r))})


@converter("MaxPooling2D", "AveragePooling2D")
def _pooling(call: LayerCall) -> Node:
    kernel = _pair(call.layer.pool_size)
    stride, pad = _window(call, kernel, call.layer.strides)
    if type(call.layer).__name__ == "MaxPooling2D":
        attrs = {"kernel": kernel, "stride": stride, "pad": pad, "pad_min": any(pad)}
        return call.emit("maxpool", attrs=attrs)
    if any(pad):
        # Keras leaves the padding out of the mean; the overlay's average counts it.
        raise call.fail("'same' average pooling that needs padding is not supported")
    return call.emit("avgpool", attrs={"kernel": kernel, "stride": stride, "pad": pad})


@converter("GlobalAveragePooling2D")
def _global_avg(call: LayerCall) -> Node:
    if getattr(call.layer, "data_format", "channels_last") != "channels_last":
        raise call.fail("only channels_last data is supported")
    return call.emit("gap")


@converter("GlobalMaxPooling2D")
def _global_max(call: LayerCall) -> Node:
    h, w, _ = call.shape
    attrs = {"kernel": (h, w), "stride": 1, "pad": (0, 0, 0, 0), "pad_min": False}
    return call.emit("maxpool", attrs=attrs)


@converter("Add")
def _add(call: LayerCall) -> Node:
    if len(call.inputs) < 2:
        raise call.fail("an Add needs two or more inputs")
    total = call.inputs[0]
    for k, term in enumerate(call.inputs[1:], start=1):
        last = k == len(call.inputs) - 1
        # More than two terms: a chain of two-input adds, each calibrated on its own.
        total = call.emit("add", inputs=[total, term], suffix="" if last else f"/add{k}")
    return total


@converter("Concatenate")
def _concat(call: LayerCall) -> Node:
    if call.layer.axis not in (-1, 3):
        raise call.fail(f"concatenation over axis {call.layer.axis} (only channels)")
    return call.emit("concat")


@converter("Rescaling")
def _rescaling(call: LayerCall) -> Node:
    c = call.shape[2]
    scale = np.broadcast_to(np.asarray(call.layer.scale, np.float32), (c,)).copy()
    shift = np.broadcast_to(np.asarray(call.layer.offset, np.float32), (c,)).copy()
    return call.emit("scale_shift", params={"scale": scale, "shift": shift})


@converter("Flatten")
def _flatten(call: LayerCall) -> Node:
    return call.emit("flatten")


@converter(
    "Dropout",
    "SpatialDropout2D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
)
def _identity(call: LayerCall) -> Node:
    return call.emit("identity")  # inference-time no-ops


def _is_model(op: Any) -> bool:
    import keras

    return isinstance(op, keras.Model)


class _Importer:
    def __init__(self) -> None:
        self.builder = _Builder()
        self.input: Node | None = None
        self.layers: list[str] = []

    def convert(self, target: Any, scope: dict[int, Node], prefix: str) -> Node:
        """The IR node of Keras tensor ``target``; ``scope`` maps tensor ids already converted.
        Iterative (ResNet-152 is deeper than Python's recursion limit would like)."""
        stack = [target]
        while stack:
            tensor = stack[-1]
            if id(tensor) in scope:
                stack.pop()
                continue
            op, node_index, tensor_index = tensor._keras_history
            knode = op._inbound_nodes[node_index]
            missing = [t for t in knode.input_tensors if id(t) not in scope]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            inputs = [scope[id(t)] for t in knode.input_tensors]
            name = prefix + op.name + (f"@{node_index}" if node_index else "")
            scope[id(tensor)] = self.call(op, name, knode, tensor_index, inputs, prefix)
        return scope[id(target)]

    def call(
        self, op: Any, name: str, knode: Any, index: int, inputs: list[Node], prefix: str
    ) -> Node:
        kind = type(op).__name__
        if kind == "InputLayer" or not knode.input_tensors:
            return self.new_input(op, name, kind)
        if _is_model(op):
            if not op.inputs or len(op.inputs) != len(inputs):
                raise CompileError(f"nested model {op.name} ({kind}) has no usable inputs")
            sub_scope = {id(t): n for t, n in zip(op.inputs, inputs, strict=True)}
            return self.convert(op.outputs[index], sub_scope, f"{name}/")
        if len(knode.outputs) != 1:
            raise CompileError(f"layer {op.name} ({kind}) has several outputs")
        fn = CONVERTERS.get(kind)
        if fn is None:
            raise CompileError(f"layer {op.name} ({kind}) is not supported by the overlay")
        if any(len(n.shape) != 3 for n in inputs):
            raise CompileError(f"layer {op.name} ({kind}): inputs must be image maps")
        self.layers.append(prefix + op.name)
        return fn(LayerCall(op, name, inputs, self.builder))

    def new_input(self, op: Any, name: str, kind: str) -> Node:
        if self.input is not None:
            raise CompileError(
                f"{op.name!r} ({kind}) is a second model input; the featurizer must have one"
            )
        shape = tuple(op.output.shape[1:])
        if len(shape) != 3 or any(d is None for d in shape):
            raise CompileError(
                f"input {op.name!r} must be a fixed-size image [H, W, C], not {list(shape)}"
            )
        node = Node(name, "input", [], (int(shape[0]), int(shape[1]), int(shape[2])))
        node.source = f"{op.name} ({kind})"
        self.input = self.builder.add(node, [])
        return self.input


def _find_layer(model: Any, name: str) -> Any:
    try:
        return model.get_layer(name)
    except ValueError:
        known = ", ".join(layer.name for layer in model.layers[-8:])
        raise CompileError(
            f"the model has no layer {name!r} (a featurizer cut names one of its top-level "
            f"layers, e.g. {known})"
        ) from None


def import_keras(model: Any, output_layer: str | None = None) -> Graph:
    """Convert a Functional or Sequential Keras model, up to ``output_layer`` (default: the
    model's output) into a float IR graph."""
    graph, _ = import_keras_with_layers(model, output_layer)
    return graph


def import_keras_with_layers(
    model: Any, output_layer: str | None = None
) -> tuple[Graph, list[str]]:
    """``import_keras`` plus the names of the Keras layers that went into the graph."""
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as exc:
        raise CompileError(
            f"model {getattr(model, 'name', '?')!r} has no defined inputs: build it with "
            f"keras.Input(shape) first ({exc})"
        ) from None
    if len(inputs) != 1:
        raise CompileError(
            f"the featurizer must have exactly one input, the model has {len(inputs)}"
        )
    if output_layer is not None:
        layer = _find_layer(model, output_layer)
        if len(layer._inbound_nodes) != 1:
            raise CompileError(
                f"layer {output_layer!r} is called {len(layer._inbound_nodes)} times; cut at a "
                "layer used once"
            )
        target = layer.output
    elif len(outputs) != 1:
        raise CompileError(
            f"the model has {len(outputs)} outputs; name the featurizer's with output_layer"
        )
    else:
        target = outputs[0]
    importer = _Importer()
    out = importer.convert(target, {}, "")
    graph = Graph(importer.builder.nodes, out.name)
    graph.prune()
    return graph, importer.layers
