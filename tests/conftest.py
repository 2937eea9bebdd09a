"""Shared fixtures: real photos that packages ship, a tiny pipeline zip, a running server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import external_tools
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LABELS = ["tabby cat", "palace", "daisy", "sunset", "teapot"]
TINY_SIZE = 32


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.tools(...)``: each named program must be installed (external_tools.py)."""
    for mark in item.iter_markers("tools"):
        for name in mark.args:
            external_tools.which(name)


@pytest.fixture(scope="session")
def photo_dir() -> Path:
    """scikit-learn's bundled JPEG photos (china.jpg, flower.jpg)."""
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


@pytest.fixture(scope="session")
def china_jpg(photo_dir: Path) -> bytes:
    return (photo_dir / "china.jpg").read_bytes()


@pytest.fixture(scope="session")
def flower_jpg(photo_dir: Path) -> bytes:
    return (photo_dir / "flower.jpg").read_bytes()


def build_tiny_model_def(name: str = "tiny", input_name: str = "images") -> object:
    """The Brainwave how-to at toy size: JPEG preprocessing -> a small Keras CNN with 5 labels.
    With another ``input_name`` the zip's input also answers to the alias ``images``."""
    import keras
    from fpga_serve.pipeline import KerasStage, ModelDefinition
    from fpga_serve.preprocessing import image_preprocess_stage

    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((TINY_SIZE, TINY_SIZE, 3)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(LABELS), activation="softmax"),
        ]
    )
    model_def = ModelDefinition(name=name)
    model_def.pipeline.append(
        image_preprocess_stage(family="resnet50", size=TINY_SIZE, input_name=input_name)
    )
    model_def.pipeline.append(KerasStage(model))
    model_def.labels = list(LABELS)
    return model_def


@pytest.fixture(scope="session")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.zip"
    build_tiny_model_def().save(path)  # type: ignore[attr-defined]
    return path


@pytest.fixture(scope="session")
def tiny_server(tiny_zip: Path) -> Iterator[object]:
    from serving import run_server

    with run_server([tiny_zip], "--max-batch-size", "8") as server:
        yield server


def build_slow_model_def(seconds_of_work: int = 40, name: str = "slow") -> object:
    """A TensorFlow stage that burns CPU (a loop of matmuls) so requests stay in flight."""
    import tensorflow as tf
    from fpga_serve.pipeline import ModelDefinition, TensorflowStage

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def slow(x: tf.Tensor) -> dict[str, tf.Tensor]:
        m = tf.eye(256) * 0.5

        def body(i: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.linalg.matmul(acc, m) + tf.eye(256)

        _, acc = tf.while_loop(lambda i, a: i < seconds_of_work * 25, body, (0, tf.eye(256)))
        return {"y": x * 2.0 + tf.reduce_sum(acc) * 0.0}

    model_def = ModelDefinition(name=name)
    model_def.pipeline.append(TensorflowStage(slow))
    return model_def


def small_network() -> Any:
    import keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.ZeroPadding2D(3)(inp)
    x = keras.layers.Conv2D(16, 7, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    y = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Add()([x, y])
    z = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.Concatenate()([x, z])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 1, strides=2)(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10)(x)
    return keras.Model(inp, out)


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


@pytest.fixture(scope="module")
def digits_model() -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A small CNN trained here on scikit-learn's bundled 8x8 digits (one channel)."""
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
