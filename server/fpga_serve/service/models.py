"""Loaded models by name and version: load, swap under traffic, unload."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fpga_serve.core.errors import (
    DeadlineExceeded,
    FpgaServeError,
    ModelLoadError,
    ModelNotFound,
    ModelRetired,
    shown,
)
from fpga_serve.core.types import BatchingConfig, RequestLimits, TensorSpec
from fpga_serve.modelzip import LoadContext, LoadedArchive, load_pipeline
from fpga_serve.runtime import Pipeline, StageObserver
from fpga_serve.runtime.batching import Batcher
from fpga_serve.service.metrics import Metrics
from fpga_serve.service.run_time import RunTime

log = logging.getLogger(__name__)

DEFAULT_VERSION = "1"
CLOSE_TIMEOUT_S = 60.0
"""How long retiring a version waits for its in-flight requests."""


@dataclass(eq=False)
class ServedModel:
    """One loaded model version. Counts its in-flight requests so that it is freed only after
    the last one finishes."""

    name: str
    version: str
    pipeline: Pipeline
    archive: LoadedArchive
    source: Path
    load_seconds: float
    observer: StageObserver
    batcher: Batcher | None = None
    run_time: RunTime = field(default_factory=RunTime)
    inflight_gauge: Any = None
    """This version's fpga_serve_inflight_requests child (looked up once, at load)."""
    loaded_at: float = field(default_factory=time.time)
    _inflight: int = 0
    _retired: bool = False
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def execute(
        self,
        bound: list[np.ndarray],
        deadline: float | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> list[np.ndarray]:
        """Run validated inputs, through the batching queue when batching is on.

        Raises ModelRetired when this version was unloaded or replaced in the meantime.
        """
        with self._cond:
            if self._retired:
                raise ModelRetired(f"model {self.name!r} version {self.version} was retired")
            self._inflight += 1
        gauge = self.inflight_gauge
        if gauge is not None:
            gauge.inc()
        try:
            if self.batcher is None:
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineExceeded("deadline passed before execution")
                return self.run_timed(bound)
            return self.batcher.run(bound, deadline, cancelled)
        finally:
            if gauge is not None:
                gauge.dec()
            with self._cond:
                self._inflight -= 1
                if self._retired:  # only close() waits, and only once retired
                    self._cond.notify_all()

    def run_timed(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The pipeline on ``arrays`` (a batch, or one request), its time kept in run_time."""
        return self.run_time.timed(lambda: self.pipeline.execute(arrays, self.observer))

    def runs_inline(self) -> bool:
        """Whether the event loop that received a request may run it itself: the model's
        recent runs were short (``RunTime.inline``; its first runs, not timed yet, never are)
        and its batching would run the request at once (a free slot, nothing queued, no
        queue delay), so the loop does not wait for other batches. A slot taken between this
        look and the run (by a batch that a thread started) makes the loop wait for that
        short batch."""
        if not self.run_time.inline():
            return False
        return self.batcher is None or self.batcher.runs_at_once()

    @property
    def labels(self) -> list[str] | None:
        return self.archive.labels

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.pipeline.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.pipeline.outputs

    def cut(self, error: BaseException) -> int:
        """Shutdown's end of the grace: take no more work and answer the requests waiting in
        the batching queue, or in a batch still executing, with ``error`` now (how many)."""
        with self._cond:
            self._retired = True
        return 0 if self.batcher is None else self.batcher.abort(error)

    def close(self, drain: bool = True, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Refuse new work, let in-flight requests finish (up to ``timeout``), free the stages."""
        with self._cond:
            self._retired = True
            if drain:
                self._cond.wait_for(lambda: self._inflight == 0, timeout)
        if self.batcher is not None:
            self.batcher.close(drain=drain, timeout=timeout)
        self.archive.close()


class ModelRegistry:
    """The loaded models, in memory: by name, each with one or more versions; the first loaded
    model is the default. (The model *repository* is the directory of zips the server loads
    from, ``model_repository``: service/repodir.py and lifecycle.py.)

    ``context_factory`` builds the LoadContext (which device FPGA stages run on) for each load.
    Loading happens outside the lock: a slow load never blocks requests to other models, and a
    replaced version keeps serving until its successor is ready.
    """

    def __init__(
        self,
        context_factory: Callable[[], LoadContext],
        metrics: Metrics,
        *,
        limits: RequestLimits | None = None,
        batching: BatchingConfig | None = None,
        inline_max_s: float = 0.0,
    ) -> None:
        self.limits = limits or RequestLimits(max_image_pixels=None)
        self.inline_max_s = inline_max_s
        """Each model's ``RunTime`` bound (the ``inline_max_us`` setting); 0: never inline."""
        self._context_factory = context_factory
        self._metrics = metrics
        self.batching = batching
        self._models: dict[str, dict[str, ServedModel]] = {}
        self._default: str | None = None
        self._newest: dict[str, ServedModel] = {}
        """Each name's newest version: ``get``'s lock-free fast path (a dict read is atomic;
        the dict changes only under the lock, before a replaced version is retired)."""
        self._lock = threading.Lock()

    def _build(self, path: Path, name: str | None, version: str | None) -> ServedModel:
        start = time.perf_counter()
        archive = load_pipeline(Path(path), self._context_factory())
        try:
            model_name = name or archive.manifest.name
            model_version = version or DEFAULT_VERSION
            pipeline = Pipeline(
                archive.stages,
                input_aliases=archive.input_aliases,
                limits=self.limits,
            )
        except FpgaServeError as exc:
            archive.close()
            raise ModelLoadError(f"{path}: {exc}") from exc
        except BaseException:
            archive.close()
            raise
        observer = self._metrics.stage_observer(model_name, model_version, pipeline.stages)
        served = ServedModel(
            name=model_name,
            version=model_version,
            pipeline=pipeline,
            archive=archive,
            source=Path(path),
            load_seconds=time.perf_counter() - start,
            observer=observer,
            inflight_gauge=self._metrics.inflight.labels(model_name, model_version),
            run_time=RunTime(self.inline_max_s),
        )
        if self.batching is not None and self.batching.max_size > 1:
            served.batcher = Batcher(
                served.run_timed,
                self.batching,
                self._metrics.batch_observer(model_name, model_version),
                name=f"{model_name}:{model_version}",
            )
        return served

    def build(self, path: Path, name: str | None = None, version: str | None = None) -> ServedModel:
        """Validate and load a pipeline zip without serving it yet (``commit`` does); raises
        ModelLoadError and leaves nothing behind."""
        return self._build(path, name, version)

    def load(
        self,
        path: Path,
        name: str | None = None,
        version: str | None = None,
        *,
        replace: bool = False,
    ) -> ServedModel:
        """Validate and load a pipeline zip; raises ModelLoadError and leaves nothing behind.

        With ``replace``, an already loaded version is swapped for the new one once the new one
        is ready; requests in flight on the old one finish on it.
        """
        served = self._build(path, name, version)
        if not replace:
            with self._lock:
                conflict = served.version in self._models.get(served.name, {})
            if conflict:
                served.close(drain=False)
                raise ModelLoadError(
                    f"model {shown(served.name)} version {served.version} is already loaded"
                )
        self.commit(served.name, [served])
        return served

    def commit(
        self, name: str, add: list[ServedModel], remove: tuple[str, ...] | list[str] = ()
    ) -> None:
        """Serve ``add`` (built versions of ``name``, replacing loaded copies of the same
        versions) and stop serving the versions in ``remove``, in one step under the lock:
        a request resolves either the old set or the new one. Replaced and removed versions
        finish their in-flight requests, then are freed."""
        retired: list[tuple[ServedModel, bool]] = []  # (model, replaced by a new copy)
        with self._lock:
            versions = self._models.setdefault(name, {})
            for served in add:
                old = versions.get(served.version)
                if old is not None:
                    retired.append((old, True))
                versions[served.version] = served
            for version in remove:
                old = versions.pop(version, None)
                if old is not None:
                    retired.append((old, False))
            if not versions:
                self._models.pop(name, None)
            self._refresh_newest(name)
            if self._default is None and name in self._models:
                self._default = name
            elif self._default == name and name not in self._models:
                self._default = next(iter(self._models), None)
        for served in add:
            self._metrics.model_load_seconds.labels(served.name, served.version).set(
                served.load_seconds
            )
            self._metrics.model_ready.labels(served.name, served.version).set(1)
            log.info(
                "loaded model %s version %s from %s in %.2f s",
                served.name,
                served.version,
                served.source,
                served.load_seconds,
            )
        for old, replaced in retired:
            old.close(drain=True)
            if not replaced:
                self._metrics.forget_model(old.name, old.version)
            log.info(
                "%s model %s version %s",
                "replaced" if replaced else "unloaded",
                old.name,
                old.version,
            )

    def runs_inline(self, name: str, version: str | None = None) -> bool:
        """``ServedModel.runs_inline`` of the model a request names; False
        when there is none (its error is answered from an RPC thread, like any request whose
        run time is unknown)."""
        try:
            served = self.get(name, version)
        except FpgaServeError:
            return False
        return served.runs_inline()

    def get(self, name: str = "", version: str | None = None) -> ServedModel:
        """The named model (the default one when ``name`` is empty), newest version unless given."""
        if not version:
            newest = self._newest.get(name or self._default or "")
            if newest is not None:
                return newest
        with self._lock:
            model_name = name or self._default
            if model_name is None:
                raise ModelNotFound("no model is loaded")
            versions = self._models.get(model_name)
            if not versions:
                known = ", ".join(sorted(self._models)[:20]) or "none"
                raise ModelNotFound(f"model {shown(model_name)} is not loaded (loaded: {known})")
            if version:
                if version not in versions:
                    listed = ", ".join(sorted(versions, key=version_key)[-20:])
                    raise ModelNotFound(
                        f"model {shown(model_name)} has no version {shown(version)} "
                        f"(versions: {listed})"
                    )
                return versions[version]
            return versions[max(versions, key=version_key)]

    def _refresh_newest(self, name: str) -> None:
        """Under the lock, after ``name``'s versions changed."""
        versions = self._models.get(name)
        if versions:
            self._newest[name] = versions[max(versions, key=version_key)]
        else:
            self._newest.pop(name, None)

    def versions(self, name: str) -> list[str]:
        with self._lock:
            return sorted(self._models.get(name, {}), key=version_key)

    def loaded(self) -> list[ServedModel]:
        with self._lock:
            return [m for versions in self._models.values() for m in versions.values()]

    def unload(self, name: str, version: str | None = None) -> list[ServedModel]:
        """Remove a model (or one version); in-flight requests finish, then its memory is freed."""
        with self._lock:
            versions = self._models.get(name)
            if not versions or (version is not None and version not in versions):
                raise ModelNotFound(
                    f"model {shown(name)} version {shown(version or 'any')} is not loaded"
                )
            removed = list(versions.values()) if version is None else [versions[version]]
        self.commit(name, [], [m.version for m in removed])
        return removed

    def close(self, drain: bool = True) -> None:
        """Unload everything; without ``drain`` (shutdown, after the cut) nothing is waited for."""
        if drain:
            for model in self.loaded():
                self.unload(model.name, model.version)
            return
        with self._lock:
            models = [m for versions in self._models.values() for m in versions.values()]
            self._models.clear()
            self._newest.clear()
            self._default = None
        for model in models:
            model.close(drain=False, timeout=0.0)


def version_key(version: str) -> tuple[int, int | str]:
    """Numeric versions sort numerically, after any non-numeric labels."""
    return (1, int(version)) if version.isdigit() else (0, version)
