// fpga_cnn overlay, spec 1.0: the sequencer of cnn_accel.
//
// On start it fetches DESC_COUNT 64-byte descriptors from desc_addr, one at a time, checks and
// decodes each, and executes it for `batch` images: a plain sequential engine that loops over
// images, output rows, output columns and output channels, and for each output element over
// the kernel taps (and input channels for CONV), reading activations and weights through the
// memory port and writing the int8 result back. Throughput is not a goal; one memory access is
// in flight at a time.
//
// Memory port (a simple master, not AXI4): 32-bit words at byte addresses with addr[1:0] = 0.
// The engine raises mem_req with mem_addr/mem_we/mem_wdata/mem_wstrb and holds them until the
// memory answers mem_ready (in the same cycle or later); for a read, mem_rdata is valid in the
// cycle mem_req && mem_ready. Bytes are little-endian within a word. Writes are single bytes
// (one-hot mem_wstrb). mem_err, valid with mem_ready, says the access failed (the AXI4 adapter,
// cnn_axi_master.v, raises it for an SLVERR or DECERR response; tie it low for a memory that
// cannot fail).
//
// Errors end the run with `error` and err_code: 1 bad opcode; 2 bad address (descriptor region
// or an int32 constant not 4-byte aligned); 3 bad descriptor (zero sizes or stride, a channel
// slice outside its buffer, an output shape the input, kernel, stride and padding do not give);
// 4 bus error (a memory access answered with mem_err).

`default_nettype none

module cnn_engine (
    input  wire        clk,
    input  wire        rst_n,
    input  wire        start,        // one-cycle pulse: begin a run (ignored while busy)
    input  wire        abort,        // one-cycle pulse: soft reset (stop, clear status)
    input  wire [63:0] desc_addr,
    input  wire [31:0] desc_count,
    input  wire [63:0] act_addr,
    input  wire [63:0] wgt_addr,
    input  wire [31:0] batch,
    output reg         busy,
    output reg         done,
    output reg         error,
    output reg  [2:0]  err_code,
    output reg  [63:0] cycles,
    // memory port
    output reg         mem_req,
    output reg         mem_we,
    output reg  [63:0] mem_addr,
    output reg  [31:0] mem_wdata,
    output reg  [3:0]  mem_wstrb,
    input  wire        mem_ready,
    input  wire [31:0] mem_rdata,
    input  wire        mem_err
);
    localparam [7:0] OP_CONV = 8'd1, OP_MAXPOOL = 8'd2, OP_AVGPOOL = 8'd3,
                     OP_GAP = 8'd4, OP_ADD = 8'd5, OP_SCALE_SHIFT = 8'd6;
    localparam [2:0] ERR_OPCODE = 3'd1, ERR_ADDRESS = 3'd2, ERR_DESCRIPTOR = 3'd3,
                     ERR_BUS = 3'd4;

    localparam [3:0] S_IDLE = 4'd0, S_FETCH = 4'd1, S_DECODE = 4'd2, S_ELEM = 4'd3,
                     S_LOADK = 4'd4, S_TAP = 4'd5, S_TAP_W = 4'd6, S_UPD = 4'd7,
                     S_READ_A = 4'd8, S_READ_B = 4'd9, S_FINISH = 4'd10, S_NEXT_ELEM = 4'd11,
                     S_NEXT_DESC = 4'd12, S_WAIT = 4'd13;
    // where the word of a finished read goes
    localparam [2:0] D_NONE = 3'd0, D_DESC = 3'd1, D_K = 3'd2, D_X = 3'd3, D_B = 3'd4,
                     D_W = 3'd5;
    // which activation tensor the address generator points at
    localparam [1:0] T_IN0 = 2'd0, T_IN1 = 2'd1, T_OUT = 2'd2;

    reg [3:0]  state, ret_state;
    reg [2:0]  dest;
    reg [1:0]  lane;

    // ---- the current descriptor: 16 little-endian words (spec.json "descriptor") ----------
    reg [31:0] desc [0:15];
    reg [31:0] desc_index;
    reg [4:0]  word_index;

    wire [7:0]  opcode    = desc[0][7:0];
    wire        relu      = desc[0][8];          // flags bit 0: RELU
    wire [7:0]  kernel_h  = desc[0][23:16];
    wire [7:0]  kernel_w  = desc[0][31:24];
    wire [7:0]  stride    = desc[1][7:0];
    wire [7:0]  pad_top   = desc[1][15:8];
    wire [7:0]  pad_bot   = desc[1][23:16];
    wire [7:0]  pad_left  = desc[1][31:24];
    wire [7:0]  pad_right = desc[2][7:0];
    wire [7:0]  pad_value = desc[2][15:8];
    wire [31:0] in0_off   = desc[3];
    wire [9:0]  in_h      = desc[4][31:22];      // in0_hwc: height << 22 | width << 12 | C
    wire [9:0]  in_w      = desc[4][21:12];
    wire [11:0] in_c      = desc[4][11:0];
    wire [15:0] in0_bufc  = desc[5][31:16];      // in0_slice: buffer_channels << 16 | offset
    wire [15:0] in0_choff = desc[5][15:0];
    wire [31:0] in1_off   = desc[6];
    wire [15:0] in1_bufc  = desc[7][31:16];
    wire [15:0] in1_choff = desc[7][15:0];
    wire [31:0] out_off   = desc[8];
    wire [9:0]  out_h     = desc[9][31:22];
    wire [9:0]  out_w     = desc[9][21:12];
    wire [11:0] out_c     = desc[9][11:0];
    wire [15:0] out_bufc  = desc[10][31:16];
    wire [15:0] out_choff = desc[10][15:0];
    wire [31:0] weight_off = desc[11];
    wire [31:0] bias_off  = desc[12];
    wire [31:0] mult_off  = desc[13];
    wire [31:0] shift_off = desc[14];

    wire is_conv = opcode == OP_CONV;
    wire is_max  = opcode == OP_MAXPOOL;
    wire is_avg  = opcode == OP_AVGPOOL;
    wire is_gap  = opcode == OP_GAP;
    wire is_add  = opcode == OP_ADD;
    wire is_ss   = opcode == OP_SCALE_SHIFT;
    wire is_window = is_conv || is_max || is_avg;
    wire is_elementwise = is_add || is_ss;

    // ---- descriptor checks (S_DECODE) ---------------------------------------------------------
    wire        op_known = is_window || is_gap || is_elementwise;
    wire [10:0] padded_h = {1'b0, in_h} + {3'b0, pad_top} + {3'b0, pad_bot};
    wire [10:0] padded_w = {1'b0, in_w} + {3'b0, pad_left} + {3'b0, pad_right};
    // out = floor((padded - k) / s) + 1  <=>  (out - 1) s + k <= padded < out s + k
    wire [19:0] span_h_lo = ({10'b0, out_h} - 20'd1) * {12'b0, stride} + {12'b0, kernel_h};
    wire [19:0] span_h_hi = {10'b0, out_h} * {12'b0, stride} + {12'b0, kernel_h};
    wire [19:0] span_w_lo = ({10'b0, out_w} - 20'd1) * {12'b0, stride} + {12'b0, kernel_w};
    wire [19:0] span_w_hi = {10'b0, out_w} * {12'b0, stride} + {12'b0, kernel_w};
    wire window_ok = kernel_h != 8'd0 && kernel_w != 8'd0 && stride != 8'd0
                     && span_h_lo <= {9'b0, padded_h} && {9'b0, padded_h} < span_h_hi
                     && span_w_lo <= {9'b0, padded_w} && {9'b0, padded_w} < span_w_hi;
    wire sizes_ok = in_h != 10'd0 && in_w != 10'd0 && in_c != 12'd0
                    && out_h != 10'd0 && out_w != 10'd0 && out_c != 12'd0;
    wire slices_ok = {4'b0, in0_choff} + {8'b0, in_c} <= {4'b0, in0_bufc}
                     && {4'b0, out_choff} + {8'b0, out_c} <= {4'b0, out_bufc}
                     && (!is_add || {4'b0, in1_choff} + {8'b0, in_c} <= {4'b0, in1_bufc});
    wire shape_ok = is_conv ? window_ok
                  : (is_max || is_avg) ? (window_ok && out_c == in_c)
                  : is_gap ? (out_h == 10'd1 && out_w == 10'd1 && out_c == in_c)
                  : (out_h == in_h && out_w == in_w && out_c == in_c);
    wire desc_ok = sizes_ok && slices_ok && shape_ok;

    // ---- loop counters and the effective window (GLOBAL_AVGPOOL: the whole input) -----------
    reg [31:0] n;
    reg [9:0]  oy, ox, ky, kx;
    reg [11:0] co, ci;
    reg [9:0]  win_h, win_w;
    reg [7:0]  win_stride, win_top, win_left;

    // input position of the current tap, and whether it falls inside the input (else padding)
    wire [18:0] pos_y  = {9'b0, oy} * {11'b0, win_stride} + {9'b0, ky};
    wire [18:0] pos_x  = {9'b0, ox} * {11'b0, win_stride} + {9'b0, kx};
    wire [18:0] tap_y  = pos_y - {11'b0, win_top};
    wire [18:0] tap_x  = pos_x - {11'b0, win_left};
    wire        in_bounds = pos_y >= {11'b0, win_top} && tap_y < {9'b0, in_h}
                         && pos_x >= {11'b0, win_left} && tap_x < {9'b0, in_w};

    // ---- the activation address generator: one NHWC element of a channel slice --------------
    // byte = act_addr + buffer offset + ((n * H + y) * W + x) * buffer_channels + offset + c
    reg  [1:0]  tsel;
    always @(*) begin
        tsel = T_IN0;
        if (state == S_READ_B) tsel = T_IN1;
        else if (state == S_FINISH) tsel = T_OUT;
    end
    wire [31:0] t_off   = tsel == T_IN0 ? in0_off : tsel == T_IN1 ? in1_off : out_off;
    wire [9:0]  t_h     = tsel == T_OUT ? out_h : in_h;
    wire [9:0]  t_w     = tsel == T_OUT ? out_w : in_w;
    wire [15:0] t_bufc  = tsel == T_IN0 ? in0_bufc : tsel == T_IN1 ? in1_bufc : out_bufc;
    wire [15:0] t_choff = tsel == T_IN0 ? in0_choff : tsel == T_IN1 ? in1_choff : out_choff;
    wire [9:0]  t_y     = tsel == T_IN0 ? tap_y[9:0] : oy;
    wire [9:0]  t_x     = tsel == T_IN0 ? tap_x[9:0] : ox;
    wire [11:0] t_c     = (tsel == T_IN0 && is_conv) ? ci : co;
    wire [31:0] t_pixel = (n * {22'b0, t_h} + {22'b0, t_y}) * {22'b0, t_w} + {22'b0, t_x};
    wire [31:0] t_index = t_off + t_pixel * {16'b0, t_bufc} + {16'b0, t_choff} + {20'b0, t_c};
    wire [63:0] t_addr  = act_addr + {32'b0, t_index};

    // CONV weights, HWIO: weight_offset + ((ky * k_w + kx) * C_in + ci) * C_out + co
    wire [31:0] w_index = (({22'b0, ky} * {24'b0, kernel_w} + {22'b0, kx}) * {20'b0, in_c}
                           + {20'b0, ci}) * {20'b0, out_c} + {20'b0, co};
    wire [63:0] w_addr  = wgt_addr + {32'b0, weight_off} + {32'b0, w_index};

    // int32 constants: k[0] bias (CONV, SCALE_SHIFT) or M1 (ADD); k[1] multiplier (M0 for
    // ADD); k[2] shift. Per output channel where the op has one per channel.
    reg  [1:0]  k_index;
    reg  [31:0] k0, k1;
    /* verilator lint_off UNUSEDSIGNAL */
    reg  [31:0] k2;  // the shift: only its low 6 bits are used (S is 1..62)
    /* verilator lint_on UNUSEDSIGNAL */
    wire [33:0] c4 = {20'b0, co, 2'b00};
    wire        k_used = k_index == 2'd0 ? (is_conv || is_add || is_ss)
                       : k_index == 2'd1 ? (is_conv || is_avg || is_gap || is_add || is_ss)
                       : !is_max;
    wire [33:0] k_rel = k_index == 2'd0 ? (is_add ? {2'b0, mult_off} + 34'd4
                                                  : {2'b0, bias_off} + c4)
                      : k_index == 2'd1 ? ((is_conv || is_ss) ? {2'b0, mult_off} + c4
                                                              : {2'b0, mult_off})
                      : (is_conv ? {2'b0, shift_off} + c4 : {2'b0, shift_off});
    wire [63:0] k_addr = wgt_addr + {30'b0, k_rel};

    // ---- datapath -------------------------------------------------------------------------
    reg  signed [31:0] acc;
    reg  signed [7:0]  xv, bv, wv;
    wire signed [31:0] mac_out, pool_out;
    wire signed [7:0]  rq_out, add_out, ss_out;
    cnn_mac u_mac (.acc(acc), .x(xv), .w(wv), .acc_out(mac_out));
    cnn_pool_unit u_pool (.is_max(is_max), .acc(acc), .x(xv), .acc_out(pool_out));
    cnn_requant u_requant (.acc(acc), .bias(is_conv ? k0 : 32'd0), .mult(k1), .shift(k2[5:0]),
                           .relu(is_conv && relu), .y(rq_out));
    cnn_add_unit u_add (.a(xv), .b(bv), .m0(k1), .m1(k0), .shift(k2[5:0]), .relu(relu),
                        .y(add_out));
    cnn_scale_shift_unit u_ss (.x(xv), .mult(k1), .bias(k0), .shift(k2[5:0]), .relu(relu),
                               .y(ss_out));
    wire [7:0] result = is_max ? acc[7:0] : is_add ? add_out : is_ss ? ss_out : rq_out;

    wire [7:0] read_byte = mem_rdata[{lane, 3'b000} +: 8];
    wire       last_tap_c = !is_conv || ci == in_c - 12'd1;

    integer i;

    task automatic issue_read(input [63:0] addr, input [2:0] to, input [3:0] then_state);
        begin
            mem_req   <= 1'b1;
            mem_we    <= 1'b0;
            mem_addr  <= {addr[63:2], 2'b00};
            mem_wstrb <= 4'b0000;
            lane      <= addr[1:0];
            dest      <= to;
            ret_state <= then_state;
            state     <= S_WAIT;
        end
    endtask

    task automatic fail(input [2:0] code);
        begin
            busy     <= 1'b0;
            error    <= 1'b1;
            err_code <= code;
            state    <= S_IDLE;
        end
    endtask

    always @(posedge clk) begin
        if (!rst_n) begin
            state <= S_IDLE; ret_state <= S_IDLE; dest <= D_NONE; lane <= 2'd0;
            busy <= 1'b0; done <= 1'b0; error <= 1'b0; err_code <= 3'd0; cycles <= 64'd0;
            mem_req <= 1'b0; mem_we <= 1'b0; mem_addr <= 64'd0; mem_wdata <= 32'd0;
            mem_wstrb <= 4'd0;
            desc_index <= 32'd0; word_index <= 5'd0; k_index <= 2'd0;
            n <= 32'd0; oy <= 10'd0; ox <= 10'd0; ky <= 10'd0; kx <= 10'd0;
            co <= 12'd0; ci <= 12'd0;
            win_h <= 10'd0; win_w <= 10'd0; win_stride <= 8'd0; win_top <= 8'd0;
            win_left <= 8'd0;
            k0 <= 32'd0; k1 <= 32'd0; k2 <= 32'd0; acc <= 32'd0;
            xv <= 8'd0; bv <= 8'd0; wv <= 8'd0;
            for (i = 0; i < 16; i = i + 1) desc[i] <= 32'd0;
        end else if (start && (abort || state == S_IDLE)) begin
            // START (also right after a SOFT_RESET in the same write)
            mem_req <= 1'b0;
            busy <= 1'b1; done <= 1'b0; error <= 1'b0; err_code <= 3'd0; cycles <= 64'd0;
            desc_index <= 32'd0; word_index <= 5'd0;
            if (desc_addr[1:0] != 2'b00) fail(ERR_ADDRESS);
            else if (desc_count == 32'd0) begin busy <= 1'b0; done <= 1'b1; end
            else state <= S_FETCH;
        end else if (abort) begin
            mem_req <= 1'b0;
            busy <= 1'b0; done <= 1'b0; error <= 1'b0; err_code <= 3'd0;
            state <= S_IDLE;
        end else begin
            if (busy) cycles <= cycles + 64'd1;
            case (state)
                S_IDLE: ;

                S_FETCH:
                    if (word_index == 5'd16) state <= S_DECODE;
                    else issue_read(desc_addr + {26'b0, desc_index, 6'b0} + {57'b0, word_index, 2'b00},
                                    D_DESC, S_FETCH);

                S_DECODE:
                    if (!op_known) fail(ERR_OPCODE);
                    else if (!desc_ok) fail(ERR_DESCRIPTOR);
                    else begin
                        win_h      <= is_gap ? in_h : is_elementwise ? 10'd1 : {2'b0, kernel_h};
                        win_w      <= is_gap ? in_w : is_elementwise ? 10'd1 : {2'b0, kernel_w};
                        win_stride <= is_window ? stride : 8'd1;
                        win_top    <= is_window ? pad_top : 8'd0;
                        win_left   <= is_window ? pad_left : 8'd0;
                        n <= 32'd0; oy <= 10'd0; ox <= 10'd0; co <= 12'd0;
                        state <= (batch == 32'd0) ? S_NEXT_DESC : S_ELEM;
                    end

                S_ELEM: begin  // a new output element (n, oy, ox, co): load its constants
                    k_index <= 2'd0;
                    state <= S_LOADK;
                end

                S_LOADK:
                    if (k_index == 2'd3 || (k_index == 2'd2 && !k_used)) begin
                        acc <= is_max ? -32'sd128 : 32'sd0;
                        ky <= 10'd0; kx <= 10'd0; ci <= 12'd0;
                        state <= is_elementwise ? S_READ_A : S_TAP;
                    end else if (!k_used) k_index <= k_index + 2'd1;
                    else if (k_addr[1:0] != 2'b00) fail(ERR_ADDRESS);
                    else issue_read(k_addr, D_K, S_LOADK);

                S_TAP:
                    if (in_bounds) issue_read(t_addr, D_X, is_conv ? S_TAP_W : S_UPD);
                    else begin  // padding: zeros, or MAXPOOL's pad_value
                        xv <= is_max ? pad_value : 8'd0;
                        state <= S_UPD;
                    end

                S_TAP_W: issue_read(w_addr, D_W, S_UPD);

                S_UPD: begin
                    acc <= is_conv ? mac_out : pool_out;
                    if (!last_tap_c) begin
                        ci <= ci + 12'd1;
                        state <= S_TAP;
                    end else begin
                        ci <= 12'd0;
                        if (kx != win_w - 10'd1) begin
                            kx <= kx + 10'd1;
                            state <= S_TAP;
                        end else begin
                            kx <= 10'd0;
                            if (ky != win_h - 10'd1) begin
                                ky <= ky + 10'd1;
                                state <= S_TAP;
                            end else state <= S_FINISH;
                        end
                    end
                end

                S_READ_A: issue_read(t_addr, D_X, is_add ? S_READ_B : S_FINISH);

                S_READ_B: issue_read(t_addr, D_B, S_FINISH);

                S_FINISH: begin  // write the element's int8 result
                    mem_req   <= 1'b1;
                    mem_we    <= 1'b1;
                    mem_addr  <= {t_addr[63:2], 2'b00};
                    mem_wdata <= {4{result}};
                    mem_wstrb <= 4'b0001 << t_addr[1:0];
                    dest      <= D_NONE;
                    ret_state <= S_NEXT_ELEM;
                    state     <= S_WAIT;
                end

                S_NEXT_ELEM:
                    if (co != out_c - 12'd1) begin
                        co <= co + 12'd1;
                        state <= S_ELEM;
                    end else begin
                        co <= 12'd0;
                        state <= S_ELEM;
                        if (ox != out_w - 10'd1) ox <= ox + 10'd1;
                        else begin
                            ox <= 10'd0;
                            if (oy != out_h - 10'd1) oy <= oy + 10'd1;
                            else begin
                                oy <= 10'd0;
                                if (n != batch - 32'd1) n <= n + 32'd1;
                                else state <= S_NEXT_DESC;
                            end
                        end
                    end

                S_NEXT_DESC:
                    if (desc_index == desc_count - 32'd1) begin
                        busy <= 1'b0;
                        done <= 1'b1;
                        state <= S_IDLE;
                    end else begin
                        desc_index <= desc_index + 32'd1;
                        word_index <= 5'd0;
                        state <= S_FETCH;
                    end

                S_WAIT:
                    if (mem_ready && mem_err) begin  // the access failed: end the run
                        mem_req <= 1'b0;
                        mem_we <= 1'b0;
                        fail(ERR_BUS);
                    end else if (mem_ready) begin
                        mem_req <= 1'b0;
                        mem_we <= 1'b0;
                        state <= ret_state;
                        case (dest)
                            D_DESC: begin
                                desc[word_index[3:0]] <= mem_rdata;
                                word_index <= word_index + 5'd1;
                            end
                            D_K: begin
                                if (k_index == 2'd0) k0 <= mem_rdata;
                                else if (k_index == 2'd1) k1 <= mem_rdata;
                                else k2 <= mem_rdata;
                                k_index <= k_index + 2'd1;
                            end
                            D_X: xv <= read_byte;
                            D_B: bv <= read_byte;
                            D_W: wv <= read_byte;
                            default: ;
                        endcase
                    end

                default: state <= S_IDLE;
            endcase
        end
    end
endmodule

`default_nettype wire
