"""The one place protocol-neutral errors become gRPC status codes and messages."""

from __future__ import annotations

import logging

import grpc
from fpga_serve_client.errors import TensorConversionError

from fpga_serve.core.errors import FpgaServeError, Status, bounded

log = logging.getLogger(__name__)

_CODES: dict[Status, grpc.StatusCode] = {status: grpc.StatusCode[status.name] for status in Status}

INTERNAL_MESSAGE = "internal server error (see server log)"


def grpc_code(error: FpgaServeError) -> grpc.StatusCode:
    return _CODES[error.status]


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status an exception is answered with (see ``answer``)."""
    if isinstance(exc, TensorConversionError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, FpgaServeError):
        return grpc_code(exc)
    return grpc.StatusCode.INTERNAL


def answer(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status and message an exception out of ``method`` is answered with: a deliberate
    error's own (bounded), anything else INTERNAL with a generic message (traceback logged)."""
    code = code_of(exc)
    if isinstance(exc, TensorConversionError):
        return code, bounded(str(exc))
    if isinstance(exc, FpgaServeError):
        return code, bounded(exc.message)
    log.error("internal error in %s", method, exc_info=exc)
    return code, INTERNAL_MESSAGE
