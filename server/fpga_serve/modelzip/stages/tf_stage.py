"""TensorFlow stages: a SavedModel from a tf.function/tf.Module ("tensorflow"), or a frozen
GraphDef with input and output tensor names ("tensorflow_graphdef", what Brainwave users have)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf

from fpga_serve.core.errors import InvalidInput, ModelLoadError
from fpga_serve.core.stage import StageRunner
from fpga_serve.core.types import TensorSpec
from fpga_serve.modelzip.manifest import StageRecord
from fpga_serve.modelzip.stages import LoadContext, SavedStage, register_kind
from fpga_serve.modelzip.stages.tf_common import TfRunner, spec_from_tf
from fpga_serve.modelzip.stages.tf_policy import check_graph, check_saved_model

SIGNATURE = "serving_default"
GRAPH_FILE = "graph.pb"


class TensorflowStage:
    """A TensorFlow stage for ``ModelDefinition.pipeline``.

    - ``TensorflowStage(fn)``: a ``tf.function`` with an input_signature, or a ``tf.Module``
      whose ``__call__`` is one; saved as a SavedModel. Tensors of several inputs or outputs are
      ordered by name; a function returning one tensor names its output ``output_0``.
    - ``TensorflowStage(sess, input_tensor, output_tensor)``: Brainwave's TF1 form; the part of
      the session's graph between the tensors is frozen into a GraphDef (inputs may be any
      single-output op's tensor, not only placeholders).
    - ``TensorflowStage.from_graph_def(graph_def, inputs=[...], outputs=[...])``.
    """

    def __init__(self, fn: Any, *tensors: Any, name: str | None = None) -> None:
        self.name = name
        self._graph_def: tf.compat.v1.GraphDef | None = None
        self._names: tuple[list[str], list[str]] = ([], [])
        if isinstance(fn, tf.compat.v1.Session):
            if len(tensors) != 2:
                raise InvalidInput("TensorflowStage(sess, input_tensor, output_tensor)")
            ins, outs = (_as_list(t) for t in tensors)
            frozen = _freeze_between(fn, ins, outs)
            self._set_graph(frozen, [t.name for t in ins], [t.name for t in outs])
            self.kind = "tensorflow_graphdef"
            return
        if tensors:
            raise InvalidInput("extra arguments are only for TensorflowStage(sess, in, out)")
        call = fn.__call__ if isinstance(fn, tf.Module) and callable(fn) else fn
        if not hasattr(call, "get_concrete_function") or call.input_signature is None:
            raise InvalidInput(
                "TensorflowStage needs a tf.function with an input_signature (or a tf.Module "
                "whose __call__ is one), a TF1 session with tensors, or from_graph_def(...)"
            )
        self._fn = call
        self._module = fn if isinstance(fn, tf.Module) else None
        self.kind = "tensorflow"

    @classmethod
    def from_graph_def(
        cls, graph_def: Any, inputs: list[str], outputs: list[str], name: str | None = None
    ) -> TensorflowStage:
        stage = cls.__new__(cls)
        stage.name = name
        stage._set_graph(graph_def, list(inputs), list(outputs))
        stage.kind = "tensorflow_graphdef"
        return stage

    def _set_graph(self, graph_def: Any, inputs: list[str], outputs: list[str]) -> None:
        if not inputs or not outputs:
            raise InvalidInput("a GraphDef stage needs input and output tensor names")
        for tensor_name in [*inputs, *outputs]:
            if ":" not in tensor_name:
                raise InvalidInput(f"{tensor_name!r} is not a tensor name (like 'Placeholder:0')")
        self._graph_def = graph_def
        self._names = (inputs, outputs)

    def save(self, dest: Path) -> SavedStage:
        dest.mkdir(parents=True, exist_ok=True)
        if self.kind == "tensorflow_graphdef":
            assert self._graph_def is not None
            check_graph(self._graph_def, self._names[1], self.name or "stage")
            (dest / GRAPH_FILE).write_bytes(self._graph_def.SerializeToString())
            inputs, outputs = _graph_specs(self._graph_def, *self._names)
            return SavedStage(
                inputs, outputs, {"inputs": self._names[0], "outputs": self._names[1]}
            )
        module = self._module or tf.Module()
        if self._module is None:
            module.fn = self._fn  # type: ignore[attr-defined]
        concrete = self._fn.get_concrete_function()
        tf.saved_model.save(module, str(dest), signatures={SIGNATURE: concrete})
        runner = _load_saved(dest, self.name or "stage")
        return SavedStage(runner.inputs, runner.outputs, {"signature": SIGNATURE})


def _as_list(t: Any) -> list[Any]:
    return list(t) if isinstance(t, (list, tuple)) else [t]


def _freeze_between(sess: Any, ins: list[Any], outs: list[Any]) -> Any:
    """The part of the session's graph between ``ins`` and ``outs``, variables frozen.

    Each input tensor's op becomes a placeholder of the tensor's dtype and static shape (so a
    stage may start in the middle of a graph, as Brainwave's classifier stage starts at the
    featurizer's output, and ``placeholder.set_shape`` counts), then only what the outputs
    need is kept: nothing upstream of the inputs is saved or checked.
    """
    graph_def = sess.graph.as_graph_def()
    nodes = {node.name: node for node in graph_def.node}
    for tensor in ins:
        op = tensor.op
        if len(op.outputs) != 1:
            raise InvalidInput(
                f"stage input {tensor.name!r} is one of {len(op.outputs)} outputs of op "
                f"{op.name!r}; pass tf.identity({tensor.name.split(':')[0]}) instead"
            )
        if tensor.dtype == tf.resource:
            raise InvalidInput(f"stage input {tensor.name!r} is a variable, not a value")
        placeholder = tf.compat.v1.NodeDef(name=op.name, op="Placeholder")
        placeholder.attr["dtype"].type = tensor.dtype.as_datatype_enum
        placeholder.attr["shape"].shape.CopyFrom(tensor.shape.as_proto())
        if op.name in nodes:
            nodes[op.name].CopyFrom(placeholder)
    out_ops = [t.op.name for t in outs]
    cut = tf.compat.v1.graph_util.extract_sub_graph(graph_def, out_ops)
    return tf.compat.v1.graph_util.convert_variables_to_constants(sess, cut, out_ops)


def _graph_specs(
    graph_def: Any, inputs: list[str], outputs: list[str]
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    try:
        ins = tuple(
            spec_from_tf(n, graph.get_tensor_by_name(n).dtype, graph.get_tensor_by_name(n).shape)
            for n in inputs
        )
        outs = tuple(
            spec_from_tf(n, graph.get_tensor_by_name(n).dtype, graph.get_tensor_by_name(n).shape)
            for n in outputs
        )
    except (KeyError, ValueError) as exc:
        raise InvalidInput(f"GraphDef stage: {exc}") from exc
    return ins, outs


def _load_saved(stage_dir: Path, name: str) -> TfRunner:
    try:
        pb = (stage_dir / "saved_model.pb").read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"stage {name!r}: cannot read saved_model.pb: {exc}") from exc
    check_saved_model(pb, SIGNATURE, name)  # before TensorFlow loads anything
    try:
        loaded = tf.saved_model.load(str(stage_dir))
        fn = loaded.signatures[SIGNATURE]
    except (OSError, KeyError, ValueError, tf.errors.OpError) as exc:
        raise ModelLoadError(f"stage {name!r}: cannot load the SavedModel: {exc}") from exc
    in_specs = fn.structured_input_signature[1]
    out_specs = fn.structured_outputs
    in_names = sorted(in_specs)
    out_names = sorted(out_specs)
    inputs = tuple(spec_from_tf(n, in_specs[n].dtype, in_specs[n].shape) for n in in_names)
    outputs = tuple(spec_from_tf(n, out_specs[n].dtype, out_specs[n].shape) for n in out_names)

    def call(tensors: list[tf.Tensor]) -> list[Any]:
        result = fn(**dict(zip(in_names, tensors, strict=True)))
        return [result[n] for n in out_names]

    return TfRunner(name, "tensorflow", inputs, outputs, call, keep=loaded)


def _same(declared: tuple[TensorSpec, ...], actual: tuple[TensorSpec, ...], what: str) -> None:
    if declared != actual:
        raise ModelLoadError(
            f"{what}: the manifest says {[s.describe() for s in declared]}, the stage has "
            f"{[s.describe() for s in actual]}"
        )


class SavedModelKind:
    kind = "tensorflow"

    def load(self, record: StageRecord, stage_dir: Path, context: LoadContext) -> StageRunner:
        runner = _load_saved(stage_dir, record.name)
        _same(record.inputs, runner.inputs, f"stage {record.name!r} inputs")
        _same(record.outputs, runner.outputs, f"stage {record.name!r} outputs")
        return runner


class GraphDefKind:
    kind = "tensorflow_graphdef"

    def load(self, record: StageRecord, stage_dir: Path, context: LoadContext) -> StageRunner:
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString((stage_dir / GRAPH_FILE).read_bytes())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"stage {record.name!r}: bad {GRAPH_FILE}: {exc}") from exc
        inputs = [s.name for s in record.inputs]
        outputs = [s.name for s in record.outputs]
        check_graph(graph_def, outputs, record.name)  # before TensorFlow imports it
        try:
            ins, outs = _graph_specs(graph_def, inputs, outputs)
        except InvalidInput as exc:
            raise ModelLoadError(f"stage {record.name!r}: {exc}") from exc
        _same(record.inputs, ins, f"stage {record.name!r} inputs")
        _same(record.outputs, outs, f"stage {record.name!r} outputs")

        def imports() -> None:
            tf.compat.v1.import_graph_def(graph_def, name="")

        wrapped = tf.compat.v1.wrap_function(imports, [])
        graph = wrapped.graph
        pruned = wrapped.prune(
            feeds=[graph.get_tensor_by_name(n) for n in inputs],
            fetches=[graph.get_tensor_by_name(n) for n in outputs],
        )

        def call(tensors: list[tf.Tensor]) -> list[Any]:
            return list(pruned(*tensors))

        return TfRunner(record.name, self.kind, ins, outs, call, keep=pruned)


register_kind(SavedModelKind())
register_kind(GraphDefKind())
