"""Shared fixtures: real photos that packages ship, a tiny pipeline zip, a running server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import external_tools
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
