"""TF Serving's PredictionService messages (what the Brainwave clients sent) to the data plane's
requests and back: model specs, inputs by name or alias (``images``), outputs by name and by
``output_alias``, the model's signature and labels as metadata."""

from __future__ import annotations

import numpy as np
from fpga_serve_client import anytensor
from fpga_serve_client.convert import (
    from_tensor_proto,
    tensor_proto_header,
    tf_datatype,
    to_tensor_proto,
)
from fpga_serve_client.protos import get_model_metadata_pb2, model_pb2, predict_pb2, tf_tensor_pb2
from google.protobuf import any_pb2

from fpga_serve.adapters.calls import AnyContext, inference_request
from fpga_serve.core.errors import InvalidInput, shown
from fpga_serve.core.types import DType, TensorHeader, TensorSpec
from fpga_serve.service.dataplane import (
    EncodedTensor,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
)

SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
OUTPUT_ALIAS = "output_alias"
"""The name the early Brainwave client read its result from (for single-output models)."""
METADATA_FIELDS = ("signature_def", "labels")

_TF_DTYPES: dict[DType, int] = {dtype: tf_datatype(dtype.value) for dtype in DType}


def model_spec(name: str, version: str) -> model_pb2.ModelSpec:
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
        spec = _SPECS[(name, version)] = model_spec(name, version).SerializeToString()
    response = predict_pb2.PredictResponse()
    response.model_spec.MergeFromString(spec)
    return response


def requested(spec: model_pb2.ModelSpec) -> tuple[str, str | None]:
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


def predict_request(request: predict_pb2.PredictRequest, context: AnyContext) -> InferenceRequest:
    name, version = requested(request.model_spec)
    return inference_request(
        context,
        inputs={key: _encoded(t, key) for key, t in request.inputs.items()},
        model=name,
        version=version,
        outputs=list(request.output_filter) or None,
        output_alias=OUTPUT_ALIAS,
    )


def predict_response(
    result: InferenceResponse, request: predict_pb2.PredictRequest
) -> predict_pb2.PredictResponse:
    """The outputs the request filtered for (all, and ``output_alias`` for a model's only
    output, when it named none); the alias reuses its output's tensor."""
    response = _response(result.model, result.version)
    alias_of = result.alias_of
    keys = list(request.output_filter) or [*result.outputs, *([OUTPUT_ALIAS] if alias_of else [])]
    converted: dict[str, tf_tensor_pb2.TensorProto] = {}
    for key in dict.fromkeys(keys):
        source = alias_of if (key == OUTPUT_ALIAS and alias_of) else key
        if source not in converted:
            converted[source] = to_tensor_proto(result.outputs[source], source)
        response.outputs[key].CopyFrom(converted[source])
    return response


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


def metadata_response(
    meta: ModelMetadata, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """The fields asked for (the signature when none): the signature map, or the labels as a
    ``tensorflow.TensorProto`` under TensorFlow's type name (absent for a model without)."""
    response = get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=model_spec(meta.name, meta.version)
    )
    for field in list(request.metadata_field) or ["signature_def"]:
        packed = any_pb2.Any()
        if field == "signature_def":
            sigs = get_model_metadata_pb2.SignatureDefMap()
            sigs.signature_def[SIGNATURE].CopyFrom(signature_def(meta))
            packed.Pack(sigs)
        elif field == "labels":
            if meta.labels is None:
                continue
            names = np.array([label.encode() for label in meta.labels], dtype=object)
            packed = anytensor.pack(to_tensor_proto(names, "labels"))
        else:
            supported = ", ".join(map(repr, METADATA_FIELDS))
            raise InvalidInput(f"unknown metadata field {shown(field)}; supported: {supported}")
        response.metadata[field].CopyFrom(packed)
    return response
