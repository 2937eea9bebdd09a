"""Keras model -> overlay program: import, passes, calibration, quantisation, lowering.

    from fpga_serve.compiler import CompileOptions, compile_model
    compiled = compile_model(keras_model, calibration_images,
                             CompileOptions(output_layer="avg_pool"), progress=print_progress)
    compiled.program        # core.isa.Program for any device
    compiled.calibration    # method, per-tensor ranges and scales
    compiled.summary        # per layer: op, shape, MACs, weight bytes, scales

Modules: ir (the float graph), keras_import, passes/ (one contract, run to a fixed point),
analysis (read-only counts), calibration, quantize, lower, options, steps (the named pipeline),
float_exec (the float reference interpreter), weights (weight-file checks).
"""

from __future__ import annotations

from fpga_serve.compiler import float_exec
from fpga_serve.compiler.calibration import CalibrationRecord, Progress, calibrate
from fpga_serve.compiler.ir import Graph, Node
from fpga_serve.compiler.keras_import import import_keras
from fpga_serve.compiler.options import CompileOptions
from fpga_serve.compiler.passes import optimize
from fpga_serve.compiler.steps import STEPS, CompiledModel, compile_model

__all__ = [
    "STEPS",
    "CalibrationRecord",
    "CompileOptions",
    "CompiledModel",
    "Graph",
    "Node",
    "Progress",
    "calibrate",
    "compile_model",
    "float_exec",
    "import_keras",
    "optimize",
]
