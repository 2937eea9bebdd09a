"""The twin's native path: a program turned once into a list of compiled steps.

At load, on a CPU where the fused VNNI kernel passes its self-check (twin/vnni.py, VNNI), each
CONV becomes one call of it (GEMM and requantisation in registers, no int32 scratch, its patches
read in place: no gather), and where the CPU has AMX-INT8 and the AMX kernel passes its
self-check too (twin/amx.py, AMX), the CONVs it fits run on AMX tiles instead; else each CONV
gets its int8 GEMM (twin/gemm.py, weights packed once) and each op its requantisation constants
as int64 arrays (float64 scales for a CONV that FLOAT_REQUANT requantises in float64); at run
time a CONV step is a patch gather (one strided numpy copy of a window view into a scratch
matrix; none for a 1x1/1 CONV, whose input rows are the GEMM's rows), the GEMM into a kept int32
scratch and one requantisation pass that also does a fused residual ADD (twin/kernels.py). Where
the GEMM's exact form is the slow u8 x u8 one, a CONV whose inputs are proven >= 0
(nonnegative_inputs) multiplies them as plain bytes in gemm.PLAIN's form, gathered or copied
with their top bit cleared (PLAIN_GEMM). Activations stay offset bytes (v + 128) from input to
output, in buffers kept from run to run; only the buffers a run reads before writing are reset.
Each step is *bound* to the buffers of a run (every view, kernel argument and GEMM I/O binding
made once), and a plan's kept buffers keep their bound steps, so a run on them is one call per
step with no per-run allocation or view building. A batch runs in passes of as many images as
keep a CONV's scratch within PASS_BYTES. Element-wise passes above share.SPLIT_ELEMENTS are
split over the CPU's cores by output rows. The result equals the reference (the spec) bit for
bit: tests/hw/test_twin_native.py checks it op by op and on whole programs.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fpga_serve.core.isa import Instr, Opcode, Program, TensorRef
from fpga_serve.core.windows import windows
from fpga_serve.hw.twin.executor import KERNELS
from fpga_serve.hw.twin.share import bind as share

log = logging.getLogger(__name__)

Buffers = dict[int, np.ndarray]
Step = Callable[[Buffers], None]
Bound = Callable[[], None]
"""A step bound to one run's buffers."""
Bind = Callable[[Buffers], Bound]

REUSE_BYTES = 512 << 20
"""Most bytes of activation buffers a plan keeps between runs (they are made for one pass,
PASS_BYTES: ResNet-50 224, 2 images, 43 MB). At 64 MiB, before passes, batches above 3 were
allocated afresh each run and their page faults made batch 16 slower per image than batch 1."""
COLS = -1
"""The key of the shared im2col scratch among a run's buffers (program buffers are 0..)."""
ACC = -2
"""The key of the shared int32 GEMM output scratch (flat; each CONV uses a [rows, Cout] view)."""
BLOCK_BYTES = 2 << 20
"""About the bytes of one block of a blocked CONV's patch matrix (see NativePlan._im2col).
With bound GEMM calls, 2 MB blocks beat 512 KB ones on VGG-16 224 (fastest of 11-15 runs in
turns, load 1.6-2.1: 25.0 -> 24.1 ms and 25.9 -> 24.4 ms; 4 and 8 MB within 2% of 2 MB)."""
BLOCKED_BYTES = 4 << 20
"""Patch matrices above this many bytes per image are made in blocks."""
PASS_BYTES = 12 << 20
"""About the most bytes of scratch (patch matrix and int32 accumulators) one pass of the
program may need: a larger batch runs as passes of fewer images (``images_per_pass``), so that
what a CONV gathers, multiplies and requantises stays in the last-level cache (32 MB on the
2-core VM) instead of streaming a whole batch's (a batch of 16 of ResNet-50 224: 81 MB).
Batches of 16, in passes against whole, paired in turns in one process: ResNet-50 224 (5 MB
an image; passes of 2) 1.29x the images per second, DenseNet-121 224 (6.8 MB; 1) 1.22x, VGG-16
224 (16.5 MB; 1) 1.29x, ResNet-50 128 (1.7 MB; 7) 1.02x (bench/README.md, Table 2)."""


FLOAT_REQUANT: bool | None = None
"""Whether CONVs and SCALE_SHIFTs requantise with the float64 kernels where those are exact
(a CONV's every S <= kernels.FLOAT_MAX_SHIFT and a fused ADD's or SCALE_SHIFT's shift <=
kernels.FLOAT_MAX_SUM_SHIFT): None decides by the CPU (kernels.float_requant_pays); tests set
it to run both forms."""


VNNI: bool | None = None
"""Whether CONVs run as the fused VNNI kernel (twin/vnni.py: GEMM and requantisation in one
compiled pass) instead of the int8 GEMM and a requantisation pass: None decides by the CPU
(vnni.available); tests set it to run both."""


PLAIN_GEMM: bool | None = None
"""Whether the GEMM path's CONVs whose inputs are proven non-negative (nonnegative_inputs)
multiply plain bytes in gemm.PLAIN's form: None decides by the CPU (gemm.plain_form); tests
set it to run both."""


AMX: bool | None = None
"""Whether the CONVs that fit (NativePlan._amx_fits) run as the AMX kernel (twin/amx.py) where
the fused VNNI kernel runs: None decides by the CPU (amx.available); tests set it."""


def fused_amx() -> bool:
    """AMX, or whether this CPU runs the AMX kernel exactly (amx.available) when None; never
    without the VNNI kernel, whose emitter requantises the tiles."""
    if not fused_vnni():
        return False
    if AMX is not None:
        return AMX
    from fpga_serve.hw.twin import amx

    return amx.available()


def fused_vnni() -> bool:
    """VNNI, or whether this CPU runs the fused kernel exactly (vnni.available) when None."""
    if VNNI is not None:
        return VNNI
    from fpga_serve.hw.twin import vnni

    return vnni.available()


def float_requant() -> bool:
    """FLOAT_REQUANT, or this CPU's answer (kernels.float_requant_pays) when it is None."""
    if FLOAT_REQUANT is not None:
        return FLOAT_REQUANT
    from fpga_serve.hw.twin import kernels

    return bool(kernels.float_requant_pays())


def plain_gemm() -> bool:
    """PLAIN_GEMM, or whether gemm.plain_form is exact and pays here when it is None."""
    if PLAIN_GEMM is not None:
        return PLAIN_GEMM
    from fpga_serve.hw.twin.gemm import plain_form

    return plain_form() is not None


def _kernel_threads() -> int | None:
    """The threads vnni's kernels should use when that is not numba's default (the twin's
    ``twin_threads`` setting), else None."""
    import numba

    from fpga_serve.hw.twin.gemm import twin_threads

    default = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    threads = min(twin_threads(), default)
    return None if threads == default else threads


def _on_threads(threads: int, kernel: Bound) -> None:
    """kernel() with numba's threads set to ``threads`` for this call (numba keeps the setting
    per calling thread: it is put back, so a later plan with the default finds the default)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        kernel()
    finally:
        numba.set_num_threads(before)


_OFFSET = np.uint8(0x80)
"""An offset byte's top bit: u ^ _OFFSET is u - 128 where u >= 128 (a value v >= 0)."""


def _copy(to: np.ndarray, part: np.ndarray) -> Bound:
    return functools.partial(np.copyto, to, part)


def _plain_copy(to: np.ndarray, part: np.ndarray, cols: np.ndarray) -> Bound:
    """A gather of offset bytes >= 128 into ``to`` as plain bytes (gemm.PLAIN) in ``cols``,
    the contiguous matrix ``to`` views: a strided copy, then the top bits cleared in place
    (one XOR of the strided source into ``to`` took 1.9x the time on ResNet-50's 3x3 CONVs)."""

    def gather() -> None:
        np.copyto(to, part)
        np.bitwise_xor(cols, _OFFSET, out=cols)

    return gather


def _after_copies(copies: list[tuple[np.ndarray, np.ndarray]], run: Bound) -> Bound:
    """A step that makes its staging copies (destination, source), then runs."""

    def step() -> None:
        for to, part in copies:
            np.copyto(to, part)
        run()

    return step


def _half(shift: np.ndarray) -> np.ndarray:
    s = shift.astype(np.int64)
    return np.int64(1) << (s - 1)


def reset_buffers(program: Program) -> set[int]:
    """The buffers a run may read (an op's input or residual, or the program's output) in
    channels no earlier op of the run has written: they must start at the spec's zeros. Every
    op writes all N*H*W positions of its output's channel range, so the rest need no reset."""
    written = {i: np.zeros(b.channels, bool) for i, b in enumerate(program.buffers)}
    reset: set[int] = set()

    def read(ref: TensorRef) -> None:
        if not written[ref.buffer][ref.offset : ref.offset + ref.channels].all():
            reset.add(ref.buffer)

    written[program.input.buffer][program.input.offset :][: program.input.channels] = True
    for instr in program.instrs:
        for ref in (*instr.inputs, *([instr.residual] if instr.residual else [])):
            read(ref)
        written[instr.output.buffer][instr.output.offset :][: instr.output.channels] = True
    read(program.output)
    return reset


def _clamps(instr: Instr, w: list[np.ndarray], inputs_nonnegative: bool) -> bool:
    """Whether every value ``instr`` writes is >= 0: after a ReLU, or (pools) a max or a
    non-negative multiple of non-negative inputs (MAXPOOL padding with a value >= 0; the
    average pools pad with zeros)."""
    if instr.op is Opcode.CONV and instr.residual is not None:
        return instr.add_relu  # the fused ADD comes last
    if instr.relu:
        return True
    if not inputs_nonnegative:
        return False
    if instr.op is Opcode.MAXPOOL:
        return not any(instr.pad) or instr.pad_value >= 0
    if instr.op in (Opcode.AVGPOOL, Opcode.GLOBAL_AVGPOOL):
        return bool(np.all(w[instr.multiplier] >= 0))
    return False


def nonnegative_inputs(program: Program) -> set[int]:
    """The indices of the CONVs whose every input value is >= 0 on every run: each channel
    they read was last written by an op that clamps at 0 (``_clamps``), or not yet written in
    the run (the spec's zeros; reset_buffers). The program's input may be negative."""
    nonneg = {i: np.ones(b.channels, bool) for i, b in enumerate(program.buffers)}
    inp = program.input
    nonneg[inp.buffer][inp.offset : inp.offset + inp.channels] = False

    def proven(ref: TensorRef) -> bool:
        return bool(nonneg[ref.buffer][ref.offset : ref.offset + ref.channels].all())

    found = set()
    for index, instr in enumerate(program.instrs):
        reads = all(proven(ref) for ref in instr.inputs)
        if instr.op is Opcode.CONV and reads:
            found.add(index)
        out = instr.output
        clamped = _clamps(instr, program.weights, reads)
        nonneg[out.buffer][out.offset : out.offset + out.channels] = clamped
    return found


def available() -> bool:
    """numba present and ONNX Runtime's int8 GEMM exact on this CPU (``twin_path`` numpy, or
    ``TwinDevice(native=False)``, chooses the numpy path whatever this says)."""
    try:
        from fpga_serve.hw.twin import kernels  # noqa: F401
    except Exception as exc:  # numba missing, or no writable cache (set NUMBA_CACHE_DIR)
        log.warning("twin native path unavailable (%s): using the numpy path", exc)
        return False
    from fpga_serve.hw.twin.gemm import exact_here

    return exact_here()


def _unbound(bind: Bind) -> Step:
    """A step on any buffers: bound to them and run (tests run steps on buffers of their own)."""

    def step(bufs: Buffers) -> None:
        bind(bufs)()

    return step


class NativePlan:
    """Program -> steps over offset-byte NHWC buffers; ``run`` takes and returns int8."""

    def __init__(self, program: Program) -> None:
        from fpga_serve.hw.twin import kernels

        self.program = program
        self._k = kernels
        # Scratch arrays a run needs besides the program's buffers, under negative keys of the
        # same dict: COLS (one flat im2col matrix shared by all CONVs), ACC (the GEMMs' int32
        # output) and each padded CONV's staging copy of its input. Shapes per image, with
        # their dtypes; the staging borders stay ZERO.
        self._scratch: dict[int, tuple[tuple[int, ...], type]] = {}
        self._gathers: list[Gather] = []  # the gathering CONVs' patch gathers, in order
        # The CONVs (by identity) whose GEMMs multiply plain bytes (gemm.PLAIN): inputs >= 0.
        self._plain = (
            {id(program.instrs[i]) for i in nonnegative_inputs(program)}
            if not fused_vnni() and plain_gemm()
            else set()
        )
        self._binds: list[Bind] = [self._step(i) for i in program.instrs]
        self.steps: list[tuple[Instr, Step]] = [
            (i, _unbound(b)) for i, b in zip(program.instrs, self._binds, strict=True)
        ]
        self._reset = sorted(reset_buffers(program))
        per_image = sum(
            np.dtype(dtype).itemsize * shape[0]
            for key, (shape, dtype) in self._scratch.items()
            if key in (COLS, ACC)
        )
        self.images_per_pass = max(1, PASS_BYTES // max(1, per_image))
        self._idle = threading.Lock()
        self._kept: dict[int, np.ndarray] = {}  # buffers for a batch of _kept_n
        self._kept_n = 0
        self._bound: dict[int, tuple[Buffers, list[Bound]]] = {}  # batch size: its views, steps

    def run(
        self, x: np.ndarray, on_step: Callable[[Instr, float], None] | None = None
    ) -> np.ndarray:
        """The program on a batch of int8 inputs, in passes of at most ``images_per_pass``
        images (the program never mixes images, so the passes' outputs are the batch's)."""
        step = self.images_per_pass
        if x.shape[0] <= step:
            return self._pass(x, on_step)
        return np.concatenate(
            [self._pass(x[i : i + step], on_step) for i in range(0, x.shape[0], step)]
        )

    def _pass(self, x: np.ndarray, on_step: Callable[[Instr, float], None] | None) -> np.ndarray:
        n = x.shape[0]
        if self._idle.acquire(blocking=False):  # no other run is using the kept buffers
            try:
                return self._run(*self._kept_buffers(n), x, on_step)
            finally:
                self._idle.release()
        bufs = self._new_buffers(n)
        return self._run(bufs, [b(bufs) for b in self._binds], x, on_step)

    def _new_buffers(self, n: int) -> dict[int, np.ndarray]:
        bufs = {
            i: np.full((n, b.height, b.width, b.channels), 128, np.uint8)
            for i, b in enumerate(self.program.buffers)
        }
        for key, (shape, dtype) in self._scratch.items():
            bufs[key] = np.full((n, *shape), 128, dtype)
        return bufs

    def _kept_buffers(self, n: int) -> tuple[dict[int, np.ndarray], list[Bound]]:
        """Buffers kept from run to run with the steps bound to them, the ones a run reads
        before it writes them reset to the spec's initial zeros (128 as offset bytes;
        reset_buffers): a fresh allocation of large arrays costs a page fault per 4 KiB (6.6 ms
        for ResNet-50 224's 16.5 MB), a fill does not, and most buffers need none. They are
        made for the largest batch seen; a smaller batch runs on views of their first images,
        with steps bound once per batch size (dynamic batching mixes sizes). Kept only while
        they take at most REUSE_BYTES, so an idle plan holds no more."""
        if n > self._kept_n:
            bufs = self._new_buffers(n)
            if sum(b.nbytes for b in bufs.values()) > REUSE_BYTES:
                return bufs, [b(bufs) for b in self._binds]
            self._kept, self._kept_n, self._bound = bufs, n, {}
        if n not in self._bound:
            views = {k: v[:n] for k, v in self._kept.items()}
            self._bound[n] = views, [b(views) for b in self._binds]
        views, bound = self._bound[n]
        for i in self._reset:
            views[i].fill(128)
        return views, bound

    def _run(
        self,
        bufs: dict[int, np.ndarray],
        bound: list[Bound],
        x: np.ndarray,
        on_step: Callable[[Instr, float], None] | None,
    ) -> np.ndarray:
        inp = self.program.input
        to = bufs[inp.buffer][..., inp.offset : inp.offset + inp.channels]
        np.bitwise_xor(x.view(np.uint8), np.uint8(0x80), out=to)  # int8 -> offset bytes, in place
        if on_step is None:
            for step in bound:
                step()
        else:
            for instr, step in zip(self.program.instrs, bound, strict=True):
                start = time.perf_counter()
                step()
                on_step(instr, time.perf_counter() - start)
        out = self.program.output
        res = bufs[out.buffer][..., out.offset : out.offset + out.channels] ^ 0x80
        return np.ascontiguousarray(res).view(np.int8)

    # Steps -----------------------------------------------------------------------------

    def _step(self, instr: Instr) -> Bind:
        """The step of one instruction, built by ``_`` + its kernel's name (executor.KERNELS)."""
        build: Callable[[Instr], Bind] = getattr(self, "_" + KERNELS[instr.op])
        return build(instr)

    def _geometry(self, instr: Instr) -> tuple[int, int]:
        out = self.program.buffer(instr.output)
        return out.height, out.width

    def _need(self, key: int, elements: int, dtype: type) -> None:
        """A flat scratch array of at least ``elements`` per image under ``key``."""
        have = self._scratch.get(key, ((0,), dtype))[0][0]
        self._scratch[key] = ((max(have, elements),), dtype)

    def _conv(self, instr: Instr) -> Bind:
        if fused_vnni():
            return self._conv_vnni(instr)
        from fpga_serve.hw.twin.gemm import PLAIN, Int8Gemm

        w = self.program.weights
        weight = w[instr.weight]
        kh, kw, cin, cout = weight.shape
        plain = id(instr) in self._plain  # multiplies v = u ^ 0x80, copied into COLS
        gemm = Int8Gemm(weight.reshape(kh * kw * cin, cout), PLAIN if plain else None)
        floating = self._floating(instr)
        requant = self._conv_requant(instr, floating)
        src, dst = instr.inputs[0], instr.output
        ho, wo = self._geometry(instr)
        src_buf = self.program.buffer(src)
        whole = src.offset == 0 and src.channels == src_buf.channels
        direct = kh == kw == 1 and instr.stride == 1 and whole and not any(instr.pad)
        gather = None if direct else self._im2col(instr, src_buf.height, src_buf.width)
        if direct and plain:
            self._need(COLS, ho * wo * cin, np.uint8)
        self._need(ACC, (ho * wo if gather is None else gather.rows) * cout, np.int32)
        k = self._k
        fused = self._fused_add(instr, floating) if instr.residual is not None else None
        alone = k.requant_f64 if floating else k.requant

        def finish(bufs: Buffers, acc: np.ndarray, r0: int, r1: int) -> Bound:
            """Requantise the accumulators of output rows [r0, r1) into the output buffer."""
            out = bufs[dst.buffer]
            out2 = out.reshape(-1, out.shape[-1])[r0:r1]
            if fused is None:
                return share(alone, r1 - r0, cout, acc, *requant, out2, dst.offset)
            return fused(bufs, r0, r1, acc, *requant, out2)  # requantisation and ADD, one pass

        def bind(bufs: Buffers) -> Bound:
            acc_flat = bufs[ACC].reshape(-1)
            if gather is None:
                x = bufs[src.buffer]
                rows = x.shape[0] * ho * wo
                acc = acc_flat[: rows * cout].reshape(rows, cout)
                x_rows = x.reshape(rows, cin)
                if plain:
                    cols = bufs[COLS].reshape(-1)[: rows * cin].reshape(rows, cin)
                    multiply, done = gemm.bind(cols, acc), finish(bufs, acc, 0, rows)

                    def plain_step() -> None:
                        np.bitwise_xor(x_rows, _OFFSET, out=cols)
                        multiply()
                        done()

                    return plain_step
                multiply, done = gemm.bind(x_rows, acc), finish(bufs, acc, 0, rows)

                def direct_step() -> None:
                    multiply()
                    done()

                return direct_step
            staging, blocks = gather(bufs)
            calls = []
            for to, part, cols, r0, r1 in blocks:  # gathered, multiplied, requantised in turn
                acc = acc_flat[: (r1 - r0) * cout].reshape(r1 - r0, cout)
                gathered = _plain_copy(to, part, cols) if plain else _copy(to, part)
                calls.append((gathered, gemm.bind(cols, acc), finish(bufs, acc, r0, r1)))

            def gather_step() -> None:
                for to, part in staging:
                    np.copyto(to, part)
                for gathered, multiply, done in calls:
                    gathered()
                    multiply()
                    done()

            return gather_step

        return bind

    def _conv_vnni(self, instr: Instr) -> Bind:
        """A CONV (and its fused ADD) as vnni.conv, its patches read in place: over the rows of
        its input buffer (a 1x1/1 CONV, any channel slice), else tap by tap (``_conv_taps``).
        One compiled call a CONV, its tiles shared over the twin's threads."""
        from fpga_serve.hw.twin import vnni

        if self._amx_fits(instr):
            return self._conv_amx(instr)
        kh, kw, cin, _ = self.program.weights[instr.weight].shape
        wide = -(-cin // 4) * 4  # each tap read as whole groups of four channels
        consts = self._kernel_consts(instr, wide, vnni.Packed)
        src = instr.inputs[0]
        ho, wo = self._geometry(instr)
        src_buf = self.program.buffer(src)
        threads = _kernel_threads()

        def call(bufs: Buffers, a: np.ndarray, rb: np.ndarray, taps: np.ndarray) -> Bound:
            head = (a, rb, len(rb), taps, wide // 4, *consts)
            kernel = functools.partial(vnni.conv, *head, *self._kernel_outputs(bufs, instr))
            return kernel if threads is None else functools.partial(_on_threads, threads, kernel)

        # Rows are read four bytes at a time up to 4 * k4 bytes: in place only where that stays
        # inside a row (or, in taps, a pixel), so no read passes a buffer's end.
        pointwise = kh == kw == 1 and instr.stride == 1 and not any(instr.pad)
        if pointwise and src.offset + wide <= src_buf.channels:

            def bind_rows(bufs: Buffers) -> Bound:
                x = bufs[src.buffer]
                rb = vnni.rows_of(x.shape[0] * ho * wo, x.shape[-1], src.offset)
                return call(bufs, x.reshape(-1), rb, vnni.one_tap())

            return bind_rows
        return self._conv_taps(instr, src_buf.height, src_buf.width, wide, call)

    def _kernel_consts(self, instr: Instr, wide: int, pack: Callable[..., Any]) -> tuple[Any, ...]:
        """A compiled kernel's arguments after its patches': the weights with ZERO channels
        past Cin up to ``wide`` a tap, packed by ``pack`` (vnni.Packed or amx.Packed) with the
        requantisation constants, then the low clamp and Cout."""
        w = self.program.weights
        weight = w[instr.weight]
        cin, cout = weight.shape[2:]
        weight = np.pad(weight, ((0, 0), (0, 0), (0, wide - cin), (0, 0)))
        packed = pack(weight.reshape(-1, cout), w[instr.bias], w[instr.multiplier],
                      w[instr.shift])  # fmt: skip
        return (*packed.args(), np.int64(0 if instr.relu else -128), cout)

    def _kernel_outputs(self, bufs: Buffers, instr: Instr) -> tuple[Any, ...]:
        """A compiled kernel's last arguments: its output (flat, offset, stride) and the fused
        ADD's residual (flat, offset, stride), m0, m1, 2^(S2-1), S2, low and the flag; without
        an ADD the output again and vnni.NO_ADD."""
        from fpga_serve.hw.twin import vnni

        dst, res = instr.output, instr.residual
        out = bufs[dst.buffer]
        head = (out.reshape(-1), dst.offset, out.shape[-1])
        if res is None:
            return (*head, out.reshape(-1), 0, out.shape[-1], *vnni.NO_ADD, False)
        w = self.program.weights
        m, s2 = w[instr.add_multiplier], np.int64(w[instr.add_shift][0])
        low2 = np.int64(0 if instr.add_relu else -128)
        add = (np.int64(m[0]), np.int64(m[1]), np.int64(1) << (s2 - 1), s2, low2)
        b = bufs[res.buffer]
        return (*head, b.reshape(-1), res.offset, b.shape[-1], *add, True)

    def _amx_fits(self, instr: Instr) -> bool:
        """Whether a CONV runs as the AMX kernel: where it is chosen (fused_amx), stride 1 (or
        a 1x1 without padding, on a subsampled copy of its input), Cin at most 1.5x past whole
        tiles of K (``_amx_wide``: 96 and 160, not the stem's 3) and at least one block of 32
        virtual rows in an image (amx.virtual_rows)."""
        from fpga_serve.hw.twin import amx

        cin = self.program.weights[instr.weight].shape[2]
        if not fused_amx() or 2 * self._amx_wide(cin) > 3 * cin:
            return False
        ho, wo = self._geometry(instr)
        if instr.stride != 1:
            if instr.kernel != (1, 1) or any(instr.pad):
                return False
            return ho * wo >= amx.ROWS
        src_buf = self.program.buffer(instr.inputs[0])
        top, bottom, left, right = instr.pad
        image = (src_buf.height + top + bottom, src_buf.width + left + right)
        return amx.virtual_rows(1, ho, wo, image)[0] >= amx.ROWS

    @staticmethod
    def _amx_wide(cin: int) -> int:
        """The bytes of a tap the AMX kernel reads: Cin rounded up to whole tiles of K (64)."""
        from fpga_serve.hw.twin import amx

        return -(-cin // amx.CHUNK) * amx.CHUNK

    def _conv_amx(self, instr: Instr) -> Bind:
        """A CONV (and its fused ADD) that ``_amx_fits``, as amx.conv: its windows read in place
        through virtual rows, from the input buffer when each tap's ``wide`` bytes stay in its
        pixel, else from a staging copy with ZERO borders and ZERO channels past Cin; a strided
        1x1 reads a copy of the pixels it samples (a strided view copied: ResNet-50's
        projections, 0.05-0.2 MB). The weights are zero past Cin, so the bytes read there add
        nothing. One compiled call a CONV, its blocks shared over the twin's threads."""
        from fpga_serve.hw.twin import amx, vnni

        kh, kw, cin, _ = self.program.weights[instr.weight].shape
        wide = self._amx_wide(cin)
        consts = self._kernel_consts(instr, wide, amx.Packed)
        src = instr.inputs[0]
        ho, wo = self._geometry(instr)
        src_buf = self.program.buffer(src)
        h, wd = src_buf.height, src_buf.width
        top, _, left, _ = instr.pad
        step = instr.stride
        stage: int | None = None
        if step != 1 or any(instr.pad) or src.offset + wide > src_buf.channels:
            if step != 1:  # a 1x1 without padding: the sampled pixels, as many as outputs
                h, wd = ho, wo
            stage = self._stage(instr, h, wd, wide)
        threads = _kernel_threads()
        cfg = amx.tile_config()

        def bind(bufs: Buffers) -> Bound:
            x = bufs[src.buffer]
            copies, image, offset = [], x, src.offset
            if stage is not None:
                image, offset = bufs[stage], 0
                part = x[:, ::step, ::step, src.offset : src.offset + cin]
                copies.append((image[:, top : top + h, left : left + wd, :cin], part))
            _, hs, ws, cs = image.shape
            count, pix = amx.virtual_rows(x.shape[0], ho, wo, (hs, ws))
            taps = vnni.window_taps(ws, cs, (kh, kw))
            head = (cfg, image.reshape(-1), offset, cs, count, taps, wide // amx.CHUNK, *consts)
            kernel = functools.partial(amx.conv, *head, pix, *self._kernel_outputs(bufs, instr))
            run = kernel if threads is None else functools.partial(_on_threads, threads, kernel)
            return _after_copies(copies, run)

        return bind

    def _conv_taps(
        self, instr: Instr, h: int, w: int, wide: int, call: Callable[..., Bound]
    ) -> Bind:
        """A CONV whose patches vnni.conv reads in place, tap by tap, ``wide`` channels a
        pixel (Cin rounded up to a multiple of four): from the input buffer, or from a staging
        copy of it with ZERO borders and ZERO channels past Cin (a padding CONV, or a Cin that
        is not a multiple of four: the stem's 3). No patch matrix is made."""
        from fpga_serve.hw.twin import vnni

        src = instr.inputs[0]
        cin = src.channels
        kh, kw = instr.kernel
        top, _, left, _ = instr.pad
        ho, wo = self._geometry(instr)
        stage = self._staging(instr, h, w, cin, wide)

        def bind(bufs: Buffers) -> Bound:
            x = bufs[src.buffer]
            copies, image, offset = [], x, src.offset
            if stage is not None:
                image, offset = bufs[stage], 0
                to = image[:, top : top + h, left : left + w]
                part = x[..., src.offset : src.offset + cin]
                # Widened, a channel at a time: numpy copies 3-byte pixels 5x slower than three
                # strided planes (the stem: 0.43 ms against 0.09).
                planes = [slice(c, c + 1) for c in range(cin)] if wide > cin else [slice(None)]
                copies += [(to[..., p], part[..., p]) for p in planes]
            _, hs, ws, cs = image.shape
            rb, taps = vnni.window_rows(x.shape[0], ho, wo, instr.stride, (hs, ws, cs), offset,
                                        (kh, kw))  # fmt: skip
            return _after_copies(copies, call(bufs, image.reshape(-1), rb, taps))

        return bind

    def _staging(self, instr: Instr, h: int, w: int, c: int, wide: int | None = None) -> int | None:
        """The scratch key of a CONV's staging copy of its input: h x w x c inside borders that
        stay ZERO (the spec's zero padding), ``wide`` channels a pixel (c unless given; those
        past c stay ZERO too). None where the copy would be the input itself."""
        wide = c if wide is None else wide
        if not any(instr.pad) and wide == c:
            return None
        return self._stage(instr, h, w, wide)

    def _stage(self, instr: Instr, h: int, w: int, wide: int) -> int:
        """A new staging scratch for an h x w image of ``wide`` channels inside ``instr``'s
        padding (all of it staying ZERO until copied into), and its key."""
        top, bottom, left, right = instr.pad
        stage = -3 - sum(1 for key in self._scratch if key <= -3)
        self._scratch[stage] = ((h + top + bottom, w + left + right, wide), np.uint8)
        return stage

    def _im2col(self, instr: Instr, h: int, w: int) -> Gather:
        """A Gather (bufs -> staging copies, blocks): each block a (destination, source) copy
        that gathers some output rows' patches into the shared COLS scratch, the [rows,
        kh*kw*c] patch matrix it fills (K ordered kh, kw, c like the weights) and its output
        rows. A copy is one strided numpy copy of a window view (each window row a run of kw*c
        contiguous bytes); a padding CONV first copies its input channels into a staging
        buffer whose borders stay ZERO (the spec's zero padding). A patch matrix larger than
        BLOCKED_BYTES per image is made in blocks of whole output rows of about BLOCK_BYTES,
        each multiplied and requantised while it is in the last-level cache (VGG-16's first
        CONVs: 29 MB; blocking ResNet-50's 1.8 MB ones too gained nothing measurable)."""
        src = instr.inputs[0]
        kh, kw = instr.kernel
        c = src.channels
        top, _, left, _ = instr.pad
        ho, wo = self._geometry(instr)
        k = kh * kw * c
        by = ho if ho * wo * k <= BLOCKED_BYTES else max(1, BLOCK_BYTES // (wo * k))
        self._need(COLS, by * wo * k, np.uint8)
        stage = self._staging(instr, h, w, c)

        def views(bufs: Buffers) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[Any]]:
            x = bufs[src.buffer][..., src.offset : src.offset + c]
            staging = []
            if stage is not None:
                staging.append((bufs[stage][:, top : top + h, left : left + w], x))
                x = bufs[stage]
            n = x.shape[0]
            win = windows(x, kh, kw, instr.stride).transpose(0, 1, 2, 4, 5, 3)
            flat = bufs[COLS].reshape(-1)
            spans = [(0, n, 0, ho)] if by == ho else [
                (i, i + 1, y, min(y + by, ho)) for i in range(n) for y in range(0, ho, by)
            ]  # fmt: skip
            blocks = []
            for i0, i1, y0, y1 in spans:
                rows = (i1 - i0) * (y1 - y0) * wo
                cols = flat[: rows * k]
                to = cols.reshape(i1 - i0, y1 - y0, wo, kh, kw, c)
                r0 = (i0 * ho + y0) * wo
                blocks.append((to, win[i0:i1, y0:y1], cols.reshape(rows, k), r0, r0 + rows))
            return staging, blocks

        self._gathers.append(Gather(views, by * wo))
        return self._gathers[-1]

    def _floating(self, instr: Instr) -> bool:
        """Whether this CONV requantises with the float64 kernels (FLOAT_REQUANT)."""
        w = self.program.weights
        if not float_requant() or int(np.max(w[instr.shift])) > self._k.FLOAT_MAX_SHIFT:
            return False
        return instr.residual is None or int(w[instr.add_shift][0]) <= self._k.FLOAT_MAX_SUM_SHIFT

    def _conv_requant(self, instr: Instr, floating: bool) -> tuple[Any, ...]:
        """A CONV's requantisation arguments: (bias, M, 2^(S-1), S, low) for kernels.requant,
        or (bias, M * 2^-S, low) for kernels.requant_f64."""
        w = self.program.weights
        bias, shift = w[instr.bias].astype(np.int32), w[instr.shift]
        low = 0 if instr.relu else -128
        if floating:
            scale = np.ldexp(w[instr.multiplier].astype(np.float64), -shift.astype(np.int32))
            return bias, scale, float(low)
        mult = w[instr.multiplier].astype(np.int32)
        return bias, mult, _half(shift), shift.astype(np.int64), low

    def _fused_add(self, instr: Instr, floating: bool) -> Callable[..., Bound]:
        """A fused ADD: ADD(the CONV's requantised result, residual), exactly an ADD
        instruction, computed in the CONV's requantisation pass (kernels.requant_add, or
        requant_add_f64 with a floating CONV)."""
        assert instr.residual is not None
        w = self.program.weights
        m = w[instr.add_multiplier]
        shift = np.int64(w[instr.add_shift][0])
        b, dst = instr.residual, instr.output
        k = self._k
        add: tuple[Any, ...]
        if floating:
            unit = math.ldexp(1.0, -int(shift))  # 2^-S2, exactly; a0, a1, c1 of requant_add_f64
            a1 = float(m[1]) * unit
            add = (float(m[0]) * unit, a1, 0.5 - 128 * a1)
            low: Any = 0.0 if instr.add_relu else -128.0
            kernel = k.requant_add_f64
        else:
            add = (np.int64(m[0]), np.int64(m[1]), np.int64(1) << (shift - 1), shift)
            low = np.int64(0 if instr.add_relu else -128)
            kernel = k.requant_add

        def bind(bufs: Buffers, r0: int, r1: int, *requant: Any) -> Bound:
            *conv, out = requant
            vb = bufs[b.buffer]
            rows_b = vb.reshape(-1, vb.shape[-1])[r0:r1]
            return share(
                kernel, r1 - r0, dst.channels, *conv, rows_b, b.offset, *add, low, out,
                dst.offset,
            )  # fmt: skip

        return bind

    def _rows(self, instr: Instr, kernel: Callable[..., None], *params: Any) -> Bind:
        """An element-wise step over [N*H*W, C] row views: kernel(x, x_off, *params..., out,
        o_off, r0, r1) where params come between the first input and the output (see ``_add``
        and ``_scale_shift``); the first input is instr.inputs[0]."""
        src, dst = instr.inputs[0], instr.output

        def bind(bufs: Buffers) -> Bound:
            out = bufs[dst.buffer]
            rows = out.shape[0] * out.shape[1] * out.shape[2]
            resolved = [p(bufs, rows) if callable(p) else p for p in params]
            return share(
                kernel, rows, dst.channels, bufs[src.buffer].reshape(rows, -1), src.offset,
                *resolved, out.reshape(rows, -1), dst.offset,
            )  # fmt: skip

        return bind

    def _window(self, instr: Instr, kernel: Callable[..., None], *params: Any) -> Bind:
        """A pooling step: kernel(x, c_off, c_n, kh, kw, stride, top, left, *params, ho, wo,
        out, o_off, r0, r1) over the output rows."""
        src, dst = instr.inputs[0], instr.output
        ho, wo = self._geometry(instr)
        top, _, left, _ = instr.pad
        geometry = (src.offset, src.channels, *instr.kernel, instr.stride, top, left)

        def bind(bufs: Buffers) -> Bound:
            x, out = bufs[src.buffer], bufs[dst.buffer]
            rows = x.shape[0] * ho * wo
            return share(kernel, rows, dst.channels, x, *geometry, *params, ho, wo, out, dst.offset)

        return bind

    def _maxpool(self, instr: Instr) -> Bind:
        return self._window(instr, self._k.maxpool, np.uint8(instr.pad_value + 128))

    def _shift(self, instr: Instr) -> tuple[np.int64, np.int64]:
        """The one shift S of a non-CONV op, with its rounding term 2^(S-1)."""
        shift = np.int64(self.program.weights[instr.shift][0])
        return np.int64(1) << (shift - 1), shift

    def _scalar_requant(self, instr: Instr) -> tuple[np.int64, np.int64, np.int64]:
        return np.int64(self.program.weights[instr.multiplier][0]), *self._shift(instr)

    def _avgpool(self, instr: Instr) -> Bind:
        return self._window(instr, self._k.avgpool, *self._scalar_requant(instr))

    def _global_avgpool(self, instr: Instr) -> Bind:
        src, dst = instr.inputs[0], instr.output
        mult, half, shift = self._scalar_requant(instr)
        k = self._k

        def bind(bufs: Buffers) -> Bound:
            return functools.partial(
                k.global_avgpool, bufs[src.buffer], src.offset, src.channels, mult, half, shift,
                bufs[dst.buffer], dst.offset,
            )  # fmt: skip

        return bind

    def _add(self, instr: Instr) -> Bind:
        b = instr.inputs[1]
        m = self.program.weights[instr.multiplier]
        half, shift = self._shift(instr)
        low = np.int64(0 if instr.relu else -128)

        def rows_b(bufs: Buffers, rows: int) -> np.ndarray:
            return bufs[b.buffer].reshape(rows, -1)

        m0, m1 = np.int64(m[0]), np.int64(m[1])
        params = (rows_b, b.offset, instr.output.channels, m0, m1, half, shift, low)
        return self._rows(instr, self._k.add, *params)

    def _scale_shift(self, instr: Instr) -> Bind:
        w = self.program.weights
        mult = w[instr.multiplier].astype(np.int64)
        bias = w[instr.bias].astype(np.int64)
        half, shift = self._shift(instr)
        if float_requant() and shift <= self._k.FLOAT_MAX_SUM_SHIFT:
            unit = math.ldexp(1.0, -int(shift))  # 2^-S, exactly; a and b of scale_shift_f64
            a = mult.astype(np.float64) * unit
            b = (bias - 128 * mult + half).astype(np.float64) * unit
            low_f = 0.0 if instr.relu else -128.0
            return self._rows(instr, self._k.scale_shift_f64, instr.output.channels, a, b, low_f)
        low = np.int64(0 if instr.relu else -128)
        params = (instr.output.channels, mult, bias, half, shift, low)
        return self._rows(instr, self._k.scale_shift, *params)


class Gather:
    """A CONV's patch gather (NativePlan._im2col): ``views(bufs)`` gives its staging copies
    and blocks for one run's buffers; ``rows`` is the most output rows of one block per
    image (the GEMM output scratch it needs)."""

    def __init__(self, views: Callable[[Buffers], Any], rows: int) -> None:
        self.views, self.rows = views, rows

    def __call__(self, bufs: Buffers) -> Any:
        return self.views(bufs)
