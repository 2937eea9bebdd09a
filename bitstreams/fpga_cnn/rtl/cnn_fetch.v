// Fetch: reads each image's descriptors in order, checks each one (cnn_check) and queues it
// for the sequencer; a good one's weight segment is then streamed (once per band) into the
// weight FIFO, as far ahead of the core as the FIFO allows, across descriptors. The stream
// is cut into blocks spread over NWP read ports (block b on port b mod NWP) and merged back in
// order. A bad descriptor is queued with its error code and fetching stops there.
`default_nettype none
`include "cnn_spec.vh"
`include "cnn_derived.vh"

module cnn_fetch #(
    parameter integer CI = 32,
    parameter integer CO = 64,
    parameter integer DB = 16,
    parameter integer NWP = 2,
    parameter integer BLK = 1024,           // bytes per block
    parameter integer PFA = 7,              // log2 port FIFO words
    parameter integer WFA = 14,             // log2 weight FIFO words
    parameter integer ACC_DEPTH = 2048,
    parameter integer IBUF_WORDS = 16384,
    parameter integer BANKS = 2
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire                    start,
    input  wire [63:0]             desc_addr,
    input  wire [31:0]             desc_count,
    input  wire [63:0]             wgt_addr,
    input  wire [31:0]             batch,
    input  wire [95:0]             region_bytes,
    input  wire [31:0]             wgt_bytes,
    // read ports
    output wire [NWP-1:0]          cmd_valid,
    input  wire [NWP-1:0]          cmd_ready,
    output wire [64*NWP-1:0]       cmd_addr,
    output wire [32*NWP-1:0]       cmd_bytes,
    input  wire [NWP-1:0]          dvalid,
    output wire [NWP-1:0]          dready,
    input  wire [DB*8*NWP-1:0]     ddata,
    // weight FIFO (read side)
    output wire                    wf_valid,
    output wire [CO*8-1:0]         wf_data,
    input  wire                    wf_pop,
    // descriptor queue (read side)
    output wire                    q_valid,
    output wire [`DESC_BITS-1:0]   q_desc,
    output wire [2:0]              q_code,
    output wire [`DERIVED_BITS-1:0] q_derived,
    output wire [31:0]             q_index,
    output wire [31:0]             q_image,
    input  wire                    q_pop,
    output reg  [31:0]             fetch_index
);
    localparam integer DW = CO / DB;                // beats per word
    localparam integer DESC_WORDS = 128 / CO;
    localparam integer LCO = $clog2(CO);
    localparam integer PW = (NWP > 1) ? $clog2(NWP) : 1;

    // ---- per-port word assembly and FIFOs ---------------------------------------------------
    wire [NWP-1:0] pf_valid, pf_full;
    wire [CO*8-1:0] pf_data [0:NWP-1];
    wire [NWP-1:0] pf_pop;
    genvar gp;
    generate
        for (gp = 0; gp < NWP; gp = gp + 1) begin : g_port
            /* verilator lint_off UNUSEDSIGNAL */  // the low beat of the word under assembly is shifted out
            reg [CO*8-1:0] acc;
            /* verilator lint_on UNUSEDSIGNAL */
            reg [7:0] nbeat;
            wire beat = dvalid[gp] && dready[gp];
            wire word_done = beat && (nbeat == DW - 1);
            wire [CO*8-1:0] next = (DW == 1) ? ddata[gp*DB*8 +: DB*8]
                                   : {ddata[gp*DB*8 +: DB*8], acc[CO*8-1:DB*8]};
            assign dready[gp] = !pf_full[gp];
            always @(posedge clk) begin
                if (rst) nbeat <= 0;
                else if (beat) begin
                    acc <= next;
                    nbeat <= word_done ? 8'd0 : nbeat + 1'b1;
                end
            end
            /* verilator lint_off UNUSEDSIGNAL */
            wire [PFA+1:0] unused_count;
            /* verilator lint_on UNUSEDSIGNAL */
            cnn_fifo #(.W(CO*8), .AW(PFA)) u_pf (
                .clk(clk), .rst(rst), .push(word_done), .din(next), .full(pf_full[gp]),
                .pop(pf_pop[gp]), .dout(pf_data[gp]), .valid(pf_valid[gp]), .count(unused_count)
            );
        end
    endgenerate

    // ---- merge in block order ------------------------------------------------------------------
    // order entries: {port, words, is_desc}
    localparam integer OW = PW + 16 + 1;
    wire ord_full, ord_valid;
    wire [OW-1:0] ord;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [4:0] ord_count;
    /* verilator lint_on UNUSEDSIGNAL */
    wire [PW-1:0] o_port = ord[OW-1 -: PW];
    wire [15:0] o_words = ord[16:1];
    wire o_desc = ord[0];
    reg  [15:0] o_done;
    wire [CO*8-1:0] head = pf_data[o_port];
    wire head_ok = ord_valid && pf_valid[o_port];
    wire wf_full;
    wire merge = head_ok && (o_desc || !wf_full);
    wire ord_pop = merge && (o_done + 1 == o_words);
    generate
        for (gp = 0; gp < NWP; gp = gp + 1) begin : g_pop
            assign pf_pop[gp] = merge && (o_port == gp);
        end
    endgenerate
    reg ord_push;
    reg [OW-1:0] ord_in;
    cnn_rfifo #(.W(OW), .AW(4)) u_order (
        .clk(clk), .rst(rst), .push(ord_push), .din(ord_in), .full(ord_full),
        .pop(ord_pop), .dout(ord), .valid(ord_valid), .count(ord_count)
    );
    /* verilator lint_off UNUSEDSIGNAL */
    wire [WFA+1:0] wf_count;
    /* verilator lint_on UNUSEDSIGNAL */
    cnn_fifo #(.W(CO*8), .AW(WFA)) u_wfifo (
        .clk(clk), .rst(rst), .push(merge && !o_desc), .din(head), .full(wf_full),
        .pop(wf_pop), .dout(wf_data), .valid(wf_valid), .count(wf_count)
    );
    reg [`DESC_BITS-1:0] dreg;
    reg [7:0] d_got;

    // ---- check ----------------------------------------------------------------------------------
    reg chk_start;
    wire chk_done;
    wire [2:0] chk_code;
    wire [`DERIVED_BITS-1:0] chk_derived;
    cnn_check #(.CI(CI), .CO(CO), .ACC_DEPTH(ACC_DEPTH), .IBUF_WORDS(IBUF_WORDS), .BANKS(BANKS)) u_check (
        .clk(clk), .rst(rst), .start(chk_start), .d(dreg), .region_bytes(region_bytes),
        .wgt_bytes(wgt_bytes), .done(chk_done), .code(chk_code), .derived(chk_derived)
    );

    // ---- descriptor queue ------------------------------------------------------------------
    localparam integer QW = `DESC_BITS + `DERIVED_BITS + 3 + 32 + 32;
    wire q_full;
    reg q_push;
    wire [QW-1:0] q_out;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [2:0] q_cnt;
    /* verilator lint_on UNUSEDSIGNAL */
    cnn_rfifo #(.W(QW), .AW(1)) u_queue (
        .clk(clk), .rst(rst), .push(q_push), .din({dreg, chk_derived, chk_code, fetch_index, img}), .full(q_full),
        .pop(q_pop), .dout(q_out), .valid(q_valid), .count(q_cnt)
    );
    assign q_desc = q_out[QW-1 -: `DESC_BITS];
    assign q_derived = q_out[QW-`DESC_BITS-1 -: `DERIVED_BITS];
    assign q_code = q_out[64 +: 3];
    assign q_index = q_out[32 +: 32];
    assign q_image = q_out[0 +: 32];

    // ---- request sequencing --------------------------------------------------------------------
    localparam F_IDLE = 3'd0, F_DREQ = 3'd1, F_DWAIT = 3'd2, F_CHK = 3'd3, F_PUSH = 3'd4,
               F_WREQ = 3'd5, F_NEXT = 3'd6;
    reg [2:0]  st;
    reg [31:0] img, rep;
    reg [63:0] w_at;
    reg [31:0] w_left;
    reg [PW-1:0] port;
    reg [15:0] pend [0:NWP-1];                      // words requested on a port, not merged
    reg [WFA+1:0] wf_pend;                          // weight words requested, not consumed
    reg        rq_valid;
    reg [63:0] rq_addr;
    reg [31:0] rq_bytes;
    wire [31:0] blk = (w_left < BLK) ? w_left : BLK;
    wire [15:0] blk_words = blk[LCO+15:LCO];
    wire [15:0] bands = `D_BANDS(dreg);
    wire [31:0] seg = `D_WGT_BYTES(dreg);
    wire [31:0] seg_off = `D_WGT_OFFSET(dreg);
    wire port_room_d = (pend[port] + DESC_WORDS <= (1 << PFA)) && !ord_full && !rq_valid;
    wire port_room_w = (pend[port] + blk_words <= (1 << PFA)) && !ord_full && !rq_valid
                       && ({2'b0, wf_pend} + blk_words <= (1 << WFA));
    generate
        for (gp = 0; gp < NWP; gp = gp + 1) begin : g_cmd
            assign cmd_valid[gp] = rq_valid && (port == gp);
            assign cmd_addr[gp*64 +: 64] = rq_addr;
            assign cmd_bytes[gp*32 +: 32] = rq_bytes;
        end
    endgenerate
    wire rq_taken = rq_valid && cmd_ready[port];

    integer n;
    always @(posedge clk) begin
        if (rst) begin
            st <= F_IDLE; rq_valid <= 1'b0; ord_push <= 1'b0; q_push <= 1'b0; chk_start <= 1'b0;
            o_done <= 0; d_got <= 0; wf_pend <= 0; port <= 0; fetch_index <= 0; img <= 0;
            for (n = 0; n < NWP; n = n + 1) pend[n] <= 0;
        end else begin
            ord_push <= 1'b0; q_push <= 1'b0; chk_start <= 1'b0;
            if (merge) o_done <= ord_pop ? 16'd0 : o_done + 1'b1;
            if (merge && o_desc) begin
                dreg <= {head, dreg[`DESC_BITS-1:CO*8]};
                d_got <= d_got + 1'b1;
            end
            for (n = 0; n < NWP; n = n + 1)
                pend[n] <= pend[n] + ((ord_push && ord_in[OW-1 -: PW] == n) ? ord_in[16:1] : 16'd0)
                                   - ((merge && o_port == n) ? 16'd1 : 16'd0);
            wf_pend <= wf_pend + ((ord_push && !ord_in[0]) ? ord_in[16:1] : 16'd0) - (wf_pop ? 1'b1 : 1'b0);
            if (rq_taken) begin
                rq_valid <= 1'b0;
                if (NWP > 1) port <= port + 1'b1;
            end
            case (st)
                F_IDLE: if (start) begin
                    fetch_index <= 0; img <= 0;
                    st <= (desc_count == 0 || batch == 0) ? F_IDLE : F_DREQ;
                end
                F_DREQ: if (port_room_d) begin
                    rq_valid <= 1'b1;
                    rq_addr <= desc_addr + {fetch_index, 7'd0};
                    rq_bytes <= 32'd128;
                    ord_push <= 1'b1;
                    ord_in <= {port, DESC_WORDS[15:0], 1'b1};
                    d_got <= 0;
                    st <= F_DWAIT;
                end
                F_DWAIT: if (d_got == DESC_WORDS) begin chk_start <= 1'b1; st <= F_CHK; end
                F_CHK: if (chk_done) st <= F_PUSH;
                F_PUSH: if (!q_full) begin
                    q_push <= 1'b1;
                    rep <= 0;
                    w_at <= wgt_addr + {32'd0, seg_off};
                    w_left <= seg;
                    st <= (chk_code != `ERR_NONE) ? F_IDLE : F_WREQ;
                end
                F_WREQ: if (w_left == 0) begin
                    if (rep + 1 < {16'd0, bands}) begin
                        rep <= rep + 1;
                        w_at <= wgt_addr + {32'd0, seg_off};
                        w_left <= seg;
                    end else st <= F_NEXT;
                end else if (port_room_w) begin
                    rq_valid <= 1'b1;
                    rq_addr <= w_at;
                    rq_bytes <= blk;
                    ord_push <= 1'b1;
                    ord_in <= {port, blk_words, 1'b0};
                    w_at <= w_at + {32'd0, blk};
                    w_left <= w_left - blk;
                end
                F_NEXT: begin
                    if (fetch_index + 1 == desc_count) begin
                        fetch_index <= 0;
                        img <= img + 1;
                        st <= (img + 1 == batch) ? F_IDLE : F_DREQ;
                    end else begin
                        fetch_index <= fetch_index + 1;
                        st <= F_DREQ;
                    end
                end
                default: st <= F_IDLE;
            endcase
        end
    end
endmodule
`default_nettype wire
