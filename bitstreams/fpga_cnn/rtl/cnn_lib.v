// Library: FIFOs used across the accelerator.
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
`default_nettype wire
