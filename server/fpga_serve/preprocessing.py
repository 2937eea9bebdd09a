"""Image preprocessing in TensorFlow, like Brainwave's ``utils.preprocess_array``.

A 1-D string tensor of encoded images (JPEG, PNG, GIF, BMP) becomes float32 [N, size, size, 3]:
decode to RGB, resize the shorter side to round(size * 256 / 224) (bilinear, antialiased), crop
the centre size x size, then the model family's normalisation as keras.applications does it.

The resize computes only the centre crop: it reads just the window of the decoded image that
the crop's pixels sample (TensorFlow's ScaleAndTranslate, the op ``tf.image.resize`` runs with
``antialias=True``, translated to the crop). So no intermediate is larger than the decoded
image, whatever its aspect ratio: a 65000 x 1 JPEG used to be resized to 16.6M x 256 pixels
(+1.15 GiB) before the crop. The pixels equal those of resizing the whole image and cropping,
up to float rounding (< 0.01 of 255 in tests/runtime/test_preprocessing.py).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from fpga_serve.core.errors import InvalidInput
from fpga_serve.modelzip.stages.tf_stage import TensorflowStage

# ImageNet channel statistics (RGB order), as keras.applications uses them.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

FAMILY_MODE = {
    "resnet50": "caffe",
    "resnet152": "caffe",
    "vgg16": "caffe",
    "densenet121": "torch",
    "caffe": "caffe",
    "torch": "torch",
    "tf": "tf",
    "none": "none",
}


def normalise(images: tf.Tensor, family: str) -> tf.Tensor:
    """RGB float32 pixels in [0, 255] -> the family's input convention."""
    mode = FAMILY_MODE.get(family)
    if mode is None:
        raise InvalidInput(f"unknown model family {family!r}; known: {', '.join(FAMILY_MODE)}")
    if mode == "caffe":
        return images[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR, tf.float32)
    if mode == "torch":
        return (images / 255.0 - tf.constant(_TORCH_MEAN)) / tf.constant(_TORCH_STD)
    if mode == "tf":
        return images / 127.5 - 1.0
    return images


def _window(start: tf.Tensor, size: int, scale: tf.Tensor, length: tf.Tensor) -> tuple[Any, Any]:
    """The source rows [lo, hi) that output rows [start, start + size) of a resize by ``scale``
    sample (the triangle kernel reaches one pixel, 1 / scale when shrinking; plus a margin)."""
    radius = tf.maximum(1.0, 1.0 / scale)
    first = (tf.cast(start, tf.float32) + 0.5) / scale - 0.5 - radius
    last = (tf.cast(start + size, tf.float32) - 0.5) / scale - 0.5 + radius
    lo = tf.maximum(0, tf.cast(tf.floor(first), tf.int32) - 1)
    hi = tf.minimum(length, tf.cast(tf.math.ceil(last), tf.int32) + 2)
    return lo, hi


def resized_centre(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [h, w, 3] -> float32 [size, size, 3]: the centre crop of the image resized so that
    its shorter side is round(size * 256 / 224), computed from the window it samples only."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    short = round(size * 256 / 224)
    scale = short / tf.minimum(height, width)
    new_h = tf.maximum(size, tf.cast(tf.round(height * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(width * scale), tf.int32))
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    scale_y = tf.cast(new_h, tf.float32) / height
    scale_x = tf.cast(new_w, tf.float32) / width
    y0, y1 = _window(top, size, scale_y, shape[0])
    x0, x1 = _window(left, size, scale_x, shape[1])
    translation = [
        tf.cast(y0, tf.float32) * scale_y - tf.cast(top, tf.float32),
        tf.cast(x0, tf.float32) * scale_x - tf.cast(left, tf.float32),
    ]
    out = tf.raw_ops.ScaleAndTranslate(
        images=image[None, y0:y1, x0:x1],
        size=[size, size],
        scale=[scale_y, scale_x],
        translation=translation,
        kernel_type="triangle",  # tf.image.resize's bilinear
        antialias=True,
    )
    return out[0]


def _one(data: tf.Tensor, size: int) -> tf.Tensor:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return resized_centre(image, size)


def preprocess_array(images: tf.Tensor, family: str = "resnet50", size: int = 224) -> tf.Tensor:
    """[N] encoded images -> float32 [N, size, size, 3], normalised for ``family``."""
    pixels = tf.map_fn(
        lambda data: _one(data, size),
        images,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
    )
    return normalise(pixels, family)


def image_preprocess_stage(
    family: str = "resnet50", size: int = 224, input_name: str = "images"
) -> TensorflowStage:
    """The preprocessing as a pipeline stage: BYTES [-1] -> FP32 [-1, size, size, 3]."""
    if family not in FAMILY_MODE:
        raise InvalidInput(f"unknown model family {family!r}; known: {', '.join(FAMILY_MODE)}")
    if not 8 <= size <= 1024:
        raise InvalidInput(f"image size {size} is out of range (8..1024)")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=input_name)])
    def preprocess(images: tf.Tensor) -> dict[str, Any]:
        return {"pixels": preprocess_array(images, family, size)}

    return TensorflowStage(preprocess, name="preprocess")
