"""Each import-linter contract (pyproject.toml, the rules of docs/architecture.md) fails on a
deliberate violation: the packages are copied to a temporary folder, one forbidden import per
contract is added to the copy, and lint-imports (one run, about a second) must report every
contract broken, each naming the module its violation was put in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# contract name -> (the module given a forbidden import, the import)
VIOLATIONS: dict[str, tuple[str, str]] = {
    "Layers point one way": ("fpga_serve.service.metrics", "import fpga_serve.adapters.server"),
    "core imports nothing of ours": ("fpga_serve.core.types", "from fpga_serve.hw import base"),
    "compiler imports core, never hw": (
        "fpga_serve.compiler.plan",
        "from fpga_serve.hw.twin import reference",
    ),
    "runtime imports modelzip and core": (
        "fpga_serve.runtime.batching",
        "import fpga_serve.hw.base",
    ),
    "hw depends on core only": ("fpga_serve.hw.base", "import fpga_serve.modelzip"),
    "The SDK, brainwave and the board flow sit above the layers": (
        "fpga_serve.service.models",
        "import fpga_serve.pipeline",
    ),
    "brainwave builds on the SDK, never on the server": (
        "fpga_serve.brainwave.deploy",
        "import fpga_serve.service.dataplane",
    ),
    "The board flow imports core only": (
        "fpga_serve.boardflow.facts",
        "from fpga_serve.hw import registry",
    ),
    "The client stands alone": ("fpga_serve_client.convert", "import fpga_serve.core.types"),
    "Only adapters and the client touch grpc and the generated stubs": (
        "fpga_serve.pipeline",
        "import grpc",
    ),
    "The layers below adapters and the SDK use no client": (
        "fpga_serve.runtime.pipeline",
        "import fpga_serve_client",
    ),
    "Only hw imports pynq": ("fpga_serve.service.devices", "import pynq"),
    "Within the layers only stage modules and the compiler import TensorFlow": (
        "fpga_serve.runtime.images",
        "import tensorflow as tf",
    ),
}


def _source(tree: Path, module: str) -> Path:
    folder = "client" if module.startswith("fpga_serve_client") else "server"
    path = tree / folder / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _broken_sections(report: str) -> dict[str, str]:
    """Contract name -> its part of the "Broken contracts" report."""
    broken = report.split("Broken contracts", 1)[1] if "Broken contracts" in report else ""
    starts = sorted((broken.find(f"\n{n}\n"), n) for n in VIOLATIONS if f"\n{n}\n" in broken)
    ends = [s for s, _ in starts[1:]] + [len(broken)]
    return {n: broken[s:e] for (s, n), e in zip(starts, ends, strict=True)}


def test_each_contract_fails_on_its_deliberate_violation(tmp_path: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder, package in (("server", "fpga_serve"), ("client", "fpga_serve_client")):
        shutil.copytree(ROOT / folder / package, tmp_path / folder / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for module, line in VIOLATIONS.values():
        path = _source(tmp_path, module)
        path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'server'}{os.pathsep}{tmp_path / 'client'}")
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode != 0, report
    # Every contract broken (a contract with no violation here would be "kept")...
    assert f"Contracts: 0 kept, {len(VIOLATIONS)} broken." in report, report
    sections = _broken_sections(report)
    for contract, (module, _) in VIOLATIONS.items():
        # ... each by the import put in for it.
        assert f"{contract} BROKEN" in report, contract
        assert module in sections.get(contract, ""), (contract, report)
