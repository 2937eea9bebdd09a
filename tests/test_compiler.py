"""The compiler: each pass alone, refusals, and int8-vs-float quality on real data and on the
four architectures."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from fpga_serve.compiler import CompileOptions, compile_model, float_exec
from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.compiler.keras_import import import_keras
from fpga_serve.compiler.passes import (
    batchnorm_to_scale_shift,
    fold_batchnorm,
    fold_pad,
    fuse_relu,
    optimize,
    remove_identity,
    standalone_relu,
)
from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import dequantize_output, quantize_input
from fpga_serve.hw.twin.device import TwinDevice

RNG = np.random.default_rng(7)
SQNR_FLOOR_DB = 25.0
"""int8 featurizer vs float, at reduced input size (measured ~30-35 dB for the four models)."""


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


def run_int8(compiled: Any, x: np.ndarray) -> np.ndarray:
    program = compiled.program
    q = TwinDevice().load(program).run(quantize_input(x, program.input_scale))
    return dequantize_output(q, program.output_scale).reshape(len(x), -1)


def conv_node(
    name: str,
    src: str,
    cin: int,
    cout: int,
    shape: tuple[int, int, int],
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> Node:
    rng = np.random.default_rng(len(name) + cout)  # the same node every time it is made
    return Node(
        name,
        "conv",
        [src],
        shape,
        {"stride": 1, "pad": pad},
        {
            "w": rng.normal(0, 0.3, (3, 3, cin, cout)).astype(np.float32),
            "b": rng.normal(0, 0.1, cout).astype(np.float32),
        },
    )


def bn_node(name: str, src: str, shape: tuple[int, int, int]) -> Node:
    c = shape[2]
    rng = np.random.default_rng(c)
    return Node(
        name,
        "bn",
        [src],
        shape,
        {"eps": 1e-3},
        {
            "gamma": rng.uniform(0.5, 1.5, c).astype(np.float32),
            "beta": rng.normal(0, 0.2, c).astype(np.float32),
            "mean": rng.normal(0, 0.2, c).astype(np.float32),
            "var": rng.uniform(0.5, 2, c).astype(np.float32),
        },
    )


def check_pass(make: Any, fn: Any, op_gone: str) -> None:
    x = RNG.normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    before = float_exec.run(make(), x)
    graph, changed = fn(make())
    assert changed and op_gone not in graph.ops()
    np.testing.assert_allclose(float_exec.run(graph, x), before, rtol=1e-4, atol=1e-5)
    _, again = fn(graph)
    assert not again  # a fixed point


def test_fold_pad() -> None:
    def make() -> Graph:
        return Graph(
            [
                Node("in", "input", [], (8, 8, 3)),
                Node("p", "pad", ["in"], (10, 10, 3), {"pad": (1, 1, 1, 1)}),
                conv_node("c", "p", 3, 4, (8, 8, 4)),
            ],
            "c",
        )

    check_pass(make, fold_pad, "pad")


def test_fold_batchnorm_into_conv() -> None:
    def make() -> Graph:
        return Graph(
            [
                Node("in", "input", [], (8, 8, 3)),
                conv_node("c", "in", 3, 4, (6, 6, 4)),
                bn_node("bn", "c", (6, 6, 4)),
            ],
            "bn",
        )

    check_pass(make, fold_batchnorm, "bn")


def test_batchnorm_after_concat_becomes_scale_shift_and_relu_fuses() -> None:
    def make() -> Graph:
        return Graph(
            [
                Node("in", "input", [], (8, 8, 3)),
                conv_node("c", "in", 3, 4, (8, 8, 4), (1, 1, 1, 1)),
                Node("cat", "concat", ["in", "c"], (8, 8, 7)),
                bn_node("bn", "cat", (8, 8, 7)),
                Node("r", "relu", ["bn"], (8, 8, 7)),
                Node("g", "gap", ["r"], (1, 1, 7)),
            ],
            "g",
        )

    check_pass(make, batchnorm_to_scale_shift, "bn")
    graph, _ = batchnorm_to_scale_shift(make())
    x = RNG.normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    before = float_exec.run(graph, x)
    graph, changed = fuse_relu(graph)
    assert changed and "relu" not in graph.ops() and graph.node("bn").attrs["relu"]
    np.testing.assert_allclose(float_exec.run(graph, x), before, rtol=1e-5)


def test_identity_removal_and_standalone_relu() -> None:
    def make() -> Graph:
        return Graph(
            [
                Node("in", "input", [], (8, 8, 3)),
                Node("d", "identity", ["in"], (8, 8, 3)),
                Node("r", "relu", ["d"], (8, 8, 3)),
            ],
            "r",
        )

    check_pass(make, remove_identity, "identity")
    graph, _ = remove_identity(make())
    check_pass(lambda: remove_identity(make())[0], standalone_relu, "relu")
    assert graph.output == "r"


def small_cnn(keras: Any, inputs: tuple[int, int, int]) -> Any:
    inp = keras.Input(inputs)
    x = keras.layers.ZeroPadding2D(1)(inp)
    x = keras.layers.Conv2D(32, 3)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(32, 1, activation="relu")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.MaxPooling2D(2)(x)
    z = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.Concatenate()([x, z])
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    x = keras.layers.Dropout(0.1)(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inp, out)


def test_unsupported_layers_name_the_layer_and_type() -> None:
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.DepthwiseConv2D(3, name="dw")(inp)
    with pytest.raises(CompileError, match=r"dw \(DepthwiseConv2D\)"):
        import_keras(keras.Model(inp, x))
    model = small_cnn(keras, (8, 8, 1))
    with pytest.raises(CompileError, match="softmax"):
        import_keras(model)  # the classifier head belongs in a Keras stage
    graph = import_keras(model, output_layer="features")
    graph, log = optimize(graph)
    assert set(graph.ops()) <= {"input", "conv", "add", "maxpool", "concat", "gap"}
    assert {"fold_pad", "fold_batchnorm", "fuse_relu"} <= set(log)


@pytest.fixture(scope="module")
def digits_model() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small CNN trained here on scikit-learn's bundled 8x8 digits."""
    import keras
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    keras.utils.set_random_seed(0)
    model = small_cnn(keras, (8, 8, 1))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=40, batch_size=32, verbose=0)
    return model, x_train, x_test, y_train, y_test


def test_int8_accuracy_on_digits_within_one_point_of_float(digits_model: Any) -> None:
    import keras

    model, x_train, x_test, _, y_test = digits_model
    compiled = compile_model(model, x_train[:200], CompileOptions(output_layer="features"))
    features = run_int8(compiled, x_test)
    head = keras.Model(model.get_layer("features").output, model.output)
    int8_acc = float((head(features).numpy().argmax(1) == y_test).mean())
    float_acc = float((model(x_test).numpy().argmax(1) == y_test).mean())
    assert float_acc > 0.9, f"the float model did not train ({float_acc:.3f})"
    assert abs(int8_acc - float_acc) <= 0.01, (int8_acc, float_acc)


def _arch_sqnr(family: str, size: int, n: int = 2) -> float:
    from fpga_serve.models import ZOO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zoo = ZOO[family](None, input_size=size)
    rng = np.random.default_rng(1)
    calib = rng.normal(0, 50, (4, size, size, 3)).astype(np.float32)
    compiled = zoo.compile(calib).compiled
    x = rng.normal(0, 50, (n, size, size, 3)).astype(np.float32)
    return sqnr_db(zoo.model(x).numpy(), run_int8(compiled, x))


@pytest.mark.parametrize("family", ["resnet50", "densenet121", "vgg16"])
def test_architectures_compile_and_meet_the_sqnr_floor(family: str) -> None:
    assert _arch_sqnr(family, 64) >= SQNR_FLOOR_DB


@pytest.mark.slow
@pytest.mark.parametrize("family", ["resnet50", "resnet152", "densenet121", "vgg16"])
def test_architectures_full_size(family: str) -> None:
    assert _arch_sqnr(family, 224, n=1) >= 20.0


@pytest.mark.slow
def test_resnet152_reduced_size() -> None:
    assert _arch_sqnr("resnet152", 64) >= SQNR_FLOOR_DB
