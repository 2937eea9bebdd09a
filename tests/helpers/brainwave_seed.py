"""Run the Brainwave how-to's Python blocks (tests/data/brainwave_seed.md) as a user would:
in order, in one namespace, in a process of their own, with only the import lines changed.

The import map below is the whole change (docs/brainwave.md has the same table). Two more
things a user's machine has that a test may not reach are provided around the code, not in
it: the workspace config file (``Workspace.from_config()`` reads ./config.json, naming the
loopback server) and the class-name list the how-to downloads with ``requests`` (the test maps
``import requests`` to ``offline_requests``, which serves that one URL from the bundled list:
tests never leave loopback). ``small=True`` adds the one non-import edit of the default run,
32x32 images instead of 224x224 (``preprocess_array(in_images, 32, 32)``), so it stays short.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from serving import server_env

HERE = Path(__file__).resolve().parent
SEED = HERE.parent / "data" / "brainwave_seed.md"
SMALL_SIZE = 32

IMPORTS = {
    "import tensorflow as tf": "import tensorflow.compat.v1 as tf",
    "import azureml.contrib.brainwave.models.utils as utils": (
        "import fpga_serve.brainwave.models.utils as utils"
    ),
    "from azureml.contrib.brainwave.models import QuantizedResnet50": (
        "from fpga_serve.brainwave.models import QuantizedResnet50"
    ),
    "from azureml.contrib.brainwave.pipeline import ModelDefinition, TensorflowStage, "
    "BrainWaveStage": (
        "from fpga_serve.brainwave.pipeline import ModelDefinition, TensorflowStage, BrainWaveStage"
    ),
    "from azureml.core import Workspace": "from fpga_serve.brainwave.deploy import Workspace",
    "from azureml.core.model import Model": "from fpga_serve.brainwave.deploy import Model",
    "from azureml.core.webservice import Webservice": (
        "from fpga_serve.brainwave.deploy import Webservice"
    ),
    "from azureml.exceptions import WebserviceException": (
        "from fpga_serve.brainwave.deploy import WebserviceException"
    ),
    "from azureml.contrib.brainwave import BrainwaveWebservice, BrainwaveImage": (
        "from fpga_serve.brainwave import BrainwaveWebservice, BrainwaveImage"
    ),
    "import requests": "import offline_requests as requests",
}
UNCHANGED = {"import os"}
SMALL_EDIT = (
    "utils.preprocess_array(in_images)",
    f"utils.preprocess_array(in_images, {SMALL_SIZE}, {SMALL_SIZE})",
)

EPILOGUE = """
# The test's own check, after the seed's code: what the same graph computes locally.
import json as _json
with open("your-image.jpg", "rb") as _f:
    _jpeg = _f.read()
with tf.Session() as _sess:
    _local = _sess.run(classifier_output, {in_images: [_jpeg]})[0]
_out = {"local": [float(v) for v in _local], "zip": model_def_path}
if "sorted_results" in globals():
    _out["sorted_results"] = [[int(i), float(c)] for i, c in sorted_results]
with open("outcome.json", "w") as _f:
    _json.dump(_out, _f)
"""


def seed_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", SEED.read_text(encoding="utf-8"), re.S)


def ported(block: str, small: bool) -> str:
    """The block with its import lines mapped (every other line as it was)."""
    lines = []
    for original in block.splitlines():
        line, stripped = original, original.strip()
        if stripped.startswith(("import ", "from ")):
            if stripped not in IMPORTS and stripped not in UNCHANGED:
                raise AssertionError(f"no mapping for the seed's import line {stripped!r}")
            line = line.replace(stripped, IMPORTS.get(stripped, stripped))
        elif small and SMALL_EDIT[0] in line:
            line = line.replace(*SMALL_EDIT)
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class SeedRun:
    stdout: str
    stderr: str
    blocks: list[str]
    """Each block's printed output."""
    outcome: dict[str, object]


def run_seed(
    workdir: Path, count: int, image: bytes, config: dict[str, object] | None, small: bool
) -> SeedRun:
    """Run the first ``count`` blocks in ``workdir`` (also $HOME) and the epilogue."""
    (workdir / "your-image.jpg").write_bytes(image)
    if config is not None:
        (workdir / "config.json").write_text(json.dumps(config))
    parts = []
    for index, block in enumerate(seed_blocks()[:count]):
        parts.append(f"print('=== block {index + 1}', flush=True)\n{ported(block, small)}")
    script = "\n".join(parts) + "print('=== end', flush=True)\n" + EPILOGUE
    (workdir / "seed.py").write_text(script)
    env = server_env({"HOME": str(workdir), "PYTHONPATH": str(HERE)})
    done = subprocess.run(  # noqa: PLW1510 - the exit code is checked below
        [sys.executable, "seed.py"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise AssertionError(f"the seed's code failed:\n{done.stdout}\n{done.stderr}")
    printed = re.split(r"^=== (?:block \d+|end)\n", done.stdout, flags=re.M)[1:]
    outcome = json.loads((workdir / "outcome.json").read_text())
    return SeedRun(done.stdout, done.stderr, printed[:count], outcome)
