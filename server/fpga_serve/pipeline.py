"""The pipeline SDK, in the shape of Azure ML's Brainwave SDK.

from fpga_serve.pipeline import ModelDefinition, TensorflowStage, KerasStage, OnnxStage
model_def = ModelDefinition(name="resnet50")
model_def.pipeline.append(image_preprocess_stage("resnet50"))
model_def.pipeline.append(FpgaStage(...))          # the quantized featurizer
model_def.pipeline.append(KerasStage(classifier))
model_def.save("model_def.zip")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpga_serve.modelzip import Manifest, save_pipeline, validate_archive
from fpga_serve.modelzip.stages.keras_stage import KerasStage
from fpga_serve.modelzip.stages.tf_stage import TensorflowStage

__all__ = ["FpgaStage", "KerasStage", "ModelDefinition", "OnnxStage", "TensorflowStage"]  # noqa: F822


@dataclass
class ModelDefinition:
    """Stages run in order, each one's outputs the next one's inputs; optional class labels."""

    name: str = "model"
    pipeline: list[Any] = field(default_factory=list)
    labels: list[str] | None = None
    manifest: Manifest | None = None
    """Set by ``load``: what the zip holds (stage kinds, names, tensors)."""

    def save(self, path: str | Path) -> Path:
        """Write the pipeline zip; refuses stages whose tensors do not chain."""
        self.manifest = save_pipeline(self.pipeline, Path(path), self.name, self.labels)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ModelDefinition:
        """Validate a pipeline zip and describe it (nothing is executed or extracted)."""
        manifest = validate_archive(Path(path))
        labels = None
        if manifest.labels is not None:
            import zipfile

            with zipfile.ZipFile(path) as zf:
                labels = zf.read(manifest.labels).decode("utf-8").splitlines()
        return cls(name=manifest.name, pipeline=[], labels=labels, manifest=manifest)


def __getattr__(name: str) -> Any:
    if name == "FpgaStage":  # imported on use: it pulls in the compiler
        from fpga_serve.modelzip.stages.fpga_stage import FpgaStage

        return FpgaStage
    if name == "OnnxStage":  # imported on use: it pulls in ONNX Runtime
        from fpga_serve.modelzip.stages.onnx_stage import OnnxStage

        return OnnxStage
    raise AttributeError(name)
