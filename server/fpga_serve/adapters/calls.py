"""What every call to fpga-serve's own services goes through, in one gRPC server interceptor
(``Calls``), so that no servicer does it: its errors are answered with their status
(``status.answer``), and each inference request (TF Serving Predict, KServe v2 ModelInfer) is
counted by model, version, protocol and final code, with its latency and Triton's statistics.

The data plane tells the call which model version it resolved through ``resolved`` (the
request's hook, ``InferenceRequest.resolved``); a request that failed before resolution is
counted under model ``_unknown``, so that clients cannot grow the label set. Health and
reflection pass untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import grpc
from fpga_serve_client.protos import grpc_predict_v2_pb2, model_service_pb2, prediction_service_pb2

from fpga_serve.adapters.status import answer, code_of
from fpga_serve.service.dataplane import EncodedTensor, InferenceRequest
from fpga_serve.service.metrics import Metrics

PREDICTION_DESCRIPTOR = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
INFERENCE_DESCRIPTOR = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
MODEL_SERVICE_DESCRIPTOR = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
OWN_SERVICES = tuple(
    d.full_name for d in (PREDICTION_DESCRIPTOR, INFERENCE_DESCRIPTOR, MODEL_SERVICE_DESCRIPTOR)
)
INFERENCE_METHODS: dict[str, str] = {
    f"/{PREDICTION_DESCRIPTOR.full_name}/Predict": "tfserving",
    f"/{INFERENCE_DESCRIPTOR.full_name}/ModelInfer": "kserve_v2",
}
"""The inference methods (counted in fpga_serve_requests_total) and their protocol label."""
UNKNOWN_MODEL = "_unknown"

_PREFIXES = tuple(f"/{name}/" for name in OWN_SERVICES)

log = logging.getLogger(__name__)
_CURRENT: ContextVar[_Call | None] = ContextVar("fpga_serve_call", default=None)


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value (None when the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def inference_request(
    context: grpc.ServicerContext,
    inputs: dict[str, EncodedTensor],
    model: str,
    version: str | None,
    outputs: list[str] | None,
    output_alias: str | None = None,
) -> InferenceRequest:
    """The data plane's request for this call: what the converter read, with the call's
    deadline, its cancellation and the hook that tells the call its model version."""
    return InferenceRequest(
        inputs=inputs,
        model=model,
        version=version,
        outputs=outputs,
        output_alias=output_alias,
        deadline=deadline_of(context),
        cancelled=lambda: not context.is_active(),
        resolved=resolved,
    )


def resolved(model: str, version: str) -> None:
    """The data plane's hook: the current call runs on ``model`` ``version``."""
    call = _CURRENT.get()
    if call is not None:
        call.model, call.version = model, version


@contextmanager
def cancelled_after(context: grpc.ServicerContext, seconds: float, what: str) -> Iterator[None]:
    """Cancel the call if the block has not finished within ``seconds`` (a stalled client
    stream then ends with an error inside the block)."""

    def expire() -> None:
        log.warning("%s cancelled: not finished within %.0f s", what, seconds)
        context.cancel()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class _Call:
    """One inference request being counted."""

    __slots__ = ("model", "version")

    def __init__(self) -> None:
        self.model = ""
        self.version = ""


class _Recorder:
    """Request counts and latencies of one protocol; metric children are looked up once per
    label set (bounded: loaded models times status codes), not once per request."""

    def __init__(self, metrics: Metrics, protocol: str) -> None:
        self.metrics = metrics
        self.protocol = protocol
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}

    def count(self, call: _Call, code: grpc.StatusCode, seconds: float) -> None:
        model = call.model or UNKNOWN_MODEL
        key = (model, call.version, code.name)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(
                model, call.version, self.protocol, code.name
            )
        counter.inc()
        ok = code is grpc.StatusCode.OK
        if call.model:  # Triton's ModelStatistics: every request on a resolved version
            self.metrics.statistics.request(model, call.version, ok, seconds)
        if ok:
            pair = (model, call.version)
            latency = self._latencies.get(pair)
            if latency is None:
                latency = self._latencies[pair] = self.metrics.request_latency.labels(
                    model, call.version, self.protocol
                )
            latency.observe(seconds)


Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def _answered(behaviour: Behaviour, method: str) -> Behaviour:
    """``behaviour`` with its exceptions answered by status (``context.abort`` raises)."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behaviour(request, context)
        except Exception as exc:
            context.abort(*answer(exc, method))
            raise  # unreachable: abort raises

    return call


def _counted(behaviour: Behaviour, recorder: _Recorder) -> Behaviour:
    """``behaviour`` with the request counted under the code its outcome is answered with."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        tracked = _Call()
        token = _CURRENT.set(tracked)
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return behaviour(request, context)
        except Exception as exc:
            code = code_of(exc)
            raise
        finally:
            _CURRENT.reset(token)
            recorder.count(tracked, code, time.perf_counter() - start)

    return call


class Calls(grpc.ServerInterceptor):
    """Answers errors and counts inference requests for every method of ``OWN_SERVICES``."""

    def __init__(self, metrics: Metrics) -> None:
        self._recorders = {
            method: _Recorder(metrics, protocol) for method, protocol in INFERENCE_METHODS.items()
        }
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        """Per method: the handler as registered, and it wrapped (made once, reused)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if not method.startswith(_PREFIXES):
            return handler
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        recorder = self._recorders.get(method)
        if handler.request_streaming or handler.response_streaming:
            if handler.response_streaming or recorder is not None:
                raise ValueError(f"{method}: only unary and client-streaming calls are wrapped")
            assert handler.stream_unary is not None
            return grpc.stream_unary_rpc_method_handler(
                _answered(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        unary = handler.unary_unary
        assert unary is not None
        counted = unary if recorder is None else _counted(unary, recorder)
        return grpc.unary_unary_rpc_method_handler(
            _answered(counted, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
