"""Decompression-bomb guard and the bearer key ring (unit level; e2e in test_e2e_production)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from fpga_serve.adapters.auth import KeyRing
from fpga_serve.core.errors import InvalidInput
from fpga_serve.runtime.images import check_image_pixels, image_pixels
from hostile import png_claiming


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the first SOF0/SOF2 frame header's dimensions."""
    data = bytearray(jpeg)
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise AssertionError("no SOF marker")


def test_header_sizes_are_read_without_decoding(china_jpg: bytes) -> None:
    assert image_pixels(china_jpg) == (640 * 427, True)
    assert image_pixels(png_claiming(3, 5)) == (15, True)
    assert image_pixels(png_claiming(10_000, 9_000)) == (90_000_000, True)
    assert image_pixels(jpeg_claiming(china_jpg, 12_000, 10_000)) == (120_000_000, True)
    pixels, exact = image_pixels(png_claiming(50_000, 50_000)) or (0, True)
    assert not exact and 100_000_000 < pixels < 2_500_000_000
    assert image_pixels(b"not an image") is None
    assert image_pixels(b"BM but no bitmap header") is None  # a signature alone is not enough
    assert image_pixels(bytearray(png_claiming(3, 5))) == (15, True)


def test_bombs_are_refused_naming_the_item(china_jpg: bytes) -> None:
    batch = np.array([china_jpg, png_claiming(10_000, 9_000)], dtype=object)
    with pytest.raises(InvalidInput, match=r"item 1: image of 90,000,000 pixels"):
        check_image_pixels("images", batch, 64_000_000)
    huge = np.array([png_claiming(50_000, 50_000)], dtype=object)
    with pytest.raises(InvalidInput, match=r"item 0: image of more than [\d,]+ pixels"):
        check_image_pixels("images", huge, 64_000_000)
    check_image_pixels("images", batch[:1], 64_000_000)  # a normal photo passes
    other = np.array([b"\x00" * 150_000, memoryview(png_claiming(10_000, 9_000))], dtype=object)
    with pytest.raises(InvalidInput, match=r"item 1: image of 90,000,000 pixels"):
        check_image_pixels("images", other, 64_000_000)  # non-images skipped, views read
    with pytest.raises(InvalidInput, match="item 0"):
        check_image_pixels("images", batch[:1], 1000)


def test_key_ring_accepts_bearer_and_bare_keys_in_constant_time_compare() -> None:
    ring = KeyRing(["primary-key", "secondary-key"])
    assert ring.enabled
    assert ring.check("Bearer primary-key")
    assert ring.check("bearer secondary-key")
    assert ring.check("primary-key")  # the early Brainwave client sent the bare key
    assert not ring.check("Bearer primary-keyX")
    assert not ring.check("")
    assert not ring.check(None)
    assert KeyRing([]).check(None)  # no keys configured: open


def test_key_file_rotation_takes_effect_without_restart(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("old-primary\nold-secondary\n")
    ring = KeyRing([], keys)
    assert ring.check("Bearer old-primary")
    keys.write_text("# rotated\nnew-primary\nold-primary\n")
    assert ring.check("Bearer new-primary")
    assert not ring.check("Bearer old-secondary")
    keys.unlink()  # a Secret being swapped: keep the last good keys
    assert ring.check("Bearer new-primary")


def test_readme_lists_every_setting() -> None:
    from fpga_serve.core.settings import ServerSettings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [n for n in ServerSettings.model_fields if f"FPGA_SERVE_{n.upper()}" not in readme]
    assert not missing, f"README does not list {missing}"
