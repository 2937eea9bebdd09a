"""Protocol-neutral inference: what every adapter (TF Serving, KServe v2) calls."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from fpga_serve.core.errors import (
    InvalidInput,
    ModelNotFound,
    ModelRetired,
    ShuttingDown,
    shown,
)
from fpga_serve.core.types import BatchingConfig, RequestLimits, TensorHeader, TensorSpec
from fpga_serve.service.metrics import Metrics
from fpga_serve.service.models import ModelRegistry, ServedModel
from fpga_serve.service.statistics import VersionStatistics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedTensor:
    """An input as a protocol received it: what it declares, and how to decode it (called only
    after the declaration passed every check, at most once per request)."""

    header: TensorHeader
    decode: Callable[[], np.ndarray]

    @classmethod
    def of(cls, array: np.ndarray) -> EncodedTensor:
        return cls(TensorHeader.of(array), lambda: array)


def _ignore(name: str, version: str) -> None:
    pass


@dataclass
class InferenceRequest:
    """One request as every protocol sees it: the model as the caller named it (the data plane
    resolves it, once), inputs not yet decoded."""

    inputs: Mapping[str, EncodedTensor | np.ndarray]
    model: str = ""
    version: str | None = None
    """None or "": the newest version."""
    outputs: list[str] | None = None
    """Output names to return; None: all outputs."""
    output_alias: str | None = None
    """A name that also stands for a model's only output (TF Serving's ``output_alias``)."""
    deadline: float | None = None
    """time.monotonic() after which the caller no longer wants the answer."""
    cancelled: Callable[[], bool] = lambda: False
    """True once the caller has gone away."""
    resolved: Callable[[str, str], None] = field(default=_ignore)
    """Told the (model, version) the request runs on, each time it is resolved."""


@dataclass
class InferenceResponse:
    model: str
    version: str
    outputs: dict[str, np.ndarray]
    alias_of: str | None = None
    """The output that ``output_alias`` stands for on this model (it has only that one)."""
    labels: list[str] | None = None
    """The model's class names (for classification answers), when it has them."""


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: str
    versions: list[str]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    input_aliases: dict[str, str]
    labels: list[str] | None
    stages: list[tuple[str, str]]
    """(stage name, kind) in order."""


class DataPlane:
    """Runs inference on loaded models and answers readiness questions."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self._inflight = 0
        self._idle = threading.Condition()
        self._cut: ShuttingDown | None = None
        self._unanswered = 0  # cut off at the grace but not answered by it

    def infer(self, request: InferenceRequest) -> InferenceResponse:
        """``resolve_and_run`` for one request, counted as in flight (``drain`` waits for it)."""
        with self._idle:
            if self._cut is not None:
                raise self._cut
            self._inflight += 1
        try:
            return self.resolve_and_run(request)
        finally:
            with self._idle:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.notify_all()

    def running_unanswered(self) -> int:
        """Requests in flight that only their own end can answer: all of them before ``drain``
        cut them off; after it, those it could not answer (executing in their RPC thread,
        where nothing interrupts them) while they still run."""
        with self._idle:
            if self._cut is None:
                return self._inflight
            return min(self._inflight, self._unanswered)

    def drain(self, deadline: float) -> int:
        """Shutdown: let the requests in flight finish until ``deadline`` (time.monotonic()),
        then cut off the rest: they are answered ShuttingDown (UNAVAILABLE, retryable) now —
        those queued for a batch and those in a batch still executing on a batching worker;
        one executing in its RPC thread keeps it until gRPC cancels the call (also UNAVAILABLE
        to the client; ``running_unanswered`` counts those). Returns how many were cut off,
        counted in fpga_serve_shutdown_cut_requests_total."""
        with self._idle:
            self._idle.wait_for(
                lambda: self._inflight == 0, timeout=max(0.0, deadline - time.monotonic())
            )
            cut = self._inflight
            self._cut = ShuttingDown(
                "the server is shutting down and its shutdown grace ran out before this "
                "request finished; retry (another replica will answer)"
            )
        answered = sum(model.cut(self._cut) for model in self.registry.loaded())
        with self._idle:
            self._unanswered = max(0, cut - answered)
        if cut:
            self.metrics.shutdown_cut.inc(cut)
            log.warning(f"shutdown: {cut} requests still in flight at the grace, cut off")
        return cut

    def resolve_and_run(self, request: InferenceRequest) -> InferenceResponse:
        """Resolve the model, check what the request declares against it and the limits, decode,
        execute. Raises FpgaServeError subclasses with a protocol-neutral status.

        The model is resolved here and only here: a version retired between resolution and
        execution (a swap) is resolved once more, so swaps fail no request.
        """
        if not request.inputs:
            raise InvalidInput("the request has no inputs")
        inputs = {
            key: value if isinstance(value, EncodedTensor) else EncodedTensor.of(value)
            for key, value in request.inputs.items()
        }
        declared = {key: value.header for key, value in inputs.items()}
        decoded: dict[str, np.ndarray] = {}
        for attempt in (1, 2):
            served = self.registry.get(request.model, request.version or None)
            request.resolved(served.name, served.version)
            alias_of = _alias_target(served, request.output_alias)
            wanted = _resolve_outputs(served, request.outputs, request.output_alias, alias_of)
            keys = served.pipeline.route(declared)  # every limit, before anything is decoded
            for key in keys:
                if key not in decoded:
                    decoded[key] = inputs[key].decode()
            bound = served.pipeline.take(decoded, keys)
            try:  # counts itself in fpga_serve_inflight_requests
                arrays = served.execute(bound, request.deadline, request.cancelled)
            except ModelRetired:
                # Swapped or unloaded between resolution and execution: resolve once more.
                if attempt == 2:
                    raise
                continue
            produced = {s.name: a for s, a in zip(served.outputs, arrays, strict=True)}
            return InferenceResponse(
                served.name,
                served.version,
                {n: produced[n] for n in wanted},
                alias_of,
                served.labels,
            )
        raise AssertionError("unreachable")

    def metadata(self, name: str = "", version: str | None = None) -> ModelMetadata:
        served = self.registry.get(name, version)
        return ModelMetadata(
            name=served.name,
            version=served.version,
            versions=self.registry.versions(served.name),
            inputs=served.inputs,
            outputs=served.outputs,
            input_aliases=dict(served.pipeline.input_aliases),
            labels=served.labels,
            stages=[(s.name, s.kind) for s in served.pipeline.stages],
        )

    @property
    def limits(self) -> RequestLimits:
        """What one request may declare."""
        return self.registry.limits

    @property
    def batching(self) -> BatchingConfig | None:
        return self.registry.batching

    def statistics(
        self, name: str = "", version: str | None = None
    ) -> list[tuple[str, str, VersionStatistics]]:
        """(name, version, totals) of every loaded version, or of one model's versions, or of
        one version, sorted; a model that is not loaded is ModelNotFound."""
        if name:
            meta = self.metadata(name, version)
            chosen = [version] if version else meta.versions
            versions = {(meta.name, v) for v in chosen}
        else:
            versions = {(m.name, m.version) for m in self.registry.loaded()}
        totals = self.metrics.statistics.snapshot()
        return [(n, v, totals.get((n, v), VersionStatistics())) for n, v in sorted(versions)]

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready when at least one model is loaded (every loaded model is ready once listed)."""
        return bool(self.registry.loaded())

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.registry.get(name, version)
        except ModelNotFound:
            return False
        return True


def _alias_target(served: ServedModel, alias: str | None) -> str | None:
    """The output ``alias`` stands for: the model's only output, unless one is named so."""
    names = [s.name for s in served.outputs]
    if alias is None or len(names) != 1 or alias in names:
        return None
    return names[0]


def _resolve_outputs(
    served: ServedModel, requested: list[str] | None, alias: str | None, alias_of: str | None
) -> list[str]:
    """The output names to return, in order; unknown names are the caller's error."""
    names = [s.name for s in served.outputs]
    if not requested:
        return names
    real = [alias_of if (alias_of and name == alias) else name for name in requested]
    for name in real:
        if name not in names:
            known = ", ".join(map(repr, names))
            raise InvalidInput(f"unknown output {shown(name)}; this model returns {known}")
    return list(dict.fromkeys(real))
