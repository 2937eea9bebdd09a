// Descriptor check and decode: the rules of core/descriptors.py `check` (the same order of
// error codes: BAD_OPCODE, then BAD_DESCRIPTOR, then BAD_ADDRESS) and the derived values
// the units run on (bitstreams/README.md, "Descriptors"). One shared multiplier, one product
// per cycle: about 32 cycles per descriptor, taken while an earlier one executes.
`default_nettype none
`include "cnn_spec.vh"
`include "cnn_derived.vh"

module cnn_check #(
    parameter integer CI = 32,
    parameter integer CO = 64,
    parameter integer ACC_DEPTH = 2048,
    parameter integer IBUF_WORDS = 16384,
    parameter integer BANKS = 2
) (
    input  wire                  clk,
    input  wire                  rst,
    input  wire                  start,
    /* verilator lint_off UNUSEDSIGNAL */  // reserved fields, and pad_value (the core's)
    input  wire [`DESC_BITS-1:0] d,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [95:0]           region_bytes, // per SPACES code (ACT, IN, OUT): 32 bits each
    input  wire [31:0]           wgt_bytes,
    output reg                   done,
    output reg  [2:0]            code,
    output wire [`DERIVED_BITS-1:0] derived
);
    wire [1:0]  mode;
    wire [15:0] heff, weff, ceff, kw_e, coblocks, last_rows;
    wire [7:0]  sw_e, pl_e;
    reg  [15:0] pw, cib, need_rows;
    reg  [31:0] row_words, passes, ring_words, sh_words, sw_pw, pl_pw, bstep, bstep_words,
                span_full, span_last, p_full, p_last, fwd_step, in_row_pitch, row_bytes, sw_c,
                pl_c, kw_c, out_band_step, res_band_step;
    assign `X_MODE(derived) = mode;
    assign `X_HEFF(derived) = heff;
    assign `X_WEFF(derived) = weff;
    assign `X_CEFF(derived) = ceff;
    assign `X_KW_E(derived) = kw_e;
    assign `X_SW_E(derived) = sw_e;
    assign `X_PL_E(derived) = pl_e;
    assign `X_PW(derived) = pw;
    assign `X_ROW_WORDS(derived) = row_words;
    assign `X_CIB(derived) = cib;
    assign `X_PASSES(derived) = passes;
    assign `X_COBLOCKS(derived) = coblocks;
    assign `X_LAST_ROWS(derived) = last_rows;
    assign `X_RING_WORDS(derived) = ring_words;
    assign `X_SH_WORDS(derived) = sh_words;
    assign `X_SW_PW(derived) = sw_pw;
    assign `X_PL_PW(derived) = pl_pw;
    assign `X_BSTEP(derived) = bstep;
    assign `X_BSTEP_WORDS(derived) = bstep_words;
    assign `X_SPAN_FULL(derived) = span_full;
    assign `X_SPAN_LAST(derived) = span_last;
    assign `X_P_FULL(derived) = p_full;
    assign `X_P_LAST(derived) = p_last;
    assign `X_FWD_STEP(derived) = fwd_step;
    assign `X_NEED_ROWS(derived) = need_rows;
    assign `X_IN_ROW_PITCH(derived) = in_row_pitch;
    assign `X_ROW_BYTES(derived) = row_bytes;
    assign `X_SW_C(derived) = sw_c;
    assign `X_PL_C(derived) = pl_c;
    assign `X_KW_C(derived) = kw_c;
    assign `X_OUT_BAND_STEP(derived) = out_band_step;
    assign `X_RES_BAND_STEP(derived) = res_band_step;
    localparam integer LCI = $clog2(CI);
    localparam integer LCO = $clog2(CO);
    wire [7:0]  op = `D_OPCODE(d);
    /* verilator lint_off UNUSEDSIGNAL */  // RELU is the core's
    wire [7:0]  flags = `D_FLAGS(d);
    /* verilator lint_on UNUSEDSIGNAL */
    wire [15:0] kh = `D_KERNEL_H(d), kw = `D_KERNEL_W(d);
    wire [7:0]  sh = `D_STRIDE_H(d), sw = `D_STRIDE_W(d);
    wire [7:0]  pt = `D_PAD_TOP(d), pb = `D_PAD_BOTTOM(d), pl = `D_PAD_LEFT(d), pr = `D_PAD_RIGHT(d);
    wire [15:0] in_h = `D_IN_H(d), in_w = `D_IN_W(d), in_c = `D_IN_C(d);
    wire [15:0] in_buf_c = `D_IN_BUF_C(d), in_ch_off = `D_IN_CH_OFF(d);
    wire [15:0] out_h = `D_OUT_H(d), out_w = `D_OUT_W(d), out_c = `D_OUT_C(d);
    wire [15:0] out_buf_c = `D_OUT_BUF_C(d), out_ch_off = `D_OUT_CH_OFF(d);
    wire [15:0] res_buf_c = `D_RES_BUF_C(d), res_ch_off = `D_RES_CH_OFF(d);
    wire [15:0] band_rows = `D_BAND_ROWS(d), bands = `D_BANDS(d), ring = `D_RING_ROWS(d);
    wire [7:0]  in_bank = `D_IN_BANK(d), out_bank = `D_OUT_BANK(d);
    wire [7:0]  add_shift = `D_ADD_SHIFT(d);
    wire [31:0] in_off = `D_IN_OFFSET(d), out_off = `D_OUT_OFFSET(d), res_off = `D_RES_OFFSET(d);
    wire [31:0] w_off = `D_WGT_OFFSET(d), w_bytes = `D_WGT_BYTES(d);
    wire f_add = flags[`FLAG_ADD], f_add_relu = flags[`FLAG_ADD_RELU];
    wire f_in_ibuf = flags[`FLAG_IN_IBUF], f_out_ddr = flags[`FLAG_OUT_DDR];
    wire f_out_ibuf = flags[`FLAG_OUT_IBUF], f_fold = flags[`FLAG_FOLD];
    wire f_res_ibuf = flags[`FLAG_RES_IBUF];
    wire [7:0] res_bank = `D_RES_BANK(d);
    wire unknown_flags = 1'b0;                  // every flag bit is defined
    // each DDR access's region (spaces field: 2 bits per access; code 3 and bits 7:6 unknown)
    wire [7:0] spaces = `D_SPACES(d);
    wire [1:0] sp_in = spaces[`SPF_IN +: 2], sp_res = spaces[`SPF_RES +: 2], sp_out = spaces[`SPF_OUT +: 2];
    wire unknown_spaces = (spaces[7:6] != 2'd0) || (sp_in == 2'd3) || (sp_res == 2'd3) || (sp_out == 2'd3);
    wire [31:0] in_bound = region_bytes[sp_in * 32 +: 32];
    wire [31:0] res_bound = region_bytes[sp_res * 32 +: 32];
    wire [31:0] out_bound = region_bytes[sp_out * 32 +: 32];
    wire is_conv = (op == `OP_CONV);

    assign mode = is_conv ? 2'd0 : (op == `OP_MAXPOOL) ? 2'd1 : 2'd2;
    assign heff = in_h;
    assign weff = f_fold ? out_w : in_w;
    assign kw_e = f_fold ? 16'd1 : kw;
    assign sw_e = f_fold ? 8'd1 : sw;
    assign pl_e = f_fold ? 8'd0 : pl;
    assign coblocks = (out_c + CO - 1) >> LCO;

    reg [31:0] kwc_full;                        // kw * in_c (32 bits of a 32-bit product)
    reg [63:0] hstep, wstep, band_px, band_cover, rw_ring, span_f0, fwd_words;
    reg [63:0] in_ext, out_ext, res_ext, p4, seg_blocks;
    /* verilator lint_off UNUSEDSIGNAL */  // products whose operands keep them below 2^32 in every valid descriptor
    reg [63:0] hw_out, hw_in, p3;
    /* verilator lint_on UNUSEDSIGNAL */
    assign ceff = f_fold ? kwc_full[15:0] : in_c;
    /* verilator lint_off UNUSEDSIGNAL */  // below 2^16 for valid descriptors
    wire [31:0] last_rows32 = {16'd0, out_h} - (band_cover[31:0] - {16'd0, band_rows});
    /* verilator lint_on UNUSEDSIGNAL */
    assign last_rows = last_rows32[15:0];

    reg [5:0]  step;
    reg        busy;
    reg [31:0] ma, mb;
    wire [63:0] mp = ma * mb;
    always @(*) begin
        ma = 0; mb = 0;
        case (step)
            6'd0:  begin ma = {16'd0, kw}; mb = {16'd0, in_c}; end                       // kw*in_c
            6'd1:  begin ma = {16'd0, out_h} - 1; mb = {24'd0, sh}; end                   // (out_h-1)*sh
            6'd2:  begin ma = {16'd0, out_w} - 1; mb = {24'd0, sw}; end                   // (out_w-1)*sw
            6'd3:  begin ma = {16'd0, weff}; mb = {16'd0, pw}; end                        // row_words
            6'd4:  begin ma = {16'd0, kh}; mb = {16'd0, kw_e}; end                        // taps
            6'd5:  begin ma = p3[31:0]; mb = {16'd0, cib}; end                            // passes
            6'd6:  begin ma = {16'd0, band_rows}; mb = {16'd0, out_w}; end                // band pixels
            6'd7:  begin ma = {16'd0, bands}; mb = {16'd0, band_rows}; end                // rows covered
            6'd8:  begin ma = {16'd0, ring}; mb = row_words; end                          // ring words
            6'd9:  begin ma = {16'd0, band_rows} - 1; mb = {24'd0, sh}; end               // band span
            6'd10: begin ma = {16'd0, last_rows} - 1; mb = {24'd0, sh}; end               // last span
            6'd11: begin ma = {16'd0, out_h}; mb = {16'd0, out_w}; end                    // out pixels
            6'd12: begin ma = hw_out[31:0]; mb = {16'd0, coblocks}; end                   // forwarded words
            6'd13: begin ma = {16'd0, coblocks}; mb = 32'd13 + (mode == 2'd0 ? (p4[31:0] << LCI) : 32'd0); end  // segment / CO
            6'd14: begin ma = {16'd0, in_h}; mb = {16'd0, in_w}; end                      // in pixels
            6'd15: begin ma = hw_in[31:0] - 1; mb = {16'd0, in_buf_c}; end               // in extent
            6'd16: begin ma = hw_out[31:0] - 1; mb = {16'd0, out_buf_c}; end             // out extent
            6'd17: begin ma = hw_out[31:0] - 1; mb = {16'd0, res_buf_c}; end             // res extent
            6'd18: begin ma = {24'd0, sh}; mb = row_words; end                            // sh_words
            6'd19: begin ma = {24'd0, sw_e}; mb = {16'd0, pw}; end                        // sw_pw
            6'd20: begin ma = {24'd0, pl_e}; mb = {16'd0, pw}; end                        // pl_pw
            6'd21: begin ma = bstep; mb = row_words; end                                  // bstep_words
            6'd22: begin ma = {16'd0, last_rows}; mb = {16'd0, out_w}; end                // last pixels
            6'd23: begin ma = band_px[31:0]; mb = {16'd0, coblocks}; end                  // fwd step
            6'd24: begin ma = {16'd0, in_w}; mb = {16'd0, in_buf_c}; end                  // row pitch
            6'd25: begin ma = {16'd0, in_w}; mb = {16'd0, in_c}; end                      // row bytes
            6'd26: begin ma = {24'd0, sw}; mb = {16'd0, in_c}; end                        // fold step
            6'd27: begin ma = {24'd0, pl}; mb = {16'd0, in_c}; end                        // fold left zeros
            6'd28: begin ma = band_px[31:0]; mb = {16'd0, out_buf_c}; end                 // out band step
            6'd29: begin ma = band_px[31:0]; mb = {16'd0, res_buf_c}; end                 // res band step
            default: ;
        endcase
    end

    // The rules (valid once every product is in: step 30).
    wire signed [31:0] nh = {16'd0, in_h} + {24'd0, pt} + {24'd0, pb} - {16'd0, kh};
    wire signed [31:0] nw = {16'd0, in_w} + {24'd0, pl} + {24'd0, pr} - {16'd0, kw};
    wire size_ok = (nh >= 0) && (nw >= 0)
                   && (hstep <= {32'd0, nh}) && ({32'd0, nh} < hstep + {56'd0, sh})
                   && (wstep <= {32'd0, nw}) && ({32'd0, nw} < wstep + {56'd0, sw});
    wire no_pad = (pt == 0) && (pb == 0) && (pl == 0) && (pr == 0);
    wire [63:0] span_need = span_f0 + {48'd0, kh};
    wire [63:0] span_rows = (span_need > {48'd0, heff}) ? {48'd0, heff} : span_need;
    wire seg_big = (mode == 2'd0) && (|p4[63:26]);
    wire [63:0] segment = (seg_blocks << LCO);
    /* verilator lint_off WIDTH */
    wire d_bad =
        unknown_flags || unknown_spaces
        || kh == 0 || kw == 0 || sh == 0 || sw == 0 || in_h == 0 || in_w == 0 || in_c == 0
        || out_h == 0 || out_w == 0 || out_c == 0
        || sh != sw
        || {1'b0, in_ch_off} + in_c > in_buf_c
        || {1'b0, out_ch_off} + out_c > out_buf_c
        || !size_ok
        || (op == `OP_GLOBAL_AVGPOOL && (kh != in_h || kw != in_w || !no_pad))
        || ((op == `OP_ADD || op == `OP_SCALE_SHIFT) && (kh != 1 || kw != 1 || sh != 1 || !no_pad))
        || (!is_conv && out_c != in_c)
        || ((op == `OP_ADD) != f_add && !(is_conv && f_add))
        || (f_add_relu && !f_add)
        || (f_add && (add_shift < `SHIFT_MIN || add_shift > `SHIFT_MAX))
        || (f_add && {1'b0, res_ch_off} + out_c > res_buf_c)
        || (f_fold && (!is_conv || kwc_full > CI || in_c != in_buf_c || f_in_ibuf))
        || (!f_out_ddr && !f_out_ibuf)
        || in_bank >= BANKS || out_bank >= BANKS
        || (f_out_ibuf && out_bank == in_bank)
        || (f_res_ibuf && (!f_add || res_bank >= BANKS || res_bank == in_bank
                           || (f_out_ibuf && res_bank == out_bank)))
        || band_rows == 0 || band_px > ACC_DEPTH
        || band_cover < out_h || band_cover - band_rows >= out_h
        || ring == 0 || ring > heff || rw_ring > IBUF_WORDS
        || span_rows > {48'd0, ring}
        || (sh > ring && out_h > 1)
        || (f_in_ibuf && ring != heff)
        || ((f_out_ibuf || f_res_ibuf) && fwd_words > IBUF_WORDS)
        || seg_big || segment != {32'd0, w_bytes};
    wire a_bad =
        (w_off[5:0] != 0)
        || ({32'd0, w_off} + w_bytes > wgt_bytes)
        || (!f_in_ibuf && in_ext > in_bound)
        || (f_out_ddr && out_ext > out_bound)
        || (f_add && !f_res_ibuf && res_ext > res_bound);
    /* verilator lint_on WIDTH */

    always @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0; done <= 1'b0; step <= 0; code <= 0;
        end else begin
            done <= 1'b0;
            if (start && !busy) begin busy <= 1'b1; step <= 0; end
            else if (busy) begin
                step <= step + 1'b1;
                case (step)
                    6'd0:  kwc_full <= mp[31:0];
                    6'd1:  hstep <= mp;
                    6'd2:  begin
                        wstep <= mp;
                        pw <= (ceff + CO - 1) >> LCO;
                        cib <= is_conv ? ((ceff + CI - 1) >> LCI) : 16'd1;
                    end
                    6'd3:  row_words <= mp[31:0];
                    6'd4:  p3 <= mp;
                    6'd5:  begin p4 <= mp; passes <= mp[31:0]; end
                    6'd6:  begin band_px <= mp; p_full <= mp[31:0]; end
                    6'd7:  band_cover <= mp;
                    6'd8:  begin rw_ring <= mp; ring_words <= mp[31:0]; end
                    6'd9:  begin span_f0 <= mp; span_full <= mp[31:0] + kh - 1; bstep <= mp[31:0] + sh; end
                    6'd10: span_last <= mp[31:0] + kh - 1;
                    6'd11: hw_out <= mp;
                    6'd12: fwd_words <= mp;
                    6'd13: seg_blocks <= mp;
                    6'd14: hw_in <= mp;
                    6'd15: in_ext <= mp + in_off + in_ch_off + in_c;
                    6'd16: out_ext <= mp + out_off + out_ch_off + out_c;
                    6'd17: res_ext <= mp + res_off + res_ch_off + out_c;
                    6'd18: sh_words <= mp[31:0];
                    6'd19: sw_pw <= mp[31:0];
                    6'd20: pl_pw <= mp[31:0];
                    6'd21: bstep_words <= mp[31:0];
                    6'd22: p_last <= mp[31:0];
                    6'd23: fwd_step <= mp[31:0];
                    6'd24: in_row_pitch <= mp[31:0];
                    6'd25: row_bytes <= mp[31:0];
                    6'd26: sw_c <= mp[31:0];
                    6'd27: pl_c <= mp[31:0];
                    6'd28: out_band_step <= mp[31:0];
                    6'd29: res_band_step <= mp[31:0];
                    6'd30: begin
                        kw_c <= kwc_full;
                        // rows the loader brings: up to the last one a band reads
                        if ($signed(hstep[31:0]) - $signed({24'd0, pt}) + $signed({16'd0, kh}) <= 0)
                            need_rows <= 0;
                        else if (hstep[31:0] - pt + kh > heff) need_rows <= heff;
                        else need_rows <= hstep[15:0] - pt + kh;
                        code <= (op < 1 || op > 6) ? `ERR_BAD_OPCODE
                              : d_bad ? `ERR_BAD_DESCRIPTOR
                              : a_bad ? `ERR_BAD_ADDRESS : `ERR_NONE;
                        busy <= 1'b0;
                        done <= 1'b1;
                    end
                    default: ;
                endcase
            end
        end
    end
endmodule
`default_nettype wire
