"""KServe v2 / Open Inference Protocol gRPC (``inference.GRPCInferenceService``)."""

from __future__ import annotations

import grpc
from fpga_serve_client.convert import from_infer_input, infer_input_header, to_infer_output
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc

from fpga_serve import __version__
from fpga_serve.adapters import triton
from fpga_serve.adapters.status import RequestRecorder, deadline_of, handle_errors
from fpga_serve.core.errors import InvalidInput, shown
from fpga_serve.core.types import TensorHeader, TensorSpec
from fpga_serve.service.dataplane import DataPlane, EncodedTensor, InferenceRequest
from fpga_serve.service.lifecycle import ModelManager
from fpga_serve.service.remote import FILE_PREFIX, ModelStore

PLATFORM = "fpga_serve_pipeline"
SERVER_NAME = "fpga-serve"


def _tensor_metadata(spec: TensorSpec) -> v2.ModelMetadataResponse.TensorMetadata:
    return v2.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.dtype.value, shape=list(spec.shape)
    )


def _encoded(tensor: v2.ModelInferRequest.InferInputTensor, raw: bytes | None) -> EncodedTensor:
    """A request tensor's declaration, and its decoding for later (after every check)."""
    wire = infer_input_header(tensor, raw)
    return EncodedTensor(
        TensorHeader(wire.datatype, wire.shape, wire.payload_bytes),
        lambda: from_infer_input(tensor, raw),
    )


class InferenceServicer(
    triton.TritonExtensions, grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer
):
    """Liveness, readiness, metadata and ModelInfer (raw or typed contents; raw replies), with
    Triton's model configuration, statistics and classification extensions (adapters/triton.py)."""

    extensions: tuple[str, ...] = ("model_repository", *triton.EXTENSIONS)
    platform = PLATFORM

    def __init__(
        self, plane: DataPlane, manager: ModelManager, store: ModelStore | None = None
    ) -> None:
        self.plane = plane
        self.manager = manager
        self.store = store
        self.recorder = RequestRecorder(plane.metrics, "kserve_v2")

    @handle_errors
    def ServerLive(
        self, request: v2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=self.plane.live())

    @handle_errors
    def ServerReady(
        self, request: v2.ServerReadyRequest, context: grpc.ServicerContext
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.plane.ready())

    @handle_errors
    def ModelReady(
        self, request: v2.ModelReadyRequest, context: grpc.ServicerContext
    ) -> v2.ModelReadyResponse:
        if not request.name:
            raise InvalidInput("ModelReady needs a model name")
        return v2.ModelReadyResponse(
            ready=self.plane.model_ready(request.name, request.version or None)
        )

    @handle_errors
    def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=list(self.extensions)
        )

    @handle_errors
    def ModelMetadata(
        self, request: v2.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> v2.ModelMetadataResponse:
        meta = self.plane.metadata(request.name, request.version or None)
        return v2.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=PLATFORM,
            inputs=[_tensor_metadata(s) for s in meta.inputs],
            outputs=[_tensor_metadata(s) for s in meta.outputs],
        )

    @handle_errors
    def ModelInfer(
        self, request: v2.ModelInferRequest, context: grpc.ServicerContext
    ) -> v2.ModelInferResponse:
        with self.recorder.track() as tracked:
            raw = list(request.raw_input_contents)
            if raw and len(raw) != len(request.inputs):
                raise InvalidInput(
                    f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
                )
            if not request.inputs:
                raise InvalidInput("the request has no inputs")
            inputs = {}
            for index, tensor in enumerate(request.inputs):
                if tensor.name in inputs:
                    raise InvalidInput(f"input {shown(tensor.name)} given twice")
                inputs[tensor.name] = _encoded(tensor, raw[index] if raw else None)
            classes = triton.class_counts(request)
            result = self.plane.infer(
                InferenceRequest(
                    inputs=inputs,
                    model=request.model_name,
                    version=request.model_version or None,
                    deadline=deadline_of(context),
                    cancelled=lambda: not context.is_active(),
                    outputs=[o.name for o in request.outputs] or None,
                    resolved=tracked.resolved,
                )
            )
            response = v2.ModelInferResponse(
                model_name=result.model, model_version=result.version, id=request.id
            )
            labels = self.plane.metadata(result.model, result.version).labels if classes else None
            for key, value in result.outputs.items():
                array = (
                    triton.classify(value, classes[key], labels, key) if key in classes else value
                )
                tensor_out, raw_out = to_infer_output(key, array, raw=True)
                response.outputs.append(tensor_out)
                if raw_out is not None:
                    response.raw_output_contents.append(raw_out)
            return response

    # Model repository extension -----------------------------------------------------------

    @handle_errors
    def RepositoryIndex(
        self, request: v2.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryIndexResponse:
        return v2.RepositoryIndexResponse(
            models=[
                v2.RepositoryIndexResponse.ModelIndex(
                    name=e.name, version=e.version, state=e.state, reason=e.reason
                )
                for e in self.manager.index(ready_only=request.ready)
            ]
        )

    @handle_errors
    def RepositoryModelLoad(
        self, request: v2.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryModelLoadResponse:
        if not request.model_name:
            raise InvalidInput("RepositoryModelLoad needs a model_name")
        files = {
            key: value.bytes_param
            for key, value in request.parameters.items()
            if key.startswith(FILE_PREFIX)
        }
        if files:  # Triton's load_model(files=...): the zip itself
            if self.store is None:
                raise InvalidInput("this server takes no model files (no model store)")
            self.store.upload_files(request.model_name, files)
        else:
            self.manager.load(request.model_name)
        return v2.RepositoryModelLoadResponse()

    @handle_errors
    def RepositoryModelUnload(
        self, request: v2.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryModelUnloadResponse:
        if not request.model_name:
            raise InvalidInput("RepositoryModelUnload needs a model_name")
        self.manager.unload(request.model_name)
        return v2.RepositoryModelUnloadResponse()
