"""The model zoo in Brainwave's shape: ``QuantizedResnet50(model_path, weights=...)``.

Weights come from an explicit Keras weight file, or from the ``*_notop.h5`` file Keras itself
would download, looked up in ``model_path`` and the Keras cache ($KERAS_HOME/models,
~/.keras/models). Nothing is downloaded. Without weights the architecture is initialised at
random and a loud warning says so: the predictions are then meaningless.
"""

from __future__ import annotations

import logging
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np

from fpga_serve.compiler import CompileOptions, Progress, compile_model
from fpga_serve.compiler.weights import check_weights, legacy_layer_weights
from fpga_serve.core.errors import InvalidInput
from fpga_serve.modelzip.stages.fpga_stage import FpgaStage
from fpga_serve.modelzip.stages.keras_stage import KerasStage
from fpga_serve.modelzip.stages.tf_stage import TensorflowStage
from fpga_serve.preprocessing import image_preprocess_stage

log = logging.getLogger(__name__)

NUM_CLASSES = 1000


class RandomWeightsWarning(UserWarning):
    """The model runs with random weights: its outputs mean nothing."""


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in class-index order."""
    text = resources.files("fpga_serve.models").joinpath("imagenet_classes.txt").read_text()
    return text.splitlines()


def keras_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]) / "models")
    dirs.append(Path.home() / ".keras" / "models")
    return dirs


class _ZooModel:
    """A keras.applications featurizer (global average pooled) compiled for the overlay."""

    family: ClassVar[str]
    keras_name: ClassVar[str]
    file_stem: ClassVar[str]
    version: ClassVar[str] = "1.0"

    def __init__(
        self,
        model_path: str | Path | None = None,
        weights: str | Path | None = None,
        input_size: int = 224,
        is_frozen: bool = True,
    ) -> None:
        import keras

        if not 32 <= input_size <= 512:
            raise InvalidInput(f"input_size {input_size} is out of range (32..512)")
        self.input_size = input_size
        self.model_path = Path(model_path).expanduser() if model_path else None
        builder = getattr(keras.applications, self.keras_name)
        self.model = builder(
            include_top=False, weights=None, pooling="avg", input_shape=(input_size, input_size, 3)
        )
        self.weights_file = self._find(weights, top=False)
        if self.weights_file is not None:
            check_weights(self.model, self.weights_file)
            self.model.load_weights(str(self.weights_file))
            self.weights_source = str(self.weights_file)
            log.info("%s: weights from %s", self.keras_name, self.weights_file)
        else:
            self.weights_source = "random"
            warnings.warn(
                f"{self.keras_name}: no weights found (looked for {self.file_stem}_notop.h5 in "
                f"{', '.join(map(str, self._search_dirs()))}); using RANDOM weights — "
                "predictions will be meaningless. Pass weights=PATH to use trained weights.",
                RandomWeightsWarning,
                stacklevel=2,
            )
        self.is_frozen = is_frozen

    def _search_dirs(self) -> list[Path]:
        return ([self.model_path] if self.model_path else []) + keras_cache_dirs()

    def _find(self, explicit: str | Path | None, top: bool) -> Path | None:
        if explicit is not None and not top:
            path = Path(explicit).expanduser()
            if not path.is_file():
                raise InvalidInput(f"weights file {path} does not exist")
            return path
        name = f"{self.file_stem}.h5" if top else f"{self.file_stem}_notop.h5"
        for directory in self._search_dirs():
            if (directory / name).is_file():
                return directory / name
        return None

    @property
    def labels(self) -> list[str]:
        return imagenet_labels()

    @property
    def feature_dim(self) -> int:
        return int(self.model.outputs[0].shape[-1])

    def preprocess_stage(self) -> TensorflowStage:
        return image_preprocess_stage(self.family, self.input_size)

    def compile(
        self,
        calibration: np.ndarray,
        options: CompileOptions | None = None,
        progress: Progress | None = None,
    ) -> FpgaStage:
        """Quantise and compile the featurizer, calibrated on preprocessed images."""
        return FpgaStage(compile_model(self.model, calibration, options, progress))

    def get_default_classifier(self, name: str = "classifier") -> KerasStage:
        """Dense(1000) + softmax on the pooled features, with the ImageNet top weights when the
        full weight file is available (random, with a warning, otherwise)."""
        import keras

        inp = keras.Input((self.feature_dim,), name="features")
        dense = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")
        model = keras.Model(inp, dense(inp), name=f"{self.family}_classifier")
        top = self._find(None, top=True)
        values = legacy_layer_weights(top, "predictions") if top is not None else []
        loaded = [v.shape for v in values] == [tuple(w.shape) for w in dense.weights]
        if loaded:
            dense.set_weights(values)
        else:
            warnings.warn(
                f"{self.keras_name}: no ImageNet classifier weights ({self.file_stem}.h5 with a "
                f"matching 'predictions' layer); the default classifier is RANDOM",
                RandomWeightsWarning,
                stacklevel=2,
            )
        return KerasStage(model, name=name)


class QuantizedResnet50(_ZooModel):
    family = "resnet50"
    keras_name = "ResNet50"
    file_stem = "resnet50_weights_tf_dim_ordering_tf_kernels"


class QuantizedResnet152(_ZooModel):
    family = "resnet152"
    keras_name = "ResNet152"
    file_stem = "resnet152_weights_tf_dim_ordering_tf_kernels"


class Densenet121(_ZooModel):
    family = "densenet121"
    keras_name = "DenseNet121"
    file_stem = "densenet121_weights_tf_dim_ordering_tf_kernels"


class Vgg16(_ZooModel):
    family = "vgg16"
    keras_name = "VGG16"
    file_stem = "vgg16_weights_tf_dim_ordering_tf_kernels"


ZOO: dict[str, type[_ZooModel]] = {
    "resnet50": QuantizedResnet50,
    "resnet152": QuantizedResnet152,
    "densenet121": Densenet121,
    "vgg16": Vgg16,
}
