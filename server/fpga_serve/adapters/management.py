"""``fpga_serve.management.ModelService``: the remote model lifecycle over gRPC (thin: each RPC
converts, calls ``service/remote.py``'s ModelStore, converts back)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import grpc
from fpga_serve_client.protos import model_service_pb2 as pb
from fpga_serve_client.protos import model_service_pb2_grpc

from fpga_serve.adapters.status import handle_errors
from fpga_serve.core.errors import FpgaServeError, InvalidInput, Status
from fpga_serve.service.remote import ModelStore, UploadHeader, VersionStatus

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModelService"].full_name


def to_status(status: VersionStatus) -> pb.ModelVersionStatus:
    return pb.ModelVersionStatus(
        name=status.name,
        version=status.version,
        state=status.state,
        reason=status.reason,
        stored=status.stored,
        size=status.size,
    )


def from_header(message: pb.UploadHeader) -> UploadHeader:
    return UploadHeader(
        name=message.name,
        version=message.version,
        size=message.size,
        sha256=message.sha256.lower(),
        load=message.load,
    )


def _chunks(messages: Iterator[pb.UploadModelRequest]) -> Iterator[bytes]:
    try:
        for message in messages:
            if message.WhichOneof("part") != "chunk":
                raise InvalidInput("an upload is one header, then chunks: a second header came")
            yield message.chunk
    except grpc.RpcError:
        raise FpgaServeError(
            "the upload stream was cut off before its end; nothing was stored", Status.CANCELLED
        ) from None


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, store: ModelStore, upload_timeout_s: float = 600.0) -> None:
        self.store = store
        self.upload_timeout_s = upload_timeout_s

    @handle_errors
    def UploadModel(
        self, request_iterator: Iterator[pb.UploadModelRequest], context: grpc.ServicerContext
    ) -> pb.UploadModelResponse:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput("an upload starts with its header (name, size, sha256)")
        header = from_header(first.header)
        self.store.check_header(header)  # refused before a byte is read

        def expire() -> None:  # unblocks the stream's iterator: the upload cleans up
            log.warning(
                "upload of %r cancelled: not finished within %.0f s (--upload-timeout-s)",
                header.name[:64],
                self.upload_timeout_s,
            )
            context.cancel()

        timer = threading.Timer(self.upload_timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            status = self.store.upload(header, _chunks(request_iterator))
        finally:
            timer.cancel()
        return pb.UploadModelResponse(model=to_status(status), sha256=header.sha256)

    @handle_errors
    def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[to_status(s) for s in self.store.list(request.name)])

    @handle_errors
    def LoadModel(
        self, request: pb.LoadModelRequest, context: grpc.ServicerContext
    ) -> pb.LoadModelResponse:
        return pb.LoadModelResponse(model=to_status(self.store.load(request.name, request.version)))

    @handle_errors
    def UnloadModel(
        self, request: pb.UnloadModelRequest, context: grpc.ServicerContext
    ) -> pb.UnloadModelResponse:
        removed = self.store.unload(request.name, request.version)
        return pb.UnloadModelResponse(models=[to_status(s) for s in removed])

    @handle_errors
    def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.ServicerContext
    ) -> pb.DeleteModelResponse:
        deleted = self.store.delete(request.name, request.version)
        return pb.DeleteModelResponse(models=[to_status(s) for s in deleted])
