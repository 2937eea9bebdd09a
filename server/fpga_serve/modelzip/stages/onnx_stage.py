"""ONNX stages ("onnx"): an ONNX model run by ONNX Runtime on the CPU.

For models users bring as ONNX (exported from PyTorch, scikit-learn, tf2onnx, ...) and for
small CPU stages where a TensorFlow call costs more than the model: one ``InferenceSession.run``
costs tens of microseconds where a ``tf.function`` call costs a few hundred (bench/README.md).

Files: model.onnx. Options: ``threads``, ONNX Runtime's intra-op threads for this stage (default
1: the stage runs in the calling thread, no hand-off to a pool, and concurrent batches run side
by side; never spinning threads, which would burn the cores the RPC threads need).

An archive's ONNX model is untrusted. Before ONNX Runtime sees it (at save and at load),
``check_onnx`` refuses tensors whose data lives in external files (ONNX Runtime would open any
path the model names) and operators outside the standard domains and the model's own functions
(custom operators need libraries the server never registers), in the main graph, in every
subgraph (If, Loop, Scan) and in every function. The session is built from the bytes, not a
path, with the CPU provider only. As for TensorFlow stages this is a capability check, not a
proof that a graph is cheap: an operator can still be asked for a large tensor, which the
per-request limits and deadlines bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from fpga_serve.core.errors import FpgaServeError, InvalidInput, ModelLoadError
from fpga_serve.core.stage import StageRunner
from fpga_serve.core.types import DType, TensorSpec
from fpga_serve.modelzip.manifest import StageRecord
from fpga_serve.modelzip.stages import LoadContext, SavedStage, register_kind

MODEL_FILE = "model.onnx"
DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
"""Operator domains ONNX Runtime implements itself (no custom-op library)."""
MAX_THREADS = 64

_DTYPES: dict[int, DType] = {
    onnx.TensorProto.BOOL: DType.BOOL,
    onnx.TensorProto.UINT8: DType.UINT8,
    onnx.TensorProto.INT8: DType.INT8,
    onnx.TensorProto.INT16: DType.INT16,
    onnx.TensorProto.INT32: DType.INT32,
    onnx.TensorProto.INT64: DType.INT64,
    onnx.TensorProto.FLOAT16: DType.FP16,
    onnx.TensorProto.FLOAT: DType.FP32,
    onnx.TensorProto.DOUBLE: DType.FP64,
}


def _walk(
    nodes: Iterable[onnx.NodeProto], graphs: list[onnx.GraphProto]
) -> Iterator[onnx.NodeProto]:
    """Every node of ``nodes`` and of their subgraphs (If, Loop, Scan bodies), depth first;
    the subgraphs met are appended to ``graphs``."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            for sub in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
                graphs.append(sub)
                yield from _walk(sub.node, graphs)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    """The tensors stored in a node's attributes (Constant values and the like)."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse = [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else [])]
        for item in [*sparse, *attr.sparse_tensors]:
            yield item.values
            yield item.indices


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices


def check_onnx(model: onnx.ModelProto, stage: str) -> None:
    """Refuse (ModelLoadError naming the stage and the culprit) external data and operators
    from domains ONNX Runtime does not implement itself, anywhere in the model."""
    allowed = DOMAINS | {f.domain for f in model.functions}
    for opset in model.opset_import:
        if opset.domain not in allowed:
            raise ModelLoadError(
                f"stage {stage!r}: operator domain {opset.domain!r} is not allowed (custom "
                "operators need a library this server never loads)"
            )
    graphs = [model.graph]
    roots = [*model.graph.node, *(node for f in model.functions for node in f.node)]
    tensors: list[onnx.TensorProto] = []
    for node in _walk(roots, graphs):
        if node.domain not in allowed:
            raise ModelLoadError(
                f"stage {stage!r}: node {node.name or node.op_type!r} is operator "
                f"{node.domain}.{node.op_type}, outside the allowed domains"
            )
        tensors.extend(_node_tensors(node))
    for graph in graphs:
        tensors.extend(_graph_tensors(graph))
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise ModelLoadError(
                f"stage {stage!r}: tensor {tensor.name!r} keeps its data in an external file; "
                "save the model with its weights inside (onnx.save(..., "
                "save_as_external_data=False))"
            )


def _spec(value: onnx.ValueInfoProto, stage: str) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ModelLoadError(f"stage {stage!r}: {value.name!r} is a {kind}, not a tensor")
    tensor = value.type.tensor_type
    dtype = _DTYPES.get(tensor.elem_type)
    if dtype is None:
        type_name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise ModelLoadError(f"stage {stage!r}: {value.name!r} has unsupported type {type_name}")
    if not tensor.HasField("shape"):
        raise ModelLoadError(f"stage {stage!r}: {value.name!r} has unknown rank; give it a shape")
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(value.name, dtype, dims)


def onnx_specs(
    model: onnx.ModelProto, stage: str
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's inputs (those that are not initializers) and outputs, in graph order."""
    stored = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(v, stage) for v in model.graph.input if v.name not in stored)
    outputs = tuple(_spec(v, stage) for v in model.graph.output)
    if not inputs or not outputs:
        raise ModelLoadError(f"stage {stage!r}: the model needs inputs and outputs")
    return inputs, outputs


def _parse(data: bytes, stage: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or a RuntimeWarning-turned-error
        raise ModelLoadError(f"stage {stage!r}: {MODEL_FILE} is not an ONNX model: {exc}") from exc
    return model


def _session(data: bytes, threads: int, stage: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # a client's bad data is its error, not the server log's
    try:
        try:
            return _new_session(data, options)
        except Exception as exc:
            if "global thread pool" not in str(exc):
                raise
            # An in-process twin made ONNX Runtime's process-wide pool first (hw/twin/gemm.py;
            # in a server the twin has its own process): sessions must then share that pool.
            options.use_per_session_threads = False
            options.intra_op_num_threads = options.inter_op_num_threads = 0
            return _new_session(data, options)
    except Exception as exc:  # ONNX Runtime raises its own types (Fail, InvalidGraph, ...)
        raise ModelLoadError(f"stage {stage!r}: ONNX Runtime cannot load the model: {exc}") from exc


def _new_session(data: bytes, options: ort.SessionOptions) -> ort.InferenceSession:
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxStage:
    """An ONNX model for ``ModelDefinition.pipeline``: an ``onnx.ModelProto``, its serialized
    bytes, or the path of a .onnx file (weights inside it, not in external files)."""

    kind = "onnx"

    def __init__(self, model: Any, name: str | None = None, threads: int = 1) -> None:
        if isinstance(model, onnx.ModelProto):
            self._data = model.SerializeToString()
        elif isinstance(model, (bytes, bytearray)):
            self._data = bytes(model)
        elif isinstance(model, (str, Path)):
            self._data = Path(model).read_bytes()
        else:
            raise InvalidInput(
                f"OnnxStage needs an onnx.ModelProto, bytes or a path, not {type(model).__name__}"
            )
        if not 1 <= threads <= MAX_THREADS:
            raise InvalidInput(f"OnnxStage threads must be 1-{MAX_THREADS}, not {threads}")
        self.name = name
        self.threads = threads
        label = name or "onnx"
        try:
            self._specs = _checked(self._data, threads, label)
        except ModelLoadError as exc:  # the user's own model: their mistake, said the same way
            raise InvalidInput(exc.message) from None

    def save(self, dest: Path) -> SavedStage:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / MODEL_FILE).write_bytes(self._data)
        return SavedStage(*self._specs, {"threads": self.threads})


def _checked(
    data: bytes, threads: int, stage: str
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Parse, check (before ONNX Runtime sees it) and load once: the model's specs."""
    model = _parse(data, stage)
    check_onnx(model, stage)
    specs = onnx_specs(model, stage)
    _session(data, threads, stage)
    return specs


def _text(exc: Exception) -> str:
    """ONNX Runtime's message without its wrapping ("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :
    Non-zero status code returned while running Gather node. Name:'' Status Message: ...")."""
    text = str(exc)
    return text.split("Status Message: ", 1)[-1] if "Status Message: " in text else text


class OnnxRunner:
    """Runs an ONNX Runtime session positionally; bad data becomes InvalidInput."""

    kind = "onnx"

    def __init__(
        self,
        name: str,
        session: ort.InferenceSession,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
    ) -> None:
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self._session: ort.InferenceSession | None = session
        self._in_names = [s.name for s in inputs]
        self._out_names = [s.name for s in outputs]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        session = self._session
        if session is None:
            raise FpgaServeError(f"stage {self.name!r} is closed")
        feeds = dict(zip(self._in_names, inputs, strict=True))
        try:
            return list(session.run(self._out_names, feeds))
        except (ort_state.InvalidArgument, ort_state.Fail) as exc:
            raise InvalidInput(
                f"stage {self.name!r} cannot process the batch: {_text(exc)}"
            ) from None

    def close(self) -> None:
        self._session = None


class OnnxKind:
    kind = "onnx"

    def load(self, record: StageRecord, stage_dir: Path, context: LoadContext) -> StageRunner:
        threads = record.options.get("threads", 1)
        if (
            not isinstance(threads, int)
            or isinstance(threads, bool)
            or not (1 <= threads <= MAX_THREADS)
        ):
            raise ModelLoadError(f"stage {record.name!r}: threads must be 1-{MAX_THREADS}")
        try:
            data = (stage_dir / MODEL_FILE).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"stage {record.name!r}: cannot read {MODEL_FILE}: {exc}") from exc
        model = _parse(data, record.name)
        check_onnx(model, record.name)  # before ONNX Runtime sees it
        inputs, outputs = onnx_specs(model, record.name)
        if inputs != record.inputs or outputs != record.outputs:
            raise ModelLoadError(
                f"stage {record.name!r}: the manifest says "
                f"{[s.describe() for s in (*record.inputs, *record.outputs)]}, the model has "
                f"{[s.describe() for s in (*inputs, *outputs)]}"
            )
        return OnnxRunner(record.name, _session(data, threads, record.name), inputs, outputs)


register_kind(OnnxKind())
