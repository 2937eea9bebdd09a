"""The twin of the accelerator's bytes: a DeviceImage (core/descriptors.py) run descriptor by
descriptor over a flat activation memory and the input-buffer banks, as the accelerator runs
it (bitstreams/README.md, "Execution"). Every descriptor is checked with the packer's rules and
its weight segment decoded from the array's order; the arithmetic is the twin's ops (the
reference or the numpy path), so this is where the packed program and the spec meet.

Used by the simulated PYNQ board (hw/pynq_sim.py) and the RTL tests and benches, which compare
the RTL's memory with it tensor by tensor.
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


def execute(
    f: Preset,
    table: np.ndarray,
    weights: np.ndarray,
    memory: np.ndarray,
    batch: int,
    image_bytes: int,
    ops: ModuleType,
    on_step: Callable[[int, int], None] | None = None,
) -> None:
    """Run the descriptors ``table`` (numpy DESCRIPTOR rows) with weight region ``weights``
    for ``batch`` images over ``memory`` (uint8: image n's activation region at
    n x image_bytes), as the accelerator would: AcceleratorFault where it would stop;
    ``on_step(image, index)`` after each descriptor."""
    banks = Banks.of(f)
    for n in range(batch):
        act = memory[n * image_bytes : (n + 1) * image_bytes]
        for index, row in enumerate(table):
            run_descriptor(row, f, weights, image_bytes, act, banks, ops, index, n)
            if on_step is not None:
                on_step(n, index)


def run_descriptor(
    row: np.void,
    f: Preset,
    weights: np.ndarray,
    image_bytes: int,
    act: np.ndarray,
    banks: Banks,
    ops: ModuleType,
    index: int,
    n: int,
) -> None:
    bad = check(row, f, image_bytes, weights.size)
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
        x = np.array(
            tensor(act, int(row["in_offset"]), in_h, in_w, int(row["in_buf_c"]),
                   int(row["in_ch_off"]), in_c)
        )  # fmt: skip
        folded = _fold_rows(x, row, g) if flags & FLAGS["FOLD"] else x
        banks.load(int(row["in_bank"]), _words(folded, g.pw, f.array_co), int(row["ring_rows"]))
    y = _op(dec, row, x[None], ops)
    out_h, out_w, out_c = int(row["out_h"]), int(row["out_w"]), int(row["out_c"])
    if flags & FLAGS["ADD"]:
        if flags & FLAGS["RES_IBUF"]:
            r = banks.tensor(int(row["res_bank"]), out_h, out_w, out_c)
        else:
            r = tensor(act, int(row["res_offset"]), out_h, out_w, int(row["res_buf_c"]),
                       int(row["res_ch_off"]), out_c)  # fmt: skip
        m = np.array([int(row["add_m0"]), int(row["add_m1"])], np.int32)
        s = np.array([int(row["add_shift"])], np.int32)
        y = np.asarray(ops.add(y, np.array(r)[None], m, s, bool(flags & FLAGS["ADD_RELU"])))
    y = y[0]
    if flags & FLAGS["OUT_DDR"]:
        tensor(act, int(row["out_offset"]), out_h, out_w, int(row["out_buf_c"]),
               int(row["out_ch_off"]), out_c)[...] = y  # fmt: skip
    if flags & FLAGS["OUT_IBUF"]:
        pw = ceil_div(out_c, f.array_co)
        words = _words(y, pw, f.array_co).reshape(-1, f.array_co)
        banks.data[int(row["out_bank"]), : words.shape[0]] = words


def write_input(image: DeviceImage, memory: np.ndarray, x: np.ndarray) -> None:
    """The host's part of a run: image n of x [N, H, W, C] into its input buffer."""
    off, buf_c, ch_off = image.input_at
    h, w, c = image.input_shape
    for n in range(x.shape[0]):
        act = memory[n * image.image_bytes : (n + 1) * image.image_bytes]
        tensor(act, off, h, w, buf_c, ch_off, c)[...] = x[n]


def read_output(image: DeviceImage, memory: np.ndarray, batch: int) -> np.ndarray:
    off, buf_c, ch_off = image.output_at
    h, w, c = image.output_shape
    return np.stack(
        [
            np.array(tensor(memory[n * image.image_bytes :], off, h, w, buf_c, ch_off, c))
            for n in range(batch)
        ]
    )


def run(image: DeviceImage, x: np.ndarray, ops: ModuleType) -> np.ndarray:
    """x int8 [N, H, W, C] -> the program's output, through the packed bytes."""
    memory = np.zeros(x.shape[0] * image.image_bytes, np.uint8)
    write_input(image, memory, x)
    execute(image.preset, image.table(), image.weights, memory, x.shape[0], image.image_bytes, ops)
    return read_output(image, memory, x.shape[0])
