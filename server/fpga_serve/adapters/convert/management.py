"""fpga-serve's ModelService messages to the model store's calls and back: an upload's header
and chunks, every version's status."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fpga_serve_client.protos import model_service_pb2 as pb

from fpga_serve.core.errors import FpgaServeError, InvalidInput, Status
from fpga_serve.service.remote import UploadHeader, VersionStatus


def to_status(status: VersionStatus) -> pb.ModelVersionStatus:
    return pb.ModelVersionStatus(
        name=status.name,
        version=status.version,
        state=status.state,
        reason=status.reason,
        stored=status.stored,
        size=status.size,
    )


def upload_header(first: pb.UploadModelRequest | None) -> UploadHeader:
    """The header an upload stream starts with."""
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidInput("an upload starts with its header (name, size, sha256)")
    message = first.header
    return UploadHeader(
        name=message.name,
        version=message.version,
        size=message.size,
        sha256=message.sha256.lower(),
        load=message.load,
    )


def chunks(messages: Iterable[pb.UploadModelRequest]) -> Iterator[bytes]:
    """The bytes of the chunks after the header."""
    for message in messages:
        if message.WhichOneof("part") != "chunk":
            raise InvalidInput("an upload is one header, then chunks: a second header came")
        yield message.chunk


def cut_off() -> FpgaServeError:
    """What an upload whose stream ended before its last chunk (the client went away) is."""
    return FpgaServeError(
        "the upload stream was cut off before its end; nothing was stored", Status.CANCELLED
    )


def upload_response(status: VersionStatus, header: UploadHeader) -> pb.UploadModelResponse:
    return pb.UploadModelResponse(model=to_status(status), sha256=header.sha256)


def statuses(found: list[VersionStatus]) -> list[pb.ModelVersionStatus]:
    return [to_status(s) for s in found]
