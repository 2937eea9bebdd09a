"""Brainwave's zoo models over the native zoo: import into a TF1 graph, then compile.

``QuantizedResnet50(model_path, is_frozen=True)`` is a native ``fpga_serve.models`` zoo model
(the same keras.applications architecture, weights looked up the same way, random with a loud
warning when none are found) seen through Brainwave's interface:

- ``import_graph_def(image_tensor)`` builds the featurizer for the image tensor's size,
  compiles it for the overlay (quantised int8, calibrated: see ``calibration_images``), and
  returns the feature tensor in the caller's graph. The model's normalisation (channel order,
  mean, scale: ``fpga_serve.preprocessing.normalise``) is added in front of it. Running the
  feature tensor in a Session runs the compiled program on the in-process twin, bit-exact with
  what a server computes.
- ``get_default_classifier(feature_tensor)``: Dense(1000) + softmax in the caller's graph, with
  the native zoo's classifier weights (constants, so nothing needs initialising).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from fpga_serve.brainwave._tf1 import COLLECTION, eager
from fpga_serve.compiler import CompileOptions
from fpga_serve.core.errors import InvalidInput
from fpga_serve.models import zoo
from fpga_serve.modelzip.stages.fpga_stage import FpgaRunner, FpgaStage
from fpga_serve.preprocessing import normalise

CalibrationImages = str | Path | Sequence[str | Path] | np.ndarray | None
DEFAULT_CALIBRATION_COUNT = 100


class DefaultCalibrationWarning(UserWarning):
    """The featurizer was calibrated on the sample photos, not on the user's own images."""


class AccelModel:
    """A zoo featurizer in Brainwave's shape. Subclasses name the native zoo model."""

    native: ClassVar[type[zoo._ZooModel]]

    def __init__(
        self,
        model_base_path: str | Path | None = None,
        is_frozen: bool = True,
        *,
        weights: str | Path | None = None,
        calibration_images: CalibrationImages = None,
        compile_options: CompileOptions | None = None,
        input_size: int | None = None,
    ) -> None:
        """``model_base_path``: where weight files are looked for (with the Keras cache);
        ``weights``: an explicit Keras ``*_notop.h5``. ``calibration_images``: a folder of
        images, a list of image files, or float32 RGB pixels [N, size, size, 3] in [0, 255]
        (what ``utils.preprocess_array`` gives); by default the sample photos, with a warning
        (use ~100 images of your own data). ``input_size``: default, the image tensor's."""
        if not is_frozen:
            raise InvalidInput(
                "is_frozen=False (fine-tuning the featurizer) is not supported: the featurizer "
                "is a compiled int8 program; train a classifier on its features instead"
            )
        self.model_base_path = Path(model_base_path).expanduser() if model_base_path else None
        self.is_frozen = is_frozen
        self.weights = weights
        self.calibration_images = calibration_images
        self.compile_options = compile_options
        self.input_size = input_size
        self.zoo_model: zoo._ZooModel | None = None
        self.fpga_stage: FpgaStage | None = None
        self.input_tensor: Any = None
        self.normalized_input: Any = None
        self.feature_tensor: Any = None
        self._runner: FpgaRunner | None = None

    @property
    def version(self) -> str:
        return self.native.version

    @property
    def model_name(self) -> str:
        return self.native.family

    # Brainwave's API ------------------------------------------------------------------------

    def import_graph_def(self, input_tensor: Any, is_training: bool = False) -> Any:
        """Compile the featurizer for ``input_tensor`` (float32 [N, size, size, 3], RGB in
        [0, 255]) and return its feature tensor [N, features] in the same graph."""
        if is_training:
            raise InvalidInput("is_training=True is not supported: the featurizer is frozen")
        size = self._image_size(input_tensor)
        with eager():
            model = self.native(self.model_base_path, weights=self.weights, input_size=size)
            calibration = self._calibration(model)
            self.fpga_stage = model.compile(calibration, self.compile_options)
        self.zoo_model = model
        with input_tensor.graph.as_default(), tf.compat.v1.name_scope(model.family):
            self.input_tensor = input_tensor
            self.normalized_input = normalise(input_tensor, model.family)
            features = tf.compat.v1.numpy_function(
                self._run, [self.normalized_input], tf.float32, name="featurizer"
            )
            features.set_shape([None, model.feature_dim])
            self.feature_tensor = tf.identity(features, name="features")
        input_tensor.graph.add_to_collection(COLLECTION, self)
        return self.feature_tensor

    def get_default_classifier(self, feature_tensor: Any) -> Any:
        """Dense(1000) + softmax on ``feature_tensor``; returns the class confidences."""
        model = self._imported()
        with eager():
            dense = model.get_default_classifier().model.get_layer("predictions")
            kernel, bias = (np.asarray(w, np.float32) for w in dense.get_weights())
        with feature_tensor.graph.as_default(), tf.compat.v1.name_scope("classifier"):
            logits = tf.nn.bias_add(tf.matmul(feature_tensor, tf.constant(kernel)), bias)
            return tf.nn.softmax(logits, name="output")

    def restore_weights(self, session: Any = None) -> None:
        """Nothing to restore: the featurizer and the default classifier hold constants."""

    # Helpers --------------------------------------------------------------------------------

    def _imported(self) -> zoo._ZooModel:
        if self.zoo_model is None:
            raise InvalidInput(f"call {type(self).__name__}.import_graph_def(images) first")
        return self.zoo_model

    def _image_size(self, tensor: Any) -> int:
        shape = tensor.shape
        dims = shape.as_list() if shape.rank is not None else None
        if (
            tensor.dtype != tf.float32
            or dims is None
            or len(dims) != 4
            or dims[3] != 3
            or dims[1] is None
            or dims[1] != dims[2]
        ):
            raise InvalidInput(
                f"import_graph_def needs float32 images [N, size, size, 3] (utils."
                f"preprocess_array gives them), not {tensor.dtype.name} {shape}"
            )
        size = int(dims[1])
        if self.input_size is not None and self.input_size != size:
            raise InvalidInput(
                f"the model was made for {self.input_size}x{self.input_size} images, the "
                f"tensor has {size}x{size}"
            )
        return size

    def _calibration(self, model: zoo._ZooModel) -> np.ndarray:
        from fpga_serve.build import IMAGE_SUFFIXES, calibration_batch, sample_photos

        given = self.calibration_images
        size = model.input_size
        if isinstance(given, np.ndarray):
            if given.ndim != 4 or given.shape[1:] != (size, size, 3):
                raise InvalidInput(
                    f"calibration_images must be [N, {size}, {size}, 3], not {list(given.shape)}"
                )
            return np.asarray(normalise(tf.constant(given, tf.float32), model.family))
        if given is None:
            paths = sample_photos()
            if not paths:
                raise InvalidInput("pass calibration_images= (a folder of representative images)")
            warnings.warn(
                f"{type(self).__name__}: calibrated on {len(paths)} sample photos (the zoo's "
                "default, as `fpga-serve build` without --calibration); pass "
                "calibration_images=FOLDER with ~100 images of your own data for production",
                DefaultCalibrationWarning,
                stacklevel=3,
            )
        elif isinstance(given, (str, Path)):
            folder = Path(given).expanduser()
            if not folder.is_dir():
                raise InvalidInput(f"calibration folder {folder} does not exist")
            paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths = [Path(p).expanduser() for p in given]
        return calibration_batch(paths, model.family, size, DEFAULT_CALIBRATION_COUNT)

    def _run(self, images: np.ndarray) -> np.ndarray:
        """The feature tensor's op: the compiled program on the in-process twin."""
        if self._runner is None:
            from fpga_serve.hw.twin.device import TwinDevice

            assert self.fpga_stage is not None
            self._runner = FpgaRunner("featurizer", self.fpga_stage.compiled.program, TwinDevice())
        (features,) = self._runner.run([images])
        return features.astype(np.float32, copy=False)


class QuantizedResnet50(AccelModel):
    native = zoo.QuantizedResnet50


class QuantizedResnet152(AccelModel):
    native = zoo.QuantizedResnet152


class QuantizedDensenet121(AccelModel):
    native = zoo.Densenet121


class QuantizedVgg16(AccelModel):
    native = zoo.Vgg16
