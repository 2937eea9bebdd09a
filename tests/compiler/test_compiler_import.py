"""Keras -> IR import: a tiny model per layer kind imports to a float graph that computes what
Keras computes, compiles, and runs on the twin close to Keras; refusals name layer and type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fpga_serve.compiler import CompileOptions, compile_model, float_exec
from fpga_serve.compiler.keras_import import import_keras
from fpga_serve.compiler.passes import optimize
from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import dequantize_output, quantize_input
from fpga_serve.hw.twin.device import TwinDevice

TINY_SQNR_DB = 25.0
"""int8 on the twin vs float Keras for the one-layer-kind models (measured 29-46 dB)."""

Build = Callable[[Any, Any], Any]


def _bn(keras: Any, x: Any) -> Any:
    """A batch norm with non-trivial statistics (fresh ones are the identity)."""
    layer = keras.layers.BatchNormalization(epsilon=1e-3)
    y = layer(x)
    c = layer.gamma.shape[0]
    rng = np.random.default_rng(c)
    layer.set_weights(
        [
            rng.uniform(0.5, 1.5, c),
            rng.normal(0, 0.3, c),
            rng.normal(0, 0.3, c),
            rng.uniform(0.5, 2.0, c),
        ]
    )
    return y


LAYER_KINDS: dict[str, Build] = {
    "conv_valid_stride2": lambda k, x: k.layers.Conv2D(6, 3, strides=2)(x),
    "conv_same_relu": lambda k, x: k.layers.Conv2D(6, 3, padding="same", activation="relu")(x),
    "conv_same_stride2_even": lambda k, x: k.layers.Conv2D(5, 4, strides=2, padding="same")(x),
    "conv_no_bias_7x7": lambda k, x: k.layers.Conv2D(4, 7, padding="same", use_bias=False)(x),
    "conv_bn_relu": lambda k, x: k.layers.ReLU()(_bn(k, k.layers.Conv2D(6, 3)(x))),
    "bn_standalone": _bn,
    "activation_relu": lambda k, x: k.layers.Activation("relu")(k.layers.Conv2D(4, 1)(x)),
    "activation_linear": lambda k, x: k.layers.Activation("linear")(k.layers.Conv2D(4, 1)(x)),
    "relu_standalone": lambda k, x: k.layers.ReLU()(x),
    "zero_padding_conv": lambda k, x: k.layers.Conv2D(4, 3)(
        k.layers.ZeroPadding2D(((1, 2), (0, 1)))(x)
    ),
    "zero_padding_maxpool": lambda k, x: k.layers.MaxPooling2D(3, 2)(
        k.layers.ZeroPadding2D(1)(k.layers.ReLU()(x))
    ),
    "maxpool_valid": lambda k, x: k.layers.MaxPooling2D(2)(x),
    "maxpool_same": lambda k, x: k.layers.MaxPooling2D(3, strides=2, padding="same")(x),
    "avgpool_valid": lambda k, x: k.layers.AveragePooling2D(2, strides=2)(x),
    "global_avgpool": lambda k, x: k.layers.GlobalAveragePooling2D()(k.layers.Conv2D(8, 3)(x)),
    "global_maxpool": lambda k, x: k.layers.GlobalMaxPooling2D()(k.layers.Conv2D(8, 3)(x)),
    "add": lambda k, x: k.layers.Add()([x, k.layers.Conv2D(3, 3, padding="same")(x)]),
    "add_three_relu": lambda k, x: k.layers.ReLU()(
        k.layers.Add()([x, k.layers.Conv2D(3, 1)(x), k.layers.Conv2D(3, 3, padding="same")(x)])
    ),
    "concat": lambda k, x: k.layers.Concatenate()([x, k.layers.Conv2D(5, 3, padding="same")(x)]),
    "concat_of_concat_bn": lambda k, x: _bn(
        k,
        k.layers.Concatenate()(
            [
                k.layers.Concatenate()([x, k.layers.Conv2D(2, 1)(x)]),
                k.layers.Conv2D(3, 3, padding="same")(x),
            ]
        ),
    ),
    "dense_on_gap": lambda k, x: k.layers.Dense(7, activation="relu")(
        k.layers.GlobalAveragePooling2D()(x)
    ),
    "dense_per_pixel": lambda k, x: k.layers.Dense(5)(x),
    "flatten_dense": lambda k, x: k.layers.Dense(6)(k.layers.Flatten()(k.layers.Conv2D(4, 3)(x))),
    "flatten_after_gap_dense": lambda k, x: k.layers.Dense(4)(
        k.layers.Flatten()(k.layers.GlobalAveragePooling2D(keepdims=True)(x))
    ),
    "dropout": lambda k, x: k.layers.Conv2D(4, 1)(k.layers.Dropout(0.5)(x)),
    "rescaling": lambda k, x: k.layers.Conv2D(4, 3)(k.layers.Rescaling(0.5, offset=-0.25)(x)),
}


def tiny_model(keras: Any, kind: str, shape: tuple[int, int, int] = (8, 8, 3)) -> Any:
    keras.utils.set_random_seed(3)
    inp = keras.Input(shape)
    return keras.Model(inp, LAYER_KINDS[kind](keras, inp), name=kind)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / max(((ref - got) ** 2).sum(), 1e-30)))


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_each_layer_kind_imports_compiles_and_runs_on_the_twin(kind: str) -> None:
    import keras

    model = tiny_model(keras, kind)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (4, 8, 8, 3)).astype(np.float32)
    want = np.asarray(model(x, training=False)).reshape(len(x), -1)
    graph = import_keras(model)
    np.testing.assert_allclose(
        float_exec.run(graph, x).reshape(len(x), -1), want, rtol=1e-4, atol=1e-5
    )
    optimized, _ = optimize(graph.copy())
    assert set(optimized.ops()) <= {
        "input",
        "conv",
        "maxpool",
        "avgpool",
        "gap",
        "add",
        "concat",
        "scale_shift",
    }
    np.testing.assert_allclose(
        float_exec.run(optimized, x).reshape(len(x), -1), want, rtol=1e-4, atol=1e-5
    )
    calib = rng.normal(0, 1, (16, 8, 8, 3)).astype(np.float32)
    program = compile_model(model, calib, CompileOptions(calibration_method="max")).program
    q = TwinDevice().load(program).run(quantize_input(x, program.input_scale))
    got = dequantize_output(q, program.output_scale).reshape(len(x), -1)
    assert sqnr_db(want, got) >= TINY_SQNR_DB


def test_sequential_nested_and_shared_layers() -> None:
    import keras

    keras.utils.set_random_seed(1)
    seq = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="inner_conv"),
            keras.layers.MaxPooling2D(2),
        ],
        name="backbone",
    )
    shared = keras.layers.Conv2D(4, 1, name="shared")
    inp = keras.Input((8, 8, 3))
    x = seq(inp)
    x = shared(shared(x))  # one layer, two calls: two nodes
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    x_val = np.random.default_rng(0).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    for candidate in (model, seq):
        graph = import_keras(candidate)
        np.testing.assert_allclose(
            float_exec.run(graph, x_val).reshape(2, -1),
            np.asarray(candidate(x_val)).reshape(2, -1),
            rtol=1e-4,
            atol=1e-5,
        )
    names = set(import_keras(model).nodes)
    assert {"backbone/inner_conv", "shared", "shared@1", "head"} <= names
    cut = import_keras(model, output_layer="backbone")
    assert cut.output.startswith("backbone/") and cut.node(cut.output).op == "maxpool"
    assert "head" not in cut.nodes


def test_featurizer_cut_skips_the_softmax_head() -> None:
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out)
    with pytest.raises(CompileError, match=r"probs \(Dense\).*softmax.*output_layer"):
        import_keras(model)
    graph = import_keras(model, output_layer="features")
    assert graph.node(graph.output).op == "gap"
    with pytest.raises(CompileError, match="no layer 'nope'"):
        import_keras(model, output_layer="nope")


def _unsupported(keras: Any, kind: str) -> Any:
    inp = keras.Input((8, 8, 3))
    layers = keras.layers
    make = {
        "depthwise": lambda: layers.DepthwiseConv2D(3, name="bad")(inp),
        "dilated": lambda: layers.Conv2D(4, 3, dilation_rate=2, name="bad")(inp),
        "strides": lambda: layers.Conv2D(4, 3, strides=(1, 2), name="bad")(inp),
        "sigmoid": lambda: layers.Activation("sigmoid", name="bad")(inp),
        "relu6": lambda: layers.ReLU(max_value=6.0, name="bad")(inp),
        "avgpool_same": lambda: layers.AveragePooling2D(3, 2, padding="same", name="bad")(inp),
        "upsampling": lambda: layers.UpSampling2D(name="bad")(inp),
        "flatten_alone": lambda: layers.Flatten(name="bad")(inp),
    }[kind]
    return keras.Model(inp, make())


@pytest.mark.parametrize(
    ("kind", "layer_type"),
    [
        ("depthwise", "DepthwiseConv2D"),
        ("dilated", "Conv2D"),
        ("strides", "Conv2D"),
        ("sigmoid", "Activation"),
        ("relu6", "ReLU"),
        ("avgpool_same", "AveragePooling2D"),
        ("upsampling", "UpSampling2D"),
        ("flatten_alone", "Flatten"),
    ],
)
def test_unsupported_layers_name_the_layer_and_its_type(kind: str, layer_type: str) -> None:
    import keras

    model = _unsupported(keras, kind)
    data = np.zeros((1, 8, 8, 3), np.float32)
    with pytest.raises(CompileError, match=rf"bad \({layer_type}\)"):
        compile_model(model, data)


def test_models_the_overlay_cannot_take_are_refused() -> None:
    import keras

    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    with pytest.raises(CompileError, match="exactly one input"):
        import_keras(keras.Model([a, b], keras.layers.Add()([a, b])))
    v = keras.Input((16,))
    with pytest.raises(CompileError, match=r"fixed-size image"):
        import_keras(keras.Model(v, keras.layers.Dense(4)(v)))
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3)])
    with pytest.raises(CompileError, match="no defined inputs"):
        import_keras(unbuilt)
