"""``fpga_serve.management.ModelService``: the remote model lifecycle over gRPC.

Thin: each RPC converts (``convert/management.py``), calls ``service/remote.py``'s ModelStore,
converts back; errors are the interceptor's (``calls.py``)."""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import AsyncIterator, Iterator

import grpc
from fpga_serve_client.protos import model_service_pb2 as pb
from fpga_serve_client.protos import model_service_pb2_grpc

from fpga_serve.adapters.calls import Runner
from fpga_serve.adapters.convert import management as convert
from fpga_serve.core.errors import FpgaServeError, Status
from fpga_serve.service.remote import ModelStore, VersionStatus

log = logging.getLogger(__name__)

FEED_DEPTH = 4
"""Upload messages read from the stream and not yet written (each at most one gRPC message)."""


class _Feed:
    """Messages from the event loop (which reads the stream) to the RPC thread that stores
    them, at most FEED_DEPTH waiting: a client faster than the disk is held back by gRPC's
    flow control, not buffered here."""

    _END = object()

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(FEED_DEPTH)
        self._ended = self._abandoned = False

    async def put(self, message: pb.UploadModelRequest) -> bool:
        """Pass ``message`` on; False when the store has stopped reading (it refused)."""
        await self._room.acquire()
        if self._abandoned:
            return False
        self._queue.put(message)
        return True

    def abandon(self) -> None:
        """On the loop: the store has finished, nothing more is read."""
        self._abandoned = True
        self._room.release()  # wakes a put waiting for room

    def end(self, error: FpgaServeError | None = None) -> None:
        """The stream's end (``error``: it did not end well); only the first end counts."""
        if not self._ended:
            self._ended = True
            self._queue.put(error or self._END)

    def __iter__(self) -> Iterator[pb.UploadModelRequest]:
        while True:
            item = self._queue.get()
            if isinstance(item, FpgaServeError):
                raise item
            if item is self._END:
                return
            self._loop.call_soon_threadsafe(self._room.release)
            assert isinstance(item, pb.UploadModelRequest)
            yield item


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, store: ModelStore, runner: Runner, upload_timeout_s: float = 600.0) -> None:
        self.store = store
        self.runner = runner
        self.upload_timeout_s = upload_timeout_s

    async def UploadModel(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[pb.UploadModelRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadModelResponse:
        """The stream is read on the loop, within --upload-timeout-s, and stored (sha256,
        validation, commit, load) on an RPC thread as it arrives."""
        header = convert.upload_header(await anext(aiter(request_iterator), None))
        self.store.check_header(header)  # refused before a byte is read
        feed = _Feed()
        stored = self.runner.on_thread(lambda: self.store.upload(header, convert.chunks(feed)))

        def finished(done: asyncio.Future[VersionStatus]) -> None:
            feed.abandon()
            if not done.cancelled():
                done.exception()  # retrieved here when nobody awaits it (the client left)

        stored.add_done_callback(finished)
        ending: FpgaServeError | None = convert.cut_off()  # unless it ends, or times out
        try:
            async with asyncio.timeout(self.upload_timeout_s):
                async for message in request_iterator:
                    if not await feed.put(message):
                        break  # the store refused the upload: its error is the answer
            ending = None
        except TimeoutError:
            log.warning(
                "upload of %r cancelled: not finished within %.0f s",
                header.name[:64],
                self.upload_timeout_s,
            )
            ending = FpgaServeError(
                f"the upload was not finished within {self.upload_timeout_s:.0f} s "
                "(--upload-timeout-s); nothing was stored",
                Status.DEADLINE_EXCEEDED,
            )
        finally:
            feed.end(ending)
        return convert.upload_response(await stored, header)

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
