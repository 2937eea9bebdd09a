"""Regenerate the gRPC/protobuf stubs in client/fpga_serve_client/protos/ from protos/.

Usage: python scripts/gen_protos.py [--out DIR]

The stubs are committed so that `pip install ./client` needs no code generator; the test
suite regenerates them into a temporary folder and fails when the committed ones are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("fpga_serve_client") / "protos"


def generate(out: Path) -> list[Path]:
    """Generate stubs for every .proto under protos/ into ``out`` and return the files."""
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = out / PACKAGE
    (pkg / "__init__.py").write_text(
        '"""Generated protobuf and gRPC stubs (scripts/gen_protos.py)."""\n'
    )
    return sorted(p for p in pkg.iterdir() if p.suffix in {".py", ".pyi"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "client")
    ns = parser.parse_args(argv)
    for path in generate(ns.out):
        print(path.relative_to(ns.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
