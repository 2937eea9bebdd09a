"""The twin of the accelerator's bytes: a DeviceImage (core/descriptors.py) run descriptor by
descriptor over the device memory's three regions (activation scratch, input, output: each
a flat array, image n at n times the region's size) and the input-buffer banks, as the
accelerator runs it (bitstreams/README.md, "Execution"). Every descriptor is checked with the
packer's rules and its weight segment decoded from the array's order; the arithmetic is the
twin's ops (the reference or the numpy path), so this is where the packed program and the spec
meet.

Used by the simulated PYNQ board (hw/pynq_sim.py) and the RTL tests and benches, which compare
the RTL's memory (each region) with it tensor by tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.lib.stride_tricks import as_strided

from fpga_serve.core.descriptors import (
    FLAGS,
    ConstantError,
    Decoded,
    DeviceImage,
    Geometry,
    ceil_div,
    check,
    decode,
    space,
)
from fpga_serve.core.isa import Opcode, Preset
from fpga_serve.hw.twin.executor import Operands, apply


class AcceleratorFault(Exception):
    """A run ended with STATUS.ERROR: ``code`` (spec error name) at descriptor ``index`` of
    image ``image``."""

    def __init__(self, code: str, index: int, image: int, reason: str) -> None:
        super().__init__(f"{code} at descriptor {index} (image {image}): {reason}")
        self.code, self.index, self.image, self.reason = code, index, image, reason


def tensor(
    memory: np.ndarray, offset: int, h: int, w: int, buf_c: int, ch_off: int, c: int
) -> np.ndarray:
    """A writable [h, w, c] int8 view of a channel slice in flat memory (no copy)."""
    start = offset + ch_off
    span = (h * w - 1) * buf_c + c
    base = memory[start : start + span].view(np.int8)
    return as_strided(base, shape=(h, w, c), strides=(w * buf_c, buf_c, 1), writeable=True)


def _fold_rows(x: np.ndarray, row: np.void, g: Geometry) -> np.ndarray:
    """The input as the loader leaves it in the bank for FOLD: [H, Wo, kw * C]."""
    h, w, c = x.shape
    kw, pl, sw = int(row["kernel_w"]), int(row["pad_left"]), int(row["stride_w"])
    cols = np.arange(g.weff)[:, None] * sw - pl + np.arange(kw)[None, :]
    inside = (cols >= 0) & (cols < w)
    picked = x[:, np.clip(cols, 0, w - 1), :] * inside[None, :, :, None]
    return picked.reshape(h, g.weff, kw * c).astype(np.int8)


def _words(x: np.ndarray, pw: int, co: int) -> np.ndarray:
    """[H, W, C] -> [H, W * pw, co]: pixels as input-buffer words, lanes past C zero."""
    h, w, c = x.shape
    out = np.zeros((h, w, pw * co), np.int8)
    out[..., :c] = x
    return out.reshape(h, w * pw, co)


@dataclass
class Banks:
    """The input buffer: ``ibuf_banks`` banks of ``ibuf_words`` words of ``array_co`` bytes."""

    data: np.ndarray

    @classmethod
    def of(cls, f: Preset) -> Banks:
        return cls(np.zeros((f.ibuf_banks, f.ibuf_words, f.array_co), np.int8))

    def load(self, bank: int, rows: np.ndarray, ring: int) -> None:
        """Rows in order into a ring of ``ring`` rows (row r in slot r mod ring)."""
        per_row = rows.shape[1]
        for r in range(rows.shape[0]):
            slot = (r % ring) * per_row
            self.data[bank, slot : slot + per_row] = rows[r]

    def tensor(self, bank: int, h: int, w: int, c: int) -> np.ndarray:
        """A whole [h, w, c] tensor left in ``bank`` (by a forward or a whole load)."""
        co = self.data.shape[2]
        pw = ceil_div(c, co)
        return self.data[bank, : h * w * pw].reshape(h, w, pw * co)[..., :c]


def _op(dec: Decoded, row: np.void, x: np.ndarray, ops: ModuleType) -> np.ndarray:
    """The opcode's arithmetic on [1, H, W, C] through the twin's ops (canonical constants,
    checked by decode, make each one exactly its opcode); an ADD's is the identity
    requantisation of its first operand, the add follows."""
    if dec.op is Opcode.ADD:
        return x
    pad = tuple(int(row[k]) for k in ("pad_top", "pad_bottom", "pad_left", "pad_right"))
    operands = Operands(
        kernel=(int(row["kernel_h"]), int(row["kernel_w"])),
        stride=int(row["stride_h"]),
        pad=(pad[0], pad[1], pad[2], pad[3]),
        relu=bool(int(row["flags"]) & FLAGS["RELU"]),
        pad_value=int(row["pad_value"]),
        weight=dec.weight,
        bias=dec.addend if dec.op is Opcode.SCALE_SHIFT else dec.bias,
        multiplier=dec.multiplier,
        shift=dec.shift,
    )
    return apply(ops, dec.op, [x], operands)


@dataclass(frozen=True)
class Regions:
    """Device memory as a run addresses it: per SPACES code (activation scratch, input,
    output) a flat uint8 array holding ``batch`` images of ``sizes[code]`` bytes each."""

    memory: tuple[np.ndarray, np.ndarray, np.ndarray]
    sizes: tuple[int, int, int]

    @classmethod
    def of(cls, image: DeviceImage, batch: int) -> Regions:
        """Zeroed regions for ``batch`` images of ``image``."""
        sizes = image.region_bytes
        a, b, c = (np.zeros(batch * size, np.uint8) for size in sizes)
        return cls((a, b, c), sizes)

    def image(self, n: int) -> tuple[np.ndarray, ...]:
        """Image n's part of each region."""
        return tuple(m[n * s : (n + 1) * s] for m, s in zip(self.memory, self.sizes, strict=True))


def execute(
    f: Preset,
    table: np.ndarray,
    weights: np.ndarray,
    regions: Regions,
    batch: int,
    ops: ModuleType,
    on_step: Callable[[int, int], None] | None = None,
) -> None:
    """Run the descriptors ``table`` (numpy DESCRIPTOR rows) with weight region ``weights``
    for ``batch`` images over ``regions``, as the accelerator would: AcceleratorFault where it
    would stop; ``on_step(image, index)`` after each descriptor."""
    banks = Banks.of(f)
    for n in range(batch):
        parts = regions.image(n)
        for index, row in enumerate(table):
            run_descriptor(row, f, weights, regions.sizes, parts, banks, ops, index, n)
            if on_step is not None:
                on_step(n, index)


def _access(
    parts: tuple[np.ndarray, ...], row: np.void, a: str, h: int, w: int, c: int
) -> np.ndarray:
    """The tensor a descriptor's DDR access ``a`` ("in", "res", "out") addresses: in the
    region its spaces field names, at its offset, buffer channels and channel offset."""
    return tensor(parts[space(row, a)], int(row[f"{a}_offset"]), h, w, int(row[f"{a}_buf_c"]),
                  int(row[f"{a}_ch_off"]), c)  # fmt: skip


def run_descriptor(
    row: np.void,
    f: Preset,
    weights: np.ndarray,
    sizes: tuple[int, int, int],
    parts: tuple[np.ndarray, ...],
    banks: Banks,
    ops: ModuleType,
    index: int,
    n: int,
) -> None:
    """One descriptor of image n; ``parts``: that image's part of each region (by SPACES
    code), ``sizes`` their bytes."""
    bad = check(row, f, sizes, weights.size)
    if bad:
        raise AcceleratorFault(bad[0], index, n, bad[1])
    woff, wlen = int(row["wgt_offset"]), int(row["wgt_bytes"])
    try:
        dec = decode(row, weights[woff : woff + wlen], f)
    except ConstantError as exc:
        raise AcceleratorFault("BAD_CONSTANT", index, n, str(exc)) from exc
    g = dec.geometry
    flags = int(row["flags"])
    in_h, in_w, in_c = int(row["in_h"]), int(row["in_w"]), int(row["in_c"])
    if flags & FLAGS["IN_IBUF"]:
        x = np.array(banks.tensor(int(row["in_bank"]), g.heff, g.weff, in_c))
    else:
        x = np.array(_access(parts, row, "in", in_h, in_w, in_c))
        folded = _fold_rows(x, row, g) if flags & FLAGS["FOLD"] else x
        banks.load(int(row["in_bank"]), _words(folded, g.pw, f.array_co), int(row["ring_rows"]))
    y = _op(dec, row, x[None], ops)
    out_h, out_w, out_c = int(row["out_h"]), int(row["out_w"]), int(row["out_c"])
    if flags & FLAGS["ADD"]:
        if flags & FLAGS["RES_IBUF"]:
            r = banks.tensor(int(row["res_bank"]), out_h, out_w, out_c)
        else:
            r = _access(parts, row, "res", out_h, out_w, out_c)
        m = np.array([int(row["add_m0"]), int(row["add_m1"])], np.int32)
        s = np.array([int(row["add_shift"])], np.int32)
        y = np.asarray(ops.add(y, np.array(r)[None], m, s, bool(flags & FLAGS["ADD_RELU"])))
    y = y[0]
    if flags & FLAGS["OUT_DDR"]:
        _access(parts, row, "out", out_h, out_w, out_c)[...] = y
    if flags & FLAGS["OUT_IBUF"]:
        pw = ceil_div(out_c, f.array_co)
        words = _words(y, pw, f.array_co).reshape(-1, f.array_co)
        banks.data[int(row["out_bank"]), : words.shape[0]] = words


def write_input(image: DeviceImage, memory: np.ndarray, x: np.ndarray) -> None:
    """The host's part of a run: image n of x [N, H, W, C] into ``memory``, the region of the
    program's input (``image.input_space``: the input buffer)."""
    off, buf_c, ch_off = image.input_at
    h, w, c = image.input_shape
    size = image.region_bytes[image.input_space]
    for n in range(x.shape[0]):
        tensor(memory[n * size : (n + 1) * size], off, h, w, buf_c, ch_off, c)[...] = x[n]


def read_output(image: DeviceImage, memory: np.ndarray, batch: int) -> np.ndarray:
    """The program's output of ``batch`` images from ``memory``, the region of the program's
    output (``image.output_space``: the output buffer)."""
    off, buf_c, ch_off = image.output_at
    h, w, c = image.output_shape
    size = image.region_bytes[image.output_space]
    return np.stack(
        [
            np.array(tensor(memory[n * size : (n + 1) * size], off, h, w, buf_c, ch_off, c))
            for n in range(batch)
        ]
    )


def run(image: DeviceImage, x: np.ndarray, ops: ModuleType) -> np.ndarray:
    """x int8 [N, H, W, C] -> the program's output, through the packed bytes."""
    regions = Regions.of(image, x.shape[0])
    write_input(image, regions.memory[image.input_space], x)
    execute(image.preset, image.table(), image.weights, regions, x.shape[0], ops)
    return read_output(image, regions.memory[image.output_space], x.shape[0])
