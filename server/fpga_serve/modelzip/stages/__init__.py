"""Stage kinds: how each kind of pipeline stage is saved into a zip and loaded back.

A *kind* (registered with ``register_kind``) turns a stage's files into a ``StageRunner``:

    class MyKind:
        kind = "my_kind"
        def load(self, record: StageRecord, stage_dir: Path, context: LoadContext) -> StageRunner

An *SDK stage* (what users append to ``ModelDefinition.pipeline``) knows its kind and saves:

    class MyStage:
        kind = "my_kind"
        name: str | None
        def save(self, dest: Path) -> SavedStage   # writes files under dest

Kinds here: "tensorflow" (SavedModel), "tensorflow_graphdef" (frozen GraphDef), "keras" (.keras),
"onnx" (ONNX Runtime); the FPGA stage kind registers itself the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fpga_serve.core.errors import ModelLoadError
from fpga_serve.core.stage import StageRunner
from fpga_serve.core.types import TensorSpec
from fpga_serve.modelzip.manifest import StageRecord


@dataclass
class LoadContext:
    """What loading needs from the server: the device FPGA stages run on, a scratch folder.

    ``device_factory`` is called only when a stage needs a device (CPU-only pipelines never
    probe for a board); without either, FPGA stages run on a private twin.
    """

    device: Any = None
    workdir: Path | None = None
    device_factory: Callable[[], Any] | None = None
    validate: Callable[[str, bool], None] | None = None
    """When set, FPGA stages also run every batch on the twin and report (device, matched)."""

    def resolve_device(self) -> Any:
        if self.device is None and self.device_factory is not None:
            self.device = self.device_factory()
        return self.device


@dataclass(frozen=True)
class SavedStage:
    """What saving a stage produced: its tensors and kind-specific options for the manifest."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


class StageKind(Protocol):
    kind: str

    def load(self, record: StageRecord, stage_dir: Path, context: LoadContext) -> StageRunner: ...


class SdkStage(Protocol):
    kind: str
    name: str | None

    def save(self, dest: Path) -> SavedStage: ...


_KINDS: dict[str, StageKind] = {}
_BUILTIN = {
    "tensorflow": "tf_stage",
    "tensorflow_graphdef": "tf_stage",
    "keras": "keras_stage",
    "fpga": "fpga_stage",
    "onnx": "onnx_stage",
}
"""Built-in kinds and their modules, imported when a zip first needs the kind: TensorFlow is
imported only for TensorFlow and Keras stages, ONNX Runtime only for ONNX ones."""


def register_kind(kind: StageKind) -> StageKind:
    _KINDS[kind.kind] = kind
    return kind


def get_kind(name: str) -> StageKind:
    if name not in _KINDS and name in _BUILTIN:
        importlib.import_module(f"{__name__}.{_BUILTIN[name]}")
    if name not in _KINDS:
        known = ", ".join(sorted(set(_KINDS) | set(_BUILTIN)))
        raise ModelLoadError(f"unknown stage kind {name!r} (this server knows {known})")
    return _KINDS[name]
