"""Dense layers as convolutions: the overlay has no matrix-vector op of its own."""

from __future__ import annotations

from fpga_serve.compiler.ir import Graph


def dense_to_conv(graph: Graph) -> tuple[Graph, bool]:
    """A Dense on an H x W x C map acts on each pixel: a 1 x 1 convolution. A Dense after a
    Flatten of an H x W x C map sees the pixels in row-major (h, w, c) order, which is exactly a
    'valid' H x W convolution over the unflattened map (its kernel is the Dense kernel
    reshaped); the Flatten goes when nothing else reads it."""
    changed = False
    for node in graph:
        if node.op != "dense":
            continue
        w = node.params["w"]
        src = graph.node(node.inputs[0])
        if src.op == "flatten":
            h, wd, c = graph.node(src.inputs[0]).shape
            kernel = w.reshape(h, wd, c, w.shape[1])
            node.inputs = [src.inputs[0]]
            if not graph.consumers(src.name) and src.name != graph.output:
                del graph.nodes[src.name]
                node.fused.append(src.source)
        else:
            kernel = w.reshape(1, 1, *w.shape)
        node.op = "conv"
        node.params = {"w": kernel, "b": node.params["b"]}
        node.attrs = {"stride": 1, "pad": (0, 0, 0, 0), "relu": bool(node.attrs.get("relu"))}
        changed = True
    return graph, changed
