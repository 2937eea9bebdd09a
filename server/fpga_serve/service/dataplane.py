"""Protocol-neutral inference: what every adapter (TF Serving, KServe v2) calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fpga_serve.core.errors import InvalidInput, ModelNotFound, ModelRetired
from fpga_serve.core.types import TensorSpec
from fpga_serve.service.metrics import Metrics
from fpga_serve.service.models import ModelRepository, ServedModel


@dataclass
class InferenceRequest:
    """One request as every protocol sees it."""

    inputs: dict[str, np.ndarray]
    model: str = ""
    version: str | None = None
    outputs: list[str] | None = None
    """Output names to return; None: all outputs."""
    deadline: float | None = None
    """time.monotonic() after which the caller no longer wants the answer."""
    cancelled: Callable[[], bool] = lambda: False
    """True once the caller has gone away."""


@dataclass
class InferenceResponse:
    model: str
    version: str
    outputs: dict[str, np.ndarray]


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

    def __init__(self, repository: ModelRepository, metrics: Metrics) -> None:
        self.repository = repository
        self.metrics = metrics

    def model(self, name: str = "", version: str | None = None) -> ServedModel:
        return self.repository.get(name, version)

    def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Validate and execute; raises FpgaServeError subclasses with a protocol-neutral status."""
        for attempt in (1, 2):
            served = self.repository.get(request.model, request.version)
            wanted = _resolve_outputs(served, request.outputs)
            bound = served.pipeline.bind(request.inputs)
            try:  # counts itself in fpga_serve_inflight_requests
                arrays = served.execute(bound, request.deadline, request.cancelled)
            except ModelRetired:
                # Swapped or unloaded between lookup and execution: look it up once more.
                if attempt == 2:
                    raise
                continue
            produced = {s.name: a for s, a in zip(served.outputs, arrays, strict=True)}
            return InferenceResponse(served.name, served.version, {n: produced[n] for n in wanted})
        raise AssertionError("unreachable")

    def metadata(self, name: str = "", version: str | None = None) -> ModelMetadata:
        served = self.repository.get(name, version)
        return ModelMetadata(
            name=served.name,
            version=served.version,
            versions=self.repository.versions(served.name),
            inputs=served.inputs,
            outputs=served.outputs,
            input_aliases=dict(served.pipeline.input_aliases),
            labels=served.labels,
            stages=[(s.name, s.kind) for s in served.pipeline.stages],
        )

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready when at least one model is loaded (every loaded model is ready once listed)."""
        return bool(self.repository.loaded())

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.repository.get(name, version)
        except ModelNotFound:
            return False
        return True


def _resolve_outputs(served: ServedModel, requested: list[str] | None) -> list[str]:
    """The output names to return, in order; unknown names are the caller's error."""
    names = [s.name for s in served.outputs]
    if not requested:
        return names
    for name in requested:
        if name not in names:
            known = ", ".join(map(repr, names))
            raise InvalidInput(f"unknown output {name!r}; this model returns {known}")
    return list(dict.fromkeys(requested))
