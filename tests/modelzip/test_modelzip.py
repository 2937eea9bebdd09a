"""The pipeline zip: round trips for every stage kind, and every refusal before extraction."""

from __future__ import annotations

import json
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fpga_serve.core.errors import InvalidInput, ModelLoadError
from fpga_serve.modelzip import ArchiveLimits, LoadContext, load_pipeline, validate_archive
from fpga_serve.pipeline import KerasStage, ModelDefinition, TensorflowStage
from hostile import ARCHIVE_CASES, rewrite_archive


@pytest.fixture(scope="module")
def tf() -> object:
    import tensorflow as tf

    return tf


def _double_fn(tf: object) -> object:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def double(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 2.0, "z": tf.reduce_sum(x, axis=1)}

    return double


@pytest.fixture(scope="module")
def two_stage_zip(tmp_path_factory: pytest.TempPathFactory, tf: object) -> Path:
    import keras

    keras.utils.set_random_seed(1)
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
    path = tmp_path_factory.mktemp("zips") / "two.zip"
    tf_mod = __import__("tensorflow")

    @tf_mod.function(input_signature=[tf_mod.TensorSpec([None, 3], tf_mod.float32, name="x")])
    def double(x: object) -> object:
        return {"y": x * 2.0}

    model_def = ModelDefinition(name="two")
    model_def.pipeline += [TensorflowStage(double), KerasStage(dense)]
    model_def.labels = ["left", "right"]
    model_def.save(path)
    return path


def _load(path: Path, tmp: Path | None = None) -> object:
    return load_pipeline(path, LoadContext(device=None, workdir=tmp))


def test_round_trip_runs_like_the_original(two_stage_zip: Path) -> None:
    import keras

    archive = _load(two_stage_zip)
    try:
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        (y,) = archive.stages[0].run([x])  # type: ignore[attr-defined]
        np.testing.assert_array_equal(y, x * 2)
        (out,) = archive.stages[1].run([y])  # type: ignore[attr-defined]
        model = keras.saving.load_model(archive.directory / "stages/1/model.keras")  # type: ignore[attr-defined]
        np.testing.assert_allclose(out, model(y).numpy(), rtol=1e-6)
        assert archive.labels == ["left", "right"]  # type: ignore[attr-defined]
        assert [s.describe() for s in archive.inputs] == ["x: FP32[?,3]"]  # type: ignore[attr-defined]
        directory = archive.directory  # type: ignore[attr-defined]
    finally:
        archive.close()  # type: ignore[attr-defined]
    assert not directory.exists()


def test_model_definition_load_describes_without_extracting(two_stage_zip: Path) -> None:
    loaded = ModelDefinition.load(two_stage_zip)
    assert loaded.name == "two" and loaded.labels == ["left", "right"]
    assert loaded.manifest is not None
    assert [s.kind for s in loaded.manifest.stages] == ["tensorflow", "keras"]


def test_graph_def_stage_with_tensor_names(tmp_path: Path, tf: object) -> None:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="Placeholder")
        w = tf.Variable([[1.0, -1.0], [0.5, 2.0]], name="w")
        tf.nn.softmax(tf.matmul(x, w), name="classifier/Softmax")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            stage = TensorflowStage(sess, x, graph.get_tensor_by_name("classifier/Softmax:0"))
            want = sess.run("classifier/Softmax:0", {x: [[1.0, 2.0]]})
    model_def = ModelDefinition(name="graph")
    model_def.pipeline.append(stage)
    model_def.save(tmp_path / "g.zip")
    archive = _load(tmp_path / "g.zip")
    try:
        assert [s.name for s in archive.inputs] == ["Placeholder:0"]  # type: ignore[attr-defined]
        (got,) = archive.stages[0].run([np.array([[1.0, 2.0]], np.float32)])  # type: ignore[attr-defined]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    finally:
        archive.close()  # type: ignore[attr-defined]


def test_stages_that_do_not_chain_are_refused_at_save(tmp_path: Path, tf: object) -> None:
    import keras

    model_def = ModelDefinition()
    model_def.pipeline.append(TensorflowStage(_double_fn(tf)))
    model_def.pipeline.append(
        KerasStage(keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)]))
    )
    with pytest.raises(InvalidInput, match="outputs but the next stage"):
        model_def.save(tmp_path / "bad.zip")
    assert not (tmp_path / "bad.zip").exists()


def _chain_break(members: dict[str, bytes]) -> None:
    manifest = json.loads(members["service_def.json"])
    manifest["stages"][1]["inputs"][0]["shape"] = [-1, 7]
    members["service_def.json"] = json.dumps(manifest).encode()


@pytest.mark.parametrize(
    ("case", "edit", "fix", "needle"), ARCHIVE_CASES, ids=[c[0] for c in ARCHIVE_CASES]
)
def test_bad_archives_are_refused_before_extraction(
    two_stage_zip: Path,
    tmp_path: Path,
    case: str,
    edit: Callable[[dict[str, bytes]], None],
    fix: bool,
    needle: str,
) -> None:
    bad = rewrite_archive(two_stage_zip, tmp_path / "bad.zip", edit, fix)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ModelLoadError) as err:
        _load(bad, work)
    assert needle in str(err.value)
    assert list(work.iterdir()) == []  # nothing was extracted


def test_chain_mismatch_in_manifest_is_refused_at_load(two_stage_zip: Path, tmp_path: Path) -> None:
    bad = rewrite_archive(two_stage_zip, tmp_path / "chain.zip", _chain_break, fix_hashes=True)
    with pytest.raises(ModelLoadError, match="does not fit stage"):
        validate_archive(bad)


def test_symlink_entries_and_duplicates_are_refused(two_stage_zip: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(two_stage_zip) as src, zipfile.ZipFile(link, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        evil = zipfile.ZipInfo("stages/0/link")
        evil.external_attr = (stat.S_IFLNK | 0o777) << 16
        dst.writestr(evil, "/etc/passwd")
    with pytest.raises(ModelLoadError, match="'stages/0/link' is not a regular file"):
        validate_archive(link)
    dup = tmp_path / "dup.zip"
    with zipfile.ZipFile(two_stage_zip) as src, zipfile.ZipFile(dup, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dst.writestr("labels.txt", b"other\n")
    with pytest.raises(ModelLoadError, match=r"'labels\.txt' appears twice"):
        validate_archive(dup)


def test_zip_bombs_are_refused_by_ratio_and_size(two_stage_zip: Path, tmp_path: Path) -> None:
    bomb = rewrite_archive(
        two_stage_zip,
        tmp_path / "bomb.zip",
        lambda m: m.update({"stages/0/zeros.bin": bytes(50_000_000)}),
        fix_hashes=True,
    )
    with pytest.raises(ModelLoadError, match=r"ratio limit"):
        validate_archive(bomb)
    with pytest.raises(ModelLoadError, match=r"over the limit"):
        validate_archive(two_stage_zip, ArchiveLimits(max_total_bytes=100))


def test_not_a_zip_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelLoadError, match="not a readable zip"):
        validate_archive(junk)
    with pytest.raises(ModelLoadError, match="no such file"):
        validate_archive(tmp_path / "absent.zip")


def test_session_stage_keeps_only_the_graph_between_its_tensors(tmp_path: Path, tf: object) -> None:
    """Brainwave's classifier stage starts at the featurizer's output: what lies upstream (here
    a Python op, which the load policy refuses, and a variable) is neither saved nor checked,
    and a placeholder given its shape with set_shape is saved with it."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        raw = tf.compat.v1.placeholder(tf.float32, name="raw")  # unknown rank
        raw.set_shape([None, 2])
        upstream = tf.Variable([[3.0, 0.0], [0.0, 3.0]], name="upstream")
        mid = tf.compat.v1.numpy_function(lambda a: a + 1.0, [tf.matmul(raw, upstream)], tf.float32)
        mid = tf.identity(tf.reshape(mid, [-1, 2]), name="features")
        w = tf.Variable([[1.0, -1.0], [0.5, 2.0]], name="w")
        out = tf.nn.softmax(tf.matmul(mid, w), name="out")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            head = TensorflowStage(sess, mid, out)
            first = TensorflowStage(sess, raw, mid * 1.0)
            want = sess.run(out, {mid: [[1.0, 2.0]]})
    ops = {node.op for node in head._graph_def.node}  # type: ignore[union-attr]
    assert "PyFunc" not in ops and "MatMul" in ops
    assert not any(node.name.startswith("upstream") for node in head._graph_def.node)  # type: ignore[union-attr]
    model_def = ModelDefinition(name="head")
    model_def.pipeline.append(head)
    model_def.save(tmp_path / "head.zip")
    archive = _load(tmp_path / "head.zip")
    try:
        assert [s.describe() for s in archive.inputs] == ["features:0: FP32[?,2]"]  # type: ignore[attr-defined]
        (got,) = archive.stages[0].run([np.array([[1.0, 2.0]], np.float32)])  # type: ignore[attr-defined]
        np.testing.assert_allclose(got, want, rtol=1e-6)
    finally:
        archive.close()  # type: ignore[attr-defined]
    placeholder = next(n for n in first._graph_def.node if n.name == "raw")  # type: ignore[union-attr]
    assert [d.size for d in placeholder.attr["shape"].shape.dim] == [-1, 2]
    with graph.as_default(), pytest.raises(InvalidInput, match="one of 2 outputs"):
        pair = tf.split(out, 2, axis=1)
        TensorflowStage(tf.compat.v1.Session(graph=graph), pair[1], out)
