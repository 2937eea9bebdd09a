"""The block design bitstreams/boards/vivado/block_design.tcl builds, as data: cells with their
parameters and ports, the nets between them, the PS's memory map. ``hwh.py`` writes it as an
.hwh; tests/rtl/test_boards.py compares it with what the Tcl did in the Vivado stand-in.

Ports of the accelerator are the RTL's (named and sized for the preset); the PS's, the
SmartConnects' and the interrupt controller's are named as Xilinx names them, and each interface
mirrors the signals of the one it is connected to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fpga_serve.boardflow.facts import DESIGN_NAME, IP_VLNV, Facts
from fpga_serve.core.boards import ACCELERATOR, BOARDS_JSON, INTC
from fpga_serve.core.isa import SPEC_VERSION

Pin = tuple[str, str]  # (cell, port)
Sig = tuple[str, int, bool]  # (logical name, bits, driven by this end)

# AXI4 as a PS master drives it (ZynqMP M_AXI_HPM0_FPD, Zynq-7000 M_AXI_GP0 in AXI3), and AXI4-Lite
# as axi_intc's s_axi takes it: "name:bits" with A = address, D = data, S = strobes, I = ID bits.
AXI4 = (
    "awid:I awaddr:A awlen:L awsize:3 awburst:2 awlock:K awcache:4 awprot:3 awvalid:1 awready:1 "
    "wdata:D wstrb:S wlast:1 wvalid:1 wready:1 bid:I bresp:2 bvalid:1 bready:1 "
    "arid:I araddr:A arlen:L arsize:3 arburst:2 arlock:K arcache:4 arprot:3 arvalid:1 arready:1 "
    "rid:I rdata:D rresp:2 rlast:1 rvalid:1 rready:1"
)
AXI4_LITE = (
    "awaddr:A awvalid:1 awready:1 wdata:D wstrb:S wvalid:1 wready:1 bresp:2 bvalid:1 bready:1 "
    "araddr:A arvalid:1 arready:1 rdata:D rresp:2 rvalid:1 rready:1"
)


def master_drives(signal: str) -> bool:
    """Whether an AXI master drives ``signal`` (address, write data and the response readies)."""
    if signal in ("bready", "rready"):
        return True
    return signal[:2] in ("aw", "ar") or (signal[0] == "w" and not signal.endswith("ready"))


def axi_signals(table: str, addr: int, data: int, ids: int = 0, axi3: bool = False) -> list[Sig]:
    """A master's view of the interface ``table`` describes."""
    sizes = {
        "A": addr,
        "D": data,
        "S": data // 8,
        "I": ids,
        "L": 4 if axi3 else 8,
        "K": 2 if axi3 else 1,
    }
    out = []
    for item in table.split():
        name, bits = item.split(":")
        out.append((name, sizes[bits] if bits in sizes else int(bits), master_drives(name)))
    return out


@dataclass
class Signal:
    """One physical port of a cell."""

    name: str
    out: bool
    width: int = 1
    sigis: str = "undef"
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Busif:
    name: str
    master: bool
    ports: dict[str, str]  # logical (upper case) -> physical
    width: int
    params: dict[str, str] = field(default_factory=dict)
    busname: str = "__NOC__"


@dataclass
class Cell:
    name: str
    vlnv: str
    params: dict[str, str]
    kind: str = "PERIPHERAL"
    signals: dict[str, Signal] = field(default_factory=dict)
    busifs: dict[str, Busif] = field(default_factory=dict)
    memranges: list[dict[str, str]] = field(default_factory=list)

    def add(self, name: str, out: bool, sigis: str = "undef", width: int = 1, **extra: str) -> None:
        self.signals[name] = Signal(name, out, width, sigis, dict(extra))

    def axi(
        self,
        busif: str,
        master: bool,
        signals: list[Sig],
        prefix: str,
        upper: bool = False,
        width: int = 32,
        **params: str,
    ) -> Busif:
        """An AXI interface of ``signals`` (logical name, bits, driven by this cell)."""
        ports = {}
        for logical, bits, out in signals:
            physical = prefix + (logical.upper() if upper else logical)
            self.add(physical, out, width=bits)
            ports[logical.upper()] = physical
        self.busifs[busif] = Busif(busif, master, ports, width, params)
        return self.busifs[busif]

    def view(self, busif: str) -> list[Sig]:
        """The signals of ``busif`` as its peer sees them."""
        b = self.busifs[busif]
        return [
            (lg.lower(), self.signals[ph].width, not self.signals[ph].out)
            for lg, ph in b.ports.items()
        ]


@dataclass
class Design:
    cells: dict[str, Cell] = field(default_factory=dict)
    nets: dict[str, list[Pin]] = field(default_factory=dict)

    def cell(self, c: Cell) -> Cell:
        self.cells[c.name] = c
        return c

    def net(self, *pins: Pin) -> None:
        """A net named after its first pin (its driver)."""
        for cell, signal in pins:
            if signal not in self.cells[cell].signals:
                raise KeyError(f"{cell} has no port {signal}")
        self.nets[f"{pins[0][0]}_{pins[0][1]}"] = list(pins)

    def connect(self, master: Pin, slave: Pin) -> None:
        """An interface net: every logical signal of the master to the slave's."""
        m = self.cells[master[0]].busifs[master[1]]
        s = self.cells[slave[0]].busifs[slave[1]]
        m.busname = s.busname = f"{master[0]}_{master[1]}"
        for logical, physical in m.ports.items():
            if logical in s.ports:
                self.nets[f"{m.busname}_{logical.lower()}"] = [
                    (master[0], physical),
                    (slave[0], s.ports[logical]),
                ]


def clock_param(template: str, i: int) -> str:
    """PSU__CRL_APB__PL0_... / PCW_FCLK0_... / PCW_ACT_FPGA0_... renamed for PL clock i."""
    return re.sub(r"(PL|FCLK|FPGA)0", lambda m: f"{m.group(1)}{i}", template, count=1)


def memrange(
    block: str, base: int, size: int, inst: str, master: str, slave: str, memtype: str
) -> dict[str, str]:
    return {
        "ADDRESSBLOCK": block,
        "BASENAME": "C_BASEADDR",
        "BASEVALUE": f"0x{base:08X}",
        "HIGHNAME": "C_HIGHADDR",
        "HIGHVALUE": f"0x{base + size - 1:08X}",
        "INSTANCE": inst,
        "IS_DATA": "TRUE",
        "IS_INSTRUCTION": "TRUE",
        "MASTERBUSINTERFACE": master,
        "MEMTYPE": memtype,
        "SLAVEBUSINTERFACE": slave,
    }


def _rtl(f: Facts, busif: str) -> list[Sig]:
    """The accelerator's ports of one interface, as the accelerator drives them."""
    n = len(busif) + 1
    return [
        (p.name[n:], p.width(f.params), p.direction == "out")
        for p in f.top.ports
        if p.name.startswith(busif + "_")
    ]


def _accelerator(f: Facts, d: Design) -> Cell:
    params = {k: str(v) for k, v in f.params.items()}
    params.update(
        PRESET=f.board.preset.name,
        SPEC_VERSION=SPEC_VERSION,
        EDK_IPTYPE="PERIPHERAL",
        Component_Name=f"{DESIGN_NAME}_{ACCELERATOR['instance']}",
    )
    acc = d.cell(Cell(ACCELERATOR["instance"], IP_VLNV, params))
    hz = str(round(f.board.clock_mhz * 1e6))
    acc.add(ACCELERATOR["clock"], False, "clk", CLKFREQUENCY=hz)
    acc.add(ACCELERATOR["reset"], False, "rst", POLARITY="ACTIVE_LOW")
    acc.add(
        ACCELERATOR["interrupt"],
        True,
        "INTERRUPT",
        SENSITIVITY=ACCELERATOR["interrupt_sensitivity"],
    )
    for a in [f.control, *f.masters]:
        mode = "READ_WRITE" if a.reads and a.writes else "READ_ONLY" if a.reads else "WRITE_ONLY"
        acc.axi(
            a.name,
            a.mode == "master",
            _rtl(f, a.name),
            a.name + "_",
            width=a.data_width(f.params),
            PROTOCOL="AXI4LITE" if a.mode == "slave" else "AXI4",
            FREQ_HZ=hz,
            DATA_WIDTH=str(a.data_width(f.params)),
            READ_WRITE_MODE=mode,
        )
    return acc


def _ps(f: Facts, d: Design) -> Cell:
    b = f.board
    ps = b.ps
    clk = ps.pl_clock
    params = dict(f.ps_config)
    d0, d1 = b.ps_divisors() or (0, 0)
    for i in range(4):
        on = i == 0
        params[clock_param(clk["enable"], i)] = "1" if on else "0"
        params[clock_param(clk["divisor0"], i)] = str(d0) if on else "1"
        params[clock_param(clk["divisor1"], i)] = str(d1) if on else "1"
        params[clock_param(clk["srcsel"], i)] = clk["pll"]
        params[clock_param(clk["act_freq"], i)] = f"{b.pll_mhz / (d0 * d1):.6f}" if on else "0"
    master = ps.control_masters[b.control_master]
    if master["hwh_width_param"]:
        params[master["hwh_width_param"]] = "32"
    for port in b.used_hp_ports():
        params[ps.hp_ports[port].hwh_width_param] = str(f.axi_data_bits)
    cell = d.cell(Cell(ps.instance, ps.vlnv, params, kind="PROCESSOR"))
    cell.add(clk["pin"], True, "clk", CLKFREQUENCY=str(round(b.ps_clock_mhz * 1e6)))
    cell.add(ps.reset_pin, True, "rst")
    cell.add(ps.irq_pin, False, "INTERRUPT", SENSITIVITY="LEVEL_HIGH")
    cell.add(master["clock_pin"], False, "clk")
    zu = ps.name == "zynq_ultra_ps_e"
    signals = axi_signals(AXI4, 40 if zu else 32, 32, 16 if zu else 12, axi3=not zu)
    cell.axi(
        b.control_master,
        True,
        signals,
        "maxigp0_" if zu else f"{b.control_master}_",
        upper=not zu,
        PROTOCOL="AXI4" if zu else "AXI3",
    )
    for port in b.used_hp_ports():
        hp = ps.hp_ports[port]
        cell.add(hp.clock_pin, False, "clk")
    for inst, busif, block, base, size in (
        (ACCELERATOR["instance"], ACCELERATOR["control"], "reg0", b.control_base, b.control_range),
        (INTC["instance"], "s_axi", "Reg", b.intc_base, b.intc_range),
    ):
        cell.memranges.append(
            memrange(block, base, size, inst, b.control_master, busif, "REGISTER")
        )
    return cell


def _clock(f: Facts, d: Design, ps: Cell, rst: Cell) -> Pin:
    """The accelerator's clock source: the PS's PL clock 0, or a clk_wiz fed by it."""
    b = f.board
    pl_clock = (ps.name, b.ps.pl_clock["pin"])
    reset = (ps.name, b.ps.reset_pin)
    if b.clock_source == "ps":
        d.net(reset, (rst.name, "ext_reset_in"))
        return pl_clock
    wiz = d.cell(
        Cell(
            "clk_wiz_0",
            BOARDS_JSON["ip"]["clk_wiz"],
            {
                "CLKOUT1_REQUESTED_OUT_FREQ": f"{b.clock_mhz:g}",
                "USE_LOCKED": "true",
                "USE_RESET": "true",
                "RESET_TYPE": "ACTIVE_LOW",
                "RESET_PORT": "resetn",
                "PRIM_IN_FREQ": f"{b.ps_clock_mhz:g}",
                "PRIM_SOURCE": "Global_buffer",
            },
        )
    )
    wiz.add("clk_in1", False, "clk", CLKFREQUENCY=str(round(b.ps_clock_mhz * 1e6)))
    wiz.add("clk_out1", True, "clk")
    wiz.add("resetn", False, "rst")
    wiz.add("locked", True)
    d.net(pl_clock, (wiz.name, "clk_in1"))
    d.net((wiz.name, "locked"), (rst.name, "dcm_locked"))
    d.net(reset, (wiz.name, "resetn"), (rst.name, "ext_reset_in"))
    return (wiz.name, "clk_out1")


def design(f: Facts) -> Design:
    """The block design of bitstreams/boards/vivado/block_design.tcl, for board ``f.board``."""
    b = f.board
    d = Design()
    acc = _accelerator(f, d)
    ps = _ps(f, d)
    rst = d.cell(
        Cell("proc_sys_reset_0", BOARDS_JSON["ip"]["proc_sys_reset"], {"C_EXT_RST_WIDTH": "4"})
    )
    for name, out, sigis in (
        ("slowest_sync_clk", False, "clk"),
        ("ext_reset_in", False, "rst"),
        ("dcm_locked", False, "undef"),
        ("interconnect_aresetn", True, "rst"),
        ("peripheral_aresetn", True, "rst"),
    ):
        rst.add(name, out, sigis)
    clock = _clock(f, d, ps, rst)
    intc = d.cell(
        Cell(
            INTC["instance"],
            INTC["vlnv"],
            {
                "C_BASEADDR": f"0x{b.intc_base:08X}",
                "C_HIGHADDR": f"0x{b.intc_base + b.intc_range - 1:08X}",
                "C_NUM_INTR_INPUTS": "1",
                "C_IRQ_IS_LEVEL": "1",
                "EDK_IPTYPE": "PERIPHERAL",
                **INTC["config"],
            },
        )
    )
    lite = [(n, w, not drv) for n, w, drv in axi_signals(AXI4_LITE, 9, 32)]
    intc.axi("s_axi", False, lite, "s_axi_", PROTOCOL="AXI4LITE")
    intc.add("s_axi_aclk", False, "clk")
    intc.add("s_axi_aresetn", False, "rst")
    intc.add("intr", False, "INTERRUPT", SENSITIVITY="LEVEL_HIGH")
    intc.add("irq", True, "INTERRUPT", SENSITIVITY="LEVEL_HIGH")

    smc = BOARDS_JSON["ip"]["smartconnect"]
    ctrl = d.cell(Cell("ctrl_smc", smc, {"NUM_SI": "1", "NUM_MI": "2"}, kind="BUS"))
    ctrl.axi("S00_AXI", False, ps.view(b.control_master), "S00_AXI_")
    ctrl.axi("M00_AXI", True, acc.view(ACCELERATOR["control"]), "M00_AXI_")
    ctrl.axi("M01_AXI", True, intc.view("s_axi"), "M01_AXI_")
    d.connect((ps.name, b.control_master), (ctrl.name, "S00_AXI"))
    d.connect((ctrl.name, "M00_AXI"), (acc.name, ACCELERATOR["control"]))
    d.connect((ctrl.name, "M01_AXI"), (intc.name, "s_axi"))
    clocked = [(ps.name, b.ps.control_masters[b.control_master]["clock_pin"])]
    zu = b.ps.name == "zynq_ultra_ps_e"
    ddr = b.ps.ddr_low
    for port, masters in b.used_hp_ports().items():
        hp = b.ps.hp_ports[port]
        hsmc = d.cell(
            Cell(
                f"{port.lower()}_smc", smc, {"NUM_SI": str(len(masters)), "NUM_MI": "1"}, kind="BUS"
            )
        )
        for si, master in enumerate(masters):
            hsmc.axi(
                f"S{si:02d}_AXI", False, acc.view(master), f"S{si:02d}_AXI_", width=f.axi_data_bits
            )
            d.connect((acc.name, master), (hsmc.name, f"S{si:02d}_AXI"))
            acc.memranges.append(
                memrange(hp.segment, ddr[0], ddr[1] - ddr[0] + 1, ps.name, master, port, "MEMORY")
            )
        hsmc.axi("M00_AXI", True, _rtl(f, masters[0]), "M00_AXI_", width=f.axi_data_bits)
        ps.axi(
            port,
            False,
            hsmc.view("M00_AXI"),
            f"{hp.space.lower()}_" if zu else f"{port}_",
            upper=not zu,
            width=f.axi_data_bits,
            PROTOCOL=hp.protocol,
        )
        d.connect((hsmc.name, "M00_AXI"), (ps.name, port))
        clocked.append((ps.name, hp.clock_pin))
    buses = [c.name for c in d.cells.values() if c.kind == "BUS"]
    for name in buses:
        d.cells[name].add("aclk", False, "clk")
        d.cells[name].add("aresetn", False, "rst")
    d.net((acc.name, ACCELERATOR["interrupt"]), (intc.name, "intr"))
    d.net((intc.name, "irq"), (ps.name, b.ps.irq_pin))
    d.net(
        clock,
        (rst.name, "slowest_sync_clk"),
        (acc.name, ACCELERATOR["clock"]),
        (intc.name, "s_axi_aclk"),
        *clocked,
        *[(n, "aclk") for n in buses],
    )
    d.net(
        (rst.name, "peripheral_aresetn"),
        (acc.name, ACCELERATOR["reset"]),
        (intc.name, "s_axi_aresetn"),
    )
    d.net((rst.name, "interconnect_aresetn"), *[(n, "aresetn") for n in buses])
    hz = str(round(b.clock_mhz * 1e6))
    for cell, signal in d.nets[f"{clock[0]}_{clock[1]}"]:
        d.cells[cell].signals[signal].extra.setdefault("CLKFREQUENCY", hz)
    return d
