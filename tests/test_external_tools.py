"""A test that needs a missing program skips, and fails under FPGA_SERVE_REQUIRE_TOOLS=1
(tests/helpers/external_tools.py), shown on the RTL tests themselves with Verilator taken
off the PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import external_tools

TESTS = Path(__file__).resolve().parent


def _pytest(node: str, require: bool, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``node`` run in its own pytest with an empty PATH (no verilator, yosys, tclsh...)."""
    env = {k: v for k, v in os.environ.items() if k != external_tools.REQUIRE_VARIABLE}
    env["PATH"] = str(tmp_path)
    if require:
        env[external_tools.REQUIRE_VARIABLE] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", node],
        capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=300, check=False,
    )  # fmt: skip


def test_the_rtl_tests_skip_without_verilator_and_fail_when_tools_are_required(
    tmp_path: Path,
) -> None:
    node = "tests/rtl/test_rtl.py::test_verilator_lints_the_rtl_clean"
    skipped = _pytest(node, require=False, tmp_path=tmp_path)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert "verilator is not installed (apt-get install verilator)" in skipped.stdout
    failed = _pytest(node, require=True, tmp_path=tmp_path)
    assert failed.returncode == 1 and "1 error" in failed.stdout, failed.stdout  # at setup
    assert f"{external_tools.REQUIRE_VARIABLE}=1: a missing tool fails the run" in failed.stdout


def test_ci_requires_the_tools() -> None:
    ci = (TESTS.parent / ".ci" / "run").read_text()
    export = f"export {external_tools.REQUIRE_VARIABLE}=1"
    assert export in ci and ci.index(export) < ci.index("bash scripts/test.sh")
