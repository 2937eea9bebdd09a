"""Keras stages ("keras"): a Keras model saved as .keras, run through a tf.function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from fpga_serve.core.errors import InvalidInput, ModelLoadError
from fpga_serve.core.stage import StageRunner
from fpga_serve.core.types import TensorSpec
from fpga_serve.modelzip.manifest import StageRecord
from fpga_serve.modelzip.stages import LoadContext, SavedStage, register_kind
from fpga_serve.modelzip.stages.tf_common import TfRunner, spec_from_tf

MODEL_FILE = "model.keras"


def _tensor_name(t: Any, fallback: str) -> str:
    history = getattr(t, "_keras_history", None)
    layer = getattr(history, "operation", None) or (history[0] if history else None)
    return str(getattr(layer, "name", None) or getattr(t, "name", None) or fallback)


def keras_specs(model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs named after their Input layers, outputs after the layers producing them."""
    try:
        ins, outs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as exc:
        raise InvalidInput(f"KerasStage needs a built model with known inputs: {exc}") from exc

    def spec(t: Any, fallback: str) -> TensorSpec:
        return spec_from_tf(
            _tensor_name(t, fallback), tf.as_dtype(t.dtype), tf.TensorShape(t.shape)
        )

    outputs = tuple(spec(t, f"output_{i}") for i, t in enumerate(outs))
    if len({s.name for s in outputs}) != len(outputs):
        outputs = tuple(
            TensorSpec(f"{s.name}_{i}", s.dtype, s.shape) for i, s in enumerate(outputs)
        )
    return tuple(spec(t, f"input_{i}") for i, t in enumerate(ins)), outputs


class KerasStage:
    """A Keras model (Functional or Sequential) for ``ModelDefinition.pipeline``."""

    kind = "keras"

    def __init__(self, model: Any, name: str | None = None) -> None:
        if not isinstance(model, keras.Model):
            raise InvalidInput(f"KerasStage needs a keras.Model, not {type(model).__name__}")
        self.model = model
        self.name = name
        keras_specs(model)  # fail early on unbuilt models

    def save(self, dest: Path) -> SavedStage:
        dest.mkdir(parents=True, exist_ok=True)
        self.model.save(dest / MODEL_FILE)
        inputs, outputs = keras_specs(self.model)
        return SavedStage(inputs, outputs, {})


class KerasKind:
    kind = "keras"

    def load(self, record: StageRecord, stage_dir: Path, context: LoadContext) -> StageRunner:
        try:
            model = keras.saving.load_model(stage_dir / MODEL_FILE, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a bad file
            raise ModelLoadError(f"stage {record.name!r}: cannot load {MODEL_FILE}: {exc}") from exc
        inputs, outputs = keras_specs(model)
        if inputs != record.inputs or outputs != record.outputs:
            raise ModelLoadError(f"stage {record.name!r}: the model does not match the manifest")
        signature = [
            tf.TensorSpec([None if d == -1 else d for d in s.shape], s.dtype.numpy) for s in inputs
        ]
        single = len(inputs) == 1

        @tf.function(input_signature=signature, reduce_retracing=True)
        def forward(*xs: tf.Tensor) -> Any:
            return model(xs[0] if single else list(xs), training=False)

        def call(tensors: list[tf.Tensor]) -> list[Any]:
            result = forward(*tensors)
            return list(result) if isinstance(result, (list, tuple)) else [result]

        return TfRunner(record.name, self.kind, inputs, outputs, call, keep=model)


register_kind(KerasKind())
