"""The accelerator's register map has one copy (fpga_serve.core.isa, read from spec.json): the
table in bitstreams/README.md says the same offsets, and VERSION reads what the spec says."""

from __future__ import annotations

import re
from pathlib import Path

from fpga_serve.core.isa import ERROR_CODES, ERROR_NAMES, REGISTERS, SPEC_VERSION, version_word

README = Path(__file__).resolve().parents[2] / "bitstreams" / "README.md"
ROW = re.compile(r"^\| (0x[0-9A-F/x +4i]+) \| ([A-Z0-9_/\[\]i]+) \|", re.M)


def _documented_registers() -> dict[str, int]:
    """Name -> offset from the README's "Registers" table (LO/HI pairs and PERF[i] expanded)."""
    text = README.read_text().split("## Registers", 1)[1].split("\n## ", 1)[0]
    found: dict[str, int] = {}
    for offsets, names in ROW.findall(text):
        if names == "PERF[i]":
            found["PERF_BASE"] = int(offsets.split()[0], 16)
        elif names.endswith("_LO/HI"):
            lo, hi = offsets.split("/")
            found[names[: -len("_LO/HI")] + "_LO"] = int(lo, 16)
            found[names[: -len("_LO/HI")] + "_HI"] = int(hi, 16)
        else:
            found[names] = int(offsets, 16)
    return found


def test_the_readme_register_table_is_the_spec_register_map() -> None:
    assert _documented_registers() == REGISTERS


def test_the_version_word_and_error_names() -> None:
    assert version_word("2.0") == 0x00020000
    assert version_word("2.1") == 0x00020001
    assert version_word("2.13") == 0x0002000D
    assert version_word("x.y") == version_word("2") == 0
    assert f"0x{version_word(SPEC_VERSION):08X}" in README.read_text()
    assert ERROR_NAMES[ERROR_CODES["BAD_DESCRIPTOR"]] == "BAD_DESCRIPTOR"
    assert sorted(ERROR_NAMES) == list(range(len(ERROR_CODES)))
