"""A CONV's int8 GEMM and requantisation in one compiled kernel, for x86 CPUs with AVX-512 VNNI.

The native path's default CONV is ONNX Runtime's exact int8 GEMM (twin/gemm.py) into an int32
scratch, then a requantisation pass (twin/kernels.py). Here each register tile of the output
is multiplied with ``vpdpbusd`` (u8 x s8 products, four summed per int32 lane, no
saturation) and requantised while it is still in registers, the spec's arithmetic on int64
lanes: no int32 matrix is written or read again, and no runtime session is called per CONV.

The tile kernel is LLVM IR made with llvmlite inside a numba intrinsic (numba compiles it
for the host CPU with the rest of the kernel); the loops around it are numba, the tiles
shared over the twin's threads with ``prange`` (OpenMP or TBB: a thread-safe layer only).

Layout. The activations are offset bytes u = v + 128, each output row's patch read in place
four bytes at a time, tap by tap (a row base per output row and an offset per tap into an
NHWC buffer; one tap of K bytes for a patch matrix's rows or a 1x1 CONV's); the weights are
packed once per CONV as [n-block][K/4][NV vectors][16 lanes][4 bytes] with zeros past K and
past Cout, so a read past a row's K bytes meets zero weights. The zero point folds into the
bias: sum((u - 128) * w) = sum(u * w) - 128 * sum(w), taken modulo 2^32 like the spec's acc +
bias (the sum the reference accepts fits int32, so the wrap is the spec's).

``available()`` is True only where the CPU has AVX-512 VNNI and BW, a thread-safe threading
layer loads, and a self-check against the reference's arithmetic passes;
tests/hw/test_twin_vnni.py checks the kernel against the reference for exact equality.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import numba
import numba.extending
import numpy as np
from llvmlite import ir

log = logging.getLogger(__name__)

if "NUMBA_THREADING_LAYER" not in os.environ:
    # The twin's runs may come from several threads at once: never the workqueue layer,
    # which aborts the process on concurrent use.
    numba.config.THREADING_LAYER = "threadsafe"  # type: ignore[attr-defined]

MR = 6
"""Output rows of one register tile: MR x NV accumulators of 16 int32 lanes (24 of the 32
zmm registers) plus NV weight vectors. 6 x 4 and 4 x 4 measured within 5% of each other on
ResNet-50's shapes; 12 x 2 and 7 x 4 were slower (bench/README.md, issue 13)."""
NV = 4
"""16-lane vectors of output channels per tile: an n-block is NB = 16 * NV channels."""
NB = 16 * NV
LANES = 16


ARGS = ("a", "rb", "i0", "rows", "taps", "cin4", "wp", "w_off", "k4", "bias", "mult", "half",
        "shift", "low", "c0", "nvalid", "out", "o_off", "ldo", "b", "b_off", "ldb", "m0", "m1",
        "h2", "s2", "lo2", "fused")  # fmt: skip
"""The tile intrinsic's arguments. Its rows (1..MR) are output rows i0.. of the CONV; the
patch of output row m is read in place from ``a``: tap t's four-byte groups g (cin4 of them)
at byte rb[m] + taps[t] + 4 g, K ordered (tap, channel) like the weights (one tap of K bytes
for a patch matrix's rows or a 1x1 CONV's input rows). Its n-block's weights start at byte
w_off of ``wp`` (k4 groups of four K in all); the per-channel constants at index c0; nvalid
(1..NB) channels are stored at byte o_off of ``out`` (stride ldo); with ``fused`` the
residual is read at byte b_off of ``b`` (stride ldb) and added with m0, m1, h2 = 2^(s2-1),
s2 and the low clamp lo2 (kernels.requant_add)."""


class _Emit:
    """The LLVM IR of one tile, written into the intrinsic's function by ``tile``."""

    def __init__(self, context: Any, builder: Any, signature: Any, args: Any,
                 names: tuple[str, ...] = ARGS) -> None:  # fmt: skip
        from numba.core import types

        self.ir, self.b = ir, builder
        self.i8, self.i32, self.i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        self.v32, self.v64, self.vb = (
            ir.VectorType(t, LANES) for t in (self.i32, self.i64, self.i8)
        )
        self.arg = dict(zip(names, args, strict=True))
        for name, kind in zip(names, signature.args, strict=True):
            if isinstance(kind, types.Array):  # every array argument as a byte pointer
                arr = context.make_array(kind)(context, builder, self.arg[name])
                self.arg[name] = builder.bitcast(arr.data, self.i8.as_pointer())
        # An offset byte's top bit: u ^ flip is u - 128 as int8, and v ^ flip is v + 128.
        self.flip = ir.Constant(self.vb, [0x80] * LANES)
        module = builder.module
        vm = ir.VectorType(ir.IntType(1), LANES)
        self.dot = self._declare(module, "llvm.x86.avx512.vpdpbusd.512", self.v32, [self.v32] * 3)
        self.store = self._declare(module, "llvm.masked.store.v16i8.p0", ir.VoidType(),
                                   [self.vb, self.i8.as_pointer(), self.i32, vm])  # fmt: skip
        self.load = self._declare(module, "llvm.masked.load.v16i8.p0", self.vb,
                                  [self.i8.as_pointer(), self.i32, vm, self.vb])  # fmt: skip

    def _declare(self, module: Any, name: str, ret: Any, params: list[Any]) -> Any:
        fn = module.globals.get(name)
        if fn is None:
            fn = self.ir.Function(module, self.ir.FunctionType(ret, params), name)
        return fn

    def const(self, value: int) -> Any:
        return self.ir.Constant(self.i64, value)

    def splat(self, value: Any, vtype: Any) -> Any:
        ir, b = self.ir, self.b
        one = b.insert_element(ir.Constant(vtype, ir.Undefined), value, ir.Constant(self.i32, 0))
        return b.shuffle_vector(one, ir.Constant(vtype, ir.Undefined), ir.Constant(self.v32, None))

    def bound(self, v: Any, value: int | Any, above: bool) -> Any:
        """max(v, value) (or min, with ``above``) in int64 lanes; value a constant or a vector."""
        if isinstance(value, int):
            value = self.ir.Constant(self.v64, [value] * LANES)
        b = self.b
        return b.select(b.icmp_signed(">" if above else "<", v, value), value, v)

    def narrow(self, v: Any) -> Any:
        """int64 lanes that hold int32 values, said so (sign-extended from their low halves):
        LLVM then multiplies two such as 32 x 32 -> 64 bits (VPMULDQ), not 64 x 64."""
        return self.b.sext(self.b.trunc(v, self.v32), self.v64)

    def offset_bytes(self, v: Any) -> Any:
        """v, already at least -128, clamped at 127 as offset bytes: a truncation with signed
        saturation (LLVM's VPMOVSQB for the min with 127 and a max with -128 that v already
        meets), then the 128 added as a flip of the top bit."""
        byte = self.b.trunc(self.bound(self.bound(v, -128, False), 127, True), self.vb)
        return self.b.xor(byte, self.flip)

    def at(self, base: str, offset: Any, row: int, stride: str, col: int) -> Any:
        """A byte pointer: arg ``base`` + offset + row * arg ``stride`` + col."""
        b = self.b
        where = b.add(b.add(offset, b.mul(self.const(row), self.arg[stride])), self.const(col))
        return b.gep(self.arg[base], [where])

    def vector(self, name: str, elem: Any, index: Any) -> Any:
        """16 elements of a per-channel constant array from ``index``."""
        ptr = self.b.gep(self.b.bitcast(self.arg[name], elem.as_pointer()), [index])
        return self.b.load(self.b.bitcast(ptr, self.ir.VectorType(elem, LANES).as_pointer()),
                           align=1)  # fmt: skip

    def tile(self) -> None:
        """A switch on the tile's vector count nv = ceil(nvalid / 16), one body per nv."""
        b = self.b
        nv = b.ashr(b.add(self.arg["nvalid"], self.const(LANES - 1)), self.const(4))
        end = b.append_basic_block("tile_end")
        switch = b.switch(nv, end)
        for width in range(1, NV + 1):
            block = b.append_basic_block(f"tile_nv{width}")
            switch.add_case(self.const(width), block)
            b.position_at_end(block)
            self.body(width)
            b.branch(end)
        b.position_at_end(end)

    def body(self, nv: int) -> None:
        """The K loop (accumulators as phis; nv weight vectors and MR broadcast quads per
        group of four K, the quads' addresses stepping through the taps), then each vector
        requantised and stored."""
        ir, b, arg = self.ir, self.b, self.arg
        rows, k4, cin4 = arg["rows"], arg["k4"], arg["cin4"]
        last = b.sub(rows, self.const(1))
        row_ptr = []  # rows past ``rows`` repeat the last one: computed, never stored
        for i in range(MR):
            r = b.select(b.icmp_signed("<", self.const(i), rows), self.const(i), last)
            base = self.element("rb", b.add(arg["i0"], r))
            row_ptr.append(b.gep(arg["a"], [base]))
        w0 = b.gep(arg["wp"], [arg["w_off"]])
        tap0 = self.element("taps", self.const(0))
        entry = b.block
        loop, done = b.append_basic_block("tile_k"), b.append_basic_block("tile_done")
        zero = ir.Constant(self.v32, None)
        b.cbranch(b.icmp_signed(">", k4, self.const(0)), loop, done)
        b.position_at_end(loop)
        k, g, t, tap = (b.phi(self.i64) for _ in range(4))  # group, in tap, tap, its offset
        for phi, start in ((k, self.const(0)), (g, self.const(0)), (t, self.const(0)),
                           (tap, tap0)):  # fmt: skip
            phi.add_incoming(start, entry)
        accs = [b.phi(self.v32) for _ in range(MR * nv)]
        for phi in accs:
            phi.add_incoming(zero, entry)
        group = b.mul(k, self.const(NV * 64))  # every n-block is packed NV vectors wide
        weights = [
            b.load(b.bitcast(b.gep(w0, [b.add(group, self.const(j * 64))]),
                             self.v32.as_pointer()), align=1)
            for j in range(nv)
        ]  # fmt: skip
        summed = []
        at = b.add(tap, b.mul(g, self.const(4)))
        for i in range(MR):
            ptr = b.bitcast(b.gep(row_ptr[i], [at]), self.i32.as_pointer())
            quad = self.splat(b.load(ptr, align=1), self.v32)
            summed += [b.call(self.dot, [accs[i * nv + j], quad, weights[j]]) for j in range(nv)]
        k_next, g_next = b.add(k, self.const(1)), b.add(g, self.const(1))
        wrap = b.icmp_signed("==", g_next, cin4)
        t_next = b.add(t, b.zext(wrap, self.i64))
        # taps has one entry past the last tap, so this read stays inside it.
        tap_next = b.select(wrap, self.element("taps", t_next), tap)
        body = b.block
        for phi, value in ((k, k_next), (g, b.select(wrap, self.const(0), g_next)), (t, t_next),
                           (tap, tap_next), *zip(accs, summed, strict=True)):  # fmt: skip
            phi.add_incoming(value, body)
        b.cbranch(b.icmp_signed("<", k_next, k4), loop, done)
        b.position_at_end(done)
        final = []
        for value in summed:
            phi = b.phi(self.v32)
            phi.add_incoming(zero, entry)
            phi.add_incoming(value, body)
            final.append(phi)
        for j in range(nv):
            self.store_vector(j, [final[i * nv + j] for i in range(MR)])

    def element(self, name: str, index: Any) -> Any:
        """Element ``index`` of the int64 array argument ``name``."""
        ptr = self.b.bitcast(self.arg[name], self.i64.as_pointer())
        return self.b.load(self.b.gep(ptr, [index]))

    def store_vector(self, j: int, accs: list[Any]) -> None:
        """Vector j of every row (``requant_store``): row i's output at byte o_off + i * ldo
        of ``out`` and its residual at b_off + i * ldb of ``b``."""
        b, arg = self.b, self.arg
        consts = self.channel_constants(j)
        for i in range(MR):
            with b.if_then(b.icmp_signed("<", self.const(i), arg["rows"])):
                out = self.at("out", arg["o_off"], i, "ldo", j * LANES)
                res = self.at("b", arg["b_off"], i, "ldb", j * LANES)
                self.requant_store(consts, accs[i], out, res)

    def channel_constants(self, j: int) -> tuple[Any, ...]:
        """The per-channel constants of vector j (channels c0 + 16 j..) and the tile's: bias,
        M, 2^(S-1), S, the store mask of the valid channels, low, and the fused ADD's."""
        ir, b, arg = self.ir, self.b, self.arg
        ch = b.add(arg["c0"], self.const(j * LANES))
        bias = self.vector("bias", self.i32, ch)
        mult, half, shift = (self.vector(n, self.i64, ch) for n in ("mult", "half", "shift"))
        left = self.splat(b.sub(arg["nvalid"], self.const(j * LANES)), self.v64)
        mask = b.icmp_signed("<", ir.Constant(self.v64, list(range(LANES))), left)
        low, lo2 = self.splat(arg["low"], self.v64), self.splat(arg["lo2"], self.v64)
        m0, m1, h2, s2 = (self.splat(arg[n], self.v64) for n in ("m0", "m1", "h2", "s2"))
        return (
            bias,
            self.narrow(mult),
            half,
            shift,
            mask,
            low,
            lo2,
            *map(self.narrow, (m0, m1)),
            h2,
            s2,
        )

    def requant_store(self, consts: tuple[Any, ...], acc: Any, out: Any, res: Any) -> None:
        """One vector of accumulators: the spec's int64 requantisation (kernels.requant), the
        fused ADD where ``fused`` (kernels.requant_add) with the residual's offset bytes at
        ``res``, stored at ``out`` under a mask of the valid channels. Every product is of two
        int32 values (``narrow``); the last clamp at 127 is the store's saturating truncation
        (``offset_bytes``)."""
        ir, b, arg = self.ir, self.b, self.arg
        bias, mult, half, shift, mask, low, lo2, m0, m1, h2, s2 = consts
        align = ir.Constant(self.i32, 1)
        fused = b.icmp_signed("!=", b.zext(arg["fused"], self.i64), self.const(0))
        x = b.sext(b.add(acc, bias), self.v64)
        v = self.bound(b.ashr(b.add(b.mul(x, mult), half), shift), low, False)
        before = b.block
        with b.if_then(fused):
            rb = b.call(self.load, [res, align, mask, ir.Constant(self.vb, None)])
            r = b.sext(b.xor(rb, self.flip), self.v64)  # b - 128
            v127 = self.narrow(self.bound(v, 127, True))
            total = b.add(b.add(b.mul(v127, m0), b.mul(r, m1)), h2)
            added = self.bound(b.ashr(total, s2), lo2, False)
            inside = b.block
        result = b.phi(self.v64)
        result.add_incoming(v, before)
        result.add_incoming(added, inside)
        b.call(self.store, [self.offset_bytes(result), out, align, mask])


def _tile_typer(ctx, a, rb, i0, rows, taps, cin4, wp, w_off, k4, bias, mult, half, shift, low,  # type: ignore[no-untyped-def]
                c0, nvalid, out, o_off, ldo, b, b_off, ldb, m0, m1, h2, s2, lo2,
                fused):  # fmt: skip
    """numba's intrinsic lowering needs the parameters named (ARGS), not *args."""
    from numba import types

    sig = types.void(a, rb, i0, rows, taps, cin4, wp, w_off, k4, bias, mult, half, shift, low,
                     c0, nvalid, out, o_off, ldo, b, b_off, ldb, m0, m1, h2, s2, lo2,
                     fused)  # fmt: skip

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        _Emit(context, builder, signature, args).tile()
        return context.get_dummy_value()

    return sig, codegen


_tile: Any = numba.extending.intrinsic(_tile_typer)


_jit: Any = numba.njit(parallel=True, nogil=True, cache=True, boundscheck=False)


@_jit
def conv(a, rb, rows, taps, cin4, wp, k4, bias, mult, half, shift, low, cout, out, o_off, ldo,  # type: ignore[no-untyped-def]
         b, b_off, ldb, m0, m1, h2, s2, lo2, fused):  # fmt: skip
    """Output rows [0, rows) of a CONV at byte o_off of the flat ``out`` (stride ldo),
    channels [0, cout): v = sat8(round_shift(((x - 128) @ w + bias) * M, S)) for each output
    row's patch x, read in place from ``a`` at rb[m] + taps[t] + 4 g (``ARGS``), and the packed
    weights ``wp`` (``Packed``); with ``fused``, then sat8(round_shift(v * M0 + (b - 128) * M1,
    S2)) for the residual's offset bytes b at byte b_off (stride ldb); stored as offset bytes.
    The tiles are shared over numba's threads."""
    mt = (rows + MR - 1) // MR
    for t in numba.prange(((cout + NB - 1) // NB) * mt):
        nb = t // mt
        i0 = (t - nb * mt) * MR
        c0 = nb * NB
        _tile(a, rb, i0, min(MR, rows - i0), taps, cin4, wp, nb * k4 * NB * 4, k4, bias, mult,
              half, shift, low, c0, min(NB, cout - c0), out, o_off + i0 * ldo + c0, ldo, b,
              b_off + i0 * ldb + c0, ldb, m0, m1, h2, s2, lo2, fused)  # fmt: skip


def rows_of(count: int, stride: int, offset: int = 0) -> np.ndarray:
    """Row bases for ``conv`` reading ``count`` rows of a matrix: offset + m * stride."""
    return offset + stride * np.arange(count, dtype=np.int64)


def window_rows(images: int, ho: int, wo: int, stride: int, image: tuple[int, int, int],
                offset: int, kernel: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``conv``'s row bases and taps for a CONV's windows read in place from a flat NHWC
    buffer of ``images`` images of ``image`` = (H, W, C) (the input, or a padding CONV's
    zero-bordered copy), its channels from ``offset``: output (n, y, x) starts at pixel
    (n, y * stride, x * stride), tap (i, j) is i rows and j pixels on."""
    hs, ws, cs = image
    m = np.arange(images * ho * wo, dtype=np.int64)
    n, y, x = m // (ho * wo), m % (ho * wo) // wo, m % wo
    rb = ((n * hs + y * stride) * ws + x * stride) * cs + offset
    return rb, window_taps(ws, cs, kernel)


def window_taps(ws: int, cs: int, kernel: tuple[int, int]) -> np.ndarray:
    """The byte offsets of a window's taps (i, j) in an NHWC image ``ws`` pixels of ``cs``
    bytes wide, i rows and j pixels on, and one entry past the last (0)."""
    kh, kw = kernel
    taps = [(i * ws + j) * cs for i in range(kh) for j in range(kw)] + [0]
    return np.array(taps, np.int64)


def one_tap() -> np.ndarray:
    """``conv``'s taps for rows read as one run of K bytes (and the entry past the last)."""
    return np.zeros(2, np.int64)


NO_ADD = (np.int64(0),) * 5
"""m0, m1, h2, s2, lo2 of a CONV without a fused ADD (``conv``'s b is then its out)."""


def channel_constants(weight: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                      width: int) -> tuple[np.ndarray, ...]:  # fmt: skip
    """A CONV's per-channel requantisation constants for the compiled kernels, zeros past Cout
    up to ``width`` channels: the bias with the zero point of the weights [K, Cout] folded in
    (bias - 128 * sum_k w, modulo 2^32) as int32, M, 2^(S-1) and S as int64."""
    cout = weight.shape[1]
    folded = bias.astype(np.int64) - 128 * weight.astype(np.int64).sum(axis=0)
    s = shift.astype(np.int64)
    values = [
        (folded.astype(np.int32), np.int32),  # an integer downcast wraps modulo 2^32
        (mult.astype(np.int64), np.int64),
        (np.int64(1) << (s - 1), np.int64),
        (s, np.int64),
    ]
    padded = []
    for value, dtype in values:
        out: np.ndarray = np.zeros(width, dtype)
        out[:cout] = value
        padded.append(out)
    return tuple(padded)


class Packed:
    """A CONV's weights [K, Cout] int8 packed for the tile kernel, with its per-channel
    requantisation constants padded to whole n-blocks: the bias with the zero point folded in
    (bias - 128 * sum_k w, modulo 2^32), M, 2^(S-1) and S as int64."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray):
        k, cout = weight.shape
        self.k, self.cout = k, cout
        self.k4 = (k + 3) // 4
        blocks = (cout + NB - 1) // NB
        padded = np.zeros((self.k4 * 4, blocks * NB), np.int8)
        padded[:k, :cout] = weight
        tiles = padded.reshape(self.k4, 4, blocks, NV, LANES).transpose(2, 0, 3, 4, 1)
        self.weights = np.ascontiguousarray(tiles).reshape(-1)
        self.bias, self.mult, self.half, self.shift = channel_constants(
            weight, bias, mult, shift, blocks * NB
        )

    def args(self) -> tuple[Any, ...]:
        """(wp, k4, bias, M, half, S): the arguments of ``conv`` after the patches'."""
        return self.weights, self.k4, self.bias, self.mult, self.half, self.shift


def _spec(u: np.ndarray, w: np.ndarray, bias: np.ndarray, mult: np.ndarray,
          shift: np.ndarray, relu: bool) -> np.ndarray:  # fmt: skip
    """The reference's CONV (the spec) on a patch matrix of offset bytes, as offset bytes."""
    from fpga_serve.hw.twin import reference

    x = (u.astype(np.int16) - 128).astype(np.int8)[None, :, None, :]
    out = reference.conv(x, w[None, None], bias, mult, shift, 1, (0, 0, 0, 0), relu)
    return (out[0, :, 0, :].astype(np.int16) + 128).astype(np.uint8)


def _self_check() -> bool:
    """The kernel against the reference's arithmetic on random shapes that cover every tile
    width and row remainder, windows read in place (``_windows_exact``), and the extremes (an
    accumulator that wraps int32 before the bias folds back in)."""
    rng = np.random.default_rng(5)
    for m, k, cout in ((37, 20, 19), (13, 147, 100), (8, 64, 64), (5, 6, 200)):
        u = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w = rng.integers(-128, 128, (k, cout), dtype=np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int32)
        mult = rng.integers(1, 1 << 30, cout).astype(np.int32)
        shift = rng.integers(20, 40, cout).astype(np.int32)
        for relu in (False, True):
            got = run(u, Packed(w, bias, mult, shift), relu)
            if not np.array_equal(got, _spec(u, w, bias, mult, shift, relu)):
                return False
    if not _windows_exact(rng):
        return False
    k = 70000  # sum(u * w) = 255 * 127 * k > 2^31, the spec's sum 127 * 127 * k < 2^31
    u, w = np.full((3, k), 255, np.uint8), np.full((k, 2), 127, np.int8)
    bias, mult, shift = np.zeros(2, np.int32), np.ones(2, np.int32), np.full(2, 31, np.int32)
    got = run(u, Packed(w, bias, mult, shift), False)
    return bool(np.array_equal(got, _spec(u, w, bias, mult, shift, False)))


def _windows_exact(rng: np.random.Generator) -> bool:
    """3x3 CONVs with padding 1 at strides 1 and 2, their windows read in place tap by tap
    from a zero-bordered copy of the input (``window_rows``), against ``reference.conv``."""
    from fpga_serve.hw.twin import reference

    x = rng.integers(-128, 128, (2, 5, 6, 8), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 3, 8, 19), dtype=np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, 19).astype(np.int32)
    mult = rng.integers(1, 1 << 30, 19).astype(np.int32)
    shift = rng.integers(20, 40, 19).astype(np.int32)
    staged = np.full((2, 7, 8, 8), 128, np.uint8)
    staged[:, 1:6, 1:7] = (x.astype(np.int16) + 128).astype(np.uint8)
    packed = Packed(w.reshape(-1, 19), bias, mult, shift)
    for stride in (1, 2):
        ho, wo = (5 - 1) // stride + 1, (6 - 1) // stride + 1
        rb, taps = window_rows(2, ho, wo, stride, (7, 8, 8), 0, (3, 3))
        out = np.zeros((2 * ho * wo, 19), np.uint8)
        flat = out.reshape(-1)
        conv(staged.reshape(-1), rb, len(rb), taps, 2, *packed.args(), np.int64(-128), 19, flat,
             0, 19, flat, 0, 19, *NO_ADD, False)  # fmt: skip
        want = reference.conv(x, w, bias, mult, shift, stride, (1, 1, 1, 1), False)
        if not np.array_equal(out, (want.reshape(-1, 19).astype(np.int16) + 128).astype(np.uint8)):
            return False
    return True


def run(u: np.ndarray, packed: Packed, relu: bool) -> np.ndarray:
    """``conv`` on a [M, K] patch matrix of offset bytes into a new [M, Cout] output."""
    low = 0 if relu else -128
    m, k = u.shape
    a = np.zeros(m * k + 4, np.uint8)  # reads reach up to 3 bytes past a row's K
    a[: m * k] = u.reshape(-1)
    out = np.zeros((m, packed.cout), np.uint8)
    flat = out.reshape(-1)
    rb, taps = rows_of(m, k), one_tap()
    head = (a, rb, m, taps, packed.k4, *packed.args(), np.int64(low), packed.cout, flat, 0)
    conv(*head, packed.cout, flat, 0, packed.cout, *NO_ADD, False)
    return out


@functools.cache
def available() -> bool:
    """Whether the fused kernel runs, and is exact, on this CPU: AVX-512 VNNI and BW present,
    a thread-safe threading layer, and the self-check passed."""
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features()
    if not (features.get("avx512vnni", False) and features.get("avx512bw", False)):
        return False
    try:
        ok = _self_check()
    except Exception as exc:  # no thread-safe threading layer, or the intrinsic refused
        log.warning("fused VNNI CONV kernel unavailable (%s): using the GEMM path", exc)
        return False
    if not ok:
        log.warning("fused VNNI CONV kernel is not exact on this CPU: using the GEMM path")
    return ok
