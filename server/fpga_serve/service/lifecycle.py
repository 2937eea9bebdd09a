"""Model lifecycle: what is loaded at start, and load / reload / unload while serving."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fpga_serve.core.errors import (
    FpgaServeError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    shown,
)
from fpga_serve.service.models import ModelRegistry, ServedModel, version_key
from fpga_serve.service.repodir import scan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    """READY or UNAVAILABLE."""
    reason: str = ""


class ModelManager:
    """Keeps the loaded models in step with the model zips given at start and the repository.

    ``on_change`` runs after every change (the server updates health statuses there).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        repo_dir: Path | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.repo_dir = repo_dir
        self._on_change = on_change
        self._problems: dict[tuple[str, str], str] = {}
        self._control = threading.Lock()  # one lifecycle operation at a time

    def load_startup(self, zips: list[Path]) -> None:
        """Load explicit zips (any failure refuses the start) and every valid repository model
        (failures there are reported in the index and the log; the rest still loads)."""
        with self._control:
            for path in zips:
                self.registry.load(path)
            if self.repo_dir is not None:
                if not self.repo_dir.is_dir():
                    raise InvalidInput(f"model repository {self.repo_dir} is not a directory")
                for entry in scan(self.repo_dir):
                    self._load_entry(entry.name, entry.version, entry.path, entry.problem)
        self._on_change()

    def _load_entry(self, name: str, version: str, path: Path | None, problem: str | None) -> bool:
        """Load one repository version at start; a failure is reported, never raised."""
        key = (name, version)
        if path is None:
            self._problems[key] = problem or "unusable"
            log.warning("model repository: %s/%s skipped: %s", name, version, problem)
            return False
        try:
            self.registry.load(path, name=name, version=version, replace=True)
        except Exception as exc:  # one bad model must not stop the others
            self._problems[key] = _reason(exc)
            log.error("model %s version %s failed to load: %s", name, version, _reason(exc))
            if not isinstance(exc, FpgaServeError):
                log.exception("unexpected error loading %s", path)
            return False
        self._problems.pop(key, None)
        return True

    def load(self, name: str) -> None:
        """(Re)load every version of ``name`` from the repository, all or nothing: every
        version is built first; if any fails, none is applied (the loaded versions keep
        serving, none is unloaded) and ModelLoadError (FAILED_PRECONDITION) names the failures,
        which the index also shows. Otherwise the new versions replace the loaded ones and the
        versions gone from the directory are unloaded, in one step."""
        if self.repo_dir is None:
            raise InvalidInput("no model repository is configured (--model-repository)")
        with self._control:
            entries = scan(self.repo_dir, only=name)
            if not entries:
                raise ModelNotFound(f"model {shown(name)} is not in the repository {self.repo_dir}")
            for entry in entries:
                if entry.path is None:  # junk beside the model: reported in the index only
                    self._load_entry(entry.name, entry.version, None, entry.problem)
            found = [e for e in entries if e.path is not None]
            if not found:
                raise ModelNotFound(
                    f"model {shown(name)} has no loadable version in {self.repo_dir}"
                )
            built: list[ServedModel] = []
            failures: dict[str, str] = {}
            for entry in found:
                assert entry.path is not None
                try:
                    built.append(self.registry.build(entry.path, name, entry.version))
                except Exception as exc:  # reported; nothing applied
                    failures[entry.version] = _reason(exc)
                    if not isinstance(exc, FpgaServeError):
                        log.exception("unexpected error loading %s", entry.path)
            if failures:
                for served in built:
                    served.close(drain=False)
                for version, reason in failures.items():
                    self._problems[(name, version)] = reason
                    log.error("model %s version %s failed to load: %s", name, version, reason)
                listed = "; ".join(f"version {v}: {r}" for v, r in sorted(failures.items()))
                raise ModelLoadError(
                    f"model {shown(name)} was not reloaded (nothing changed): {listed}"
                )
            versions = {e.version for e in found}
            gone = [v for v in self.registry.versions(name) if v not in versions]
            self.registry.commit(name, built, gone)
            for version in [*versions, *gone]:
                self._problems.pop((name, version), None)
        self._on_change()

    def unload(self, name: str) -> None:
        with self._control:
            self.registry.unload(name)
            for key in [k for k in self._problems if k[0] == name]:
                del self._problems[key]
        self._on_change()

    # Hooks for the remote lifecycle (service/remote.py) ----------------------------------------

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lifecycle lock: a remote change to the repository directory and the loaded
        models happens between, never during, the changes made here."""
        with self._control:
            yield

    def record(self, name: str, version: str, problem: str | None) -> None:
        """Say why a version failed (shown by ``index``), or with None that it no longer has."""
        if problem is None:
            self._problems.pop((name, version), None)
        else:
            self._problems[(name, version)] = problem

    def changed(self) -> None:
        """Tell the server that what is loaded changed (it updates health statuses)."""
        self._on_change()

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Loaded versions READY (with the reason a reload of it failed, if one did); versions
        in the repository that are not loaded UNAVAILABLE with the reason."""
        entries = {}
        for m in self.registry.loaded():
            problem = self._problems.get((m.name, m.version))
            reason = f"serving the loaded copy; reloading it failed: {problem}" if problem else ""
            entries[(m.name, m.version)] = IndexEntry(m.name, m.version, "READY", reason)
        if not ready_only:
            if self.repo_dir is not None and self.repo_dir.is_dir():
                for found in scan(self.repo_dir):
                    key = (found.name, found.version)
                    if key not in entries:
                        reason = found.problem or self._problems.get(key, "not loaded")
                        entries[key] = IndexEntry(found.name, found.version, "UNAVAILABLE", reason)
            for key, reason in self._problems.items():
                entries.setdefault(key, IndexEntry(key[0], key[1], "UNAVAILABLE", reason))
        return sorted(entries.values(), key=lambda e: (e.name, version_key(e.version)))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FpgaServeError):
        return exc.message
    return f"internal error while loading ({type(exc).__name__}; see the server log)"
