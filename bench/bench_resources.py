"""FPGA resources of the accelerator per preset: yosys `synth_xilinx` on bitstreams/fpga_cnn/rtl.

    python bench/bench_resources.py [--presets zcu104,kv260,ultra96v2,pynq_z2] [--log DIR]

For each preset: cnn_accel with the preset's parameters (Preset.rtl_parameters), synthesised
by yosys (`synth_xilinx -family xcup -uram` for Zynq UltraScale+, `-family xc7` for Zynq-7000),
asserting no latches. Printed: DSP, BRAM (RAMB36 + RAMB18 / 2), URAM, LUT (logic, LUT RAM and
SRLs) and FF, as numbers and as a share of the part, plus the MAC array alone (cnn_array with
the adder trees it instantiates), and the yosys run's time and peak memory.

What yosys cannot see, said plainly: it maps each packed multiply of the array to one DSP, but
on UltraScale+ (DSP48E2) keeps the DSPs' cascade (PCIN) and post-adders in fabric, so the
array's group sums appear as adder trees on carry chains (cnn_sum) that Vivado would mostly put
inside the DSP48 chain: the "array" row is an upper bound on its LUT/FF cost, the DSP count is
right. On 7-series yosys packs the group sums into the DSP48E1s' post-adders. It does no
placement, routing or timing (nothing here says a clock rate is met), no retiming, and its
memory mapping (BRAM/URAM/LUT RAM choice) is its own, not Vivado's. Resource use for a board is
only known from Vivado.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(ROOT / "tests"))
from rtl.harness import RTL_DIR as RTL  # noqa: E402
from rtl.harness import RTL_SOURCES  # noqa: E402  (the one list of the RTL's files)

LUT_CELLS = {  # LUTs a cell takes
    **{f"LUT{i}": 1 for i in range(1, 7)},
    "RAM32M16": 8,
    "RAM64M8": 8,
    "RAM32M": 4,
    "RAM64M": 4,
    "RAM32X1D": 2,
    "RAM64X1D": 2,
    "RAM128X1D": 4,
    "RAM256X1D": 8,
    "RAM32X1S": 1,
    "RAM64X1S": 1,
    "RAM128X1S": 2,
    "SRL16E": 1,
    "SRLC32E": 1,
}
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE")


def script(preset) -> str:  # type: ignore[no-untyped-def]
    files = " ".join(map(str, RTL_SOURCES))
    params = " ".join(
        f"chparam -set {k} {v} cnn_accel;" for k, v in preset.rtl_parameters().items()
    )
    uram = " -uram" if preset.family == "xcup" and preset.part_limits.get("uram", 0) else ""
    return "\n".join(
        [
            f"read_verilog -I{RTL} {files}",
            params,
            f"synth_xilinx -family {preset.family} -top cnn_accel{uram}",
            "select -assert-none t:$dlatch t:$adlatch t:$_DLATCH* t:$_DLATCHSR*",
            "stat",
        ]
    )


def cells(stat: str, modules: dict[str, str] | None = None) -> dict[str, int]:
    """Cell counts of one module's `stat` text; with ``modules`` (sections()), the cells of the
    submodules it instantiates counted in, times their instances."""
    out: dict[str, int] = {}
    for line in stat.splitlines():
        m = re.match(r"\s+(\S+)\s+(\d+)$", line)
        if not m:
            continue
        name, n = m.group(1), int(m.group(2))
        if modules is not None and name in modules:
            for cell, k in cells(modules[name], modules).items():
                out[cell] = out.get(cell, 0) + n * k
        elif re.fullmatch(r"\w+", name):
            out[name] = out.get(name, 0) + n
    return out


def counts(c: dict[str, int]) -> dict[str, float]:
    return {
        "dsp": c.get("DSP48E2", 0) + c.get("DSP48E1", 0),
        "bram36": c.get("RAMB36E2", 0)
        + c.get("RAMB36E1", 0)
        + (c.get("RAMB18E2", 0) + c.get("RAMB18E1", 0)) / 2,
        "uram": c.get("URAM288", 0),
        "lut": sum(n * c.get(cell, 0) for cell, n in LUT_CELLS.items()),
        "ff": sum(c.get(cell, 0) for cell in FF_CELLS),
    }


def sections(log: str) -> dict[str, str]:
    """yosys `stat` text per module, by its full (parametrised) name ('design' for the total)."""
    text = log[log.rindex("Printing statistics.") :]
    parts = re.split(r"\n=== (.+?) ===\n", text)
    out = dict(zip(parts[1::2], parts[2::2], strict=False))
    if "design hierarchy" in out:
        out["design"] = out.pop("design hierarchy")
    return out


def run(preset, log_dir: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    ys = log_dir / f"{preset.name}.ys"
    log = log_dir / f"{preset.name}.log"
    ys.write_text(script(preset))
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        ["yosys", "-q", "-l", str(log), str(ys)], check=False, capture_output=True, text=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = log.read_text() if log.exists() else ""
    result: dict[str, object] = {
        "preset": preset.name,
        "ok": proc.returncode == 0,
        "wall": time.perf_counter() - start,
        "cpu": after.ru_utime - before.ru_utime,
        "peak_gb": after.ru_maxrss / 1e6,
        "error": proc.stderr[-500:] if proc.returncode else "",
    }
    if proc.returncode == 0:
        per = sections(text)
        result["total"] = counts(cells(per["design"]))
        array = next((body for name, body in per.items() if name.endswith("cnn_array")), "")
        result["array"] = counts(cells(array, per))  # with its adder trees (cnn_sum, cnn_add)
    return result


def main() -> None:
    from fpga_serve.core.isa import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="zcu104,kv260,ultra96v2,pynq_z2")
    parser.add_argument("--log", type=Path, help="keep the yosys scripts and logs here")
    ns = parser.parse_args()
    log_dir = ns.log or Path(tempfile.mkdtemp(prefix="yosys-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(["yosys", "-V"], check=True, capture_output=True, text=True).stdout
    load = os.getloadavg()[0]
    print(f"{version.strip()}; load average at start {load:.2f} (2 cores); logs in {log_dir}")
    rows = []
    for name in ns.presets.split(","):
        preset = PRESETS[name]
        r = run(preset, log_dir)
        rows.append((preset, r))
        status = "ok" if r["ok"] else f"FAILED {r['error']}"
        print(
            f"{name}: yosys {r['wall']:.0f} s wall, {r['cpu']:.0f} s CPU, "
            f"peak {r['peak_gb']:.1f} GB: {status}",
            flush=True,
        )
    header = ("preset", "part", "", "DSP", "BRAM36", "URAM", "LUT", "FF")
    print(
        f"\n{header[0]:10} {header[1]:22} {header[2]:6} "
        + " ".join(f"{h:>{w}}" for h, w in zip(header[3:], WIDTHS.values(), strict=True))
    )
    for preset, r in rows:
        if not r["ok"]:
            continue
        for what in ("total", "array"):
            c = r[what]
            assert isinstance(c, dict)
            label = preset.part if what == "total" else "  (of which the MAC array)"
            name = preset.name if what == "total" else ""
            values = " ".join(share(c, preset.part_limits, key, w) for key, w in WIDTHS.items())
            print(f"{name:10} {label[:22]:22} {what:6} {values}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


WIDTHS = {"dsp": 12, "bram36": 12, "uram": 10, "lut": 16, "ff": 16}


def share(c: dict[str, float], limits: dict[str, int], key: str, width: int) -> str:
    n = c[key]
    pct = f" {100 * n / limits[key]:5.1f}%" if limits.get(key) else ""
    return f"{n:>{width - len(pct)}.0f}{pct}"


if __name__ == "__main__":
    main()
