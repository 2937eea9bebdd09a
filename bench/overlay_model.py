"""An analytic cycle model of the accelerator, written from its description (bitstreams/README.md
"Execution" and "Hardware": the streamer's states, the movers' chunks, the AXI engines' limits)
and independent of the simulation: it reads only the packed descriptors and the preset, never a
simulated cycle.

Per descriptor, the largest of these paths, plus a fill before the first pixel and a tail:

- compute: the streamer. A pass issues its band's pixels one a cycle plus three state cycles
  (PASS, GAP, NEXT); a CONV pass also waits for its CI weight words to shift in behind the
  previous pass's swap (>= CI + 4 cycles a pass); each block of output channels adds a cycle,
  each band four, the start pad_top + 2 and the pipeline's drain 16.
- DDR: every byte the descriptor moves (its weight segment once per band, less what the weight
  FIFO read ahead during the previous descriptor; the input rows unless resident; the residual
  unless resident; the output if written) at the preset's usable bandwidth.
- each port on its own, one beat of AXI_DATA_BYTES a cycle at most and at most OUTSTANDING
  bursts in flight, each answered after the DDR latency (so a burst of b beats costs
  max(b, 2, (latency + b) / OUTSTANDING) cycles): the weights in blocks of BLOCK_BYTES over the
  weight ports; the input rows as one read per row (per pixel when the tensor is a channel
  slice), and at most one input-buffer word written a cycle; the residual as one read of up to
  CO bytes per pixel and channel block; the output likewise, one write burst per pixel and
  channel block (OUTSTANDING - 1 in flight), from the first last pass on.
- fill: the DDR latency and the first band's input rows (none when resident); tail: the last
  write answered (the DDR latency).

A run: START cycles and the DDR latency, then the descriptors with GAP cycles between them. The
weight FIFO reads ahead across descriptors with the bandwidth a descriptor leaves unused, up to
the FIFO's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fpga_serve.core.descriptors import FLAGS, traffic
from fpga_serve.core.isa import Opcode, Preset

PASS_STEPS = 3  # ST_PASS, ST_GAP, ST_NEXT
SWAP_STEPS = 4  # a pass's weights shift in after the previous pass's swap, then PASS
BAND_STEPS = 4  # ST_BAND, ST_BADV, ST_BFIX1, ST_BFIX2
DRAIN = 16  # pipeline stages
GAP = 2  # between descriptors: the next one taken from the fetch queue and decoded
START = 40  # at START: the first descriptor read and checked (~32 cycles)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Estimate:
    compute: int
    paths: dict[str, int]
    """cycles of each memory path: ddr, weights, input, residual, output"""
    fill: int
    tail: int

    @property
    def ddr(self) -> int:
        return max(self.paths.values())

    @property
    def cycles(self) -> int:
        return self.fill + max(self.compute, self.ddr) + self.tail

    @property
    def bound(self) -> str:
        if self.compute >= self.ddr:
            return "compute"
        return max(self.paths, key=lambda k: self.paths[k])


@dataclass(frozen=True)
class _Bus:
    f: Preset
    latency: int

    def bursts(self, n: float, beats: float, writes: bool = False) -> float:
        """Cycles of n bursts of ``beats`` beats on one port."""
        if n <= 0:
            return 0.0
        inflight = self.f.outstanding - (1 if writes else 0)
        return n * max(beats, 2.0, (self.latency + beats + (2 if writes else 0)) / inflight)


def _streamer(row: np.void, f: Preset) -> tuple[int, int]:
    """(the streamer's cycles, the cycle its first last pass starts)."""
    flags = int(row["flags"])
    mac = int(row["opcode"]) == Opcode.CONV
    fold = bool(flags & FLAGS["FOLD"])
    kh, kw, in_c = int(row["kernel_h"]), int(row["kernel_w"]), int(row["in_c"])
    lanes, taps_w = (kw * in_c, 1) if fold else (in_c, kw)
    passes = kh * taps_w * (_cdiv(lanes, f.array_ci) if mac else 1)
    blocks = _cdiv(int(row["out_c"]), f.array_co)
    out_h, out_w = int(row["out_h"]), int(row["out_w"])
    band_rows, bands = int(row["band_rows"]), int(row["bands"])
    total = int(row["pad_top"]) + 2
    first_last = 0
    for b in range(bands):
        pixels = min(band_rows, out_h - b * band_rows) * out_w
        period = max(pixels + PASS_STEPS, f.array_ci + SWAP_STEPS if mac else 0)
        if b == 0:
            first_last = total + 2 + (passes - 1) * period
        total += BAND_STEPS + blocks * (1 + passes * period)
    return total + DRAIN, first_last


def _input_rows(row: np.void) -> int:
    kh, sh, pt = int(row["kernel_h"]), int(row["stride_h"]), int(row["pad_top"])
    return max(0, min(int(row["in_h"]), (int(row["out_h"]) - 1) * sh - pt + kh))


def _first_rows(row: np.void) -> int:
    kh, sh, pt = int(row["kernel_h"]), int(row["stride_h"]), int(row["pad_top"])
    return min(int(row["in_h"]), max(0, (int(row["band_rows"]) - 1) * sh + kh - pt))


def _row_cycles(row: np.void, bus: _Bus) -> float:
    """Reading one input row and writing it into the input buffer."""
    f = bus.f
    in_w, in_c = int(row["in_w"]), int(row["in_c"])
    db = f.axi_data_bytes
    if in_c == int(row["in_buf_c"]):
        row_bytes = in_w * in_c
        n = _cdiv(row_bytes, f.read_burst * db)
        read = bus.bursts(n, row_bytes / db / n)
    else:
        read = bus.bursts(in_w, _cdiv(in_c, db) + 1)
    fold = int(row["flags"]) & FLAGS["FOLD"]
    words = int(row["out_w"]) if fold else in_w * _cdiv(in_c, f.array_co)
    return max(read, float(words))


def _chunks(row: np.void, f: Preset) -> tuple[int, float]:
    """(chunks, beats per chunk) of the residual reader and the writer."""
    out_c = int(row["out_c"])
    blocks = _cdiv(out_c, f.array_co)
    beats = (
        (blocks - 1) * _cdiv(f.array_co, f.axi_data_bytes)
        + _cdiv(out_c - (blocks - 1) * f.array_co, f.axi_data_bytes)
    ) / blocks
    return int(row["out_h"]) * int(row["out_w"]) * blocks, beats


def estimate_program(
    table: np.ndarray, f: Preset, bytes_per_cycle: float, latency: int
) -> list[Estimate]:
    """One Estimate per descriptor, in order (the weight FIFO's read-ahead carried along)."""
    bus = _Bus(f, latency)
    fifo = f.wfifo_words * f.array_co
    out: list[Estimate] = []
    ahead = 0  # weight bytes of this descriptor already in the FIFO when it starts
    block_beats = f.block_bytes / f.axi_data_bytes
    weight_rate = f.weight_ports * f.block_bytes / bus.bursts(1, block_beats)  # bytes a cycle
    for i, row in enumerate(table):
        moved = traffic(row)
        pre = min(ahead, moved["weights"])
        resident = bool(int(row["flags"]) & FLAGS["IN_IBUF"])
        per_row = _row_cycles(row, bus)
        first = 0 if resident else _first_rows(row)
        first_bytes = first * int(row["in_w"]) * int(row["in_c"])
        compute, first_last = _streamer(row, f)
        chunks, beats = _chunks(row, f)
        paths = {
            "ddr": (sum(moved.values()) - pre - first_bytes) / bytes_per_cycle,
            "weights": bus.bursts((moved["weights"] - pre) / f.block_bytes, block_beats)
            / f.weight_ports,
            "input": 0.0 if resident else (_input_rows(row) - first) * per_row,
            "residual": bus.bursts(chunks, beats) if moved["residual"] else 0.0,
            "output": first_last + bus.bursts(chunks, beats, writes=True)
            if moved["output"]
            else 0.0,
        }
        fill = latency + int(first * per_row) if first else 2
        tail = latency if moved["output"] else 0
        e = Estimate(compute, {k: int(v) for k, v in paths.items()}, fill, tail)
        out.append(e)
        # what the weight ports could still read during this descriptor, within the DDR's rate
        spare = max(
            0.0,
            min(
                e.cycles * bytes_per_cycle - (sum(moved.values()) - pre),
                e.cycles * weight_rate - (moved["weights"] - pre),
            ),
        )
        nxt = table[i + 1] if i + 1 < len(table) else None
        following = 0 if nxt is None else int(nxt["wgt_bytes"]) * int(nxt["bands"])
        ahead = int(min(spare, fifo, following))
    return out


def run_cycles(estimates: list[Estimate], latency: int) -> int:
    """A whole run's cycles (START to DONE) for one image."""
    return START + latency + sum(e.cycles for e in estimates) + GAP * len(estimates)
