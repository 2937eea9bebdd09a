"""The remote model lifecycle: uploads into the repository directory; list, load, unload, delete.

Protocol-neutral: ``adapters/management.py`` serves it as ``fpga_serve.management.ModelService``
and ``adapters/kserve.py`` uses it for a RepositoryModelLoad that carries a ``file:`` zip.

An upload is staged in ``REPO/.staging/`` (hidden from the repository scan, on the same file
system so that the final rename is atomic): the bytes are counted against the header's size and
the server's limit as they arrive, the size and sha256 are checked at the end, then the archive
is validated completely (``modelzip.validate_archive``: members, paths, links, sizes, ratios,
every member's hash, the manifest). With ``load`` the version is built from the staged copy
(``ModelRegistry.build``: every stage loaded, not yet served); only then is it moved into
place as ``REPO/NAME/VERSION/model.zip`` in one rename, and then served (``commit``). Whatever
fails, the staged folder is removed: the repository never holds a partial or unvalidated zip,
and no model is served that is not stored. Changes to one model go one at a time (a second
upload or delete of the same name at once is refused with ABORTED); all changes to what is
loaded take the lifecycle lock (``ModelManager.exclusive``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fpga_serve.core.errors import (
    FpgaServeError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    Status,
    shown,
)
from fpga_serve.modelzip import validate_archive
from fpga_serve.service.lifecycle import ModelManager
from fpga_serve.service.models import version_key
from fpga_serve.service.repodir import RepoEntry, is_model_name, scan

log = logging.getLogger(__name__)

STAGING = ".staging"
ZIP_NAME = "model.zip"
FILE_PREFIX = "file:"
_VERSION = re.compile(r"[1-9][0-9]{0,17}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class UploadHeader:
    name: str
    version: str
    """A positive integer, or empty for one more than the highest version known."""
    size: int
    sha256: str
    load: bool = False


@dataclass(frozen=True)
class VersionStatus:
    name: str
    version: str
    state: str
    """READY or UNAVAILABLE, as the repository index says."""
    reason: str = ""
    stored: bool = False
    size: int = 0


def check_name(name: str) -> str:
    if not is_model_name(name):
        raise InvalidInput(
            f"model name {shown(name)} is not usable: letters, digits, _ . - (at most 128, "
            "starting with a letter or digit)"
        )
    return name


def check_version(version: str) -> str:
    if version and not _VERSION.fullmatch(version):
        raise InvalidInput(f"version {shown(version)} is not a positive integer (like 3)")
    return version


class ModelStore:
    """Remote changes to the model repository directory and to what is loaded from it."""

    def __init__(self, manager: ModelManager, max_upload_bytes: int) -> None:
        self.manager = manager
        self.registry = manager.registry
        self.root = manager.repo_dir
        self.max_upload_bytes = max_upload_bytes
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        if self.root is not None and (self.root / STAGING).is_dir():
            # Left by a server that stopped mid-upload or mid-delete: never part of the repository.
            shutil.rmtree(self.root / STAGING, ignore_errors=True)

    # Uploads --------------------------------------------------------------------------------

    def check_header(self, header: UploadHeader) -> None:
        """Everything that can be refused before a byte is stored."""
        self._root()
        check_name(header.name)
        check_version(header.version)
        if header.size <= 0:
            raise InvalidInput("the upload header declares no bytes (size 0)")
        if header.size > self.max_upload_bytes:
            raise FpgaServeError(
                f"the zip is {header.size:,} bytes, over this server's upload limit of "
                f"{self.max_upload_bytes:,} (--max-upload-bytes)",
                Status.RESOURCE_EXHAUSTED,
            )
        if not _SHA256.fullmatch(header.sha256):
            raise InvalidInput("the upload header's sha256 is not 64 lower-case hex digits")

    def upload(self, header: UploadHeader, chunks: Iterable[bytes]) -> VersionStatus:
        """Store (and with ``header.load``, load) an uploaded zip; see the module docstring."""
        self.check_header(header)
        root = self._root()
        name = header.name
        with self._claim(name):
            version = header.version or self._next_version(name)
            self._refuse_existing(name, version)
            staging = root / STAGING
            staging.mkdir(exist_ok=True)
            staged = Path(tempfile.mkdtemp(prefix="upload-", dir=staging))
            try:
                zip_path = staged / name / version / ZIP_NAME
                zip_path.parent.mkdir(parents=True)
                self._receive(header, chunks, zip_path)
                try:
                    validate_archive(zip_path)
                except ModelLoadError as exc:
                    raise InvalidInput(
                        f"the uploaded zip is refused ({exc.message}); nothing was stored"
                    ) from None
                self._commit(name, version, staged, header.load)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        log.info(
            "stored model %s version %s (%d bytes)%s",
            name,
            version,
            header.size,
            ", loaded" if header.load else "",
        )
        return self.status(name, version)

    def upload_files(self, name: str, files: dict[str, bytes]) -> VersionStatus:
        """A Triton-style RepositoryModelLoad with the zip as ``file:[VERSION/]NAME.zip``."""
        if len(files) != 1:
            raise InvalidInput(
                f"a model load with files takes one parameter 'file:VERSION/model.zip' holding "
                f"the pipeline zip, not {len(files)}"
            )
        ((key, data),) = files.items()
        parts = key[len(FILE_PREFIX) :].split("/")
        if (
            len(parts) > 2
            or not parts[-1].endswith(".zip")
            or (len(parts) == 2 and not _VERSION.fullmatch(parts[0]))
        ):
            raise InvalidInput(
                f"file parameter {shown(key)}: expected 'file:VERSION/NAME.zip' or "
                "'file:NAME.zip' (a pipeline zip)"
            )
        version = parts[0] if len(parts) == 2 else ""
        header = UploadHeader(name, version, len(data), hashlib.sha256(data).hexdigest(), True)
        return self.upload(header, [data])

    def _receive(self, header: UploadHeader, chunks: Iterable[bytes], dest: Path) -> None:
        digest = hashlib.sha256()
        received = 0
        with dest.open("xb") as out:
            for chunk in chunks:
                received += len(chunk)
                if received > header.size:
                    raise InvalidInput(
                        f"the stream carries more than the {header.size:,} bytes its header "
                        "declared; nothing was stored"
                    )
                digest.update(chunk)
                out.write(chunk)
        if received < header.size:
            raise InvalidInput(
                f"the stream ended after {received:,} of {header.size:,} bytes; nothing was stored"
            )
        if digest.hexdigest() != header.sha256:
            raise FpgaServeError(
                f"the received bytes have sha256 {digest.hexdigest()}, the header says "
                f"{header.sha256}; nothing was stored",
                Status.DATA_LOSS,
            )

    def _commit(self, name: str, version: str, staged: Path, load: bool) -> None:
        """Build from the staged copy (when asked), move it into the repository, then serve it:
        a version is served only once it is stored."""
        root = self._root()
        zip_path = staged / name / version / ZIP_NAME
        with self.manager.exclusive():
            built = None
            if load:
                try:
                    built = self.registry.build(zip_path, name, version)
                except FpgaServeError as exc:
                    raise ModelLoadError(
                        f"model {name!r} version {version} did not load, so nothing was "
                        f"stored: {exc.message}"
                    ) from None
            try:
                if (root / name).is_dir():
                    (staged / name / version).rename(root / name / version)
                else:
                    (staged / name).rename(root / name)
            except OSError as exc:
                if built is not None:
                    built.close(drain=False)  # built, never served
                raise FpgaServeError(
                    f"cannot move the upload into the repository: {exc.strerror}"
                ) from exc
            if built is not None:
                built.source = root / name / version / ZIP_NAME
                self.registry.commit(name, [built])
            self.manager.record(name, version, None)
        if load:
            self.manager.changed()

    # Load, unload, delete -------------------------------------------------------------------

    def load(self, name: str, version: str = "") -> VersionStatus:
        """Load (or reload, swapping under traffic) one stored version; the highest if none."""
        stored = self._stored(check_name(name))
        if not stored:
            raise ModelNotFound(f"model {name!r} has no stored version in the repository")
        version = check_version(version) or max(stored, key=version_key)
        if version not in stored:
            raise ModelNotFound(
                f"model {name!r} has no stored version {version} (stored: "
                f"{', '.join(sorted(stored, key=version_key))})"
            )
        path = stored[version].path
        assert path is not None
        with self._claim(name), self.manager.exclusive():
            try:
                self.registry.load(path, name, version, replace=True)
            except FpgaServeError as exc:
                self.manager.record(name, version, exc.message)
                raise
            self.manager.record(name, version, None)
        self.manager.changed()
        return self.status(name, version)

    def unload(self, name: str, version: str = "") -> list[VersionStatus]:
        """Stop serving a version (or all); in-flight requests finish first. Stays stored."""
        check_name(name)
        check_version(version)
        with self._claim(name), self.manager.exclusive():
            removed = self.registry.unload(name, version or None)
        self.manager.changed()
        return [self.status(name, m.version) for m in removed]

    def delete(self, name: str, version: str = "") -> list[VersionStatus]:
        """Unload (in-flight requests finish first), then remove from the repository."""
        check_name(name)
        check_version(version)
        with self._claim(name):
            stored = self._stored(name)
            loaded = set(self.registry.versions(name))
            known = set(stored) | loaded
            if (version and version not in known) or not known:
                raise ModelNotFound(
                    f"model {name!r} has no version {version or 'at all'} stored or loaded"
                )
            targets = [version] if version else sorted(known, key=version_key)
            before = [self.status(name, v) for v in targets]
            with self.manager.exclusive():
                for target in targets:
                    if target in loaded:
                        self.registry.unload(name, target)
                    entry = stored.get(target)
                    if entry is not None and entry.path is not None:
                        self._remove(entry.path.parent)
                    self.manager.record(name, target, None)
                self._remove_empty_model_dir(name)
        self.manager.changed()
        log.info("deleted model %s version(s) %s", name, ", ".join(targets))
        return before

    # Listing --------------------------------------------------------------------------------

    def list(self, name: str = "") -> list[VersionStatus]:
        """Every version the index knows (loaded, stored, failed), with its stored size."""
        stored = {}
        if self._has_root():
            assert self.root is not None
            stored = {(e.name, e.version): e for e in scan(self.root)}
        out = []
        for entry in self.manager.index():
            if name and entry.name != name:
                continue
            found = stored.get((entry.name, entry.version))
            path = found.path if found is not None else None
            out.append(
                VersionStatus(
                    entry.name,
                    entry.version,
                    entry.state,
                    entry.reason,
                    stored=path is not None,
                    size=path.stat().st_size if path is not None else 0,
                )
            )
        return out

    def status(self, name: str, version: str) -> VersionStatus:
        for entry in self.list(name):
            if entry.version == version:
                return entry
        return VersionStatus(name, version, "UNAVAILABLE", "not stored or loaded")

    # Helpers --------------------------------------------------------------------------------

    def _has_root(self) -> bool:
        return self.root is not None and self.root.is_dir()

    def _root(self) -> Path:
        if self.root is None:
            raise FpgaServeError(
                "this server has no model repository (start it with --model-repository DIR): "
                "remote uploads are stored there",
                Status.FAILED_PRECONDITION,
            )
        return self.root

    def _stored(self, name: str) -> dict[str, RepoEntry]:
        if not self._has_root():
            return {}
        assert self.root is not None
        return {e.version: e for e in scan(self.root, only=name) if e.path is not None}

    def _next_version(self, name: str) -> str:
        numbers = [int(v) for v in self._stored(name)]
        numbers += [int(v) for v in self.registry.versions(name) if v.isdigit()]
        if self._has_root():
            assert self.root is not None
            folder = self.root / name
            if folder.is_dir():  # also unusable version folders: never reuse their number
                numbers += [int(p.name) for p in folder.iterdir() if _VERSION.fullmatch(p.name)]
        return str(max(numbers, default=0) + 1)

    def _refuse_existing(self, name: str, version: str) -> None:
        root = self._root()
        if (root / name / version).exists() or version in self._stored(name):
            raise FpgaServeError(
                f"model {name!r} version {version} is already stored; delete it first or "
                "upload without a version (the next one is taken)",
                Status.ALREADY_EXISTS,
            )
        if version in self.registry.versions(name):
            raise FpgaServeError(
                f"model {name!r} version {version} is loaded (from a zip given at start); "
                "upload another version",
                Status.ALREADY_EXISTS,
            )

    @contextmanager
    def _claim(self, name: str) -> Iterator[None]:
        with self._busy_lock:
            if name in self._busy:
                raise FpgaServeError(
                    f"model {name!r} is being changed by another request (upload, load or "
                    "delete); try again when it has finished",
                    Status.ABORTED,
                )
            self._busy.add(name)
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy.discard(name)

    def _remove(self, folder: Path) -> None:
        """Take a folder out of the repository in one rename, then delete it."""
        root = self._root()
        (root / STAGING).mkdir(exist_ok=True)
        trash = Path(tempfile.mkdtemp(prefix="deleted-", dir=root / STAGING))
        folder.rename(trash / "gone")
        shutil.rmtree(trash, ignore_errors=True)

    def _remove_empty_model_dir(self, name: str) -> None:
        folder = self._root() / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
