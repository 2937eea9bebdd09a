# The stand-in's IP packager (ipx::*): reads the top module's header from the project's files,
# infers interfaces from the port names as Vivado's packager does (s_axi_* / m_axi_* AXI,
# a clock, an active-low reset, a port called "interrupt"), and keeps what the script sets.

namespace eval ::ipx {}

proc ::stub::read_header {file module} {
    set fh [open $file]; set text [read $fh]; close $fh
    regsub -all {/\*.*?\*/} $text {} text
    regsub -all {//[^\n]*} $text {} text
    if {![regexp "\\mmodule\\s+$module\\M\\s*(#\\s*\\((.*?)\\))?\\s*\\((.*?)\\);" $text -> - ptext porttext]} {
        ::stub::fail "ipx::package_project: cannot read the header of $module in $file"
    }
    set params [dict create]
    foreach item [split $ptext ,] {
        if {[regexp {parameter\s+(?:integer\s+)?(\w+)\s*=\s*(.+)} $item -> name value]} {
            dict set params $name [::stub::evalexpr [string trim $value] $params]
        }
    }
    set ports [dict create]
    foreach {- dir msb lsb name} [regexp -all -inline {\m(input|output)\s+(?:wire|reg)?\s*(?:\[([^\]:]+):([^\]]+)\])?\s*(\w+)} $porttext] {
        if {$msb eq ""} { set msb 0; set lsb 0 }
        dict set ports $name [dict create dir $dir msb $msb lsb $lsb]
    }
    return [list $params $ports]
}

proc ::stub::evalexpr {text params} {
    dict for {k v} $params {
        regsub -all "\\m$k\\M" $text $v text
    }
    if {[catch {expr $text} value]} { ::stub::fail "cannot evaluate '$text'" }
    return [expr {int($value)}]
}

proc ::stub::core {} {
    if {$::stub::core eq ""} { ::stub::fail "ipx: no current core" }
    return $::stub::core
}

proc ::stub::cget {vlnv args} { dict get $::stub::cores $vlnv {*}$args }
proc ::stub::cset {vlnv args} {
    set c [dict get $::stub::cores $vlnv]
    dict set c {*}$args
    dict set ::stub::cores $vlnv $c
}

proc ::stub::ipxobj {type vlnv args} {
    set obj "ipx:$type:$vlnv:[join $args :]"
    ::stub::newobj $obj ipx [dict create type $type vlnv $vlnv path $args]
    return $obj
}

proc ::stub::ipxinfo {obj} {
    if {[::stub::kind $obj] ne "ipx"} { ::stub::fail "'$obj' is not an IP-packager object" }
    return [dict get $::stub::props $obj]
}

proc ::ipx::package_project {args} {
    set o [::stub::opts ipx::package_project {-root_dir 1 -vendor 1 -library 1 -name 1 -version 1 -taxonomy 1 -import_files 0 -set_current 1 -force 0 -module 1 -generated_files 0 -quiet 0 -verbose 0} $args]
    foreach need {-root_dir -vendor -library -name -version} {
        if {![dict exists $o $need]} { ::stub::fail "ipx::package_project: give $need" }
    }
    set top [::stub::pget top]
    if {$top eq ""} { ::stub::fail "ipx::package_project: the fileset has no top" }
    set header ""
    foreach f [dict keys [::stub::pget files]] {
        if {[string match *.v $f]} {
            set fh [open $f]; set text [read $fh]; close $fh
            if {[regexp "\\mmodule\\s+$top\\M" $text]} { set header [::stub::read_header $f $top] }
        }
        if {[dict get [::stub::pget files] $f file_type] ne "Verilog Header" && [string match *.vh $f]} {
            ::stub::fail "ipx::package_project: $f is an include file but file_type is not 'Verilog Header'"
        }
    }
    if {$header eq ""} { ::stub::fail "ipx::package_project: top $top not found" }
    foreach f [dict keys [::stub::pget files]] {
        set fh [open $f]; set text [read $fh]; close $fh
        foreach inc [regexp -all -inline {`include\s+"([^"]+)"} $text] {
            if {[string match `include* $inc]} { continue }
            set ok 0
            foreach d [concat [list [file dirname $f]] [::stub::pget include_dirs]] {
                if {[file exists [file join $d $inc]]} { set ok 1 }
            }
            if {!$ok} { ::stub::fail "$f includes $inc, found in no include directory" }
        }
    }
    lassign $header params ports
    set vlnv [join [list [dict get $o -vendor] [dict get $o -library] [dict get $o -name] [dict get $o -version]] :]
    set busifs [dict create]
    dict for {port p} $ports {
        if {[regexp {^([sm]_axi_[a-z0-9]+)_([a-z]+)$} $port -> bus sig]} {
            dict set busifs $bus type aximm
            dict set busifs $bus mode [expr {[string match s_* $bus] ? "slave" : "master"}]
            dict lappend busifs $bus ports $port
            if {$sig in {rdata wdata}} {
                dict set busifs $bus data_port $port
                dict set busifs $bus params DATA_WIDTH [dict create value [expr {[::stub::evalexpr [dict get $p msb] $params] - [::stub::evalexpr [dict get $p lsb] $params] + 1}] resolve immediate dependency ""]
            }
            if {$sig in {awlen arlen}} { dict set busifs $bus protocol AXI4 }
        } elseif {[regexp {clk} $port] && [dict get $p dir] eq "input"} {
            dict set busifs $port [dict create type clock mode slave ports [list $port] params {}]
        } elseif {[regexp {(rst|reset)} $port] && [dict get $p dir] eq "input"} {
            dict set busifs $port [dict create type reset mode slave ports [list $port] params {}]
        } elseif {$port eq "interrupt" && [dict get $p dir] eq "output"} {
            dict set busifs $port [dict create type interrupt mode master ports [list $port] params {}]
        }
    }
    dict for {bus b} $busifs {
        if {[dict get $b type] eq "aximm"} {
            if {![dict exists $b protocol]} { dict set busifs $bus protocol AXI4LITE }
            dict set busifs $bus required 1
            dict set busifs $bus clock ""
        }
    }
    set user [dict create]
    dict for {name value} $params {
        dict set user $name [dict create value $value format long resolve user hdl 1]
    }
    dict set ::stub::cores $vlnv [dict create root [file normalize [dict get $o -root_dir]] module $top \
        params $params ports $ports busifs $busifs user $user memmaps {} checked 0 saved 0 xgui 0 reset_of {}]
    if {[dict exists $o -set_current] && [dict get $o -set_current] in {true 1}} { set ::stub::core $vlnv }
    file mkdir [dict get $o -root_dir]
    ::stub::record ipx_package $vlnv $top [dict get $o -root_dir]
    return $vlnv
}

proc ::ipx::current_core {args} {
    ::stub::opts ipx::current_core {-quiet 0 -verbose 0} $args
    return [::stub::ipxobj core [::stub::core]]
}

proc ::stub::of_core {o} {
    if {![dict exists $o -of_objects]} { ::stub::fail "ipx: -of_objects is required" }
    set info [::stub::ipxinfo [dict get $o -of_objects]]
    return $info
}

proc ::stub::ipx_get {what o names_of found_obj} {
    set names [dict get $o _pos]
    set out {}
    foreach n $names {
        if {$n in $names_of} { lappend out [{*}$found_obj $n] } elseif {![dict exists $o -quiet]} {
            puts "WARNING: \[stub\] $what $n not found"
        }
    }
    if {$names eq ""} { foreach n $names_of { lappend out [{*}$found_obj $n] } }
    return $out
}

proc ::ipx::get_bus_interfaces {args} {
    set o [::stub::opts ipx::get_bus_interfaces {-of_objects 1 -quiet 0 -verbose 0 -filter 1} $args]
    set c [dict get [::stub::of_core $o] vlnv]
    return [::stub::ipx_get bus_interface $o [dict keys [::stub::cget $c busifs]] [list ::stub::ipxobj busif $c]]
}

proc ::ipx::get_bus_parameters {args} {
    set o [::stub::opts ipx::get_bus_parameters {-of_objects 1 -quiet 0 -verbose 0} $args]
    set info [::stub::of_core $o]
    set c [dict get $info vlnv]; set bus [lindex [dict get $info path] 0]
    return [::stub::ipx_get bus_parameter $o [dict keys [::stub::cget $c busifs $bus params]] [list ::stub::ipxobj busparam $c $bus]]
}

proc ::ipx::add_bus_parameter {name busif args} {
    set info [::stub::ipxinfo $busif]
    if {[dict get $info type] ne "busif"} { ::stub::fail "ipx::add_bus_parameter: $busif is not a bus interface" }
    set c [dict get $info vlnv]; set bus [lindex [dict get $info path] 0]
    if {[dict exists [::stub::cget $c busifs $bus params] $name]} { ::stub::fail "ipx::add_bus_parameter: $bus already has $name" }
    ::stub::cset $c busifs $bus params $name [dict create value "" resolve immediate dependency ""]
    return [::stub::ipxobj busparam $c $bus $name]
}

proc ::ipx::associate_bus_interfaces {args} {
    set o [::stub::opts ipx::associate_bus_interfaces {-busif 1 -clock 1 -reset 1 -remove 0 -quiet 0 -verbose 0} $args]
    set c [dict get [::stub::ipxinfo [lindex [dict get $o _pos] 0]] vlnv]
    set busifs [::stub::cget $c busifs]
    if {![dict exists $o -clock] || ![dict exists $busifs [dict get $o -clock]] || [dict get $busifs [dict get $o -clock] type] ne "clock"} {
        ::stub::fail "ipx::associate_bus_interfaces: -clock must name a clock interface"
    }
    if {[dict exists $o -busif]} {
        set bus [dict get $o -busif]
        if {![dict exists $busifs $bus]} { ::stub::fail "ipx::associate_bus_interfaces: no interface $bus" }
        ::stub::cset $c busifs $bus clock [dict get $o -clock]
    }
    if {[dict exists $o -reset]} {
        set r [dict get $o -reset]
        if {![dict exists $busifs $r] || [dict get $busifs $r type] ne "reset"} { ::stub::fail "ipx::associate_bus_interfaces: $r is not a reset interface" }
        ::stub::cset $c reset_of [dict get $o -clock] $r
    }
}

proc ::ipx::add_user_parameter {name core args} {
    set c [dict get [::stub::ipxinfo $core] vlnv]
    if {[dict exists [::stub::cget $c user] $name]} { ::stub::fail "ipx::add_user_parameter: $name exists" }
    ::stub::cset $c user $name [dict create value "" format long resolve user hdl 0]
    return [::stub::ipxobj userparam $c $name]
}

proc ::ipx::get_user_parameters {args} {
    set o [::stub::opts ipx::get_user_parameters {-of_objects 1 -quiet 0 -verbose 0} $args]
    set c [dict get [::stub::of_core $o] vlnv]
    return [::stub::ipx_get user_parameter $o [dict keys [::stub::cget $c user]] [list ::stub::ipxobj userparam $c]]
}

proc ::ipx::get_memory_maps {args} {
    set o [::stub::opts ipx::get_memory_maps {-of_objects 1 -quiet 0 -verbose 0} $args]
    set c [dict get [::stub::of_core $o] vlnv]
    return [::stub::ipx_get memory_map $o [dict keys [::stub::cget $c memmaps]] [list ::stub::ipxobj memmap $c]]
}

proc ::ipx::add_memory_map {name core args} {
    set c [dict get [::stub::ipxinfo $core] vlnv]
    ::stub::cset $c memmaps $name [dict create blocks {}]
    return [::stub::ipxobj memmap $c $name]
}

proc ::ipx::get_address_blocks {args} {
    set o [::stub::opts ipx::get_address_blocks {-of_objects 1 -quiet 0 -verbose 0} $args]
    set info [::stub::of_core $o]
    set c [dict get $info vlnv]; set map [lindex [dict get $info path] 0]
    return [::stub::ipx_get address_block $o [dict keys [::stub::cget $c memmaps $map blocks]] [list ::stub::ipxobj block $c $map]]
}

proc ::ipx::add_address_block {name map args} {
    set info [::stub::ipxinfo $map]
    set c [dict get $info vlnv]; set m [lindex [dict get $info path] 0]
    ::stub::cset $c memmaps $m blocks $name [dict create range 0 usage memory]
    return [::stub::ipxobj block $c $m $name]
}

proc ::stub::ipx_setprop {obj name value} {
    set info [::stub::ipxinfo $obj]
    set c [dict get $info vlnv]; set path [dict get $info path]
    switch -- [dict get $info type] {
        core {
            if {$name ni {display_name description supported_families vendor_display_name company_url taxonomy}} {
                ::stub::fail "set_property: an IP core has no property '$name'"
            }
        }
        busif {
            set bus [lindex $path 0]
            switch -- $name {
                connection_required { ::stub::cset $c busifs $bus required [expr {$value in {true 1}}] }
                slave_memory_map_ref {
                    if {![dict exists [::stub::cget $c memmaps] $value]} { ::stub::fail "slave_memory_map_ref: no memory map $value" }
                    ::stub::cset $c busifs $bus memmap $value
                }
                default { ::stub::fail "set_property: a bus interface has no property '$name'" }
            }
        }
        busparam {
            lassign $path bus p
            switch -- $name {
                value { ::stub::cset $c busifs $bus params $p value $value }
                value_format { if {$value ni {long string bool float bitString}} { ::stub::fail "value_format $value" } }
                value_resolve_type {
                    if {$value ni {user immediate dependent generated}} { ::stub::fail "value_resolve_type $value" }
                    ::stub::cset $c busifs $bus params $p resolve $value
                }
                value_dependency { ::stub::cset $c busifs $bus params $p dependency $value }
                value_source { }
                default { ::stub::fail "set_property: a bus parameter has no property '$name'" }
            }
        }
        userparam {
            set p [lindex $path 0]
            switch -- $name {
                value { ::stub::cset $c user $p value $value }
                value_format {
                    if {$value ni {long string bool float bitString}} { ::stub::fail "value_format $value" }
                    ::stub::cset $c user $p format $value
                }
                value_resolve_type { ::stub::cset $c user $p resolve $value }
                display_name - description { }
                default { ::stub::fail "set_property: a user parameter has no property '$name'" }
            }
        }
        block {
            lassign $path m b
            switch -- $name {
                range { ::stub::cset $c memmaps $m blocks $b range [expr {$value}] }
                usage {
                    if {$value ni {register memory reserved}} { ::stub::fail "usage $value" }
                    ::stub::cset $c memmaps $m blocks $b usage $value
                }
                default { ::stub::fail "set_property: an address block has no property '$name'" }
            }
        }
        default { ::stub::fail "set_property $name on [dict get $info type]" }
    }
}

proc ::stub::ipx_getprop {obj name} {
    set info [::stub::ipxinfo $obj]
    set c [dict get $info vlnv]; set path [dict get $info path]
    switch -- [dict get $info type] {
        busparam { lassign $path bus p; return [::stub::cget $c busifs $bus params $p value] }
        userparam { return [::stub::cget $c user [lindex $path 0] value] }
        default { ::stub::fail "get_property $name on [dict get $info type]" }
    }
}

# Resolve a dependent bus parameter for parameter values ``params``.
proc ::stub::resolve_dependency {expression params} {
    set text $expression
    while {[regexp {spirit:decode\(id\('MODELPARAM_VALUE\.(\w+)'\)\)} $text -> name]} {
        if {![dict exists $params $name]} { ::stub::fail "value_dependency refers to an unknown parameter $name" }
        regsub {spirit:decode\(id\('MODELPARAM_VALUE\.\w+'\)\)} $text [dict get $params $name] text
    }
    if {[catch {expr $text} value]} { ::stub::fail "value_dependency '$expression' does not evaluate" }
    return $value
}

proc ::ipx::create_xgui_files {core args} { ::stub::cset [dict get [::stub::ipxinfo $core] vlnv] xgui 1 }
proc ::ipx::update_checksums {core args} { ::stub::ipxinfo $core }

proc ::ipx::check_integrity {core args} {
    set c [dict get [::stub::ipxinfo $core] vlnv]
    set errors {}
    dict for {bus b} [::stub::cget $c busifs] {
        if {[dict get $b type] eq "aximm"} {
            if {[dict get $b clock] eq ""} { lappend errors "$bus is associated with no clock" }
            if {[dict get $b mode] eq "slave" && ![dict exists $b memmap]} { lappend errors "slave $bus has no memory map" }
            dict for {p v} [dict get $b params] {
                if {[dict get $v resolve] eq "dependent"} {
                    ::stub::resolve_dependency [dict get $v dependency] [::stub::cget $c params]
                }
            }
        }
        if {[dict get $b type] eq "reset" && ![dict exists [dict get $b params] POLARITY]} { lappend errors "reset $bus has no POLARITY" }
        if {[dict get $b type] eq "interrupt" && ![dict exists [dict get $b params] SENSITIVITY]} { lappend errors "interrupt $bus has no SENSITIVITY" }
    }
    dict for {m map} [::stub::cget $c memmaps] {
        dict for {b blk} [dict get $map blocks] {
            if {[dict get $blk range] <= 0} { lappend errors "address block $m/$b has no range" }
        }
    }
    if {![::stub::cget $c xgui]} { lappend errors "no XGUI files (ipx::create_xgui_files)" }
    if {$errors ne ""} { ::stub::fail "ipx::check_integrity: [join $errors {; }]" }
    ::stub::cset $c checked 1
}

proc ::ipx::save_core {core args} {
    set c [dict get [::stub::ipxinfo $core] vlnv]
    if {![::stub::cget $c checked]} { ::stub::fail "ipx::save_core: run ipx::check_integrity first" }
    set fh [open [file join [::stub::cget $c root] component.xml] w]
    puts $fh $c
    close $fh
    ::stub::cset $c saved 1
    ::stub::record ipx_saved $c
}

proc ::ipx::unload_core {core args} {
    ::stub::ipxinfo $core
    set ::stub::core ""
}
