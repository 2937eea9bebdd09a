# The stand-in's wrapper, runs and reports: launch_runs "implements" a validated, saved block
# design under its wrapper and writes marker files where Vivado 2020.2+ puts the bitstream and
# the block design's hardware handoff; timing slacks come from $env(STUB_WNS) / $env(STUB_WHS).

proc make_wrapper {args} {
    set o [::stub::opts make_wrapper {-files 1 -top 0 -testbench 0 -inst_template 0 -import 0 -fileset 1 -force 0 -quiet 0 -verbose 0} $args]
    ::stub::bd
    if {![dict exists $o -files] || [dict get $o -files] ne $::stub::bd_file} { ::stub::fail "make_wrapper -files: give the block design (get_files $::stub::bd_name.bd)" }
    if {![dict exists $o -top]} { ::stub::fail "make_wrapper: -top is needed for a synthesis top" }
    set name ${::stub::bd_name}_wrapper
    set dir [::stub::pget dir]
    set gen [file join $dir [::stub::proj].gen sources_1 bd $::stub::bd_name hdl $name.v]
    file mkdir [file dirname $gen]
    set fh [open $gen w]; puts $fh "module $name ();\n  $::stub::bd_name ${::stub::bd_name}_i ();\nendmodule"; close $fh
    if {[dict exists $o -import]} {
        set imported [file join $dir [::stub::proj].srcs sources_1 imports hdl $name.v]
        file mkdir [file dirname $imported]
        file copy -force $gen $imported
        set files [::stub::pget files]
        dict set files $imported [dict create file_type Verilog]
        ::stub::pset files $files
    }
    ::stub::record wrapper $name [dict exists $o -import]
    return $gen
}

proc get_runs {args} {
    set o [::stub::opts get_runs {-filter 1 -of_objects 1 -quiet 0 -verbose 0} $args]
    set out {}
    foreach r [dict get $o _pos] {
        if {$r ni {synth_1 impl_1}} { ::stub::fail "get_runs: no run $r" }
        if {![dict exists $::stub::runs $r]} {
            dict set ::stub::runs $r [dict create progress 0% status {Not started} dir [file join [::stub::pget dir] [::stub::proj].runs $r]]
        }
        lappend out [::stub::newobj $r run]
    }
    return $out
}

proc launch_runs {args} {
    set o [::stub::opts launch_runs {-to_step 1 -jobs 1 -next_step 0 -host 1 -remote_cmd 1 -scripts_only 0 -lsf 1 -quiet 0 -verbose 0} $args]
    set runs [::stub::flatten [dict get $o _pos]]
    if {$runs ne {impl_1}} { ::stub::fail "launch_runs: only impl_1 is modelled, got '$runs'" }
    if {[dict exists $o -to_step] && [dict get $o -to_step] ni {opt_design power_opt_design place_design phys_opt_design route_design post_route_phys_opt_design write_bitstream}} {
        ::stub::fail "launch_runs: -to_step [dict get $o -to_step] is not an implementation step"
    }
    if {[dict exists $o -jobs] && ![string is integer -strict [dict get $o -jobs]]} { ::stub::fail "launch_runs -jobs [dict get $o -jobs]" }
    ::stub::bd
    if {!$::stub::validated || !$::stub::saved} { ::stub::fail "launch_runs: the block design is not validated and saved" }
    set top [::stub::pget top]
    if {$top ne "${::stub::bd_name}_wrapper"} { ::stub::fail "launch_runs: the synthesis top is '$top', not the block design's wrapper" }
    update_compile_order -fileset sources_1
    get_runs impl_1
    set dir [dict get $::stub::runs impl_1 dir]
    file mkdir $dir
    set failed [expr {[info exists ::env(STUB_IMPL_FAIL)] && $::env(STUB_IMPL_FAIL) eq "1"}]
    if {!$failed && [dict get $o -to_step] eq "write_bitstream"} {
        set fh [open [file join $dir $top.bit] w]; puts $fh "stand-in bitstream of $::stub::bd_name"; close $fh
    }
    set hwh [file join [::stub::pget dir] [::stub::proj].gen sources_1 bd $::stub::bd_name hw_handoff $::stub::bd_name.hwh]
    file mkdir [file dirname $hwh]
    set fh [open $hwh w]; puts $fh "stand-in hardware handoff of $::stub::bd_name"; close $fh
    dict set ::stub::runs impl_1 progress [expr {$failed ? "45%" : "100%"}]
    dict set ::stub::runs impl_1 status [expr {$failed ? "place_design ERROR" : "write_bitstream Complete!"}]
    ::stub::record launch impl_1 [dict get $o -to_step]
}

proc wait_on_run {args} {
    set o [::stub::opts wait_on_run {-timeout 1 -quiet 0 -verbose 0} $args]
    foreach r [::stub::flatten [dict get $o _pos]] {
        if {![dict exists $::stub::runs $r]} { ::stub::fail "wait_on_run: run $r was not launched" }
    }
}

proc open_run {args} {
    set o [::stub::opts open_run {-name 1 -pr_config 1 -quiet 0 -verbose 0} $args]
    set r [lindex [dict get $o _pos] 0]
    if {![dict exists $::stub::runs $r] || [dict get $::stub::runs $r progress] ne "100%"} { ::stub::fail "open_run: $r is not complete" }
    set ::stub::opened_run $r
}

proc ::stub::routed {} {
    if {$::stub::opened_run eq ""} { ::stub::fail "no implemented design is open (open_run)" }
}

proc report_utilization {args} {
    set o [::stub::opts report_utilization {-file 1 -hierarchical 0 -hierarchical_depth 1 -format 1 -quiet 0 -verbose 0} $args]
    ::stub::routed
    if {[dict exists $o -file]} { set fh [open [dict get $o -file] w]; puts $fh "stand-in utilization"; close $fh }
}

proc report_timing_summary {args} {
    set o [::stub::opts report_timing_summary {-file 1 -delay_type 1 -max_paths 1 -report_unconstrained 0 -warn_on_violation 0 -quiet 0 -verbose 0} $args]
    ::stub::routed
    if {[dict exists $o -file]} { set fh [open [dict get $o -file] w]; puts $fh "stand-in timing summary"; close $fh }
}

proc get_timing_paths {args} {
    set o [::stub::opts get_timing_paths {-delay_type 1 -max_paths 1 -nworst 1 -setup 0 -hold 0 -from 1 -to 1 -quiet 0 -verbose 0} $args]
    ::stub::routed
    set type [expr {[dict exists $o -delay_type] ? [dict get $o -delay_type] : "max"}]
    if {$type ni {max min min_max}} { ::stub::fail "get_timing_paths -delay_type $type" }
    set var [expr {$type eq "min" ? "STUB_WHS" : "STUB_WNS"}]
    set slack [expr {[info exists ::env($var)] ? $::env($var) : 0.05}]
    return [::stub::newobj "path_$type" timing_path [dict create slack $slack]]
}

proc get_pins {args} {
    set o [::stub::opts get_pins {-hierarchical 0 -filter 1 -of_objects 1 -quiet 0 -verbose 0} $args]
    ::stub::routed
    set out {}
    foreach p [dict get $o _pos] {
        set parts [split $p /]
        if {[llength $parts] != 3 || [lindex $parts 0] ne "${::stub::bd_name}_i"} { ::stub::fail "get_pins: no pin $p in the routed design" }
        set bd /[lindex $parts 1]/[lindex $parts 2]
        if {![dict exists $::stub::freq $bd]} { ::stub::fail "get_pins: $p is not a clocked pin" }
        lappend out [::stub::newobj $p netlist_pin [dict create bd $bd]]
    }
    return $out
}

proc get_clocks {args} {
    set o [::stub::opts get_clocks {-of_objects 1 -filter 1 -include_generated_clocks 0 -quiet 0 -verbose 0} $args]
    ::stub::routed
    set out {}
    foreach p [dict get $o -of_objects] {
        set hz [dict get $::stub::freq [dict get $::stub::props $p bd]]
        lappend out [::stub::newobj clk_$hz clock [dict create period [expr {1e9 / $hz}]]]
    }
    return $out
}

# --- the record ------------------------------------------------------------------------------------

proc ::stub::dump {path} {
    set fh [open $path w]
    foreach line $::stub::log { puts $fh "log\t$line" }
    if {$::stub::current_project ne ""} {
        puts $fh "project\t[::stub::pget part]\t[::stub::pget board_part]\t[::stub::pget board_connections]"
    }
    dict for {cell c} $::stub::cells {
        puts $fh "cell\t$cell\t[dict get $c vlnv]"
        ::stub::derive $cell
        dict for {k v} [dict get $c config] { puts $fh "config\t$cell\t$k\t$v" }
        dict for {intf i} [::stub::intfs $cell] {
            puts $fh "intf\t$cell/$intf\t[dict get $i mode]\t[dict get $i width]"
        }
    }
    dict for {pin hz} $::stub::freq { puts $fh "freq\t$pin\t$hz" }
    foreach n $::stub::intf_nets { puts $fh "intf_net\t[join $n \t]" }
    foreach n $::stub::nets { puts $fh "net\t[join $n \t]" }
    dict for {space segs} $::stub::addr {
        dict for {seg r} $segs { puts $fh "addr\t$space\t$seg\t[lindex $r 0]\t[lindex $r 1]" }
    }
    dict for {vlnv c} $::stub::cores {
        puts $fh "core\t$vlnv\t[dict get $c saved]"
        dict for {bus b} [dict get $c busifs] { puts $fh "busif\t$vlnv\t$bus\t[dict get $b type]" }
        dict for {p v} [dict get $c user] { puts $fh "user_param\t$vlnv\t$p\t[dict get $v value]" }
        dict for {m map} [dict get $c memmaps] {
            dict for {b blk} [dict get $map blocks] { puts $fh "block\t$vlnv\t$m\t$b\t[dict get $blk range]" }
        }
    }
    puts $fh "validated\t$::stub::validated"
    close $fh
}
