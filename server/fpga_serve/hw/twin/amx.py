"""A stride-1 CONV's int8 GEMM on Intel AMX tiles, requantised like the VNNI kernel.

Where the CPU has AMX-INT8 (Sapphire Rapids and later Xeons), ``tdpbusd`` multiplies a tile of
16 rows x 64 u8 by 64 x 16 s8 into 16 x 16 int32 in one instruction, several times the rate of
AVX-512 ``vpdpbusd``: on a 2-core Sapphire Rapids VM this kernel took 0.29-0.79x the VNNI
kernel's time on ResNet-50's CONV shapes, up to 1607 GMAC/s against 530, and the same on the
output-heavy ones, where requantising costs more than multiplying (bench_conv_kernels.py). The
products are the same u8 x s8 with exact int32 sums, so the arithmetic is vnni.py's: offset
bytes u = v + 128 against int8 weights, the zero point folded into the bias, each output vector
requantised by vnni's own emitter (``vnni._Emit.requant_store``).

Layout. A block is 32 rows x 32 output channels: four accumulator tiles (tmm0-3), two row tiles
of activations (tmm4-5) and two of weights (tmm6-7), all 16 rows x 64 bytes. A row tile is read
in place with one stride: for a stride-1 CONV the rows of a block are *virtual* rows, one per
input pixel position (n, y, x) of the image it reads (the input, or its zero-bordered staging
copy), so row m' reads bytes m' * lda + taps[t] for each tap t, a constant stride; the rows
whose window would leave the image (x >= Wo, y >= Ho) are computed and never stored (``pix``
maps each virtual row to its output pixel, or -1). Each tap is read as whole chunks of 64 bytes,
Cin rounded up (the plan keeps those reads inside a pixel or stages a copy), the weights zero
past Cin so the bytes past it add nothing. The weights are packed [16-channel block][K/4][16
lanes][4 bytes] (a chunk's 16 K-groups are one 1 KiB tile). The last block of rows starts at
rows - 32 and stores only the rows past the block before it. Each block configures the tiles
(``ldtilecfg``) and releases them after its last tile store (``tilerelease``): a thread left
holding tile state slowed the AVX-512 code after it, the VNNI kernel's ResNet-50 plan from 12.8
to 22 ms run beside an AMX one (bench/README.md, issue 13).

``available()`` is True only where the CPU has AMX-INT8 and AMX-TILE, Linux grants the process
the tile state (arch_prctl ARCH_REQ_XCOMP_PERM), the VNNI kernel (whose emitter requantises
here) is available, and a self-check against the reference passes;
tests/hw/test_twin_amx.py checks the kernel against the reference for exact equality.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import Any

import numba
import numba.extending
import numpy as np
from llvmlite import ir

from fpga_serve.hw.twin import vnni

log = logging.getLogger(__name__)

ROWS = 32
"""Rows of one block: two 16-row tiles."""
COLS = 32
"""Output channels of one block: two 16-channel tiles."""
CHUNK = 64
"""Bytes of K one tile multiplies (64 u8 a row, 16 K-groups of four)."""

ARGS = ("cfg", "a", "a0", "lda", "taps", "kc", "chunks", "wp", "w0", "k4", "pix", "r0", "rs",
        "bias", "mult", "half", "shift", "low", "c0", "nvalid", "out", "o_off", "ldo", "b",
        "b_off", "ldb", "m0", "m1", "h2", "s2", "lo2", "fused")  # fmt: skip
"""The block intrinsic's arguments: its virtual rows r0.. (r0 + 32) read from byte a0 of ``a``
(row stride lda; tap t at + taps[t], kc chunks of 64 bytes a tap, chunks = taps x kc in all);
the weights of its two 16-channel blocks from byte w0 of ``wp`` (each k4 * 64 bytes); rows from
rs on stored, row m' at output pixel pix[m'] (skipped where -1) at byte o_off + pix * ldo of
``out`` (o_off and b_off at the block's first channel); the rest as vnni.ARGS (per-channel
constants from c0, nvalid valid channels)."""

_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158  # x86-64


def _decl(module: Any, name: str, ret: Any, params: list[Any]) -> Any:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, params), name)
    return fn


def _emit_block(e: vnni._Emit) -> None:
    """The block: tiles configured and zeroed, the K loop of four ``tdpbusd`` a chunk, the
    accumulators stored to a stack array and the tiles released, then each stored row
    requantised and stored by vnni's emitter."""
    b, arg = e.b, e.arg
    i8, i64, p8 = e.i8, e.i64, e.i8.as_pointer()
    module = b.module
    ldcfg = _decl(module, "llvm.x86.ldtilecfg", ir.VoidType(), [p8])
    zero = _decl(module, "llvm.x86.tilezero", ir.VoidType(), [i8])
    load = _decl(module, "llvm.x86.tileloadd64", ir.VoidType(), [i8, p8, i64])
    store = _decl(module, "llvm.x86.tilestored64", ir.VoidType(), [i8, p8, i64])
    dot = _decl(module, "llvm.x86.tdpbusd", ir.VoidType(), [i8, i8, i8])

    def tile(n: int) -> Any:
        return ir.Constant(i8, n)

    # The accumulators' stack array, in the function's entry block so it is made once.
    with b.goto_entry_block():
        scratch = b.alloca(ir.ArrayType(e.i32, ROWS * COLS))
        scratch.align = 64
    acc = b.bitcast(scratch, p8)
    b.call(ldcfg, [arg["cfg"]])
    for t in range(4):
        b.call(zero, [tile(t)])
    entry = b.block
    loop, done = b.append_basic_block("amx_k"), b.append_basic_block("amx_done")
    b.cbranch(b.icmp_signed(">", arg["chunks"], e.const(0)), loop, done)
    b.position_at_end(loop)
    q = b.phi(i64)  # chunk: tap q // kc, chunk q % kc of it
    q.add_incoming(e.const(0), entry)
    t = b.sdiv(q, arg["kc"])
    at = b.add(b.add(arg["a0"], e.element("taps", t)), b.mul(b.sub(q, b.mul(t, arg["kc"])),
                                                              e.const(CHUNK)))  # fmt: skip
    lda = arg["lda"]
    b.call(load, [tile(4), b.gep(arg["a"], [at]), lda])
    b.call(load, [tile(5), b.gep(arg["a"], [b.add(at, b.mul(lda, e.const(16)))]), lda])
    w = b.add(arg["w0"], b.mul(q, e.const(16 * CHUNK)))
    b.call(load, [tile(6), b.gep(arg["wp"], [w]), e.const(CHUNK)])
    second = b.add(w, b.mul(arg["k4"], e.const(CHUNK)))
    b.call(load, [tile(7), b.gep(arg["wp"], [second]), e.const(CHUNK)])
    for d, rows, cols in ((0, 4, 6), (1, 4, 7), (2, 5, 6), (3, 5, 7)):
        b.call(dot, [tile(d), tile(rows), tile(cols)])
    q_next = b.add(q, e.const(1))
    q.add_incoming(q_next, b.block)
    b.cbranch(b.icmp_signed("<", q_next, arg["chunks"]), loop, done)
    b.position_at_end(done)
    row_bytes = COLS * 4
    for d, offset in ((0, 0), (1, 64), (2, 16 * row_bytes), (3, 16 * row_bytes + 64)):
        b.call(store, [tile(d), b.gep(acc, [e.const(offset)]), e.const(row_bytes)])
    b.call(_decl(module, "llvm.x86.tilerelease", ir.VoidType(), []), [])
    consts = [e.channel_constants(j) for j in range(COLS // vnni.LANES)]
    first = b.sub(arg["rs"], arg["r0"])  # rows before it were stored by the block before
    with _loop(e, first, e.const(ROWS)) as r:
        p = e.element("pix", b.add(arg["r0"], r))
        with b.if_then(b.icmp_signed(">=", p, e.const(0))):
            for j, values in enumerate(consts):
                src = b.gep(acc, [b.add(b.mul(r, e.const(row_bytes)), e.const(j * 64))])
                vec = b.load(b.bitcast(src, e.v32.as_pointer()), align=64)
                col = e.const(j * vnni.LANES)
                out = b.gep(arg["out"], [b.add(b.add(arg["o_off"], b.mul(p, arg["ldo"])), col)])
                res = b.gep(arg["b"], [b.add(b.add(arg["b_off"], b.mul(p, arg["ldb"])), col)])
                e.requant_store(values, vec, out, res)


class _loop:
    """``with _loop(e, start, stop) as i:`` a counted loop in the IR (i from start to stop)."""

    def __init__(self, e: vnni._Emit, start: Any, stop: Any) -> None:
        self.e, self.start, self.stop = e, start, stop

    def __enter__(self) -> Any:
        b = self.e.b
        self.entry = b.block
        self.body = b.append_basic_block("amx_row")
        self.after = b.append_basic_block("amx_rows_done")
        b.cbranch(b.icmp_signed("<", self.start, self.stop), self.body, self.after)
        b.position_at_end(self.body)
        self.i = b.phi(self.e.i64)
        self.i.add_incoming(self.start, self.entry)
        return self.i

    def __exit__(self, *exc: object) -> None:
        b = self.e.b
        following = b.add(self.i, self.e.const(1))
        self.i.add_incoming(following, b.block)
        b.cbranch(b.icmp_signed("<", following, self.stop), self.body, self.after)
        b.position_at_end(self.after)


def _block_typer(ctx, cfg, a, a0, lda, taps, kc, chunks, wp, w0, k4, pix, r0, rs, bias, mult,  # type: ignore[no-untyped-def]
                 half, shift, low, c0, nvalid, out, o_off, ldo, b, b_off, ldb, m0, m1, h2, s2,
                 lo2, fused):  # fmt: skip
    """numba's intrinsic lowering needs the parameters named (ARGS), not *args."""
    from numba import types

    sig = types.void(cfg, a, a0, lda, taps, kc, chunks, wp, w0, k4, pix, r0, rs, bias, mult,
                     half, shift, low, c0, nvalid, out, o_off, ldo, b, b_off, ldb, m0, m1, h2,
                     s2, lo2, fused)  # fmt: skip

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        _emit_block(vnni._Emit(context, builder, signature, args, ARGS))
        return context.get_dummy_value()

    return sig, codegen


_block: Any = numba.extending.intrinsic(_block_typer)


_jit: Any = numba.njit(parallel=True, nogil=True, cache=True, boundscheck=False)


@_jit
def conv(cfg, a, a_base, lda, vrows, taps, kc, wp, k4, bias, mult, half, shift, low, cout, pix,  # type: ignore[no-untyped-def]
         out, o_off, ldo, b, b_off, ldb, m0, m1, h2, s2, lo2, fused):  # fmt: skip
    """A CONV over ``vrows`` >= 32 virtual rows (the module docstring) from byte a_base of
    ``a``, its blocks of 32 rows x 32 channels shared over numba's threads, each stored where
    ``pix`` says: v = sat8(round_shift(((x - 128) @ w + bias) * M, S)) as vnni.conv, with the
    fused ADD of the residual in ``b`` where ``fused``."""
    mb = (vrows + ROWS - 1) // ROWS
    chunks = (len(taps) - 1) * kc
    for t in numba.prange(((cout + COLS - 1) // COLS) * mb):
        nb = t // mb
        rs = (t - nb * mb) * ROWS
        r0 = min(rs, vrows - ROWS)
        c0 = nb * COLS
        _block(cfg, a, a_base + r0 * lda, lda, taps, kc, chunks, wp, 2 * nb * k4 * CHUNK, k4,
               pix, r0, rs, bias, mult, half, shift, low, c0, min(COLS, cout - c0), out,
               o_off + c0, ldo, b, b_off + c0, ldb, m0, m1, h2, s2, lo2, fused)  # fmt: skip


def tile_config() -> np.ndarray:
    """The 64-byte tile configuration (palette 1): all eight tiles 16 rows x 64 bytes."""
    cfg = np.zeros(64, np.uint8)
    cfg[0] = 1
    cfg[16:32:2] = CHUNK  # colsb, little-endian u16 per tile
    cfg[48:56] = 16  # rows per tile
    return cfg


def virtual_rows(images: int, ho: int, wo: int, image: tuple[int, int]) -> tuple[int, np.ndarray]:
    """The virtual rows of a stride-1 CONV reading ``images`` images of ``image`` = (H, W)
    pixels (its input, or a staging copy): their count (up to the last output pixel's) and
    ``pix``, each one's output pixel (n * Ho + y) * Wo + x, or -1 where its window leaves the
    image."""
    hs, ws = image
    count = ((images - 1) * hs + ho - 1) * ws + wo
    m = np.arange(count, dtype=np.int64)
    n, y, x = m // (hs * ws), m % (hs * ws) // ws, m % ws
    pix = np.where((y < ho) & (x < wo), (n * ho + y) * wo + x, -1)
    return count, pix


class Packed:
    """A CONV's weights [K, Cout] int8 (K a multiple of 64) packed for the tiles, zeros past
    Cout to whole 32-channel blocks, with its per-channel constants to the same width
    (vnni.channel_constants)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray):
        k, cout = weight.shape
        if k % CHUNK:
            raise ValueError(f"AMX weights need K a multiple of {CHUNK}, not {k}")
        self.k, self.cout, self.k4 = k, cout, k // 4
        blocks = -(-cout // COLS) * (COLS // 16)
        padded = np.zeros((k, blocks * 16), np.int8)
        padded[:, :cout] = weight
        tiles = padded.reshape(self.k4, 4, blocks, 16).transpose(2, 0, 3, 1)
        self.weights = np.ascontiguousarray(tiles).reshape(-1)
        self.consts = vnni.channel_constants(weight, bias, mult, shift, blocks * 16)

    def args(self) -> tuple[Any, ...]:
        """(wp, k4, bias, M, half, S): the arguments of ``conv`` after the taps'."""
        return (self.weights, self.k4, *self.consts)


def run(u: np.ndarray, packed: Packed, relu: bool) -> np.ndarray:
    """``conv`` on a [M, K] patch matrix of offset bytes (M >= 32) into a new [M, Cout]."""
    m, k = u.shape
    out = np.zeros((m, packed.cout), np.uint8)
    flat = out.reshape(-1)
    low = np.int64(0 if relu else -128)
    conv(tile_config(), np.ascontiguousarray(u).reshape(-1), 0, k, m, vnni.one_tap(), k // CHUNK,
         *packed.args(), low, packed.cout, np.arange(m, dtype=np.int64), flat, 0, packed.cout,
         flat, 0, packed.cout, *vnni.NO_ADD, False)  # fmt: skip
    return out


def _request_tiles() -> bool:
    """Whether Linux lets this process use the AMX tile data (granted once per process)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA)) == 0
    except (OSError, AttributeError):
        return False


def _self_check() -> bool:
    """The kernel against the reference's arithmetic: patch matrices of row counts that leave
    a partial last block, channel counts that leave a partial 16- and 32-channel block, both
    ReLUs, 3x3 windows read through virtual rows (``_windows_exact``), and an accumulator that
    wraps int32 before the bias folds back in."""
    rng = np.random.default_rng(9)
    for m, k, cout in ((37, 64, 19), (70, 192, 100), (32, 128, 64), (45, 64, 200)):
        u = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w = rng.integers(-128, 128, (k, cout), dtype=np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int32)
        mult = rng.integers(1, 1 << 30, cout).astype(np.int32)
        shift = rng.integers(20, 40, cout).astype(np.int32)
        for relu in (False, True):
            got = run(u, Packed(w, bias, mult, shift), relu)
            if not np.array_equal(got, vnni._spec(u, w, bias, mult, shift, relu)):
                return False
    if not _windows_exact(rng):
        return False
    k = 70016  # sum(u * w) = 255 * 127 * k > 2^31, the spec's sum 127 * 127 * k < 2^31
    u, w = np.full((32, k), 255, np.uint8), np.full((k, 2), 127, np.int8)
    bias, mult, shift = np.zeros(2, np.int32), np.ones(2, np.int32), np.full(2, 31, np.int32)
    got = run(u, Packed(w, bias, mult, shift), False)
    return bool(np.array_equal(got, vnni._spec(u, w, bias, mult, shift, False)))


def _windows_exact(rng: np.random.Generator) -> bool:
    """A 3x3 CONV with padding 1 over two images, read from a zero-bordered copy through
    virtual rows, against ``reference.conv``."""
    from fpga_serve.hw.twin import reference

    x = rng.integers(-128, 128, (2, 5, 6, 64), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 3, 64, 40), dtype=np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, 40).astype(np.int32)
    mult = rng.integers(1, 1 << 30, 40).astype(np.int32)
    shift = rng.integers(20, 40, 40).astype(np.int32)
    staged = np.full((2, 7, 8, 64), 128, np.uint8)
    staged[:, 1:6, 1:7] = (x.astype(np.int16) + 128).astype(np.uint8)
    packed = Packed(w.reshape(-1, 40), bias, mult, shift)
    count, pix = virtual_rows(2, 5, 6, (7, 8))
    _, taps = vnni.window_rows(2, 5, 6, 1, (7, 8, 64), 0, (3, 3))
    out = np.zeros((2 * 5 * 6, 40), np.uint8)
    flat = out.reshape(-1)
    conv(tile_config(), staged.reshape(-1), 0, 64, count, taps, 1, *packed.args(),
         np.int64(-128), 40, pix, flat, 0, 40, flat, 0, 40, *vnni.NO_ADD, False)  # fmt: skip
    want = reference.conv(x, w, bias, mult, shift, 1, (1, 1, 1, 1), False)
    return bool(np.array_equal(out, (want.reshape(-1, 40).astype(np.int16) + 128).astype(np.uint8)))


@functools.cache
def available() -> bool:
    """Whether the AMX kernel runs, and is exact, here: AMX-INT8 and AMX-TILE present, the
    tile state granted to the process, the VNNI kernel available, and the self-check passed."""
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features()
    if not (features.get("amx-int8", False) and features.get("amx-tile", False)):
        return False
    if not vnni.available():
        return False
    if not _request_tiles():
        log.warning("AMX tiles not granted by the kernel: CONVs use the VNNI kernel")
        return False
    try:
        ok = _self_check()
    except Exception as exc:  # the intrinsic refused
        log.warning("AMX CONV kernel unavailable (%s): using the VNNI kernel", exc)
        return False
    if not ok:
        log.warning("AMX CONV kernel is not exact on this CPU: using the VNNI kernel")
    return ok
