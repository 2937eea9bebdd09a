"""What every call to fpga-serve's own services goes through, in one gRPC server interceptor
(``Calls``), so that no servicer does it: its errors are answered with their status
(``status.answer``), and each inference request (TF Serving Predict, KServe v2 ModelInfer) is
counted by model, version, protocol and final code, with its latency and Triton's statistics.

The data plane tells the call which model version it resolved through ``resolved`` (the
request's hook, ``InferenceRequest.resolved``); a request that failed before resolution is
counted under model ``_unknown``, so that clients cannot grow the label set. Health and
reflection pass untouched.

The server is grpc.aio's (adapters/server.py): one event loop thread does all of gRPC's work.
The inference methods are coroutines whose body (conversion, checks, the data plane) ``Runner``
runs on the loop itself when the model's recent runs were short and its batching would run the
request at once (no thread hand-off: a hand-off per call costs more than a small model's run),
else on an RPC thread of the pool, so a long run never holds the loop. Every other method is a
plain function, which grpc.aio runs on an RPC thread of the same pool.

Each call is counted from its wait for a slot (``Calls._slot``, before gRPC reads its request)
until gRPC has finished it (the call's task ends: its answer sent, or the call cancelled), by
the slot's own done callback; an inference call's errors and its count are one coroutine
(``_counted``): the hot path has no layer it does not need. At shutdown (``refuse``) a call that
arrives is answered UNAVAILABLE here while gRPC still accepts calls (a gRPC server shutting
down answers CANCELLED), and the server waits for the calls it admitted (``wait_admitted``) and
for the answers to the requests it cut off (``wait_answered``) before it stops gRPC.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from contextvars import ContextVar
from typing import Any, TypeVar, cast

import grpc
from fpga_serve_client.protos import grpc_predict_v2_pb2, model_service_pb2, prediction_service_pb2

from fpga_serve.adapters.status import answer, code_of
from fpga_serve.core.errors import FpgaServeError
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
T = TypeVar("T")

_PREFIXES = tuple(f"/{name}/" for name in OWN_SERVICES)

log = logging.getLogger(__name__)
_CURRENT: ContextVar[_Call | None] = ContextVar("fpga_serve_call", default=None)


AnyContext = grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]
"""A call's context: a plain function's (an RPC thread) or a coroutine's (the loop)."""


def deadline_of(context: AnyContext) -> float | None:
    """The call's deadline as a time.monotonic() value (None when the client set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def inference_request(
    context: AnyContext,
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
        cancelled=gone(context),
        resolved=resolved,
    )


def gone(context: AnyContext) -> Callable[[], bool]:
    """True once the call's client has gone away (a grpc.aio context says so with
    ``cancelled``, a thread-pool server's with ``is_active``)."""
    active = getattr(context, "is_active", None)
    if active is not None:
        return lambda: not active()
    return cast("grpc.aio.ServicerContext[Any, Any]", context).cancelled


class Runner:
    """Where an inference call's body runs: on the event loop itself when ``inline(model,
    version)`` says so (ModelRegistry.runs_inline: the model's recent runs were short,
    service/run_time.py), else on an RPC thread (``pool``), awaited, so that the loop goes on
    serving other calls meanwhile."""

    def __init__(self, pool: futures.Executor, inline: Callable[[str, str | None], bool]) -> None:
        self._pool = pool
        self._inline = inline

    async def run(self, body: Callable[[], T], model: str, version: str | None) -> T:
        if self._inline(model, version):
            return body()
        return await self.on_thread(body)

    def on_thread(self, body: Callable[[], T]) -> asyncio.Future[T]:
        """``body`` on an RPC thread, with the call's context variables (the request being
        counted); awaitable from the loop."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, contextvars.copy_context().run, body)


def resolved(model: str, version: str) -> None:
    """The data plane's hook: the current call runs on ``model`` ``version``."""
    call = _CURRENT.get()
    if call is not None:
        call.model, call.version = model, version


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


Behaviour = Callable[[Any, Any], Any]
"""A method's behaviour: a function of (request, context), or a coroutine function (grpc.aio
runs those on its loop, the others on an RPC thread): each wrapper below keeps its kind."""
_Handlers = tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]
"""A method's handler wrapped: for a call admitted, and for one refused (shutdown)."""


def _answered(behaviour: Behaviour, method: str) -> Behaviour:
    """``behaviour`` with its exceptions answered by status (``context.abort`` raises)."""
    if inspect.iscoroutinefunction(behaviour):

        async def acall(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behaviour(request, context)
            except Exception as exc:
                await context.abort(*answer(exc, method))
                raise  # unreachable: abort raises

        return acall

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behaviour(request, context)
        except Exception as exc:
            context.abort(*answer(exc, method))
            raise  # unreachable: abort raises

    return call


def _counted(behaviour: Behaviour, recorder: _Recorder, method: str) -> Behaviour:
    """``behaviour`` (an inference method: a coroutine function) with its exceptions answered
    by status, as ``_answered``, and the request counted under the code its outcome is answered
    with: one coroutine, not two (each layer is a frame more on every call of the hot path)."""
    if not inspect.iscoroutinefunction(behaviour):
        raise TypeError("inference methods are coroutine functions (see Runner)")
    run: Callable[[Any, Any], Awaitable[Any]] = behaviour
    perf = time.perf_counter
    ok = grpc.StatusCode.OK

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        tracked = _Call()
        token = _CURRENT.set(tracked)
        start = perf()
        try:
            result = await run(request, context)
        except Exception as exc:
            # Counted before abort, which sends the status: the client never sees an answer
            # that is not counted yet.
            _CURRENT.reset(token)
            recorder.count(tracked, code_of(exc), perf() - start)
            await context.abort(*answer(exc, method))
            raise  # unreachable: abort raises
        except BaseException:  # cancelled: counted as before, under OK
            _CURRENT.reset(token)
            recorder.count(tracked, ok, perf() - start)
            raise
        _CURRENT.reset(token)
        recorder.count(tracked, ok, perf() - start)
        return result

    return call


class _Gate:
    """Where each call to our services is counted, from taking its slot (``Calls._slot``, before
    gRPC reads its request) to gRPC finishing it (its answer sent, or the call cancelled: the
    call's task ends); a call that arrived before ``refusal`` was set (shutdown) is admitted, one
    that arrived after is answered with it."""

    def __init__(self) -> None:
        self.changed = threading.Condition(threading.Lock())
        self.queued = 0  # calls waiting for a slot or an RPC thread
        self.open = 0  # calls holding a slot, not finished by gRPC
        self.admitted = 0  # of those, the ones admitted
        self.refusal: FpgaServeError | None = None
        self._watched = False  # someone waits (shutdown): tell them of every change

    def refused(self, request: Any, context: AnyContext) -> Any:
        raise self.refusal or AssertionError("refused before a refusal")

    async def refused_on_loop(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """``refused`` for a coroutine method (answered on the loop, no RPC thread taken)."""
        return self.refused(request, context)

    def queue(self, change: int) -> None:
        with self.changed:
            self.queued += change
            if self._watched:
                self.changed.notify_all()

    def start(self) -> bool:
        """A call has its slot: counted open, and admitted unless refusing (returned)."""
        with self.changed:
            admitted = self.refusal is None
            self.open += 1
            self.admitted += admitted
        return admitted

    def finished(self, admitted: bool) -> None:
        with self.changed:
            self.open -= 1
            self.admitted -= admitted
            if self._watched:
                self.changed.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            self._watched = True
            return self.changed.wait_for(done, timeout=max(0.0, timeout))


class _Pool(futures.ThreadPoolExecutor):
    """gRPC's RPC threads, telling the gate how many calls wait for one."""

    def __init__(self, gate: _Gate, workers: int) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="rpc")
        self._gate = gate

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> futures.Future[T]:
        self._gate.queue(1)

        def run() -> T:
            self._gate.queue(-1)
            return fn(*args, **kwargs)

        return super().submit(run)


class Calls(grpc.aio.ServerInterceptor):
    """Answers errors and counts inference requests for every method of ``OWN_SERVICES``, of
    which ``concurrency`` calls at most are under way at a time (the others wait, unread)."""

    def __init__(self, metrics: Metrics, concurrency: int) -> None:
        self._recorders = {
            method: _Recorder(metrics, protocol) for method, protocol in INFERENCE_METHODS.items()
        }
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, _Handlers]] = {}
        """Per method: the handler as registered, and it wrapped, admitted and refused (made
        once, reused)."""
        self._gate = _Gate()
        self._slots = asyncio.Semaphore(concurrency)

    def executor(self, workers: int) -> futures.ThreadPoolExecutor:
        """The RPC threads (``grpc.aio.server``'s ``migration_thread_pool``, and the Runner's):
        the calls waiting for one are counted too."""
        return _Pool(self._gate, workers)

    def refuse(self, error: FpgaServeError) -> None:
        """Answer every call that arrives from now on with ``error`` (shutdown: gRPC itself,
        shut down, answers CANCELLED a call that reaches it)."""
        with self._gate.changed:
            self._gate.refusal = error

    def wait_admitted(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until gRPC has finished every call admitted
        before ``refuse``; True when it has."""
        gate = self._gate
        return gate.wait(lambda: gate.admitted == 0 and gate.queued == 0, timeout)

    def wait_answered(self, running: Callable[[], int], timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until gRPC has finished every call but the
        ``running()`` ones (inference still executing, with nothing to answer it), their
        answers sent. True when it has."""
        gate = self._gate
        return gate.wait(lambda: gate.queued == 0 and gate.open <= running(), timeout)

    async def intercept_service(  # type: ignore[override]  # grpc-stubs: never None
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            if not method.startswith(_PREFIXES):
                return handler
            cached = self._wrapped[method] = (handler, self._wrap(method, handler))
        admitted, refused = cached[1]
        return admitted if await self._slot() else refused

    async def _slot(self) -> bool:
        """Wait for one of the ``concurrency`` slots of our services' calls, held until the
        call's task ends (answered, or cancelled before it started): gRPC reads a call's
        request only after this, so at most that many requests are in memory at a time (a
        thread-pool server reads it in its RPC thread). Waiting calls count as queued (a free
        slot is taken at once, with no await in between: nothing to count). The call is
        counted open (``_Gate``) from here to the task's end; True when it is admitted."""
        if self._slots.locked():
            gate = self._gate
            gate.queue(1)
            try:
                await self._slots.acquire()
            finally:
                gate.queue(-1)
        else:
            await self._slots.acquire()
        task = asyncio.current_task()
        assert task is not None
        admitted = self._gate.start()
        task.add_done_callback(self._free_admitted if admitted else self._free_refused)
        return admitted

    def _free_admitted(self, task: asyncio.Task[Any]) -> None:
        self._slots.release()
        self._gate.finished(True)

    def _free_refused(self, task: asyncio.Task[Any]) -> None:
        self._slots.release()
        self._gate.finished(False)

    def _refused(self, behaviour: Behaviour) -> Behaviour:
        """The refusal of the same kind as ``behaviour`` (coroutine or plain function)."""
        if inspect.iscoroutinefunction(behaviour):
            return self._gate.refused_on_loop
        return self._gate.refused

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> _Handlers:
        recorder = self._recorders.get(method)
        if handler.request_streaming or handler.response_streaming:
            if handler.response_streaming or recorder is not None:
                raise ValueError(f"{method}: only unary and client-streaming calls are wrapped")
            assert handler.stream_unary is not None
            stream_unary = handler.stream_unary
            made = [
                grpc.stream_unary_rpc_method_handler(
                    _answered(behaviour, method),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
                for behaviour in (stream_unary, self._refused(stream_unary))
            ]
            return made[0], made[1]
        unary = handler.unary_unary
        assert unary is not None
        made = []
        for behaviour in (unary, self._refused(unary)):
            made.append(
                grpc.unary_unary_rpc_method_handler(
                    _answered(behaviour, method)
                    if recorder is None
                    else _counted(behaviour, recorder, method),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
            )
        return made[0], made[1]
