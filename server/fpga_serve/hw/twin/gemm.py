"""Exact int8 GEMM for the twin's native path, through ONNX Runtime's MatMulInteger.

ONNX Runtime's MLAS kernels multiply uint8 by int8 with int32 accumulation (AVX-512 VNNI /
AVX-VNNI ``vpdpbusd`` on x86, ``sdot``/``udot`` on Arm): integer arithmetic, so the result is
exact, about four times the float32 GEMM rate on the same cores. Activations arrive as offset
bytes (u = v + 128) with zero point 128, so MLAS computes sum((u - 128) * w) = sum(v * w).

One caveat is known (ONNX Runtime's quantization docs): x86 CPUs without VNNI run u8 x s8
through ``vpmaddubsw``, whose int16 pair sums can saturate. So exactness is not assumed from
the library: :func:`exact_form` runs a self-check on this CPU (random data and the adversarial
extremes that saturate int16 pair sums) for each of two forms of the same product, and the
native path uses the first that passes:

- ``u8s8``: the weights as int8 (MLAS's u8 x s8 kernels; VNNI where the CPU has it);
- ``u8u8``: the weights offset to bytes too (w + 128, zero point 128), which MLAS multiplies
  as u8 x u8 widened to int16 (``vpmaddwd``: no pair sum can saturate) — the exact form on
  AVX2 CPUs without VNNI, where ``u8s8`` fails the check.

Where ``u8u8`` is the exact form, a third serves the CONVs whose inputs are proven
non-negative (an earlier op's ReLU: twin/native.py, nonnegative_inputs):

- ``v8s8`` (:data:`PLAIN`): plain bytes v in [0, 127] (the offset bytes with their top bit
  cleared) times int8 weights, no zero points. ``vpmaddubsw``'s pair sums are then at most
  2 * 127 * 128 < 2^15, so the u8 x s8 kernels cannot saturate, and they take about 0.6-0.8x
  the u8 x u8 form's time on ResNet-50's shapes (bench/README.md, issue 13).
  :func:`plain_form` checks it like the others, on inputs in its range.

If neither passes, the twin keeps its float32-BLAS path (twin/numpy_path.py).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

_POOL_LOCK = threading.Lock()
_GLOBAL_POOL: dict[str, bool] = {}  # "set": whether the process-wide pool could be made


_THREADS: dict[str, int] = {"threads": 0}


def set_twin_threads(threads: int) -> None:
    """The threads the twin computes with in this process (the server's ``twin_threads``
    setting; 0: one per core). Set before the first program loads: the GEMM sessions' pool and
    the kernels' pool are made once."""
    if threads < 0:
        raise ValueError(f"twin threads {threads} < 0")
    _THREADS["threads"] = threads


def twin_threads() -> int:
    """Threads the twin computes with: as set (``set_twin_threads``), else one per core."""
    return _THREADS["threads"] or (os.cpu_count() or 1)


def _session_options():  # type: ignore[no-untyped-def]
    """One process-wide intra-op thread pool for every layer's session (not one per layer),
    when the runtime's environment is still ours to configure; else per-session pools."""
    import onnxruntime as ort
    from onnxruntime.capi import _pybind_state

    options = ort.SessionOptions()
    options.log_severity_level = 3
    with _POOL_LOCK:
        if "set" not in _GLOBAL_POOL:
            try:
                _pybind_state.set_global_thread_pool_sizes(twin_threads(), 1)
                _GLOBAL_POOL["set"] = True
            except Exception:  # the environment already exists (another user in-process)
                _GLOBAL_POOL["set"] = False
    if _GLOBAL_POOL["set"]:
        options.use_per_session_threads = False
    else:
        options.intra_op_num_threads = twin_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


FORMS = ("u8s8", "u8u8")  # in the order the self-check tries them (the first is faster with VNNI)
PLAIN = "v8s8"
"""The form for plain bytes in [0, 127] (module docstring): acc = cols @ weight."""


class Int8Gemm:
    """acc int32 [M, Cout] = (cols uint8 [M, K] - 128) @ weight int8 [K, Cout], exactly, in
    one of :data:`FORMS` (module docstring); by default the one the self-check chose here. In
    the :data:`PLAIN` form, acc = cols @ weight for cols in [0, 127]."""

    def __init__(self, weight: np.ndarray, form: str | None = None) -> None:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        if weight.dtype != np.int8 or weight.ndim != 2:
            raise ValueError("Int8Gemm needs an int8 [K, Cout] weight matrix")
        form = form or exact_form() or FORMS[0]
        if form not in (*FORMS, PLAIN):
            raise ValueError(f"Int8Gemm form {form!r} is not one of {(*FORMS, PLAIN)}")
        k, cout = weight.shape
        self.k = k
        self.form = form
        if form == PLAIN:
            stored, inputs = np.ascontiguousarray(weight), ["a", "w"]
        elif form == "u8s8":
            stored, inputs = np.ascontiguousarray(weight), ["a", "w", "zp"]
        else:  # the same values as offset bytes, with the activations' zero point
            stored = (weight.astype(np.int16) + 128).astype(np.uint8)
            inputs = ["a", "w", "zp", "zp"]
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", inputs, ["y"])],
            "int8_gemm",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, [None, cout])],
            [
                numpy_helper.from_array(stored, "w"),
                numpy_helper.from_array(np.array(128, np.uint8), "zp"),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        self._session = ort.InferenceSession(
            model.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"]
        )

    def __call__(self, cols: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(["y"], {"a": cols})[0])

    def bind(self, cols: np.ndarray, out: np.ndarray) -> Callable[[], None]:
        """A call that computes ``out[:] = self(cols)`` in place: both arrays bound to the
        session once (ONNX Runtime I/O binding), so a call allocates and copies nothing and
        costs ~2 us of Python; ``cols`` is read at each call. The arrays must be C-contiguous
        and stay alive and unmoved while the call is kept (the caller's kept buffers)."""
        import onnxruntime as ort

        if cols.shape[0] != out.shape[0] or out.dtype != np.int32:
            raise ValueError("Int8Gemm.bind needs int32 out rows matching cols")
        if not (cols.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("Int8Gemm.bind needs C-contiguous arrays (bound as they are)")
        binding = self._session.io_binding()
        values = [ort.OrtValue.ortvalue_from_numpy(a) for a in (cols, out)]  # views, no copy
        binding.bind_ortvalue_input("a", values[0])
        binding.bind_ortvalue_output("y", values[1])
        run = self._session.run_with_iobinding  # without RunOptions: those cost ~28 us a call

        def call() -> None:
            run(binding)

        call.keep = values  # type: ignore[attr-defined]  # the OrtValues live with the call
        return call


def _check_cases(plain: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random products and the extremes that saturate int16 pair sums: 255*(-128)*2 and
    255*127*2 overflow int16, as do the offset forms of int8 -128 (u = 0) against -128. With
    ``plain``, the activations in the plain form's range [0, 127] and its extremes."""
    rng = np.random.default_rng(0)
    top = 127 if plain else 255
    cases = [
        (
            rng.integers(0, top + 1, (67, 300), dtype=np.uint8),
            rng.integers(-128, 128, (300, 19), dtype=np.int8),
        )
    ]
    for u, w in ((top, -128), (top, 127), (0, -128), (0, 127), (top, -127)):
        cases.append((np.full((33, 1056), u, np.uint8), np.full((1056, 17), w, np.int8)))
    mixed_u = np.tile(np.array([top, 0], np.uint8), (9, 64))
    mixed_w = np.tile(np.array([[-128], [127]], np.int8), (64, 5))
    cases.append((mixed_u, mixed_w))
    return cases


def _exact_in(form: str) -> bool:
    """Whether ``form`` gives the exact product on every check case (in its input range),
    both as a call and bound in place (the native plan's form)."""
    plain = form == PLAIN
    for cols, weight in _check_cases(plain):
        want = (cols.astype(np.int64) - (0 if plain else 128)) @ weight.astype(np.int64)
        gemm = Int8Gemm(weight, form)
        out = np.full(want.shape, -1, np.int32)
        gemm.bind(np.ascontiguousarray(cols), out)()
        if not (np.array_equal(gemm(cols), want) and np.array_equal(out, want)):
            return False
    return True


@functools.lru_cache(maxsize=1)
def exact_form() -> str | None:
    """The first of :data:`FORMS` whose GEMM is exact on this CPU, or None (ONNX Runtime
    missing, or no form exact): the twin then uses float32 BLAS."""
    try:
        for form in FORMS:
            if _exact_in(form):
                if form != FORMS[0]:
                    log.info("int8 GEMM: %s is not exact on this CPU; using %s", FORMS[0], form)
                return form
    except Exception as exc:  # not installed, or the runtime refuses the graph here
        log.warning("int8 GEMM unavailable (%s): the twin uses float32 BLAS", exc)
        return None
    log.warning("int8 GEMM is not exact on this CPU: the twin uses float32 BLAS")
    return None


def exact_here() -> bool:
    """Whether ONNX Runtime is installed and one form of its int8 GEMM is exact on this CPU."""
    return exact_form() is not None


@functools.lru_cache(maxsize=1)
def plain_form() -> str | None:
    """:data:`PLAIN` where it pays and is exact: where the exact form is ``u8u8`` (x86
    without VNNI: elsewhere ``u8s8`` already runs the fast kernels, and the plain form would
    only add a copy) and its own self-check passes; else None."""
    if exact_form() != "u8u8":
        return None
    try:
        if _exact_in(PLAIN):
            return PLAIN
    except Exception as exc:  # the runtime refuses the graph here
        log.warning("int8 GEMM form %s unavailable (%s)", PLAIN, exc)
        return None
    log.info("int8 GEMM: %s is not exact on this CPU; non-negative inputs use u8u8", PLAIN)
    return None
