"""``azureml.contrib.brainwave.models.utils``: image preprocessing for TF1 graphs."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from fpga_serve.core.errors import InvalidInput
from fpga_serve.preprocessing import preprocess_array as _native_preprocess


def preprocess_array(
    in_images: Any,
    output_width: int = 224,
    output_height: int = 224,
    preserve_aspect_ratio: bool = True,
) -> Any:
    """A 1-D string tensor of encoded images -> RGB float32 [N, height, width, 3] in [0, 255].

    Decoding, resizing (shorter side to size x 256/224) and the centre crop are the native
    ``fpga_serve.preprocessing.preprocess_array``'s; the model's own normalisation (channel
    order, mean, scale) is added by ``model.import_graph_def``, as Brainwave's models did. A
    placeholder of unknown shape (``tf.placeholder(tf.string)``) is given shape [None].
    """
    if output_width != output_height:
        raise InvalidInput(
            f"preprocess_array makes square images; got {output_width}x{output_height}"
        )
    if not preserve_aspect_ratio:
        raise InvalidInput(
            "preprocess_array keeps the aspect ratio (resize the shorter side, crop the centre); "
            "preserve_aspect_ratio=False is not supported"
        )
    if in_images.dtype != tf.string:
        raise InvalidInput(f"preprocess_array needs a string tensor, not {in_images.dtype.name}")
    if in_images.shape.rank is None:
        in_images.set_shape([None])
    elif in_images.shape.rank != 1:
        raise InvalidInput(
            f"preprocess_array needs a 1-D batch of encoded images, not shape {in_images.shape}"
        )
    return _native_preprocess(in_images, family="none", size=output_width)
