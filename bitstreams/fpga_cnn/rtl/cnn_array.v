// The MAC array: CI input lanes x CO output channels, int8 x int8 into exact sums, two MACs
// per multiplier. Output channels 2j and 2j+1 share the activation of lane i, so one
// multiply x_i * (w_hi * 2^S + w_lo) (an 8 x (S+8)-bit product: one DSP48E2 27x18 for
// S = 18, one DSP48E1 25x18 for S = 17) carries both; GROUP lanes are summed on it (the DSP
// cascade) and the two fields separated: the low field is exact because
// |sum of GROUP products x * w_lo| <= GROUP * 128 * 127 < 2^(S-1), which needs every weight
// in [-127, 127] (GROUP = 8 for S = 18, 4 for S = 17; the weight loader refuses -128).
// Three pipeline stages: products, group sums, separated sums over the groups.
//
// Every sum is a balanced tree of two-input adders, each a module instance of its own
// (cnn_add, cnn_sum): within one module yosys's alumacc merges a chain of additions into one
// $macc and maps it as a carry-save tree in LUTs, about three times the LUTs of the carry-chain
// adders the tree maps to (a group of 8 products, yosys 0.23 synth_xilinx -family xcup: 726
// LUTs and 504 MUXF as one expression, 242 LUTs as a tree of cnn_add).
`default_nettype none

// s = a + b, exact (one bit wider).
module cnn_add #(
    parameter integer W = 8
) (
    input  wire signed [W-1:0] a,
    input  wire signed [W-1:0] b,
    output wire signed [W:0]   s
);
    assign s = a + b;
endmodule

// The exact sum of N signed W-bit operands (operand k at [k*W +: W]) in OW >= W + clog2(N)
// bits: a balanced tree of cnn_add.
module cnn_sum #(
    parameter integer N = 8,
    parameter integer W = 8,
    parameter integer OW = W + $clog2(N)
) (
    input  wire [N*W-1:0]       x,
    output wire signed [OW-1:0] s
);
    generate
        if (N == 1) begin : g_leaf
            wire signed [W-1:0] xs = x;
            assign s = xs;                      // sign-extended
        end else begin : g_node
            // both halves (N/2 and N - N/2 operands) fit OW - 1 bits: clog2(ceil(N/2)) = clog2(N) - 1
            localparam integer NA = N / 2;
            wire signed [OW-2:0] a, b;
            cnn_sum #(.N(NA), .W(W), .OW(OW - 1)) u_a (.x(x[NA*W-1:0]), .s(a));
            cnn_sum #(.N(N - NA), .W(W), .OW(OW - 1)) u_b (.x(x[N*W-1:NA*W]), .s(b));
            cnn_add #(.W(OW - 1)) u_add (.a(a), .b(b), .s(s));
        end
    endgenerate
endmodule

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
    // The group sums: a tree of cnn_add for DSP48E2 builds (S = 18), where yosys keeps them in
    // fabric; one expression for DSP48E1 builds (S = 17), which yosys packs into the DSP48E1s'
    // post-adders and cascade (16 x 16, G = 4: 1,974 LUTs for the array, 4,232 as a tree).
    localparam integer TREE = (S == 18) ? 1 : 0;
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
            // the two fields of each group sum v: lo = v[S-1:0] as a signed S-bit value,
            // hi = (v - lo) >> S = v[GB-1:S] + v[S-1]
            wire [NG*S-1:0]        los;
            wire [NG*(GB-S+1)-1:0] his;
            for (g = 0; g < NG; g = g + 1) begin : g_group
                wire [G*PB-1:0] ps;
                for (i = 0; i < G; i = i + 1) begin : g_tap
                    assign ps[i*PB +: PB] = prod[(g*G + i)*NP + j];
                end
                if (TREE) begin : g_tree
                    wire signed [GB-1:0] acc;
                    cnn_sum #(.N(G), .W(PB), .OW(GB)) u_grp (.x(ps), .s(acc));
                    always @(posedge clk) grp[g*NP + j] <= acc;
                end else begin : g_chain
                    integer t;
                    reg signed [GB-1:0] acc;
                    always @(*) begin
                        acc = 0;
                        for (t = 0; t < G; t = t + 1)
                            acc = acc + $signed(ps[t*PB +: PB]);
                    end
                    always @(posedge clk) grp[g*NP + j] <= acc;
                end
                wire signed [GB-1:0] v = grp[g*NP + j];
                assign los[g*S +: S] = v[S-1:0];
                assign his[g*(GB-S+1) +: GB-S+1] = $signed({v[GB-1], v[GB-1:S]}) + $signed({1'b0, v[S-1]});
            end
            wire signed [S+$clog2(NG)-1:0]     lo_sum;   // both fit 32 bits: the fields' exact sums
            wire signed [GB-S+$clog2(NG):0]    hi_sum;
            cnn_sum #(.N(NG), .W(S)) u_lo (.x(los), .s(lo_sum));
            cnn_sum #(.N(NG), .W(GB-S+1)) u_hi (.x(his), .s(hi_sum));
            /* verilator lint_off WIDTH */      // sign-extended to 32 bits
            always @(posedge clk) begin
                sum[2*j] <= lo_sum;
                sum[2*j + 1] <= hi_sum;
            end
            /* verilator lint_on WIDTH */
            assign psum[(2*j)*32 +: 32] = sum[2*j];
            assign psum[(2*j+1)*32 +: 32] = sum[2*j + 1];
        end
    endgenerate
endmodule
`default_nettype wire
