"""The PYNQ driver path against the twin: on the simulated board (pynq's own MMIO, buffers and
clock code), or on a board.

    python bench/bench_pynq.py [--size 224] [--reps 5] [--board zcu104] [--cycles rtl|none]
    python bench/bench_pynq.py --on-board [--overlay PATH/fpga_cnn.bit]     # on a PYNQ board

Table 1, per ResNet-50 instruction (ADDs fused): bytes the accelerator moves through DDR for one
image as the compiler planned it for the board's preset (activations read and written, weights
read, from core/descriptors.traffic: tensors kept on chip move nothing), and each descriptor's
cycles from the accelerator's per-descriptor PERF counters, read by the driver after the run and
exported as the per-layer metrics fpga_serve_device_layer_cycles_total{layer} (the column is
read back from those metrics). On a board they are the board's own counters. The simulated
board has no cycle model: with --cycles rtl (the default where Verilator is installed) its PERF
registers hold the counters the accelerator RTL left when the same packed program ran on it
cycle by cycle (tests/rtl/harness.py, the preset's DDR model; its output checked equal to the
twin's), so the column is the RTL's cycles carried through the driver's counter path; with
--cycles none they read 0.
Table 2: time per inference through the driver (descriptor and register programming, buffer
copies, and on the simulated board a datapath computing with the twin's numpy ops) against the
twin, and the host<->device bytes per inference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rtl_counters(image: Any, x: np.ndarray) -> list[int]:
    """The per-descriptor PERF counters of one run of ``image`` on the accelerator RTL."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fpga_serve.hw.twin import numpy_path, packed
    from rtl import harness

    f = image.preset
    result = harness.run(image, x, ddr=harness.Ddr.of(f), timeout=400_000_000)
    want = packed.run(image, x, numpy_path)
    if not (result.done and np.array_equal(harness.output(image, result), want)):
        raise SystemExit(f"the RTL run did not end exact (status {result.status:#x})")
    return list(result.perf)


def layer_cycles(metrics: Any, digest: str, names: list[str]) -> list[int]:
    """Each layer's cycles per run from the exported metrics."""
    value = metrics.registry.get_sample_value
    runs = value("fpga_serve_device_program_runs_total", {"device": "pynq", "program": digest})
    out = []
    for name in names:
        total = value(
            "fpga_serve_device_layer_cycles_total",
            {"device": "pynq", "program": digest, "layer": name},
        )
        out.append(int((total or 0) / (runs or 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--layers", type=int, default=12, help="rows of table 1 (0 = all)")
    parser.add_argument(
        "--board", default="zcu104", help="the simulated board (bitstreams/boards/boards.json)"
    )
    parser.add_argument(
        "--cycles",
        choices=["rtl", "none"],
        default="rtl" if shutil.which("verilator") else "none",
        help="what the simulated board's PERF counters hold (default: rtl with Verilator)",
    )
    parser.add_argument("--on-board", action="store_true", help="the PYNQ board pynq finds")
    parser.add_argument("--overlay", type=Path, help="with --on-board: the .bit (.hwh beside)")
    ns = parser.parse_args()
    warnings.simplefilter("ignore")
    from fpga_serve.compiler import CompileOptions
    from fpga_serve.core import descriptors
    from fpga_serve.core.isa import quantize_input
    from fpga_serve.hw import twin
    from fpga_serve.hw.pynq_device import PynqDevice
    from fpga_serve.hw.twin.device import TwinDevice
    from fpga_serve.hw.twin.executor import execute
    from fpga_serve.models import QuantizedResnet50
    from fpga_serve.service.metrics import Metrics

    if ns.on_board:
        device = PynqDevice(ns.overlay)
    else:
        from fpga_serve.hw.pynq_sim import simulate

        device = PynqDevice(pdev=simulate(ns.board))
    target = device.hwh_preset.name
    rng = np.random.default_rng(0)
    zoo = QuantizedResnet50(None, input_size=ns.size)
    calib = rng.normal(0, 50, (2, ns.size, ns.size, 3)).astype(np.float32)
    options = CompileOptions(calibration_method="max", target=target)
    program = zoo.compile(calib, options).compiled.program
    x = quantize_input(rng.normal(0, 50, (1, ns.size, ns.size, 3)), program.input_scale)

    metrics = Metrics()
    device.cycles_hook = metrics.device_cycles_hook("pynq")
    board = device.load(program)
    simulated = hasattr(device.pdev, "accelerator")
    source = "the board's counters"
    if simulated:
        source = "0: the simulated board has no cycle model (--cycles rtl: the RTL's)"
        if ns.cycles == "rtl":
            perf = rtl_counters(board.image, x)
            device.pdev.accelerator.perf_model = lambda i: perf[i]
            source = f"the accelerator RTL's counters (Verilator, {target} DDR model)"
    board.run(x)  # warm; its counters are the ones reported
    digest = board.digest[:12]
    names = [f"{i:03d} {instr.name}" for i, instr in enumerate(program.instrs)]
    counters = layer_cycles(metrics, digest, names)
    twin_steps: list[float] = []
    execute(program, x, twin.numpy_path, lambda instr, s: twin_steps.append(s))

    rows = []
    for instr, row, t_twin, cycles in zip(
        program.instrs, board.image.table(), twin_steps, counters, strict=True
    ):
        moved = descriptors.traffic(row)
        read, written = moved["input"] + moved["residual"], moved["output"]
        rows.append((instr.name, instr.op.name, read, written, moved["weights"], t_twin, cycles))
    clock = device.hwh_preset.clock_mhz
    board_name = device.board.name if device.board else "board"
    where = f"the simulated {board_name}" if simulated else f"{device.pdev.name} ({board_name})"
    print(
        f"\nTable 1: per layer, one image, ResNet-50 {ns.size}x{ns.size} on {where} (preset "
        f"{target}, {clock:g} MHz): DDR traffic, twin time, and the per-layer cycles the driver "
        f"exported (fpga_serve_device_layer_cycles_total, program {digest})"
    )
    print(
        f"{'layer':28} {'op':14} {'act read':>10} {'act write':>10} {'weights':>10} "
        f"{'twin ms':>8} {'cycles':>9} {'us':>8}"
    )
    shown = rows if ns.layers == 0 else rows[: ns.layers]
    for name, op, read, written, weights, t_twin, cycles in shown:
        print(
            f"{name[:28]:28} {op:14} {read:10,} {written:10,} {weights:10,} "
            f"{t_twin * 1e3:8.2f} {cycles:9,} {cycles / clock:8.1f}"
        )
    if len(shown) < len(rows):
        print(f"... {len(rows) - len(shown)} more layers")
    total = [sum(r[i] for r in rows) for i in (2, 3, 4, 6)]
    t_total = sum(r[5] for r in rows) * 1e3
    print(
        f"{'total':28} {'':14} {total[0]:10,} {total[1]:10,} {total[2]:10,} "
        f"{t_total:8.1f} {total[3]:9,} {total[3] / clock:8.1f}"
    )
    print(f"cycles: {source}; us: cycles at the preset's {clock:g} MHz")

    # The simulated board's datapath computes with the twin's numpy ops, so the driver's cost
    # is measured against the twin's numpy path (the native path is bench_twin.py's business).
    ref = TwinDevice(native=False).load(program)
    assert np.array_equal(ref.run(x), board.run(x)), "driver path differs from the twin"
    assert np.array_equal(ref.run(x), TwinDevice().load(program).run(x))

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_twin import median_ms

    t_twin = median_ms(lambda: ref.run(x), ns.reps)
    t_board = median_ms(lambda: board.run(x), ns.reps)
    out = program.buffer(program.output)
    io_bytes = x.nbytes + out.height * out.width * program.output.channels
    kind = "simulated board: its datapath is the twin's" if simulated else "the board"
    print(f"\nTable 2: per inference, batch 1 ({kind})")
    print(f"{'path':22} {'ms':>8} {'host<->device bytes':>20}")
    print(f"{'twin (numpy ops)':22} {t_twin:8.1f} {0:>20,}")
    print(f"{'pynq driver':22} {t_board:8.1f} {io_bytes:>20,}")
    print(
        f"driver overhead: {t_board - t_twin:+.1f} ms ({t_board / t_twin:.2f}x); weights "
        f"uploaded once: {sum(w.nbytes for w in program.weights):,} bytes"
    )


if __name__ == "__main__":
    main()
