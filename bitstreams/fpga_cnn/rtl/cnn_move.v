// Data movement between DDR and the core, one descriptor at a time:
//   cnn_loader  input rows -> input buffer ring (plain, or FOLD windows), behind the core's
//               release of old rows; counts rows complete for the core;
//   cnn_resid   the fused ADD's residual, one CO-channel chunk per output pixel, in the
//               core's order, as far ahead as the residual FIFO has room;
//   cnn_writer  output FIFO -> one chunk per pixel and channel block at its DDR address.
`default_nettype none

module cnn_loader #(
    parameter integer CO = 64,
    parameter integer DB = 16,
    parameter integer LB = 4,
    parameter integer IBW = 14
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              start,
    output wire              busy,
    input  wire [63:0]       base,          // image region + in_offset + in_ch_off
    input  wire [15:0]       in_w,
    input  wire [15:0]       in_c,
    input  wire [15:0]       in_buf_c,
    input  wire [15:0]       ceff,
    input  wire [15:0]       pw,
    input  wire [31:0]       row_words,
    input  wire [15:0]       ring,
    input  wire [31:0]       ring_words,
    input  wire [15:0]       need_rows,
    input  wire [31:0]       in_row_pitch,
    input  wire [31:0]       row_bytes,
    input  wire              fold,
    input  wire [15:0]       out_w,
    input  wire [31:0]       kw_c,
    input  wire [31:0]       sw_c,
    input  wire [31:0]       pl_c,
    input  wire [15:0]       release_row,
    output reg  [15:0]       rows_loaded,
    // read engine
    output reg               cmd_valid,
    input  wire              cmd_ready,
    output reg  [63:0]       cmd_addr,
    output reg  [31:0]       cmd_bytes,
    input  wire              bvalid,
    output wire              bready,
    input  wire [DB*8-1:0]   bdata,
    input  wire [LB-1:0]     blo,
    input  wire [LB:0]       bhi,
    // input buffer
    output wire              ib_we,
    output reg  [IBW-1:0]    ib_addr,
    output wire [CO*8-1:0]   ib_data
);
    wire contiguous = (in_c == in_buf_c);
    // -- commands: rows in order, each when its ring slot is free
    reg        c_busy;
    reg [15:0] c_row, c_x;
    reg [63:0] c_row_addr, c_pix_addr;
    wire slot_free = ({16'd0, c_row} < {16'd0, release_row} + {16'd0, ring});
    always @(posedge clk) begin
        if (rst) begin
            c_busy <= 1'b0; cmd_valid <= 1'b0;
        end else begin
            if (cmd_valid && cmd_ready) cmd_valid <= 1'b0;
            if (start) begin
                c_busy <= (need_rows != 0); c_row <= 0; c_x <= 0; c_row_addr <= base; c_pix_addr <= base;
            end else if (c_busy && (!cmd_valid || cmd_ready) && slot_free) begin
                cmd_valid <= 1'b1;
                if (contiguous) begin
                    cmd_addr <= c_row_addr;
                    cmd_bytes <= row_bytes;
                end else begin
                    cmd_addr <= c_pix_addr;
                    cmd_bytes <= {16'd0, in_c};
                end
                if (contiguous || c_x + 1 == in_w) begin
                    c_x <= 0;
                    c_row <= c_row + 1'b1;
                    c_row_addr <= c_row_addr + {32'd0, in_row_pitch};
                    c_pix_addr <= c_row_addr + {32'd0, in_row_pitch};
                    if (c_row + 1 == need_rows) c_busy <= 1'b0;
                end else begin
                    c_x <= c_x + 1'b1;
                    c_pix_addr <= c_pix_addr + {48'd0, in_buf_c};
                end
            end
        end
    end

    // -- gather program: per row, plain pixels (pw words each) or FOLD windows
    reg        p_busy;
    reg [15:0] p_row, p_x, p_wi;
    reg signed [31:0] p_start;                      // FOLD: window start byte in the row
    wire signed [31:0] front = (p_start > 0) ? p_start : 0;
    wire signed [31:0] zl_w = (p_start < 0) ? -p_start : 0;
    wire signed [31:0] room = $signed(row_bytes) - front;
    wire signed [31:0] want = $signed(kw_c) - zl_w;
    /* verilator lint_off UNUSEDSIGNAL */  // a window is at most CI bytes, a drop below 2^24
    wire signed [31:0] n_w = (want < room) ? want : room;
    wire signed [31:0] nxt = p_start + $signed(sw_c);
    wire last_win = (p_x + 1 == out_w);
    wire signed [31:0] drop_w = last_win ? room : (((nxt > 0) ? nxt : 0) - front);
    /* verilator lint_on UNUSEDSIGNAL */
    wire [15:0] n_plain = (p_wi + 1 == pw) ? ceff - p_wi * CO[15:0] : CO[15:0];
    wire [7:0]  p_zl = fold ? zl_w[7:0] : 8'd0;
    wire [7:0]  p_n = fold ? n_w[7:0] : n_plain[7:0];
    wire [23:0] p_drop = fold ? drop_w[23:0] : {8'd0, n_plain};
    wire p_ready;
    wire p_valid = p_busy;
    always @(posedge clk) begin
        if (rst) p_busy <= 1'b0;
        else if (start) begin
            p_busy <= (need_rows != 0); p_row <= 0; p_x <= 0; p_wi <= 0; p_start <= -$signed(pl_c);
        end else if (p_valid && p_ready) begin
            if (fold) begin
                p_start <= nxt;
                if (last_win) begin
                    p_x <= 0; p_start <= -$signed(pl_c); p_row <= p_row + 1'b1;
                    if (p_row + 1 == need_rows) p_busy <= 1'b0;
                end else p_x <= p_x + 1'b1;
            end else if (p_wi + 1 == pw) begin
                p_wi <= 0;
                if (p_x + 1 == in_w) begin
                    p_x <= 0; p_row <= p_row + 1'b1;
                    if (p_row + 1 == need_rows) p_busy <= 1'b0;
                end else p_x <= p_x + 1'b1;
            end else p_wi <= p_wi + 1'b1;
        end
    end

    wire g_valid;
    cnn_gather #(.DB(DB), .LB(LB), .CO(CO)) u_gather (
        .clk(clk), .rst(rst || start), .bvalid(bvalid), .bready(bready), .bdata(bdata), .blo(blo),
        .bhi(bhi), .pvalid(p_valid), .pready(p_ready), .p_zl(p_zl), .p_n(p_n), .p_drop(p_drop),
        .wvalid(g_valid), .wready(1'b1), .wdata(ib_data)
    );

    // -- words into the ring
    reg [31:0] w_j, w_base;
    assign ib_we = g_valid;
    always @(posedge clk) begin
        if (rst || start) begin
            rows_loaded <= 0; w_j <= 0; w_base <= 0; ib_addr <= 0;
        end else if (g_valid) begin
            if (w_j + 1 == row_words) begin
                w_j <= 0;
                rows_loaded <= rows_loaded + 1'b1;
                w_base <= (w_base + row_words >= ring_words) ? 32'd0 : w_base + row_words;
                ib_addr <= (w_base + row_words >= ring_words) ? {IBW{1'b0}} : w_base[IBW-1:0] + row_words[IBW-1:0];
            end else begin
                w_j <= w_j + 1;
                ib_addr <= ib_addr + 1'b1;
            end
        end
    end
    reg [15:0] rows_wanted;
    always @(posedge clk) if (rst) rows_wanted <= 0; else if (start) rows_wanted <= need_rows;
    assign busy = c_busy || p_busy || cmd_valid || (rows_loaded != rows_wanted);
endmodule

// Chunk address walk shared by the residual reader and the writer: for each band, each
// channel block, each pixel of the band: base + band_start + pixel * buf_c + block * CO, with
// the block's byte count (the last block holds the channel tail).
module cnn_walk #(
    parameter integer CO = 64
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire        step,
    output reg         active,
    input  wire [63:0] base,
    input  wire [15:0] buf_c,
    input  wire [15:0] out_c,
    input  wire [15:0] coblocks,
    input  wire [15:0] bands,
    input  wire [31:0] p_full,
    input  wire [31:0] p_last,
    input  wire [31:0] band_step,
    output wire [63:0] addr,
    output wire [7:0]  n
);
    reg [15:0] b, k;
    reg [31:0] p;
    reg [63:0] band_at, blk_at, at;
    wire [31:0] npix = (b + 1 == bands) ? p_last : p_full;
    /* verilator lint_off UNUSEDSIGNAL */  // at most CO
    wire [15:0] tail = out_c - (coblocks - 1) * CO[15:0];
    /* verilator lint_on UNUSEDSIGNAL */
    assign addr = at;
    assign n = (k + 1 == coblocks) ? tail[7:0] : CO[7:0];
    always @(posedge clk) begin
        if (rst) active <= 1'b0;
        else if (start) begin
            active <= 1'b1; b <= 0; k <= 0; p <= 0; band_at <= base; blk_at <= base; at <= base;
        end else if (active && step) begin
            if (p + 1 < npix) begin
                p <= p + 1; at <= at + {48'd0, buf_c};
            end else begin
                p <= 0;
                if (k + 1 < coblocks) begin
                    k <= k + 1'b1; blk_at <= blk_at + CO; at <= blk_at + CO;
                end else begin
                    k <= 0; b <= b + 1'b1;
                    band_at <= band_at + {32'd0, band_step};
                    blk_at <= band_at + {32'd0, band_step};
                    at <= band_at + {32'd0, band_step};
                    if (b + 1 == bands) active <= 1'b0;
                end
            end
        end
    end
endmodule

module cnn_resid #(
    parameter integer CO = 64,
    parameter integer DB = 16,
    parameter integer LB = 4,
    parameter integer RFA = 7                // log2 residual FIFO words
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              start,
    output wire              busy,
    input  wire [63:0]       base,
    input  wire [15:0]       buf_c,
    input  wire [15:0]       out_c,
    input  wire [15:0]       coblocks,
    input  wire [15:0]       bands,
    input  wire [31:0]       p_full,
    input  wire [31:0]       p_last,
    input  wire [31:0]       band_step,
    output wire              cmd_valid,
    input  wire              cmd_ready,
    output wire [63:0]       cmd_addr,
    output wire [31:0]       cmd_bytes,
    input  wire              bvalid,
    output wire              bready,
    input  wire [DB*8-1:0]   bdata,
    input  wire [LB-1:0]     blo,
    input  wire [LB:0]       bhi,
    // residual FIFO read side (to the core)
    output wire [RFA+1:0]    count,
    output wire [CO*8-1:0]   data,
    input  wire              pop
);
    wire active;
    wire [7:0] n;
    reg [RFA+1:0] pending;                           // chunks asked for, not yet popped
    wire room = pending < (1 << RFA);
    assign cmd_valid = active && room;
    wire issue = cmd_valid && cmd_ready;
    cnn_walk #(.CO(CO)) u_walk (
        .clk(clk), .rst(rst), .start(start), .step(issue), .active(active), .base(base),
        .buf_c(buf_c), .out_c(out_c), .coblocks(coblocks), .bands(bands), .p_full(p_full),
        .p_last(p_last), .band_step(band_step), .addr(cmd_addr), .n(n)
    );
    assign cmd_bytes = {24'd0, n};
    // gather program: one word per chunk, same order
    /* verilator lint_off UNUSEDSIGNAL */  // pending <= 2^RFA keeps the program FIFO from filling
    wire pfull;
    wire [RFA:0] pcount;
    /* verilator lint_on UNUSEDSIGNAL */
    wire pvalid, pready;
    wire [7:0] pn;
    cnn_rfifo #(.W(8), .AW(RFA)) u_prog (
        .clk(clk), .rst(rst || start), .push(issue), .din(n), .full(pfull), .pop(pready),
        .dout(pn), .valid(pvalid), .count(pcount)
    );
    wire g_valid;
    /* verilator lint_off UNUSEDSIGNAL */  // the credit (pending) bounds the FIFO; the core counts its entries
    wire f_full, f_valid;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [CO*8-1:0] g_data;
    cnn_gather #(.DB(DB), .LB(LB), .CO(CO)) u_gather (
        .clk(clk), .rst(rst || start), .bvalid(bvalid), .bready(bready), .bdata(bdata), .blo(blo),
        .bhi(bhi), .pvalid(pvalid), .pready(pready), .p_zl(8'd0), .p_n(pn), .p_drop({16'd0, pn}),
        .wvalid(g_valid), .wready(1'b1), .wdata(g_data)
    );
    cnn_fifo #(.W(CO*8), .AW(RFA)) u_fifo (
        .clk(clk), .rst(rst || start), .push(g_valid), .din(g_data), .full(f_full), .pop(pop),
        .dout(data), .valid(f_valid), .count(count)
    );
    always @(posedge clk) begin
        if (rst || start) pending <= 0;
        else pending <= pending + (issue ? 1'b1 : 1'b0) - (pop ? 1'b1 : 1'b0);
    end
    assign busy = active || (pending != 0);
endmodule

module cnn_writer #(
    parameter integer CO = 64
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              start,
    output wire              busy,
    input  wire [63:0]       base,
    input  wire [15:0]       buf_c,
    input  wire [15:0]       out_c,
    input  wire [15:0]       coblocks,
    input  wire [15:0]       bands,
    input  wire [31:0]       p_full,
    input  wire [31:0]       p_last,
    input  wire [31:0]       band_step,
    // output FIFO (read side)
    input  wire              f_valid,
    input  wire [CO*8-1:0]   f_data,
    output wire              f_pop,
    // write engine
    output wire              chunk_valid,
    input  wire              chunk_ready,
    output wire [63:0]       chunk_addr,
    output wire [7:0]        chunk_n,
    output wire [CO*8-1:0]   chunk_data,
    input  wire              engine_idle
);
    wire active;
    assign chunk_valid = active && f_valid;
    assign f_pop = chunk_valid && chunk_ready;
    assign chunk_data = f_data;
    cnn_walk #(.CO(CO)) u_walk (
        .clk(clk), .rst(rst), .start(start), .step(f_pop), .active(active), .base(base),
        .buf_c(buf_c), .out_c(out_c), .coblocks(coblocks), .bands(bands), .p_full(p_full),
        .p_last(p_last), .band_step(band_step), .addr(chunk_addr), .n(chunk_n)
    );
    assign busy = active || !engine_idle;
endmodule
`default_nettype wire
