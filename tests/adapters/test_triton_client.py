"""NVIDIA's own tritonclient (in its own venv: it needs a newer grpcio than pynq allows) talks
to fpga-serve's KServe v2 endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import external_tools
import numpy as np
from conftest import LABELS


def test_tritonclient_scores_a_photo(tiny_server: Any, photo_dir: Path, china_jpg: bytes) -> None:
    got = external_tools.triton_probe(
        "triton_probe.py", tiny_server.address, "tiny", str(photo_dir / "china.jpg")
    )
    assert got["live"] and got["ready"] and got["platform"] == "fpga_serve_pipeline"
    assert got["inputs"][0][1:] == ["BYTES", [-1]]
    scores = np.array(got["scores"], dtype=np.float32)
    assert scores.shape == (1, len(LABELS)) and abs(float(scores.sum()) - 1) < 1e-4
    from fpga_serve_client import PredictionClient

    with PredictionClient(tiny_server.address) as client:
        np.testing.assert_allclose(scores[0], client.score_image(china_jpg), rtol=1e-5)
    assert ["tiny", "1", "READY"] in got["index"]
