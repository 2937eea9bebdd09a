"""One opcode -> kernel dispatch (hw/twin/executor.py): every op set and the native plan have a
kernel for every opcode under the name KERNELS gives, and the logical and the packed executors
call it with the same operands (a pool's RELU flag clamps in both)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fpga_serve.core.isa import Opcode
from fpga_serve.hw.twin import numpy_path, reference
from fpga_serve.hw.twin.executor import KERNELS, Operands, apply
from fpga_serve.hw.twin.native import NativePlan


def test_every_opcode_has_a_kernel_in_every_op_set_and_a_native_step() -> None:
    assert set(KERNELS) == set(Opcode)
    for op, name in KERNELS.items():
        assert callable(getattr(reference, name)), (op, "reference")
        assert callable(getattr(numpy_path, name)), (op, "numpy_path")
        assert callable(getattr(NativePlan, "_" + name)), (op, "native")


@pytest.mark.parametrize("op", [Opcode.MAXPOOL, Opcode.AVGPOOL, Opcode.GLOBAL_AVGPOOL])
def test_a_pool_with_relu_is_clamped_and_both_op_sets_agree(op: Opcode) -> None:
    x = np.random.default_rng(1).integers(-128, 128, (2, 4, 4, 3), dtype=np.int8)
    plain_operands = Operands(
        kernel=(2, 2),
        stride=2,
        pad=(0, 0, 0, 0),
        relu=False,
        pad_value=-128,
        weight=None,
        bias=np.zeros(0, np.int32),
        multiplier=np.array([1 << 30], np.int32),
        shift=np.array([32], np.int32),
    )
    operands = {False: plain_operands, True: dataclasses.replace(plain_operands, relu=True)}
    plain = apply(reference, op, [x], operands[False])
    assert plain.min() < 0  # the clamp below has something to do
    clamped = apply(reference, op, [x], operands[True])
    assert np.array_equal(clamped, np.maximum(plain, 0))
    assert np.array_equal(apply(numpy_path, op, [x], operands[True]), clamped)
