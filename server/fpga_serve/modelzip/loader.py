"""Saving a list of SDK stages as a pipeline zip, and loading a zip into stage runners."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fpga_serve import __version__
from fpga_serve.core.errors import FpgaServeError, InvalidInput, ModelLoadError
from fpga_serve.core.stage import StageRunner
from fpga_serve.core.types import DType, TensorSpec
from fpga_serve.modelzip.archive import (
    ArchiveLimits,
    extract_archive,
    file_records,
    validate_archive,
    write_archive,
)
from fpga_serve.modelzip.manifest import Manifest, StageRecord, check_chain
from fpga_serve.modelzip.stages import LoadContext, SdkStage, get_kind

log = logging.getLogger(__name__)

LABELS_FILE = "labels.txt"
IMAGES_ALIAS = "images"


def default_aliases(inputs: Sequence[TensorSpec]) -> dict[str, str]:
    """A single BYTES input also answers to ``images`` (what the Brainwave clients sent)."""
    if len(inputs) == 1 and inputs[0].dtype is DType.BYTES and inputs[0].name != IMAGES_ALIAS:
        return {IMAGES_ALIAS: inputs[0].name}
    return {}


def save_pipeline(
    stages: Sequence[SdkStage], path: Path, name: str, labels: Sequence[str] | None = None
) -> Manifest:
    """Save stages in order; refuses (InvalidInput) a pipeline whose stages do not chain."""
    if not stages:
        raise InvalidInput("the pipeline is empty: append stages to model_def.pipeline")
    with tempfile.TemporaryDirectory(prefix="fpga-serve-save-") as tmp:
        root = Path(tmp)
        records = []
        for index, stage in enumerate(stages):
            stage_name = stage.name or f"{index}_{stage.kind}"
            rel = f"stages/{index}"
            saved = stage.save(root / rel)
            records.append(
                StageRecord(
                    stage.kind, stage_name, rel, saved.inputs, saved.outputs, dict(saved.options)
                )
            )
        check_chain(records, InvalidInput)
        if labels is not None:
            labels = [str(label) for label in labels]
            if any("\n" in label for label in labels):
                raise InvalidInput("labels cannot contain line breaks")
            (root / LABELS_FILE).write_text("\n".join(labels) + "\n", encoding="utf-8")
        manifest = Manifest(
            name=name,
            created_by=f"fpga-serve {__version__}",
            stages=tuple(records),
            labels=LABELS_FILE if labels is not None else None,
            input_aliases=default_aliases(records[0].inputs),
            files=file_records(root),
        )
        write_archive(manifest, root, Path(path))
    return manifest


@dataclass
class LoadedArchive:
    """A validated, extracted and loaded pipeline zip."""

    manifest: Manifest
    stages: list[StageRunner]
    labels: list[str] | None
    directory: Path
    input_aliases: dict[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.outputs

    def close(self) -> None:
        for stage in self.stages:
            stage.close()
        self.stages = []
        shutil.rmtree(self.directory, ignore_errors=True)


def load_pipeline(
    zip_path: Path, context: LoadContext, limits: ArchiveLimits | None = None
) -> LoadedArchive:
    """Validate the archive fully, then extract and load every stage (ModelLoadError on any
    problem, with nothing left behind)."""
    manifest = validate_archive(Path(zip_path), limits)
    kinds = [get_kind(record.kind) for record in manifest.stages]
    directory = extract_archive(Path(zip_path), manifest, context.workdir)
    stages: list[StageRunner] = []
    try:
        labels = None
        if manifest.labels is not None:
            text = (directory / manifest.labels).read_text(encoding="utf-8")
            labels = text.splitlines()
        for record, kind in zip(manifest.stages, kinds, strict=True):
            try:
                stages.append(kind.load(record, directory / record.dir, context))
            except ModelLoadError:
                raise
            except FpgaServeError as exc:
                raise ModelLoadError(f"stage {record.name!r}: {exc}") from exc
        if labels is not None and manifest.outputs[0].shape[-1] not in (-1, len(labels)):
            raise ModelLoadError(
                f"{manifest.labels} has {len(labels)} labels for output "
                f"{manifest.outputs[0].describe()}"
            )
    except BaseException:
        for stage in stages:
            stage.close()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return LoadedArchive(manifest, stages, labels, directory, dict(manifest.input_aliases))
