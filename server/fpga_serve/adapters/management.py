"""``fpga_serve.management.ModelService``: the remote model lifecycle over gRPC.

Thin: each RPC converts (``convert/management.py``), calls ``service/remote.py``'s ModelStore,
converts back; errors are the interceptor's (``calls.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from fpga_serve_client.protos import model_service_pb2 as pb
from fpga_serve_client.protos import model_service_pb2_grpc

from fpga_serve.adapters.calls import cancelled_after
from fpga_serve.adapters.convert import management as convert
from fpga_serve.service.remote import ModelStore


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, store: ModelStore, upload_timeout_s: float = 600.0) -> None:
        self.store = store
        self.upload_timeout_s = upload_timeout_s

    def UploadModel(
        self, request_iterator: Iterator[pb.UploadModelRequest], context: grpc.ServicerContext
    ) -> pb.UploadModelResponse:
        header = convert.upload_header(next(request_iterator, None))
        self.store.check_header(header)  # refused before a byte is read
        what = f"upload of {header.name[:64]!r} (--upload-timeout-s)"
        with cancelled_after(context, self.upload_timeout_s, what):  # the upload cleans up
            status = self.store.upload(header, convert.chunks(request_iterator))
        return convert.upload_response(status, header)

    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=convert.statuses(self.store.list(request.name)))

    def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.ServicerContext
    ) -> pb.LoadModelResponse:
        loaded = self.store.load(request.name, request.version)
        return pb.LoadModelResponse(model=convert.to_status(loaded))

    def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.ServicerContext
    ) -> pb.UnloadModelResponse:
        removed = self.store.unload(request.name, request.version)
        return pb.UnloadModelResponse(models=convert.statuses(removed))

    def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.ServicerContext
    ) -> pb.DeleteModelResponse:
        deleted = self.store.delete(request.name, request.version)
        return pb.DeleteModelResponse(models=convert.statuses(deleted))
