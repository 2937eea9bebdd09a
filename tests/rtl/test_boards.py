"""The board flow checked as far as it can be without Vivado: one source of truth
(bitstreams/boards/boards.json + spec.json's presets + the RTL header), the Vivado Tcl run under
tclsh against a recording stand-in of the Vivado commands it uses (tests/rtl/vivado/), the generated
.hwh files read by pynq's own metadata parser and compared with what the Tcl built, and the
refusals: unknown boards, missing board files, a board file for another part, a PL clock the PS
cannot make, timing not met, an implementation that failed."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from fpga_serve.boardflow import config, generate
from fpga_serve.boardflow.facts import IP_VLNV, RTL_DIR, facts, read_accelerator
from fpga_serve.core.boards import ACCELERATOR, BOARDS, BOARDS_DIR, INTC, BoardError
from fpga_serve.core.isa import PRESETS, SPEC_VERSION

from rtl.vivado import harness

# Without tclsh these tests skip, except under FPGA_SERVE_REQUIRE_TOOLS=1 (.ci/run installs
# it): there a missing tclsh fails them (tests/helpers/external_tools.py).
pytestmark = pytest.mark.tools("tclsh")
NAMES = sorted(BOARDS)
ACC = ACCELERATOR["instance"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, harness.Run]:
    """Every board built once in the stand-in, to the end (bitstream and copies)."""
    runs = {}
    for name in NAMES:
        runs[name] = harness.run(name, tmp_path_factory.mktemp(name))
    return runs


def close(got: float, want: float, tol: float = config.CLOCK_TOLERANCE) -> bool:
    return abs(got - want) <= abs(want) * tol


# --- the source of truth --------------------------------------------------------------------


def test_every_board_agrees_with_its_preset_its_ps_and_the_rtl() -> None:
    for board in BOARDS.values():
        assert board.problems() == [], board.name
        f = facts(board)
        assert {m.name for m in f.masters} == set(board.hp_ports)
        assert f.control_addr_bits == 16 and board.control_range == 1 << 16
        divisors = board.ps_divisors()
        assert divisors is not None
        assert close(board.pll_mhz / (divisors[0] * divisors[1]), board.ps_clock_mhz, 1e-6)


def test_a_board_that_contradicts_its_preset_or_ps_is_refused() -> None:
    zcu = BOARDS["zcu104"]
    z2 = BOARDS["pynq_z2"]
    cases: list[tuple[Any, str]] = [
        # KV260's IOPLL (1000 MHz) cannot make 300 MHz: why kv260 uses a clk_wiz.
        (
            dataclasses.replace(BOARDS["kv260"], clock_source="ps"),
            r"cannot make 300 MHz from its IOPLL at 1000 MHz",
        ),
        (
            dataclasses.replace(zcu, preset=PRESETS["pynq_z2"]),
            r"family xc7, the zynq_ultra_ps_e PS is xcup",
        ),
        (
            dataclasses.replace(z2, preset=dataclasses.replace(z2.preset, max_burst=256)),
            r"bursts up to 256 beats, S_AXI_HP0 is AXI3 \(16\)",
        ),
        (
            dataclasses.replace(z2, preset=dataclasses.replace(z2.preset, axi_data_bytes=16)),
            r"S_AXI_HP0 cannot be 128 bits wide",
        ),
        (
            dataclasses.replace(zcu, hp_ports={**zcu.hp_ports, "m_axi_wt1": ""}),
            r"m_axi_wt1 must be connected",
        ),
        (
            dataclasses.replace(zcu, hp_ports={**zcu.hp_ports, "m_axi_in": "S_AXI_HP7_FPD"}),
            r"has no port S_AXI_HP7_FPD",
        ),
        (
            dataclasses.replace(zcu, control_base=0x8000_0000),
            r"control port at 0x80000000 .* is not aligned inside M_AXI_HPM0_FPD",
        ),
        (dataclasses.replace(zcu, intc_base=zcu.control_base), r"overlap"),
    ]
    for board, message in cases:
        with pytest.raises(BoardError, match=message):
            facts(board)
    with pytest.raises(BoardError, match=r"boards.json maps masters .* cnn_accel\.v has"):
        facts(
            dataclasses.replace(
                zcu, hp_ports={k: v for k, v in zcu.hp_ports.items() if k != "m_axi_rs"}
            )
        )


def test_generated_files_are_current(tmp_path: Path) -> None:
    assert generate.main(["--check"]) == 0
    path = next(iter(generate.outputs()))
    saved = path.read_text()
    try:
        path.write_text(saved.replace("set cfg(part)", "set cfg(part) xc7z010clg400-1 ;#"))
        assert generate.main(["--check"]) == 1
    finally:
        path.write_text(saved)


@pytest.mark.tools("yosys")
def test_the_rtl_header_reader_agrees_with_yosys(tmp_path: Path) -> None:
    top = read_accelerator()
    others = [str(p) for p in sorted(RTL_DIR.glob("*.v")) if p != top.path]
    for preset in ("zcu104", "pynq_z2"):
        params = PRESETS[preset].rtl_parameters()
        chparam = " ".join(f"-chparam {k} {v}" for k, v in params.items())
        out = tmp_path / f"{preset}.json"
        script = (
            f"read_verilog -lib -I {RTL_DIR} {' '.join(others)}; "
            f"read_verilog -I {RTL_DIR} {top.path}; "
            f"hierarchy -top {top.name} {chparam}; proc; write_json {out}"
        )
        subprocess.run(["yosys", "-q", "-p", script], check=True, capture_output=True, timeout=300)
        module = next(m for k, m in json.loads(out.read_text())["modules"].items() if top.name in k)
        yosys_ports = {n: (p["direction"], len(p["bits"])) for n, p in module["ports"].items()}
        mine = {
            p.name: ("output" if p.direction == "out" else "input", p.width(top.params(params)))
            for p in top.ports
        }
        assert mine == yosys_ports, preset


# --- the Tcl in the stand-in ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_the_tcl_builds_the_board_the_source_of_truth_describes(
    built: dict[str, harness.Run], name: str
) -> None:
    run = built[name]
    assert run.returncode == 0, run.stderr
    r = run.record
    b = BOARDS[name]
    p = b.preset
    f = facts(b)
    assert (r.part, r.board_part, r.board_connections) == (
        p.part,
        b.board_part,
        b.board_connections,
    )
    # The accelerator IP: packaged under spec.json's VLNV, configured with the preset.
    assert r.cores == {IP_VLNV: True}
    assert r.blocks == {f"{ACCELERATOR['control']}/reg0": b.control_range}
    assert r.cells[ACC] == IP_VLNV
    acc = r.config[ACC]
    assert {k: int(acc[k]) for k in p.rtl_parameters()} == p.rtl_parameters()
    assert (acc["PRESET"], acc["SPEC_VERSION"]) == (p.name, SPEC_VERSION)
    # The PS with this build's settings; its PL clock from the PLL boards.json names.
    ps = b.ps.instance
    assert r.cells[ps] == b.ps.vlnv
    for key, value in f.ps_config.items():
        assert r.config[ps][key] == value, key
    d0, d1 = b.ps_divisors() or (0, 0)
    clk = b.ps.pl_clock
    assert (int(r.config[ps][clk["divisor0"]]), int(r.config[ps][clk["divisor1"]])) == (d0, d1)
    assert close(r.freq[f"{ps}/{clk['pin']}"], b.ps_clock_mhz * 1e6)
    # The accelerator's clock at the preset's frequency, from the PS or the clk_wiz.
    assert close(r.freq[f"{ACC}/{ACCELERATOR['clock']}"], p.clock_mhz * 1e6)
    clock_net = r.net(f"{ACC}/{ACCELERATOR['clock']}")
    source = f"{ps}/{clk['pin']}" if b.clock_source == "ps" else "clk_wiz_0/clk_out1"
    assert clock_net[0] == source
    # Masters: each through a SmartConnect to its HP port in boards.json, at the preset's width.
    for master, port in b.hp_ports.items():
        pin = f"{ACC}/{master}"
        if not port:
            assert r.peer(pin) is None
            continue
        assert r.widths[pin] == str(p.axi_data_bytes * 8)
        smc = r.peer(pin)
        assert smc is not None and r.cells[smc.split("/")[0]].endswith(":smartconnect:1.0")
        assert r.peer(f"{smc.split('/')[0]}/M00_AXI") == f"{ps}/{port}"
        assert r.config[ps][b.ps.hp_ports[port].width_param] == str(p.axi_data_bytes * 8)
        ddr = r.addr[pin][f"{ps}/{b.ps.hp_ports[port].space}/{b.ps.hp_ports[port].segment}"]
        assert ddr == (b.ps.ddr_low[0], b.ps.ddr_low[1] - b.ps.ddr_low[0] + 1)
    # Control port and interrupt controller where the driver expects them.
    space = f"{ps}/Data"
    assert r.addr[space][f"{ACC}/{ACCELERATOR['control']}/reg0"] == (
        b.control_base,
        b.control_range,
    )
    assert r.addr[space][f"{INTC['instance']}/S_AXI/Reg"] == (b.intc_base, b.intc_range)
    assert r.peer(f"{ACC}/{ACCELERATOR['control']}") == "ctrl_smc/M00_AXI"
    assert r.peer(f"{ps}/{b.control_master}") == "ctrl_smc/S00_AXI"
    # The interrupt: accelerator -> axi_intc -> the PS's interrupt line.
    assert r.net(f"{ACC}/{ACCELERATOR['interrupt']}") == [
        f"{ACC}/{ACCELERATOR['interrupt']}",
        f"{INTC['instance']}/intr",
    ]
    assert r.net(f"{ps}/{b.ps.irq_pin}") == [f"{INTC['instance']}/irq", f"{ps}/{b.ps.irq_pin}"]
    # .bit and .hwh copied under one basename.
    assert sorted(x.name for x in run.out_dir.iterdir()) == ["fpga_cnn.bit", "fpga_cnn.hwh"]
    assert "stand-in bitstream of fpga_cnn" in (run.out_dir / "fpga_cnn.bit").read_text()
    assert "stand-in hardware handoff" in (run.out_dir / "fpga_cnn.hwh").read_text()


def _copy_flow(tmp: Path) -> Path:
    """A copy of bitstreams/boards/vivado/ to edit; its scripts still read the repository's RTL."""
    dest = tmp / "bitstreams" / "boards" / "vivado"
    shutil.copytree(BOARDS_DIR / "vivado", dest)
    (tmp / "bitstreams" / "fpga_cnn").mkdir(parents=True)
    (tmp / "bitstreams" / "fpga_cnn" / "rtl").symlink_to(RTL_DIR)
    return dest


def _edit_config(flow: Path, board: str, old: str, new: str) -> None:
    path = flow / "config" / f"{board}.tcl"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_tcl_refuses_what_vivado_would_get_wrong(tmp_path: Path) -> None:
    flow = _copy_flow(tmp_path)
    build = flow / "build.tcl"

    def fails(board: str, message: str, **env: str) -> None:
        run = harness.run(board, tmp_path / f"run{len(list(tmp_path.iterdir()))}", build, env)
        assert run.returncode == 1 and message in run.stderr, run.stderr[-2000:]
        assert not run.out_dir.exists(), "nothing may be copied from a failed build"

    fails("zc104", "no board 'zc104'")
    # Board files for another part than the preset's (Avnet's ultra96v2 1.2 is for -1-i).
    _edit_config(
        flow, "ultra96v2", "em.avnet.com:ultra96v2:part0:1.0", "avnet.com:ultra96v2:part0:1.2"
    )
    fails(
        "ultra96v2",
        "are for part xczu3eg-sbva484-1-i; preset ultra96v2 is built for xczu3eg-sbva484-1-e",
    )
    _edit_config(flow, "ultra96v2", "avnet.com:ultra96v2:part0:1.2", "avnet.com:ultra96:part0:9.9")
    fails(
        "ultra96v2",
        "the board files avnet.com:ultra96:part0:9.9 (Avnet Ultra96-V2) are not installed",
    )
    # The PS asked for a PL clock its PLL cannot make (KV260 without its clk_wiz).
    _edit_config(flow, "kv260", "set cfg(clock_source) mmcm", "set cfg(clock_source) ps")
    _edit_config(flow, "kv260", "set cfg(ps_clock_mhz) 100", "set cfg(ps_clock_mhz) 300")
    _edit_config(
        flow,
        "kv260",
        "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ 100",
        "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ 300",
    )
    fails("kv260", "the PS's pl_clk0 runs at '333.330000' MHz; preset kv260 needs 300 MHz")
    # Timing not met, implementation failed: no bitstream.
    fails("zcu104", "timing is not met at 300 MHz (WNS -0.2 ns", STUB_WNS="-0.2")
    fails("zcu104", "timing is not met at 300 MHz (WNS 0.05 ns, WHS -0.01 ns", STUB_WHS="-0.01")
    fails("zcu104", "implementation stopped at 45%", STUB_IMPL_FAIL="1")


def test_the_tcl_names_the_vivado_version_it_assumed(tmp_path: Path) -> None:
    run = harness.run("zcu104", tmp_path, env={"STUB_VIVADO_VERSION": "2023.2"}, last_step="bd")
    assert run.returncode == 0, run.stderr
    assert "written for Vivado 2024.1; this is Vivado 2023.2" in run.stdout
    assert not run.out_dir.exists()  # stopped after the block design


def test_the_stand_in_catches_a_wrong_name_in_the_source_of_truth(tmp_path: Path) -> None:
    """boards.json's PS facts are checked against the stand-in's own knowledge of the IP."""
    flow = _copy_flow(tmp_path)
    _edit_config(flow, "zcu104", "PSU__SAXIGP2__DATA_WIDTH 128", "PSU__SAXIGP2__DATAWIDTH 128")
    run = harness.run("zcu104", tmp_path / "a", flow / "build.tcl")
    assert run.returncode == 1 and "has no parameter PSU__SAXIGP2__DATAWIDTH" in run.stderr
    _edit_config(flow, "pynq_z2", "set cfg(irq_pin) IRQ_F2P", "set cfg(irq_pin) pl_ps_irq0")
    run = harness.run("pynq_z2", tmp_path / "b", flow / "build.tcl")
    assert (
        run.returncode == 1
        and "no pin '/processing_system7_0/pl_ps_irq0'" in run.stderr + run.stdout
    )


# --- the committed .hwh files -----------------------------------------------------------------


def _same(a: str, b: str) -> bool:
    try:
        return close(float(a), float(b))
    except ValueError:
        return a == b


def _hwh(name: str) -> ET.Element:
    return ET.parse(BOARDS_DIR / name / "fpga_cnn.hwh").getroot()


def _hwh_design(root: ET.Element) -> dict[str, Any]:
    """Cells, interface nets, scalar nets, addresses and parameters of an .hwh."""
    cells = {m.get("INSTANCE"): m for m in root.iter("MODULE")}
    buses: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    nets: dict[str, set[str]] = defaultdict(set)
    for name, m in cells.items():
        for bi in m.iter("BUSINTERFACE"):
            buses[bi.get("BUSNAME", "")].append(
                (f"{name}/{bi.get('NAME')}", bi.get("TYPE", ""), bi.get("DATAWIDTH", ""))
            )
        physical = {pm.get("PHYSICAL") for pm in m.iter("PORTMAP")}
        for port in m.iter("PORT"):
            if port.get("NAME") in physical or not port.get("SIGNAME"):
                continue
            nets[port.get("SIGNAME", "")].add(f"{name}/{port.get('NAME')}")
    intf = set()
    for busname, ends in buses.items():
        if busname != "__NOC__":
            assert len(ends) == 2, busname
            master, slave = sorted(ends, key=lambda e: e[1] != "MASTER")
            intf.add((master[0], slave[0]))
    return {
        "cells": {n: m.get("VLNV") for n, m in cells.items()},
        "intf": intf,
        "nets": {frozenset(n) for n in nets.values()},
        "params": {
            n: {p.get("NAME"): p.get("VALUE") for p in m.find("PARAMETERS") or []}
            for n, m in cells.items()
        },
        "memranges": [(n, r.attrib) for n, m in cells.items() for r in m.iter("MEMRANGE")],
        "ports": {n: {p.get("NAME"): p for p in m.iter("PORT")} for n, m in cells.items()},
        "widths": {e[0]: e[2] for ends in buses.values() for e in ends},
    }


@pytest.mark.parametrize("name", NAMES)
def test_the_hwh_is_the_block_design_the_tcl_builds(
    built: dict[str, harness.Run], name: str
) -> None:
    r = built[name].record
    h = _hwh_design(_hwh(name))
    b = BOARDS[name]
    assert h["cells"] == r.cells
    assert h["intf"] == set(r.intf_nets)
    assert h["nets"] == {frozenset(n) for n in r.nets}
    # PL clocks 1-3 are disabled: only their enables are written alike.
    unused_clock = re.compile(r"(PL|FCLK|FPGA)[123]_(?!ENABLE)")
    for cell, params in h["params"].items():
        for key, value in params.items():
            if (
                key in r.config[cell]
                and not key.endswith("ACT_FREQMHZ")
                and not unused_clock.search(key)
            ):
                assert _same(r.config[cell][key], value), (cell, key)
    ps = b.ps.instance
    act = b.ps.pl_clock["act_freq"]
    assert close(float(h["params"][ps][act]), float(r.config[ps][act]))
    for cell, ports in h["ports"].items():
        for pname, port in ports.items():
            if port.get("SIGIS") == "clk" and f"{cell}/{pname}" in r.freq:
                assert close(int(port.get("CLKFREQUENCY", "0")), r.freq[f"{cell}/{pname}"]), (
                    cell,
                    pname,
                )
    for pin, width in h["widths"].items():
        if pin.startswith(ACC) and r.peer(pin):
            assert r.widths[pin] == width, pin
    # Vivado names a segment after the slave's memory map (axi_intc_0/S_AXI/Reg), the .hwh after
    # its interface (s_axi): compared without case.
    recorded = {(sp, seg.lower()): v for sp, segs in r.addr.items() for seg, v in segs.items()}
    for cell, mr in h["memranges"]:
        base = int(mr["BASEVALUE"], 16)
        size = int(mr["HIGHVALUE"], 16) - base + 1
        if cell == ps:
            key = (
                f"{ps}/Data",
                f"{mr['INSTANCE']}/{mr['SLAVEBUSINTERFACE']}/{mr['ADDRESSBLOCK']}".lower(),
            )
        else:
            hp = b.ps.hp_ports[mr["SLAVEBUSINTERFACE"]]
            key = (
                f"{cell}/{mr['MASTERBUSINTERFACE']}",
                f"{ps}/{hp.space}/{mr['ADDRESSBLOCK']}".lower(),
            )
        assert recorded[key] == (base, size), key


@pytest.mark.parametrize("name", NAMES)
def test_the_hwh_ports_are_the_rtl_ports(name: str) -> None:
    f = facts(BOARDS[name])
    ports = _hwh_design(_hwh(name))["ports"][ACC]
    want = {p.name: ("O" if p.direction == "out" else "I", p.width(f.params)) for p in f.top.ports}
    got = {
        n: (p.get("DIR"), int(p.get("LEFT", "0")) - int(p.get("RIGHT", "0")) + 1)
        for n, p in ports.items()
    }
    assert got == want


@pytest.mark.parametrize("name", NAMES)
def test_pynq_reads_every_hwh_as_the_board_describes(name: str) -> None:
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser

    b = BOARDS[name]
    parser = RuntimeMetadataParser(Metadata(input=str(BOARDS_DIR / name / "fpga_cnn.hwh")))
    acc = parser.ip_dict[ACC]
    assert (acc["type"], acc["phys_addr"], acc["addr_range"]) == (
        IP_VLNV,
        b.control_base,
        b.control_range,
    )
    assert (acc["parameters"]["PRESET"], int(acc["parameters"]["AXI_DATA_BYTES"])) == (
        b.preset.name,
        b.preset.axi_data_bytes,
    )
    intc = parser.ip_dict[INTC["instance"]]
    assert (intc["phys_addr"], intc["addr_range"]) == (b.intc_base, b.intc_range)
    pin = f"{ACC}/{ACCELERATOR['interrupt']}"
    assert parser.interrupt_pins[pin]["controller"] == INTC["instance"]
    assert parser.interrupt_controllers[INTC["instance"]]["raw_irq"] == b.ps.raw_irq
    clock = parser.clock_dict[0]
    assert clock["enable"] == 1 and (clock["divisor0"], clock["divisor1"]) == b.ps_divisors()
    assert clock["src_sel"] == b.ps.pl_clock["pll"]
    if b.ps.name == "zynq_ultra_ps_e":
        assert close(clock["frequency"], b.ps_clock_mhz)
    else:
        # pynqmetadata 0.2.0 reads no achieved frequency for a Zynq-7000 PS (it looks for the
        # ZynqMP parameter name): pynq 4.0's Overlay.download cannot set FCLK0 (docs/boards.md).
        assert clock["frequency"] is None
    params = parser.ip_dict[parser.ps_name]["parameters"]
    for port in b.used_hp_ports():
        assert params[b.ps.hp_ports[port].hwh_width_param] == str(b.preset.axi_data_bytes * 8)


# --- fpga-serve overlay build -------------------------------------------------------------------

FAKE_VIVADO = """#!/bin/sh
# A `vivado` that runs batch scripts in the stand-in (tests/rtl/vivado/run.tcl).
if [ "$1" = "-version" ]; then echo "Vivado v${STUB_VIVADO_VERSION:-2024.1} (64-bit)"; exit 0; fi
while [ "$1" != "-source" ]; do shift; done
script="$2"; shift 2
[ "$1" = "-tclargs" ] && shift
exec "{tclsh}" "{run}" "$script" "$@"
"""


def _fake_vivado(tmp: Path) -> Path:
    bindir = tmp / "bin"
    bindir.mkdir()
    vivado = bindir / "vivado"
    vivado.write_text(
        FAKE_VIVADO.replace("{tclsh}", str(harness.TCLSH)).replace(
            "{run}", str(harness.HERE / "run.tcl")
        )
    )
    vivado.chmod(0o755)
    return bindir


def test_overlay_build_says_when_vivado_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fpga_serve.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    assert main(["overlay", "build", "--board", "pynq_z2", "--build-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "Vivado is not installed here" in err and "written for Vivado 2024.1" in err
    assert "vivado -mode batch -notrace -source" in err and "-tclargs pynq_z2" in err
    assert not (tmp_path / "b").exists()


def test_overlay_build_runs_the_flow_in_vivado(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from fpga_serve.cli import main

    monkeypatch.setenv("PATH", f"{_fake_vivado(tmp_path)}:/usr/bin:/bin")
    monkeypatch.setenv("STUB_VIVADO_VERSION", "2023.2")
    monkeypatch.setenv("STUB_RECORD", str(tmp_path / "record.txt"))
    out = tmp_path / "out"
    args = [
        "overlay",
        "build",
        "--board",
        "ultra96v2",
        "--build-dir",
        str(tmp_path / "b"),
        "--out-dir",
        str(out),
        "--jobs",
        "2",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "is Vivado 2023.2; the flow assumes 2024.1" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["fpga_cnn.bit", "fpga_cnn.hwh"]
    record = harness.Record.read(tmp_path / "record.txt")
    assert record.part == BOARDS["ultra96v2"].preset.part and record.validated
    monkeypatch.setenv("STUB_WNS", "-0.5")
    assert main([*args[:-4], "--out-dir", str(tmp_path / "out2")]) == 1
    assert "Vivado failed" in capsys.readouterr().err and not (tmp_path / "out2").exists()
