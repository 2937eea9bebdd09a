"""The twin's int8 GEMM forms (hw/twin/gemm.py), outside test_twin_native.py's skip: one form
is exact on every CPU the tests have run on (u8 x s8 with VNNI, u8 x u8 on AVX2 without it),
so a CPU where the native path is unavailable fails here instead of skipping the native tests."""

from __future__ import annotations

import numpy as np
import pytest
from fpga_serve.hw.twin import gemm, native

RNG = np.random.default_rng(5)


def test_each_gemm_form_the_self_check_passes_computes_the_product() -> None:
    weight = RNG.integers(-128, 128, (300, 19), dtype=np.int8)
    cols = RNG.integers(0, 256, (67, 300), dtype=np.uint8)
    want = (cols.astype(np.int64) - 128) @ weight.astype(np.int64)
    passed = [form for form in gemm.FORMS if gemm._exact_in(form)]
    assert passed
    for form in passed:
        assert np.array_equal(gemm.Int8Gemm(weight, form)(cols), want)
    assert gemm.exact_form() == passed[0]
    assert gemm.Int8Gemm(weight).form == passed[0]  # the default is the checked form
    with pytest.raises(ValueError, match="form"):
        gemm.Int8Gemm(weight, "s8s8")


def test_the_native_path_is_available_here() -> None:
    """numba and an exact GEMM form: the twin is not left on the float32-BLAS fallback."""
    assert native.available()
