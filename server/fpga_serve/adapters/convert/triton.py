"""Triton's extensions of the KServe v2 gRPC API: model configuration, statistics and the
classification extension (``class_count`` on a requested output), answered as Triton does so
that tritonclient, perf_analyzer and Triton's dashboards work against fpga-serve.

- **ModelConfig** describes the model truthfully: inputs and outputs with Triton's data types,
  ``max_batch_size`` = the server's largest batch per request (the first dimension of every
  tensor is the batch, so ``dims`` leave it out: an input of shape [-1] has dims []), the
  dynamic batcher's settings when batching is on (preferred sizes, queue delay, queue size; the
  most items per device batch, which Triton has no field for, as parameter
  ``fpga_serve.batch_max_size``), one instance group whose count is the batches run at once,
  and ``label_filename`` on the first output when the model has labels.
- **ModelStatistics** reports per model and version what ``service.statistics`` counts.
- **Classification**: an output requested with parameter ``classification`` (an int64 k)
  answers, per batch item, its k best classes as BYTES ``"<score>:<index>[:<label>]"``
  (shape [batch, k]), like Triton.
"""

from __future__ import annotations

import numpy as np
from fpga_serve_client.protos import grpc_predict_v2_pb2 as v2
from fpga_serve_client.protos import triton_pb2 as triton

from fpga_serve.core.errors import InvalidInput, shown
from fpga_serve.core.types import BatchingConfig, DType, RequestLimits, TensorSpec
from fpga_serve.service.dataplane import ModelMetadata
from fpga_serve.service.statistics import Duration, VersionStatistics

BACKEND = "fpga_serve"
LABELS_FILE = "labels.txt"
"""The name ``label_filename`` gives the model's labels (they travel inside the zip)."""
CLASSIFICATION = "classification"
EXTENSIONS = ("model_configuration", "statistics", "classification")

_TYPES: dict[DType, int] = {
    dtype: triton.DataType.Value("TYPE_STRING" if dtype is DType.BYTES else f"TYPE_{dtype.value}")
    for dtype in DType
}
"""Triton's TYPE_ names are KServe v2's, but for BYTES (TYPE_STRING)."""


def model_config(
    meta: ModelMetadata, limits: RequestLimits, batching: BatchingConfig | None, platform: str
) -> triton.ModelConfig:
    """The Triton configuration of one loaded model version, from what the server runs."""
    config = triton.ModelConfig(
        name=meta.name, platform=platform, backend=BACKEND, max_batch_size=limits.max_batch_size
    )
    config.version_policy.specific.versions.extend(int(v) for v in meta.versions if v.isdigit())
    config.input.extend(
        triton.ModelInput(name=s.name, data_type=_TYPES[s.dtype], dims=_dims(s))  # type: ignore[arg-type]
        for s in meta.inputs
    )
    for index, spec in enumerate(meta.outputs):
        output = config.output.add(name=spec.name, data_type=_TYPES[spec.dtype], dims=_dims(spec))  # type: ignore[arg-type]
        if index == 0 and meta.labels is not None:
            output.label_filename = LABELS_FILE
    concurrency = 1
    if batching is not None and batching.max_size > 1:
        dynamic = config.dynamic_batching
        dynamic.preferred_batch_size.extend(batching.preferred_sizes)
        dynamic.max_queue_delay_microseconds = batching.max_queue_delay_us
        dynamic.preserve_ordering = False
        dynamic.default_queue_policy.max_queue_size = batching.max_queue_size
        config.parameters["fpga_serve.batch_max_size"].string_value = str(batching.max_size)
        concurrency = batching.concurrency
    config.instance_group.add(
        name=meta.name, kind=triton.ModelInstanceGroup.KIND_MODEL, count=concurrency
    )
    config.parameters["fpga_serve.stages"].string_value = ",".join(
        f"{name}:{kind}" for name, kind in meta.stages
    )
    return config


def _dims(spec: TensorSpec) -> list[int]:
    """Triton's dims for a model with max_batch_size > 0: the shape after the batch."""
    return list(spec.shape[1:])


def _duration(target: triton.StatisticDuration, source: Duration) -> None:
    target.count, target.ns = source.count, source.ns


def statistics_response(
    versions: list[tuple[str, str, VersionStatistics]],
) -> triton.ModelStatisticsResponse:
    """Triton's ModelStatistics of each (name, version, totals)."""
    response = triton.ModelStatisticsResponse()
    for name, version, stats in versions:
        response.model_stats.append(model_statistics(name, version, stats))
    return response


def model_statistics(name: str, version: str, stats: VersionStatistics) -> triton.ModelStatistics:
    out = triton.ModelStatistics(
        name=name,
        version=version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    infer = out.inference_stats
    _duration(infer.success, stats.success)
    _duration(infer.fail, stats.fail)
    _duration(infer.queue, stats.queue)
    _duration(infer.compute_infer, stats.compute_infer)
    for size in sorted(stats.batches):
        batch = out.batch_stats.add(batch_size=size)
        _duration(batch.compute_infer, stats.batches[size])
    return out


def class_counts(request: v2.ModelInferRequest) -> dict[str, int]:
    """Requested outputs with the classification parameter: name -> k (> 0)."""
    wanted: dict[str, int] = {}
    for output in request.outputs:
        if CLASSIFICATION not in output.parameters:
            continue
        parameter = output.parameters[CLASSIFICATION]
        which = parameter.WhichOneof("parameter_choice")
        if which not in ("int64_param", "uint64_param"):
            raise InvalidInput(
                f"output {shown(output.name)}: parameter 'classification' must be an integer"
                f" class count, not {which or 'empty'}"
            )
        k = int(getattr(parameter, which))
        if k < 1:
            raise InvalidInput(f"output {shown(output.name)}: class count {k} must be at least 1")
        wanted[output.name] = k
    return wanted


def classify(array: np.ndarray, k: int, labels: list[str] | None, name: str) -> np.ndarray:
    """Triton's classification of [batch, classes] scores: BYTES [batch, k] of
    ``"<score>:<index>[:<label>]"``, best first (ties: lower index first)."""
    scores = np.asarray(array)
    if scores.ndim != 2 or scores.dtype.kind not in "fiub":
        raise InvalidInput(
            f"output {shown(name)} has shape {list(scores.shape)} of {scores.dtype}: "
            "classification needs numeric [batch, classes]"
        )
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    result = np.empty((scores.shape[0], k), dtype=object)
    for row in range(scores.shape[0]):
        for column, index in enumerate(order[row]):
            text = f"{float(scores[row, index]):f}:{int(index)}"
            if labels is not None and index < len(labels):
                text += f":{labels[index]}"
            result[row, column] = text.encode()
    return result
