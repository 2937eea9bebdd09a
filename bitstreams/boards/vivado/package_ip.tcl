# Package the accelerator top (cfg(module), bitstreams/fpga_cnn/rtl/) as the Vivado IP
# cfg(ip_vendor):cfg(ip_library):cfg(ip_name):cfg(ip_version) (spec.json "ip"), the VLNV the PYNQ
# driver binds to. Its RTL parameters become the IP's parameters (set per board in the block
# design); PRESET and SPEC_VERSION are added so the .hwh says which build it describes.

proc fc_bus_parameter {core busif name value} {
    set intf [ipx::get_bus_interfaces $busif -of_objects $core]
    set param [ipx::get_bus_parameters -quiet $name -of_objects $intf]
    if {[llength $param] == 0} {
        set param [ipx::add_bus_parameter $name $intf]
    }
    set_property value $value $param
    return $param
}

proc fc_package_ip {} {
    global cfg
    set ip_dir [file join $cfg(build_dir) ip $cfg(ip_name)]
    set pkg_dir [file join $cfg(build_dir) ip_project]
    file delete -force $ip_dir $pkg_dir
    create_project -force $cfg(ip_name)_pkg $pkg_dir -part $cfg(part)
    set rtl [file join $cfg(root) $cfg(rtl_dir)]
    add_files -norecurse [glob -directory $rtl *.v *.vh]
    foreach header [glob -directory $rtl *.vh] {
        set_property file_type {Verilog Header} [get_files $header]
    }
    set_property include_dirs [list $rtl] [current_fileset]
    set_property top $cfg(module) [current_fileset]
    update_compile_order -fileset sources_1

    ipx::package_project -root_dir $ip_dir -vendor $cfg(ip_vendor) -library $cfg(ip_library) \
        -name $cfg(ip_name) -version $cfg(ip_version) -taxonomy /UserIP -import_files \
        -set_current true -force
    set core [ipx::current_core]
    set_property display_name "fpga_cnn accelerator (spec $cfg(spec_version))" $core
    set_property description "fpga-serve's CNN overlay: bitstreams/README.md" $core
    set_property supported_families {zynquplus Production zynq Production} $core

    # The packager infers the interfaces from the port names; all must be there.
    set axi [concat [list $cfg(control_if)] $cfg(masters)]
    foreach busif [concat $axi [list $cfg(clock_if) $cfg(reset_if) $cfg(interrupt_if)]] {
        if {[llength [ipx::get_bus_interfaces -quiet $busif -of_objects $core]] != 1} {
            error "the IP packager did not infer interface $busif from $cfg(module)'s ports"
        }
    }
    foreach busif $axi {
        ipx::associate_bus_interfaces -busif $busif -clock $cfg(clock_if) $core
    }
    ipx::associate_bus_interfaces -clock $cfg(clock_if) -reset $cfg(reset_if) $core
    fc_bus_parameter $core $cfg(reset_if) POLARITY ACTIVE_LOW
    fc_bus_parameter $core $cfg(interrupt_if) SENSITIVITY $cfg(interrupt_sensitivity)

    # The masters' width follows the data-width parameter, so a 64-bit preset gets 64-bit
    # interfaces; a master this board leaves idle may stay unconnected.
    set connected {}
    dict for {port spec} $cfg(hp) {
        lappend connected {*}[dict get $spec masters]
    }
    foreach master $cfg(masters) {
        set width [fc_bus_parameter $core $master DATA_WIDTH $cfg(axi_data_bits)]
        set_property value_format long $width
        set_property value_resolve_type dependent $width
        set_property value_dependency "spirit:decode(id('MODELPARAM_VALUE.$cfg(data_width_param)')) * 8" $width
        if {$master ni $connected} {
            set_property connection_required false [ipx::get_bus_interfaces $master -of_objects $core]
        }
    }

    # The control port's register block: 2^(address bits) bytes.
    set map [ipx::get_memory_maps -quiet $cfg(control_if) -of_objects $core]
    if {[llength $map] == 0} {
        set map [ipx::add_memory_map $cfg(control_if) $core]
        set_property slave_memory_map_ref $cfg(control_if) [ipx::get_bus_interfaces $cfg(control_if) -of_objects $core]
    }
    set block [ipx::get_address_blocks -quiet reg0 -of_objects $map]
    if {[llength $block] == 0} {
        set block [ipx::add_address_block reg0 $map]
    }
    set_property range [expr {1 << $cfg(control_addr_bits)}] $block
    set_property usage register $block

    foreach {name value} [list PRESET $cfg(preset) SPEC_VERSION $cfg(spec_version)] {
        set param [ipx::add_user_parameter $name $core]
        set_property value_resolve_type user $param
        set_property value_format string $param
        set_property value $value $param
    }

    ipx::create_xgui_files $core
    ipx::update_checksums $core
    ipx::check_integrity $core
    ipx::save_core $core
    ipx::unload_core $core
    close_project
    puts "fpga_cnn: packaged $cfg(ip_vendor):$cfg(ip_library):$cfg(ip_name):$cfg(ip_version) in $ip_dir"
    return $ip_dir
}
