# Helpers of the fpga_cnn board flow (sourced by build.tcl; every value is in cfg(), from
# config/<board>.tcl).

# The Vivado version the flow was written for is cfg(vivado_version); another one may work, and
# gets IP versions from its own catalogue (fc_ipdef) with a warning for each one that differs.
proc fc_check_version {} {
    global cfg
    set have [version -short]
    if {[string first $cfg(vivado_version) $have] != 0} {
        puts "WARNING: fpga_cnn's board flow was written for Vivado $cfg(vivado_version); this is Vivado $have. IP versions come from this Vivado's catalogue (warnings below); check the timing report."
    }
}

# An IP definition: the VLNV asked for if the catalogue has it, else the newest of its name.
proc fc_ipdef {vlnv} {
    if {[llength [get_ipdefs -all $vlnv]] > 0} {
        return $vlnv
    }
    set family [join [lrange [split $vlnv :] 0 2] :]
    set found [lsort -dictionary [get_ipdefs -all $family:*]]
    if {[llength $found] == 0} {
        error "IP $vlnv is not in this Vivado's IP catalogue"
    }
    set latest [lindex $found end]
    puts "WARNING: $vlnv is not in this Vivado's catalogue; using $latest"
    return $latest
}

proc fc_cell {vlnv name} {
    return [create_bd_cell -type ip -vlnv [fc_ipdef $vlnv] $name]
}

# Set CONFIG.<key> <value> for every pair of a dict.
proc fc_config {cell values} {
    set props {}
    dict for {key value} $values {
        lappend props CONFIG.$key $value
    }
    set_property -dict $props $cell
}

# A clock that must run at want_mhz (within cfg(clock_tolerance), relative).
proc fc_check_clock {what got_mhz want_mhz} {
    global cfg
    if {$got_mhz eq "" || abs($got_mhz - $want_mhz) > $want_mhz * $cfg(clock_tolerance)} {
        error "$what runs at '$got_mhz' MHz; preset $cfg(preset) needs $want_mhz MHz (spec.json clock_mhz, boards.json pl_clock)"
    }
}
