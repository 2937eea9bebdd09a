"""Rewrite the settings table in README.md from ServerSettings (one source of truth).

Usage: python scripts/settings_table.py
"""

from __future__ import annotations

from pathlib import Path

from fpga_serve.core.settings import ServerSettings

README = Path(__file__).resolve().parent.parent / "README.md"
INDENT = "  "


def rows() -> list[str]:
    out = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for name, info in ServerSettings.model_fields.items():
        default = info.default if info.default_factory is None else info.default_factory()  # type: ignore[call-arg]
        flag = "positional `MODEL.zip ...`" if name == "models" else f"`--{name.replace('_', '-')}`"
        shown = "[]" if default == [] else ("none" if default is None else str(default))
        meaning = (info.description or "").replace("\n", " ").replace("|", "\\|")
        out.append(f"| {flag} | `FPGA_SERVE_{name.upper()}` | {shown} | {meaning} |")
    return out


def main() -> None:
    lines = README.read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(INDENT + "| flag |"))
    end = start
    while end < len(lines) and lines[end].startswith(INDENT + "|"):
        end += 1
    lines[start:end] = [INDENT + r for r in rows()]
    README.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
