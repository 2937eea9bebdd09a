"""KServe v2 (Open Inference Protocol) messages to the data plane's requests and back: inputs
with raw or typed contents, outputs as raw contents (Triton's classification on the outputs
that ask for it), model metadata and the repository index."""

from __future__ import annotations

from fpga_serve_client.convert import from_infer_input, infer_input_header, to_infer_output
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2

from fpga_serve.adapters.calls import AnyContext, inference_request
from fpga_serve.adapters.convert import triton
from fpga_serve.core.errors import InvalidInput, shown
from fpga_serve.core.types import TensorHeader, TensorSpec
from fpga_serve.service.dataplane import (
    EncodedTensor,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
)
from fpga_serve.service.lifecycle import IndexEntry
from fpga_serve.service.remote import FILE_PREFIX

PLATFORM = "fpga_serve_pipeline"


def _encoded(tensor: v2.ModelInferRequest.InferInputTensor, raw: bytes | None) -> EncodedTensor:
    """A request tensor's declaration, and its decoding for later (after every check)."""
    wire = infer_input_header(tensor, raw)
    return EncodedTensor(
        TensorHeader(wire.datatype, wire.shape, wire.payload_bytes),
        lambda: from_infer_input(tensor, raw),
    )


def infer_request(request: v2.ModelInferRequest, context: AnyContext) -> InferenceRequest:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    inputs: dict[str, EncodedTensor] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InvalidInput(f"input {shown(tensor.name)} given twice")
        inputs[tensor.name] = _encoded(tensor, raw[index] if raw else None)
    return inference_request(
        context,
        inputs=inputs,
        model=request.model_name,
        version=request.model_version or None,
        outputs=[o.name for o in request.outputs] or None,
    )


def infer_response(
    result: InferenceResponse, request: v2.ModelInferRequest, classes: dict[str, int]
) -> v2.ModelInferResponse:
    """Every output as raw contents; those in ``classes`` (name -> k) as Triton's top k."""
    response = v2.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=request.id
    )
    for key, array in result.outputs.items():
        k = classes.get(key)
        tensor_out, raw_out = to_infer_output(
            key, array if k is None else triton.classify(array, k, result.labels, key), raw=True
        )
        response.outputs.append(tensor_out)
        if raw_out is not None:
            response.raw_output_contents.append(raw_out)
    return response


def _tensor_metadata(spec: TensorSpec) -> v2.ModelMetadataResponse.TensorMetadata:
    return v2.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.dtype.value, shape=list(spec.shape)
    )


def metadata_response(meta: ModelMetadata) -> v2.ModelMetadataResponse:
    return v2.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=PLATFORM,
        inputs=[_tensor_metadata(s) for s in meta.inputs],
        outputs=[_tensor_metadata(s) for s in meta.outputs],
    )


def index_response(entries: list[IndexEntry]) -> v2.RepositoryIndexResponse:
    return v2.RepositoryIndexResponse(
        models=[
            v2.RepositoryIndexResponse.ModelIndex(
                name=e.name, version=e.version, state=e.state, reason=e.reason
            )
            for e in entries
        ]
    )


def load_files(request: v2.RepositoryModelLoadRequest) -> dict[str, bytes]:
    """The files a load carries (Triton's ``load_model(files=...)``: the zip itself)."""
    if not request.model_name:
        raise InvalidInput("RepositoryModelLoad needs a model_name")
    return {
        key: value.bytes_param
        for key, value in request.parameters.items()
        if key.startswith(FILE_PREFIX)
    }
