"""The zip's manifest, ``service_def.json`` (Brainwave's name): versioned, strictly parsed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fpga_serve.core.errors import InvalidInput, ModelLoadError
from fpga_serve.core.types import TensorSpec

MANIFEST_NAME = "service_def.json"
FORMAT = "fpga-serve-pipeline"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StageRecord:
    """One stage as the manifest lists it: its kind, where its files are, its tensors."""

    kind: str
    name: str
    dir: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "dir": self.dir,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "options": dict(self.options),
        }


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    name: str
    created_by: str
    stages: tuple[StageRecord, ...]
    labels: str | None
    input_aliases: Mapping[str, str]
    files: Mapping[str, FileRecord]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.stages[0].inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.stages[-1].outputs

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "created_by": self.created_by,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "input_aliases": dict(self.input_aliases),
            "labels": self.labels,
            "stages": [s.to_json() for s in self.stages],
            "files": {
                k: {"sha256": v.sha256, "size": v.size} for k, v in sorted(self.files.items())
            },
        }

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=False).encode()


def check_chain(
    stages: tuple[StageRecord, ...] | list[StageRecord], error: type[Exception]
) -> None:
    """Each stage's outputs must feed the next stage's inputs: count, dtype and shape."""
    if not stages:
        raise error("the pipeline has no stages")
    for before, after in itertools.pairwise(stages):
        if len(before.outputs) != len(after.inputs):
            raise error(
                f"stage {before.name!r} has {len(before.outputs)} outputs but the next stage "
                f"{after.name!r} takes {len(after.inputs)} inputs"
            )
        for out, inp in zip(before.outputs, after.inputs, strict=True):
            if not out.feeds(inp):
                raise error(
                    f"stage {before.name!r} output {out.describe()} does not fit stage "
                    f"{after.name!r} input {inp.describe()}"
                )


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise ModelLoadError(f"{MANIFEST_NAME}: {where} is missing {key!r}")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ModelLoadError(f"{MANIFEST_NAME}: {where} field {key!r} has the wrong type")
    return value


def _specs(items: Any, where: str) -> tuple[TensorSpec, ...]:
    if not isinstance(items, list) or not items:
        raise ModelLoadError(f"{MANIFEST_NAME}: {where} must be a non-empty list")
    try:
        return tuple(TensorSpec.from_json(i) for i in items)
    except (InvalidInput, AttributeError, TypeError) as exc:
        raise ModelLoadError(f"{MANIFEST_NAME}: {where}: {exc}") from exc


def parse_manifest(raw: bytes) -> Manifest:
    """Parse and check a manifest; every problem is a ModelLoadError naming the field."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{MANIFEST_NAME} must hold a JSON object")
    if data.get("format") != FORMAT:
        raise ModelLoadError(f"{MANIFEST_NAME}: format is {data.get('format')!r}, not {FORMAT!r}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelLoadError(
            f"{MANIFEST_NAME}: format_version {version!r} is not supported (this server reads "
            f"{FORMAT_VERSION})"
        )
    name = _field(data, "name", str, "the manifest")
    created_by = _field(data, "created_by", str, "the manifest")
    stages = []
    for index, item in enumerate(_field(data, "stages", list, "the manifest")):
        where = f"stage {index}"
        if not isinstance(item, dict):
            raise ModelLoadError(f"{MANIFEST_NAME}: {where} must be an object")
        options = _field(item, "options", dict, where)
        stages.append(
            StageRecord(
                kind=_field(item, "kind", str, where),
                name=_field(item, "name", str, where),
                dir=_field(item, "dir", str, where),
                inputs=_specs(item.get("inputs"), f"{where} inputs"),
                outputs=_specs(item.get("outputs"), f"{where} outputs"),
                options=options,
            )
        )
    check_chain(stages, ModelLoadError)
    if [s.to_json() for s in stages[0].inputs] != data.get("inputs") or [
        s.to_json() for s in stages[-1].outputs
    ] != data.get("outputs"):
        raise ModelLoadError(f"{MANIFEST_NAME}: pipeline inputs/outputs disagree with the stages")
    labels = data.get("labels")
    if labels is not None and not isinstance(labels, str):
        raise ModelLoadError(f"{MANIFEST_NAME}: labels must be a member name or null")
    aliases = _field(data, "input_aliases", dict, "the manifest")
    input_names = {s.name for s in stages[0].inputs}
    for alias, target in aliases.items():
        if not isinstance(target, str) or target not in input_names:
            raise ModelLoadError(f"{MANIFEST_NAME}: input alias {alias!r} names no input")
    files = {}
    for member, rec in _field(data, "files", dict, "the manifest").items():
        if not isinstance(rec, dict):
            raise ModelLoadError(f"{MANIFEST_NAME}: files entry {member!r} must be an object")
        sha = _field(rec, "sha256", str, f"files entry {member!r}")
        size = _field(rec, "size", int, f"files entry {member!r}")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or size < 0:
            raise ModelLoadError(f"{MANIFEST_NAME}: files entry {member!r} is malformed")
        files[member] = FileRecord(sha, size)
    if labels is not None and labels not in files:
        raise ModelLoadError(f"{MANIFEST_NAME}: labels member {labels!r} is not in files")
    return Manifest(
        name=name,
        created_by=created_by,
        stages=tuple(stages),
        labels=labels,
        input_aliases=dict(aliases),
        files=files,
    )
