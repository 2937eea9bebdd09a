// Testbench for the datapath units of cnn_units.v: applies vectors from +vectors=FILE
// ($readmemh, one 256-bit word per vector, +count=N of them) and writes one 32-bit hex result
// per vector to +results=FILE. Vector fields (bit ranges, packed by tests/rtl/harness.py):
//   [7:0] unit  [15:8] flag (ReLU, or is_max for the pool unit)  [23:16] shift
//   [87:24] value64  [119:88] p1  [151:120] p2  [183:152] p3  [191:184] x8  [199:192] w8
// unit 1 round_sat(value64, shift, flag); 2 requant(acc p1, bias p2, mult p3, shift, flag);
// 3 mac(acc p1, x8, w8); 4 add(a x8, b w8, m0 p1, m1 p2, shift, flag);
// 5 scale_shift(x8, mult p1, bias p2, shift, flag); 6 pool(is_max flag, acc p1, x8).
`timescale 1ns / 1ps
`default_nettype none

module tb_units;
    reg  [255:0] vectors [0:65535];
    reg  [255:0] v;
    wire [7:0]   unit  = v[7:0];
    wire         flag  = v[8];
    wire [5:0]   shift = v[21:16];
    wire [63:0]  value = v[87:24];
    wire [31:0]  p1 = v[119:88], p2 = v[151:120], p3 = v[183:152];
    wire [7:0]   x = v[191:184], w = v[199:192];

    wire [7:0]  y_round, y_requant, y_add, y_ss;
    wire [31:0] y_mac, y_pool;
    cnn_round_sat u1 (.value(value), .shift(shift), .relu(flag), .y(y_round));
    cnn_requant u2 (.acc(p1), .bias(p2), .mult(p3), .shift(shift), .relu(flag), .y(y_requant));
    cnn_mac u3 (.acc(p1), .x(x), .w(w), .acc_out(y_mac));
    cnn_add_unit u4 (.a(x), .b(w), .m0(p1), .m1(p2), .shift(shift), .relu(flag), .y(y_add));
    cnn_scale_shift_unit u5 (.x(x), .mult(p1), .bias(p2), .shift(shift), .relu(flag),
                             .y(y_ss));
    cnn_pool_unit u6 (.is_max(flag), .acc(p1), .x(x), .acc_out(y_pool));

    reg [8*1024-1:0] vector_file, result_file;
    integer count, i, fd;
    reg [31:0] result;

    initial begin
        if (!$value$plusargs("vectors=%s", vector_file)) $fatal(1, "no +vectors");
        if (!$value$plusargs("results=%s", result_file)) $fatal(1, "no +results");
        if (!$value$plusargs("count=%d", count)) $fatal(1, "no +count");
        $readmemh(vector_file, vectors, 0, count - 1);
        fd = $fopen(result_file, "w");
        for (i = 0; i < count; i = i + 1) begin
            v = vectors[i];
            #1;
            case (unit)
                8'd1: result = {24'd0, y_round};
                8'd2: result = {24'd0, y_requant};
                8'd3: result = y_mac;
                8'd4: result = {24'd0, y_add};
                8'd5: result = {24'd0, y_ss};
                8'd6: result = y_pool;
                default: result = 32'hxxxxxxxx;
            endcase
            $fdisplay(fd, "%h", result);
        end
        $fclose(fd);
        $finish;
    end
endmodule

`default_nettype wire
