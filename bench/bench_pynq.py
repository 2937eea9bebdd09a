"""The PYNQ driver path against the twin, on the simulated board (pynq's own MMIO and buffers).

    python bench/bench_pynq.py [--size 224] [--reps 5]

Table 1, per ResNet-50 instruction (ADDs fused): bytes the accelerator moves through DDR for one
image as the compiler planned it for the preset (activations read and written, weights read,
from hw/descriptors.traffic: tensors kept on chip move nothing) — what a board's memory system
must carry; and each descriptor's cycles from the accelerator's PERF counters, as the driver
exports them per layer (0 on the simulated board, which has no cycle model).
Table 2: time per inference through the driver (descriptor and register programming, buffer
copies, the simulated datapath) against the twin, and the host<->device bytes per inference.
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["FPGA_SERVE_PYNQ_SIMULATE"] = "1"

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--layers", type=int, default=12, help="rows of table 1 (0 = all)")
    ns = parser.parse_args()
    warnings.simplefilter("ignore")

    from fpga_serve.core.isa import quantize_input
    from fpga_serve.hw import descriptors
    from fpga_serve.hw.pynq_device import PynqDevice
    from fpga_serve.hw.twin.device import TwinDevice
    from fpga_serve.models import QuantizedResnet50

    rng = np.random.default_rng(0)
    zoo = QuantizedResnet50(None, input_size=ns.size)
    program = zoo.compile(
        rng.normal(0, 50, (2, ns.size, ns.size, 3)).astype(np.float32)
    ).compiled.program

    x = quantize_input(rng.normal(0, 50, (1, ns.size, ns.size, 3)), program.input_scale)
    import shutil
    import tempfile
    from pathlib import Path

    from fpga_serve.hw import twin
    from fpga_serve.hw.pynq_sim import write_simulation_bitstream
    from fpga_serve.hw.twin.executor import execute

    folder = Path(tempfile.mkdtemp())
    shutil.copy(
        Path(__file__).resolve().parent.parent / "bitstreams/boards/zcu104/fpga_cnn.hwh", folder
    )
    device = PynqDevice(write_simulation_bitstream(folder / "fpga_cnn.bit"))
    board = device.load(program)
    board.run(x)  # warm
    twin_steps: list[float] = []
    execute(program, x, twin.fast, lambda instr, s: twin_steps.append(s))
    board.run(x)
    board_steps = list(device.pdev.accelerator.step_seconds)
    # The accelerator's own per-descriptor counters (PERF window), as the driver exports them
    # (fpga_serve_device_layer_cycles): the simulated board has no cycle model, so they read 0
    # there; on a board they are the accelerator's cycles per layer.
    counters = device.descriptor_cycles(len(program.instrs))

    rows = []
    table = board.image.table()  # type: ignore[attr-defined]
    for instr, row, t_twin, t_board, cycles in zip(
        program.instrs, table, twin_steps, board_steps, counters, strict=True
    ):
        moved = descriptors.traffic(row)
        read, written = moved["input"] + moved["residual"], moved["output"]
        rows.append(
            (instr.name, instr.op.name, read, written, moved["weights"], t_twin, t_board, cycles)
        )
    print(
        f"\nTable 1: per layer, one image, ResNet-50 {ns.size}x{ns.size}: DDR traffic, and time "
        "in the twin vs in the board's datapath behind the driver (descriptor decode, DDR views)"
    )
    print(
        f"{'layer':28} {'op':14} {'act read':>10} {'act write':>10} {'weights':>10} "
        f"{'twin ms':>8} {'board ms':>9} {'cycles':>9}"
    )
    shown = rows if ns.layers == 0 else rows[: ns.layers]
    for name, op, read, written, weights, t_twin, t_board, cycles in shown:
        print(
            f"{name[:28]:28} {op:14} {read:10,} {written:10,} {weights:10,} "
            f"{t_twin * 1e3:8.2f} {t_board * 1e3:9.2f} {cycles:9,}"
        )
    if len(shown) < len(rows):
        print(f"... {len(rows) - len(shown)} more layers")
    total = [sum(r[i] for r in rows) for i in (2, 3, 4, 7)]
    times = [sum(r[i] for r in rows) * 1e3 for i in (5, 6)]
    print(
        f"{'total':28} {'':14} {total[0]:10,} {total[1]:10,} {total[2]:10,} "
        f"{times[0]:8.1f} {times[1]:9.1f} {total[3]:9,}"
    )
    print("cycles: the accelerator's per-descriptor counters (the simulated board has no cycle")
    print("model: they read 0 here; bench_overlay.py has the RTL's cycles)")

    # The simulated board's datapath computes with the twin's numpy ops, so the driver's cost
    # is measured against the twin's numpy path (the native path is bench_twin.py's business).
    twin = TwinDevice(native=False).load(program)
    assert np.array_equal(twin.run(x), board.run(x)), "driver path differs from the twin"
    assert np.array_equal(twin.run(x), TwinDevice().load(program).run(x))

    from bench_twin import median_ms

    t_twin = median_ms(lambda: twin.run(x), ns.reps)
    t_board = median_ms(lambda: board.run(x), ns.reps)
    out = program.buffer(program.output)
    io_bytes = x.nbytes + out.height * out.width * program.output.channels
    print("\nTable 2: per inference, batch 1 (simulated board: its datapath is the twin's)")
    print(f"{'path':22} {'ms':>8} {'host<->device bytes':>20}")
    print(f"{'twin (numpy ops)':22} {t_twin:8.1f} {0:>20,}")
    print(f"{'pynq driver (sim)':22} {t_board:8.1f} {io_bytes:>20,}")
    print(
        f"driver overhead: {t_board - t_twin:+.1f} ms ({t_board / t_twin:.2f}x); weights "
        f"uploaded once: {sum(w.nbytes for w in program.weights):,} bytes"
    )


if __name__ == "__main__":
    main()
