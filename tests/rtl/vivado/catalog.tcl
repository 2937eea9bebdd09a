# The stand-in's knowledge of Vivado 2024.1's IP and board stores: what each IP's CONFIG
# parameters are called, which pins a configuration gives it, which board files exist and which
# part each is for. Written from Xilinx's and the vendors' public material (PYNQ's, FINN's and
# TVM-VTA's block designs, Avnet/bdf board.xml, UG1085), independently of bitstreams/boards/
# boards.json, so a wrong name there is caught here.

namespace eval ::stub {}

# Board files: part, the PS's PLL frequencies its preset sets (MHz).
set ::stub::boards {
    xilinx.com:zcu104:part0:1.1 {part xczu7ev-ffvc1156-2-e ps zynq_ultra_ps_e plls {IOPLL 1499.985 RPLL 1599.984 DPLL 2099.979}}
    xilinx.com:kv260_som:part0:1.4 {part xck26-sfvc784-2LV-c ps zynq_ultra_ps_e plls {IOPLL 999.990 RPLL 1399.986 DPLL 1199.988} connections {som240_1_connector xilinx.com:kv260_carrier:som240_1_connector:1.3}}
    em.avnet.com:ultra96v2:part0:1.0 {part xczu3eg-sbva484-1-e ps zynq_ultra_ps_e plls {IOPLL 1499.985 RPLL 1399.986 DPLL 1066.656}}
    avnet.com:ultra96v2:part0:1.2 {part xczu3eg-sbva484-1-i ps zynq_ultra_ps_e plls {IOPLL 1499.985 RPLL 1399.986 DPLL 1066.656}}
    tul.com.tw:pynq-z2:part0:1.0 {part xc7z020clg400-1 ps processing_system7 plls {{IO PLL} 1000.0 {ARM PLL} 1300.0 {DDR PLL} 1050.0}}
}

set ::stub::parts {xczu7ev-ffvc1156-2-e xck26-sfvc784-2LV-c xczu3eg-sbva484-1-e xczu3eg-sbva484-1-i xc7z020clg400-1}

# --- zynq_ultra_ps_e 3.5 --------------------------------------------------------------------
# Slave ports: CONFIG enable, width parameter, clock pin, address space, segment prefix.
set ::stub::zu_slaves {
    S_AXI_HPC0_FPD {PSU__USE__S_AXI_GP0 PSU__SAXIGP0__DATA_WIDTH saxihpc0_fpd_aclk SAXIGP0 HPC0}
    S_AXI_HPC1_FPD {PSU__USE__S_AXI_GP1 PSU__SAXIGP1__DATA_WIDTH saxihpc1_fpd_aclk SAXIGP1 HPC1}
    S_AXI_HP0_FPD {PSU__USE__S_AXI_GP2 PSU__SAXIGP2__DATA_WIDTH saxihp0_fpd_aclk SAXIGP2 HP0}
    S_AXI_HP1_FPD {PSU__USE__S_AXI_GP3 PSU__SAXIGP3__DATA_WIDTH saxihp1_fpd_aclk SAXIGP3 HP1}
    S_AXI_HP2_FPD {PSU__USE__S_AXI_GP4 PSU__SAXIGP4__DATA_WIDTH saxihp2_fpd_aclk SAXIGP4 HP2}
    S_AXI_HP3_FPD {PSU__USE__S_AXI_GP5 PSU__SAXIGP5__DATA_WIDTH saxihp3_fpd_aclk SAXIGP5 HP3}
    S_AXI_LPD {PSU__USE__S_AXI_GP6 PSU__SAXIGP6__DATA_WIDTH saxi_lpd_aclk SAXIGP6 LPD}
}
# Master ports: CONFIG enable, width parameter, clock pin, apertures in the PS's Data space.
set ::stub::zu_masters {
    M_AXI_HPM0_FPD {PSU__USE__M_AXI_GP0 PSU__MAXIGP0__DATA_WIDTH maxihpm0_fpd_aclk {0xA0000000 0x10000000 0x400000000 0x100000000}}
    M_AXI_HPM1_FPD {PSU__USE__M_AXI_GP1 PSU__MAXIGP1__DATA_WIDTH maxihpm1_fpd_aclk {0xB0000000 0x10000000 0x500000000 0x100000000}}
    M_AXI_HPM0_LPD {PSU__USE__M_AXI_GP2 PSU__MAXIGP2__DATA_WIDTH maxihpm0_lpd_aclk {0x80000000 0x20000000}}
}

proc ::stub::zu_defaults {} {
    set d {}
    dict for {port spec} $::stub::zu_slaves {
        dict set d [lindex $spec 0] 0
        dict set d [lindex $spec 1] 128
    }
    dict for {port spec} $::stub::zu_masters {
        dict set d [lindex $spec 0] 1
        dict set d [lindex $spec 1] 128
    }
    foreach i {0 1 2 3} {
        dict set d PSU__FPGA_PL${i}_ENABLE [expr {$i == 0}]
        dict set d PSU__CRL_APB__PL${i}_REF_CTRL__FREQMHZ 100
        dict set d PSU__CRL_APB__PL${i}_REF_CTRL__SRCSEL RPLL
        dict set d PSU__CRL_APB__PL${i}_REF_CTRL__ACT_FREQMHZ ""
        dict set d PSU__CRL_APB__PL${i}_REF_CTRL__DIVISOR0 15
        dict set d PSU__CRL_APB__PL${i}_REF_CTRL__DIVISOR1 1
    }
    dict set d PSU__USE__IRQ0 0
    dict set d PSU__USE__IRQ1 0
    dict set d PSU__NUM_FABRIC_RESETS 1
    return $d
}
set ::stub::zu_readonly {ACT_FREQMHZ DIVISOR0 DIVISOR1}
set ::stub::zu_enums {SRCSEL {IOPLL RPLL DPLL} DATA_WIDTH {32 64 128}}

# --- processing_system7 5.5 ------------------------------------------------------------------
set ::stub::z7_slaves {
    S_AXI_HP0 {PCW_USE_S_AXI_HP0 PCW_S_AXI_HP0_DATA_WIDTH S_AXI_HP0_ACLK S_AXI_HP0 HP0}
    S_AXI_HP1 {PCW_USE_S_AXI_HP1 PCW_S_AXI_HP1_DATA_WIDTH S_AXI_HP1_ACLK S_AXI_HP1 HP1}
    S_AXI_HP2 {PCW_USE_S_AXI_HP2 PCW_S_AXI_HP2_DATA_WIDTH S_AXI_HP2_ACLK S_AXI_HP2 HP2}
    S_AXI_HP3 {PCW_USE_S_AXI_HP3 PCW_S_AXI_HP3_DATA_WIDTH S_AXI_HP3_ACLK S_AXI_HP3 HP3}
    S_AXI_ACP {PCW_USE_S_AXI_ACP {} S_AXI_ACP_ACLK S_AXI_ACP ACP}
}
set ::stub::z7_masters {
    M_AXI_GP0 {PCW_USE_M_AXI_GP0 {} M_AXI_GP0_ACLK {0x40000000 0x40000000}}
    M_AXI_GP1 {PCW_USE_M_AXI_GP1 {} M_AXI_GP1_ACLK {0x80000000 0x40000000}}
}

proc ::stub::z7_defaults {} {
    set d {}
    dict for {port spec} $::stub::z7_slaves {
        dict set d [lindex $spec 0] 0
        if {[lindex $spec 1] ne ""} {
            dict set d [lindex $spec 1] 64
        }
    }
    dict set d PCW_USE_M_AXI_GP0 1
    dict set d PCW_USE_M_AXI_GP1 0
    foreach i {0 1 2 3} {
        dict set d PCW_FPGA_FCLK${i}_ENABLE [expr {$i == 0}]
        dict set d PCW_EN_CLK${i}_PORT [expr {$i == 0}]
        dict set d PCW_EN_RST${i}_PORT [expr {$i == 0}]
        dict set d PCW_FPGA${i}_PERIPHERAL_FREQMHZ 50
        dict set d PCW_FCLK${i}_PERIPHERAL_CLKSRC {IO PLL}
        dict set d PCW_ACT_FPGA${i}_PERIPHERAL_FREQMHZ ""
        dict set d PCW_FCLK${i}_PERIPHERAL_DIVISOR0 1
        dict set d PCW_FCLK${i}_PERIPHERAL_DIVISOR1 1
    }
    dict set d PCW_USE_FABRIC_INTERRUPT 0
    dict set d PCW_IRQ_F2P_INTR 0
    return $d
}
set ::stub::z7_readonly {ACT_FPGA DIVISOR0 DIVISOR1}
set ::stub::z7_enums {CLKSRC {{IO PLL} {ARM PLL} {DDR PLL}} DATA_WIDTH {32 64}}

# --- fabric IP ---------------------------------------------------------------------------------
set ::stub::catalog {
    xilinx.com:ip:zynq_ultra_ps_e:3.5 ps
    xilinx.com:ip:processing_system7:5.5 ps
    xilinx.com:ip:smartconnect:1.0 smartconnect
    xilinx.com:ip:proc_sys_reset:5.0 proc_sys_reset
    xilinx.com:ip:axi_intc:4.1 axi_intc
    xilinx.com:ip:clk_wiz:6.0 clk_wiz
    xilinx.com:ip:axi_interconnect:2.1 axi_interconnect
    xilinx.com:ip:xlconcat:2.1 xlconcat
}

proc ::stub::defaults {vlnv} {
    switch -glob -- $vlnv {
        *:zynq_ultra_ps_e:* { return [::stub::zu_defaults] }
        *:processing_system7:* { return [::stub::z7_defaults] }
        *:smartconnect:* { return {NUM_SI 1 NUM_MI 2 NUM_CLKS 1} }
        *:proc_sys_reset:* { return {C_EXT_RST_WIDTH 4 C_AUX_RST_WIDTH 4 C_NUM_BUS_RST 1 C_NUM_PERP_ARESETN 1 C_NUM_INTERCONNECT_ARESETN 1} }
        *:axi_intc:* { return {C_IRQ_CONNECTION 0 C_IRQ_IS_LEVEL 1 C_NUM_INTR_INPUTS 1 C_KIND_OF_INTR 0xFFFFFFFF} }
        *:clk_wiz:* { return {CLKOUT1_REQUESTED_OUT_FREQ 100.000 USE_LOCKED true USE_RESET true RESET_TYPE ACTIVE_HIGH RESET_PORT reset PRIM_IN_FREQ 100.000 PRIM_SOURCE Single_ended_clock_capable_pin} }
        default { error "stub: no defaults for $vlnv" }
    }
}
