"""Executes a loaded pipeline: binds request tensors to the first stage, runs stages in order."""

from fpga_serve.runtime.pipeline import Pipeline, StageObserver

__all__ = ["Pipeline", "StageObserver"]
