# The project and the block design around the accelerator, for any board of boards.json:
#
#   PS (board preset) --control master--> SmartConnect --> cnn_accel_0/s_axi_control, axi_intc_0
#   cnn_accel_0/m_axi_* --> one SmartConnect per HP port --> PS S_AXI_HP* --> DDR
#   cnn_accel_0/interrupt --> axi_intc_0 --> PS interrupt line (what pynq.Interrupt needs)
#   PL clock: the PS's PL clock 0 at the preset's frequency, or (clock_source mmcm) a clk_wiz
#   making it from PL clock 0; proc_sys_reset for every reset.

proc fc_create_project {} {
    global cfg
    create_project -force $cfg(design_name) [file join $cfg(build_dir) vivado] -part $cfg(part)
    if {[llength [get_board_parts -quiet $cfg(board_part)]] == 0} {
        error "the board files $cfg(board_part) ($cfg(title)) are not installed in this Vivado: see docs/boards.md, 'Board files'"
    }
    set_property board_part $cfg(board_part) [current_project]
    if {$cfg(board_connections) ne ""} {
        set_property board_connections $cfg(board_connections) [current_project]
    }
    set part [get_property PART [current_project]]
    if {$part ne $cfg(part)} {
        error "the board files $cfg(board_part) are for part $part; preset $cfg(preset) is built for $cfg(part) (spec.json): install the board files for $cfg(part), or change the preset"
    }
    set_property target_language Verilog [current_project]
    set_property ip_repo_paths [list [file join $cfg(build_dir) ip]] [current_project]
    update_ip_catalog
}

proc fc_block_design {} {
    global cfg
    create_bd_design $cfg(design_name)

    # The PS, with the board preset, then this build's ports, clock and interrupt.
    set ps [fc_cell $cfg(ps_vlnv) $cfg(ps_instance)]
    apply_bd_automation -rule $cfg(ps_automation) -config $cfg(ps_automation_config) $ps
    fc_config $ps $cfg(ps_config)
    fc_check_clock "the PS's $cfg(ps_clock_pin)" [get_property CONFIG.$cfg(ps_clock_act_param) $ps] $cfg(ps_clock_mhz)

    # The accelerator's clock.
    set ps_reset [get_bd_pins $ps/$cfg(ps_reset_pin)]
    set rst [fc_cell $cfg(reset_vlnv) proc_sys_reset_0]
    if {$cfg(clock_source) eq "mmcm"} {
        set wiz [fc_cell $cfg(clk_wiz_vlnv) clk_wiz_0]
        # PRIM_SOURCE: clk_in1 comes from the PS's clock buffer, not from a package pin.
        fc_config $wiz [dict create CLKOUT1_REQUESTED_OUT_FREQ $cfg(clock_mhz) USE_LOCKED true \
            USE_RESET true RESET_TYPE ACTIVE_LOW RESET_PORT resetn PRIM_SOURCE Global_buffer]
        connect_bd_net [get_bd_pins $ps/$cfg(ps_clock_pin)] [get_bd_pins $wiz/clk_in1]
        set clk [get_bd_pins $wiz/clk_out1]
        connect_bd_net [get_bd_pins $wiz/locked] [get_bd_pins $rst/dcm_locked]
        connect_bd_net $ps_reset [get_bd_pins $wiz/resetn] [get_bd_pins $rst/ext_reset_in]
    } else {
        set clk [get_bd_pins $ps/$cfg(ps_clock_pin)]
        connect_bd_net $ps_reset [get_bd_pins $rst/ext_reset_in]
    }

    # The accelerator, with the preset's parameters.
    set acc [create_bd_cell -type ip -vlnv $cfg(ip_vendor):$cfg(ip_library):$cfg(ip_name):$cfg(ip_version) $cfg(instance)]
    fc_config $acc [dict merge $cfg(rtl_params) [dict create PRESET $cfg(preset) SPEC_VERSION $cfg(spec_version)]]

    # Control: the PS's master to the register file and the interrupt controller.
    set intc [fc_cell $cfg(intc_vlnv) $cfg(intc_instance)]
    fc_config $intc $cfg(intc_config)
    set ctrl [fc_cell $cfg(smartconnect_vlnv) ctrl_smc]
    fc_config $ctrl [dict create NUM_SI 1 NUM_MI 2]
    connect_bd_intf_net [get_bd_intf_pins $ps/$cfg(control_master)] [get_bd_intf_pins $ctrl/S00_AXI]
    connect_bd_intf_net [get_bd_intf_pins $ctrl/M00_AXI] [get_bd_intf_pins $acc/$cfg(control_if)]
    connect_bd_intf_net [get_bd_intf_pins $ctrl/M01_AXI] [get_bd_intf_pins $intc/s_axi]
    set clocked [list [get_bd_pins $ps/$cfg(control_clock_pin)] [get_bd_pins $ctrl/aclk]]
    set interconnect_resets [list [get_bd_pins $ctrl/aresetn]]

    # Data: each HP port through its own SmartConnect, from the masters boards.json gives it.
    dict for {port spec} $cfg(hp) {
        set masters [dict get $spec masters]
        set smc [fc_cell $cfg(smartconnect_vlnv) [string tolower $port]_smc]
        fc_config $smc [dict create NUM_SI [llength $masters] NUM_MI 1]
        set si 0
        foreach master $masters {
            connect_bd_intf_net [get_bd_intf_pins $acc/$master] [get_bd_intf_pins $smc/[format S%02d_AXI $si]]
            incr si
        }
        connect_bd_intf_net [get_bd_intf_pins $smc/M00_AXI] [get_bd_intf_pins $ps/$port]
        lappend clocked [get_bd_pins $ps/[dict get $spec clock]] [get_bd_pins $smc/aclk]
        lappend interconnect_resets [get_bd_pins $smc/aresetn]
    }

    # The interrupt, through the controller pynq.Interrupt drives.
    connect_bd_net [get_bd_pins $acc/$cfg(interrupt_if)] [get_bd_pins $intc/intr]
    connect_bd_net [get_bd_pins $intc/irq] [get_bd_pins $ps/$cfg(irq_pin)]

    # One clock and one reset domain for the whole PL.
    connect_bd_net $clk [get_bd_pins $rst/slowest_sync_clk] [get_bd_pins $acc/$cfg(clock_if)] \
        [get_bd_pins $intc/s_axi_aclk] {*}$clocked
    connect_bd_net [get_bd_pins $rst/peripheral_aresetn] [get_bd_pins $acc/$cfg(reset_if)] \
        [get_bd_pins $intc/s_axi_aresetn]
    connect_bd_net [get_bd_pins $rst/interconnect_aresetn] {*}$interconnect_resets

    # Addresses: the control port where the driver and the .hwh expect it; DDR for the masters.
    set data [get_bd_addr_spaces $ps/$cfg(ps_data_space)]
    assign_bd_address -offset $cfg(control_base) -range $cfg(control_range) \
        -target_address_space $data [get_bd_addr_segs $acc/$cfg(control_if)/reg0] -force
    assign_bd_address -offset $cfg(intc_base) -range $cfg(intc_range) \
        -target_address_space $data [get_bd_addr_segs $intc/S_AXI/Reg] -force
    assign_bd_address

    validate_bd_design
    fc_check_clock "$cfg(instance)/$cfg(clock_if)" \
        [expr {[get_property CONFIG.FREQ_HZ [get_bd_pins $acc/$cfg(clock_if)]] / 1e6}] $cfg(clock_mhz)
    foreach master $cfg(masters) {
        set width [get_property CONFIG.DATA_WIDTH [get_bd_intf_pins $acc/$master]]
        if {$width != $cfg(axi_data_bits)} {
            error "$cfg(instance)/$master is $width bits wide; preset $cfg(preset) is $cfg(axi_data_bits) (axi_data_bytes)"
        }
    }
    save_bd_design
    puts "fpga_cnn: block design $cfg(design_name) for $cfg(title) validated"
}
