"""The one place protocol-neutral errors become gRPC status codes, with request metrics."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from fpga_serve_client.errors import TensorConversionError

from fpga_serve.core.errors import FpgaServeError, Status
from fpga_serve.service.metrics import Metrics

log = logging.getLogger(__name__)

_CODES: dict[Status, grpc.StatusCode] = {status: grpc.StatusCode[status.name] for status in Status}

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value (None when the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def grpc_code(error: FpgaServeError) -> grpc.StatusCode:
    return _CODES[error.status]


def handle_errors(
    method: Callable[[Any, Req, grpc.ServicerContext], Resp],
) -> Callable[[Any, Req, grpc.ServicerContext], Resp]:
    """Turn FpgaServeError into the matching status; anything else into INTERNAL (logged)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Req, context: grpc.ServicerContext) -> Resp:
        try:
            return method(self, request, context)
        except TensorConversionError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except FpgaServeError as exc:
            context.abort(grpc_code(exc), exc.message)
        except Exception:
            log.exception("internal error in %s", method.__qualname__)
            context.abort(grpc.StatusCode.INTERNAL, "internal server error (see server log)")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


class RequestRecorder:
    """Counts inference requests by model, version, protocol and final status code.

    Use ``with recorder.track() as t:``, set ``t.model``/``t.version`` once the model is
    resolved; requests for unknown models are counted under model ``_unknown`` so that clients
    cannot grow the label set.
    """

    def __init__(self, metrics: Metrics, protocol: str) -> None:
        self.metrics = metrics
        self.protocol = protocol

    @contextlib.contextmanager
    def track(self) -> Iterator[Tracked]:
        tracked = Tracked()
        start = time.perf_counter()
        try:
            yield tracked
        except BaseException as exc:
            self._count(tracked, code_of(exc), None)
            raise
        self._count(tracked, grpc.StatusCode.OK, time.perf_counter() - start)

    def _count(self, tracked: Tracked, code: grpc.StatusCode, seconds: float | None) -> None:
        model = tracked.model or "_unknown"
        self.metrics.requests.labels(model, tracked.version, self.protocol, code.name).inc()
        if seconds is not None:
            self.metrics.request_latency.labels(model, tracked.version, self.protocol).observe(
                seconds
            )


@dataclass
class Tracked:
    model: str = ""
    version: str = ""


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status an exception will be answered with (see ``handle_errors``)."""
    if isinstance(exc, TensorConversionError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, FpgaServeError):
        return grpc_code(exc)
    return grpc.StatusCode.INTERNAL
