"""TensorFlow stages from untrusted zips: ops that reach files, Python, datasets, summaries or
checkpoints are refused from the graph's bytes, before TensorFlow loads the stage."""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from fpga_serve.core.errors import FpgaServeError, ModelLoadError
from fpga_serve.modelzip import LoadContext, load_pipeline
from fpga_serve.modelzip.stages.tf_policy import check_graph
from fpga_serve.pipeline import ModelDefinition, TensorflowStage

SIG = [tf.TensorSpec([None], tf.string, name="images")]


@tf.function(input_signature=SIG)
def benign(images: Any) -> Any:
    tf.print("batch of", tf.size(images))  # PrintV2 to stderr is allowed
    return {"n": tf.cast(tf.strings.length(images), tf.float32)}


@tf.function(input_signature=SIG)
def reads_a_file(images: Any) -> Any:
    # The read hides in a cond branch: a function of the library, not the top graph.
    extra = tf.cond(
        tf.size(images) > 0,
        lambda: tf.io.read_file("/etc/hostname"),
        lambda: tf.constant(""),
    )
    return {"n": tf.cast(tf.strings.length(images) + tf.strings.length(extra), tf.float32)}


def _zip_with(fn: Any, path: Path) -> Path:
    model_def = ModelDefinition(name="p")
    model_def.pipeline.append(TensorflowStage(fn))
    model_def.save(path)
    return path


def _swap_stage(good: Path, fn: Any, dst: Path) -> Path:
    """What an attacker does: replace the stage's SavedModel and redo the manifest's hashes."""
    with tempfile.TemporaryDirectory() as tmp:
        module = tf.Module()
        module.fn = fn
        tf.saved_model.save(module, tmp, signatures={"serving_default": fn.get_concrete_function()})
        evil = {
            f"stages/0/{p.relative_to(tmp).as_posix()}": p.read_bytes()
            for p in Path(tmp).rglob("*")
            if p.is_file()
        }
    with zipfile.ZipFile(good) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    members = {k: v for k, v in members.items() if not k.startswith("stages/0/")} | evil
    manifest = json.loads(members["service_def.json"])
    manifest["files"] = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in members.items()
        if name != "service_def.json"
    }
    members["service_def.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


def test_a_benign_stage_with_tf_print_loads_and_runs(tmp_path: Path) -> None:
    archive = load_pipeline(_zip_with(benign, tmp_path / "ok.zip"), LoadContext(device=None))
    try:
        (got,) = archive.stages[0].run([np.array([b"abc", b"de"], dtype=object)])
        assert got.tolist() == [3.0, 2.0]
    finally:
        archive.close()


def test_a_swapped_in_file_reading_stage_is_refused_before_tensorflow_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _zip_with(benign, tmp_path / "ok.zip")
    evil = _swap_stage(good, reads_a_file, tmp_path / "evil.zip")

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("TensorFlow was asked to load a refused stage")

    monkeypatch.setattr(tf.saved_model, "load", no_load)
    with pytest.raises(ModelLoadError, match=r"op 'ReadFile' .* in function 'cond_true"):
        load_pipeline(evil, LoadContext(device=None))


def test_saving_a_stage_that_writes_files_is_refused(tmp_path: Path) -> None:
    @tf.function(input_signature=SIG)
    def writes(images: Any) -> Any:
        tf.io.write_file("/tmp/fpga-serve-should-not-exist", images[0])
        return {"n": tf.cast(tf.strings.length(images), tf.float32)}

    with pytest.raises(FpgaServeError, match="op 'WriteFile'"):
        _zip_with(writes, tmp_path / "w.zip")


def test_print_to_a_file_is_refused(tmp_path: Path) -> None:
    @tf.function(input_signature=SIG)
    def logs(images: Any) -> Any:
        tf.print(images, output_stream="file:///tmp/fpga-serve-print.txt")
        return {"n": tf.cast(tf.strings.length(images), tf.float32)}

    with pytest.raises(FpgaServeError, match=r"op 'PrintV2' with output_stream='file://"):
        _zip_with(logs, tmp_path / "p.zip")


def test_graph_def_stages_are_checked_at_save_and_at_load(tmp_path: Path) -> None:
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
        tf.identity(x * 2.0, name="y")
        path = tf.compat.v1.placeholder(tf.string, [], name="path")
        tf.io.read_file(path, name="leak")
        reads = tf.identity(tf.strings.length(tf.io.read_file(path)), name="z")
    graph_def = graph.as_graph_def()
    # Only what the outputs reach counts: 'leak' is in the graph but not on y's path.
    check_graph(graph_def, ["y:0"], "ok")
    with pytest.raises(ModelLoadError, match="op 'ReadFile'"):
        check_graph(graph_def, [reads.name], "bad")
    stage = TensorflowStage.from_graph_def(graph_def, inputs=["path:0"], outputs=["z:0"])
    model_def = ModelDefinition(name="g")
    model_def.pipeline.append(stage)
    with pytest.raises(FpgaServeError, match="op 'ReadFile'"):
        model_def.save(tmp_path / "g.zip")
