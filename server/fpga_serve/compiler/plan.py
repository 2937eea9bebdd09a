"""Planning a lowered program for one accelerator preset (bitstreams/README.md, "Execution").

- ``fuse_adds``: an ADD whose operand is the CONV just before it (and only read by it) runs
  in that CONV's epilogue (``Instr.residual``): the same two formulas in the same order.
- ``plan``: per instruction a ``Tile`` within the preset's buffers: bands of output rows that
  fit the accumulator, the input as a ring of rows in an input-buffer bank (FOLD for a narrow
  first layer), outputs forwarded whole into the other bank when the next instruction reads
  them, and written to DDR only when something reads them there; then a ``Placement`` of the
  buffers that reach DDR, reusing memory between tensors whose lifetimes do not overlap.

The packer (core/descriptors.py) checks every rule again; this module only chooses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fpga_serve.core.errors import CompileError
from fpga_serve.core.isa import (
    SPACES,
    Instr,
    Opcode,
    Placement,
    Preset,
    Program,
    TensorRef,
    Tile,
)

ALIGN = 64


def _whole(program: Program, ref: TensorRef) -> bool:
    return ref.offset == 0 and ref.channels == program.buffer(ref).channels


def _reads(instr: Instr) -> list[TensorRef]:
    return [*instr.inputs, *([instr.residual] if instr.residual is not None else [])]


def fuse_adds(program: Program) -> Program:
    """Fold each ADD into a CONV producing one of its operands when that CONV's whole output
    buffer is read by the ADD alone (nearest such CONV first). The CONV moves to the ADD's
    place, which is legal because every buffer is written once: its inputs are still there and
    nothing else waits for its output. The fused multipliers are (conv output, other input)."""
    readers: dict[int, int] = {}
    for instr in program.instrs:
        for ref in _reads(instr):
            readers[ref.buffer] = readers.get(ref.buffer, 0) + 1
    weights = list(program.weights)
    out: list[Instr] = []
    for instr in program.instrs:
        producer = None
        if instr.op is Opcode.ADD:
            for j in reversed(range(len(out))):
                prev = out[j]
                if (
                    prev.op is Opcode.CONV
                    and prev.residual is None
                    and _whole(program, prev.output)
                    and prev.output.buffer != program.output.buffer
                    and readers.get(prev.output.buffer) == 1
                    and [r.buffer for r in instr.inputs].count(prev.output.buffer) == 1
                ):
                    producer = j
                    break
        if producer is None:
            out.append(instr)
            continue
        conv = out.pop(producer)
        mine = 0 if instr.inputs[0].buffer == conv.output.buffer else 1
        m = program.weights[instr.multiplier].reshape(-1)
        weights.append(np.array([m[mine], m[1 - mine]], np.int32))
        out.append(
            dataclasses.replace(
                conv,
                output=instr.output,
                residual=instr.inputs[1 - mine],
                add_multiplier=len(weights) - 1,
                add_shift=instr.shift,
                add_relu=instr.relu,
                name=f"{conv.name}+{instr.name}",
            )
        )
    return dataclasses.replace(program, instrs=out, weights=weights)


@dataclass
class _Shape:
    heff: int
    weff: int
    row_words: int
    kh: int
    sh: int


def _fold(program: Program, instr: Instr, f: Preset) -> bool:
    if instr.op is not Opcode.CONV:
        return False
    _, kw, cin, _ = program.weights[instr.weight].shape
    src = instr.inputs[0]
    return kw > 1 and cin * kw <= f.array_ci and cin < f.array_ci and _whole(program, src)


def _shape(program: Program, instr: Instr, f: Preset, fold: bool) -> _Shape:
    h, w, c = program.shape(instr.inputs[0])
    _, ow, _ = program.shape(instr.output)
    if instr.op is Opcode.GLOBAL_AVGPOOL:
        kh, kw = h, w
    elif instr.op is Opcode.CONV:
        kh, kw = (int(v) for v in program.weights[instr.weight].shape[:2])
    else:
        kh, kw = instr.kernel
    if fold:
        weff, ceff = ow, kw * c
    else:
        weff, ceff = w, c
    pw = -(-ceff // f.array_co)
    stride = 1 if instr.op is Opcode.GLOBAL_AVGPOOL else instr.stride
    return _Shape(h, weff, weff * pw, kh, stride)


def _bands(out_h: int, out_w: int, s: _Shape, ring: int, f: Preset, where: str) -> tuple[int, int]:
    def fits(nb: int, rows: int) -> bool:
        return nb * out_w <= f.acc_depth and min(s.heff, (nb - 1) * s.sh + s.kh) <= rows

    if not fits(1, ring):
        raise CompileError(
            f"{where}: one output row ({out_w} pixels, {s.kh} input rows of {s.row_words} "
            f"words) does not fit preset {f.name} ({f.describe()})"
        )
    # Streaming from DDR, bands of at most half the ring let the next band load meanwhile.
    rows = ring if ring == s.heff or not fits(1, ring // 2) else ring // 2
    nb = 1
    while nb < out_h and fits(nb + 1, rows):
        nb += 1
    bands = -(-out_h // nb)
    return -(-out_h // bands), bands


def schedule(program: Program) -> Program:
    """Reorder instructions (data dependencies kept) so that tensors stay on chip: next, an
    instruction that reads the output just produced; among several, the one nearest its
    join first (a projection shortcut before the long branch), then program order."""
    instrs = program.instrs
    writers: dict[int, list[int]] = {}
    deps: list[set[int]] = []
    for j, instr in enumerate(instrs):
        deps.append({i for r in _reads(instr) for i in writers.get(r.buffer, [])})
        writers.setdefault(instr.output.buffer, []).append(j)
    users: list[list[int]] = [[] for _ in instrs]
    for j, d in enumerate(deps):
        for i in d:
            users[i].append(j)
    depth = [0] * len(instrs)
    for i in reversed(range(len(instrs))):
        depth[i] = 1 + max((depth[j] for j in users[i]), default=0)
    done: set[int] = set()
    order: list[int] = []
    last: TensorRef | None = None
    while len(order) < len(instrs):
        ready = [j for j in range(len(instrs)) if j not in done and deps[j] <= done]
        pick = min(ready, key=lambda j: (instrs[j].inputs[0] != last, depth[j], j))
        order.append(pick)
        done.add(pick)
        last = instrs[pick].output
    return dataclasses.replace(program, instrs=[instrs[j] for j in order])


def _residual(instr: Instr) -> TensorRef | None:
    if instr.op is Opcode.ADD:
        return instr.inputs[1]
    return instr.residual


class _Banks:
    """What each input-buffer bank holds as the planner walks the program: (tensor, the
    instruction that forwarded it, or -1 for a whole load from DDR)."""

    def __init__(self, program: Program, f: Preset) -> None:
        self.program = program
        self.content: list[tuple[TensorRef, int] | None] = [None] * f.ibuf_banks

    def holding(self, ref: TensorRef | None, avoid: int | None = None) -> int | None:
        for b, c in enumerate(self.content):
            if ref is not None and c is not None and c[0] == ref and b != avoid:
                return b
        return None

    def producer(self, bank: int) -> int:
        c = self.content[bank]
        assert c is not None
        return c[1]

    def next_use(self, ref: TensorRef, after: int) -> int:
        instrs = self.program.instrs
        for j in range(after, len(instrs)):
            if instrs[j].inputs[0] == ref or _residual(instrs[j]) == ref:
                return j
        return len(instrs) + 1

    def victim(self, avoid: set[int], after: int) -> int | None:
        """A bank to overwrite: an empty one, else the one whose tensor is needed last."""
        free = [b for b in range(len(self.content)) if b not in avoid]

        def need(b: int) -> int:
            c = self.content[b]
            return 1 << 30 if c is None else self.next_use(c[0], after)

        return max(free, key=need) if free else None


def plan(program: Program, f: Preset) -> Program:
    """Tiles for every instruction and a placement of the buffers, for preset ``f`` (on a
    program already scheduled and with its ADDs fused)."""
    instrs = program.instrs
    banks = _Banks(program, f)
    tiles: list[Tile] = []
    served: set[tuple[int, int]] = set()  # (producer, reader) pairs served from a bank
    for i, instr in enumerate(instrs):
        where = f"instruction {i} ({instr.name or instr.op.name})"
        src = instr.inputs[0]
        fold = _fold(program, instr, f)
        s = _shape(program, instr, f, fold)
        hit = None if fold else banks.holding(src)
        res_bank = banks.holding(_residual(instr), hit)
        if hit is not None:
            in_bank, ring, in_ibuf = hit, s.heff, True
            served.add((banks.producer(hit), i))
        else:
            victim = banks.victim({res_bank} if res_bank is not None else set(), i + 1)
            assert victim is not None
            in_bank, in_ibuf = victim, False
            ring = min(s.heff, f.ibuf_words // max(s.row_words, 1))
        if res_bank is not None:
            served.add((banks.producer(res_bank), i))
        out_h, out_w, out_c = program.shape(instr.output)
        band_rows, bands = _bands(out_h, out_w, s, ring, f, where)
        busy = {in_bank} | ({res_bank} if res_bank is not None else set())
        out_bank = banks.victim(busy, i + 1)
        forward = (
            out_bank is not None
            and banks.next_use(instr.output, i + 1) <= len(instrs)
            and out_h * out_w * -(-out_c // f.array_co) <= f.ibuf_words
        )
        if not in_ibuf:
            banks.content[in_bank] = (src, -1) if (ring == s.heff and not fold) else None
        if forward and out_bank is not None:
            banks.content[out_bank] = (instr.output, i)
        else:
            out_bank = (in_bank + 1) % f.ibuf_banks
        tiles.append(
            Tile(
                band_rows, bands, ring, in_bank, out_bank, in_ibuf, forward, True, fold,
                res_bank is not None, res_bank or 0,
            )
        )  # fmt: skip
    tiles = _ddr_outputs(program, tiles, served)
    planned = [dataclasses.replace(x, tile=t) for x, t in zip(instrs, tiles, strict=True)]
    result = dataclasses.replace(program, instrs=planned, target=f.name)
    return dataclasses.replace(result, placement=place(result))


def _ddr_reads(instr: Instr) -> list[TensorRef]:
    tile = instr.tile
    assert tile is not None
    res = _residual(instr)
    reads = [] if res is None or tile.res_ibuf else [res]
    return reads if tile.in_ibuf else [instr.inputs[0], *reads]


def _ddr_outputs(program: Program, tiles: list[Tile], served: set[tuple[int, int]]) -> list[Tile]:
    """An output goes to DDR unless it is forwarded, is not the program's output, and every
    later reader of its buffer takes it from that bank and nowhere else."""
    instrs = [dataclasses.replace(x, tile=t) for x, t in zip(program.instrs, tiles, strict=True)]
    out = []
    for i, instr in enumerate(instrs):
        buf = instr.output.buffer
        readers = [
            j for j in range(i + 1, len(instrs)) if any(r.buffer == buf for r in _reads(instrs[j]))
        ]
        ddr = (
            buf == program.output.buffer
            or not readers
            or not instr.tile.out_ibuf  # type: ignore[union-attr]
            or any(
                (i, j) not in served or any(r.buffer == buf for r in _ddr_reads(instrs[j]))
                for j in readers
            )
        )
        out.append(dataclasses.replace(tiles[i], out_ddr=ddr))
    return out


def _size(program: Program, buf: int) -> int:
    b = program.buffers[buf]
    return -(-(b.height * b.width * b.channels) // ALIGN) * ALIGN


def place(program: Program) -> Placement:
    """Where each buffer that reaches DDR lives. The network's input buffer is the input
    region (IN) and its output buffer the output region (OUT), each at offset 0, so that a run
    syncs those two alone (a buffer that is both is OUT); every other buffer goes in the
    activation scratch (ACT) with liveness-based reuse: a buffer lives from its first DDR
    write to its last DDR read, and buffers whose lifetimes overlap never share bytes. First
    fit, in order of first write. Each region takes at least ALIGN bytes."""
    own = {program.input.buffer: SPACES["IN"], program.output.buffer: SPACES["OUT"]}
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for i, instr in enumerate(program.instrs):
        tile = instr.tile
        assert tile is not None
        if tile.out_ddr:
            start.setdefault(instr.output.buffer, i)
            end[instr.output.buffer] = max(end.get(instr.output.buffer, i), i)
        for ref in _ddr_reads(instr):
            end[ref.buffer] = max(end.get(ref.buffer, i), i)
    offsets = [-1] * len(program.buffers)
    spaces = [SPACES["ACT"]] * len(program.buffers)
    for buf, space in own.items():
        offsets[buf], spaces[buf] = 0, space
    live: list[tuple[int, int, int, int]] = []  # (offset, size, start, end)
    top = 0
    for buf in sorted((b for b in start if b not in own), key=lambda b: (start[b], b)):
        size = _size(program, buf)
        lo, hi = start[buf], end.get(buf, start[buf])
        clashes = sorted(
            (o, sz) for o, sz, s, e in live if s <= hi and lo <= e
        )  # fmt: skip
        at = 0
        for o, sz in clashes:
            if at + size <= o:
                break
            at = max(at, o + sz)
        offsets[buf] = at
        live.append((at, size, lo, hi))
        top = max(top, at + size)
    sizes = {space: ALIGN for space in SPACES.values()}
    for buf, space in own.items():
        sizes[space] = max(_size(program, buf), ALIGN)
    return Placement(offsets, max(top, ALIGN), spaces, sizes[SPACES["IN"]], sizes[SPACES["OUT"]])
