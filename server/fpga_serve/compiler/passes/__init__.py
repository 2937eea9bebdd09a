"""Graph passes. One contract (qonnx-style): a pass is ``apply(graph) -> (graph, changed)``; it
may rewrite the graph in place, must keep its float function unchanged (up to float rounding)
and must report whether it changed anything, so that ``run_to_fixed_point`` terminates.

``optimize`` runs two phases, each to a fixed point: canonicalisation (remove no-ops, dense as
convolution, fold paddings and batch norms, fuse ReLUs), then lowering to the overlay's op set
(leftover batch norms and ReLUs become scale-shifts). Extension point: add a pass module here and
list it in a phase.
"""

from __future__ import annotations

from collections.abc import Callable

from fpga_serve.compiler.ir import Graph
from fpga_serve.compiler.passes.batchnorm import batchnorm_to_scale_shift, fold_batchnorm
from fpga_serve.compiler.passes.cleanup import remove_identity
from fpga_serve.compiler.passes.dense import dense_to_conv
from fpga_serve.compiler.passes.padding import fold_pad
from fpga_serve.compiler.passes.relu import fuse_relu, standalone_relu
from fpga_serve.core.errors import CompileError

Pass = Callable[[Graph], tuple[Graph, bool]]

CANONICALIZE: list[tuple[str, Pass]] = [
    ("remove_identity", remove_identity),
    ("dense_to_conv", dense_to_conv),
    ("fold_pad", fold_pad),
    ("fold_batchnorm", fold_batchnorm),
    ("fuse_relu", fuse_relu),
]
LOWER_OPS: list[tuple[str, Pass]] = [
    ("batchnorm_to_scale_shift", batchnorm_to_scale_shift),
    ("fuse_relu", fuse_relu),
    ("standalone_relu", standalone_relu),
]
PHASES: list[tuple[str, list[tuple[str, Pass]]]] = [
    ("canonicalize", CANONICALIZE),
    ("lower_ops", LOWER_OPS),
]
MAX_ROUNDS = 100


def run_to_fixed_point(
    graph: Graph, passes: list[tuple[str, Pass]], check: bool = True
) -> tuple[Graph, list[str]]:
    """Apply ``passes`` in order, repeatedly, until none changes the graph; return the graph
    and the names of the passes that changed it, in order. ``check`` re-derives every shape
    after each change (a pass that breaks the graph fails here, naming itself)."""
    log: list[str] = []
    for _ in range(MAX_ROUNDS):
        changed = False
        for name, fn in passes:
            graph, did = fn(graph)
            if did:
                log.append(name)
                changed = True
                if check:
                    try:
                        graph.check()
                    except CompileError as exc:
                        raise CompileError(f"pass {name} broke the graph: {exc}") from exc
        if not changed:
            return graph, log
    raise CompileError(f"passes did not reach a fixed point in {MAX_ROUNDS} rounds: {log[-8:]}")


def optimize(graph: Graph) -> tuple[Graph, list[str]]:
    """Run every phase to its fixed point; return the graph and what ran."""
    log: list[str] = []
    for _, passes in PHASES:
        graph, ran = run_to_fixed_point(graph, passes)
        log += ran
    return graph, log


__all__ = [
    "CANONICALIZE",
    "LOWER_OPS",
    "PHASES",
    "Pass",
    "batchnorm_to_scale_shift",
    "dense_to_conv",
    "fold_batchnorm",
    "fold_pad",
    "fuse_relu",
    "optimize",
    "remove_identity",
    "run_to_fixed_point",
    "standalone_relu",
]
