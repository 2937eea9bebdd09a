"""tensorflow.serving.PredictionService: Predict and GetModelMetadata (Brainwave clients)."""

from __future__ import annotations

import grpc
import numpy as np
from fpga_serve_client import anytensor
from fpga_serve_client.convert import from_tensor_proto, tensor_proto_header, to_tensor_proto
from fpga_serve_client.protos import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    tf_tensor_pb2,
)
from google.protobuf import any_pb2

from fpga_serve.adapters.status import RequestRecorder, deadline_of, handle_errors
from fpga_serve.core.errors import InvalidInput, shown
from fpga_serve.core.types import DType, TensorHeader, TensorSpec
from fpga_serve.service.dataplane import (
    DataPlane,
    EncodedTensor,
    InferenceRequest,
    ModelMetadata,
)

SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
OUTPUT_ALIAS = "output_alias"
"""The name the early Brainwave client read its result from (for single-output models)."""

_TF_DTYPES: dict[DType, int] = {
    DType.BOOL: tf_tensor_pb2.DT_BOOL,
    DType.UINT8: tf_tensor_pb2.DT_UINT8,
    DType.INT8: tf_tensor_pb2.DT_INT8,
    DType.INT16: tf_tensor_pb2.DT_INT16,
    DType.INT32: tf_tensor_pb2.DT_INT32,
    DType.INT64: tf_tensor_pb2.DT_INT64,
    DType.FP16: tf_tensor_pb2.DT_HALF,
    DType.FP32: tf_tensor_pb2.DT_FLOAT,
    DType.FP64: tf_tensor_pb2.DT_DOUBLE,
    DType.BYTES: tf_tensor_pb2.DT_STRING,
}


def _model_spec(name: str, version: str) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=SIGNATURE)
    if version.isdigit():
        spec.version.value = int(version)
    else:
        spec.version_label = version
    return spec


_SPECS: dict[tuple[str, str], bytes] = {}
"""Serialised ModelSpec per (name, version) answered; bounded by the versions ever loaded."""


def _response(name: str, version: str) -> predict_pb2.PredictResponse:
    """A PredictResponse carrying the model's spec (built once per version, then parsed in)."""
    spec = _SPECS.get((name, version))
    if spec is None:
        spec = _SPECS[(name, version)] = _model_spec(name, version).SerializeToString()
    response = predict_pb2.PredictResponse()
    response.model_spec.MergeFromString(spec)
    return response


def _requested(spec: model_pb2.ModelSpec) -> tuple[str, str | None]:
    """(model name, version or None) from a ModelSpec; the Brainwave clients sent none."""
    if spec.signature_name not in ("", SIGNATURE):
        raise InvalidInput(
            f"unknown signature {shown(spec.signature_name)}; this server serves {SIGNATURE!r}"
        )
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return spec.name, str(spec.version.value)
    if which == "version_label":
        return spec.name, spec.version_label
    return spec.name, None


def _encoded(proto: tf_tensor_pb2.TensorProto, key: str) -> EncodedTensor:
    """A request tensor's declaration, and its decoding for later (after every check)."""
    wire = tensor_proto_header(proto, key)
    return EncodedTensor(
        TensorHeader(wire.datatype, wire.shape, wire.payload_bytes),
        lambda: from_tensor_proto(proto, key),
    )


def _tensor_info(spec: TensorSpec) -> tf_tensor_pb2.TensorInfo:
    info = tf_tensor_pb2.TensorInfo(name=spec.name, dtype=_TF_DTYPES[spec.dtype])  # type: ignore[arg-type]
    for size in spec.shape:
        info.tensor_shape.dim.add(size=size)
    return info


def signature_def(meta: ModelMetadata) -> tf_tensor_pb2.SignatureDef:
    """The model's one signature: inputs under their names and aliases, outputs likewise."""
    sig = tf_tensor_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for spec in meta.inputs:
        sig.inputs[spec.name].CopyFrom(_tensor_info(spec))
    for alias, real in meta.input_aliases.items():
        sig.inputs[alias].CopyFrom(_tensor_info(next(s for s in meta.inputs if s.name == real)))
    for spec in meta.outputs:
        sig.outputs[spec.name].CopyFrom(_tensor_info(spec))
    if len(meta.outputs) == 1:
        sig.outputs[OUTPUT_ALIAS].CopyFrom(_tensor_info(meta.outputs[0]))
    return sig


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict: inputs by name or alias (``images``), outputs by name and ``output_alias``."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.recorder = RequestRecorder(plane.metrics, "tfserving")

    @handle_errors
    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        with self.recorder.track() as tracked:
            name, version = _requested(request.model_spec)
            if not request.inputs:
                raise InvalidInput("the request has no inputs")
            wanted = list(request.output_filter)
            result = self.plane.infer(
                InferenceRequest(
                    inputs={key: _encoded(t, key) for key, t in request.inputs.items()},
                    model=name,
                    version=version,
                    deadline=deadline_of(context),
                    cancelled=lambda: not context.is_active(),
                    outputs=wanted or None,
                    output_alias=OUTPUT_ALIAS,
                    resolved=tracked.resolved,
                )
            )
            response = _response(result.model, result.version)
            alias_of = result.alias_of
            keys = wanted or [*result.outputs, *([OUTPUT_ALIAS] if alias_of else [])]
            converted: dict[str, tf_tensor_pb2.TensorProto] = {}  # the alias reuses its tensor
            for key in dict.fromkeys(keys):
                source = alias_of if (key == OUTPUT_ALIAS and alias_of) else key
                if source not in converted:
                    converted[source] = to_tensor_proto(result.outputs[source], source)
                response.outputs[key].CopyFrom(converted[source])
            return response

    @handle_errors
    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        name, version = _requested(request.model_spec)
        meta = self.plane.metadata(name, version)
        fields = list(request.metadata_field) or ["signature_def"]
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=_model_spec(meta.name, meta.version)
        )
        for field in fields:
            packed = any_pb2.Any()
            if field == "signature_def":
                sigs = get_model_metadata_pb2.SignatureDefMap()
                sigs.signature_def[SIGNATURE].CopyFrom(signature_def(meta))
                packed.Pack(sigs)
            elif field == "labels":
                if meta.labels is None:
                    continue
                names = np.array([label.encode() for label in meta.labels], dtype=object)
                packed = anytensor.pack(to_tensor_proto(names, "labels"))  # TF's type name
            else:
                raise InvalidInput(
                    f"unknown metadata field {shown(field)}; supported: 'signature_def', 'labels'"
                )
            response.metadata[field].CopyFrom(packed)
        return response
