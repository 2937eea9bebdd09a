"""Keras model -> float IR. Unsupported layers raise CompileError naming the layer and type."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.core.errors import CompileError


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _inbound(layer: Any) -> list[str]:
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        raise CompileError(
            f"layer {layer.name!r} ({type(layer).__name__}) is used {len(nodes)} times; "
            "shared layers are not supported"
        )
    names = []
    for t in nodes[0].input_tensors:
        history = t._keras_history
        op = getattr(history, "operation", None) or history[0]
        names.append(op.name)
    return names


def _activation(layer: Any, node: Node, nodes: list[Node]) -> str:
    """Append a relu node when the layer has a fused activation; return the output name."""
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", "linear")
    if name == "linear":
        return node.name
    if name == "relu":
        nodes.append(Node(f"{node.name}/relu", "relu", [node.name], node.shape, source=node.source))
        return f"{node.name}/relu"
    raise CompileError(
        f"layer {layer.name!r} ({type(layer).__name__}) has activation {name!r}; only relu runs "
        "on the overlay (softmax belongs in the classifier stage)"
    )


def import_keras(model: Any, output_layer: str | None = None) -> Graph:
    """Convert a functional or sequential Keras model, up to ``output_layer`` (default: its
    last layer)."""
    import keras

    layers = list(model.layers)
    sequential = isinstance(model, keras.Sequential)
    nodes: list[Node] = []
    out_name: dict[str, str] = {}  # keras layer name -> IR node producing its output
    shapes: dict[str, tuple[int, int, int]] = {}
    if sequential:
        shape = tuple(model.inputs[0].shape[1:])
        if len(shape) != 3:
            raise CompileError(f"the model input must be an image [H, W, C], not {shape}")
        nodes.append(Node("input", "input", [], shape))  # type: ignore[arg-type]
        out_name["input"] = "input"
        shapes["input"] = shape  # type: ignore[assignment]
    previous = "input"
    for layer in layers:
        kind = type(layer).__name__
        source = f"{layer.name} ({kind})"
        if kind == "InputLayer":
            shape = tuple(layer.batch_shape[1:])
            if len(shape) != 3 or any(d is None for d in shape):
                raise CompileError(f"input {layer.name!r} must be a fixed image shape, not {shape}")
            nodes.append(Node(layer.name, "input", [], shape, source=source))  # type: ignore[arg-type]
            out_name[layer.name] = layer.name
            shapes[layer.name] = shape  # type: ignore[assignment]
            previous = layer.name
            continue
        ins = [previous] if sequential else _inbound(layer)
        srcs = [out_name[i] for i in ins]
        in_shapes = [shapes[i] for i in ins]
        h, w, c = in_shapes[0]
        name = layer.name
        node: Node
        if kind == "Conv2D":
            if _pair(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
                raise CompileError(f"layer {source}: dilated or grouped convolution")
            kh, kw = _pair(layer.kernel_size)
            sh, sw = _pair(layer.strides)
            if sh != sw:
                raise CompileError(f"layer {source}: unequal strides {sh}x{sw}")
            if layer.padding == "same":
                pad = (*_same_pad(h, kh, sh), *_same_pad(w, kw, sw))
            else:
                pad = (0, 0, 0, 0)
            kernel = np.asarray(layer.kernel.numpy(), np.float32)
            bias = (
                np.asarray(layer.bias.numpy(), np.float32)
                if layer.use_bias
                else np.zeros(kernel.shape[-1], np.float32)
            )
            ho = (h + pad[0] + pad[1] - kh) // sh + 1
            wo = (w + pad[2] + pad[3] - kw) // sw + 1
            node = Node(
                name,
                "conv",
                srcs,
                (ho, wo, kernel.shape[-1]),
                {"stride": sh, "pad": pad},
                {"w": kernel, "b": bias},
                source,
            )
            nodes.append(node)
            final = _activation(layer, node, nodes)
        elif kind == "Dense":
            if (h, w) != (1, 1):
                raise CompileError(f"layer {source}: Dense needs a 1x1 map (use global pooling)")
            kernel = np.asarray(layer.kernel.numpy(), np.float32)[None, None]
            bias = (
                np.asarray(layer.bias.numpy(), np.float32)
                if layer.use_bias
                else np.zeros(kernel.shape[-1], np.float32)
            )
            node = Node(
                name,
                "conv",
                srcs,
                (1, 1, kernel.shape[-1]),
                {"stride": 1, "pad": (0, 0, 0, 0)},
                {"w": kernel, "b": bias},
                source,
            )
            nodes.append(node)
            final = _activation(layer, node, nodes)
        elif kind == "BatchNormalization":
            axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
            if axis not in (-1, 3):
                raise CompileError(f"layer {source}: batch norm over axis {axis}")
            gamma = layer.gamma.numpy() if layer.scale else np.ones(c, np.float32)
            beta = layer.beta.numpy() if layer.center else np.zeros(c, np.float32)
            params = {
                "gamma": gamma,
                "beta": beta,
                "mean": layer.moving_mean.numpy(),
                "var": layer.moving_variance.numpy(),
            }
            node = Node(
                name,
                "bn",
                srcs,
                (h, w, c),
                {"eps": float(layer.epsilon)},
                {k: np.asarray(v, np.float32) for k, v in params.items()},
                source,
            )
            nodes.append(node)
            final = name
        elif kind in ("Activation", "ReLU"):
            act = getattr(layer, "activation", None)
            act_name = getattr(act, "__name__", "relu" if kind == "ReLU" else "?")
            if kind == "ReLU" and (
                layer.max_value is not None
                or float(layer.negative_slope) != 0
                or float(layer.threshold) != 0
            ):
                raise CompileError(f"layer {source}: only plain ReLU is supported")
            if act_name == "linear":
                nodes.append(Node(name, "identity", srcs, (h, w, c), source=source))
            elif act_name == "relu":
                nodes.append(Node(name, "relu", srcs, (h, w, c), source=source))
            else:
                raise CompileError(f"layer {source}: activation {act_name!r} is not supported")
            final = name
        elif kind == "ZeroPadding2D":
            (t, b), (left, r) = layer.padding
            nodes.append(
                Node(
                    name,
                    "pad",
                    srcs,
                    (h + t + b, w + left + r, c),
                    {"pad": (int(t), int(b), int(left), int(r))},
                    source=source,
                )
            )
            final = name
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            kh, kw = _pair(layer.pool_size)
            sh, sw = _pair(layer.strides)
            if sh != sw:
                raise CompileError(f"layer {source}: unequal strides")
            if layer.padding == "same":
                if kind == "AveragePooling2D":
                    raise CompileError(f"layer {source}: 'same' average pooling is not supported")
                pad = (*_same_pad(h, kh, sh), *_same_pad(w, kw, sw))
                pad_value = -128
            else:
                pad, pad_value = (0, 0, 0, 0), 0
            ho = (h + pad[0] + pad[1] - kh) // sh + 1
            wo = (w + pad[2] + pad[3] - kw) // sw + 1
            op = "maxpool" if kind == "MaxPooling2D" else "avgpool"
            nodes.append(
                Node(
                    name,
                    op,
                    srcs,
                    (ho, wo, c),
                    {"kernel": (kh, kw), "stride": sh, "pad": pad, "pad_value": pad_value},
                    source=source,
                )
            )
            final = name
        elif kind == "GlobalAveragePooling2D":
            nodes.append(Node(name, "gap", srcs, (1, 1, c), source=source))
            final = name
        elif kind == "Add":
            if len(srcs) != 2:
                raise CompileError(f"layer {source}: only two-input adds are supported")
            nodes.append(Node(name, "add", srcs, (h, w, c), source=source))
            final = name
        elif kind == "Concatenate":
            if layer.axis not in (-1, 3):
                raise CompileError(f"layer {source}: concatenation must be over channels")
            total = sum(s[2] for s in in_shapes)
            nodes.append(Node(name, "concat", srcs, (h, w, total), source=source))
            final = name
        elif kind in ("Dropout", "Identity", "SpatialDropout2D") or (
            kind == "Flatten" and (h, w) == (1, 1)
        ):
            nodes.append(Node(name, "identity", srcs, (h, w, c), source=source))
            final = name
        else:
            raise CompileError(f"layer {source} is not supported by the overlay")
        out_name[layer.name] = final
        shapes[layer.name] = next(n.shape for n in reversed(nodes) if n.name == final)
        previous = layer.name
        if output_layer is not None and layer.name == output_layer:
            break
    if output_layer is not None and output_layer not in out_name:
        raise CompileError(f"the model has no layer {output_layer!r}")
    graph = Graph(nodes, out_name[output_layer or previous])
    graph.prune()
    return graph
