"""service/remote.py in process: what is left after a crash or a failed move, version numbers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fpga_serve.core.errors import FpgaServeError, ModelNotFound
from fpga_serve.modelzip import LoadContext
from fpga_serve.service import Metrics, ModelRegistry
from fpga_serve.service.lifecycle import ModelManager
from fpga_serve.service.remote import STAGING, ModelStore, UploadHeader


def _store(root: Path) -> ModelStore:
    return ModelStore(ModelManager(ModelRegistry(LoadContext, Metrics()), root), 1 << 30)


def _header(data: bytes, name: str, load: bool = False, version: str = "") -> UploadHeader:
    return UploadHeader(name, version, len(data), hashlib.sha256(data).hexdigest(), load)


def test_leftovers_of_a_stopped_server_are_removed_at_start(tmp_path: Path) -> None:
    half = tmp_path / STAGING / "upload-x1" / "m" / "1"
    half.mkdir(parents=True)
    (half / "model.zip").write_bytes(b"PK half an upload")
    _store(tmp_path)
    assert not (tmp_path / STAGING).exists()


def test_a_failed_move_serves_nothing(tmp_path: Path, tiny_zip: Path) -> None:
    store = _store(tmp_path)
    (tmp_path / "blocked").write_bytes(b"a file where the model folder would go")
    data = tiny_zip.read_bytes()
    with pytest.raises(FpgaServeError, match="cannot move the upload into the repository"):
        store.upload(_header(data, "blocked", load=True), [data])
    with pytest.raises(ModelNotFound):
        store.registry.get("blocked")
    assert sorted(p.name for p in tmp_path.iterdir()) == [STAGING, "blocked"]
    assert list((tmp_path / STAGING).iterdir()) == []


def test_versions_count_up_past_unusable_folders(tmp_path: Path, tiny_zip: Path) -> None:
    store = _store(tmp_path)
    (tmp_path / "m" / "4").mkdir(parents=True)  # a version folder without a zip
    data = tiny_zip.read_bytes()
    assert store.upload(_header(data, "m"), [data]).version == "5"
    assert store.upload(_header(data, "m", version="2"), [data]).version == "2"
    assert store.upload(_header(data, "m"), [data]).version == "6"
    loaded = store.load("m", "2")
    assert (loaded.version, loaded.state) == ("2", "READY")
    deleted = store.delete("m")
    assert [d.version for d in deleted] == ["2", "5", "6"]
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["4"]  # not ours to delete
    store.registry.close()
