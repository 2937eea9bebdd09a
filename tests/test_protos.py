"""Generated stubs are reproducible from protos/ with one command, and committed up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = module.generate(tmp_path)
    assert fresh
    committed_dir = ROOT / "client" / "fpga_serve_client" / "protos"
    stale = []
    for path in fresh:
        committed = committed_dir / path.name
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(path.name)
    extra = {p.name for p in committed_dir.glob("*_pb2*.py*")} - {p.name for p in fresh}
    assert not stale and not extra, (
        f"stale stubs {stale}, extra {sorted(extra)}: run python scripts/gen_protos.py"
    )
