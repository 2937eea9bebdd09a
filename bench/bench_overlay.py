"""Cycles of the accelerator RTL, every layer simulated cycle by cycle (Verilator), per network
and preset, with every tensor compared against the twin and every layer against an analytic
model.

    python bench/bench_overlay.py                       # ResNet-50 at 224 on the ZCU104 preset
    python bench/bench_overlay.py --networks resnet152,densenet121,vgg16 \\
        --presets zcu104,kv260,ultra96v2,pynq_z2 --sample [--size 224] [--layers]
    python bench/bench_overlay.py --keras model.keras --presets pynq_z2   # a network of yours

For each (network, preset): the network (a zoo model with random weights: cycles do not depend
on values; or a Keras model file) is compiled by fpga_serve.compiler, planned for the preset and
packed by core/descriptors.py; the Verilated accelerator (tests/rtl/harness.py) runs it for one
image behind the testbench's DDR model at the preset's latency and usable bandwidth. Whole
networks by default; with --sample, the first layer of each shape class (opcode, kernel,
stride, fused ADD, output size) runs as a program of its own, with the layers before it that
it needs to read a single tensor from outside (a bottleneck's convolutions with its fused ADD):
its input then comes from DDR and its output goes there, even where the whole network keeps
them on chip (so a sampled layer is slower than the same layer inside its network).

Printed per layer (with --layers, always for the first run): the descriptor's cycles from its
PERF counter beside the analytic model's (bench/overlay_model.py: written from the design's
description, it never sees a simulated cycle) and their ratio, the model's compute (streamer)
and DDR cycles and which is larger (compute- or memory-bound), MACs and MAC utilisation (MACs /
(cycles x array_ci x array_co)), the DDR bytes it moves, and its time at the preset's clock.
Then per run the totals (simulated and modelled), and ResNet-50 against the Vitis AI DPU's
11.7-13.3 ms on a ZCU104 (2 x B4096 at 300 MHz, measured end to end by Xilinx).

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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import overlay_model

DPU_MS = (11.7, 13.3)


def _calibration(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 50, (2, *shape)).astype(np.float32)


def compile_network(name: str, size: int):  # type: ignore[no-untyped-def]
    """A zoo family at size x size, or a Keras model file (its own input size)."""
    from fpga_serve.compiler import CompileOptions, compile_model
    from fpga_serve.models import ZOO

    warnings.simplefilter("ignore")
    options = CompileOptions(calibration_method="max")
    if name in ZOO:
        zoo = ZOO[name](None, input_size=size)
        return zoo.compile(_calibration((size, size, 3)), options).compiled.program
    import keras

    model = keras.models.load_model(name, compile=False)
    shape = tuple(int(d) for d in model.input_shape[1:])
    return compile_model(model, _calibration(shape), options).program


def conv_macs_of(program, instr) -> int:  # type: ignore[no-untyped-def]
    """The array's MACs: a CONV's, without its fused ADD's per-element work."""
    from fpga_serve.core.isa import Opcode

    if instr.op is not Opcode.CONV:
        return 0
    kh, kw, cin, cout = program.weights[instr.weight].shape
    h, w, _ = program.shape(instr.output)
    return int(h * w * kh * kw * cin * cout)


def outside_reads(instrs) -> list:  # type: ignore[no-untyped-def]
    """Tensors the instructions read that none of them wrote before."""
    made, reads = set(), []
    for x in instrs:
        for r in (*x.inputs, *([x.residual] if x.residual is not None else [])):
            if r not in made and r not in reads:
                reads.append(r)
        made.add(x.output)
    return reads


def sample_windows(program, reach: int = 6) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """(first, last) instruction of each sampled layer's window: the first layer of each shape
    class, from the nearest instruction before it that makes the window read one tensor."""
    seen, out = set(), []
    for i, instr in enumerate(program.instrs):
        key = (instr.op, instr.kernel, instr.stride, instr.residual is not None)
        key += program.shape(instr.output)[:2]
        if key in seen:
            continue
        for first in range(i, max(-1, i - reach), -1):
            if len(outside_reads(program.instrs[first : i + 1])) == 1:
                seen.add(key)
                out.append((first, i))
                break
    return [w for w in out if not any(o != w and o[0] <= w[0] and w[1] <= o[1] for o in out)]


def window(program, first: int, last: int):  # type: ignore[no-untyped-def]
    """Instructions first..last as a program of their own (unplanned), with only the buffers
    they use."""
    instrs = program.instrs[first : last + 1]
    used = sorted({r.buffer for x in instrs for r in (*x.inputs, x.output, x.residual) if r})
    new = {b: i for i, b in enumerate(used)}

    def ref(r):  # type: ignore[no-untyped-def]
        return None if r is None else dataclasses.replace(r, buffer=new[r.buffer])

    moved = [
        dataclasses.replace(
            x,
            inputs=tuple(ref(r) for r in x.inputs),
            output=ref(x.output),
            residual=ref(x.residual),
            tile=None,
        )
        for x in instrs
    ]
    return dataclasses.replace(
        program,
        buffers=[dataclasses.replace(program.buffers[b], id=new[b]) for b in used],
        instrs=moved,
        input=ref(outside_reads(instrs)[0]),
        output=ref(instrs[-1].output),
        target=None,
        placement=None,
    )


def every_tensor_plan(program):  # type: ignore[no-untyped-def]
    """The same tiles with every output also written to DDR, each buffer its own bytes (the
    network's input and output in their own regions, as the compiler places them)."""
    from fpga_serve.core.isa import SPACES, Placement

    instrs = [
        dataclasses.replace(i, tile=dataclasses.replace(i.tile, out_ddr=True))
        for i in program.instrs
    ]
    own = {program.input.buffer: SPACES["IN"], program.output.buffer: SPACES["OUT"]}
    sizes = {code: 64 for code in SPACES.values()}
    offsets, spaces, at = [], [], 0
    for i, b in enumerate(program.buffers):
        size = -(-(b.height * b.width * b.channels) // 64) * 64
        if i in own:
            offsets.append(0)
            spaces.append(own[i])
            sizes[own[i]] = size
        else:
            offsets.append(at)
            spaces.append(SPACES["ACT"])
            at += size
    placement = Placement(offsets, max(at, 64), spaces, sizes[SPACES["IN"]], sizes[SPACES["OUT"]])
    return dataclasses.replace(program, instrs=instrs, placement=placement)


def every_tensor_exact(planned, x, ddr) -> bool:  # type: ignore[no-untyped-def]
    """Every instruction's output, written to DDR, equal to the twin's."""
    from fpga_serve.core import descriptors
    from fpga_serve.hw.twin import numpy_path, packed
    from rtl import harness

    debug = every_tensor_plan(planned)
    dimage = descriptors.pack(debug)
    snaps = []
    for i, instr in enumerate(debug.instrs):
        b = debug.buffer(instr.output)
        buf = instr.output.buffer
        where = (debug.placement.spaces[buf], debug.placement.offsets[buf])
        snaps.append((i, *where, b.height * b.width * b.channels))
    dres = harness.run(dimage, x, ddr=ddr, snaps=snaps, timeout=400_000_000)
    regions = packed.Regions.of(dimage, 1)
    packed.write_input(dimage, regions.memory[dimage.input_space], x)
    seen: dict[int, bool] = {}

    def compare(_image: int, index: int) -> None:
        instr = debug.instrs[index]
        buf, ch_off = instr.output.buffer, instr.output.offset
        mem = regions.memory[debug.placement.spaces[buf]]
        off = debug.placement.offsets[buf]
        b = debug.buffer(instr.output)
        twin = packed.tensor(mem, off, b.height, b.width, b.channels, ch_off, instr.output.channels)
        got = np.frombuffer(dres.snaps[index].tobytes(), np.int8).reshape(
            b.height, b.width, b.channels
        )
        seen[index] = np.array_equal(got[..., ch_off : ch_off + instr.output.channels], twin)

    f = dimage.preset
    packed.execute(f, dimage.table(), dimage.weights, regions, 1, numpy_path, compare)
    return dres.done and len(seen) == len(debug.instrs) and all(seen.values())


@dataclasses.dataclass
class Run:
    """One simulated program: its layers' rows and its totals."""

    rows: list[tuple]  # type: ignore[type-arg]
    cycles: int
    model: int
    conv_macs: int
    conv_cycles: int
    ddr_bytes: int
    exact: bool
    every: bool | None
    wall: float
    instrs: int
    status: str


def simulate(program, preset_name: str, every: bool) -> Run:  # type: ignore[no-untyped-def]
    from fpga_serve.compiler.plan import plan
    from fpga_serve.core import descriptors
    from fpga_serve.core.isa import Opcode, preset
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
    model = overlay_model.estimate_program(table, f, ddr.bytes_per_cycle, ddr.latency)
    rows = []
    conv_macs = conv_cycles = 0
    for i, (row, instr, e) in enumerate(zip(table, planned.instrs, model, strict=True)):
        cycles = result.perf[i] if i < len(result.perf) else 0
        macs = conv_macs_of(planned, instr)
        if instr.op is Opcode.CONV:
            conv_macs += macs
            conv_cycles += cycles
        moved = sum(descriptors.traffic(row).values())
        rows.append(
            (i, instr.name[:34], instr.op.name, planned.shape(instr.output), cycles, e, macs, moved)
        )
    return Run(
        rows=rows,
        cycles=result.cycles,
        model=overlay_model.run_cycles(model, ddr.latency),
        conv_macs=conv_macs,
        conv_cycles=conv_cycles,
        ddr_bytes=sum(st["bytes"] for st in result.stats.values()),
        exact=exact,
        every=every_tensor_exact(planned, x, ddr) if every else None,
        wall=wall,
        instrs=len(planned.instrs),
        status=result.error or ("DONE" if result.done else "BUSY"),
    )


HEADER = (
    f"{'#':>4} {'layer':34} {'op':14} {'output':>14} {'cycles':>8} {'model':>8} {'sim/m':>5} "
    f"{'compute':>8} {'DDR cyc':>8} {'bound':>8} {'MMAC':>7} {'util':>5} {'DDR KB':>8} {'us':>7}"
)


def print_rows(run: Run, f, offset: int = 0) -> None:  # type: ignore[no-untyped-def]
    """A table row per descriptor; ``offset``: a window's first instruction in its network."""
    for i, name, op, shape, cycles, e, macs, moved in run.rows:
        util = f"{macs / (cycles * f.array_ci * f.array_co):5.2f}" if macs and cycles else ""
        ratio = f"{cycles / e.cycles:5.2f}" if e.cycles else ""
        print(
            f"{offset + i:4} {name:34} {op:14} {'x'.join(map(str, shape)):>14} "
            f"{cycles:8} {e.cycles:8} {ratio:>5} {e.compute:8} {e.ddr:8} {e.bound:>8} "
            f"{macs / 1e6:7.1f} {util:>5} {moved / 1024:8.0f} {cycles / f.clock_mhz:7.1f}"
        )


def merge(runs: list[Run]) -> Run:
    """Sampled windows: their sums."""
    return Run(
        rows=[r for run in runs for r in run.rows],
        cycles=sum(r.cycles for r in runs),
        model=sum(r.model for r in runs),
        conv_macs=sum(r.conv_macs for r in runs),
        conv_cycles=sum(r.conv_cycles for r in runs),
        ddr_bytes=sum(r.ddr_bytes for r in runs),
        exact=all(r.exact for r in runs),
        every=None if any(r.every is None for r in runs) else all(bool(r.every) for r in runs),
        wall=sum(r.wall for r in runs),
        instrs=sum(r.instrs for r in runs),
        status=next((r.status for r in runs if r.status != "DONE"), "DONE"),
    )


def run(name: str, program, preset_name: str, sample: bool, layers: bool, every: bool):  # type: ignore[no-untyped-def]
    from fpga_serve.core.isa import preset
    from rtl import harness

    f = preset(preset_name)
    ddr = harness.Ddr.of(f)
    if layers:
        print(
            f"\n{name} at {program.input_shape()[0]} on {f.name} "
            f"({'sampled layers' if sample else 'whole network'}): "
            f"{f.describe()}, {f.clock_mhz:g} MHz, DDR {f.ddr_gbps:g} GB/s "
            f"({ddr.bytes_per_cycle:.1f} B/cycle), latency {ddr.latency} cycles\n{HEADER}"
        )
    if not sample:
        result = simulate(program, preset_name, every)
        if layers:
            print_rows(result, f)
        return result
    runs = []
    for first, last in sample_windows(program):
        part = simulate(window(program, first, last), preset_name, every)
        if layers:
            print_rows(part, f, offset=first)
        runs.append(part)
    return merge(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="resnet50", help="zoo families, comma-separated")
    parser.add_argument("--keras", action="append", default=[], help="a Keras model file")
    parser.add_argument("--presets", default="zcu104")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--sample", action="store_true", help="one layer per shape class")
    parser.add_argument("--layers", action="store_true", help="per-layer tables for every run")
    parser.add_argument("--no-every-tensor", action="store_true")
    ns = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)")
    from fpga_serve.core.isa import preset

    results = []
    first = True
    for name in [*filter(None, ns.networks.split(",")), *ns.keras]:
        t = time.perf_counter()
        program = compile_network(name, ns.size)
        label = Path(name).stem
        took = time.perf_counter() - t
        print(f"{label}: compiled in {took:.0f} s, {len(program.instrs)} instructions")
        for preset_name in ns.presets.split(","):
            r = run(
                label, program, preset_name, ns.sample, ns.layers or first, not ns.no_every_tensor
            )
            results.append((label, preset(preset_name), r))
            first = False
    print(
        f"\n{'network':12} {'preset':10} {'layers':7} {'instr':>5} {'cycles':>10} {'model':>10} "
        f"{'sim/m':>5} {'ms':>7} {'conv util':>9} {'DDR MB':>7} {'exact':>5} {'every tensor':>12} "
        f"{'sim s':>6}"
    )
    for label, f, r in results:
        every = "-" if r.every is None else ("yes" if r.every else "NO")
        util = r.conv_macs / (r.conv_cycles * f.array_ci * f.array_co) if r.conv_cycles else 0.0
        print(
            f"{label:12} {f.name:10} {'sampled' if ns.sample else 'all':7} {r.instrs:5} "
            f"{r.cycles:10} {r.model:10} {r.cycles / r.model:5.2f} "
            f"{r.cycles / (f.clock_mhz * 1e3):7.2f} "
            f"{util:9.2f} {r.ddr_bytes / 1e6:7.1f} {'yes' if r.exact else 'NO':>5} {every:>12} "
            f"{r.wall:6.0f}  {r.status}"
        )
    for label, f, r in results:
        if label == "resnet50" and not ns.sample:
            ms = r.cycles / (f.clock_mhz * 1e3)
            print(
                f"\nResNet-50 at {ns.size}, batch 1, {f.name} at {f.clock_mhz:g} MHz: {ms:.2f} ms "
                f"of simulated cycles (model {r.model / (f.clock_mhz * 1e3):.2f} ms); Vitis AI DPU "
                f"on a ZCU104: {DPU_MS[0]}-{DPU_MS[1]} ms "
                f"({DPU_MS[0] / ms:.2f}-{DPU_MS[1] / ms:.2f}x)"
            )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
