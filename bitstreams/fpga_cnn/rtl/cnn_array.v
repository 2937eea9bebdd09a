// The MAC array: CI input lanes x CO output channels, int8 x int8 into exact sums, two MACs
// per multiplier. Output channels 2j and 2j+1 share the activation of lane i, so one
// multiply x_i * (w_hi * 2^S + w_lo) (an 8 x (S+8)-bit product: one DSP48E2 27x18 for
// S = 18, one DSP48E1 25x18 for S = 17) carries both; GROUP lanes are summed on it (the DSP
// cascade) and the two fields separated: the low field is exact because
// |sum of GROUP products x * w_lo| <= GROUP * 128 * 127 < 2^(S-1), which needs every weight
// in [-127, 127] (GROUP = 8 for S = 18, 4 for S = 17; the weight loader refuses -128).
// Three pipeline stages: products, group sums, separated sums over the groups.
`default_nettype none

module cnn_array #(
    parameter integer CI = 32,
    parameter integer CO = 64,
    parameter integer S = 18,           // PACK_SHIFT
    parameter integer G = 8,            // PACK_GROUP
    parameter integer PWB = S + 8       // packed weight bits
) (
    input  wire                     clk,
    input  wire [CI*8-1:0]          x,          // activations, lane i at [8i +: 8]
    input  wire [CI*(CO/2)*PWB-1:0] wp,         // packed weights, (lane i, pair j) at [(i*CO/2 + j)*PWB +: PWB]
    output wire [CO*32-1:0]         psum        // channel c at [32c +: 32]
);
    localparam integer NP = CO / 2;
    localparam integer NG = CI / G;
    localparam integer PB = PWB + 8;            // product bits
    localparam integer GB = PB + $clog2(G) + 1; // group sum bits
    reg signed [PB-1:0] prod [0:CI*NP-1];
    reg signed [GB-1:0] grp  [0:NG*NP-1];
    reg signed [31:0]   sum  [0:CO-1];

    genvar i, j, g;
    generate
        for (i = 0; i < CI; i = i + 1) begin : g_lane
            for (j = 0; j < NP; j = j + 1) begin : g_pair
                always @(posedge clk)
                    prod[i*NP + j] <= $signed(x[i*8 +: 8]) * $signed(wp[(i*NP + j)*PWB +: PWB]);
            end
        end
        for (j = 0; j < NP; j = j + 1) begin : g_pairsum
            for (g = 0; g < NG; g = g + 1) begin : g_group
                integer t;
                reg signed [GB-1:0] acc;
                always @(*) begin
                    acc = 0;
                    for (t = 0; t < G; t = t + 1)
                        acc = acc + {{(GB-PB){prod[(g*G + t)*NP + j][PB-1]}}, prod[(g*G + t)*NP + j]};
                end
                always @(posedge clk) grp[g*NP + j] <= acc;
            end
            integer u;
            reg signed [31:0] lo_sum, hi_sum;
            reg signed [GB-1:0] lo, v;
            /* verilator lint_off UNUSEDSIGNAL */
            reg signed [GB-1:0] hi;             // the high field fits 32 bits
            /* verilator lint_on UNUSEDSIGNAL */
            always @(*) begin
                lo_sum = 0;
                hi_sum = 0;
                for (u = 0; u < NG; u = u + 1) begin
                    v = grp[u*NP + j];
                    lo = {{(GB-S){v[S-1]}}, v[S-1:0]};
                    hi = (v - lo) >>> S;
                    lo_sum = lo_sum + lo[31:0];
                    hi_sum = hi_sum + hi[31:0];
                end
            end
            always @(posedge clk) begin
                sum[2*j] <= lo_sum;
                sum[2*j + 1] <= hi_sum;
            end
            assign psum[(2*j)*32 +: 32] = sum[2*j];
            assign psum[(2*j+1)*32 +: 32] = sum[2*j + 1];
        end
    endgenerate
endmodule
`default_nettype wire
