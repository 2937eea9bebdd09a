# Build the fpga_cnn overlay for one board, from the RTL to fpga_cnn.bit + fpga_cnn.hwh:
#
#   vivado -mode batch -source bitstreams/boards/vivado/build.tcl \
#       -tclargs <board> [<build dir>] [<jobs>] [<last step>] [<output dir>]
#
# <board> is a name in bitstreams/boards/boards.json (zcu104, kv260, ultra96v2, pynq_z2); its values
# (part, board preset, clock, widths, addresses) are in config/<board>.tcl, generated from
# boards.json, spec.json and the RTL. The build directory defaults to bitstreams/boards/<board>/build;
# the last step is "ip", "bd" or "bitstream" (default). The .bit and the block design's .hwh land
# under one basename in the output directory, by default bitstreams/boards/<board>/, where
# fpga-serve's PYNQ driver looks for them.
# `fpga-serve overlay build --board <board>` runs this with the same arguments.

set fc_here [file dirname [file normalize [info script]]]
set fc_root [file normalize [file join $fc_here .. .. ..]]

if {[llength $argv] < 1} {
    error "usage: vivado -mode batch -source build.tcl -tclargs <board> \[<build dir>\] \[<jobs>\] \[ip|bd|bitstream\] \[<output dir>\]"
}
set fc_board [lindex $argv 0]
set fc_config [file join $fc_here config $fc_board.tcl]
if {![file exists $fc_config]} {
    set known [lsort [lmap f [glob -nocomplain -directory [file join $fc_here config] *.tcl] {file rootname [file tail $f]}]]
    error "no board '$fc_board' (no $fc_config): the boards are [join $known {, }]"
}
source $fc_config
set cfg(root) $fc_root
proc fc_arg {index default} {
    global argv
    return [expr {[llength $argv] > $index && [lindex $argv $index] ne "" ? [lindex $argv $index] : $default}]
}
set cfg(build_dir) [file normalize [fc_arg 1 [file join $fc_root bitstreams boards $cfg(board) build]]]
set cfg(jobs) [fc_arg 2 4]
set cfg(last_step) [fc_arg 3 bitstream]
set cfg(out_dir) [file normalize [fc_arg 4 [file join $fc_root bitstreams boards $cfg(board)]]]
if {$cfg(last_step) ni {ip bd bitstream}} {
    error "last step '$cfg(last_step)' is none of ip, bd, bitstream"
}

foreach fc_part {common.tcl package_ip.tcl block_design.tcl implement.tcl} {
    source [file join $fc_here $fc_part]
}

fc_check_version
puts "fpga_cnn: building $cfg(title) (preset $cfg(preset), $cfg(part), $cfg(clock_mhz) MHz) in $cfg(build_dir)"
file mkdir $cfg(build_dir)
fc_package_ip
if {$cfg(last_step) ne "ip"} {
    fc_create_project
    fc_block_design
    if {$cfg(last_step) eq "bitstream"} {
        fc_implement
    }
}
puts "fpga_cnn: done ($cfg(last_step))"
