"""The twin's native path: a program turned once into a list of compiled steps.

At load, each CONV gets its int8 GEMM (twin/gemm.py, weights packed once) and each op its
requantisation constants as int64 arrays; at run time a step is an im2col or a direct view, the
GEMM and one fused requantisation pass (twin/kernels.py), with activations kept as offset bytes
(v + 128) from input to output, in buffers kept from run to run (reset, not reallocated). Work is
split over the CPU's cores by output rows. The result
equals the reference (the spec) bit for bit: tests/test_twin_native.py checks it op by op and
on whole programs.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fpga_serve.core.isa import Instr, Opcode, Program, TensorRef
from fpga_serve.hw.twin.gemm import twin_threads

log = logging.getLogger(__name__)

Step = Callable[[dict[int, np.ndarray]], None]

# Below this many output rows a step runs on the calling thread (hand-off costs more).
SPLIT_ROWS = 2048
REUSE_BYTES = 64 << 20
"""Most bytes of activation buffers a plan keeps between runs (ResNet-50 224, batch 1: 16.5 MB)."""
_POOL: list[ThreadPoolExecutor] = []  # made on first use


def _split(kernel: Callable[..., None], rows: int, *args: Any) -> None:
    """kernel(*args, r0, r1) over [0, rows), in one chunk per core when large enough."""
    parts = twin_threads()
    if rows < SPLIT_ROWS or parts == 1:
        kernel(*args, 0, rows)
        return
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(parts - 1, thread_name_prefix="twin"))
    bounds = [rows * i // parts for i in range(parts + 1)]
    pairs = list(itertools.pairwise(bounds))
    futures = [_POOL[0].submit(kernel, *args, a, b) for a, b in pairs[1:]]
    kernel(*args, *pairs[0])
    for f in futures:
        f.result()


def _half(shift: np.ndarray) -> np.ndarray:
    s = shift.astype(np.int64)
    return np.int64(1) << (s - 1)


def available() -> bool:
    """numba present and ONNX Runtime's int8 GEMM exact on this CPU (and not switched off by
    FPGA_SERVE_TWIN_NATIVE=0)."""
    if os.environ.get("FPGA_SERVE_TWIN_NATIVE", "1") == "0":
        return False
    try:
        from fpga_serve.hw.twin import kernels  # noqa: F401
    except Exception as exc:  # numba missing, or no writable cache (set NUMBA_CACHE_DIR)
        log.warning("twin native path unavailable (%s): using the numpy path", exc)
        return False
    from fpga_serve.hw.twin.gemm import exact_here

    return exact_here()


class NativePlan:
    """Program -> steps over offset-byte NHWC buffers; ``run`` takes and returns int8."""

    def __init__(self, program: Program) -> None:
        from fpga_serve.hw.twin import kernels

        self.program = program
        self._k = kernels
        self.steps: list[tuple[Instr, Step]] = [(i, self._step(i)) for i in program.instrs]
        self._idle = threading.Lock()
        self._kept: dict[int, np.ndarray] = {}
        self._kept_n = 0

    def run(
        self, x: np.ndarray, on_step: Callable[[Instr, float], None] | None = None
    ) -> np.ndarray:
        n = x.shape[0]
        if self._idle.acquire(blocking=False):  # no other run is using the kept buffers
            try:
                return self._run(self._kept_buffers(n), x, on_step)
            finally:
                self._idle.release()
        return self._run(self._new_buffers(n), x, on_step)

    def _new_buffers(self, n: int) -> dict[int, np.ndarray]:
        return {
            i: np.full((n, b.height, b.width, b.channels), 128, np.uint8)
            for i, b in enumerate(self.program.buffers)
        }

    def _kept_buffers(self, n: int) -> dict[int, np.ndarray]:
        """Buffers kept from the last run of this batch size, reset to the spec's initial zeros
        (128 as offset bytes): a fresh allocation of large arrays costs a page fault per 4 KiB
        (6.6 ms for ResNet-50 224's 16.5 MB), a fill does not. Kept only while they take at most
        REUSE_BYTES, so an idle plan holds no more than that."""
        if self._kept_n == n:
            for buf in self._kept.values():
                buf.fill(128)
            return self._kept
        bufs = self._new_buffers(n)
        if sum(b.nbytes for b in bufs.values()) <= REUSE_BYTES:
            self._kept, self._kept_n = bufs, n
        return bufs

    def _run(
        self,
        bufs: dict[int, np.ndarray],
        x: np.ndarray,
        on_step: Callable[[Instr, float], None] | None,
    ) -> np.ndarray:
        inp = self.program.input
        bufs[inp.buffer][..., inp.offset : inp.offset + inp.channels] = x.view(np.uint8) ^ 0x80
        for instr, step in self.steps:
            start = time.perf_counter()
            step(bufs)
            if on_step is not None:
                on_step(instr, time.perf_counter() - start)
        out = self.program.output
        res = bufs[out.buffer][..., out.offset : out.offset + out.channels] ^ 0x80
        return np.ascontiguousarray(res).view(np.int8)

    # Steps -----------------------------------------------------------------------------

    def _step(self, instr: Instr) -> Step:
        builders = {
            Opcode.CONV: self._conv,
            Opcode.MAXPOOL: self._maxpool,
            Opcode.AVGPOOL: self._avgpool,
            Opcode.GLOBAL_AVGPOOL: self._global_avgpool,
            Opcode.ADD: self._add,
            Opcode.SCALE_SHIFT: self._scale_shift,
        }
        return builders[instr.op](instr)

    def _geometry(self, instr: Instr) -> tuple[int, int]:
        out = self.program.buffer(instr.output)
        return out.height, out.width

    def _conv(self, instr: Instr) -> Step:
        from fpga_serve.hw.twin.gemm import Int8Gemm

        w = self.program.weights
        weight = w[instr.weight]
        kh, kw, cin, cout = weight.shape
        gemm = Int8Gemm(weight.reshape(kh * kw * cin, cout))
        bias = w[instr.bias].astype(np.int64)
        mult = w[instr.multiplier].astype(np.int64)
        shift = w[instr.shift].astype(np.int64)
        half = _half(shift)
        low = 0 if instr.relu else -128
        src, dst = instr.inputs[0], instr.output
        ho, wo = self._geometry(instr)
        top, _, left, _ = instr.pad
        src_buf = self.program.buffer(src)
        direct = (
            kh == kw == 1
            and instr.stride == 1
            and src.offset == 0
            and src.channels == src_buf.channels
            and not any(instr.pad)
        )
        k = self._k

        fused = self._fused_add(instr) if instr.residual is not None else None

        def step(bufs: dict[int, np.ndarray]) -> None:
            x = bufs[src.buffer]
            rows = x.shape[0] * ho * wo
            if direct:
                cols = x.reshape(rows, cin)
            else:
                cols = np.empty((rows, kh * kw * cin), np.uint8)
                _split(
                    k.im2col,
                    rows,
                    x,
                    src.offset,
                    cin,
                    kh,
                    kw,
                    instr.stride,
                    top,
                    left,
                    ho,
                    wo,
                    cols,
                )
            acc = gemm(cols)
            if fused is None:
                out = bufs[dst.buffer]
                out2 = out.reshape(-1, out.shape[-1])
                _split(k.requant, rows, acc, bias, mult, half, shift, low, out2, dst.offset)
                return
            mine = np.empty((rows, cout), np.uint8)  # the CONV's own result, then the ADD
            _split(k.requant, rows, acc, bias, mult, half, shift, low, mine, 0)
            fused(bufs, mine, 0)

        return step

    def _fused_add(self, instr: Instr) -> Callable[[dict[int, np.ndarray], np.ndarray, int], None]:
        """A fused ADD: ADD(the op's result, residual), exactly an ADD instruction."""
        assert instr.residual is not None
        w = self.program.weights
        m = w[instr.add_multiplier]
        shift = np.int64(w[instr.add_shift][0])
        return self._add_rows(
            instr.residual, instr.output, np.int64(m[0]), np.int64(m[1]),
            np.int64(1) << (shift - 1), shift, instr.add_relu,
        )  # fmt: skip

    def _add_rows(
        self,
        b: TensorRef,
        dst: TensorRef,
        m0: np.int64,
        m1: np.int64,
        half: np.int64,
        shift: np.int64,
        relu: bool,
    ) -> Callable[[dict[int, np.ndarray], np.ndarray, int], None]:
        """dst = ADD(a, b) where a comes as [rows, C] rows at a channel offset."""
        low = np.int64(0 if relu else -128)
        k = self._k

        def run(bufs: dict[int, np.ndarray], va: np.ndarray, a_offset: int) -> None:
            vb, out = bufs[b.buffer], bufs[dst.buffer]
            rows = out.shape[0] * out.shape[1] * out.shape[2]
            _split(
                k.add,
                rows,
                va.reshape(rows, -1),
                a_offset,
                vb.reshape(rows, -1),
                b.offset,
                dst.channels,
                m0,
                m1,
                half,
                shift,
                low,
                out.reshape(rows, -1),
                dst.offset,
            )

        return run

    def _window(self, instr: Instr, kernel: Callable[..., None], *params: Any) -> Step:
        """A pooling step: kernel(x, c_off, c_n, kh, kw, stride, top, left, *params, ho, wo,
        out, o_off, r0, r1) over the output rows."""
        src, dst = instr.inputs[0], instr.output
        ho, wo = self._geometry(instr)
        top, _, left, _ = instr.pad
        geometry = (src.offset, src.channels, *instr.kernel, instr.stride, top, left)

        def step(bufs: dict[int, np.ndarray]) -> None:
            x, out = bufs[src.buffer], bufs[dst.buffer]
            _split(kernel, x.shape[0] * ho * wo, x, *geometry, *params, ho, wo, out, dst.offset)

        return step

    def _maxpool(self, instr: Instr) -> Step:
        return self._window(instr, self._k.maxpool, np.uint8(instr.pad_value + 128))

    def _shift(self, instr: Instr) -> tuple[np.int64, np.int64]:
        """The one shift S of a non-CONV op, with its rounding term 2^(S-1)."""
        shift = np.int64(self.program.weights[instr.shift][0])
        return np.int64(1) << (shift - 1), shift

    def _scalar_requant(self, instr: Instr) -> tuple[np.int64, np.int64, np.int64]:
        return np.int64(self.program.weights[instr.multiplier][0]), *self._shift(instr)

    def _avgpool(self, instr: Instr) -> Step:
        return self._window(instr, self._k.avgpool, *self._scalar_requant(instr))

    def _global_avgpool(self, instr: Instr) -> Step:
        src, dst = instr.inputs[0], instr.output
        mult, half, shift = self._scalar_requant(instr)
        k = self._k

        def step(bufs: dict[int, np.ndarray]) -> None:
            k.global_avgpool(
                bufs[src.buffer],
                src.offset,
                src.channels,
                mult,
                half,
                shift,
                bufs[dst.buffer],
                dst.offset,
            )

        return step

    def _add(self, instr: Instr) -> Step:
        a, b = instr.inputs
        m = self.program.weights[instr.multiplier]
        half, shift = self._shift(instr)
        run = self._add_rows(
            b, instr.output, np.int64(m[0]), np.int64(m[1]), half, shift, instr.relu
        )

        def step(bufs: dict[int, np.ndarray]) -> None:
            run(bufs, bufs[a.buffer], a.offset)

        return step

    def _scale_shift(self, instr: Instr) -> Step:
        src, dst = instr.inputs[0], instr.output
        w = self.program.weights
        mult = w[instr.multiplier].astype(np.int64)
        bias = w[instr.bias].astype(np.int64)
        half, shift = self._shift(instr)
        low = np.int64(0 if instr.relu else -128)
        k = self._k

        def step(bufs: dict[int, np.ndarray]) -> None:
            x, out = bufs[src.buffer], bufs[dst.buffer]
            rows = out.shape[0] * out.shape[1] * out.shape[2]
            _split(
                k.scale_shift,
                rows,
                x.reshape(rows, -1),
                src.offset,
                dst.channels,
                mult,
                bias,
                half,
                shift,
                low,
                out.reshape(rows, -1),
                dst.offset,
            )

        return step
