"""Decompression-bomb guard: image dimensions are read from headers before anything decodes.

A 100 KB PNG can decode to gigabytes; TensorFlow would allocate it all. Pillow reads only the
header here (``Image.open`` is lazy), and images over the pixel limit are refused unread. An
animated GIF counts every frame (TensorFlow's decode_image decodes them all, even when it
returns the first): the frames are counted from their headers, stopping once over the limit.
Bytes that are not an image Pillow knows pass through: the decoding stage judges them.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from fpga_serve.core.errors import InvalidInput

# We apply our own (lower, configurable) limit; Pillow's global warning would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")
"""Leading bytes of every format above (WEBP is RIFF....WEBP): anything else is not an image
Pillow would identify among ``_FORMATS``, so it skips Pillow altogether (the hot path for
non-image payloads)."""
_SIGNATURE_BYTES = max(len(s) for s in _SIGNATURES)


def prepare() -> None:
    """Register Pillow's format plugins now (a one-off import of ~40 modules) rather than
    during the first request that carries an image."""
    Image.init()


def image_pixels(data: bytes, limit: int | None = None) -> tuple[int, bool] | None:
    """(width x height x frames, exact) from the headers, or None when the bytes are not a known
    image. Frames are counted until the total passes ``limit``.

    Beyond Pillow's own hard limit, or past ``limit``, only a lower bound is known: (it, False).
    """
    if not bytes(data[:_SIGNATURE_BYTES]).startswith(_SIGNATURES):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as image:
            width, height = image.size
            pixels = int(width) * int(height)
            frames = _frames(image, pixels, limit)
    except Image.DecompressionBombError:
        return 2 * int(Image.MAX_IMAGE_PIXELS or 0), False
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None
    if frames is None:
        return pixels * _counted_frames(pixels, limit), False
    return pixels * frames, True


def _counted_frames(pixels: int, limit: int | None) -> int:
    return 1 if limit is None or pixels == 0 else limit // pixels + 1


def _frames(image: Image.Image, pixels: int, limit: int | None) -> int | None:
    """How many frames an animated image has (1 for the others), or None when counting
    stopped because the frames' pixels passed ``limit``."""
    if image.format != "GIF":
        return 1
    stop = _counted_frames(pixels, limit) if limit is not None else None
    count = 1
    while True:
        if stop is not None and count >= stop:
            return None
        try:
            image.seek(count)
        except EOFError:
            return count
        count += 1


def check_image_pixels(name: str, array: np.ndarray, max_pixels: int) -> None:
    """Raise InvalidInput for the first item of a BYTES tensor whose image is too large."""
    for index, item in enumerate(array.reshape(-1)):
        if not bytes(item[:_SIGNATURE_BYTES]).startswith(_SIGNATURES):
            continue  # not an image (checked without copying the payload)
        size = image_pixels(bytes(item), max_pixels)
        if size is not None and size[0] > max_pixels:
            pixels = f"{size[0]:,}" if size[1] else f"more than {size[0]:,}"
            raise InvalidInput(
                f"input {name!r} item {index}: image of {pixels} pixels (all frames) is over "
                f"the limit of {max_pixels:,} (max_image_pixels); refused before decoding"
            )
