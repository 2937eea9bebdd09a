// One output channel of the core's epilogue, stages 7..15 (cnn_core.v): the accumulator update
// (first pass: from the bias, or the value for MAXPOOL; later passes: add, or keep the maximum),
// the requantiser sat8(round_shift(acc * M + A, S)) with ReLU, and the fused ADD
// sat8(round_shift(y * m0 + r * m1, s)) with ReLU. Shifts are 1..62 (the descriptor and
// constant checks guarantee it), so 6 bits of each shift are used.
`default_nettype none

module cnn_lane #(
    parameter integer ADD_DSP = 1           // 0: the ADD's int8 x int32 products without multipliers
) (
    input  wire               clk,
    // stage 6 -> 7: the accumulator update
    input  wire               is_max,
    input  wire               first,
    input  wire signed [31:0] ps,
    input  wire signed [31:0] prev,
    input  wire signed [31:0] init,
    output reg  signed [31:0] acc7,
    // stages 7..10: requantisation (constants of the pixel's channel block at each stage)
    input  wire signed [31:0] mul7,
    input  wire signed [31:0] add8,
    input  wire [5:0]         sh8,
    input  wire [5:0]         sh9,
    input  wire               relu,
    // stages 11..15: the fused ADD
    input  wire [7:0]         resb,
    input  wire               add,
    input  wire signed [31:0] m0,
    input  wire signed [31:0] m1,
    input  wire [5:0]         add_shift,
    input  wire               add_relu,
    output reg  [7:0]         z15
);
    // int8 x int32 without a multiplier cell: radix-4 Booth digits of the int8, four partial
    // products of 0, +-m, +-2m; |y x m| <= 2^38 fits 40 bits.
    function signed [39:0] booth8x32(input [7:0] y, input [31:0] m);
        integer i;
        reg signed [39:0] mm, acc, pp;
        reg [2:0] dig;
        begin
            mm = $signed({{8{m[31]}}, m});
            acc = 40'sd0;
            for (i = 0; i < 4; i = i + 1) begin
                dig = {y[2*i+1], y[2*i], (i == 0) ? 1'b0 : y[2*i-1]};
                case (dig)
                    3'b001, 3'b010: pp = mm;
                    3'b011:         pp = mm <<< 1;
                    3'b100:         pp = -(mm <<< 1);
                    3'b101, 3'b110: pp = -mm;
                    default:        pp = 40'sd0;
                endcase
                acc = acc + (pp <<< (2 * i));
            end
            booth8x32 = acc;
        end
    endfunction

    function [7:0] sat8(input signed [63:0] v, input lo_zero);
        begin
            if (v > 64'sd127) sat8 = 8'd127;
            else if (lo_zero && v < 64'sd0) sat8 = 8'd0;
            else if (v < -64'sd128) sat8 = 8'h80;
            else sat8 = v[7:0];
        end
    endfunction

    reg signed [63:0] r8, r9, r10;
    reg [7:0] y11, y12, y13, y14;
    reg signed [40:0] a12;                  // |y m0 + r m1| <= 2^39
    reg signed [41:0] a13;
    reg signed [41:0] a14;
    reg add_zero13, add_zero14;             // a shift >= 41 leaves 0 (see below)
    wire signed [63:0] rnd8 = 64'sd1 <<< (sh8 - 6'd1);
    wire signed [41:0] add_rnd = (add_shift <= 6'd41) ? (42'sd1 <<< (add_shift - 6'd1)) : 42'sd0;
    always @(posedge clk) begin
        acc7 <= is_max ? ((first || ps > prev) ? ps : prev) : ((first ? init : prev) + ps);
        r8 <= $signed({{32{acc7[31]}}, acc7}) * $signed({{32{mul7[31]}}, mul7});
        r9 <= r8 + $signed({{32{add8[31]}}, add8}) + rnd8;
        r10 <= r9 >>> sh9;
        y11 <= sat8(r10, relu);
        if (ADD_DSP != 0)
            a12 <= $signed({{33{y11[7]}}, y11}) * $signed({{9{m0[31]}}, m0})
                 + $signed({{33{resb[7]}}, resb}) * $signed({{9{m1[31]}}, m1});
        else
            a12 <= booth8x32(y11, m0) + booth8x32(resb, m1);
        y12 <= y11;
        // round_shift(v, s) with |v| < 2^40 is 0 for every s >= 41: v + 2^(s-1) lies in
        // (0, 2^s); below, 42 bits hold v + 2^(s-1).
        a13 <= $signed({a12[40], a12}) + add_rnd;
        add_zero13 <= (add_shift >= 6'd41);
        y13 <= y12;
        a14 <= a13 >>> add_shift;
        add_zero14 <= add_zero13;
        y14 <= y13;
        z15 <= !add ? y14 : (add_zero14 ? 8'd0 : sat8($signed({{22{a14[41]}}, a14}), add_relu));
    end
endmodule
`default_nettype wire
