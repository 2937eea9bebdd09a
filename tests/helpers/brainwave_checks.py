"""Run by test_brainwave.py in a process of its own (the compat layer switches TensorFlow to
graph mode): the zoo's other models and the compat layer's refusals. Writes checks.json and
one zip per model into the current directory."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow.compat.v1 as tf
from fpga_serve.brainwave import models
from fpga_serve.brainwave.models import utils
from fpga_serve.brainwave.pipeline import BrainWaveStage, ModelDefinition, TensorflowStage
from fpga_serve.core.errors import InvalidInput

SIZE = 32


def build(cls: type[models.AccelModel], image: bytes, **kwargs: Any) -> dict[str, Any]:
    graph = tf.Graph()
    with graph.as_default():
        in_images = tf.placeholder(tf.string)
        image_tensors = utils.preprocess_array(in_images, SIZE, SIZE)
        model = cls("~/models", is_frozen=True, **kwargs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            features = model.import_graph_def(image_tensors)
        output = model.get_default_classifier(features)
        model_def = ModelDefinition()
        zip_path = Path(f"{cls.__name__}.zip").resolve()
        with tf.Session() as sess:
            model_def.pipeline.append(TensorflowStage(sess, in_images, image_tensors))
            model_def.pipeline.append(BrainWaveStage(sess, model))
            model_def.pipeline.append(TensorflowStage(sess, features, output))
            model_def.save(zip_path)
            local = sess.run(output, {in_images: [image]})
    return {
        "zip": str(zip_path),
        "feature_name": features.name,
        "feature_shape": features.shape.as_list(),
        "version": model.version,
        "local": local.tolist(),
        "warnings": sorted({type(w.message).__name__ for w in caught}),
    }


def refusal(action: Any) -> str:
    try:
        action()
    except InvalidInput as exc:
        return str(exc)
    return "no error"


def refusals(photo: Path) -> dict[str, str]:
    out = {}
    with tf.Graph().as_default():
        in_images = tf.placeholder(tf.string)
        images = utils.preprocess_array(in_images, SIZE, SIZE)
        model = models.QuantizedResnet50()
        with tf.Session() as sess:
            out["stage_before_import"] = refusal(lambda: BrainWaveStage(sess, model))
        out["strings_as_images"] = refusal(lambda: model.import_graph_def(in_images))
        out["not_frozen"] = refusal(lambda: models.QuantizedResnet50(is_frozen=False))
        out["not_square"] = refusal(lambda: utils.preprocess_array(in_images, 32, 48))
        out["floats_as_images"] = refusal(
            lambda: utils.preprocess_array(tf.placeholder(tf.float32, [None]))
        )
        out["size_mismatch"] = refusal(
            lambda: models.QuantizedResnet50(input_size=64).import_graph_def(images)
        )
        out["bad_calibration"] = refusal(
            lambda: models.QuantizedResnet50(
                calibration_images=np.zeros((2, 8, 8, 3), np.float32)
            ).import_graph_def(images)
        )
    return out


def main() -> int:
    photo = Path(sys.argv[1])
    image = photo.read_bytes()
    results: dict[str, Any] = {"refusals": refusals(photo)}
    for cls in (models.QuantizedResnet152, models.QuantizedDensenet121, models.QuantizedVgg16):
        results[cls.__name__] = build(cls, image)
    results["explicit_calibration"] = build(
        models.QuantizedResnet50, image, calibration_images=[photo]
    )
    Path("checks.json").write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
