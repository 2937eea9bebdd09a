"""Cycles of the accelerator RTL, every layer simulated cycle by cycle (Verilator), per network
and preset, with every tensor compared against the twin.

    python bench/bench_overlay.py                       # ResNet-50 at 224 on the ZCU104 preset
    python bench/bench_overlay.py --networks resnet50,resnet152,densenet121,vgg16 \\
        --presets zcu104,kv260,ultra96v2,pynq_z2 [--size 224] [--layers]

For each (network, preset): the zoo model (random weights: cycles do not depend on values) is
compiled by fpga_serve.compiler, planned for the preset and packed by hw/descriptors.py; the
Verilated accelerator (tests/rtl/harness.py) runs the whole program for one image behind the
testbench's DDR model at the preset's latency and usable bandwidth. Printed per layer (with
--layers, always for the first network and preset): the descriptor's cycles from its PERF
counter, its MACs and MAC utilisation (MACs / (cycles x array_ci x array_co)), the DDR bytes it
moves (weights once per band, input rows, residual, output: from the descriptor), its ideal
compute cycles (passes x pixels) and DDR cycles (bytes / bandwidth) and which is larger, and
its time at the preset's clock. Then the totals beside the Vitis AI DPU's 11.7-13.3 ms for
ResNet-50 on a ZCU104 (2 x B4096 at 300 MHz, measured end to end by Xilinx).

Exactness: the run's output is compared with the twin's packed executor; then (unless
--no-every-tensor) the same plan with every output also written to DDR and no buffer reuse runs
again and every tensor is compared with the twin's, at each descriptor's completion.
Everything here is simulation: nothing is measured on a board.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np

DPU_MS = (11.7, 13.3)


def compile_zoo(family: str, size: int):  # type: ignore[no-untyped-def]
    from fpga_serve.compiler import CompileOptions
    from fpga_serve.models import ZOO

    warnings.simplefilter("ignore")
    zoo = ZOO[family](None, input_size=size)
    calib = np.random.default_rng(0).normal(0, 50, (2, size, size, 3)).astype(np.float32)
    return zoo.compile(calib, CompileOptions(calibration_method="max")).compiled.program


def ideal_cycles(row, f) -> int:  # type: ignore[no-untyped-def]
    """One pixel a cycle through every pass of every band and channel block."""
    from fpga_serve.hw.descriptors import derive

    g = derive(row, f)
    return g.coblocks * g.passes * int(row["out_h"]) * int(row["out_w"])


def conv_macs_of(program, instr) -> int:  # type: ignore[no-untyped-def]
    """The array's MACs: a CONV's, without its fused ADD's per-element work."""
    from fpga_serve.core.isa import Opcode

    if instr.op is not Opcode.CONV:
        return 0
    kh, kw, cin, cout = program.weights[instr.weight].shape
    h, w, _ = program.shape(instr.output)
    return int(h * w * kh * kw * cin * cout)


def every_tensor_plan(program):  # type: ignore[no-untyped-def]
    """The same tiles with every output also written to DDR, each buffer its own bytes."""
    from fpga_serve.core.isa import Placement

    instrs = [
        dataclasses.replace(i, tile=dataclasses.replace(i.tile, out_ddr=True))
        for i in program.instrs
    ]
    offsets, at = [], 0
    for b in program.buffers:
        offsets.append(at)
        at += -(-(b.height * b.width * b.channels) // 64) * 64
    return dataclasses.replace(program, instrs=instrs, placement=Placement(offsets, at))


def run(  # type: ignore[no-untyped-def]
    family: str, program, preset_name: str, layers: bool, every: bool
) -> dict[str, object]:
    from fpga_serve.compiler.plan import plan
    from fpga_serve.core.isa import Opcode, preset
    from fpga_serve.hw import descriptors
    from fpga_serve.hw.twin import numpy_path, packed
    from rtl import harness

    f = preset(preset_name)
    planned = plan(program, f)
    image = descriptors.pack(planned)
    x = np.random.default_rng(1).integers(-128, 128, (1, *program.input_shape()), dtype=np.int8)
    ddr = harness.Ddr.of(f)
    harness.build(f)
    start = time.perf_counter()
    result = harness.run(image, x, ddr=ddr, timeout=400_000_000)
    wall = time.perf_counter() - start
    want = packed.run(image, x, numpy_path)
    exact = result.done and np.array_equal(harness.output(image, result), want)
    table = image.table()
    rows = []
    conv_macs = conv_cycles = 0
    for i, (row, instr) in enumerate(zip(table, planned.instrs, strict=True)):
        cycles = result.perf[i] if i < len(result.perf) else 0
        macs = conv_macs_of(planned, instr)
        moved = descriptors.traffic(row)
        ddr_cycles = sum(moved.values()) / ddr.bytes_per_cycle
        ideal = ideal_cycles(row, f)
        if instr.op is Opcode.CONV:
            conv_macs += macs
            conv_cycles += cycles
        rows.append(
            (
                i,
                instr.name[:34],
                instr.op.name,
                planned.shape(instr.output),
                cycles,
                macs,
                sum(moved.values()),
                ideal,
                ddr_cycles,
            )
        )
    every_ok = None
    if every:
        debug = every_tensor_plan(planned)
        dimage = descriptors.pack(debug)
        snaps = []
        for i, instr in enumerate(debug.instrs):
            off = debug.placement.offsets[instr.output.buffer]
            b = debug.buffer(instr.output)
            snaps.append((i, off, b.height * b.width * b.channels))
        dres = harness.run(dimage, x, ddr=ddr, snaps=snaps, timeout=400_000_000)
        mem = np.zeros(dimage.image_bytes, np.uint8)
        packed.write_input(dimage, mem, x)
        seen: dict[int, bool] = {}

        def compare(_image: int, index: int) -> None:
            instr = debug.instrs[index]
            off, ch_off = debug.placement.offsets[instr.output.buffer], instr.output.offset
            b = debug.buffer(instr.output)
            twin = packed.tensor(
                mem, off, b.height, b.width, b.channels, ch_off, instr.output.channels
            )
            got = np.frombuffer(dres.snaps[index].tobytes(), np.int8).reshape(
                b.height, b.width, b.channels
            )
            seen[index] = np.array_equal(got[..., ch_off : ch_off + instr.output.channels], twin)

        packed.execute(
            f, dimage.table(), dimage.weights, mem, 1, dimage.image_bytes, numpy_path, compare
        )
        every_ok = dres.done and len(seen) == len(debug.instrs) and all(seen.values())
    ms = result.cycles / (f.clock_mhz * 1e3)
    ddr_bytes = sum(st["bytes"] for st in result.stats.values())
    if layers:
        print(
            f"\n{family} at {program.input_shape()[0]} on {f.name}: {f.describe()}, "
            f"{f.clock_mhz:g} MHz, DDR {f.ddr_gbps:g} GB/s ({ddr.bytes_per_cycle:.1f} B/cycle), "
            f"latency {ddr.latency} cycles"
        )
        print(
            f"{'#':>3} {'layer':34} {'op':14} {'output':>14} {'cycles':>8} {'MMAC':>7} {'util':>5} "
            f"{'DDR KB':>8} {'ideal':>8} {'DDR cyc':>8} {'bound':>7} {'us':>7}"
        )
        for i, name, op, shape, cycles, macs, moved, ideal, dcyc in rows:
            util = (
                f"{macs / (cycles * f.array_ci * f.array_co):5.2f}" if macs and cycles else "     "
            )
            bound = "memory" if dcyc > ideal else "compute"
            print(
                f"{i:3} {name:34} {op:14} {'x'.join(map(str, shape)):>14} {cycles:8} "
                f"{macs / 1e6:7.1f} {util} {moved / 1024:8.0f} {ideal:8} {dcyc:8.0f} {bound:>7} "
                f"{cycles / f.clock_mhz:7.1f}"
            )
    return {
        "network": family,
        "preset": f.name,
        "cycles": result.cycles,
        "ms": ms,
        "conv_util": conv_macs / (conv_cycles * f.array_ci * f.array_co) if conv_cycles else 0.0,
        "ddr_mb": ddr_bytes / 1e6,
        "exact": exact,
        "every": every_ok,
        "wall": wall,
        "instrs": len(planned.instrs),
        "status": result.error or ("DONE" if result.done else "BUSY"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="resnet50")
    parser.add_argument("--presets", default="zcu104")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layers", action="store_true", help="per-layer tables for every run")
    parser.add_argument("--no-every-tensor", action="store_true")
    ns = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)")
    results = []
    first = True
    for family in ns.networks.split(","):
        t = time.perf_counter()
        program = compile_zoo(family, ns.size)
        print(
            f"{family} at {ns.size}: compiled in {time.perf_counter() - t:.0f} s, "
            f"{len(program.instrs)} instructions"
        )
        for preset_name in ns.presets.split(","):
            results.append(
                run(family, program, preset_name, ns.layers or first, not ns.no_every_tensor)
            )
            first = False
    print(
        f"\n{'network':12} {'preset':10} {'instr':>5} {'cycles':>10} {'ms':>7} {'conv util':>9} "
        f"{'DDR MB':>7} {'exact':>5} {'every tensor':>12} {'sim s':>6}"
    )
    for r in results:
        every = "-" if r["every"] is None else ("yes" if r["every"] else "NO")
        print(
            f"{r['network']:12} {r['preset']:10} {r['instrs']:5} {r['cycles']:10} {r['ms']:7.2f} "
            f"{r['conv_util']:9.2f} {r['ddr_mb']:7.1f} {'yes' if r['exact'] else 'NO':>5} "
            f"{every:>12} {r['wall']:6.0f}  {r['status']}"
        )
    for r in results:
        if r["network"] == "resnet50" and r["preset"] == "zcu104":
            print(
                f"\nResNet-50 at {ns.size}, batch 1, zcu104 at 300 MHz: {r['ms']:.2f} ms of "
                f"simulated cycles; Vitis AI DPU on a ZCU104: {DPU_MS[0]}-{DPU_MS[1]} ms "
                f"({DPU_MS[0] / r['ms']:.2f}-{DPU_MS[1] / r['ms']:.2f}x)"
            )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
