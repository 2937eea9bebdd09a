"""The compiler end to end: the named pipeline and what it records, int8-on-the-twin quality
against float Keras on a small CNN, on real data (scikit-learn's digits) and on the four
keras.applications architectures. Passes, import and quantisation have their own files
(test_compiler_passes.py, test_compiler_import.py, test_compiler_quant.py)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import small_cnn
from fpga_serve.compiler import CompiledModel, CompileOptions, compile_model
from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import Program, dequantize_output, quantize_input
from fpga_serve.hw.twin.device import TwinDevice

RNG = np.random.default_rng(7)
SQNR_FLOOR_DB = 25.0
"""int8 featurizer on the twin vs float TensorFlow, reduced input sizes (measured 31-36 dB at
64x64 and 37-38 dB at 224x224 for the four architectures, random weights)."""
FULL_SIZE_FLOOR_DB = 30.0


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


def run_int8(compiled: CompiledModel, x: np.ndarray) -> np.ndarray:
    program = compiled.program
    q = TwinDevice().load(program).run(quantize_input(x, program.input_scale))
    return dequantize_output(q, program.output_scale).reshape(len(x), -1)


def _randomise_batch_norms(model: Any) -> None:
    """Fresh batch norms are identities; give them statistics so folding is exercised."""
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.2, c),
                    rng.normal(0, 0.2, c),
                    rng.uniform(0.5, 2, c),
                ]
            )


@pytest.fixture(scope="module")
def random_cnn() -> Any:
    import keras

    keras.utils.set_random_seed(2)
    model = small_cnn(keras, (32, 32, 3))
    _randomise_batch_norms(model)
    return model


def test_small_cnn_on_the_twin_against_float_keras(random_cnn: Any) -> None:
    import keras

    calib = RNG.normal(0, 1, (16, 32, 32, 3)).astype(np.float32)
    compiled = compile_model(random_cnn, calib, CompileOptions(output_layer="features"))
    x = RNG.normal(0, 1, (8, 32, 32, 3)).astype(np.float32)
    features = keras.Model(random_cnn.input, random_cnn.get_layer("features").output)
    want = np.asarray(features(x))
    np.testing.assert_allclose(compiled.float_forward(x).reshape(8, -1), want, rtol=1e-4, atol=1e-5)
    assert sqnr_db(want, run_int8(compiled, x)) >= SQNR_FLOOR_DB
    # The reference twin (the specification) gives the very same bytes as the fast one.
    q = quantize_input(x[:2], compiled.program.input_scale)
    fast = TwinDevice().load(compiled.program).run(q)
    assert np.array_equal(TwinDevice(reference=True).load(compiled.program).run(q), fast)


def test_pipeline_records_how_it_compiled(random_cnn: Any, tmp_path: Path) -> None:
    calib = RNG.normal(0, 1, (10, 32, 32, 3)).astype(np.float32)
    seen: list[tuple[str, int, int]] = []
    options = CompileOptions(calibration_images=6, calibration_batch=4, output_layer="features")
    compiled = compile_model(
        random_cnn,
        calib,
        options,
        progress=lambda step, done, total: seen.append((step, done, total)),
        save_steps=tmp_path / "steps",
    )
    assert seen == [
        ("import", 1, 1),
        ("optimize", 1, 1),
        ("calibrate", 1, 2),
        ("calibrate", 2, 2),
        ("lower", 1, 1),
        ("plan", 1, 1),
    ]
    saved = sorted(p.name for p in (tmp_path / "steps").iterdir())
    assert saved == [
        "00_import.json",
        "01_optimize.json",
        "02_calibrate.json",
        "03_lower.json",
        "04_plan.json",
    ]
    device = compiled.program.meta["device"]
    assert device["target"] == options.target == "zcu104" and len(device["digest"]) == 64
    record = compiled.calibration
    assert record["method"] == "percentile" and record["percentile"] == 99.99
    assert record["samples"] == 6  # calibration_images caps what was given
    assert set(record["scales"]) == set(compiled.graph.nodes)
    # The head after the cut is not compiled; the layers that were are listed.
    assert compiled.layers[-1] == "features" and "dense" not in compiled.layers
    conv_rows = [r for r in compiled.summary if r["op"] == "conv"]
    assert any("BatchNormalization" in f for r in conv_rows for f in r["fused"])
    for row in conv_rows:
        assert row["macs"] > 0 and row["weight_bytes"] > 0 and row["weight_scale"][0] > 0
    assert all(row["scale"] == record["scales"][row["name"]] for row in compiled.summary)

    compiled.save(tmp_path / "stage")
    assert Program.load(tmp_path / "stage").to_json() == compiled.program.to_json()
    assert CompileOptions.load(tmp_path / "stage") == options
    on_disk = json.loads((tmp_path / "stage" / "calibration.json").read_text())
    assert on_disk["samples"] == 6 and on_disk["method"] == "percentile"


def test_bad_calibration_data_is_refused(random_cnn: Any) -> None:
    opts = CompileOptions(output_layer="features")
    with pytest.raises(
        CompileError, match=r"inputs are \[16, 16, 3\], the model takes \[32, 32, 3\]"
    ):
        compile_model(random_cnn, np.zeros((2, 16, 16, 3), np.float32), opts)
    with pytest.raises(CompileError, match="non-empty"):
        compile_model(random_cnn, np.zeros((0, 32, 32, 3), np.float32), opts)
    bad = np.zeros((2, 32, 32, 3), np.float32)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(CompileError, match="NaN"):
        compile_model(random_cnn, bad, opts)


@pytest.mark.parametrize("method", ["percentile", "max"])
def test_int8_accuracy_on_digits_within_one_point_of_float(digits_model: Any, method: str) -> None:
    import keras

    model, x_train, x_test, _, y_test = digits_model
    options = CompileOptions(calibration_method=method, output_layer="features")
    compiled = compile_model(model, x_train[:200], options)
    features = run_int8(compiled, x_test)
    head = keras.Model(model.get_layer("features").output, model.output)
    int8_acc = float((np.asarray(head(features)).argmax(1) == y_test).mean())
    float_acc = float((np.asarray(model(x_test)).argmax(1) == y_test).mean())
    assert float_acc > 0.9, f"the float model did not train ({float_acc:.3f})"
    assert abs(int8_acc - float_acc) <= 0.01, (int8_acc, float_acc)


def _arch_sqnr(family: str, size: int, n: int = 2) -> float:
    from fpga_serve.models import ZOO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights, on purpose
        zoo = ZOO[family](None, input_size=size)
    rng = np.random.default_rng(1)
    # Caffe/torch-style preprocessed pixels have a spread like this.
    calib = rng.normal(0, 50, (4, size, size, 3)).astype(np.float32)
    compiled = compile_model(zoo.model, calib)
    x = rng.normal(0, 50, (n, size, size, 3)).astype(np.float32)
    return sqnr_db(np.asarray(zoo.model(x)), run_int8(compiled, x))


@pytest.mark.parametrize("family", ["resnet50", "densenet121", "vgg16"])
def test_architectures_compile_and_meet_the_sqnr_floor(family: str) -> None:
    assert _arch_sqnr(family, 64) >= SQNR_FLOOR_DB


@pytest.mark.slow
def test_resnet152_reduced_size() -> None:
    assert _arch_sqnr("resnet152", 64) >= SQNR_FLOOR_DB


@pytest.mark.slow
@pytest.mark.parametrize("family", ["resnet50", "resnet152", "densenet121", "vgg16"])
def test_architectures_full_size(family: str) -> None:
    assert _arch_sqnr(family, 224, n=1) >= FULL_SIZE_FLOOR_DB
