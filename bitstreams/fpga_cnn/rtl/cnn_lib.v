// Library: FIFOs used across the accelerator, and the input buffer's bank memory.
`default_nettype none

// First-word-fall-through FIFO on a synchronous-read memory (maps to BRAM/URAM or LUT RAM).
// count = entries held (memory + output register); dout is valid while valid is high.
module cnn_fifo #(
    parameter integer W = 8,
    parameter integer AW = 4            // depth = 2^AW (+1 in the output register)
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          push,
    input  wire [W-1:0]  din,
    output wire          full,
    input  wire          pop,
    output reg  [W-1:0]  dout,
    output reg           valid,
    output wire [AW+1:0] count
);
    localparam integer DEPTH = 1 << AW;
    reg [W-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] wp, rp;
    reg [AW:0] mcount;
    wire take = valid && pop;
    wire load = (mcount != 0) && (!valid || take);
    assign full = (mcount == DEPTH[AW:0]);
    assign count = {1'b0, mcount} + {{(AW+1){1'b0}}, valid};
    always @(posedge clk) begin
        if (push) mem[wp] <= din;
        if (load) dout <= mem[rp];
    end
    always @(posedge clk) begin
        if (rst) begin
            wp <= 0; rp <= 0; mcount <= 0; valid <= 1'b0;
        end else begin
            if (push) wp <= wp + 1'b1;
            if (load) rp <= rp + 1'b1;
            mcount <= mcount + {{AW{1'b0}}, push} - {{AW{1'b0}}, load};
            if (load) valid <= 1'b1;
            else if (take) valid <= 1'b0;
        end
    end
endmodule

// Small FIFO in registers with a combinational head (for bookkeeping entries).
module cnn_rfifo #(
    parameter integer W = 8,
    parameter integer AW = 2
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          push,
    input  wire [W-1:0]  din,
    output wire          full,
    input  wire          pop,
    output wire [W-1:0]  dout,
    output wire          valid,
    output reg  [AW:0]   count
);
    localparam integer DEPTH = 1 << AW;
    reg [W-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] wp, rp;
    assign full = (count == DEPTH[AW:0]);
    assign valid = (count != 0);
    assign dout = mem[rp];
    wire do_pop = pop && valid;
    always @(posedge clk) begin
        if (push) mem[wp] <= din;
    end
    always @(posedge clk) begin
        if (rst) begin
            wp <= 0; rp <= 0; count <= 0;
        end else begin
            if (push) wp <= wp + 1'b1;
            if (do_pop) rp <= rp + 1'b1;
            count <= count + {{AW{1'b0}}, push} - {{AW{1'b0}}, do_pop};
        end
    end
endmodule
// An input-buffer bank: WORDS words of W bits, one write and one registered read a cycle.
// A URAM288 holds 4096 words deep, so WORDS above a multiple of 4096 would take a whole
// URAM column more: the words from HI = WORDS - WORDS % 4096 on (when WORDS is above 4096 and
// not a multiple of it) are a memory of their own in block RAM. The zcu104 bank of 13,312 words
// is thus 3 URAMs deep plus 1,024 words of BRAM, not 4 URAMs deep.
module cnn_ibank #(
    parameter integer W = 512,
    parameter integer AW = 14,
    parameter integer WORDS = 16384
) (
    input  wire          clk,
    input  wire          we,
    input  wire [AW-1:0] waddr,
    input  wire [W-1:0]  wdata,
    input  wire [AW-1:0] raddr,
    output wire [W-1:0]  q
);
    localparam integer HI = (WORDS > 4096) ? WORDS - WORDS % 4096 : WORDS;
    localparam integer LO = WORDS - HI;             // < 4096
    localparam integer LAW = (LO > 1) ? $clog2(LO) : 1;
    reg [W-1:0] mem [0:HI-1];
    reg [W-1:0] q_hi;
    /* verilator lint_off WIDTH */
    wire w_lo = (LO > 0) && (waddr >= HI);
    /* verilator lint_on WIDTH */
    always @(posedge clk) begin
        if (we && !w_lo) mem[waddr] <= wdata;
        q_hi <= mem[raddr];
    end
    generate
        if (LO > 0) begin : g_lo
            // HI is a multiple of 4096 >= 2^LAW: word HI + i is at i = address[LAW-1:0]
            (* ram_style = "block" *) reg [W-1:0] mem_lo [0:(1<<LAW)-1];
            reg [W-1:0] q_lo;
            reg         sel;
            /* verilator lint_off WIDTH */
            always @(posedge clk) begin
                if (we && w_lo) mem_lo[waddr[LAW-1:0]] <= wdata;
                q_lo <= mem_lo[raddr[LAW-1:0]];
                sel <= (raddr >= HI);
            end
            /* verilator lint_on WIDTH */
            assign q = sel ? q_lo : q_hi;
        end else begin : g_one
            assign q = q_hi;
        end
    endgenerate
endmodule
`default_nettype wire
