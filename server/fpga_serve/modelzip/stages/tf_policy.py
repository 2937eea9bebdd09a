"""What a TensorFlow stage from an untrusted zip may run: checked on the graph's bytes, before
TensorFlow loads anything.

A SavedModel or GraphDef is a program: besides tensor math it can read and write files, map
them into memory, open readers and datasets, write summaries or call back into Python. A
preprocessing stage needs none of that, so the ops reachable from the stage's outputs (through
every function they call, including cond/while branches) are checked against a deny-list of
those capabilities. The SavedModel's own save/restore functions are not reachable from its
serving signature and are not run by serving.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fpga_serve.core.errors import ModelLoadError

# Ops that touch the file system, memory-map files, run Python, or checkpoint.
DENIED_OPS = frozenset(
    {
        "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst",
        "PyFunc", "PyFuncStateless", "EagerPyFunc",
        "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
        "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec",
        "LoadAndRemapMatrix", "GenerateVocabRemap",
        "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
        "WriteRawProtoSummary",
    }
)  # fmt: skip
# Families: file readers (WholeFileReader, TFRecordReaderV2, ...), datasets and iterators
# (TFRecordDataset, ...), summary writers.
DENIED_PATTERN = re.compile(r"Reader|Dataset|Iterator|Summary|Writer")
# Ops allowed only with a harmless attribute: tf.print to a file, protos described by a file.
ATTR_RULES = {
    "PrintV2": ("output_stream", lambda v: v.startswith(b"file")),
    "DecodeProtoV2": ("descriptor_source", lambda v: v not in (b"", b"local://")),
    "EncodeProto": ("descriptor_source", lambda v: v not in (b"", b"local://")),
}


def _node_name(tensor: str) -> str:
    return tensor.lstrip("^").split(":")[0]


def _called_functions(node: Any) -> Iterable[str]:
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        if value.HasField("list"):
            yield from (f.name for f in value.list.func)


def _refusal(node: Any) -> str | None:
    op = node.op
    if op in DENIED_OPS or DENIED_PATTERN.search(op):
        return f"op {op!r} (node {node.name!r})"
    rule = ATTR_RULES.get(op)
    if rule is not None:
        attr, bad = rule
        if attr in node.attr and bad(node.attr[attr].s):
            return f"op {op!r} with {attr}={node.attr[attr].s.decode(errors='replace')!r}"
    return None


def check_graph(graph_def: Any, outputs: Iterable[str], stage: str) -> None:
    """Refuses the stage when an op reachable from ``outputs`` is denied."""
    nodes = {n.name: n for n in graph_def.node}
    functions = {f.signature.name: f for f in graph_def.library.function}
    todo = [_node_name(t) for t in outputs]
    seen: set[str] = set()
    funcs_todo: list[str] = []
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        node = nodes[name]
        _raise_if_denied(node, stage, "")
        todo.extend(_node_name(i) for i in node.input)
        funcs_todo.extend(_called_functions(node))
    done: set[str] = set()
    while funcs_todo:
        fname = funcs_todo.pop()
        if fname in done or fname not in functions:
            continue
        done.add(fname)
        for node in functions[fname].node_def:
            _raise_if_denied(node, stage, f" in function {fname!r}")
            funcs_todo.extend(_called_functions(node))


def _raise_if_denied(node: Any, stage: str, where: str) -> None:
    reason = _refusal(node)
    if reason is not None:
        raise ModelLoadError(
            f"stage {stage!r} is refused: {reason}{where} reaches outside the tensor math a "
            "serving stage may run (files, Python, datasets, summaries or checkpoints)"
        )


def check_saved_model(saved_model_pb: bytes, signature: str, stage: str) -> None:
    """The same check on a SavedModel's bytes, from its serving signature's outputs."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(saved_model_pb)
    except Exception as exc:  # protobuf's DecodeError
        raise ModelLoadError(f"stage {stage!r}: saved_model.pb is not a SavedModel: {exc}") from exc
    for meta in saved.meta_graphs:
        if signature in meta.signature_def:
            outputs = [t.name for t in meta.signature_def[signature].outputs.values()]
            check_graph(meta.graph_def, outputs, stage)
            return
    raise ModelLoadError(f"stage {stage!r}: the SavedModel has no {signature!r} signature")
