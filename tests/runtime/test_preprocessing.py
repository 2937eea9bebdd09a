"""Preprocessing's memory is bounded by the decoded image (issue 10, finding 2): the resize
computes only the centre crop, from the window of the image it samples, with the pixels of
resizing the whole image and cropping; animated GIFs count all their frames in the pixel limit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fpga_serve.core.errors import InvalidInput
from fpga_serve.runtime.images import check_image_pixels, image_pixels
from PIL import Image

SHAPES = [
    (427, 640),
    (640, 427),
    (224, 224),
    (256, 256),
    (333, 257),
    (100, 3000),
    (3000, 100),
    (7, 5),
    (1, 1),
    (1, 300),
    (2000, 1500),
]


def whole_then_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The rule as Brainwave's preprocess_array states it: resize the whole image, crop."""
    import tensorflow as tf

    height, width = image.shape[:2]
    scale = round(size * 256 / 224) / min(height, width)
    new_h = max(size, int(np.round(np.float32(height) * np.float32(scale))))
    new_w = max(size, int(np.round(np.float32(width) * np.float32(scale))))
    resized = tf.image.resize(
        tf.cast(image, tf.float32), [new_h, new_w], method="bilinear", antialias=True
    )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized.numpy()[top : top + size, left : left + size]


@pytest.mark.parametrize("size", [224, 32])
def test_the_cropped_resize_has_the_pixels_of_the_whole_resize(size: int) -> None:
    from fpga_serve.preprocessing import resized_centre

    rng = np.random.default_rng(0)
    worst = 0.0
    for height, width in SHAPES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        got = resized_centre(image, size).numpy()
        assert got.shape == (size, size, 3)
        worst = max(worst, float(np.abs(got - whole_then_crop(image, size)).max()))
    assert worst < 0.01  # float rounding of the translated sample positions, on 0..255


_MEASURE = """
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf
from fpga_serve.preprocessing import resized_centre

def peak():
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM"))

run = tf.function(lambda x: resized_centre(x, 224))
run(np.zeros((300, 200, 3), np.uint8))  # traced, allocators warm
grown = {}
for shape in ((1, 65000, 3), (65000, 1, 3), (2, 40000, 3)):
    image = np.full(shape, 128, np.uint8)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = peak()
    run(image)
    grown[str(shape)] = peak() - base
print(json.dumps(grown))
"""


def test_extreme_aspect_ratios_cost_no_more_than_the_image() -> None:
    """Measured in a fresh process (freed heap in this one would hide the growth)."""
    import json
    import subprocess
    import sys

    from serving import ROOT, server_env

    done = subprocess.run(
        [sys.executable, "-c", _MEASURE],
        capture_output=True,
        text=True,
        env=server_env(),
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    grown = json.loads(done.stdout.strip().splitlines()[-1])
    # Resizing the whole image allocated 4.3 Gpx x 12 bytes for (1, 65000) at 224; sampling it
    # whole for the crop still took 224 x 65000 x 12 bytes (175 MiB).
    assert all(v < 16 << 20 for v in grown.values()), grown


def _gif(frames: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(1)
    images = [
        Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8), "L").convert("P")
        for _ in range(frames)
    ]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:])
    return buf.getvalue()


def test_every_frame_of_an_animated_gif_counts() -> None:
    many = _gif(40, (100, 100))
    assert image_pixels(many) == (40 * 100 * 100, True)
    assert image_pixels(_gif(1, (100, 100))) == (100 * 100, True)
    assert image_pixels(many, limit=95_000) == (10 * 100 * 100, False)  # stops counting
    batch = np.array([many], dtype=object)
    check_image_pixels("images", batch, 400_000)
    with pytest.raises(InvalidInput, match=r"more than 100,000 pixels \(all frames\)"):
        check_image_pixels("images", batch, 95_000)
