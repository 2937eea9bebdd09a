"""Write a small pipeline zip to try a deployment with (the image in CI, compose, Kubernetes):
JPEG bytes -> TensorFlow preprocessing (32x32) -> a two-layer CNN compiled for the FPGA overlay
(served on the twin without a board) -> a Keras softmax head over 5 made-up labels. Weights are
random (seeded): the scores are real computations, the labels mean nothing.

    python scripts/sample_model.py models/sample/1/model.zip
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

SIZE = 32
LABELS = ["alpha", "bravo", "charlie", "delta", "echo"]


def build(path: Path, name: str = "sample") -> Path:
    import keras
    from fpga_serve.compiler import CompileOptions, compile_model
    from fpga_serve.pipeline import FpgaStage, KerasStage, ModelDefinition
    from fpga_serve.preprocessing import image_preprocess_stage

    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    model = keras.Model(inputs, keras.layers.Dense(len(LABELS), activation="softmax")(features))
    # Calibration inputs in the range the resnet50 preprocessing produces (mean-subtracted BGR).
    calibration = np.random.default_rng(0).normal(0, 50, (16, SIZE, SIZE, 3)).astype(np.float32)
    compiled = compile_model(model, calibration, CompileOptions(output_layer="features"))
    head = keras.Model(model.get_layer("features").output, model.output)
    model_def = ModelDefinition(name=name)
    model_def.pipeline += [
        image_preprocess_stage("resnet50", SIZE),
        FpgaStage(compiled),
        KerasStage(head),
    ]
    model_def.labels = list(LABELS)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_def.save(path)
    return path


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the zip to write")
    parser.add_argument("--name", default="sample", help="model name (default: sample)")
    ns = parser.parse_args()
    print(build(ns.output, ns.name))


if __name__ == "__main__":
    main()
