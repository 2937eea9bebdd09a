"""A model repository directory, laid out as Triton users know it:

    REPO/<model name>/<version>/<anything>.zip

Versions are positive integers. Anything else in the directory (stray files, hidden entries,
non-numeric version folders, a version folder without exactly one zip) is reported as a problem
entry and never loaded; it does not stop the valid models from loading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def is_model_name(name: str) -> bool:
    """Whether ``name`` may name a model folder (letters, digits, _ . -; at most 128)."""
    return bool(_NAME.fullmatch(name))


@dataclass(frozen=True)
class RepoEntry:
    """One model version found in the directory, or one thing that could not be used."""

    name: str
    version: str
    path: Path | None
    problem: str | None = None


def scan(root: Path, only: str | None = None) -> list[RepoEntry]:
    """Every model version (or problem) under ``root``; only model ``only`` when given."""
    entries: list[RepoEntry] = []
    for model_dir in sorted(root.iterdir()):
        name = model_dir.name
        if only is not None and name != only:
            continue
        if name.startswith("."):
            continue
        if not model_dir.is_dir() or model_dir.is_symlink():
            entries.append(RepoEntry(name, "", None, "not a model folder (expected a directory)"))
            continue
        if not is_model_name(name):
            entries.append(RepoEntry(name, "", None, "model names use letters, digits, _ . -"))
            continue
        versions = 0
        for version_dir in sorted(model_dir.iterdir()):
            if version_dir.name.startswith("."):
                continue
            versions += 1
            entries.append(_version_entry(name, version_dir))
        if versions == 0:
            entries.append(RepoEntry(name, "", None, "no version folders (expected NAME/1/*.zip)"))
    return entries


def _version_entry(name: str, version_dir: Path) -> RepoEntry:
    version = version_dir.name
    if not version_dir.is_dir() or not version.isdigit() or int(version) < 1:
        return RepoEntry(name, version, None, "version folders are positive integers")
    zips = sorted(p for p in version_dir.iterdir() if p.suffix == ".zip" and p.is_file())
    if len(zips) != 1:
        return RepoEntry(
            name, version, None, f"expected exactly one .zip in {version_dir}, found {len(zips)}"
        )
    return RepoEntry(name, str(int(version)), zips[0])
