// fpga_cnn overlay, spec 1.0: the accelerator core cnn_accel
// (VLNV fpga-serve.org:overlay:cnn_accel:1.0, see bitstreams/README.md).
//
// s_axi_control: an AXI4-Lite slave carrying the register file of bitstreams/README.md
// (byte offsets, 32-bit registers; 64 KiB window, unmapped offsets read 0 and ignore writes).
// mem_*: the engine's simple memory master (see cnn_engine.v); mem_err (valid with mem_ready)
// ends the run with ERROR_CODE 4. cnn_axi_master.v turns this port into the AXI4 master
// m_axi_gmem, and cnn_accel_axi.v is the top with both (what a block design connects).
//
// Registers:
//   0x00 CTRL        W   bit 0 START (self-clearing, ignored while BUSY), bit 1 SOFT_RESET;
//                        reads 0
//   0x04 STATUS      R   bit 0 DONE, bit 1 BUSY, bit 2 ERROR
//   0x08 ERROR_CODE  R   0 none, 1 bad opcode, 2 bad address, 3 bad descriptor, 4 bus error
//   0x0C VERSION     R   0x00010000 (spec 1.0)
//   0x10/0x14 DESC_ADDR_LO/HI, 0x18 DESC_COUNT, 0x1C/0x20 ACT_ADDR_LO/HI,
//   0x24/0x28 WGT_ADDR_LO/HI, 0x2C BATCH                       RW (byte strobes honoured)
//   0x30/0x34 CYCLES_LO/HI R  clock cycles of the last (or current) run

`default_nettype none

module cnn_accel #(
    parameter [31:0] VERSION = 32'h0001_0000
) (
    input  wire        clk,
    input  wire        rst_n,
    // AXI4-Lite control slave (addresses are word-aligned: bits 1:0 are ignored)
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [15:0] s_axi_control_awaddr,
    input  wire        s_axi_control_awvalid,
    output wire        s_axi_control_awready,
    input  wire [31:0] s_axi_control_wdata,
    input  wire [3:0]  s_axi_control_wstrb,
    input  wire        s_axi_control_wvalid,
    output wire        s_axi_control_wready,
    output wire [1:0]  s_axi_control_bresp,
    output reg         s_axi_control_bvalid,
    input  wire        s_axi_control_bready,
    input  wire [15:0] s_axi_control_araddr,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire        s_axi_control_arvalid,
    output wire        s_axi_control_arready,
    output reg  [31:0] s_axi_control_rdata,
    output wire [1:0]  s_axi_control_rresp,
    output reg         s_axi_control_rvalid,
    input  wire        s_axi_control_rready,
    // memory master (simple request/ready port, 32-bit words)
    output wire        mem_req,
    output wire        mem_we,
    output wire [63:0] mem_addr,
    output wire [31:0] mem_wdata,
    output wire [3:0]  mem_wstrb,
    input  wire        mem_ready,
    input  wire [31:0] mem_rdata,
    input  wire        mem_err        // with mem_ready: the access failed (ERROR_CODE 4)
);
    localparam [15:0] R_CTRL = 16'h00, R_STATUS = 16'h04, R_ERROR_CODE = 16'h08,
                      R_VERSION = 16'h0C, R_DESC_LO = 16'h10, R_DESC_HI = 16'h14,
                      R_DESC_COUNT = 16'h18, R_ACT_LO = 16'h1C, R_ACT_HI = 16'h20,
                      R_WGT_LO = 16'h24, R_WGT_HI = 16'h28, R_BATCH = 16'h2C,
                      R_CYCLES_LO = 16'h30, R_CYCLES_HI = 16'h34;

    reg  [31:0] desc_lo, desc_hi, desc_count, act_lo, act_hi, wgt_lo, wgt_hi, batch;
    reg         start, abort;
    wire        busy, done, error;
    wire [2:0]  err_code;
    wire [63:0] cycles;

    function [31:0] strobed(input [31:0] old, input [31:0] data, input [3:0] strb);
        integer b;
        begin
            for (b = 0; b < 4; b = b + 1)
                strobed[8 * b +: 8] = strb[b] ? data[8 * b +: 8] : old[8 * b +: 8];
        end
    endfunction

    // ---- write channel: address and data accepted together, one response each -------------
    wire        wr_fire = s_axi_control_awvalid && s_axi_control_wvalid && !s_axi_control_bvalid;
    wire [15:0] wr_addr = {s_axi_control_awaddr[15:2], 2'b00};
    wire [31:0] wd      = s_axi_control_wdata;
    wire [3:0]  ws      = s_axi_control_wstrb;
    assign s_axi_control_awready = wr_fire;
    assign s_axi_control_wready  = wr_fire;
    assign s_axi_control_bresp   = 2'b00;

    always @(posedge clk) begin
        if (!rst_n) begin
            s_axi_control_bvalid <= 1'b0;
            start <= 1'b0; abort <= 1'b0;
            desc_lo <= 32'd0; desc_hi <= 32'd0; desc_count <= 32'd0;
            act_lo <= 32'd0; act_hi <= 32'd0; wgt_lo <= 32'd0; wgt_hi <= 32'd0;
            batch <= 32'd0;
        end else begin
            start <= 1'b0;
            abort <= 1'b0;
            if (s_axi_control_bvalid && s_axi_control_bready) s_axi_control_bvalid <= 1'b0;
            if (wr_fire) begin
                s_axi_control_bvalid <= 1'b1;
                case (wr_addr)
                    R_CTRL: if (s_axi_control_wstrb[0]) begin
                        start <= s_axi_control_wdata[0];
                        abort <= s_axi_control_wdata[1];
                    end
                    R_DESC_LO:    desc_lo    <= strobed(desc_lo, wd, ws);
                    R_DESC_HI:    desc_hi    <= strobed(desc_hi, wd, ws);
                    R_DESC_COUNT: desc_count <= strobed(desc_count, wd, ws);
                    R_ACT_LO:     act_lo     <= strobed(act_lo, wd, ws);
                    R_ACT_HI:     act_hi     <= strobed(act_hi, wd, ws);
                    R_WGT_LO:     wgt_lo     <= strobed(wgt_lo, wd, ws);
                    R_WGT_HI:     wgt_hi     <= strobed(wgt_hi, wd, ws);
                    R_BATCH:      batch      <= strobed(batch, wd, ws);
                    default: ;  // read-only or unmapped
                endcase
            end
        end
    end

    // ---- read channel -------------------------------------------------------------------------
    wire        rd_fire = s_axi_control_arvalid && !s_axi_control_rvalid;
    wire [15:0] rd_addr = {s_axi_control_araddr[15:2], 2'b00};
    assign s_axi_control_arready = rd_fire;
    assign s_axi_control_rresp   = 2'b00;

    always @(posedge clk) begin
        if (!rst_n) begin
            s_axi_control_rvalid <= 1'b0;
            s_axi_control_rdata  <= 32'd0;
        end else if (rd_fire) begin
            s_axi_control_rvalid <= 1'b1;
            case (rd_addr)
                R_STATUS:     s_axi_control_rdata <= {29'd0, error, busy, done};
                R_ERROR_CODE: s_axi_control_rdata <= {29'd0, err_code};
                R_VERSION:    s_axi_control_rdata <= VERSION;
                R_DESC_LO:    s_axi_control_rdata <= desc_lo;
                R_DESC_HI:    s_axi_control_rdata <= desc_hi;
                R_DESC_COUNT: s_axi_control_rdata <= desc_count;
                R_ACT_LO:     s_axi_control_rdata <= act_lo;
                R_ACT_HI:     s_axi_control_rdata <= act_hi;
                R_WGT_LO:     s_axi_control_rdata <= wgt_lo;
                R_WGT_HI:     s_axi_control_rdata <= wgt_hi;
                R_BATCH:      s_axi_control_rdata <= batch;
                R_CYCLES_LO:  s_axi_control_rdata <= cycles[31:0];
                R_CYCLES_HI:  s_axi_control_rdata <= cycles[63:32];
                default:      s_axi_control_rdata <= 32'd0;  // CTRL reads 0 (self-clearing)
            endcase
        end else if (s_axi_control_rvalid && s_axi_control_rready) begin
            s_axi_control_rvalid <= 1'b0;
        end
    end

    cnn_engine u_engine (
        .clk(clk), .rst_n(rst_n), .start(start), .abort(abort),
        .desc_addr({desc_hi, desc_lo}), .desc_count(desc_count),
        .act_addr({act_hi, act_lo}), .wgt_addr({wgt_hi, wgt_lo}), .batch(batch),
        .busy(busy), .done(done), .error(error), .err_code(err_code), .cycles(cycles),
        .mem_req(mem_req), .mem_we(mem_we), .mem_addr(mem_addr), .mem_wdata(mem_wdata),
        .mem_wstrb(mem_wstrb), .mem_ready(mem_ready), .mem_rdata(mem_rdata),
        .mem_err(mem_err)
    );
endmodule

`default_nettype wire
