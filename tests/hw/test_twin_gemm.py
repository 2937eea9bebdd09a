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


def test_the_plain_form_multiplies_plain_bytes_and_is_used_only_where_it_pays_and_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gemm.PLAIN: cols in [0, 127] times int8, no zero points, exact on this CPU (x86 u8 x s8
    kernels cannot saturate on such inputs; the self-check's extremes say so); plain_form
    offers it only where the exact form is u8u8, and refuses it when its check fails."""
    weight = RNG.integers(-128, 128, (300, 19), dtype=np.int8)
    cols = RNG.integers(0, 128, (67, 300), dtype=np.uint8)
    want = cols.astype(np.int64) @ weight.astype(np.int64)
    assert gemm._exact_in(gemm.PLAIN)
    assert np.array_equal(gemm.Int8Gemm(weight, gemm.PLAIN)(cols), want)
    assert all(c.max() <= 127 for c, _ in gemm._check_cases(plain=True))
    assert max(c.max() for c, _ in gemm._check_cases()) == 255
    assert gemm.plain_form() == (gemm.PLAIN if gemm.exact_form() == "u8u8" else None)
    try:
        for exact, plain_ok, want_form in (
            ("u8u8", True, gemm.PLAIN), ("u8u8", False, None), ("u8s8", True, None),
        ):  # fmt: skip
            gemm.plain_form.cache_clear()
            monkeypatch.setattr(gemm, "exact_form", lambda e=exact: e)
            monkeypatch.setattr(gemm, "_exact_in", lambda form, ok=plain_ok: ok)
            assert gemm.plain_form() == want_form
    finally:
        monkeypatch.undo()
        gemm.plain_form.cache_clear()


def test_the_native_path_is_available_here() -> None:
    """numba and an exact GEMM form: the twin is not left on the float32-BLAS fallback."""
    assert native.available()
