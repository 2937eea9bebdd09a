"""Assembles the gRPC server: servicers, health, reflection and the Prometheus endpoint.

gRPC is grpc.aio's server, on an asyncio event loop in a thread of its own (``_Loop``): one
thread receives, parses and answers every call, with no hand-off to another thread for the
calls the loop can run itself (calls.py, ``Runner``). Everything else in the server is plain
threads, as before: ``Server``'s methods may be called from any thread but the loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
from fpga_serve_client.protos import model_service_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fpga_serve.adapters import wire
from fpga_serve.adapters.auth import AuthInterceptor, KeyRing
from fpga_serve.adapters.calls import (
    INFERENCE_DESCRIPTOR,
    MODEL_SERVICE_DESCRIPTOR,
    PREDICTION_DESCRIPTOR,
    Calls,
    Runner,
)
from fpga_serve.adapters.kserve import InferenceServicer
from fpga_serve.adapters.management import ModelServicer
from fpga_serve.adapters.metrics_http import MetricsHTTP
from fpga_serve.adapters.tfserving import PredictionServicer
from fpga_serve.core.errors import FpgaServeError, ShuttingDown
from fpga_serve.core.settings import ServerSettings
from fpga_serve.service import DataPlane, Metrics, ModelRegistry
from fpga_serve.service.devices import DeviceHolder
from fpga_serve.service.lifecycle import ModelManager
from fpga_serve.service.remote import ModelStore

log = logging.getLogger(__name__)

CUT_FLUSH_S = 0.5
"""After the shutdown grace: the longest the answers to cut-off requests get to go out (the
wait ends as soon as gRPC has sent them all) before gRPC cancels the calls still running."""
CANCEL_FLUSH_S = 0.2
"""Then the longest gRPC gets to end the calls it cancelled (UNAVAILABLE to their clients)."""
STOP_SLACK_S = 1.0
"""``stop`` returns within the grace plus this (the two flushes, then releasing the device and
the models without waiting for work still running; README, Shutdown)."""

SERVING_SERVICES = (PREDICTION_DESCRIPTOR.full_name, INFERENCE_DESCRIPTOR.full_name)
T = TypeVar("T")


class _Loop:
    """An asyncio event loop running in a daemon thread of its own (gRPC's)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="grpc-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, work: Coroutine[Any, Any, T]) -> futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def run(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on the loop: waited for from another thread, only scheduled from the
        loop's own (which must not wait for itself)."""
        if threading.current_thread() is self._thread:
            self.loop.create_task(work)
        else:
            self.submit(work).result()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on the loop's thread (grpc.aio's objects live there), its result."""

        async def run() -> T:
            return fn()

        return self.submit(run()).result()

    async def after(self, work: Awaitable[object]) -> None:
        """Await ``work``, then stop the loop (its thread ends)."""
        try:
            await work
        finally:
            self.loop.stop()


class Server:
    """One fpga-serve process: gRPC on ``settings.port``, /metrics on ``settings.metrics_port``.

    Stateless apart from its loaded models. Health (grpc.health.v1) answers for the whole server
    (service ""), for each inference service, and for each model name: NOT_SERVING until the
    models given at start are loaded, SERVING after.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.devices = DeviceHolder(
            settings.device,
            self.metrics.validation if settings.device_validate else None,
            {
                "overlay": settings.overlay,
                "pynq_simulate": settings.pynq_simulate,
                "pynq_sim_board": settings.pynq_sim_board,
                "twin_path": settings.twin_path,
                "twin_isolated": settings.twin_isolated,
                "twin_threads": settings.twin_threads,
                "device_timeout_s": settings.device_timeout_s,
            },
            busy=self.metrics.device_busy_hook,
            cycles=self.metrics.device_cycles_hook,
        )
        self.registry = ModelRegistry(
            self.devices.context,
            self.metrics,
            limits=settings.request_limits(),
            batching=settings.batching(),
            inline_max_s=settings.inline_max_us / 1e6,
        )
        self.plane = DataPlane(self.registry, self.metrics)
        self.manager = ModelManager(self.registry, settings.model_repository, self._sync_health)
        self.store = ModelStore(self.manager, settings.max_upload_bytes)
        self._loop = _Loop()
        # grpc.aio's own health servicer: a Watch stream waits on the loop, holding no thread.
        self.health = self._loop.call(health.aio.HealthServicer)  # type: ignore[attr-defined]
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.keys = KeyRing(
            [k.get_secret_value() for k in settings.api_keys], settings.api_keys_file
        )
        auth = [AuthInterceptor(self.keys)] if self.keys.enabled else []
        # Errors answered, requests counted and tracked, at most `workers` calls at a time.
        self.calls = Calls(self.metrics, settings.workers)
        pool = self.calls.executor(settings.workers)
        self.runner = Runner(pool, self.registry.runs_inline)
        self._grpc = self._loop.call(lambda: self._build(pool, options, auth))
        self.grpc_port = 0
        self.metrics_port: int | None = None
        self._metrics_http: MetricsHTTP | None = None
        self._stopped = threading.Event()
        self._terminated = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name="device-supervisor", daemon=True
        )
        self._health_models: set[str] = set()
        self._set_health(serving=False)

    def _build(
        self, pool: futures.Executor, options: list[tuple[str, Any]], auth: list[Any]
    ) -> grpc.aio.Server:
        """The gRPC server and its services (on the loop's thread)."""
        server = grpc.aio.server(
            migration_thread_pool=pool, options=options, interceptors=[*auth, self.calls]
        )
        fields = self.settings.max_request_fields
        wire.add_service(
            server, PredictionServicer(self.plane, self.runner), PREDICTION_DESCRIPTOR, fields
        )
        wire.add_service(
            server,
            InferenceServicer(self.plane, self.manager, self.runner, self.store),
            INFERENCE_DESCRIPTOR,
            fields,
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.store, self.runner, self.settings.upload_timeout_s), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                *SERVING_SERVICES,
                MODEL_SERVICE_DESCRIPTOR.full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        return server

    def start(self) -> None:
        """Bind and start answering (health says NOT_SERVING until models are loaded)."""
        cfg = self.settings
        address = f"{cfg.host}:{cfg.port}"
        tls = _tls_files(cfg)
        if tls is None:
            port = self._loop.call(lambda: self._grpc.add_insecure_port(address))
        else:
            creds = _server_credentials(cfg)
            port = self._loop.call(lambda: self._grpc.add_secure_port(address, creds))
        if port == 0:
            raise FpgaServeError(f"cannot bind gRPC to {address}")
        self.grpc_port = port
        self._loop.submit(self._grpc.start()).result()
        self._supervisor.start()
        if cfg.metrics_port >= 0:
            self._metrics_http = MetricsHTTP(
                self.metrics.registry,
                cfg.host,
                cfg.metrics_port,
                keys=self.keys if cfg.metrics_auth else None,
                tls=tls,
            )
            self.metrics_port = self._metrics_http.port
        log.info(
            "gRPC on %s:%d, metrics on %s",
            self.settings.host,
            self.grpc_port,
            self.metrics_port if self.metrics_port is not None else "off",
        )

    def load_models(self, paths: list[Path]) -> None:
        """Load the given zips and the repository's models, then report SERVING."""
        self.manager.load_startup(paths)

    def _supervise(self) -> None:
        """After a device fault: NOT_SERVING, reset and re-verify the device, SERVING again."""
        interval = self.settings.device_check_interval_s
        while not self._stopped.wait(interval):
            if self.devices.healthy():
                continue
            self._sync_health()  # NOT_SERVING: orchestrators route around this replica
            # One interval to let in-flight work fail fast and probes notice, then reset.
            if self._stopped.wait(interval):
                return
            if self.devices.try_reset():
                self._sync_health()

    def _sync_health(self) -> None:
        """Per-model statuses follow what is loaded; the server is SERVING with any model and a
        healthy device."""
        if not self.devices.healthy():
            for name in ("", *SERVING_SERVICES, *self._health_models):
                self._health(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            return
        loaded = {m.name for m in self.registry.loaded()}
        for name in self._health_models - loaded:
            self._health(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in loaded:
            self._health(name, health_pb2.HealthCheckResponse.SERVING)
        self._health_models |= loaded
        self._set_health(serving=bool(loaded))

    def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVING_SERVICES):
            self._health(name, status)

    def _health(self, name: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        """Set one health status (on the loop, where the servicer and its watchers live)."""
        self._loop.run(self.health.set(name, status))

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting at once, let in-flight and queued work finish within ``grace``
        seconds, then answer what is left UNAVAILABLE and release models and the device
        without waiting for work still running: returns within ``grace`` + STOP_SLACK_S."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = 0.0 if grace is None else max(0.0, grace)
        deadline = time.monotonic() + grace
        # New calls are answered UNAVAILABLE by the interceptor from now on, while gRPC still
        # accepts them: gRPC answers CANCELLED a call that reaches it as it shuts down (a
        # client that saw NOT_SERVING and called again at once got that), so it shuts down
        # only at the end. Refused first, NOT_SERVING second: a client that saw NOT_SERVING
        # and called at once was admitted when this thread ran late between the two, and its
        # call, queued behind a long batch, was cut off at the grace.
        self.calls.refuse(
            ShuttingDown(
                "the server is shutting down and takes no new calls; retry (another replica "
                "will answer)"
            )
        )
        self._loop.run(self.health.enter_graceful_shutdown())
        # Every call admitted before the stop gets the grace (an inference request still being
        # converted has not reached the data plane yet); what is still in flight then, the
        # data plane cuts off.
        self.calls.wait_admitted(deadline - time.monotonic())
        self.plane.drain(deadline)
        stopped = self._loop.submit(self._grpc.stop(CUT_FLUSH_S))  # no call starts any more
        # The requests cut off are answered UNAVAILABLE by their RPC threads, which the cut
        # woke: on a loaded machine that takes a while, and a call gRPC cancelled first was
        # answered "Cancelling all calls" instead. gRPC cancels the calls still running only
        # when every call but those still executing in the data plane has been answered.
        if not self.calls.wait_answered(self.plane.running_unanswered, CUT_FLUSH_S):
            log.warning(f"shutdown: answers still unsent after {CUT_FLUSH_S} s, cancelling them")
        # What still runs (a batch executing in an RPC thread cannot be interrupted) gRPC
        # cancels now: UNAVAILABLE "Cancelling all calls" to the client.
        cancelled = self._loop.submit(self._grpc.stop(0))
        for stopping in (stopped, cancelled):
            with contextlib.suppress(futures.TimeoutError):
                stopping.result(CANCEL_FLUSH_S)
        if self._metrics_http is not None:
            self._metrics_http.close()
        self.devices.close()  # first: a worker still running cut-off work is killed
        self.registry.close(drain=False)
        # The loop ends when gRPC has: until then it still answers (a call gRPC cancelled
        # reaches its client through the loop) and a cut-off call's thread may still finish.
        self._loop.submit(self._loop.after(self._grpc.wait_for_termination()))
        self._terminated.set()

    def wait(self) -> None:
        """Until ``stop`` has finished."""
        self._terminated.wait()


def _tls_files(settings: ServerSettings) -> tuple[Path, Path] | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return settings.tls_cert, settings.tls_key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FpgaServeError(f"cannot read the TLS {what} {path}: {exc.strerror}") from exc


def _server_credentials(settings: ServerSettings) -> grpc.ServerCredentials:
    cert, key = _tls_files(settings) or (Path(), Path())
    client_ca = settings.tls_client_ca
    return grpc.ssl_server_credentials(
        [(_read(key, "key"), _read(cert, "certificate"))],
        root_certificates=_read(client_ca, "client CA") if client_ca else None,
        require_client_auth=client_ca is not None,
    )
