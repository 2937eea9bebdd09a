"""Write the board flow's generated files from boards.json, spec.json and the RTL header:

bitstreams/boards/vivado/config/<board>.tcl   the Vivado build's values
bitstreams/boards/<board>/fpga_cnn.hwh        the block design as pynq sees it

python -m fpga_serve.boardflow.generate          # rewrite them
python -m fpga_serve.boardflow.generate --check  # exit 1 naming each stale file
"""

from __future__ import annotations

import sys
from pathlib import Path

from fpga_serve.boardflow import config, hwh
from fpga_serve.boardflow.facts import facts
from fpga_serve.core.boards import BOARDS, BOARDS_DIR


def outputs() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for board in BOARDS.values():
        f = facts(board)
        out[BOARDS_DIR / "vivado" / "config" / f"{board.name}.tcl"] = config.render(f)
        out[f.hwh_path()] = hwh.render(f)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stale = []
    for path, text in outputs().items():
        if "--check" in args:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in stale:
        print(f"{path} is stale: run python -m fpga_serve.boardflow.generate", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
