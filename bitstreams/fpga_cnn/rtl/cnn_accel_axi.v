// fpga_cnn overlay, spec 1.0: cnn_accel_axi, the accelerator as a block design connects it.
//
// cnn_accel (the AXI4-Lite slave s_axi_control with the register file, and the engine) with
// its memory port turned into the AXI4 master m_axi_gmem by cnn_axi_master: 64-bit addresses,
// 32-bit data, single-beat INCR transactions, one in flight (see cnn_axi_master.v). An SLVERR
// or DECERR response ends the run with STATUS.ERROR and ERROR_CODE 4 (bus error).
// One clock and one active-low synchronous reset for both interfaces.

`default_nettype none

module cnn_accel_axi (
    input  wire        clk,
    input  wire        rst_n,
    // AXI4-Lite control slave
    input  wire [15:0] s_axi_control_awaddr,
    input  wire        s_axi_control_awvalid,
    output wire        s_axi_control_awready,
    input  wire [31:0] s_axi_control_wdata,
    input  wire [3:0]  s_axi_control_wstrb,
    input  wire        s_axi_control_wvalid,
    output wire        s_axi_control_wready,
    output wire [1:0]  s_axi_control_bresp,
    output wire        s_axi_control_bvalid,
    input  wire        s_axi_control_bready,
    input  wire [15:0] s_axi_control_araddr,
    input  wire        s_axi_control_arvalid,
    output wire        s_axi_control_arready,
    output wire [31:0] s_axi_control_rdata,
    output wire [1:0]  s_axi_control_rresp,
    output wire        s_axi_control_rvalid,
    input  wire        s_axi_control_rready,
    // AXI4 memory master
    output wire [63:0] m_axi_gmem_awaddr,
    output wire [7:0]  m_axi_gmem_awlen,
    output wire [2:0]  m_axi_gmem_awsize,
    output wire [1:0]  m_axi_gmem_awburst,
    output wire [3:0]  m_axi_gmem_awcache,
    output wire [2:0]  m_axi_gmem_awprot,
    output wire        m_axi_gmem_awvalid,
    input  wire        m_axi_gmem_awready,
    output wire [31:0] m_axi_gmem_wdata,
    output wire [3:0]  m_axi_gmem_wstrb,
    output wire        m_axi_gmem_wlast,
    output wire        m_axi_gmem_wvalid,
    input  wire        m_axi_gmem_wready,
    input  wire [1:0]  m_axi_gmem_bresp,
    input  wire        m_axi_gmem_bvalid,
    output wire        m_axi_gmem_bready,
    output wire [63:0] m_axi_gmem_araddr,
    output wire [7:0]  m_axi_gmem_arlen,
    output wire [2:0]  m_axi_gmem_arsize,
    output wire [1:0]  m_axi_gmem_arburst,
    output wire [3:0]  m_axi_gmem_arcache,
    output wire [2:0]  m_axi_gmem_arprot,
    output wire        m_axi_gmem_arvalid,
    input  wire        m_axi_gmem_arready,
    input  wire [31:0] m_axi_gmem_rdata,
    input  wire [1:0]  m_axi_gmem_rresp,
    input  wire        m_axi_gmem_rlast,
    input  wire        m_axi_gmem_rvalid,
    output wire        m_axi_gmem_rready
);
    wire        mem_req, mem_we, mem_ready, mem_err;
    wire [63:0] mem_addr;
    wire [31:0] mem_wdata, mem_rdata;
    wire [3:0]  mem_wstrb;

    cnn_accel u_accel (
        .clk(clk), .rst_n(rst_n),
        .s_axi_control_awaddr(s_axi_control_awaddr),
        .s_axi_control_awvalid(s_axi_control_awvalid),
        .s_axi_control_awready(s_axi_control_awready),
        .s_axi_control_wdata(s_axi_control_wdata), .s_axi_control_wstrb(s_axi_control_wstrb),
        .s_axi_control_wvalid(s_axi_control_wvalid),
        .s_axi_control_wready(s_axi_control_wready),
        .s_axi_control_bresp(s_axi_control_bresp), .s_axi_control_bvalid(s_axi_control_bvalid),
        .s_axi_control_bready(s_axi_control_bready),
        .s_axi_control_araddr(s_axi_control_araddr),
        .s_axi_control_arvalid(s_axi_control_arvalid),
        .s_axi_control_arready(s_axi_control_arready),
        .s_axi_control_rdata(s_axi_control_rdata), .s_axi_control_rresp(s_axi_control_rresp),
        .s_axi_control_rvalid(s_axi_control_rvalid),
        .s_axi_control_rready(s_axi_control_rready),
        .mem_req(mem_req), .mem_we(mem_we), .mem_addr(mem_addr), .mem_wdata(mem_wdata),
        .mem_wstrb(mem_wstrb), .mem_ready(mem_ready), .mem_rdata(mem_rdata), .mem_err(mem_err)
    );

    cnn_axi_master u_gmem (
        .clk(clk), .rst_n(rst_n),
        .mem_req(mem_req), .mem_we(mem_we), .mem_addr(mem_addr), .mem_wdata(mem_wdata),
        .mem_wstrb(mem_wstrb), .mem_ready(mem_ready), .mem_rdata(mem_rdata), .mem_err(mem_err),
        .m_axi_gmem_awaddr(m_axi_gmem_awaddr), .m_axi_gmem_awlen(m_axi_gmem_awlen),
        .m_axi_gmem_awsize(m_axi_gmem_awsize), .m_axi_gmem_awburst(m_axi_gmem_awburst),
        .m_axi_gmem_awcache(m_axi_gmem_awcache), .m_axi_gmem_awprot(m_axi_gmem_awprot),
        .m_axi_gmem_awvalid(m_axi_gmem_awvalid), .m_axi_gmem_awready(m_axi_gmem_awready),
        .m_axi_gmem_wdata(m_axi_gmem_wdata), .m_axi_gmem_wstrb(m_axi_gmem_wstrb),
        .m_axi_gmem_wlast(m_axi_gmem_wlast), .m_axi_gmem_wvalid(m_axi_gmem_wvalid),
        .m_axi_gmem_wready(m_axi_gmem_wready),
        .m_axi_gmem_bresp(m_axi_gmem_bresp), .m_axi_gmem_bvalid(m_axi_gmem_bvalid),
        .m_axi_gmem_bready(m_axi_gmem_bready),
        .m_axi_gmem_araddr(m_axi_gmem_araddr), .m_axi_gmem_arlen(m_axi_gmem_arlen),
        .m_axi_gmem_arsize(m_axi_gmem_arsize), .m_axi_gmem_arburst(m_axi_gmem_arburst),
        .m_axi_gmem_arcache(m_axi_gmem_arcache), .m_axi_gmem_arprot(m_axi_gmem_arprot),
        .m_axi_gmem_arvalid(m_axi_gmem_arvalid), .m_axi_gmem_arready(m_axi_gmem_arready),
        .m_axi_gmem_rdata(m_axi_gmem_rdata), .m_axi_gmem_rresp(m_axi_gmem_rresp),
        .m_axi_gmem_rlast(m_axi_gmem_rlast), .m_axi_gmem_rvalid(m_axi_gmem_rvalid),
        .m_axi_gmem_rready(m_axi_gmem_rready)
    );
endmodule

`default_nettype wire
