# A recording stand-in for the Vivado Tcl commands the board flow uses, for tclsh 8.6.
#
# Each command takes the options Vivado documents for it (UG835) and refuses any other; objects
# are path strings ("/cnn_accel_0/ap_clk") that must exist when used; the block design is modelled
# far enough to check what Vivado would refuse or silently get wrong: CONFIG names and values of
# each IP, the pins a configuration gives it, one driver per net, master-to-slave interface nets,
# clocks on every AXI interface, FREQ_HZ propagated from the PS (its PLL and divisors) or a clk_wiz,
# interface widths following the IP's parameters, address segments assigned inside the apertures
# without overlap, a board part whose part differs from the project's. What the scripts did is
# written to $env(STUB_RECORD) (tab-separated lines) for tests/rtl/test_boards.py to compare with the
# source of truth. Commands no script here uses are not defined: calling one is an error, as a
# misspelt command is in Vivado.

source [file join [file dirname [info script]] catalog.tcl]

namespace eval ::stub {
    variable log {}
    variable projects {}
    variable current_project ""
    variable cells {}
    variable nets {}
    variable intf_nets {}
    variable addr {}
    variable bd_name ""
    variable bd_file ""
    variable validated 0
    variable cores {}
    variable core ""
    variable catalog_user {}
    variable runs {}
    variable opened_run ""
    variable objkind {}
    variable props {}
    variable freq {}
}

proc ::stub::fail {msg} {
    return -code error "ERROR: \[stub\] $msg"
}

proc ::stub::record {args} {
    lappend ::stub::log [join $args \t]
}

# Parse "cmd -opt value -flag positional..." against a spec {opt takes-value ...}.
proc ::stub::opts {cmd spec argl} {
    set out [dict create _pos {}]
    for {set i 0} {$i < [llength $argl]} {incr i} {
        set a [lindex $argl $i]
        if {[string match -* $a] && ![string is double -strict $a]} {
            if {![dict exists $spec $a]} {
                ::stub::fail "$cmd: unknown option '$a' (takes: [join [dict keys $spec] {, }])"
            }
            if {[dict get $spec $a]} {
                incr i
                if {$i >= [llength $argl]} { ::stub::fail "$cmd: option $a needs a value" }
                dict set out $a [lindex $argl $i]
            } else {
                dict set out $a 1
            }
        } else {
            dict lappend out _pos $a
        }
    }
    return $out
}

proc ::stub::norm {path} {
    set path [string trim $path]
    if {![string match /* $path]} { set path /$path }
    return $path
}

proc ::stub::kind {obj} {
    if {[dict exists $::stub::objkind $obj]} { return [dict get $::stub::objkind $obj] }
    return ""
}

proc ::stub::newobj {obj kind {properties {}}} {
    dict set ::stub::objkind $obj $kind
    dict set ::stub::props $obj $properties
    return $obj
}

proc ::stub::flatten {objs} {
    set out {}
    foreach o $objs {
        foreach x $o { lappend out $x }
    }
    return $out
}

# --- general commands ----------------------------------------------------------------------------

proc version {args} {
    set o [::stub::opts version {-short 0 -quiet 0 -verbose 0} $args]
    set v [expr {[info exists ::env(STUB_VIVADO_VERSION)] ? $::env(STUB_VIVADO_VERSION) : "2024.1"}]
    if {[dict exists $o -short]} { return $v }
    return "Vivado v$v (64-bit) (stand-in)"
}

proc create_project {args} {
    set o [::stub::opts create_project {-part 1 -force 0 -in_memory 0 -ip 0 -quiet 0 -verbose 0} $args]
    lassign [dict get $o _pos] name dir
    if {$name eq ""} { ::stub::fail "create_project: no project name" }
    if {$dir eq ""} { set dir [file join [pwd] $name] }
    set part [expr {[dict exists $o -part] ? [dict get $o -part] : ""}]
    if {$part ne "" && $part ni $::stub::parts} { ::stub::fail "create_project: part '$part' not found" }
    if {[file exists [file join $dir $name.xpr]] && ![dict exists $o -force]} {
        ::stub::fail "create_project: project $name exists in $dir (use -force)"
    }
    file mkdir $dir
    set fh [open [file join $dir $name.xpr] w]; puts $fh "stand-in project"; close $fh
    dict set ::stub::projects $name [dict create dir $dir part $part board_part "" board_connections "" \
        files {} top "" include_dirs {} ip_repo_paths {} target_language Verilog]
    set ::stub::current_project $name
    ::stub::newobj $name project
    ::stub::newobj sources_1 fileset
    ::stub::record project $name $dir $part
    return $name
}

proc ::stub::proj {} {
    if {$::stub::current_project eq ""} { ::stub::fail "no open project" }
    return $::stub::current_project
}

proc ::stub::pget {key} { dict get $::stub::projects [::stub::proj] $key }
proc ::stub::pset {key value} { dict set ::stub::projects [::stub::proj] $key $value }

proc current_project {args} {
    set o [::stub::opts current_project {-quiet 0 -verbose 0} $args]
    return [::stub::proj]
}

proc close_project {args} {
    ::stub::opts close_project {-delete 0 -quiet 0 -verbose 0} $args
    ::stub::record close_project [::stub::proj]
    set ::stub::current_project ""
}

proc current_fileset {args} {
    ::stub::opts current_fileset {-constrset 0 -simset 0 -quiet 0 -verbose 0} $args
    ::stub::proj
    return sources_1
}

proc get_board_parts {args} {
    set o [::stub::opts get_board_parts {-filter 1 -latest_file_version 0 -latest_hw_revision 0 -quiet 0 -verbose 0 -regexp 0 -nocase 0} $args]
    set out {}
    foreach pattern [dict get $o _pos] {
        foreach bp [dict keys $::stub::boards] {
            if {[string match $pattern $bp]} { lappend out $bp }
        }
    }
    return $out
}

proc add_files {args} {
    set o [::stub::opts add_files {-norecurse 0 -fileset 1 -scan_for_includes 0 -copy_to 1 -force 0 -quiet 0 -verbose 0} $args]
    set files [::stub::flatten [dict get $o _pos]]
    if {[llength $files] == 0} { ::stub::fail "add_files: no files" }
    foreach f $files {
        if {![file exists $f]} { ::stub::fail "add_files: $f does not exist" }
        set f [file normalize $f]
        set type [expr {[string match *.vh $f] ? "Verilog" : "Verilog"}]
        ::stub::pset files [dict merge [::stub::pget files] [dict create $f [dict create file_type $type]]]
        ::stub::newobj $f file
    }
    return $files
}

proc get_files {args} {
    set o [::stub::opts get_files {-of_objects 1 -filter 1 -all 0 -compile_order 1 -used_in 1 -quiet 0 -verbose 0} $args]
    set out {}
    foreach pattern [dict get $o _pos] {
        set hit {}
        foreach f [dict keys [::stub::pget files]] {
            if {[string match $pattern $f] || [string match $pattern [file tail $f]] || [file normalize $pattern] eq $f} { lappend hit $f }
        }
        if {$hit eq "" && ![dict exists $o -quiet]} { puts "WARNING: \[stub\] get_files: no file matches $pattern" }
        lappend out {*}$hit
    }
    return $out
}

proc update_compile_order {args} {
    set o [::stub::opts update_compile_order {-fileset 1 -quiet 0 -verbose 0} $args]
    set top [::stub::pget top]
    if {$top eq ""} { return }
    foreach f [dict keys [::stub::pget files]] {
        set fh [open $f]; set text [read $fh]; close $fh
        if {[regexp "\\mmodule\\s+$top\\M" $text]} { return }
    }
    ::stub::fail "update_compile_order: the top '$top' is in none of the project's files"
}

proc update_ip_catalog {args} {
    ::stub::opts update_ip_catalog {-rebuild 0 -scan_changes 0 -add_ip 1 -repo_path 1 -quiet 0 -verbose 0} $args
    set ::stub::catalog_user {}
    foreach repo [::stub::pget ip_repo_paths] {
        foreach xml [glob -nocomplain -directory $repo */component.xml] {
            set fh [open $xml]; set vlnv [string trim [gets $fh]]; close $fh
            if {[dict exists $::stub::cores $vlnv]} { dict set ::stub::catalog_user $vlnv user }
        }
    }
    ::stub::record ip_catalog {*}[dict keys $::stub::catalog_user]
}

proc get_ipdefs {args} {
    set o [::stub::opts get_ipdefs {-all 0 -filter 1 -name 0 -regexp 0 -nocase 0 -quiet 0 -verbose 0} $args]
    set out {}
    foreach pattern [dict get $o _pos] {
        foreach vlnv [concat [dict keys $::stub::catalog] [dict keys $::stub::catalog_user]] {
            if {[string match $pattern $vlnv]} { lappend out $vlnv }
        }
    }
    return $out
}

# --- properties --------------------------------------------------------------------------------

proc set_property {args} {
    set o [::stub::opts set_property {-dict 1 -objects 1 -quiet 0 -verbose 0} $args]
    set pos [dict get $o _pos]
    if {[dict exists $o -dict]} {
        set pairs [dict get $o -dict]
        set objs [::stub::flatten $pos]
    } else {
        if {[llength $pos] < 3} { ::stub::fail "set_property: needs <name> <value> <objects>" }
        set pairs [lrange $pos 0 1]
        set objs [::stub::flatten [lrange $pos 2 end]]
    }
    if {[dict exists $o -objects]} { lappend objs {*}[dict get $o -objects] }
    if {[llength $objs] == 0} { ::stub::fail "set_property [lindex $pairs 0]: no objects" }
    if {[llength $pairs] % 2} { ::stub::fail "set_property -dict: odd list" }
    foreach obj $objs {
        foreach {name value} $pairs {
            ::stub::setprop $obj $name $value
        }
    }
}

proc get_property {args} {
    set o [::stub::opts get_property {-min 0 -max 0 -quiet 0 -verbose 0} $args]
    lassign [dict get $o _pos] name obj
    if {[llength $obj] != 1} { ::stub::fail "get_property $name: needs one object, got '$obj'" }
    return [::stub::getprop [lindex $obj 0] $name]
}

proc ::stub::setprop {obj name value} {
    set kind [::stub::kind $obj]
    set lname [string tolower $name]
    switch -- $kind {
        project {
            switch -- $lname {
                board_part {
                    if {![dict exists $::stub::boards $value]} { ::stub::fail "set_property board_part: no board part '$value' installed" }
                    ::stub::pset board_part $value
                    ::stub::pset part [dict get $::stub::boards $value part]
                }
                board_connections {
                    set bp [::stub::pget board_part]
                    if {$bp eq ""} { ::stub::fail "set_property board_connections: no board_part set" }
                    set want [expr {[dict exists $::stub::boards $bp connections] ? [dict get $::stub::boards $bp connections] : ""}]
                    if {$value ne $want} { ::stub::fail "set_property board_connections: '$value' is not a connection of $bp (expected '$want')" }
                    ::stub::pset board_connections $value
                }
                target_language { if {$value ni {Verilog VHDL}} { ::stub::fail "target_language $value" }; ::stub::pset target_language $value }
                ip_repo_paths { ::stub::pset ip_repo_paths [lmap p $value {file normalize $p}] }
                default { ::stub::fail "set_property: project has no property '$name'" }
            }
        }
        fileset {
            switch -- $lname {
                top { ::stub::pset top $value }
                include_dirs {
                    foreach d $value { if {![file isdirectory $d]} { ::stub::fail "include_dirs: $d is not a directory" } }
                    ::stub::pset include_dirs $value
                }
                default { ::stub::fail "set_property: fileset has no property '$name'" }
            }
        }
        file {
            if {$lname ne "file_type"} { ::stub::fail "set_property: file has no property '$name'" }
            if {$value ni {Verilog {Verilog Header} SystemVerilog VHDL XDC}} { ::stub::fail "file_type '$value'" }
            set files [::stub::pget files]
            dict set files $obj file_type $value
            ::stub::pset files $files
        }
        cell { ::stub::set_cell_config $obj $name $value }
        ipx { ::stub::ipx_setprop $obj $lname $value }
        default { ::stub::fail "set_property $name: '$obj' is not an object" }
    }
    ::stub::record set_property $obj $name $value
}

proc ::stub::getprop {obj name} {
    set kind [::stub::kind $obj]
    set lname [string tolower $name]
    switch -- $kind {
        project {
            switch -- $lname {
                part { return [::stub::pget part] }
                board_part { return [::stub::pget board_part] }
                directory { return [::stub::pget dir] }
                default { ::stub::fail "get_property: project has no property '$name'" }
            }
        }
        cell {
            if {[string match -nocase config.* $name]} {
                set key [string toupper [string range $name 7 end]]
                ::stub::derive $obj
                set cfg [dict get $::stub::cells $obj config]
                if {![dict exists $cfg $key]} { ::stub::fail "get_property: $obj has no parameter $key" }
                return [dict get $cfg $key]
            }
            if {$lname eq "vlnv"} { return [dict get $::stub::cells $obj vlnv] }
            ::stub::fail "get_property: cell has no property '$name'"
        }
        pin {
            if {[string equal -nocase $name CONFIG.FREQ_HZ]} {
                if {!$::stub::validated} { ::stub::fail "get_property CONFIG.FREQ_HZ: run validate_bd_design first" }
                if {![dict exists $::stub::freq $obj]} { ::stub::fail "$obj has no clock" }
                return [dict get $::stub::freq $obj]
            }
            ::stub::fail "get_property: pin has no property '$name'"
        }
        intf_pin {
            if {[string equal -nocase $name CONFIG.DATA_WIDTH]} { return [::stub::intf_width $obj] }
            ::stub::fail "get_property: interface pin has no property '$name'"
        }
        run {
            set r [dict get $::stub::runs $obj]
            switch -- $lname {
                progress { return [dict get $r progress] }
                status { return [dict get $r status] }
                directory { return [dict get $r dir] }
                default { ::stub::fail "get_property: run has no property '$name'" }
            }
        }
        clock { if {$lname eq "period"} { return [dict get $::stub::props $obj period] } }
        timing_path { if {$lname eq "slack"} { return [dict get $::stub::props $obj slack] } }
        ipx { return [::stub::ipx_getprop $obj $lname] }
    }
    ::stub::fail "get_property $name: '$obj' is not an object with that property"
}
