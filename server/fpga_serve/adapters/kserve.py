"""KServe v2 / Open Inference Protocol gRPC (``inference.GRPCInferenceService``), with Triton's
model configuration, statistics and classification extensions.

Thin: each RPC converts (``convert/kserve.py``, ``convert/triton.py``), calls the data plane or
the model manager, converts back; errors and request metrics are the interceptor's
(``calls.py``)."""

from __future__ import annotations

import grpc
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import grpc_predict_v2_pb2_grpc
from fpga_serve_client.protos import triton_pb2 as tp

from fpga_serve import __version__
from fpga_serve.adapters.calls import Runner
from fpga_serve.adapters.convert import kserve as convert
from fpga_serve.adapters.convert import triton
from fpga_serve.core.errors import InvalidInput
from fpga_serve.service.dataplane import DataPlane
from fpga_serve.service.lifecycle import ModelManager
from fpga_serve.service.remote import ModelStore

SERVER_NAME = "fpga-serve"
EXTENSIONS = ("model_repository", *triton.EXTENSIONS)


class InferenceServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        plane: DataPlane,
        manager: ModelManager,
        runner: Runner,
        store: ModelStore | None = None,
    ) -> None:
        self.plane = plane
        self.manager = manager
        self.runner = runner
        self.store = store

    def ServerLive(
        self, request: v2.ServerLiveRequest, context: grpc.ServicerContext
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=self.plane.live())

    def ServerReady(
        self, request: v2.ServerReadyRequest, context: grpc.ServicerContext
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self.plane.ready())

    def ModelReady(
        self, request: v2.ModelReadyRequest, context: grpc.ServicerContext
    ) -> v2.ModelReadyResponse:
        if not request.name:
            raise InvalidInput("ModelReady needs a model name")
        ready = self.plane.model_ready(request.name, request.version or None)
        return v2.ModelReadyResponse(ready=ready)

    def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> v2.ServerMetadataResponse:
        return v2.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS)
        )

    def ModelMetadata(
        self, request: v2.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> v2.ModelMetadataResponse:
        meta = self.plane.metadata(request.name, request.version or None)
        return convert.metadata_response(meta)

    async def ModelInfer(  # type: ignore[override]
        self, request: v2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> v2.ModelInferResponse:
        classes = triton.class_counts(request)  # checked before anything runs

        def infer() -> v2.ModelInferResponse:
            result = self.plane.infer(convert.infer_request(request, context))
            return convert.infer_response(result, request, classes)

        return await self.runner.run(infer, request.model_name, request.model_version or None)

    # Triton's extensions -----------------------------------------------------------------

    def ModelConfig(
        self, request: tp.ModelConfigRequest, context: grpc.ServicerContext
    ) -> tp.ModelConfigResponse:
        meta = self.plane.metadata(request.name, request.version or None)
        config = triton.model_config(meta, self.plane.limits, self.plane.batching, convert.PLATFORM)
        return tp.ModelConfigResponse(config=config)

    def ModelStatistics(
        self, request: tp.ModelStatisticsRequest, context: grpc.ServicerContext
    ) -> tp.ModelStatisticsResponse:
        stats = self.plane.statistics(request.name, request.version or None)
        return triton.statistics_response(stats)

    # Model repository extension ----------------------------------------------------------

    def RepositoryIndex(
        self, request: v2.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryIndexResponse:
        return convert.index_response(self.manager.index(ready_only=request.ready))

    def RepositoryModelLoad(
        self, request: v2.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryModelLoadResponse:
        files = convert.load_files(request)
        if not files:
            self.manager.load(request.model_name)
        elif self.store is None:
            raise InvalidInput("this server takes no model files (no model store)")
        else:
            self.store.upload_files(request.model_name, files)
        return v2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(
        self, request: v2.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> v2.RepositoryModelUnloadResponse:
        if not request.model_name:
            raise InvalidInput("RepositoryModelUnload needs a model_name")
        self.manager.unload(request.model_name)
        return v2.RepositoryModelUnloadResponse()
