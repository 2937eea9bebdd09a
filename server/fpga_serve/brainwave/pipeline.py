"""``azureml.contrib.brainwave.pipeline``: ModelDefinition, TensorflowStage, BrainWaveStage.

``ModelDefinition`` is the native one (``fpga_serve.pipeline``). The two stage classes are the
native stages, made from what Brainwave code has at hand (a Session and tensors, a zoo model):

- ``TensorflowStage(sess, input_tensor, output_tensor)``: the graph between the tensors. When
  ``output_tensor`` is the image tensor a zoo model was imported on, the stage ends with that
  model's normalisation (which Brainwave's featurizer applied itself; fpga-serve's featurizer
  takes normalised images).
- ``BrainWaveStage(sess, model)``: the model's compiled featurizer, an ``FpgaStage``.
"""

from __future__ import annotations

from typing import Any

from fpga_serve.brainwave._tf1 import COLLECTION
from fpga_serve.brainwave.models.accel import AccelModel
from fpga_serve.core.errors import InvalidInput
from fpga_serve.modelzip.stages.fpga_stage import FpgaStage
from fpga_serve.modelzip.stages.keras_stage import KerasStage
from fpga_serve.modelzip.stages.tf_stage import TensorflowStage as _NativeTensorflowStage
from fpga_serve.pipeline import ModelDefinition

__all__ = ["BrainWaveStage", "KerasStage", "ModelDefinition", "TensorflowStage"]


def _imported_models(sess: Any) -> list[AccelModel]:
    return list(sess.graph.get_collection(COLLECTION))


class TensorflowStage(_NativeTensorflowStage):
    """The part of ``sess``'s graph between ``input_tensor`` and ``output_tensor``."""

    def __init__(
        self, sess: Any, input_tensor: Any, output_tensor: Any, name: str | None = None
    ) -> None:
        for model in _imported_models(sess):
            if model.input_tensor is not None and model.input_tensor.name == output_tensor.name:
                output_tensor = model.normalized_input
        super().__init__(sess, input_tensor, output_tensor, name=name)


class BrainWaveStage(FpgaStage):
    """The quantised featurizer of ``model``, imported into ``sess``'s graph before."""

    def __init__(self, sess: Any, model: AccelModel, name: str | None = "featurizer") -> None:
        if not any(m is model for m in _imported_models(sess)) or model.fpga_stage is None:
            raise InvalidInput(
                "BrainWaveStage(sess, model): call model.import_graph_def(images) in this "
                "session's graph first"
            )
        super().__init__(model.fpga_stage.compiled, name=name)
