"""Model lifecycle in process: unloading frees what a model held; repository scanning."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
from fpga_serve.core.errors import ModelNotFound
from fpga_serve.modelzip import LoadContext
from fpga_serve.service import Metrics, ModelRegistry
from fpga_serve.service.repodir import scan


def test_unload_frees_the_model_and_its_files(tiny_zip: Path) -> None:
    repo = ModelRegistry(LoadContext, Metrics())
    served = repo.load(tiny_zip)
    keras_stage = served.pipeline.stages[1]
    held = weakref.ref(keras_stage._keep)  # type: ignore[attr-defined]
    directory = served.archive.directory
    assert held() is not None and directory.exists()
    repo.unload("tiny")
    del served, keras_stage
    gc.collect()
    assert held() is None, "the Keras model is still referenced after unload"
    assert not directory.exists()
    with pytest.raises(ModelNotFound):
        repo.get("tiny")


def test_newest_version_follows_loads_swaps_and_unloads(tiny_zip: Path) -> None:
    repo = ModelRegistry(LoadContext, Metrics())
    v1 = repo.load(tiny_zip, version="1")
    v2 = repo.load(tiny_zip, version="2")
    assert repo.get() is v2 and repo.get("tiny") is v2 and repo.get("tiny", "1") is v1
    swapped = repo.load(tiny_zip, version="2", replace=True)
    assert repo.get("tiny") is swapped
    repo.load(tiny_zip, version="canary")  # labels sort before numbered versions
    assert repo.get("tiny") is swapped
    repo.unload("tiny", "2")
    assert repo.get("tiny") is v1
    repo.close()
    with pytest.raises(ModelNotFound):
        repo.get()


def test_repository_scan_reports_junk_without_stopping(tmp_path: Path, tiny_zip: Path) -> None:
    (tmp_path / "good" / "3").mkdir(parents=True)
    (tmp_path / "good" / "3" / "m.zip").write_bytes(tiny_zip.read_bytes())
    (tmp_path / "good" / "4").mkdir()
    (tmp_path / "stray.zip").write_bytes(b"")
    (tmp_path / "bad name!").mkdir()
    (tmp_path / ".hidden").mkdir()
    entries = {(e.name, e.version): e for e in scan(tmp_path)}
    assert entries[("good", "3")].path is not None
    assert "exactly one .zip" in (entries[("good", "4")].problem or "")
    assert "not a model folder" in (entries[("stray.zip", "")].problem or "")
    assert "letters, digits" in (entries[("bad name!", "")].problem or "")
    assert not any(name == ".hidden" for name, _ in entries)
