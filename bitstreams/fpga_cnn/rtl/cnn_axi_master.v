// fpga_cnn overlay, spec 1.0: cnn_axi_master, the engine's memory port as an AXI4 master.
//
// Converts the simple request/ready port of cnn_engine.v (mem_*) into the AXI4 master
// m_axi_gmem (Vitis HLS port names, 64-bit addresses, 32-bit data). Every access becomes one
// single-beat INCR transaction (AxLEN 0, AxSIZE 2 = 4 bytes, WLAST 1; no ID signals), one
// transaction in flight at a time, at the engine's own pace. Bursts (and a wider data bus) are
// the throughput step this adapter does not take.
//
// Request side (cnn_engine.v): mem_req with mem_we/mem_addr/mem_wdata/mem_wstrb, held until
// mem_ready. The adapter registers the request when idle, runs the transaction and answers with
// a one-cycle mem_ready carrying mem_rdata (reads) and mem_err: 1 when the slave answered SLVERR
// or DECERR (RRESP/BRESP bit 1), 0 for OKAY/EXOKAY.
//
// A request withdrawn before its answer (mem_req low for a cycle: the engine's SOFT_RESET) cannot
// be withdrawn on AXI: a VALID, once raised, stays until its READY, and a started transaction
// is finished (a write may still land). Its answer is dropped, and the next request is taken
// only after it: a new run never sees an old run's data.
//
// AXI obligations met by construction: every VALID and every payload comes from a register, set
// when the transaction starts and left unchanged until that channel's handshake, so no READY
// reaches a VALID combinationally; AW and W are raised together and each completes on its own
// (the slave may take them in either order); BREADY/RREADY are high while a response is due.

`default_nettype none

module cnn_axi_master (
    input  wire        clk,
    input  wire        rst_n,
    // the engine's memory port
    input  wire        mem_req,
    input  wire        mem_we,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [63:0] mem_addr,     // word-aligned: bits 1:0 are not used
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [31:0] mem_wdata,
    input  wire [3:0]  mem_wstrb,
    output wire        mem_ready,
    output wire [31:0] mem_rdata,
    output wire        mem_err,
    // AXI4 master: write address
    output reg  [63:0] m_axi_gmem_awaddr,
    output wire [7:0]  m_axi_gmem_awlen,
    output wire [2:0]  m_axi_gmem_awsize,
    output wire [1:0]  m_axi_gmem_awburst,
    output wire [3:0]  m_axi_gmem_awcache,
    output wire [2:0]  m_axi_gmem_awprot,
    output reg         m_axi_gmem_awvalid,
    input  wire        m_axi_gmem_awready,
    // write data
    output reg  [31:0] m_axi_gmem_wdata,
    output reg  [3:0]  m_axi_gmem_wstrb,
    output wire        m_axi_gmem_wlast,
    output reg         m_axi_gmem_wvalid,
    input  wire        m_axi_gmem_wready,
    // write response
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [1:0]  m_axi_gmem_bresp,  // bit 1: SLVERR or DECERR (bit 0 tells which)
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire        m_axi_gmem_bvalid,
    output wire        m_axi_gmem_bready,
    // read address
    output reg  [63:0] m_axi_gmem_araddr,
    output wire [7:0]  m_axi_gmem_arlen,
    output wire [2:0]  m_axi_gmem_arsize,
    output wire [1:0]  m_axi_gmem_arburst,
    output wire [3:0]  m_axi_gmem_arcache,
    output wire [2:0]  m_axi_gmem_arprot,
    output reg         m_axi_gmem_arvalid,
    input  wire        m_axi_gmem_arready,
    // read data
    input  wire [31:0] m_axi_gmem_rdata,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [1:0]  m_axi_gmem_rresp,  // as BRESP
    input  wire        m_axi_gmem_rlast,  // single beats: every beat is the last
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire        m_axi_gmem_rvalid,
    output wire        m_axi_gmem_rready
);
    localparam [1:0] S_IDLE = 2'd0, S_WRITE = 2'd1, S_READ = 2'd2, S_RESP = 2'd3;
    localparam [1:0] BURST_INCR = 2'b01;
    localparam [2:0] SIZE_4 = 3'b010;
    localparam [3:0] CACHE_BUFFERABLE = 4'b0011;  // normal, non-cacheable, bufferable (Vitis)

    reg  [1:0]  state;
    reg         dropped;     // the engine withdrew the request: finish on AXI, do not answer
    reg         resp_err;
    reg  [31:0] rdata_q;

    assign m_axi_gmem_awlen   = 8'd0;
    assign m_axi_gmem_awsize  = SIZE_4;
    assign m_axi_gmem_awburst = BURST_INCR;
    assign m_axi_gmem_awcache = CACHE_BUFFERABLE;
    assign m_axi_gmem_awprot  = 3'b000;
    assign m_axi_gmem_wlast   = 1'b1;
    assign m_axi_gmem_arlen   = 8'd0;
    assign m_axi_gmem_arsize  = SIZE_4;
    assign m_axi_gmem_arburst = BURST_INCR;
    assign m_axi_gmem_arcache = CACHE_BUFFERABLE;
    assign m_axi_gmem_arprot  = 3'b000;

    // the response is due once both AW and W are through (BVALID cannot come earlier)
    assign m_axi_gmem_bready = state == S_WRITE && !m_axi_gmem_awvalid && !m_axi_gmem_wvalid;
    assign m_axi_gmem_rready = state == S_READ && !m_axi_gmem_arvalid;

    assign mem_ready = state == S_RESP && !dropped && mem_req;
    assign mem_rdata = rdata_q;
    assign mem_err   = resp_err;

    always @(posedge clk) begin
        if (!rst_n) begin
            state <= S_IDLE;
            dropped <= 1'b0;
            resp_err <= 1'b0;
            rdata_q <= 32'd0;
            m_axi_gmem_awaddr <= 64'd0;
            m_axi_gmem_awvalid <= 1'b0;
            m_axi_gmem_wdata <= 32'd0;
            m_axi_gmem_wstrb <= 4'd0;
            m_axi_gmem_wvalid <= 1'b0;
            m_axi_gmem_araddr <= 64'd0;
            m_axi_gmem_arvalid <= 1'b0;
        end else begin
            if (state != S_IDLE && !mem_req) dropped <= 1'b1;
            case (state)
                S_IDLE:
                    if (mem_req) begin
                        dropped <= 1'b0;
                        resp_err <= 1'b0;
                        if (mem_we) begin
                            m_axi_gmem_awaddr <= {mem_addr[63:2], 2'b00};
                            m_axi_gmem_wdata <= mem_wdata;
                            m_axi_gmem_wstrb <= mem_wstrb;
                            m_axi_gmem_awvalid <= 1'b1;
                            m_axi_gmem_wvalid <= 1'b1;
                            state <= S_WRITE;
                        end else begin
                            m_axi_gmem_araddr <= {mem_addr[63:2], 2'b00};
                            m_axi_gmem_arvalid <= 1'b1;
                            state <= S_READ;
                        end
                    end

                S_WRITE: begin
                    if (m_axi_gmem_awready) m_axi_gmem_awvalid <= 1'b0;
                    if (m_axi_gmem_wready) m_axi_gmem_wvalid <= 1'b0;
                    if (m_axi_gmem_bready && m_axi_gmem_bvalid) begin
                        resp_err <= m_axi_gmem_bresp[1];
                        state <= S_RESP;
                    end
                end

                S_READ: begin
                    if (m_axi_gmem_arready) m_axi_gmem_arvalid <= 1'b0;
                    if (m_axi_gmem_rready && m_axi_gmem_rvalid) begin
                        rdata_q <= m_axi_gmem_rdata;
                        resp_err <= m_axi_gmem_rresp[1];
                        state <= S_RESP;
                    end
                end

                S_RESP: state <= S_IDLE;  // mem_ready this cycle (unless dropped)

                default: state <= S_IDLE;
            endcase
        end
    end
endmodule

`default_nettype wire
