# The stand-in's IP Integrator: cells, the pins each configuration gives them, nets, addresses,
# and validate_bd_design's checks.

proc ::stub::cell_kind {vlnv} {
    if {[dict exists $::stub::catalog $vlnv]} {
        set k [dict get $::stub::catalog $vlnv]
        if {$k eq "ps"} { return [expr {[string match *zynq_ultra_ps_e* $vlnv] ? "zu" : "z7"}] }
        return $k
    }
    if {[dict exists $::stub::catalog_user $vlnv]} { return user }
    ::stub::fail "no IP $vlnv in the catalogue"
}

proc create_bd_design {args} {
    set o [::stub::opts create_bd_design {-dir 1 -mode 1 -bdsource 1 -quiet 0 -verbose 0} $args]
    set name [lindex [dict get $o _pos] 0]
    if {$name eq ""} { ::stub::fail "create_bd_design: no name" }
    set ::stub::bd_name $name
    set dir [::stub::pget dir]
    set ::stub::bd_file [file join $dir [::stub::proj].srcs sources_1 bd $name $name.bd]
    file mkdir [file dirname $::stub::bd_file]
    set fh [open $::stub::bd_file w]; puts $fh "stand-in block design $name"; close $fh
    set files [::stub::pget files]
    dict set files $::stub::bd_file [dict create file_type {Block Designs}]
    ::stub::pset files $files
    ::stub::newobj $::stub::bd_file file
    ::stub::record bd $name
    return $name
}

proc ::stub::bd {} {
    if {$::stub::bd_name eq ""} { ::stub::fail "no block design open (create_bd_design)" }
}

proc create_bd_cell {args} {
    set o [::stub::opts create_bd_cell {-type 1 -vlnv 1 -reference 1 -quiet 0 -verbose 0} $args]
    ::stub::bd
    if {[dict get $o -type] ne "ip"} { ::stub::fail "create_bd_cell: only -type ip is modelled" }
    set vlnv [dict get $o -vlnv]
    set kind [::stub::cell_kind $vlnv]
    set name [::stub::norm [lindex [dict get $o _pos] 0]]
    if {[dict exists $::stub::cells $name]} { ::stub::fail "create_bd_cell: $name exists" }
    if {$kind eq "user"} {
        set config [dict create]
        dict for {p v} [::stub::cget $vlnv user] { dict set config [string toupper $p] [dict get $v value] }
    } else {
        set config [::stub::defaults $vlnv]
    }
    dict set ::stub::cells $name [dict create vlnv $vlnv kind $kind config $config preset 0 set {}]
    ::stub::newobj $name cell
    set ::stub::validated 0
    ::stub::record cell $name $vlnv
    return $name
}

proc ::stub::cfg {cell key} { dict get $::stub::cells $cell config $key }

proc ::stub::set_cell_config {cell name value} {
    if {![string match -nocase config.* $name]} { ::stub::fail "set_property $name: cells take CONFIG.* here" }
    set key [string toupper [string range $name 7 end]]
    set c [dict get $::stub::cells $cell]
    set kind [dict get $c kind]
    if {![dict exists [dict get $c config] $key]} {
        ::stub::fail "set_property CONFIG.$key: $cell ([dict get $c vlnv]) has no parameter $key"
    }
    if {$kind in {zu z7}} {
        set ro [expr {$kind eq "zu" ? $::stub::zu_readonly : $::stub::z7_readonly}]
        foreach r $ro { if {[string match *$r* $key]} { ::stub::fail "CONFIG.$key of $cell is computed by Vivado, not set" } }
        dict for {suffix values} [expr {$kind eq "zu" ? $::stub::zu_enums : $::stub::z7_enums}] {
            if {[string match *$suffix $key] && $value ni $values} { ::stub::fail "CONFIG.$key: '$value' is none of $values" }
        }
    }
    if {$kind eq "user"} {
        set up [::stub::cget [dict get $c vlnv] user]
        foreach {p v} $up {
            if {[string toupper $p] eq $key && [dict get $v format] eq "long" && ![string is integer -strict $value]} {
                ::stub::fail "CONFIG.$key of $cell takes an integer, not '$value'"
            }
        }
    }
    if {$kind eq "smartconnect" && $key in {NUM_SI NUM_MI} && !($value >= 1 && $value <= 16)} { ::stub::fail "$key $value" }
    if {$kind eq "clk_wiz" && $key eq "RESET_TYPE" && $value ni {ACTIVE_HIGH ACTIVE_LOW}} { ::stub::fail "RESET_TYPE $value" }
    if {$kind eq "clk_wiz" && $key eq "PRIM_IN_FREQ"} { ::stub::fail "CONFIG.PRIM_IN_FREQ of $cell is propagated from clk_in1's clock" }
    dict set ::stub::cells $cell config $key $value
    dict lappend ::stub::cells $cell set $key
    set ::stub::validated 0
}

# PS: a board preset sets its PLLs; the PL clock a FREQMHZ asks for is the PLL over two divisors.
proc ::stub::derive {cell} {
    set c [dict get $::stub::cells $cell]
    set kind [dict get $c kind]
    if {$kind ni {zu z7}} { return }
    set bp [::stub::pget board_part]
    set plls [expr {$bp ne "" && [dict get $c preset] ? [dict get $::stub::boards $bp plls] : [expr {$kind eq "zu" ? {IOPLL 1500.0 RPLL 1500.0 DPLL 1500.0} : {{IO PLL} 1000.0 {ARM PLL} 1333.0 {DDR PLL} 1066.0}}]}]
    foreach i {0 1 2 3} {
        if {$kind eq "zu"} {
            set req [::stub::cfg $cell PSU__CRL_APB__PL${i}_REF_CTRL__FREQMHZ]
            set src [::stub::cfg $cell PSU__CRL_APB__PL${i}_REF_CTRL__SRCSEL]
            set keys [list PSU__CRL_APB__PL${i}_REF_CTRL__ACT_FREQMHZ PSU__CRL_APB__PL${i}_REF_CTRL__DIVISOR0 PSU__CRL_APB__PL${i}_REF_CTRL__DIVISOR1]
        } else {
            set req [::stub::cfg $cell PCW_FPGA${i}_PERIPHERAL_FREQMHZ]
            set src [::stub::cfg $cell PCW_FCLK${i}_PERIPHERAL_CLKSRC]
            set keys [list PCW_ACT_FPGA${i}_PERIPHERAL_FREQMHZ PCW_FCLK${i}_PERIPHERAL_DIVISOR0 PCW_FCLK${i}_PERIPHERAL_DIVISOR1]
        }
        set pll [dict get $plls $src]
        set best {}
        # Vivado's choice: the closest frequency, with the second divisor as small as it can be.
        for {set d1 1} {$d1 < 64} {incr d1} {
            for {set d0 1} {$d0 < 64} {incr d0} {
                set f [expr {$pll / ($d0 * $d1)}]
                set err [expr {abs($f - $req)}]
                if {$best eq "" || $err < [lindex $best 0] - 1e-9} { set best [list $err $d0 $d1 $f] }
            }
        }
        lassign $best - d0 d1 f
        dict set ::stub::cells $cell config [lindex $keys 0] [format %.6f $f]
        dict set ::stub::cells $cell config [lindex $keys 1] $d0
        dict set ::stub::cells $cell config [lindex $keys 2] $d1
    }
}

proc apply_bd_automation {args} {
    set o [::stub::opts apply_bd_automation {-rule 1 -config 1 -dict 1 -opts 1 -quiet 0 -verbose 0} $args]
    set cells [::stub::flatten [dict get $o _pos]]
    set rule [dict get $o -rule]
    set config [expr {[dict exists $o -config] ? [dict get $o -config] : {}}]
    if {[llength $config] % 2} { ::stub::fail "apply_bd_automation -config: not a list of pairs: $config" }
    foreach cell $cells {
        if {[::stub::kind $cell] ne "cell"} { ::stub::fail "apply_bd_automation: '$cell' is not a cell" }
        set kind [dict get $::stub::cells $cell kind]
        set want [dict get {zu xilinx.com:bd_rule:zynq_ultra_ps_e z7 xilinx.com:bd_rule:processing_system7} $kind]
        if {$kind ni {zu z7} || $rule ne $want} { ::stub::fail "apply_bd_automation: rule $rule does not apply to $cell" }
        set known [expr {$kind eq "zu" ? {apply_board_preset} : {make_external apply_board_preset Master Slave}}]
        foreach {k v} $config { if {$k ni $known} { ::stub::fail "apply_bd_automation $rule: unknown setting '$k'" } }
        if {[dict exists $config apply_board_preset] && [dict get $config apply_board_preset] eq "1"} {
            set bp [::stub::pget board_part]
            if {$bp eq ""} { ::stub::fail "apply_bd_automation: apply_board_preset without a board_part" }
            if {[dict get $::stub::boards $bp ps] ne [lindex [split [dict get $::stub::cells $cell vlnv] :] 2]} {
                ::stub::fail "apply_bd_automation: $bp's preset is not for [dict get $::stub::cells $cell vlnv]"
            }
            dict set ::stub::cells $cell preset 1
        }
        if {$kind eq "z7" && (![dict exists $config make_external] || [dict get $config make_external] ne "FIXED_IO, DDR")} {
            ::stub::fail "apply_bd_automation: the PS7's DDR and FIXED_IO must be made external"
        }
        ::stub::record automation $cell $rule $config
    }
}

# --- pins ------------------------------------------------------------------------------------------

# dict pin -> {dir in|out type clk|rst|intr|data optional 0|1}
proc ::stub::pins {cell} {
    set c [dict get $::stub::cells $cell]
    set cfg [dict get $c config]
    set p [dict create]
    switch -- [dict get $c kind] {
        zu {
            foreach i {0 1 2 3} {
                if {[dict get $cfg PSU__FPGA_PL${i}_ENABLE]} { dict set p pl_clk$i {dir out type clk} }
            }
            if {[dict get $cfg PSU__NUM_FABRIC_RESETS] >= 1} { dict set p pl_resetn0 {dir out type rst} }
            if {[dict get $cfg PSU__USE__IRQ0]} { dict set p pl_ps_irq0 {dir in type intr optional 1} }
            if {[dict get $cfg PSU__USE__IRQ1]} { dict set p pl_ps_irq1 {dir in type intr optional 1} }
            foreach table [list $::stub::zu_masters $::stub::zu_slaves] {
                dict for {port spec} $table {
                    if {[dict get $cfg [lindex $spec 0]]} { dict set p [lindex $spec 2] {dir in type clk} }
                }
            }
        }
        z7 {
            if {[dict get $cfg PCW_FPGA_FCLK0_ENABLE] && [dict get $cfg PCW_EN_CLK0_PORT]} { dict set p FCLK_CLK0 {dir out type clk} }
            if {[dict get $cfg PCW_EN_RST0_PORT]} { dict set p FCLK_RESET0_N {dir out type rst} }
            if {[dict get $cfg PCW_USE_FABRIC_INTERRUPT] && [dict get $cfg PCW_IRQ_F2P_INTR]} { dict set p IRQ_F2P {dir in type intr optional 1} }
            foreach table [list $::stub::z7_masters $::stub::z7_slaves] {
                dict for {port spec} $table {
                    if {[dict get $cfg [lindex $spec 0]]} { dict set p [lindex $spec 2] {dir in type clk} }
                }
            }
        }
        smartconnect { set p {aclk {dir in type clk} aresetn {dir in type rst}} }
        proc_sys_reset {
            set p {slowest_sync_clk {dir in type clk} ext_reset_in {dir in type rst} aux_reset_in {dir in type rst optional 1}
                mb_debug_sys_rst {dir in type rst optional 1} dcm_locked {dir in type data optional 1}
                mb_reset {dir out type rst} bus_struct_reset {dir out type rst} peripheral_reset {dir out type rst}
                interconnect_aresetn {dir out type rst} peripheral_aresetn {dir out type rst}}
        }
        axi_intc {
            set p {s_axi_aclk {dir in type clk} s_axi_aresetn {dir in type rst} intr {dir in type intr}}
            # PG099 C_IRQ_CONNECTION: 1 (single) makes irq a pin of its own; 0 (bus, the default)
            # puts it in the MicroBlaze `interrupt` interface, which no PS interrupt line takes.
            if {[dict get $cfg C_IRQ_CONNECTION] == 1} { dict set p irq {dir out type intr} }
        }
        clk_wiz {
            set p {clk_in1 {dir in type clk} clk_out1 {dir out type clk}}
            if {[dict get $cfg USE_LOCKED] eq "true"} { dict set p locked {dir out type data} }
            if {[dict get $cfg USE_RESET] eq "true"} {
                set port [dict get $cfg RESET_PORT]
                set low [expr {[dict get $cfg RESET_TYPE] eq "ACTIVE_LOW"}]
                if {$low != ($port eq "resetn")} { ::stub::fail "$cell: RESET_PORT $port does not fit RESET_TYPE [dict get $cfg RESET_TYPE]" }
                dict set p $port {dir in type rst}
            }
        }
        user {
            set vlnv [dict get $c vlnv]
            dict for {bus b} [::stub::cget $vlnv busifs] {
                switch -- [dict get $b type] {
                    clock { dict set p $bus {dir in type clk} }
                    reset { dict set p $bus {dir in type rst} }
                    interrupt { dict set p $bus {dir out type intr} }
                }
            }
        }
    }
    return $p
}

# dict intf -> {mode proto width clock segs apertures}
proc ::stub::intfs {cell} {
    set c [dict get $::stub::cells $cell]
    set cfg [dict get $c config]
    set out [dict create]
    switch -- [dict get $c kind] {
        zu - z7 {
            set zu [expr {[dict get $c kind] eq "zu"}]
            set proto [expr {$zu ? "AXI4" : "AXI3"}]
            dict for {port spec} [expr {$zu ? $::stub::zu_masters : $::stub::z7_masters}] {
                lassign $spec en width clock apertures
                if {[dict get $cfg $en]} {
                    dict set out $port [dict create mode master proto $proto width [expr {$width eq "" ? 32 : [dict get $cfg $width]}] clock $clock apertures $apertures]
                }
            }
            set ddr [expr {$zu ? 0x80000000 : 0x20000000}]
            dict for {port spec} [expr {$zu ? $::stub::zu_slaves : $::stub::z7_slaves}] {
                lassign $spec en width clock space prefix
                if {[dict get $cfg $en]} {
                    if {$zu} {
                        set segs [list $cell/$space/${prefix}_DDR_LOW 0x0 $ddr $cell/$space/${prefix}_DDR_HIGH 0x800000000 0x800000000 \
                            $cell/$space/${prefix}_LPS_OCM 0xFF000000 0x1000000 $cell/$space/${prefix}_QSPI 0xC0000000 0x20000000]
                    } else {
                        set segs [list $cell/$space/${prefix}_DDR_LOWOCM 0x0 $ddr $cell/$space/${prefix}_HIGH_OCM 0xFFFC0000 0x40000]
                    }
                    dict set out $port [dict create mode slave proto $proto width [expr {$width eq "" ? 64 : [dict get $cfg $width]}] clock $clock segs $segs fixed 1]
                }
            }
        }
        smartconnect {
            for {set i 0} {$i < [dict get $cfg NUM_SI]} {incr i} { dict set out [format S%02d_AXI $i] {mode slave proto any width any clock aclk} }
            for {set i 0} {$i < [dict get $cfg NUM_MI]} {incr i} { dict set out [format M%02d_AXI $i] {mode master proto any width any clock aclk} }
        }
        axi_intc { dict set out s_axi [dict create mode slave proto AXI4LITE width 32 clock s_axi_aclk segs [list $cell/S_AXI/Reg "" 0x10000] fixed 0] }
        user {
            set vlnv [dict get $c vlnv]
            set params [dict create]
            dict for {p v} [::stub::cget $vlnv params] { dict set params $p [dict get $cfg [string toupper $p]] }
            dict for {bus b} [::stub::cget $vlnv busifs] {
                if {[dict get $b type] ne "aximm"} { continue }
                set w [dict get $b params DATA_WIDTH]
                set width [expr {[dict get $w resolve] eq "dependent" ? [::stub::resolve_dependency [dict get $w dependency] $params] : [dict get $w value]}]
                set port [dict get [::stub::cget $vlnv ports] [dict get $b data_port]]
                set actual [expr {[::stub::evalexpr [dict get $port msb] $params] - [::stub::evalexpr [dict get $port lsb] $params] + 1}]
                set info [dict create mode [dict get $b mode] proto [dict get $b protocol] width $width actual $actual clock [dict get $b clock] required [dict get $b required]]
                if {[dict get $b mode] eq "slave"} {
                    set segs {}
                    if {[dict exists $b memmap]} {
                        dict for {blk bb} [::stub::cget $vlnv memmaps [dict get $b memmap] blocks] { lappend segs $cell/$bus/$blk "" [dict get $bb range] }
                    }
                    dict set info segs $segs
                    dict set info fixed 0
                } else {
                    dict set info apertures {0x0 0x10000000000000000}
                }
                dict set out $bus $info
            }
        }
    }
    return $out
}

proc ::stub::intf_width {obj} {
    lassign [::stub::split_pin $obj] cell pin
    return [dict get [::stub::intfs $cell] $pin width]
}

proc ::stub::split_pin {obj} {
    set i [string last / $obj]
    return [list [string range $obj 0 [expr {$i - 1}]] [string range $obj [expr {$i + 1}] end]]
}

proc ::stub::get_objs {cmd kindname lister args} {
    set o [::stub::opts $cmd {-of_objects 1 -filter 1 -hierarchical 0 -quiet 0 -verbose 0 -regexp 0 -nocase 0} $args]
    ::stub::bd
    set out {}
    foreach path [::stub::flatten [dict get $o _pos]] {
        set path [::stub::norm $path]
        lassign [::stub::split_pin $path] cell pin
        if {[dict exists $::stub::cells $cell] && [dict exists [{*}$lister $cell] $pin]} {
            lappend out [::stub::newobj $path $kindname]
        } elseif {![dict exists $o -quiet]} {
            puts "WARNING: \[stub\] $cmd: no $kindname '$path'"
        }
    }
    return $out
}

proc get_bd_pins {args} { ::stub::get_objs get_bd_pins pin ::stub::pins {*}$args }
proc get_bd_intf_pins {args} { ::stub::get_objs get_bd_intf_pins intf_pin ::stub::intfs {*}$args }

proc get_bd_cells {args} {
    set o [::stub::opts get_bd_cells {-hierarchical 0 -filter 1 -of_objects 1 -quiet 0 -verbose 0} $args]
    set out {}
    foreach path [::stub::flatten [dict get $o _pos]] {
        set path [::stub::norm $path]
        if {[dict exists $::stub::cells $path]} { lappend out $path } elseif {![dict exists $o -quiet]} { puts "WARNING: \[stub\] no cell $path" }
    }
    return $out
}

proc connect_bd_net {args} {
    set o [::stub::opts connect_bd_net {-net 1 -boundary_type 1 -quiet 0 -verbose 0} $args]
    set pins [::stub::flatten [dict get $o _pos]]
    if {[llength $pins] < 2} { ::stub::fail "connect_bd_net: needs two pins or more, got '[dict get $o _pos]'" }
    foreach p $pins {
        if {[::stub::kind $p] ne "pin"} { ::stub::fail "connect_bd_net: '$p' is not a pin (get_bd_pins)" }
        foreach n $::stub::nets { if {$p in $n} { ::stub::fail "connect_bd_net: $p is already on a net" } }
    }
    lappend ::stub::nets $pins
    set ::stub::validated 0
    ::stub::record net {*}$pins
}

proc connect_bd_intf_net {args} {
    set o [::stub::opts connect_bd_intf_net {-intf_net 1 -boundary_type 1 -quiet 0 -verbose 0} $args]
    set pins [::stub::flatten [dict get $o _pos]]
    if {[llength $pins] != 2} { ::stub::fail "connect_bd_intf_net: needs two interface pins, got '$pins'" }
    set modes {}
    foreach p $pins {
        if {[::stub::kind $p] ne "intf_pin"} { ::stub::fail "connect_bd_intf_net: '$p' is not an interface pin (get_bd_intf_pins)" }
        foreach n $::stub::intf_nets { if {$p in $n} { ::stub::fail "connect_bd_intf_net: $p is already connected" } }
        lassign [::stub::split_pin $p] cell pin
        lappend modes [dict get [::stub::intfs $cell] $pin mode]
    }
    if {[lsort $modes] ne {master slave}} { ::stub::fail "connect_bd_intf_net: $pins are $modes, not a master and a slave" }
    if {[lindex $modes 0] eq "slave"} { set pins [lreverse $pins] }
    lappend ::stub::intf_nets $pins
    set ::stub::validated 0
    ::stub::record intf_net {*}$pins
}

# --- addresses -------------------------------------------------------------------------------------

proc get_bd_addr_spaces {args} {
    set o [::stub::opts get_bd_addr_spaces {-of_objects 1 -filter 1 -quiet 0 -verbose 0} $args]
    set out {}
    foreach path [dict get $o _pos] {
        set path [::stub::norm $path]
        lassign [::stub::split_pin $path] cell space
        if {[dict exists $::stub::cells $cell] && [dict get $::stub::cells $cell kind] in {zu z7} && $space eq "Data"} {
            lappend out [::stub::newobj $path addr_space]
        } else {
            puts "WARNING: \[stub\] get_bd_addr_spaces: no address space $path"
        }
    }
    return $out
}

proc ::stub::all_segs {} {
    set out {}
    dict for {cell c} $::stub::cells {
        dict for {intf i} [::stub::intfs $cell] {
            if {[dict get $i mode] eq "slave" && [dict exists $i segs]} {
                foreach {seg off range} [dict get $i segs] { lappend out $seg [list $off $range [dict get $i fixed] $cell/$intf] }
            }
        }
    }
    return $out
}

proc get_bd_addr_segs {args} {
    set o [::stub::opts get_bd_addr_segs {-of_objects 1 -excluded 0 -filter 1 -quiet 0 -verbose 0} $args]
    set segs [::stub::all_segs]
    set out {}
    foreach path [dict get $o _pos] {
        set path [::stub::norm $path]
        if {[dict exists $segs $path]} { lappend out [::stub::newobj $path addr_seg] } else { puts "WARNING: \[stub\] get_bd_addr_segs: no segment $path" }
    }
    return $out
}

# Slave segments reachable from a master interface pin, through SmartConnects.
proc ::stub::reach {master {seen {}}} {
    set out {}
    foreach n $::stub::intf_nets {
        if {[lindex $n 0] ne $master} { continue }
        set slave [lindex $n 1]
        lassign [::stub::split_pin $slave] cell pin
        if {[dict get $::stub::cells $cell kind] eq "smartconnect"} {
            if {$cell in $seen} { continue }
            dict for {mi i} [::stub::intfs $cell] {
                if {[dict get $i mode] eq "master"} { lappend out {*}[::stub::reach $cell/$mi [concat $seen $cell]] }
            }
        } else {
            set info [dict get [::stub::intfs $cell] $pin]
            if {[dict exists $info segs]} { foreach {seg off range} [dict get $info segs] { lappend out $seg } }
        }
    }
    return $out
}

# Master interface pins of an address space: the PS's Data space, or a user IP master's own.
proc ::stub::space_masters {space} {
    lassign [::stub::split_pin $space] cell name
    if {$name eq "Data"} {
        set out {}
        dict for {intf i} [::stub::intfs $cell] { if {[dict get $i mode] eq "master"} { lappend out $cell/$intf } }
        return $out
    }
    return [list $space]
}

proc ::stub::spaces {} {
    set out {}
    dict for {cell c} $::stub::cells {
        if {[dict get $c kind] in {zu z7}} { lappend out $cell/Data }
        if {[dict get $c kind] eq "user"} {
            dict for {intf i} [::stub::intfs $cell] { if {[dict get $i mode] eq "master"} { lappend out $cell/$intf } }
        }
    }
    return $out
}

proc ::stub::aperture_ok {space seg offset range} {
    foreach m [::stub::space_masters $space] {
        if {$seg ni [::stub::reach $m]} { continue }
        lassign [::stub::split_pin $m] cell pin
        foreach {base size} [dict get [::stub::intfs $cell] $pin apertures] {
            if {$offset >= $base && $offset + $range <= $base + $size} { return 1 }
        }
    }
    return 0
}

proc assign_bd_address {args} {
    set o [::stub::opts assign_bd_address {-offset 1 -range 1 -target_address_space 1 -force 0 -export_to_file 1 -import_from_file 1 -external 0 -quiet 0 -verbose 0} $args]
    set segs [::stub::all_segs]
    set targets [::stub::flatten [dict get $o _pos]]
    if {$targets eq ""} {
        # Assign every reachable, unassigned segment: fixed ones (the PS's) at their offset.
        foreach space [::stub::spaces] {
            foreach m [::stub::space_masters $space] {
                foreach seg [::stub::reach $m] {
                    if {[dict exists $::stub::addr $space $seg]} { continue }
                    lassign [dict get $segs $seg] off range fixed
                    if {!$fixed} { ::stub::fail "assign_bd_address: $seg in $space has no fixed offset (give -offset)" }
                    dict set ::stub::addr $space $seg [list [expr {$off}] [expr {$range}]]
                    ::stub::record addr $space $seg [format 0x%X $off] [format 0x%X $range]
                }
            }
        }
        set ::stub::validated 0
        return
    }
    foreach need {-offset -range -target_address_space} { if {![dict exists $o $need]} { ::stub::fail "assign_bd_address: give $need with a segment" } }
    set space [dict get $o -target_address_space]
    if {[::stub::kind $space] ne "addr_space"} { ::stub::fail "assign_bd_address: '$space' is not an address space (get_bd_addr_spaces)" }
    set offset [expr {[dict get $o -offset]}]
    set range [expr {[dict get $o -range]}]
    if {$range < 4096 || ($range & ($range - 1))} { ::stub::fail "assign_bd_address: range [dict get $o -range] is not a power of two >= 4K" }
    if {$offset % $range} { ::stub::fail "assign_bd_address: offset [dict get $o -offset] is not aligned to its range" }
    foreach seg $targets {
        if {[::stub::kind $seg] ne "addr_seg"} { ::stub::fail "assign_bd_address: '$seg' is not a segment (get_bd_addr_segs)" }
        if {!([::stub::aperture_ok $space $seg $offset $range])} {
            ::stub::fail "assign_bd_address: $seg at [dict get $o -offset] (+[dict get $o -range]) is not reachable inside an aperture of $space"
        }
        dict set ::stub::addr $space $seg [list $offset $range]
        ::stub::record addr $space $seg [format 0x%X $offset] [format 0x%X $range]
    }
    set ::stub::validated 0
}

# --- validation ------------------------------------------------------------------------------------

proc ::stub::net_of {pin} {
    foreach n $::stub::nets { if {$pin in $n} { return $n } }
    return {}
}

proc ::stub::mmcm_out {fin fout family} {
    lassign [expr {$family eq "xc7" ? {600.0 1200.0} : {800.0 1600.0}}] vmin vmax
    for {set d 1} {$d <= 10} {incr d} {
        for {set m 2} {$m <= 64} {incr m} {
            set vco [expr {$fin * $m / $d}]
            if {$vco < $vmin || $vco > $vmax} { continue }
            for {set od 1} {$od <= 128} {incr od} {
                set f [expr {$vco / $od}]
                if {abs($f - $fout) <= $fout * 0.001} { return $f }
            }
        }
    }
    return ""
}

proc ::stub::part_family {} {
    return [expr {[string match xc7z* [::stub::pget part]] ? "xc7" : "xcup"}]
}

proc validate_bd_design {args} {
    ::stub::opts validate_bd_design {-force 0 -design 1 -quiet 0 -verbose 0} $args
    ::stub::bd
    set errors {}
    set ::stub::freq {}
    # Nets: one driver each; drivers of the right type.
    set sources {}
    foreach n $::stub::nets {
        set drivers {}
        foreach p $n {
            lassign [::stub::split_pin $p] cell pin
            if {[dict get [::stub::pins $cell] $pin dir] eq "out"} { lappend drivers $p }
        }
        if {[llength $drivers] != 1} { lappend errors "net {$n} has [llength $drivers] drivers" }
        dict set sources $n [lindex $drivers 0]
    }
    # Clock frequencies from their sources.
    set pending 1
    while {$pending} {
        set pending 0
        foreach n $::stub::nets {
            set d [dict get $sources $n]
            if {$d eq "" || [dict exists $::stub::freq $d]} {
                if {$d ne "" && [dict exists $::stub::freq $d]} { foreach p $n { dict set ::stub::freq $p [dict get $::stub::freq $d] } }
                continue
            }
            lassign [::stub::split_pin $d] cell pin
            set c [dict get $::stub::cells $cell]
            switch -- [dict get $c kind] {
                zu - z7 {
                    ::stub::derive $cell
                    if {[regexp {(?:pl_clk|FCLK_CLK)(\d)} $pin -> i]} {
                        set key [expr {[dict get $c kind] eq "zu" ? "PSU__CRL_APB__PL${i}_REF_CTRL__ACT_FREQMHZ" : "PCW_ACT_FPGA${i}_PERIPHERAL_FREQMHZ"}]
                        dict set ::stub::freq $d [expr {round([::stub::cfg $cell $key] * 1e6)}]
                        set pending 1
                    }
                }
                clk_wiz {
                    # PG065: the default PRIM_SOURCE (a clock-capable pin) puts an IBUF on
                    # clk_in1, which a clock from inside the design cannot drive.
                    set source [::stub::cfg $cell PRIM_SOURCE]
                    set msg "$cell: PRIM_SOURCE $source needs clk_in1 from a package pin; it is driven from inside the design"
                    if {$pin eq "clk_out1" && $source ni {Global_buffer No_buffer} && $msg ni $errors} {
                        lappend errors $msg
                    }
                    if {$pin eq "clk_out1" && [dict exists $::stub::freq $cell/clk_in1]} {
                        set fin [expr {[dict get $::stub::freq $cell/clk_in1] / 1e6}]
                        dict set ::stub::cells $cell config PRIM_IN_FREQ [format %.3f $fin]
                        set want [::stub::cfg $cell CLKOUT1_REQUESTED_OUT_FREQ]
                        set f [::stub::mmcm_out $fin $want [::stub::part_family]]
                        if {$f eq ""} { lappend errors "$cell cannot make $want MHz from $fin MHz" } else {
                            dict set ::stub::freq $d [expr {round($f * 1e6)}]
                            set pending 1
                        }
                    }
                }
            }
        }
    }
    # Every required input pin connected; inputs driven by the right kind of output.
    dict for {cell c} $::stub::cells {
        dict for {pin info} [::stub::pins $cell] {
            if {[dict get $info dir] ne "in"} { continue }
            set n [::stub::net_of $cell/$pin]
            set optional [expr {[dict exists $info optional] && [dict get $info optional]}]
            if {$n eq ""} {
                if {!$optional} { lappend errors "input pin $cell/$pin is not connected" }
                continue
            }
            set d [dict get $sources $n]
            if {$d eq ""} { continue }
            lassign [::stub::split_pin $d] dcell dpin
            set dtype [dict get [::stub::pins $dcell] $dpin type]
            set type [dict get $info type]
            if {$type eq "clk" && $dtype ne "clk"} { lappend errors "clock pin $cell/$pin is driven by $d, not a clock" }
            if {$type eq "intr" && $dtype ne "intr"} { lappend errors "interrupt pin $cell/$pin is driven by $d, not an interrupt" }
            if {$type eq "rst" && $dtype ne "rst"} { lappend errors "reset pin $cell/$pin is driven by $d, not a reset" }
            if {$type eq "clk" && ![dict exists $::stub::freq $cell/$pin]} { lappend errors "clock pin $cell/$pin has no frequency" }
        }
        # Interfaces: required ones connected; both ends of a net on clocks of one frequency.
        dict for {intf info} [::stub::intfs $cell] {
            set connected 0
            foreach n $::stub::intf_nets { if {"$cell/$intf" in $n} { set connected 1; set peer [lindex $n [expr {[lindex $n 0] eq "$cell/$intf"}]] } }
            set kind [dict get $c kind]
            set required [expr {$kind in {smartconnect axi_intc} || ($kind eq "user" && [dict get $info required])}]
            if {$required && !$connected} { lappend errors "interface $cell/$intf is not connected" }
            if {$kind eq "user" && [dict get $info width] != [dict get $info actual]} {
                lappend errors "$cell/$intf declares DATA_WIDTH [dict get $info width] but its data port is [dict get $info actual] bits (CONFIG changed the port, not the interface)"
            }
            if {$connected} {
                set clk [dict get $info clock]
                if {$clk eq "" || ![dict exists $::stub::freq $cell/$clk]} { lappend errors "interface $cell/$intf has no clock" ; continue }
                lassign [::stub::split_pin $peer] pcell ppin
                set pclk [dict get [::stub::intfs $pcell] $ppin clock]
                if {[dict exists $::stub::freq $pcell/$pclk] && [dict get $::stub::freq $pcell/$pclk] != [dict get $::stub::freq $cell/$clk]} {
                    lappend errors "FREQ_HZ of $cell/$intf ([dict get $::stub::freq $cell/$clk]) differs from $peer's ([dict get $::stub::freq $pcell/$pclk])"
                }
                if {[dict get $info mode] eq "master" && [dict get [::stub::intfs $pcell] $ppin proto] eq "AXI3" && $kind ne "smartconnect"} {
                    lappend errors "$cell/$intf reaches the AXI3 port $peer without a protocol converter"
                }
            }
        }
        if {[dict get $c kind] eq "smartconnect"} {
            foreach p {aclk aresetn} { if {[::stub::net_of $cell/$p] eq ""} { lappend errors "$cell/$p is not connected" } }
        }
    }
    # Addresses: every reachable segment assigned, none overlapping in a space.
    foreach space [::stub::spaces] {
        set reachable {}
        foreach m [::stub::space_masters $space] {
            set connected 0
            foreach n $::stub::intf_nets { if {[lindex $n 0] eq $m} { set connected 1 } }
            if {$connected} { lappend reachable {*}[::stub::reach $m] }
        }
        foreach seg $reachable {
            if {![dict exists $::stub::addr $space $seg]} { lappend errors "segment $seg is not assigned in $space" }
        }
        if {[dict exists $::stub::addr $space]} {
            set spans [lsort -integer -index 0 [lmap {seg r} [dict get $::stub::addr $space] {list [lindex $r 0] [lindex $r 1] $seg}]]
            for {set i 1} {$i < [llength $spans]} {incr i} {
                lassign [lindex $spans [expr {$i - 1}]] a ar as
                lassign [lindex $spans $i] b br bs
                if {$a + $ar > $b} { lappend errors "$as and $bs overlap in $space" }
            }
        }
    }
    if {$errors ne ""} { ::stub::fail "validate_bd_design: [join $errors {; }]" }
    set ::stub::validated 1
    ::stub::record validated $::stub::bd_name
}

proc save_bd_design {args} {
    ::stub::opts save_bd_design {-quiet 0 -verbose 0} $args
    ::stub::bd
    ::stub::record saved $::stub::bd_name $::stub::validated
    set ::stub::saved $::stub::validated
}
