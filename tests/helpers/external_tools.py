"""What some tests need from outside the Python environment: a program (Verilator, yosys, tclsh,
Prometheus, promtool) or the Triton venv that scripts/setup.sh makes.

Where one is missing its tests skip, naming what to install; with ``FPGA_SERVE_REQUIRE_TOOLS=1``
(``.ci/run`` sets it, after installing every one of them) they fail instead, so CI cannot pass by
skipping. Mark a test or module with ``@pytest.mark.tools("verilator", ...)`` (conftest.py checks
the mark before the test runs), or call ``which`` / ``unavailable`` where the need is found later.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

REQUIRE_VARIABLE = "FPGA_SERVE_REQUIRE_TOOLS"

# Each program, the Debian package that provides it (.ci/run installs these).
DEBIAN_PACKAGE = {
    "verilator": "verilator",
    "yosys": "yosys",
    "tclsh": "tcl",
    "prometheus": "prometheus",
    "promtool": "prometheus",
}


def required() -> bool:
    """True when a missing tool is a failure, not a skip (CI)."""
    return os.environ.get(REQUIRE_VARIABLE) == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it when tools are required."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1: a missing tool fails the run)", pytrace=False)
    pytest.skip(reason)


def find(name: str) -> str | None:
    """The path of program ``name`` (tclsh also as its versioned name), or None."""
    return shutil.which(name) or (shutil.which("tclsh8.6") if name == "tclsh" else None)


def which(name: str) -> str:
    """The path of program ``name``; skips or fails the test (``unavailable``) without it."""
    path = find(name)
    if path is None:
        package = DEBIAN_PACKAGE.get(name, name)
        unavailable(f"{name} is not installed (apt-get install {package})")
    return path


TRITON_PYTHON = Path(__file__).resolve().parents[2] / ".venv-triton" / "bin" / "python"
"""NVIDIA tritonclient's own venv (scripts/setup.sh makes it: grpcio >= 1.67 cannot
live beside pynq's pin)."""


def triton_python() -> str:
    """The Triton venv's python; skips or fails the test (``unavailable``) without it."""
    if not TRITON_PYTHON.exists():
        unavailable("no .venv-triton (scripts/setup.sh creates it)")
    return str(TRITON_PYTHON)


def triton_probe(script: str, *args: str) -> dict[str, Any]:
    """Run tests/helpers/``script`` with the Triton venv's python (NVIDIA's tritonclient) and
    return the JSON object on the last line it prints; its stderr fails the test if it fails."""
    done = subprocess.run(
        [triton_python(), str(Path(__file__).with_name(script)), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
