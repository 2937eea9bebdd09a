"""The FPGA stage end to end: a digits CNN served through the twin keeps its accuracy; bad FPGA
stages, weight files and calibration folders are refused with clear messages."""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fpga_serve.compiler import CompileOptions, compile_model
from fpga_serve.core.errors import CompileError, InvalidInput, ModelLoadError
from fpga_serve.modelzip import LoadContext, load_pipeline
from fpga_serve.pipeline import FpgaStage, KerasStage, ModelDefinition
from fpga_serve_client import PredictionClient
from serving import run_server, run_server_expect_failure


@pytest.fixture(scope="module")
def digits_zip(digits_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    model, x_train, *_ = digits_model
    compiled = compile_model(model, x_train[:200], CompileOptions(output_layer="features"))
    head = keras.Model(model.get_layer("features").output, model.output)
    model_def = ModelDefinition(name="digits")
    model_def.pipeline += [FpgaStage(compiled), KerasStage(head)]
    model_def.labels = [str(d) for d in range(10)]
    path = tmp_path_factory.mktemp("fpga") / "digits.zip"
    model_def.save(path)
    return path


def test_digits_served_through_the_twin_within_one_point_of_float(
    digits_zip: Path,
    digits_model: Any,
) -> None:
    model, _, x_test, _, y_test = digits_model
    float_acc = float((model(x_test).numpy().argmax(1) == y_test).mean())
    with (
        run_server([digits_zip], "--device", "twin") as server,
        PredictionClient(server.address, input_name="images") as client,
    ):
        scores = np.concatenate(
            [client.score_numpy(x_test[i : i + 64]) for i in range(0, len(x_test), 64)]
        )
        assert client.labels() == [str(d) for d in range(10)]
        busy, fpga_stage = _device_busy_and_fpga_stage_seconds(server)
    # The device's busy time is counted (wired at the server) and is a part of the FPGA stage's
    # time: the stage also quantises on the host.
    assert 0 < busy <= fpga_stage, (busy, fpga_stage)
    served_acc = float((scores.argmax(1) == y_test).mean())
    assert scores.shape == (len(x_test), 10)
    assert abs(served_acc - float_acc) <= 0.01, (served_acc, float_acc)


def _device_busy_and_fpga_stage_seconds(server: Any) -> tuple[float, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    busy = stage = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fpga_serve_device_busy_seconds_total":
                assert sample.labels["device"] == "twin"
                busy += sample.value
            elif (
                sample.name == "fpga_serve_stage_duration_seconds_sum"
                and sample.labels.get("kind") == "fpga"
            ):
                stage += sample.value
    return busy, stage


def _rewrite(src: Path, dst: Path, member_suffix: str, edit: Any) -> Path:
    with zipfile.ZipFile(src) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    name = next(n for n in members if n.endswith(member_suffix))
    members[name] = edit(members[name])
    manifest = json.loads(members["service_def.json"])
    manifest["files"][name] = {
        "sha256": hashlib.sha256(members[name]).hexdigest(),
        "size": len(members[name]),
    }
    members["service_def.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return dst


def test_fpga_stage_for_another_spec_version_is_refused(digits_zip: Path, tmp_path: Path) -> None:
    def other_version(raw: bytes) -> bytes:
        program = json.loads(raw)
        program["spec_version"] = "1.0"  # a zip built before overlay spec 2.0
        return json.dumps(program).encode()

    bad = _rewrite(digits_zip, tmp_path / "v1.zip", "program.json", other_version)
    with pytest.raises(ModelLoadError, match=r"compiled for overlay spec '1\.0'.*rebuild"):
        load_pipeline(bad, LoadContext())
    stderr = run_server_expect_failure([bad])
    assert "compiled for overlay spec '1.0'" in stderr and "rebuild the model" in stderr


def test_tampered_or_truncated_fpga_weights_are_refused(digits_zip: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(digits_zip) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    name = next(n for n in members if n.endswith("weights.npz"))
    members[name] = members[name][: len(members[name]) // 2]
    bad = tmp_path / "cut.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(ModelLoadError, match=r"weights\.npz' has a size the manifest does not"):
        load_pipeline(bad, LoadContext())
    rehashed = _rewrite(
        digits_zip, tmp_path / "rehash.zip", "weights.npz", lambda raw: raw[: len(raw) // 2]
    )
    with pytest.raises(ModelLoadError, match="FPGA program"):
        load_pipeline(rehashed, LoadContext())


def save_legacy_h5(model: Any, path: Path, shrink: str | None = None) -> None:
    """Write weights in the Keras (legacy) .h5 layout the ImageNet weight files use; with
    ``shrink``, that layer's kernel loses half its output channels."""
    import h5py

    with h5py.File(path, "w") as f:
        layers = [layer for layer in model.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        for layer in layers:
            group = f.create_group(layer.name)
            names = []
            for index, weight in enumerate(layer.weights):
                value = np.asarray(weight.numpy())
                if layer.name == shrink and index == 0:
                    value = value[..., : value.shape[-1] // 2]
                name = f"{layer.name}/{weight.name}_{index}:0"
                group.create_dataset(name, data=value)
                names.append(name.encode())
            group.attrs["weight_names"] = names


def test_weight_files_load_and_a_mismatch_names_the_first_layer(tmp_path: Path) -> None:
    import keras
    from fpga_serve.models import QuantizedResnet50

    keras.utils.set_random_seed(3)
    source = keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", input_shape=(32, 32, 3)
    )
    good, bad = tmp_path / "good_notop.h5", tmp_path / "bad_notop.h5"
    save_legacy_h5(source, good)
    save_legacy_h5(source, bad, shrink="conv2_block1_1_conv")
    model = QuantizedResnet50(None, weights=good, input_size=32)
    assert model.weights_source == str(good)
    x = np.random.default_rng(0).normal(0, 1, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.model(x).numpy(), source(x).numpy(), rtol=1e-5)
    with pytest.raises(CompileError, match=r"layer 'conv2_block1_1_conv' \(Conv2D\): the file"):
        QuantizedResnet50(None, weights=bad, input_size=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        QuantizedResnet50(tmp_path / "empty", input_size=32)
    assert any("RANDOM weights" in str(w.message) for w in caught)

    # The classifier's ImageNet top: the 'predictions' layer of the full weight file beside it,
    # taken only when its shapes fit.
    for units in (1000, 10):
        dense_layer = keras.layers.Dense(units, name="predictions")
        top = keras.Sequential([keras.Input((2048,)), dense_layer])
        save_legacy_h5(top, tmp_path / f"{QuantizedResnet50.file_stem}.h5")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dense = model.__class__(tmp_path, weights=good, input_size=32).get_default_classifier()
        got = [np.asarray(w) for w in dense.model.get_layer("predictions").weights]
        fits = all(np.array_equal(a, np.asarray(b)) for a, b in zip(got, top.weights, strict=True))
        assert fits == (units == 1000)
        assert any("classifier is RANDOM" in str(w.message) for w in caught) == (units != 1000)


def test_calibration_folder_without_images_is_an_error(tmp_path: Path) -> None:
    from fpga_serve.cli import main

    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InvalidInput, match="holds no image files"):
        from fpga_serve.build import build

        build(
            type(
                "NS",
                (),
                {
                    "model": "resnet50",
                    "calibration": tmp_path,
                    "model_path": None,
                    "weights": None,
                    "size": 32,
                    "calibration_count": 4,
                    "method": "max",
                    "name": None,
                    "output": tmp_path / "o.zip",
                },
            )()
        )
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert (
        main(
            [
                "build",
                "resnet50",
                "--size",
                "32",
                "--calibration",
                str(tmp_path),
                "-o",
                str(tmp_path / "o.zip"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "o.zip").exists()


def test_default_classifier_takes_imagenet_top_weights_from_the_keras_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import h5py
    from fpga_serve.models import QuantizedResnet50

    models = tmp_path / "keras" / "models"
    models.mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    kernel = np.random.default_rng(0).normal(0, 0.01, (2048, 1000)).astype(np.float32)
    bias = np.random.default_rng(1).normal(0, 0.01, 1000).astype(np.float32)
    with h5py.File(models / "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "w") as f:
        f.attrs["layer_names"] = [b"predictions"]
        group = f.create_group("predictions")
        group.create_dataset("predictions/kernel:0", data=kernel)
        group.create_dataset("predictions/bias:0", data=bias)
        group.attrs["weight_names"] = [b"predictions/kernel:0", b"predictions/bias:0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the featurizer itself is random here
        zoo = QuantizedResnet50(None, input_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "RANDOM classifier" warning this time
        stage = zoo.get_default_classifier()
    dense = stage.model.get_layer("predictions")
    np.testing.assert_array_equal(dense.get_weights()[0], kernel)
    np.testing.assert_array_equal(dense.get_weights()[1], bias)
    assert len(zoo.labels) == 1000 and zoo.labels[281] == "tabby"
