"""The twin's two compiled CONV kernels side by side on ResNet-50's CONV shapes: the fused VNNI
kernel (twin/vnni.py) and the AMX kernel (twin/amx.py), one CONV each, timed in turns.

    python bench/bench_conv_kernels.py [--reps 60]

Prints one table: for each shape (1x1 CONVs on rows read in place; 3x3 CONVs with padding 1
read from a zero-bordered copy, tap by tap for VNNI and through virtual rows for AMX), the
median milliseconds of one call of each kernel over --reps calls (each call's output compared
with the other's: equal, or the row says NO), their ratio, and each one's GMAC/s. Random
weights and activations: speed does not depend on values. Needs a CPU with AVX-512 VNNI; the
AMX columns need AMX-INT8 (else they say n/a).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

SHAPES = [
    # (name, H, W, Cin, Cout, k)
    ("1x1 56x56 64->256", 56, 56, 64, 256, 1),
    ("1x1 56x56 256->64", 56, 56, 256, 64, 1),
    ("1x1 28x28 512->128", 28, 28, 512, 128, 1),
    ("1x1 28x28 128->512", 28, 28, 128, 512, 1),
    ("1x1 14x14 1024->256", 14, 14, 1024, 256, 1),
    ("1x1 14x14 256->1024", 14, 14, 256, 1024, 1),
    ("1x1 7x7 2048->512", 7, 7, 2048, 512, 1),
    ("1x1 7x7 512->2048", 7, 7, 512, 2048, 1),
    ("3x3 56x56 64->64", 56, 56, 64, 64, 3),
    ("3x3 28x28 128->128", 28, 28, 128, 128, 3),
    ("3x3 14x14 256->256", 14, 14, 256, 256, 3),
    ("3x3 7x7 512->512", 7, 7, 512, 512, 3),
]


def median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=60)
    ns = parser.parse_args()

    from fpga_serve.hw.twin import amx, vnni

    if not vnni.available():
        sys.exit("no AVX-512 VNNI here: the fused kernels do not run on this CPU")
    has_amx = amx.available()
    rng = np.random.default_rng(1)
    print(f"one CONV a call, median of {ns.reps}; AMX {'yes' if has_amx else 'n/a'}")
    print(f"{'shape':22} {'GMAC':>6} {'VNNI ms':>8} {'AMX ms':>7} {'AMX/VNNI':>9} "
          f"{'VNNI GMAC/s':>12} {'AMX GMAC/s':>11} {'equal':>6}")  # fmt: skip
    for name, h, w, cin, cout, k in SHAPES:
        pad = k // 2
        x = rng.integers(0, 256, (1, h + 2 * pad, w + 2 * pad, cin), dtype=np.uint8)
        if pad:
            x[:, :pad], x[:, -pad:], x[:, :, :pad], x[:, :, -pad:] = 128, 128, 128, 128
        weight = rng.integers(-128, 128, (k * k * cin, cout), dtype=np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int32)
        mult = rng.integers(1 << 28, 1 << 30, cout).astype(np.int32)
        shift = np.full(cout, 36, np.int32)
        _, hs, ws, _ = x.shape
        flat = x.reshape(-1)
        low = np.int64(-128)
        packed = vnni.Packed(weight, bias, mult, shift)
        rb, taps = vnni.window_rows(1, h, w, 1, (hs, ws, cin), 0, (k, k))
        out_v = np.zeros(h * w * cout, np.uint8)
        v_args = (flat, rb, len(rb), taps, cin // 4, *packed.args(), low, cout, out_v, 0, cout,
                  out_v, 0, cout, *vnni.NO_ADD, False)  # fmt: skip
        vnni_ms = median_ms(lambda a=v_args: vnni.conv(*a), ns.reps)
        macs = h * w * cin * cout * k * k
        row = f"{name:22} {macs / 1e9:6.3f} {vnni_ms:8.3f}"
        if has_amx:
            packed_a = amx.Packed(weight, bias, mult, shift)
            count, pix = amx.virtual_rows(1, h, w, (hs, ws))
            out_a = np.zeros(h * w * cout, np.uint8)
            a_args = (amx.tile_config(), flat, 0, cin, count, vnni.window_taps(ws, cin, (k, k)),
                      cin // amx.CHUNK, *packed_a.args(), low, cout, pix, out_a, 0, cout, out_a,
                      0, cout, *vnni.NO_ADD, False)  # fmt: skip
            amx_ms = median_ms(lambda a=a_args: amx.conv(*a), ns.reps)
            equal = "yes" if np.array_equal(out_a, out_v) else "NO"
            row += (f" {amx_ms:7.3f} {amx_ms / vnni_ms:9.2f} {macs / vnni_ms / 1e6:12.0f} "
                    f"{macs / amx_ms / 1e6:11.0f} {equal:>6}")  # fmt: skip
        else:
            row += f" {'n/a':>7} {'n/a':>9} {macs / vnni_ms / 1e6:12.0f} {'n/a':>11} {'':>6}"
        print(row)


if __name__ == "__main__":
    main()
