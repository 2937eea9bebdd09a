"""The pipeline zip: manifest, safe archive reading/writing, stage kinds, load and save."""

from fpga_serve.modelzip.archive import ArchiveLimits, validate_archive
from fpga_serve.modelzip.loader import LoadedArchive, load_pipeline, save_pipeline
from fpga_serve.modelzip.manifest import Manifest, StageRecord
from fpga_serve.modelzip.stages import LoadContext, register_kind

__all__ = [
    "ArchiveLimits",
    "LoadContext",
    "LoadedArchive",
    "Manifest",
    "StageRecord",
    "load_pipeline",
    "register_kind",
    "save_pipeline",
    "validate_archive",
]
