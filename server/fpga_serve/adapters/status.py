"""The one place protocol-neutral errors become gRPC status codes, with request metrics."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from fpga_serve_client.errors import TensorConversionError

from fpga_serve.core.errors import FpgaServeError, Status, bounded
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
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, bounded(str(exc)))
        except FpgaServeError as exc:
            context.abort(grpc_code(exc), bounded(exc.message))
        except Exception:
            log.exception("internal error in %s", method.__qualname__)
            context.abort(grpc.StatusCode.INTERNAL, "internal server error (see server log)")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


class RequestRecorder:
    """Counts inference requests by model, version, protocol and final status code.

    Use ``with recorder.track() as t:``, set ``t.model``/``t.version`` once the model is
    resolved; requests for unknown models are counted under model ``_unknown`` so that clients
    cannot grow the label set. Metric children are looked up once per label set (the set is
    bounded: loaded models times status codes), not once per request.
    """

    def __init__(self, metrics: Metrics, protocol: str) -> None:
        self.metrics = metrics
        self.protocol = protocol
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}

    def track(self) -> Tracked:
        return Tracked(self)

    def _count(self, tracked: Tracked, code: grpc.StatusCode, seconds: float) -> None:
        ok = code is grpc.StatusCode.OK
        model = tracked.model or "_unknown"
        key = (model, tracked.version, code.name)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(
                model, tracked.version, self.protocol, code.name
            )
        counter.inc()
        if tracked.model:  # Triton's ModelStatistics: every request on a resolved version
            self.metrics.statistics.request(model, tracked.version, ok, seconds)
        if ok:
            pair = (model, tracked.version)
            latency = self._latencies.get(pair)
            if latency is None:
                latency = self._latencies[pair] = self.metrics.request_latency.labels(
                    model, tracked.version, self.protocol
                )
            latency.observe(seconds)


class Tracked:
    """One request being counted (a context manager: the status comes from how it exits)."""

    __slots__ = ("_recorder", "_start", "model", "version")

    def __init__(self, recorder: RequestRecorder) -> None:
        self.model = ""
        self.version = ""
        self._recorder = recorder
        self._start = 0.0

    def resolved(self, model: str, version: str) -> None:
        """The data plane's hook: the model version the request runs on."""
        self.model, self.version = model, version

    def __enter__(self) -> Tracked:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        seconds = time.perf_counter() - self._start
        self._recorder._count(self, grpc.StatusCode.OK if exc is None else code_of(exc), seconds)


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status an exception will be answered with (see ``handle_errors``)."""
    if isinstance(exc, TensorConversionError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, FpgaServeError):
        return grpc_code(exc)
    return grpc.StatusCode.INTERNAL
