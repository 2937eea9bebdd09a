"""Remote model lifecycle (``fpga_serve.management.ModelService``): deploy a pipeline zip to a
running server, list, load, unload and delete models. PredictionClient inherits these.

    with PredictionClient("host:8500", access_token=key, use_ssl=True) as client:
        service = client.deploy("model_def.zip", name="resnet50")   # upload, validate, load
        print(service.run("cat.jpg")[:5])                            # class confidences
        service.delete()                                             # unload, then remove
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar

import grpc

from fpga_serve_client.errors import ServiceError
from fpga_serve_client.protos import model_service_pb2 as pb
from fpga_serve_client.protos import model_service_pb2_grpc

if TYPE_CHECKING:
    import numpy as np

    from fpga_serve_client.client import PredictionClient

T = TypeVar("T")

CHUNK_BYTES = 1 << 20
"""Bytes per upload message: far under any server's message limit."""
UPLOAD_TIMEOUT_S = 600.0
"""Default deadline of an upload, which includes validating and (for deploy) loading."""

Progress = Callable[[int, int], None]
"""progress(bytes_sent, total_bytes), called after each chunk."""
ZipSource = str | Path | bytes | BinaryIO


@dataclass(frozen=True)
class ModelStatus:
    """One model version on a server."""

    name: str
    version: str
    state: str
    """READY (loaded, serving) or UNAVAILABLE (stored but not loaded, or failed)."""
    reason: str = ""
    stored: bool = False
    """In the server's model repository (false for zips given to the server at start)."""
    size: int = 0

    @classmethod
    def from_proto(cls, message: pb.ModelVersionStatus) -> ModelStatus:
        return cls(
            message.name,
            message.version,
            message.state,
            message.reason,
            message.stored,
            message.size,
        )


class DeployedModel:
    """A model deployed with ``PredictionClient.deploy``: score with ``run``, remove with
    ``delete``."""

    def __init__(self, client: PredictionClient, status: ModelStatus) -> None:
        self.status = status
        self.name = status.name
        self.version = status.version
        self._owner = client
        self._client = client.for_model(status.name)

    def run(self, image: str | Path | bytes | IO[Any]) -> np.ndarray:
        """Class confidences for one image: a path, the encoded bytes, or an open file."""
        return self._client.score_image(read_image(image))

    def delete(self) -> list[ModelStatus]:
        """Unload this version (in-flight requests finish first) and remove it from the server."""
        return self._owner.delete_model(self.name, self.version)

    def __repr__(self) -> str:
        return f"DeployedModel({self.name!r}, version={self.version!r}, {self.status.state})"


def read_image(image: str | Path | bytes | IO[Any]) -> bytes:
    """Encoded image bytes from a path, bytes, or a file opened in binary or text mode (a text
    file is read through its binary buffer: the Brainwave how-to opens images with ``open(f)``)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, io.TextIOBase):
        buffer = getattr(image, "buffer", None)
        if buffer is None:
            raise TypeError("a text stream without a binary buffer cannot carry an image")
        return bytes(buffer.read())
    data = image.read()
    if isinstance(data, str):
        raise TypeError("open the image in binary mode ('rb')")
    return bytes(data)


def _zip_bytes(source: ZipSource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        return Path(source).expanduser().read_bytes()
    return bytes(source.read())


class ManagementMixin:
    """The lifecycle calls of PredictionClient (it provides the channel, keys and retries)."""

    _models: model_service_pb2_grpc.ModelServiceStub
    _metadata: tuple[tuple[str, str], ...]
    timeout: float

    def _call(self, method: Callable[..., T], request: Any, timeout: float) -> T:
        raise NotImplementedError  # PredictionClient's, with its retry policy

    def upload(
        self,
        source: ZipSource,
        name: str,
        version: str | int | None = None,
        *,
        load: bool = False,
        progress: Progress | None = None,
        timeout: float = UPLOAD_TIMEOUT_S,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> ModelStatus:
        """Store a pipeline zip on the server as ``name`` (version: the next one unless given),
        sent in chunks of ``chunk_bytes`` (under the server's message limit) with its size and
        sha256; with ``load``, also load and serve it. Not retried (the server keeps nothing of
        a failed upload: send it again)."""
        data = _zip_bytes(source)
        header = pb.UploadHeader(
            name=name,
            version="" if version is None else str(version),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            load=load,
        )

        def messages() -> Iterator[pb.UploadModelRequest]:
            yield pb.UploadModelRequest(header=header)
            view = memoryview(data)
            for start in range(0, len(data), chunk_bytes):
                yield pb.UploadModelRequest(chunk=bytes(view[start : start + chunk_bytes]))
                if progress is not None:
                    progress(min(start + chunk_bytes, len(data)), len(data))

        try:
            reply = self._models.UploadModel(messages(), timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise ServiceError(exc.code(), exc.details() or "") from None
        return ModelStatus.from_proto(reply.model)

    def deploy(
        self,
        source: ZipSource,
        name: str,
        version: str | int | None = None,
        *,
        progress: Progress | None = None,
        timeout: float = UPLOAD_TIMEOUT_S,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> DeployedModel:
        """Upload, validate, store and load a pipeline zip; returns a handle that scores
        (``run``) and removes (``delete``) it."""
        status = self.upload(
            source,
            name,
            version,
            load=True,
            progress=progress,
            timeout=timeout,
            chunk_bytes=chunk_bytes,
        )
        return DeployedModel(self, status)  # type: ignore[arg-type]

    def models(self, name: str = "") -> list[ModelStatus]:
        """Every model version the server knows (or only ``name``'s), with its state."""
        reply = self._call(self._models.ListModels, pb.ListModelsRequest(name=name), self.timeout)
        return [ModelStatus.from_proto(m) for m in reply.models]

    def load_model(
        self, name: str, version: str | int | None = None, timeout: float = UPLOAD_TIMEOUT_S
    ) -> ModelStatus:
        """Load (or reload) a stored version, the highest unless given."""
        request = pb.LoadModelRequest(name=name, version="" if version is None else str(version))
        return ModelStatus.from_proto(self._call(self._models.LoadModel, request, timeout).model)

    def unload_model(self, name: str, version: str | int | None = None) -> list[ModelStatus]:
        """Stop serving a version (every version unless given); it stays stored."""
        request = pb.UnloadModelRequest(name=name, version="" if version is None else str(version))
        reply = self._call(self._models.UnloadModel, request, UPLOAD_TIMEOUT_S)
        return [ModelStatus.from_proto(m) for m in reply.models]

    def delete_model(self, name: str, version: str | int | None = None) -> list[ModelStatus]:
        """Unload (in-flight requests finish first) and remove a version, or every version."""
        request = pb.DeleteModelRequest(name=name, version="" if version is None else str(version))
        reply = self._call(self._models.DeleteModel, request, UPLOAD_TIMEOUT_S)
        return [ModelStatus.from_proto(m) for m in reply.models]
