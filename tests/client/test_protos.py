"""Generated stubs are reproducible from protos/ with one command, and committed up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    # In a subprocess: protoc's own protobuf runtime must not meet TensorFlow's in one process.
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh_dir = tmp_path / "fpga_serve_client" / "protos"
    committed_dir = ROOT / "client" / "fpga_serve_client" / "protos"
    fresh = sorted(fresh_dir.glob("*.py*"))
    assert len(fresh) > 10
    stale = [
        p.name
        for p in fresh
        if not (committed_dir / p.name).exists()
        or (committed_dir / p.name).read_bytes() != p.read_bytes()
    ]
    extra = {p.name for p in committed_dir.glob("*_pb2*.py*")} - {p.name for p in fresh}
    assert not stale and not extra, (
        f"stale stubs {stale}, extra {sorted(extra)}: run python scripts/gen_protos.py"
    )
