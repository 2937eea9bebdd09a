// Byte gather: read beats (each with its valid byte range) become words of CO bytes.
// Every output word follows one program entry (zl, n, drop): zl zero bytes, then the next n
// stream bytes, then zeros up to CO; afterwards `drop` stream bytes are consumed (drop may
// exceed what has arrived: the rest is skipped as it comes). Plain copies use zl = 0 and
// drop = n; the FOLD loader uses overlapping windows (drop < n) and edge zeros (zl > 0).
`default_nettype none

module cnn_gather #(
    parameter integer DB = 16,
    parameter integer LB = 4,
    parameter integer CO = 64
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              bvalid,
    output wire              bready,
    input  wire [DB*8-1:0]   bdata,
    input  wire [LB-1:0]     blo,
    input  wire [LB:0]       bhi,
    input  wire              pvalid,
    output wire              pready,
    input  wire [7:0]        p_zl,
    input  wire [7:0]        p_n,
    input  wire [23:0]       p_drop,
    output reg               wvalid,
    input  wire              wready,
    output reg  [CO*8-1:0]   wdata
);
    localparam integer QB = CO + DB;                // queue bytes
    reg [QB*8-1:0] q;
    reg [7:0]      cnt;                             // bytes held
    reg [23:0]     skip;                            // stream bytes still to discard

    wire out_free = !wvalid || wready;
    wire emit = pvalid && out_free && (skip == 0) && ({1'b0, cnt} >= {1'b0, p_n});
    assign pready = emit;
    // Consume first (emit's drop), then append the beat behind what is left.
    wire        drop_all = emit && ({16'd0, cnt} < p_drop);
    wire [7:0]  cnt_d = !emit ? cnt : (drop_all ? 8'd0 : cnt - p_drop[7:0]);
    wire [23:0] skip_d = drop_all ? p_drop - {16'd0, cnt} : skip;
    wire [QB*8-1:0] q_d = !emit ? q : (drop_all ? {(QB*8){1'b0}} : q >> ({16'd0, p_drop[7:0]} << 3));
    assign bready = ({1'b0, cnt} + DB <= QB);
    wire take = bvalid && bready;
    wire [LB:0] avail = bhi - {1'b0, blo};
    wire [LB:0] skipped = (skip_d > {{(23-LB){1'b0}}, avail}) ? avail : skip_d[LB:0];
    wire [LB:0] keep = avail - skipped;
    wire [LB:0] start = {1'b0, blo} + skipped;
    wire [DB*8-1:0] beat_aligned = bdata >> ({{(7-LB){1'b0}}, start} << 3);
    wire [DB*8-1:0] beat_mask = ({{(DB*8-1){1'b0}}, 1'b1} << ({{(7-LB){1'b0}}, keep} << 3)) - 1'b1;
    wire [DB*8-1:0] beat_bytes = (keep == DB[LB:0]) ? beat_aligned : (beat_aligned & beat_mask);
    wire [QB*8-1:0] appended = {{(CO*8){1'b0}}, beat_bytes} << ({3'd0, cnt_d} << 3);
    // The word: n bytes of the queue, shifted up by zl.
    wire [QB*8-1:0] qmask = ({{(QB*8-1){1'b0}}, 1'b1} << ({3'd0, p_n} << 3)) - 1'b1;
    /* verilator lint_off UNUSEDSIGNAL */  // zl + n <= CO: bytes above CO are zero
    wire [QB*8-1:0] picked = (q & qmask) << ({3'd0, p_zl} << 3);
    /* verilator lint_on UNUSEDSIGNAL */

    always @(posedge clk) begin
        if (rst) begin
            q <= 0; cnt <= 0; skip <= 0; wvalid <= 1'b0; wdata <= 0;
        end else begin
            if (take) begin
                q <= q_d | appended;
                cnt <= cnt_d + {{(7-LB){1'b0}}, keep};
                skip <= skip_d - {{(23-LB){1'b0}}, skipped};
            end else begin
                q <= q_d;
                cnt <= cnt_d;
                skip <= skip_d;
            end
            if (emit) begin
                wvalid <= 1'b1;
                wdata <= picked[CO*8-1:0];
            end else if (wready) wvalid <= 1'b0;
        end
    end
endmodule
`default_nettype wire
