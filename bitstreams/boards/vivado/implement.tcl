# From the block design to fpga_cnn.bit: wrapper, synthesis, implementation, write_bitstream,
# then the timing check, and the .bit and the block design's .hwh copied under one basename into
# cfg(out_dir) (pynq loads NAME.bit with NAME.hwh beside it). Nothing is copied when timing
# fails: a bitstream that misses timing computes wrong answers, and fpga-serve would serve them.

proc fc_implement {} {
    global cfg
    set bd [get_files $cfg(design_name).bd]
    make_wrapper -files $bd -import -fileset sources_1 -top
    set_property top $cfg(design_name)_wrapper [current_fileset]
    update_compile_order -fileset sources_1

    launch_runs impl_1 -to_step write_bitstream -jobs $cfg(jobs)
    wait_on_run impl_1
    set run [get_runs impl_1]
    if {[get_property PROGRESS $run] ne "100%"} {
        error "implementation stopped at [get_property PROGRESS $run] ([get_property STATUS $run]): see [get_property DIRECTORY $run]/runme.log"
    }

    open_run impl_1
    report_utilization -file [file join $cfg(build_dir) utilization.rpt]
    report_timing_summary -file [file join $cfg(build_dir) timing_summary.rpt]
    set clock [get_clocks -of_objects [get_pins $cfg(design_name)_i/$cfg(instance)/$cfg(clock_if)]]
    fc_check_clock "the routed design's $cfg(clock_if) clock" [expr {1000.0 / [get_property PERIOD $clock]}] $cfg(clock_mhz)
    set wns [get_property SLACK [get_timing_paths -delay_type max -max_paths 1]]
    set whs [get_property SLACK [get_timing_paths -delay_type min -max_paths 1]]
    if {$wns < 0 || $whs < 0} {
        error "timing is not met at $cfg(clock_mhz) MHz (WNS $wns ns, WHS $whs ns; [file join $cfg(build_dir) timing_summary.rpt]): no bitstream copied"
    }

    set bit [file join [get_property DIRECTORY $run] $cfg(design_name)_wrapper.bit]
    set hwh [file join [get_property DIRECTORY [current_project]] $cfg(design_name).gen sources_1 bd \
        $cfg(design_name) hw_handoff $cfg(design_name).hwh]
    file mkdir $cfg(out_dir)
    file copy -force $bit [file join $cfg(out_dir) $cfg(overlay_name).bit]
    file copy -force $hwh [file join $cfg(out_dir) $cfg(overlay_name).hwh]
    puts "fpga_cnn: timing met (WNS $wns ns, WHS $whs ns); wrote [file join $cfg(out_dir) $cfg(overlay_name)].bit and .hwh"
}
