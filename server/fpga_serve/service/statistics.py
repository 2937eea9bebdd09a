"""Per model and version statistics, as Triton's ModelStatistics extension reports them:
requests that succeeded and failed with their total time, time queued for a batch, model
executions (one per batch run through the pipeline) with their compute time, in all and per
batch size, the inferences (items) they carried, and when the last one finished. Counts and
nanoseconds only grow; they are kept apart from the Prometheus metrics because Triton's clients
(perf_analyzer, tritonclient's get_inference_statistics) read them as totals per version."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fpga_serve.core.stage import StageRunner
from fpga_serve.runtime import StageObserver


@dataclass
class Duration:
    """How many, and their total time in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, round(seconds * 1e9))


@dataclass
class VersionStatistics:
    """One model version's totals since it was loaded."""

    last_inference_ms: int = 0
    """When the last request on it finished, in milliseconds since the epoch (0: never)."""
    inference_count: int = 0
    """Items inferred (a request of a batch of 4 counts 4)."""
    execution_count: int = 0
    """Pipeline executions (a dynamic batch of several requests counts 1)."""
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)
    """Per batch size: executions of that size and their compute time."""

    def copy(self) -> VersionStatistics:
        return VersionStatistics(
            self.last_inference_ms,
            self.inference_count,
            self.execution_count,
            Duration(self.success.count, self.success.ns),
            Duration(self.fail.count, self.fail.ns),
            Duration(self.queue.count, self.queue.ns),
            Duration(self.compute_infer.count, self.compute_infer.ns),
            {size: Duration(d.count, d.ns) for size, d in self.batches.items()},
        )


class Statistics:
    """The statistics of every model version loaded (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], VersionStatistics] = {}

    def _of(self, model: str, version: str) -> VersionStatistics:
        stats = self._versions.get((model, version))
        if stats is None:
            stats = self._versions[(model, version)] = VersionStatistics()
        return stats

    def request(self, model: str, version: str, ok: bool, seconds: float) -> None:
        """A request on a resolved model version ended (successfully or not)."""
        with self._lock:
            stats = self._of(model, version)
            (stats.success if ok else stats.fail).add(seconds)
            stats.last_inference_ms = int(time.time() * 1000)

    def queued(self, model: str, version: str, seconds: Sequence[float]) -> None:
        """Requests left the batching queue for a batch after waiting ``seconds`` each."""
        with self._lock:
            queue = self._of(model, version).queue
            for wait in seconds:
                queue.add(wait)

    def stage_observer(
        self, model: str, version: str, stages: Sequence[StageRunner]
    ) -> StageObserver:
        """A pipeline hook: every stage's time is compute time; the last stage of a pipeline
        run ends one execution of ``batch`` items."""
        first, last = (stages[0], stages[-1]) if stages else (None, None)
        pending = threading.local()  # per executing thread: this run's seconds so far

        def observe(stage: StageRunner, seconds: float, batch: int) -> None:
            # A run that failed half-way leaves nothing behind: the first stage starts afresh.
            so_far = seconds if stage is first else getattr(pending, "seconds", 0.0) + seconds
            if stage is not last:
                pending.seconds = so_far
                return
            if stage is not first:
                pending.seconds = 0.0
            with self._lock:
                stats = self._of(model, version)
                stats.execution_count += 1
                stats.inference_count += batch
                stats.compute_infer.add(so_far)
                sized = stats.batches.get(batch)
                if sized is None:
                    sized = stats.batches[batch] = Duration()
                sized.add(so_far)

        return observe

    def snapshot(self) -> dict[tuple[str, str], VersionStatistics]:
        """A consistent copy of every version's totals."""
        with self._lock:
            return {key: stats.copy() for key, stats in self._versions.items()}

    def forget(self, model: str, version: str) -> None:
        """An unloaded version's statistics go with it."""
        with self._lock:
            self._versions.pop((model, version), None)
