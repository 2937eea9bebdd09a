"""Each graph pass alone on a tiny hand-built graph: it reports a change, removes what it should,
keeps the float function (checked with the float interpreter), and then is a fixed point; and
each refuses the cases where folding would change the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fpga_serve.compiler import float_exec
from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.compiler.passes import (
    batchnorm_to_scale_shift,
    dense_to_conv,
    fold_batchnorm,
    fold_pad,
    fuse_relu,
    optimize,
    remove_identity,
    run_to_fixed_point,
    standalone_relu,
)
from fpga_serve.core.errors import CompileError

RNG = np.random.default_rng(7)
Pass = Callable[[Graph], tuple[Graph, bool]]


def inp(shape: tuple[int, int, int] = (8, 8, 3)) -> Node:
    return Node("in", "input", [], shape)


def conv(
    name: str,
    src: str,
    cin: int,
    cout: int,
    shape: tuple[int, int, int],
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),
    relu: bool = False,
    k: int = 3,
) -> Node:
    rng = np.random.default_rng(len(name) + cout)  # the same node every time it is made
    return Node(
        name,
        "conv",
        [src],
        shape,
        {"stride": 1, "pad": pad, "relu": relu},
        {
            "w": rng.normal(0, 0.3, (k, k, cin, cout)).astype(np.float32),
            "b": rng.normal(0, 0.1, cout).astype(np.float32),
        },
        source=f"{name} (Conv2D)",
    )


def bn(name: str, src: str, shape: tuple[int, int, int]) -> Node:
    c = shape[2]
    rng = np.random.default_rng(c)
    return Node(
        name,
        "bn",
        [src],
        shape,
        {"eps": 1e-3},
        {
            "gamma": rng.uniform(-1.5, 1.5, c).astype(np.float32),  # negative scales too
            "beta": rng.normal(0, 0.2, c).astype(np.float32),
            "mean": rng.normal(0, 0.2, c).astype(np.float32),
            "var": rng.uniform(0.5, 2, c).astype(np.float32),
        },
        source=f"{name} (BatchNormalization)",
    )


def op(name: str, kind: str, srcs: list[str], shape: tuple[int, int, int], **attrs: Any) -> Node:
    return Node(name, kind, srcs, shape, dict(attrs), source=f"{name} ({kind})")


def check_pass(graph: Graph, fn: Pass, gone: str, x_shape: tuple[int, ...] = (2, 8, 8, 3)) -> Graph:
    """The pass changes the graph, ``gone`` ops vanish, the float function stays, and a second
    application changes nothing."""
    graph.check()
    x = RNG.normal(0, 1, x_shape).astype(np.float32)
    before = float_exec.run(graph, x)
    after, changed = fn(graph.copy())
    assert changed
    assert gone not in after.ops()
    after.check()
    np.testing.assert_allclose(float_exec.run(after, x), before, rtol=1e-4, atol=1e-5)
    _, again = fn(after)
    assert not again
    return after


def unchanged(graph: Graph, fn: Pass) -> None:
    before = graph.ops()
    after, changed = fn(graph.copy())
    assert not changed and after.ops() == before


def test_fold_pad_into_conv() -> None:
    g = Graph(
        [
            inp(),
            op("p", "pad", ["in"], (10, 11, 3), pad=(1, 1, 2, 1)),
            conv("c", "p", 3, 4, (8, 9, 4), pad=(0, 0, 0, 0)),
        ],
        "c",
    )
    after = check_pass(g, fold_pad, "pad")
    assert after.node("c").attrs["pad"] == (1, 1, 2, 1)
    assert after.node("c").fused == ["p (pad)"]


def test_fold_pad_into_every_reader_and_into_max_pool() -> None:
    g = Graph(
        [
            inp(),
            op("p", "pad", ["in"], (10, 10, 3), pad=(1, 1, 1, 1)),
            op("m", "maxpool", ["p"], (4, 4, 3), kernel=(3, 3), stride=2, pad=(0, 0, 0, 0)),
            op("a", "avgpool", ["p"], (4, 4, 3), kernel=(3, 3), stride=2, pad=(0, 0, 0, 0)),
            op("s", "add", ["m", "a"], (4, 4, 3)),
        ],
        "s",
    )
    after = check_pass(g, fold_pad, "pad")
    assert after.node("m").attrs["pad"] == after.node("a").attrs["pad"] == (1, 1, 1, 1)
    assert not after.node("m").attrs.get("pad_min")  # zeros, as the padding layer gave


def test_fold_pad_refuses_readers_that_cannot_pad() -> None:
    same_max = op(
        "m", "maxpool", ["p"], (5, 5, 3), kernel=(3, 3), stride=2, pad=(0, 1, 0, 1), pad_min=True
    )
    g = Graph([inp(), op("p", "pad", ["in"], (10, 10, 3), pad=(1, 1, 1, 1)), same_max], "m")
    unchanged(g, fold_pad)  # -inf padding and zero padding cannot merge
    g = Graph(
        [
            inp(),
            op("p", "pad", ["in"], (10, 10, 3), pad=(1, 1, 1, 1)),
            op("g", "gap", ["p"], (1, 1, 3)),
        ],
        "g",
    )
    unchanged(g, fold_pad)  # the global pool reads the padded map


def test_fold_batchnorm_into_conv() -> None:
    g = Graph([inp(), conv("c", "in", 3, 4, (6, 6, 4)), bn("bn", "c", (6, 6, 4))], "bn")
    after = check_pass(g, fold_batchnorm, "bn")
    assert after.output == "c" and after.node("c").fused == ["bn (BatchNormalization)"]


@pytest.mark.parametrize("case", ["relu_between", "conv_read_twice"])
def test_fold_batchnorm_refuses_when_folding_changes_results(case: str) -> None:
    if case == "relu_between":
        nodes = [inp(), conv("c", "in", 3, 4, (6, 6, 4), relu=True), bn("bn", "c", (6, 6, 4))]
        g = Graph(nodes, "bn")
    else:
        nodes = [
            inp(),
            conv("c", "in", 3, 4, (6, 6, 4)),
            bn("bn", "c", (6, 6, 4)),
            op("s", "add", ["c", "bn"], (6, 6, 4)),
        ]
        g = Graph(nodes, "s")
    unchanged(g, fold_batchnorm)


def test_batchnorm_after_concat_becomes_scale_shift_then_relu_fuses() -> None:
    g = Graph(
        [
            inp(),
            conv("c", "in", 3, 4, (8, 8, 4), (1, 1, 1, 1)),
            op("cat", "concat", ["in", "c"], (8, 8, 7)),
            bn("bn", "cat", (8, 8, 7)),
            op("r", "relu", ["bn"], (8, 8, 7)),
            op("g", "gap", ["r"], (1, 1, 7)),
        ],
        "g",
    )
    unchanged(g, fold_batchnorm)  # nothing to fold into
    g = check_pass(g, batchnorm_to_scale_shift, "bn")
    g = check_pass(g, fuse_relu, "relu")
    assert g.node("bn").attrs["relu"] and g.node("bn").op == "scale_shift"


@pytest.mark.parametrize("producer", ["conv", "add", "scale_shift"])
def test_fuse_relu_into_each_producer(producer: str) -> None:
    nodes = [inp(), conv("c", "in", 3, 3, (8, 8, 3), (1, 1, 1, 1))]
    if producer == "add":
        nodes.append(op("s", "add", ["in", "c"], (8, 8, 3)))
    elif producer == "scale_shift":
        nodes.append(
            Node(
                "s",
                "scale_shift",
                ["c"],
                (8, 8, 3),
                {"relu": False},
                {"scale": np.array([1.0, -2.0, 0.5], np.float32), "shift": np.ones(3, np.float32)},
            )
        )
    last = nodes[-1].name
    nodes.append(op("r", "relu", [last], (8, 8, 3)))
    after = check_pass(Graph(nodes, "r"), fuse_relu, "relu")
    assert after.output == last and after.node(last).attrs["relu"]


def test_fuse_relu_refuses_a_producer_read_elsewhere() -> None:
    g = Graph(
        [
            inp(),
            conv("c", "in", 3, 3, (8, 8, 3), (1, 1, 1, 1)),
            op("r", "relu", ["c"], (8, 8, 3)),
            op("s", "add", ["c", "r"], (8, 8, 3)),
        ],
        "s",
    )
    unchanged(g, fuse_relu)
    g = check_pass(g, standalone_relu, "relu")  # it runs as a scale-shift with ReLU instead
    assert g.node("r").op == "scale_shift" and g.node("r").attrs["relu"]


def test_remove_identity_and_flatten_after_global_pool() -> None:
    g = Graph(
        [
            inp(),
            op("d", "identity", ["in"], (8, 8, 3)),
            op("g", "gap", ["d"], (1, 1, 3)),
            op("f", "flatten", ["g"], (1, 1, 3)),
        ],
        "f",
    )
    after = check_pass(g, remove_identity, "identity")
    assert after.ops() == ["input", "gap"] and after.output == "g"


def test_remove_identity_keeps_a_real_flatten() -> None:
    g = Graph([inp((2, 2, 3)), op("f", "flatten", ["in"], (1, 1, 12))], "f")
    unchanged(g, remove_identity)


def _dense(name: str, src: str, cin: int, cout: int, shape: tuple[int, int, int]) -> Node:
    rng = np.random.default_rng(cin)
    return Node(
        name,
        "dense",
        [src],
        shape,
        {"relu": True},
        {
            "w": rng.normal(0, 0.3, (cin, cout)).astype(np.float32),
            "b": rng.normal(0, 0.1, cout).astype(np.float32),
        },
        source=f"{name} (Dense)",
    )


def test_dense_per_pixel_becomes_1x1_conv() -> None:
    g = Graph([inp(), _dense("d", "in", 3, 5, (8, 8, 5))], "d")
    after = check_pass(g, dense_to_conv, "dense")
    assert after.node("d").params["w"].shape == (1, 1, 3, 5) and after.node("d").attrs["relu"]


def test_dense_after_flatten_becomes_a_full_window_conv() -> None:
    g = Graph(
        [
            inp(),
            conv("c", "in", 3, 4, (6, 6, 4)),
            op("f", "flatten", ["c"], (1, 1, 144)),
            _dense("d", "f", 144, 5, (1, 1, 5)),
        ],
        "d",
    )
    after = check_pass(g, dense_to_conv, "dense")
    assert "flatten" not in after.ops()
    assert after.node("d").params["w"].shape == (6, 6, 4, 5) and after.node("d").inputs == ["c"]


def test_optimize_reaches_overlay_ops_and_logs_passes() -> None:
    g = Graph(
        [
            inp(),
            op("p", "pad", ["in"], (10, 10, 3), pad=(1, 1, 1, 1)),
            conv("c", "p", 3, 4, (8, 8, 4)),
            bn("bn", "c", (8, 8, 4)),
            op("r", "relu", ["bn"], (8, 8, 4)),
            op("cat", "concat", ["in", "r"], (8, 8, 7)),
            bn("bn2", "cat", (8, 8, 7)),
            op("r2", "relu", ["bn2"], (8, 8, 7)),
            op("g", "gap", ["r2"], (1, 1, 7)),
            op("f", "flatten", ["g"], (1, 1, 7)),
            _dense("d", "f", 7, 3, (1, 1, 3)),
        ],
        "d",
    )
    x = RNG.normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    want = float_exec.run(g, x)
    after, log = optimize(g)
    assert after.ops() == ["input", "conv", "concat", "scale_shift", "gap", "conv"]
    assert after.node("c").fused == ["p (pad)", "bn (BatchNormalization)", "r (relu)"]
    assert {"fold_pad", "fold_batchnorm", "fuse_relu", "dense_to_conv", "remove_identity"} <= set(
        log
    )
    np.testing.assert_allclose(float_exec.run(after, x), want, rtol=1e-4, atol=1e-5)


def test_a_pass_that_breaks_the_graph_is_named() -> None:
    def broken(graph: Graph) -> tuple[Graph, bool]:
        node = graph.node("c")
        if node.shape[2] == 4:
            node.shape = (8, 8, 5)  # wrong on purpose
            return graph, True
        return graph, False

    g = Graph([inp(), conv("c", "in", 3, 4, (8, 8, 4), (1, 1, 1, 1))], "c")
    with pytest.raises(CompileError, match="pass broken broke the graph"):
        run_to_fixed_point(g, [("broken", broken)])


def test_graph_check_rejects_bad_graphs() -> None:
    with pytest.raises(CompileError, match="exactly one input"):
        Graph(
            [inp(), Node("in2", "input", [], (8, 8, 3)), op("s", "add", ["in", "in2"], (8, 8, 3))],
            "s",
        )
    g = Graph(
        [inp(), op("s", "add", ["in", "x"], (8, 8, 3)), op("x", "relu", ["in"], (8, 8, 3))], "s"
    )
    with pytest.raises(CompileError, match="before it is computed"):
        g.check()
    with pytest.raises(CompileError, match="weights expect 4 channels"):
        Graph([inp(), conv("c", "in", 4, 4, (6, 6, 4))], "c").check()
