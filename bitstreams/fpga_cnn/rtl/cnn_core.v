// The compute core: one descriptor at a time (bitstreams/README.md, "Execution").
//
// Streamer: for each band of output rows, each block of CO output channels, each pass (a
// kernel tap and, for CONV, a block of CI input channels) it issues the band's pixels, one per
// cycle, reading the input buffer at the tap's address (padding taps give zeros, or
// pad_value for MAXPOOL). CONV pixels go through the MAC array; the other opcodes take the
// word's CO lanes as they are (per channel). The accumulator holds the band: the first pass
// starts from the bias, later ones add (MAXPOOL: take the maximum), the last one goes on to
// the requantisers (sat8(round_shift(acc * M + addend, S)), ReLU), then the fused ADD
// (sat8(round_shift(y * m0 + r * m1, add_shift)), ReLU) and out: into the output FIFO and/or
// whole into the other input-buffer bank.
//
// Weight loader: reads the weight stream in order into two constant sets (per output-channel
// block) and two weight sets (per pass), each refilled while the other is in use. It refuses
// a weight of -128 and constants outside their opcode's canonical form (err_const).
//
// Every wait (input rows loaded, a weight or constant set, output FIFO space, residual data)
// is taken before a pixel is issued; once issued a pixel never stalls.
`default_nettype none
`include "cnn_spec.vh"

module cnn_core #(
    parameter integer CI = 32,
    parameter integer CO = 64,
    parameter integer AAW = 11,             // log2(acc depth)
    parameter integer IBW = 14,             // input buffer address bits
    parameter integer IBUF_WORDS = 1 << IBW, // words per bank
    parameter integer BANKS = 2,
    parameter integer S = 18,
    parameter integer G = 8,
    parameter integer ADD_DSP = 1            // 0: the fused ADD's int8 x int32 products in LUTs
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              start,
    output wire              busy,
    output reg               err_const,
    // configuration (from cnn_check; stable while busy)
    input  wire [1:0]        c_mode,        // 0 MAC, 1 max, 2 sum
    input  wire [7:0]        c_opcode,
    input  wire              c_relu,
    input  wire              c_add,
    input  wire              c_add_relu,
    input  wire              c_in_ibuf,
    input  wire              c_out_ddr,
    input  wire              c_out_ibuf,
    input  wire [7:0]        c_in_bank,
    input  wire [7:0]        c_out_bank,
    input  wire              c_res_ibuf,
    input  wire [7:0]        c_res_bank,
    input  wire [15:0]       c_kh,
    input  wire [15:0]       c_kw,
    input  wire [7:0]        c_sh,
    input  wire [7:0]        c_sw,
    input  wire [7:0]        c_pt,
    input  wire [7:0]        c_pl,
    input  wire [7:0]        c_pad_value,
    input  wire [15:0]       c_heff,
    input  wire [15:0]       c_weff,
    input  wire [15:0]       c_pw,
    input  wire [31:0]       c_row_words,
    input  wire [15:0]       c_ring,
    input  wire [31:0]       c_ring_words,
    input  wire [31:0]       c_sh_words,
    input  wire [31:0]       c_sw_pw,
    input  wire [31:0]       c_pl_pw,
    input  wire [15:0]       c_cib,         // input-channel blocks per tap (1 unless MAC)
    input  wire [15:0]       c_coblocks,
    input  wire [15:0]       c_out_w,
    input  wire [15:0]       c_band_rows,
    input  wire [15:0]       c_bands,
    input  wire [15:0]       c_last_rows,
    input  wire [31:0]       c_bstep,
    input  wire [31:0]       c_bstep_words,
    input  wire [31:0]       c_span_full,
    input  wire [31:0]       c_span_last,
    input  wire [15:0]       c_pw_out,
    input  wire [31:0]       c_fwd_step,
    input  wire [31:0]       c_passes,
    input  wire [31:0]       c_add_m0,
    input  wire [31:0]       c_add_m1,
    /* verilator lint_off UNUSEDSIGNAL */  // 1..62: 6 bits
    input  wire [7:0]        c_add_shift,
    /* verilator lint_on UNUSEDSIGNAL */
    // weight stream
    input  wire              wf_valid,
    input  wire [CO*8-1:0]   wf_data,
    output wire              wf_pop,
    // input loader
    input  wire              ld_we,
    input  wire [IBW-1:0]    ld_addr,
    input  wire [CO*8-1:0]   ld_data,
    input  wire [15:0]       rows_loaded,
    output reg  [15:0]       release_row,
    // residual FIFO
    input  wire [15:0]       res_count,
    input  wire [CO*8-1:0]   res_data,
    output wire              res_pop,
    // output FIFO
    input  wire [15:0]       out_space,
    output wire              out_push,
    output wire [CO*8-1:0]   out_data
);
    localparam integer NP = CO / 2;
    localparam integer PWB = S + 8;
    localparam integer SUBN = CO / CI;             // CI-lane blocks per input word
    localparam integer SUBS = $clog2(SUBN);         // input channel block -> word: cb >> SUBS
    localparam integer SUBL = (SUBN > 1) ? SUBS : 1; // sub-block select width (>= 1 bit)
    // A pixel's next-pass accumulator read comes >= 3 cycles after its write: every pass
    // takes >= 1 cycle plus ST_NEXT and ST_PASS.
    localparam integer MIN_PASS = 1;
    localparam integer NST = 16;                   // pipeline stages
    localparam integer BSEL = (BANKS > 1) ? $clog2(BANKS) : 1;

    // ---- Weight loader: constant sets and weight sets ----------------------------------
    // Constant sets, loaded a word at a time by shifting in (lane j at [32j +: 32], [8j +: 8]).
    reg [CO*32-1:0] cbias [0:1];
    reg [CO*32-1:0] cmul  [0:1];
    reg [CO*32-1:0] cadd  [0:1];
    reg [CO*8-1:0]  cshf  [0:1];
    // Weights: the next pass's shift in behind the array's; they swap as the pass's first
    // pixel reaches the multipliers (no multiplexer in front of the array).
    reg [CI*NP*PWB-1:0] wshadow, wactive;
    reg        wshadow_full, swap_pending;
    reg [1:0]  cfull;
    reg [15:0] cinfl [0:1];

    localparam WL_IDLE = 2'd0, WL_CONST = 2'd1, WL_WSET = 2'd2;
    reg [1:0]  wl_st;
    reg [15:0] wl_band, wl_k;
    reg [31:0] wl_pass;
    reg [15:0] wl_word;
    reg [31:0] wl_m0;                              // lane 0's multiplier, this block
    wire       wl_cs = wl_k[0];
    wire       wl_can_c = !cfull[wl_cs] && cinfl[wl_cs] == 0;
    wire       wl_can_w = !wshadow_full;
    assign wf_pop = wf_valid && ((wl_st == WL_CONST && wl_can_c) || (wl_st == WL_WSET && wl_can_w));
    wire       wl_last_word_c = (wl_word == `CONST_WORDS - 1);
    wire       wl_last_word_w = (wl_word == CI - 1);
    wire       is_maxadd = (c_opcode == `OP_MAXPOOL) || (c_opcode == `OP_ADD);
    wire       one_mult = (c_opcode == `OP_AVGPOOL) || (c_opcode == `OP_GLOBAL_AVGPOOL);
    wire       one_shift = one_mult || (c_opcode == `OP_SCALE_SHIFT);

    // Canonical-form checks of a constant word (all lanes, padding lanes included).
    reg c_bad;
    integer t;
    always @(*) begin
        c_bad = 1'b0;
        if (wl_word < 4) begin                          // bias
            if (c_mode != 2'd0 && wf_data != 0) c_bad = 1'b1;
        end else if (wl_word < 8) begin                 // multiplier
            for (t = 0; t < CO/4; t = t + 1) begin
                if (is_maxadd && wf_data[t*32 +: 32] != `IDENTITY_M) c_bad = 1'b1;
                if (one_mult && wf_data[t*32 +: 32] != ((wl_word == 4) ? wf_data[31:0] : wl_m0)) c_bad = 1'b1;
            end
        end else if (wl_word < 12) begin                // addend
            if (c_opcode != `OP_SCALE_SHIFT && wf_data != 0) c_bad = 1'b1;
        end else begin                                  // shift
            for (t = 0; t < CO; t = t + 1) begin
                if (wf_data[t*8 +: 8] < `SHIFT_MIN || wf_data[t*8 +: 8] > `SHIFT_MAX) c_bad = 1'b1;
                if (is_maxadd && wf_data[t*8 +: 8] != `IDENTITY_S) c_bad = 1'b1;
                if (one_shift && wf_data[t*8 +: 8] != wf_data[7:0]) c_bad = 1'b1;
            end
        end
    end
    reg w_bad;
    always @(*) begin
        w_bad = 1'b0;
        for (t = 0; t < CO; t = t + 1) if (wf_data[t*8 +: 8] == 8'h80) w_bad = 1'b1;
    end
    // A weight word (lane wl_word's CO weights) as NP packed operands.
    reg [NP*PWB-1:0] packed_word;
    integer jj;
    always @(*) begin
        for (jj = 0; jj < NP; jj = jj + 1)
            packed_word[jj*PWB +: PWB] = ($signed({{(PWB-8){wf_data[(2*jj+1)*8 + 7]}}, wf_data[(2*jj+1)*8 +: 8]}) <<< S)
                                         + $signed({{(PWB-8){wf_data[(2*jj)*8 + 7]}}, wf_data[(2*jj)*8 +: 8]});
    end

    // ---- Streamer ------------------------------------------------------------------------
    localparam ST_IDLE = 4'd0, ST_INIT = 4'd1, ST_BAND = 4'd2, ST_KSTART = 4'd3,
               ST_PASS = 4'd4, ST_PIX = 4'd5, ST_GAP = 4'd6, ST_NEXT = 4'd7,
               ST_BADV = 4'd8, ST_BFIX1 = 4'd9, ST_BFIX2 = 4'd10, ST_DRAIN = 4'd11;
    reg [3:0]  st;
    reg [7:0]  init_cnt;
    reg [15:0] band, k, ky, kx, cb, oy, ox, nb;
    reg signed [31:0] r_b, pr_iy, cur_iy;
    reg [31:0] slot_b, pr_slot, cur_slot;
    reg [31:0] rbase_b, pr_rbase, cur_rbase;
    reg signed [31:0] pc_ix0, pc_col0, cur_ix, cur_col;
    reg [31:0] fwd_b, fwd_a;
    reg [AAW-1:0] acc_a;
    reg [15:0] pass_cycles;
    reg [15:0] out_infl, res_resv;
    reg [4:0]  pipe_n;                              // pixels in the pipeline (<= NST)
    wire       mac = (c_mode == 2'd0);
    wire       first_pass = (ky == 0) && (kx == 0) && (cb == 0);
    wire       last_pass = (ky == c_kh - 1) && (kx == c_kw - 1) && (cb == c_cib - 1);
    wire       last_band = (band == c_bands - 1);
    wire signed [31:0] span = last_band ? c_span_last : c_span_full;
    wire signed [31:0] hi_row = r_b + span;
    wire signed [31:0] heff_m1 = {16'd0, c_heff} - 1;
    wire signed [31:0] need_row = (hi_row < heff_m1) ? hi_row : heff_m1;
    wire       rows_ok = c_in_ibuf || (hi_row < 0) || ($signed({16'd0, rows_loaded}) > need_row);
    wire       sets_ok = (!mac || (wshadow_full && !swap_pending)) && cfull[k[0]];
    wire       credit_ok = !last_pass
                           || ((!c_out_ddr || out_space > out_infl)
                               && (!c_add || c_res_ibuf || res_count > res_resv));
    wire       issue = (st == ST_PIX) && credit_ok;
    wire       row_in = (cur_iy >= 0) && (cur_iy < $signed({16'd0, c_heff}));
    wire       col_in = (cur_ix >= 0) && (cur_ix < $signed({16'd0, c_weff}));
    wire [31:0] wsel = mac ? {16'd0, cb >> SUBS} : {16'd0, k};
    /* verilator lint_off UNUSEDSIGNAL */  // in range when the tap is (a padding tap's address is not used)
    wire [31:0] rd_addr = cur_rbase + cur_col + wsel;
    /* verilator lint_on UNUSEDSIGNAL */
    wire       last_pix = (ox == c_out_w - 1) && (oy == nb - 1);
    wire       first_pix = (ox == 0) && (oy == 0);
    wire       pass_end = (st == ST_PIX && issue && last_pix) || st == ST_GAP;
    wire       pass_close = pass_end && (pass_cycles + 1 >= MIN_PASS);
    assign busy = (st != ST_IDLE);
    /* verilator lint_off WIDTH */
    wire [SUBL-1:0] sub_sel = (SUBN > 1) ? cb[SUBL-1:0] : 0;
    /* verilator lint_on WIDTH */

    // Pipeline tags: stage n holds the pixel issued n cycles ago.
    reg [NST:1]   pv, plast;
    reg [6:1]     pfirst;
    reg [3:1]     pmask;
    reg [2:1]     pfpix;                         // the first pixel of a pass
    wire          swap = pv[2] && pfpix[2] && mac;
    reg [10:1]    pcp;
    reg [SUBL-1:0] psub [1:3];
    reg [AAW-1:0] paddr [1:8];
    reg [IBW-1:0] pfwd [1:NST-1];

    // ---- Input buffer ----------------------------------------------------------------------
    wire [IBW-1:0] fw_addr = pfwd[NST-1];
    wire fw_we = pv[NST-1] && plast[NST-1] && c_out_ibuf;
    reg  [IBW-1:0] ib_raddr;
    wire [CO*8-1:0] ib_q [0:BANKS-1];
    reg  [CO*8-1:0] ib_word;                       // stage 3
    wire [CO*8-1:0] result;
    genvar gb;
    generate
        for (gb = 0; gb < BANKS; gb = gb + 1) begin : g_bank
            wire lw = ld_we && (c_in_bank == gb);
            wire fw = fw_we && (c_out_bank == gb);
            // the residual's bank is read for the pixel about to enter stage 11
            cnn_ibank #(.W(CO*8), .AW(IBW), .WORDS(IBUF_WORDS)) u_mem (
                .clk(clk), .we(lw || fw), .waddr(lw ? ld_addr : fw_addr),
                .wdata(lw ? ld_data : result),
                .raddr((c_res_ibuf && c_res_bank == gb) ? pfwd[10] : ib_raddr), .q(ib_q[gb])
            );
        end
    endgenerate

    // ---- Stage 3: lanes --------------------------------------------------------------------
    reg [CI*8-1:0] x3;                              // MAC lanes (stage 4 input)
    reg [CO*8-1:0] d3;                              // per-channel lanes
    integer l;
    always @(*) begin
        for (l = 0; l < CI; l = l + 1)
            x3[l*8 +: 8] = pmask[3] ? ib_word[({{(32-SUBL){1'b0}}, psub[3]} * CI + l) * 8 +: 8] : 8'd0;
        for (l = 0; l < CO; l = l + 1)
            d3[l*8 +: 8] = pmask[3] ? ib_word[l*8 +: 8] : ((c_mode == 2'd1) ? c_pad_value : 8'd0);
    end
    reg [CO*8-1:0] d4, d5, d6;
    wire [CO*32-1:0] psum6;
    cnn_array #(.CI(CI), .CO(CO), .S(S), .G(G)) u_array (
        .clk(clk), .x(x3), .wp(wactive), .psum(psum6)
    );

    // ---- Accumulator, requantisers, fused ADD ----------------------------------------------
    reg [CO*32-1:0] accm [0:(1<<AAW)-1];
    reg [CO*32-1:0] acc_q;                          // stage 6 read, used in stage 7
    wire [CO*32-1:0] acc8_word;
    genvar gl;
    generate
        for (gl = 0; gl < CO; gl = gl + 1) begin : g_lane
            wire signed [31:0] acc7;
            wire [7:0] z15;
            wire [7:0] resb = c_res_ibuf ? ib_q[c_res_bank[BSEL-1:0]][gl*8 +: 8] : res_data[gl*8 +: 8];
            /* verilator lint_off UNUSEDSIGNAL */  // shifts are 1..62: 6 bits
            wire [7:0] sh8 = cshf[pcp[8]][gl*8 +: 8];
            wire [7:0] sh9 = cshf[pcp[9]][gl*8 +: 8];
            /* verilator lint_on UNUSEDSIGNAL */
            cnn_lane #(.ADD_DSP(ADD_DSP)) u_lane (
                .clk(clk), .is_max(c_mode == 2'd1), .first(pfirst[6]),
                .ps(mac ? $signed(psum6[gl*32 +: 32]) : $signed({{24{d6[gl*8 + 7]}}, d6[gl*8 +: 8]})),
                .prev($signed(acc_q[gl*32 +: 32])), .init(cbias[pcp[6]][gl*32 +: 32]), .acc7(acc7),
                .mul7(cmul[pcp[7]][gl*32 +: 32]), .add8(cadd[pcp[8]][gl*32 +: 32]),
                .sh8(sh8[5:0]), .sh9(sh9[5:0]), .relu(c_relu), .resb(resb), .add(c_add),
                .m0(c_add_m0), .m1(c_add_m1), .add_shift(c_add_shift[5:0]),
                .add_relu(c_add_relu), .z15(z15)
            );
            assign acc8_word[gl*32 +: 32] = acc7;
            assign result[gl*8 +: 8] = z15;
        end
    endgenerate
    always @(posedge clk) begin
        acc_q <= accm[paddr[5]];
        if (pv[7] && !plast[7]) accm[paddr[7]] <= acc8_word;
    end
    assign res_pop = pv[11] && plast[11] && c_add && !c_res_ibuf;
    assign out_push = pv[NST-1] && plast[NST-1] && c_out_ddr;
    assign out_data = result;

    // ---- Sequential logic --------------------------------------------------------------------
    integer n;
    always @(posedge clk) begin
        if (rst) begin
            st <= ST_IDLE; wl_st <= WL_IDLE; cfull <= 0; err_const <= 1'b0;
            cinfl[0] <= 0; cinfl[1] <= 0; wshadow_full <= 1'b0; swap_pending <= 1'b0;
            pv <= 0; out_infl <= 0; res_resv <= 0; pipe_n <= 0; release_row <= 0;
        end else begin
            // -- weight loader
            case (wl_st)
                WL_IDLE: if (start) begin
                    wl_st <= WL_CONST; wl_band <= 0; wl_k <= 0; wl_word <= 0;
                end
                WL_CONST: if (wf_pop) begin
                    if (c_bad) err_const <= 1'b1;
                    if (wl_word < 4) cbias[wl_cs] <= {wf_data, cbias[wl_cs][CO*32-1:CO*8]};
                    else if (wl_word < 8) cmul[wl_cs] <= {wf_data, cmul[wl_cs][CO*32-1:CO*8]};
                    else if (wl_word < 12) cadd[wl_cs] <= {wf_data, cadd[wl_cs][CO*32-1:CO*8]};
                    else cshf[wl_cs] <= wf_data;
                    if (wl_word == 4) wl_m0 <= wf_data[31:0];
                    wl_word <= wl_last_word_c ? 16'd0 : wl_word + 1'b1;
                    if (wl_last_word_c) begin
                        cfull[wl_cs] <= 1'b1;
                        wl_pass <= 0;
                        if (mac) wl_st <= WL_WSET;
                        else if (wl_k + 1 < c_coblocks) wl_k <= wl_k + 1'b1;
                        else begin
                            wl_k <= 0;
                            wl_band <= wl_band + 1'b1;
                            if (wl_band + 1 == c_bands) wl_st <= WL_IDLE;
                        end
                    end
                end
                WL_WSET: if (wf_pop) begin
                    if (w_bad) err_const <= 1'b1;
                    wshadow <= (CI > 1) ? {packed_word, wshadow[CI*NP*PWB-1:NP*PWB]} : packed_word;
                    wl_word <= wl_last_word_w ? 16'd0 : wl_word + 1'b1;
                    if (wl_last_word_w) begin
                        wshadow_full <= 1'b1;
                        if (wl_pass + 1 < c_passes) wl_pass <= wl_pass + 1;
                        else begin
                            wl_st <= WL_CONST;
                            if (wl_k + 1 < c_coblocks) wl_k <= wl_k + 1'b1;
                            else begin
                                wl_k <= 0;
                                wl_band <= wl_band + 1'b1;
                                if (wl_band + 1 == c_bands) wl_st <= WL_IDLE;
                            end
                        end
                    end
                end
                default: wl_st <= WL_IDLE;
            endcase

            // -- streamer
            case (st)
                ST_IDLE: if (start) begin
                    r_b <= -$signed({24'd0, c_pt}); slot_b <= 0; rbase_b <= 0; init_cnt <= c_pt;
                    band <= 0; fwd_b <= 0; release_row <= 0;
                    st <= ST_INIT;
                end
                ST_INIT: if (init_cnt != 0) begin      // slot of row -pad_top, mod ring
                    slot_b <= (slot_b == 0) ? {16'd0, c_ring} - 1 : slot_b - 1;
                    rbase_b <= (rbase_b == 0) ? c_ring_words - c_row_words : rbase_b - c_row_words;
                    init_cnt <= init_cnt - 1'b1;
                end else st <= ST_BAND;
                ST_BAND: begin
                    nb <= last_band ? c_last_rows : c_band_rows;
                    release_row <= (r_b < 0) ? 16'd0 : r_b[15:0];
                    if (rows_ok) begin k <= 0; st <= ST_KSTART; end
                end
                ST_KSTART: begin
                    ky <= 0; kx <= 0; cb <= 0;
                    pr_iy <= r_b; pr_slot <= slot_b; pr_rbase <= rbase_b;
                    pc_ix0 <= -$signed({24'd0, c_pl}); pc_col0 <= -$signed(c_pl_pw);
                    st <= ST_PASS;
                end
                ST_PASS: if (sets_ok) begin
                    oy <= 0; ox <= 0; cur_iy <= pr_iy; cur_slot <= pr_slot; cur_rbase <= pr_rbase;
                    cur_ix <= pc_ix0; cur_col <= pc_col0; acc_a <= 0;
                    fwd_a <= fwd_b + {16'd0, k}; pass_cycles <= 0;
                    st <= ST_PIX;
                end
                ST_PIX, ST_GAP: begin
                    pass_cycles <= pass_cycles + 1'b1;
                    if (issue) begin
                        acc_a <= acc_a + 1'b1;
                        fwd_a <= fwd_a + {16'd0, c_pw_out};
                        if (ox == c_out_w - 1) begin
                            ox <= 0; oy <= oy + 1'b1;
                            cur_ix <= pc_ix0; cur_col <= pc_col0;
                            cur_iy <= cur_iy + $signed({24'd0, c_sh});
                            if (cur_slot + {24'd0, c_sh} >= {16'd0, c_ring}) begin
                                cur_slot <= cur_slot + {24'd0, c_sh} - {16'd0, c_ring};
                                cur_rbase <= cur_rbase + c_sh_words - c_ring_words;
                            end else begin
                                cur_slot <= cur_slot + {24'd0, c_sh};
                                cur_rbase <= cur_rbase + c_sh_words;
                            end
                        end else begin
                            ox <= ox + 1'b1;
                            cur_ix <= cur_ix + $signed({24'd0, c_sw});
                            cur_col <= cur_col + $signed(c_sw_pw);
                        end
                        if (last_pix) st <= ST_GAP;
                    end
                    if (pass_close) st <= ST_NEXT;
                end
                ST_NEXT: begin                         // the pass is issued: next pass
                    if (last_pass) cfull[k[0]] <= 1'b0;
                    st <= ST_PASS;
                    if (cb + 1 < c_cib) cb <= cb + 1'b1;
                    else begin
                        cb <= 0;
                        if (kx + 1 < c_kw) begin
                            kx <= kx + 1'b1; pc_ix0 <= pc_ix0 + 1; pc_col0 <= pc_col0 + $signed({16'd0, c_pw});
                        end else begin
                            kx <= 0; pc_ix0 <= -$signed({24'd0, c_pl}); pc_col0 <= -$signed(c_pl_pw);
                            if (ky + 1 < c_kh) begin
                                ky <= ky + 1'b1; pr_iy <= pr_iy + 1;
                                if (pr_slot + 1 >= {16'd0, c_ring}) begin
                                    pr_slot <= 0; pr_rbase <= 0;
                                end else begin
                                    pr_slot <= pr_slot + 1; pr_rbase <= pr_rbase + c_row_words;
                                end
                            end else begin
                                ky <= 0;
                                if (k + 1 < c_coblocks) begin k <= k + 1'b1; st <= ST_KSTART; end
                                else st <= ST_BADV;
                            end
                        end
                    end
                end
                ST_BADV: begin
                    band <= band + 1'b1;
                    r_b <= r_b + $signed(c_bstep);
                    slot_b <= slot_b + c_bstep;
                    rbase_b <= rbase_b + c_bstep_words;
                    fwd_b <= fwd_b + c_fwd_step;
                    st <= ST_BFIX1;
                end
                ST_BFIX1, ST_BFIX2: begin
                    if (slot_b >= {16'd0, c_ring}) begin
                        slot_b <= slot_b - {16'd0, c_ring};
                        rbase_b <= rbase_b - c_ring_words;
                    end
                    st <= (st == ST_BFIX1) ? ST_BFIX2 : ((band == c_bands) ? ST_DRAIN : ST_BAND);
                end
                ST_DRAIN: if (pipe_n == 0 && !issue) st <= ST_IDLE;
                default: st <= ST_IDLE;
            endcase

            // -- pipeline tags
            pv <= {pv[NST-1:1], issue};
            pfirst <= {pfirst[5:1], first_pass};
            plast <= {plast[NST-1:1], last_pass};
            pmask <= {pmask[2:1], row_in && col_in};
            pfpix <= {pfpix[1], first_pix};
            pcp <= {pcp[9:1], k[0]};
            psub[1] <= sub_sel; psub[2] <= psub[1]; psub[3] <= psub[2];
            paddr[1] <= acc_a;
            for (n = 2; n <= 8; n = n + 1) paddr[n] <= paddr[n-1];
            pfwd[1] <= fwd_a[IBW-1:0];
            for (n = 2; n <= NST-1; n = n + 1) pfwd[n] <= pfwd[n-1];
            pipe_n <= pipe_n + (issue ? 1'b1 : 1'b0) - (pv[NST] ? 1'b1 : 1'b0);
            // -- weights: the swap as a pass's first pixel enters stage 3; constants until stage 10
            if (issue && mac && first_pix) swap_pending <= 1'b1;
            if (swap) begin
                wactive <= wshadow;
                swap_pending <= 1'b0;
                wshadow_full <= 1'b0;
            end
            for (n = 0; n < 2; n = n + 1)
                cinfl[n] <= cinfl[n] + ((issue && k[0] == n[0]) ? 1'b1 : 1'b0)
                                     - ((pv[10] && pcp[10] == n[0]) ? 1'b1 : 1'b0);
            out_infl <= out_infl + ((issue && last_pass && c_out_ddr) ? 1'b1 : 1'b0) - (out_push ? 1'b1 : 1'b0);
            res_resv <= res_resv + ((issue && last_pass && c_add && !c_res_ibuf) ? 1'b1 : 1'b0) - (res_pop ? 1'b1 : 1'b0);
        end
    end

    // Data stages (no reset needed).
    always @(posedge clk) begin
        ib_raddr <= rd_addr[IBW-1:0];
        ib_word <= ib_q[c_in_bank[BSEL-1:0]];
        d4 <= d3; d5 <= d4; d6 <= d5;
    end
endmodule
`default_nettype wire
