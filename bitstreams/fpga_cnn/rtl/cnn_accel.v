// cnn_accel: the fpga_cnn overlay, spec 2 (bitstreams/README.md). Top level for a block
// design: AXI4-Lite control port s_axi_control, AXI4 read masters m_axi_wt0/m_axi_wt1
// (descriptors and weights; wt1 idle when WEIGHT_PORTS = 1), m_axi_in (input rows) and
// m_axi_rs (fused-ADD residuals), AXI4 write master m_axi_out, clock ap_clk, active-low
// synchronous reset ap_rst_n, level interrupt `interrupt`.
`default_nettype none
`include "cnn_spec.vh"
`include "cnn_derived.vh"

module cnn_accel #(
    parameter integer ARRAY_CI = 32,
    parameter integer ARRAY_CO = 64,
    parameter integer ACC_DEPTH = 2048,
    parameter integer IBUF_WORDS = 16384,
    parameter integer IBUF_BANKS = 2,
    parameter integer WFIFO_WORDS = 16384,      // a power of two
    parameter integer OUT_FIFO_WORDS = 2048,    // a power of two
    parameter integer RES_FIFO_WORDS = 128,     // a power of two
    parameter integer PORT_FIFO_WORDS = 128,    // a power of two
    parameter integer AXI_DATA_BYTES = 16,
    parameter integer MAX_BURST = 256,          // AXI4: 256; AXI3: 16
    parameter integer BURST = 64,               // longest read burst issued
    parameter integer OUTSTANDING = 8,          // a power of two
    parameter integer WEIGHT_PORTS = 2,
    parameter integer BLOCK_BYTES = 1024,
    parameter integer PERF_DEPTH = 1024,        // a power of two
    parameter integer PACK_SHIFT = 18,
    parameter integer PACK_GROUP = 8,
    parameter integer ADD_DSP = 1               // 0: the fused ADD's products in LUTs
) (
    input  wire        ap_clk,
    input  wire        ap_rst_n,
    /* verilator lint_off SYMRSVDWORD */
    output wire        interrupt,      // the Vivado name for an IP's interrupt
    /* verilator lint_on SYMRSVDWORD */
    // s_axi_control
    /* verilator lint_off UNUSEDSIGNAL */  // word-aligned registers: AWADDR[1:0] unused
    input  wire [15:0] s_axi_control_awaddr,
    /* verilator lint_on UNUSEDSIGNAL */
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
    input  wire        s_axi_control_arvalid,
    output wire        s_axi_control_arready,
    output reg  [31:0] s_axi_control_rdata,
    output wire [1:0]  s_axi_control_rresp,
    output reg         s_axi_control_rvalid,
    input  wire        s_axi_control_rready,
    // m_axi_wt0
    output wire [63:0] m_axi_wt0_araddr,
    output wire [7:0]  m_axi_wt0_arlen,
    output wire [2:0]  m_axi_wt0_arsize,
    output wire [1:0]  m_axi_wt0_arburst,
    output wire [3:0]  m_axi_wt0_arcache,
    output wire [2:0]  m_axi_wt0_arprot,
    output wire        m_axi_wt0_arvalid,
    input  wire        m_axi_wt0_arready,
    input  wire [AXI_DATA_BYTES*8-1:0] m_axi_wt0_rdata,
    input  wire [1:0]  m_axi_wt0_rresp,
    input  wire        m_axi_wt0_rlast,
    input  wire        m_axi_wt0_rvalid,
    output wire        m_axi_wt0_rready,
    // m_axi_wt1
    output wire [63:0] m_axi_wt1_araddr,
    output wire [7:0]  m_axi_wt1_arlen,
    output wire [2:0]  m_axi_wt1_arsize,
    output wire [1:0]  m_axi_wt1_arburst,
    output wire [3:0]  m_axi_wt1_arcache,
    output wire [2:0]  m_axi_wt1_arprot,
    output wire        m_axi_wt1_arvalid,
    input  wire        m_axi_wt1_arready,
    input  wire [AXI_DATA_BYTES*8-1:0] m_axi_wt1_rdata,
    input  wire [1:0]  m_axi_wt1_rresp,
    input  wire        m_axi_wt1_rlast,
    input  wire        m_axi_wt1_rvalid,
    output wire        m_axi_wt1_rready,
    // m_axi_in
    output wire [63:0] m_axi_in_araddr,
    output wire [7:0]  m_axi_in_arlen,
    output wire [2:0]  m_axi_in_arsize,
    output wire [1:0]  m_axi_in_arburst,
    output wire [3:0]  m_axi_in_arcache,
    output wire [2:0]  m_axi_in_arprot,
    output wire        m_axi_in_arvalid,
    input  wire        m_axi_in_arready,
    input  wire [AXI_DATA_BYTES*8-1:0] m_axi_in_rdata,
    input  wire [1:0]  m_axi_in_rresp,
    input  wire        m_axi_in_rlast,
    input  wire        m_axi_in_rvalid,
    output wire        m_axi_in_rready,
    // m_axi_rs
    output wire [63:0] m_axi_rs_araddr,
    output wire [7:0]  m_axi_rs_arlen,
    output wire [2:0]  m_axi_rs_arsize,
    output wire [1:0]  m_axi_rs_arburst,
    output wire [3:0]  m_axi_rs_arcache,
    output wire [2:0]  m_axi_rs_arprot,
    output wire        m_axi_rs_arvalid,
    input  wire        m_axi_rs_arready,
    input  wire [AXI_DATA_BYTES*8-1:0] m_axi_rs_rdata,
    input  wire [1:0]  m_axi_rs_rresp,
    input  wire        m_axi_rs_rlast,
    input  wire        m_axi_rs_rvalid,
    output wire        m_axi_rs_rready,
    // m_axi_out
    output wire [63:0] m_axi_out_awaddr,
    output wire [7:0]  m_axi_out_awlen,
    output wire [2:0]  m_axi_out_awsize,
    output wire [1:0]  m_axi_out_awburst,
    output wire [3:0]  m_axi_out_awcache,
    output wire [2:0]  m_axi_out_awprot,
    output wire        m_axi_out_awvalid,
    input  wire        m_axi_out_awready,
    output wire [AXI_DATA_BYTES*8-1:0] m_axi_out_wdata,
    output wire [AXI_DATA_BYTES-1:0]   m_axi_out_wstrb,
    output wire        m_axi_out_wlast,
    output wire        m_axi_out_wvalid,
    input  wire        m_axi_out_wready,
    input  wire [1:0]  m_axi_out_bresp,
    input  wire        m_axi_out_bvalid,
    output wire        m_axi_out_bready
);
    localparam integer CI = ARRAY_CI, CO = ARRAY_CO;
    localparam integer DB = AXI_DATA_BYTES, LB = $clog2(AXI_DATA_BYTES);
    localparam integer AAW = $clog2(ACC_DEPTH), IBW = $clog2(IBUF_WORDS);
    localparam integer WFA = $clog2(WFIFO_WORDS), OFA = $clog2(OUT_FIFO_WORDS);
    localparam integer RFA = $clog2(RES_FIFO_WORDS), PFA = $clog2(PORT_FIFO_WORDS);
    localparam integer OAW = $clog2(OUTSTANDING), PDA = $clog2(PERF_DEPTH);
    localparam integer RBURST = (BURST < MAX_BURST) ? BURST : MAX_BURST;
    wire clk = ap_clk;
    wire rst = !ap_rst_n;

    // ---- registers --------------------------------------------------------------------------
    reg [63:0] desc_addr, act_addr, wgt_addr, in_addr, out_addr;
    reg [31:0] desc_count, batch, act_stride, wgt_bytes, irq_enable, in_stride, out_stride;
    reg [1:0]  irq_status;
    wire [95:0] region_bytes;                   // each region's stride, by SPACES code
    assign region_bytes[`SPACE_ACT*32 +: 32] = act_stride;
    assign region_bytes[`SPACE_IN*32 +: 32] = in_stride;
    assign region_bytes[`SPACE_OUT*32 +: 32] = out_stride;
    reg        st_done, st_error, st_busy;
    reg [2:0]  err_code;
    reg [31:0] err_index, err_image;
    reg [63:0] cycles;
    reg [31:0] perf [0:PERF_DEPTH-1];
    reg        start_req, reset_req;

    // AXI-Lite write: address and data in either order, one write at a time.
    reg aw_got, w_got;
    reg [15:2] aw_addr;
    reg [31:0] w_data;
    reg [3:0]  w_strb;
    assign s_axi_control_awready = !aw_got && !s_axi_control_bvalid;
    assign s_axi_control_wready = !w_got && !s_axi_control_bvalid;
    assign s_axi_control_bresp = 2'b00;
    wire do_write = aw_got && w_got && !s_axi_control_bvalid;
    function [31:0] merge32(input [31:0] old, input [31:0] nw, input [3:0] strb);
        integer b;
        begin
            for (b = 0; b < 4; b = b + 1) merge32[b*8 +: 8] = strb[b] ? nw[b*8 +: 8] : old[b*8 +: 8];
        end
    endfunction
    // AXI-Lite read: two cycles (the PERF window is a RAM).
    reg        ar_got;
    reg [15:0] ar_addr;
    reg [31:0] perf_q;
    assign s_axi_control_arready = !ar_got && !s_axi_control_rvalid;
    assign s_axi_control_rresp = 2'b00;
    wire [31:0] features0 = CI | (CO << 8) | (DB << 16) | (WEIGHT_PORTS << 24) | (IBUF_BANKS << 28);
    reg [31:0] reg_q;
    always @(*) begin
        case (ar_addr)
            `REG_STATUS:       reg_q = {29'd0, st_error, st_busy, st_done};
            `REG_ERROR_CODE:   reg_q = {29'd0, err_code};
            `REG_VERSION:      reg_q = `CNN_VERSION;
            `REG_DESC_ADDR_LO: reg_q = desc_addr[31:0];
            `REG_DESC_ADDR_HI: reg_q = desc_addr[63:32];
            `REG_DESC_COUNT:   reg_q = desc_count;
            `REG_ACT_ADDR_LO:  reg_q = act_addr[31:0];
            `REG_ACT_ADDR_HI:  reg_q = act_addr[63:32];
            `REG_WGT_ADDR_LO:  reg_q = wgt_addr[31:0];
            `REG_WGT_ADDR_HI:  reg_q = wgt_addr[63:32];
            `REG_BATCH:        reg_q = batch;
            `REG_CYCLES_LO:    reg_q = cycles[31:0];
            `REG_CYCLES_HI:    reg_q = cycles[63:32];
            `REG_ACT_STRIDE:   reg_q = act_stride;
            `REG_WGT_BYTES:    reg_q = wgt_bytes;
            `REG_ERROR_INDEX:  reg_q = err_index;
            `REG_ERROR_IMAGE:  reg_q = err_image;
            `REG_IRQ_ENABLE:   reg_q = irq_enable;
            `REG_IRQ_STATUS:   reg_q = {30'd0, irq_status};
            `REG_FEATURES0:    reg_q = features0;
            `REG_FEATURES1:    reg_q = ACC_DEPTH;
            `REG_FEATURES2:    reg_q = IBUF_WORDS;
            `REG_FEATURES3:    reg_q = WFIFO_WORDS;
            `REG_FEATURES4:    reg_q = PERF_DEPTH | (MAX_BURST << 16);
            `REG_IN_ADDR_LO:   reg_q = in_addr[31:0];
            `REG_IN_ADDR_HI:   reg_q = in_addr[63:32];
            `REG_IN_STRIDE:    reg_q = in_stride;
            `REG_OUT_ADDR_LO:  reg_q = out_addr[31:0];
            `REG_OUT_ADDR_HI:  reg_q = out_addr[63:32];
            `REG_OUT_STRIDE:   reg_q = out_stride;
            default:           reg_q = 32'd0;
        endcase
    end
    wire in_perf = (ar_addr >= `REG_PERF_BASE) && (ar_addr < `REG_PERF_BASE + 4 * PERF_DEPTH);
    reg  ar_stage;

    // ---- run control ------------------------------------------------------------------------
    localparam Q_IDLE = 3'd0, Q_WAIT = 3'd1, Q_DEC = 3'd2, Q_RUN = 3'd3, Q_ABORT = 3'd4;
    reg [2:0]  q_st;
    reg        abort;
    reg        abort_error;                         // the abort ends with STATUS.ERROR
    reg [2:0]  abort_code;
    reg [31:0] executed /* verilator public_flat_rd */;     // testbench snapshots
    reg [31:0] d_index /* verilator public_flat_rd */;
    reg [31:0] total, cur_image, d_image;
    reg [63:0] img_base, in_img, out_img;    // image n's part of the ACT, IN and OUT regions
    reg [31:0] d_start;
    reg        fetch_start, unit_start;
    wire       unit_rst = rst || abort;

    // fetch
    wire [WEIGHT_PORTS-1:0] f_cmd_valid, f_cmd_ready, f_dvalid, f_dready;
    wire [64*WEIGHT_PORTS-1:0] f_cmd_addr;
    wire [32*WEIGHT_PORTS-1:0] f_cmd_bytes;
    wire [DB*8*WEIGHT_PORTS-1:0] f_ddata;
    wire wf_valid, wf_pop, q_valid;
    wire [CO*8-1:0] wf_data;
    wire [`DESC_BITS-1:0] q_desc;
    wire [2:0] q_code;
    wire [`DERIVED_BITS-1:0] q_derived;
    wire [31:0] q_index, q_image, fetch_index;
    reg  q_pop;
    cnn_fetch #(.CI(CI), .CO(CO), .DB(DB), .NWP(WEIGHT_PORTS), .BLK(BLOCK_BYTES), .PFA(PFA),
                .WFA(WFA), .ACC_DEPTH(ACC_DEPTH), .IBUF_WORDS(IBUF_WORDS), .BANKS(IBUF_BANKS)) u_fetch (
        .clk(clk), .rst(unit_rst), .start(fetch_start), .desc_addr(desc_addr),
        .desc_count(desc_count), .wgt_addr(wgt_addr), .batch(batch), .region_bytes(region_bytes),
        .wgt_bytes(wgt_bytes), .cmd_valid(f_cmd_valid), .cmd_ready(f_cmd_ready),
        .cmd_addr(f_cmd_addr), .cmd_bytes(f_cmd_bytes), .dvalid(f_dvalid), .dready(f_dready),
        .ddata(f_ddata), .wf_valid(wf_valid), .wf_data(wf_data), .wf_pop(wf_pop),
        .q_valid(q_valid), .q_desc(q_desc), .q_code(q_code), .q_derived(q_derived), .q_index(q_index),
        .q_image(q_image), .q_pop(q_pop), .fetch_index(fetch_index)
    );

    // the running descriptor and what the fetch check derived from it
    /* verilator lint_off UNUSEDSIGNAL */  // fields the fetch check turned into dx
    reg [`DESC_BITS-1:0] d;
    /* verilator lint_on UNUSEDSIGNAL */
    reg [`DERIVED_BITS-1:0] dx;
    wire [1:0] x_mode = `X_MODE(dx);
    wire [15:0] x_heff = `X_HEFF(dx), x_weff = `X_WEFF(dx), x_ceff = `X_CEFF(dx), x_kw = `X_KW_E(dx);
    wire [15:0] x_pw = `X_PW(dx), x_cib = `X_CIB(dx), x_coblocks = `X_COBLOCKS(dx);
    wire [15:0] x_last_rows = `X_LAST_ROWS(dx), x_need_rows = `X_NEED_ROWS(dx);
    wire [7:0]  x_sw = `X_SW_E(dx), x_pl = `X_PL_E(dx);
    wire [31:0] x_row_words = `X_ROW_WORDS(dx), x_passes = `X_PASSES(dx);
    wire [31:0] x_ring_words = `X_RING_WORDS(dx), x_sh_words = `X_SH_WORDS(dx);
    wire [31:0] x_sw_pw = `X_SW_PW(dx), x_pl_pw = `X_PL_PW(dx), x_bstep = `X_BSTEP(dx);
    wire [31:0] x_bstep_words = `X_BSTEP_WORDS(dx), x_span_full = `X_SPAN_FULL(dx);
    wire [31:0] x_span_last = `X_SPAN_LAST(dx), x_p_full = `X_P_FULL(dx), x_p_last = `X_P_LAST(dx);
    wire [31:0] x_fwd_step = `X_FWD_STEP(dx), x_in_row_pitch = `X_IN_ROW_PITCH(dx);
    wire [31:0] x_row_bytes = `X_ROW_BYTES(dx), x_sw_c = `X_SW_C(dx), x_pl_c = `X_PL_C(dx);
    wire [31:0] x_kw_c = `X_KW_C(dx), x_out_band_step = `X_OUT_BAND_STEP(dx);
    wire [31:0] x_res_band_step = `X_RES_BAND_STEP(dx);
    wire [7:0] flags = `D_FLAGS(d);
    wire f_add = flags[`FLAG_ADD], f_in_ibuf = flags[`FLAG_IN_IBUF];
    wire f_out_ddr = flags[`FLAG_OUT_DDR], f_out_ibuf = flags[`FLAG_OUT_IBUF];
    wire f_res_ibuf = flags[`FLAG_RES_IBUF];
    wire f_res_ddr = f_add && !f_res_ibuf;
    // each access's base: image n's part of the region its 2-bit code (spaces field) names
    /* verilator lint_off UNUSEDSIGNAL */  // bits 7:6: zero in every checked descriptor
    wire [7:0] spaces = `D_SPACES(d);
    /* verilator lint_on UNUSEDSIGNAL */
    function [63:0] region(input [1:0] code, input [63:0] act, input [63:0] inb, input [63:0] outb);
        region = (code == `SPACE_IN) ? inb : (code == `SPACE_OUT) ? outb : act;
    endfunction
    wire [63:0] in_base = region(spaces[`SPF_IN +: 2], img_base, in_img, out_img)
                          + `D_IN_OFFSET(d) + `D_IN_CH_OFF(d);
    wire [63:0] res_base = region(spaces[`SPF_RES +: 2], img_base, in_img, out_img)
                           + `D_RES_OFFSET(d) + `D_RES_CH_OFF(d);
    wire [63:0] out_base = region(spaces[`SPF_OUT +: 2], img_base, in_img, out_img)
                           + `D_OUT_OFFSET(d) + `D_OUT_CH_OFF(d);

    // loader, residual reader, writer, core
    wire ld_busy, ld_cmd_valid, ld_cmd_ready, ld_bvalid, ld_bready, ld_we;
    wire [63:0] ld_cmd_addr;
    wire [31:0] ld_cmd_bytes;
    wire [DB*8-1:0] ld_bdata;
    wire [LB-1:0] ld_blo;
    wire [LB:0] ld_bhi;
    wire [IBW-1:0] ld_addr;
    wire [CO*8-1:0] ld_data;
    wire [15:0] rows_loaded, release_row;
    cnn_loader #(.CO(CO), .DB(DB), .LB(LB), .IBW(IBW)) u_loader (
        .clk(clk), .rst(unit_rst), .start(unit_start && !f_in_ibuf), .busy(ld_busy),
        .base(in_base), .in_w(`D_IN_W(d)), .in_c(`D_IN_C(d)), .in_buf_c(`D_IN_BUF_C(d)),
        .ceff(x_ceff), .pw(x_pw), .row_words(x_row_words), .ring(`D_RING_ROWS(d)),
        .ring_words(x_ring_words), .need_rows(x_need_rows), .in_row_pitch(x_in_row_pitch),
        .row_bytes(x_row_bytes), .fold(flags[`FLAG_FOLD]), .out_w(`D_OUT_W(d)), .kw_c(x_kw_c),
        .sw_c(x_sw_c), .pl_c(x_pl_c), .release_row(release_row), .rows_loaded(rows_loaded),
        .cmd_valid(ld_cmd_valid), .cmd_ready(ld_cmd_ready), .cmd_addr(ld_cmd_addr),
        .cmd_bytes(ld_cmd_bytes), .bvalid(ld_bvalid), .bready(ld_bready), .bdata(ld_bdata),
        .blo(ld_blo), .bhi(ld_bhi), .ib_we(ld_we), .ib_addr(ld_addr), .ib_data(ld_data)
    );
    wire rs_busy, rs_cmd_valid, rs_cmd_ready, rs_bvalid, rs_bready, rs_pop;
    wire [63:0] rs_cmd_addr;
    wire [31:0] rs_cmd_bytes;
    wire [DB*8-1:0] rs_bdata;
    wire [LB-1:0] rs_blo;
    wire [LB:0] rs_bhi;
    wire [RFA+1:0] rs_count;
    wire [CO*8-1:0] rs_data;
    cnn_resid #(.CO(CO), .DB(DB), .LB(LB), .RFA(RFA)) u_resid (
        .clk(clk), .rst(unit_rst), .start(unit_start && f_res_ddr), .busy(rs_busy), .base(res_base),
        .buf_c(`D_RES_BUF_C(d)), .out_c(`D_OUT_C(d)), .coblocks(x_coblocks), .bands(`D_BANDS(d)),
        .p_full(x_p_full), .p_last(x_p_last), .band_step(x_res_band_step),
        .cmd_valid(rs_cmd_valid), .cmd_ready(rs_cmd_ready), .cmd_addr(rs_cmd_addr),
        .cmd_bytes(rs_cmd_bytes), .bvalid(rs_bvalid), .bready(rs_bready), .bdata(rs_bdata),
        .blo(rs_blo), .bhi(rs_bhi), .count(rs_count), .data(rs_data), .pop(rs_pop)
    );
    /* verilator lint_off UNUSEDSIGNAL */  // full: the core reserves FIFO space before it issues
    wire of_full, of_valid, of_pop, out_push;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [CO*8-1:0] of_data, out_data;
    wire [OFA+1:0] of_count;
    cnn_fifo #(.W(CO*8), .AW(OFA)) u_outfifo (
        .clk(clk), .rst(unit_rst), .push(out_push), .din(out_data), .full(of_full),
        .pop(of_pop), .dout(of_data), .valid(of_valid), .count(of_count)
    );
    wire wr_busy, ch_valid, ch_ready, wr_idle;
    wire [63:0] ch_addr;
    wire [7:0] ch_n;
    wire [CO*8-1:0] ch_data;
    cnn_writer #(.CO(CO)) u_writer (
        .clk(clk), .rst(unit_rst), .start(unit_start && f_out_ddr), .busy(wr_busy),
        .base(out_base), .buf_c(`D_OUT_BUF_C(d)), .out_c(`D_OUT_C(d)), .coblocks(x_coblocks),
        .bands(`D_BANDS(d)), .p_full(x_p_full), .p_last(x_p_last),
        .band_step(x_out_band_step), .f_valid(of_valid), .f_data(of_data), .f_pop(of_pop),
        .chunk_valid(ch_valid), .chunk_ready(ch_ready), .chunk_addr(ch_addr),
        .chunk_n(ch_n), .chunk_data(ch_data), .engine_idle(wr_idle)
    );
    wire core_busy, err_const;
    wire [15:0] out_space = (1 << OFA) + 1 - of_count;
    cnn_core #(.CI(CI), .CO(CO), .AAW(AAW), .IBW(IBW), .IBUF_WORDS(IBUF_WORDS),
               .BANKS(IBUF_BANKS), .S(PACK_SHIFT), .G(PACK_GROUP), .ADD_DSP(ADD_DSP)) u_core (
        .clk(clk), .rst(unit_rst), .start(unit_start), .busy(core_busy), .err_const(err_const),
        .c_mode(x_mode), .c_opcode(`D_OPCODE(d)), .c_relu(flags[`FLAG_RELU]), .c_add(f_add),
        .c_add_relu(flags[`FLAG_ADD_RELU]), .c_in_ibuf(f_in_ibuf), .c_out_ddr(f_out_ddr),
        .c_out_ibuf(f_out_ibuf), .c_in_bank(`D_IN_BANK(d)), .c_out_bank(`D_OUT_BANK(d)),
        .c_res_ibuf(f_res_ibuf), .c_res_bank(`D_RES_BANK(d)),
        .c_kh(`D_KERNEL_H(d)), .c_kw(x_kw), .c_sh(`D_STRIDE_H(d)), .c_sw(x_sw),
        .c_pt(`D_PAD_TOP(d)), .c_pl(x_pl), .c_pad_value(`D_PAD_VALUE(d)), .c_heff(x_heff),
        .c_weff(x_weff), .c_pw(x_pw), .c_row_words(x_row_words), .c_ring(`D_RING_ROWS(d)),
        .c_ring_words(x_ring_words), .c_sh_words(x_sh_words), .c_sw_pw(x_sw_pw),
        .c_pl_pw(x_pl_pw), .c_cib(x_cib), .c_coblocks(x_coblocks), .c_out_w(`D_OUT_W(d)),
        .c_band_rows(`D_BAND_ROWS(d)), .c_bands(`D_BANDS(d)), .c_last_rows(x_last_rows),
        .c_bstep(x_bstep), .c_bstep_words(x_bstep_words), .c_span_full(x_span_full),
        .c_span_last(x_span_last), .c_pw_out(x_coblocks), .c_fwd_step(x_fwd_step),
        .c_passes(x_passes), .c_add_m0(`D_ADD_M0(d)), .c_add_m1(`D_ADD_M1(d)),
        .c_add_shift(`D_ADD_SHIFT(d)), .wf_valid(wf_valid), .wf_data(wf_data),
        .wf_pop(wf_pop), .ld_we(ld_we), .ld_addr(ld_addr), .ld_data(ld_data),
        .rows_loaded(f_in_ibuf ? x_heff : rows_loaded), .release_row(release_row),
        .res_count({{(15-RFA-1){1'b0}}, rs_count}), .res_data(rs_data), .res_pop(rs_pop),
        .out_space(out_space), .out_push(out_push), .out_data(out_data)
    );

    // ---- AXI engines -------------------------------------------------------------------------
    wire [4:0] eng_err, eng_idle;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [LB-1:0] wt0_lo, wt1_lo;
    wire [LB:0] wt0_hi, wt1_hi;
    wire wt0_last, wt1_last, ld_last, rs_last;
    /* verilator lint_on UNUSEDSIGNAL */
    cnn_axi_rd #(.DB(DB), .LB(LB), .BURST(RBURST), .OUTST(OUTSTANDING), .OAW(OAW)) u_rd_wt0 (
        .clk(clk), .rst(rst), .abort(abort), .cmd_valid(f_cmd_valid[0]), .cmd_ready(f_cmd_ready[0]),
        .cmd_addr(f_cmd_addr[63:0]), .cmd_bytes(f_cmd_bytes[31:0]), .dout_valid(f_dvalid[0]), .dout_ready(f_dready[0]),
        .dout_data(f_ddata[DB*8-1:0]), .dout_lo(wt0_lo), .dout_hi(wt0_hi), .dout_last(wt0_last),
        .err(eng_err[0]), .idle(eng_idle[0]),
        .araddr(m_axi_wt0_araddr), .arlen(m_axi_wt0_arlen), .arsize(m_axi_wt0_arsize),
        .arburst(m_axi_wt0_arburst), .arcache(m_axi_wt0_arcache), .arprot(m_axi_wt0_arprot),
        .arvalid(m_axi_wt0_arvalid), .arready(m_axi_wt0_arready), .rdata(m_axi_wt0_rdata),
        .rresp(m_axi_wt0_rresp), .rlast(m_axi_wt0_rlast), .rvalid(m_axi_wt0_rvalid),
        .rready(m_axi_wt0_rready)
    );
    generate
        if (WEIGHT_PORTS > 1) begin : g_wt1
            cnn_axi_rd #(.DB(DB), .LB(LB), .BURST(RBURST), .OUTST(OUTSTANDING), .OAW(OAW)) u_rd_wt1 (
                .clk(clk), .rst(rst), .abort(abort), .cmd_valid(f_cmd_valid[WEIGHT_PORTS-1]), .cmd_ready(f_cmd_ready[WEIGHT_PORTS-1]),
                .cmd_addr(f_cmd_addr[64*WEIGHT_PORTS-1 -: 64]), .cmd_bytes(f_cmd_bytes[32*WEIGHT_PORTS-1 -: 32]), .dout_valid(f_dvalid[WEIGHT_PORTS-1]), .dout_ready(f_dready[WEIGHT_PORTS-1]),
                .dout_data(f_ddata[DB*8*WEIGHT_PORTS-1 -: DB*8]), .dout_lo(wt1_lo), .dout_hi(wt1_hi), .dout_last(wt1_last),
                .err(eng_err[1]), .idle(eng_idle[1]),
                .araddr(m_axi_wt1_araddr), .arlen(m_axi_wt1_arlen), .arsize(m_axi_wt1_arsize),
                .arburst(m_axi_wt1_arburst), .arcache(m_axi_wt1_arcache), .arprot(m_axi_wt1_arprot),
                .arvalid(m_axi_wt1_arvalid), .arready(m_axi_wt1_arready), .rdata(m_axi_wt1_rdata),
                .rresp(m_axi_wt1_rresp), .rlast(m_axi_wt1_rlast), .rvalid(m_axi_wt1_rvalid),
                .rready(m_axi_wt1_rready)
            );
        end else begin : g_wt1_off
            assign eng_err[1] = 1'b0;
            assign eng_idle[1] = 1'b1;
            assign m_axi_wt1_araddr = 64'd0;
            assign m_axi_wt1_arlen = 8'd0;
            assign m_axi_wt1_arsize = LB[2:0];
            assign m_axi_wt1_arburst = 2'b01;
            assign m_axi_wt1_arcache = 4'b0011;
            assign m_axi_wt1_arprot = 3'b000;
            assign m_axi_wt1_arvalid = 1'b0;
            assign m_axi_wt1_rready = 1'b1;
            assign wt1_lo = 0; assign wt1_hi = 0; assign wt1_last = 1'b0;
        end
    endgenerate
    cnn_axi_rd #(.DB(DB), .LB(LB), .BURST(RBURST), .OUTST(OUTSTANDING), .OAW(OAW)) u_rd_in (
        .clk(clk), .rst(rst), .abort(abort), .cmd_valid(ld_cmd_valid), .cmd_ready(ld_cmd_ready),
        .cmd_addr(ld_cmd_addr), .cmd_bytes(ld_cmd_bytes), .dout_valid(ld_bvalid), .dout_ready(ld_bready),
        .dout_data(ld_bdata), .dout_lo(ld_blo), .dout_hi(ld_bhi), .dout_last(ld_last),
        .err(eng_err[2]), .idle(eng_idle[2]),
        .araddr(m_axi_in_araddr), .arlen(m_axi_in_arlen), .arsize(m_axi_in_arsize),
        .arburst(m_axi_in_arburst), .arcache(m_axi_in_arcache), .arprot(m_axi_in_arprot),
        .arvalid(m_axi_in_arvalid), .arready(m_axi_in_arready), .rdata(m_axi_in_rdata),
        .rresp(m_axi_in_rresp), .rlast(m_axi_in_rlast), .rvalid(m_axi_in_rvalid),
        .rready(m_axi_in_rready)
    );
    cnn_axi_rd #(.DB(DB), .LB(LB), .BURST(RBURST), .OUTST(OUTSTANDING), .OAW(OAW)) u_rd_rs (
        .clk(clk), .rst(rst), .abort(abort), .cmd_valid(rs_cmd_valid), .cmd_ready(rs_cmd_ready),
        .cmd_addr(rs_cmd_addr), .cmd_bytes(rs_cmd_bytes), .dout_valid(rs_bvalid), .dout_ready(rs_bready),
        .dout_data(rs_bdata), .dout_lo(rs_blo), .dout_hi(rs_bhi), .dout_last(rs_last),
        .err(eng_err[3]), .idle(eng_idle[3]),
        .araddr(m_axi_rs_araddr), .arlen(m_axi_rs_arlen), .arsize(m_axi_rs_arsize),
        .arburst(m_axi_rs_arburst), .arcache(m_axi_rs_arcache), .arprot(m_axi_rs_arprot),
        .arvalid(m_axi_rs_arvalid), .arready(m_axi_rs_arready), .rdata(m_axi_rs_rdata),
        .rresp(m_axi_rs_rresp), .rlast(m_axi_rs_rlast), .rvalid(m_axi_rs_rvalid),
        .rready(m_axi_rs_rready)
    );
    cnn_axi_wr #(.DB(DB), .LB(LB), .CO(CO), .OUTST(OUTSTANDING), .OAW(OAW)) u_wr_out (
        .clk(clk), .rst(rst), .abort(abort), .chunk_valid(ch_valid), .chunk_ready(ch_ready),
        .chunk_addr(ch_addr), .chunk_n(ch_n), .chunk_data(ch_data), .err(eng_err[4]),
        .idle(wr_idle), .awaddr(m_axi_out_awaddr), .awlen(m_axi_out_awlen),
        .awsize(m_axi_out_awsize), .awburst(m_axi_out_awburst), .awcache(m_axi_out_awcache),
        .awprot(m_axi_out_awprot), .awvalid(m_axi_out_awvalid), .awready(m_axi_out_awready),
        .wdata(m_axi_out_wdata), .wstrb(m_axi_out_wstrb), .wlast(m_axi_out_wlast),
        .wvalid(m_axi_out_wvalid), .wready(m_axi_out_wready), .bresp(m_axi_out_bresp),
        .bvalid(m_axi_out_bvalid), .bready(m_axi_out_bready)
    );
    assign eng_idle[4] = wr_idle;
    wire all_idle = &eng_idle;
    wire bus_err = |eng_err;
    wire units_busy = core_busy || (ld_busy && !f_in_ibuf) || (rs_busy && f_res_ddr) || (wr_busy && f_out_ddr)
                      || unit_start;

    // ---- sequencer, registers ------------------------------------------------------------------
    wire misaligned = (desc_addr[5:0] != 0) || (act_addr[5:0] != 0) || (wgt_addr[5:0] != 0)
                      || (act_stride[5:0] != 0) || (in_addr[5:0] != 0) || (in_stride[5:0] != 0)
                      || (out_addr[5:0] != 0) || (out_stride[5:0] != 0);
    assign interrupt = |(irq_status & irq_enable[1:0]);
    always @(posedge clk) begin
        if (rst) begin
            desc_addr <= 0; act_addr <= 0; wgt_addr <= 0; desc_count <= 0; batch <= 1;
            act_stride <= 0; wgt_bytes <= 0; irq_enable <= 0; irq_status <= 0;
            in_addr <= 0; out_addr <= 0; in_stride <= 0; out_stride <= 0;
            st_done <= 1'b0; st_error <= 1'b0; st_busy <= 1'b0; err_code <= 0;
            err_index <= 0; err_image <= 0; cycles <= 0;
            aw_got <= 1'b0; w_got <= 1'b0; s_axi_control_bvalid <= 1'b0;
            ar_got <= 1'b0; ar_stage <= 1'b0; s_axi_control_rvalid <= 1'b0;
            start_req <= 1'b0; reset_req <= 1'b0;
            q_st <= Q_IDLE; abort <= 1'b0; abort_error <= 1'b0; abort_code <= 0;
            fetch_start <= 1'b0; unit_start <= 1'b0; q_pop <= 1'b0;
        end else begin
            fetch_start <= 1'b0; unit_start <= 1'b0; q_pop <= 1'b0;
            // AXI-Lite write
            if (s_axi_control_awvalid && s_axi_control_awready) begin aw_got <= 1'b1; aw_addr <= s_axi_control_awaddr[15:2]; end
            if (s_axi_control_wvalid && s_axi_control_wready) begin w_got <= 1'b1; w_data <= s_axi_control_wdata; w_strb <= s_axi_control_wstrb; end
            if (s_axi_control_bvalid && s_axi_control_bready) s_axi_control_bvalid <= 1'b0;
            if (do_write) begin
                aw_got <= 1'b0; w_got <= 1'b0; s_axi_control_bvalid <= 1'b1;
                case ({aw_addr, 2'b00})
                    `REG_CTRL: begin
                        if (w_strb[0] && w_data[1]) reset_req <= 1'b1;
                        // START is ignored while a run is under way; during the drain after
                        // a SOFT_RESET or a fault it is held and taken once the bus is quiet
                        if (w_strb[0] && w_data[0] && (q_st == Q_IDLE || q_st == Q_ABORT)) start_req <= 1'b1;
                    end
                    `REG_DESC_ADDR_LO: desc_addr[31:0] <= merge32(desc_addr[31:0], w_data, w_strb);
                    `REG_DESC_ADDR_HI: desc_addr[63:32] <= merge32(desc_addr[63:32], w_data, w_strb);
                    `REG_DESC_COUNT:   desc_count <= merge32(desc_count, w_data, w_strb);
                    `REG_ACT_ADDR_LO:  act_addr[31:0] <= merge32(act_addr[31:0], w_data, w_strb);
                    `REG_ACT_ADDR_HI:  act_addr[63:32] <= merge32(act_addr[63:32], w_data, w_strb);
                    `REG_WGT_ADDR_LO:  wgt_addr[31:0] <= merge32(wgt_addr[31:0], w_data, w_strb);
                    `REG_WGT_ADDR_HI:  wgt_addr[63:32] <= merge32(wgt_addr[63:32], w_data, w_strb);
                    `REG_BATCH:        batch <= merge32(batch, w_data, w_strb);
                    `REG_ACT_STRIDE:   act_stride <= merge32(act_stride, w_data, w_strb);
                    `REG_IN_ADDR_LO:   in_addr[31:0] <= merge32(in_addr[31:0], w_data, w_strb);
                    `REG_IN_ADDR_HI:   in_addr[63:32] <= merge32(in_addr[63:32], w_data, w_strb);
                    `REG_IN_STRIDE:    in_stride <= merge32(in_stride, w_data, w_strb);
                    `REG_OUT_ADDR_LO:  out_addr[31:0] <= merge32(out_addr[31:0], w_data, w_strb);
                    `REG_OUT_ADDR_HI:  out_addr[63:32] <= merge32(out_addr[63:32], w_data, w_strb);
                    `REG_OUT_STRIDE:   out_stride <= merge32(out_stride, w_data, w_strb);
                    `REG_WGT_BYTES:    wgt_bytes <= merge32(wgt_bytes, w_data, w_strb);
                    `REG_IRQ_ENABLE:   irq_enable <= merge32(irq_enable, w_data, w_strb);
                    `REG_IRQ_STATUS:   if (w_strb[0]) irq_status <= irq_status & ~w_data[1:0];
                    default: ;
                endcase
            end
            // AXI-Lite read
            if (s_axi_control_arvalid && s_axi_control_arready) begin ar_got <= 1'b1; ar_addr <= s_axi_control_araddr; ar_stage <= 1'b0; end
            if (ar_got && !ar_stage) ar_stage <= 1'b1;
            perf_q <= perf[ar_addr[PDA+1:2]];
            if (ar_got && ar_stage) begin
                s_axi_control_rdata <= in_perf ? perf_q : reg_q;
                s_axi_control_rvalid <= 1'b1;
                ar_got <= 1'b0;
            end
            if (s_axi_control_rvalid && s_axi_control_rready) s_axi_control_rvalid <= 1'b0;

            if (st_busy) cycles <= cycles + 1;
            // run control
            case (q_st)
                Q_IDLE: begin
                    if (reset_req) begin
                        reset_req <= 1'b0; start_req <= 1'b0;
                        st_done <= 1'b0; st_error <= 1'b0; err_code <= 0;
                    end else if (start_req) begin
                        start_req <= 1'b0;
                        st_done <= 1'b0; st_error <= 1'b0; err_code <= 0; err_index <= 0;
                        err_image <= 0; cycles <= 0; st_busy <= 1'b1;
                        executed <= 0; total <= desc_count * batch; cur_image <= 0;
                        img_base <= act_addr; in_img <= in_addr; out_img <= out_addr;
                        if (misaligned) begin
                            abort <= 1'b1; abort_error <= 1'b1; abort_code <= `ERR_BAD_ADDRESS;
                            q_st <= Q_ABORT;
                        end else if (desc_count == 0 || batch == 0) begin
                            st_busy <= 1'b0; st_done <= 1'b1; irq_status[0] <= 1'b1;
                        end else begin
                            fetch_start <= 1'b1;
                            q_st <= Q_WAIT;
                        end
                    end
                end
                Q_WAIT: if (q_valid && !q_pop) begin
                    q_pop <= 1'b1;
                    d <= q_desc; dx <= q_derived; d_index <= q_index; d_image <= q_image;
                    if (q_image != cur_image) begin
                        cur_image <= q_image;
                        img_base <= img_base + {32'd0, act_stride};
                        in_img <= in_img + {32'd0, in_stride};
                        out_img <= out_img + {32'd0, out_stride};
                    end
                    if (q_code != `ERR_NONE) begin
                        abort <= 1'b1; abort_error <= 1'b1; abort_code <= q_code;
                        err_index <= q_index; err_image <= q_image;
                        q_st <= Q_ABORT;
                    end else q_st <= Q_DEC;
                end
                Q_DEC: begin                        // d and dx are in: start the units
                    unit_start <= 1'b1; d_start <= cycles[31:0];
                    q_st <= Q_RUN;
                end
                Q_RUN: begin
                    if (!units_busy) begin
                        perf[d_index[PDA-1:0]] <= cycles[31:0] - d_start;
                        executed <= executed + 1;
                        if (executed + 1 == total) begin
                            st_busy <= 1'b0; st_done <= 1'b1; irq_status[0] <= 1'b1;
                            q_st <= Q_IDLE;
                        end else q_st <= Q_WAIT;
                    end
                end
                Q_ABORT: if (all_idle) begin
                    abort <= 1'b0; st_busy <= 1'b0;
                    if (abort_error) begin
                        st_error <= 1'b1; err_code <= abort_code; irq_status[1] <= 1'b1;
                    end
                    abort_error <= 1'b0;
                    q_st <= Q_IDLE;
                end
                default: q_st <= Q_IDLE;
            endcase
            // faults while running, and SOFT_RESET
            if (q_st != Q_IDLE && q_st != Q_ABORT) begin
                if (reset_req) begin
                    reset_req <= 1'b0; abort <= 1'b1; abort_error <= 1'b0; q_st <= Q_ABORT;
                    st_done <= 1'b0; st_error <= 1'b0; err_code <= 0;
                end else if (bus_err || (err_const && q_st == Q_RUN)) begin
                    abort <= 1'b1; abort_error <= 1'b1;
                    abort_code <= bus_err ? `ERR_BUS_ERROR : `ERR_BAD_CONSTANT;
                    err_index <= (bus_err && (eng_err[0] || eng_err[1])) ? fetch_index : d_index;
                    err_image <= d_image;
                    q_st <= Q_ABORT;
                end
            end
            if (q_st == Q_ABORT && reset_req) begin
                reset_req <= 1'b0; abort_error <= 1'b0; st_error <= 1'b0; st_done <= 1'b0; err_code <= 0;
            end
        end
    end
endmodule
`default_nettype wire
