# tclsh tests/rtl/vivado/run.tcl <script.tcl> <arguments...>
# Runs a board-flow script against the stand-in as `vivado -mode batch -source <script> -tclargs
# <arguments...>` would, then writes the record to $env(STUB_RECORD). Exit status 1 (and the
# message on stderr) when the script fails, whatever the reason.

set here [file dirname [file normalize [info script]]]
foreach part {stub.tcl stub_ipx.tcl stub_bd.tcl stub_impl.tcl} {
    source [file join $here $part]
}
set ::stub::saved 0

set script [file normalize [lindex $argv 0]]
set argv [lrange $argv 1 end]
set argc [llength $argv]
set status 0
if {[catch {
    set ::argv0 $script
    uplevel #0 [list source $script]
} message options]} {
    puts stderr $message
    puts stderr [dict get $options -errorinfo]
    set status 1
}
if {[info exists ::env(STUB_RECORD)]} {
    ::stub::dump $::env(STUB_RECORD)
}
exit $status
