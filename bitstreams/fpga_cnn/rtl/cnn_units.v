// fpga_cnn overlay, spec 1.0: the datapath units of cnn_accel.
//
// Every unit is combinational and states one formula of bitstreams/README.md ("Numerics",
// "Operations"); the sequencer (cnn_engine.v) registers their results. The twin
// (server/fpga_serve/hw/twin/reference.py) is the definition these must equal bit for bit.
// Arithmetic wraps at the stated widths (int32 accumulator, int64 product), as numpy's int64
// does; the compiler keeps accumulators inside int32 (README: "the compiler guarantees no
// overflow"), so the wrap is never reached by a compiled program.

`default_nettype none

// round_shift + sat8 + optional ReLU: y = clamp((value + 2^(S-1)) >>> S, -128, 127), then
// max(y, 0) when relu. Round half up (towards +infinity on exact halves), arithmetic shift.
// S is 1..62 by the spec; the unit takes S's low 6 bits (S = 0 adds nothing and shifts by 0).
module cnn_round_sat (
    input  wire signed [63:0] value,
    input  wire        [5:0]  shift,
    input  wire               relu,
    output wire signed [7:0]  y
);
    wire        [63:0] half    = (shift == 6'd0) ? 64'd0 : (64'd1 << (shift - 6'd1));
    wire signed [63:0] biased  = value + $signed(half);
    wire signed [63:0] shifted = biased >>> shift;
    wire signed [7:0]  sat     = (shifted > 64'sd127)  ? 8'sh7f :
                                 (shifted < -64'sd128) ? 8'sh80 : shifted[7:0];
    assign y = (relu && sat[7]) ? 8'sd0 : sat;
endmodule

// The requantiser of CONV, AVGPOOL and GLOBAL_AVGPOOL:
// y = sat8(round_shift((acc + bias) * M, S)), acc + bias in int32, the product in int64.
module cnn_requant (
    input  wire signed [31:0] acc,
    input  wire signed [31:0] bias,
    input  wire signed [31:0] mult,
    input  wire        [5:0]  shift,
    input  wire               relu,
    output wire signed [7:0]  y
);
    wire signed [31:0] sum     = acc + bias;
    wire signed [63:0] product = $signed({{32{sum[31]}}, sum}) * $signed({{32{mult[31]}}, mult});
    cnn_round_sat u_round (.value(product), .shift(shift), .relu(relu), .y(y));
endmodule

// One multiply-accumulate of an int8 dot product: acc_out = acc + x * w (int32).
module cnn_mac (
    input  wire signed [31:0] acc,
    input  wire signed [7:0]  x,
    input  wire signed [7:0]  w,
    output wire signed [31:0] acc_out
);
    wire signed [15:0] p = x * w;
    assign acc_out = acc + {{16{p[15]}}, p};
endmodule

// ADD: y = sat8(round_shift(a * M0 + b * M1, S)), M0 and M1 plain int32, sum in int64.
module cnn_add_unit (
    input  wire signed [7:0]  a,
    input  wire signed [7:0]  b,
    input  wire signed [31:0] m0,
    input  wire signed [31:0] m1,
    input  wire        [5:0]  shift,
    input  wire               relu,
    output wire signed [7:0]  y
);
    wire signed [39:0] pa  = $signed({{32{a[7]}}, a}) * $signed({{8{m0[31]}}, m0});
    wire signed [39:0] pb  = $signed({{32{b[7]}}, b}) * $signed({{8{m1[31]}}, m1});
    wire signed [63:0] sum = $signed({{24{pa[39]}}, pa}) + $signed({{24{pb[39]}}, pb});
    cnn_round_sat u_round (.value(sum), .shift(shift), .relu(relu), .y(y));
endmodule

// SCALE_SHIFT: y = sat8(round_shift(x * M[c] + B[c], S)), M and B int32, sum in int64.
module cnn_scale_shift_unit (
    input  wire signed [7:0]  x,
    input  wire signed [31:0] mult,
    input  wire signed [31:0] bias,
    input  wire        [5:0]  shift,
    input  wire               relu,
    output wire signed [7:0]  y
);
    wire signed [39:0] p   = $signed({{32{x[7]}}, x}) * $signed({{8{mult[31]}}, mult});
    wire signed [63:0] sum = $signed({{24{p[39]}}, p}) + $signed({{32{bias[31]}}, bias});
    cnn_round_sat u_round (.value(sum), .shift(shift), .relu(relu), .y(y));
endmodule

// Pooling step: is_max ? max(acc, x) : acc + x. For MAXPOOL, acc starts at -128 and padding
// taps bring the descriptor's pad_value; for AVGPOOL/GLOBAL_AVGPOOL acc starts at 0 and padding
// taps are zeros (counted in the window).
module cnn_pool_unit (
    input  wire               is_max,
    input  wire signed [31:0] acc,
    input  wire signed [7:0]  x,
    output wire signed [31:0] acc_out
);
    wire signed [31:0] xw = {{24{x[7]}}, x};
    assign acc_out = is_max ? ((xw > acc) ? xw : acc) : (acc + xw);
endmodule

`default_nettype wire
