// AXI4 master engines: a read engine (byte ranges -> INCR bursts -> beats with their valid
// byte range) and a write engine (chunks of up to CO bytes -> INCR bursts with strobes).
// Both: bursts never cross 4 KiB, at most OUTST bursts outstanding, VALID and payload from
// registers and held until READY, SLVERR/DECERR (RESP[1]) pulse `err`. On `abort` they
// stop taking work and finish what the bus already accepted (reads drained, writes completed
// with their data), so a run can stop at any cycle without leaving the bus hanging.
`default_nettype none

module cnn_axi_rd #(
    parameter integer DB = 16,          // data bytes per beat
    parameter integer LB = 4,           // log2(DB)
    parameter integer BURST = 64,       // longest burst issued (beats)
    parameter integer OUTST = 4,        // bursts outstanding
    parameter integer OAW = 2           // log2(OUTST)
) (
    input  wire                clk,
    input  wire                rst,
    input  wire                abort,
    input  wire                cmd_valid,
    output wire                cmd_ready,
    input  wire [63:0]         cmd_addr,
    input  wire [31:0]         cmd_bytes,
    output wire                dout_valid,
    input  wire                dout_ready,
    output wire [DB*8-1:0]     dout_data,
    output wire [LB-1:0]       dout_lo,
    output wire [LB:0]         dout_hi,
    output wire                dout_last,
    output reg                 err,
    output wire                idle,
    output reg  [63:0]         araddr,
    output reg  [7:0]          arlen,
    output wire [2:0]          arsize,
    output wire [1:0]          arburst,
    output wire [3:0]          arcache,
    output wire [2:0]          arprot,
    output reg                 arvalid,
    input  wire                arready,
    input  wire [DB*8-1:0]     rdata,
    /* verilator lint_off UNUSEDSIGNAL */  // RRESP[0] (EXOKAY) and RLAST: the engine counts its beats
    input  wire [1:0]          rresp,
    input  wire                rlast,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire                rvalid,
    output wire                rready
);
    assign arsize = LB[2:0];
    assign arburst = 2'b01;
    assign arcache = 4'b0011;
    assign arprot = 3'b000;

    // The command being split into bursts.
    reg [63:0] cur;                     // next burst's beat-aligned address
    reg [31:0] left;                    // beats of the command not yet issued
    reg        first;
    reg [LB-1:0] lo0;
    reg [LB:0]   hi_end;
    reg [OAW+1:0] outstanding;
    assign cmd_ready = (left == 0) && !abort;

    wire [31:0] beats = ({{(32-LB){1'b0}}, cmd_addr[LB-1:0]} + cmd_bytes + DB - 1) >> LB;
    wire [12:0] to_page = (13'd4096 - {1'b0, cur[11:0]}) >> LB;       // beats to the 4 KiB line
    wire [31:0] cap = (to_page < BURST) ? {19'd0, to_page} : BURST;
    wire [31:0] len = (left < cap) ? left : cap;

    // Per burst: beats, the first beat's low byte, the last beat's end byte, command end.
    localparam integer MW = 9 + LB + (LB + 1) + 1;
    wire meta_full, meta_valid;
    wire [MW-1:0] meta;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [OAW:0] meta_count;
    /* verilator lint_on UNUSEDSIGNAL */
    wire issue = !arvalid && left != 0 && !abort && !meta_full && (outstanding < OUTST);
    wire last_burst = (len == left);
    wire [MW-1:0] meta_in = {len[8:0], first ? lo0 : {LB{1'b0}}, last_burst ? hi_end : DB[LB:0], last_burst};
    wire [8:0] m_len = meta[MW-1 -: 9];
    wire [LB-1:0] m_lo = meta[LB + (LB + 1) + 1 - 1 -: LB];
    wire [LB:0] m_hi = meta[(LB + 1) + 1 - 1 -: LB + 1];
    wire m_last = meta[0];
    reg [8:0] beat;
    wire rbeat = rvalid && rready;
    wire burst_done = rbeat && (beat + 1'b1 == m_len);

    cnn_rfifo #(.W(MW), .AW(OAW)) u_meta (
        .clk(clk), .rst(rst), .push(issue), .din(meta_in), .full(meta_full),
        .pop(burst_done), .dout(meta), .valid(meta_valid), .count(meta_count)
    );

    assign rready = abort ? 1'b1 : dout_ready;
    assign dout_valid = rvalid && meta_valid && !abort;
    assign dout_data = rdata;
    assign dout_lo = (beat == 0) ? m_lo : {LB{1'b0}};
    assign dout_hi = (beat + 1'b1 == m_len) ? m_hi : DB[LB:0];
    assign dout_last = (beat + 1'b1 == m_len) && m_last;
    assign idle = (outstanding == 0) && !arvalid && (left == 0);

    always @(posedge clk) begin
        if (rst) begin
            left <= 0; arvalid <= 1'b0; outstanding <= 0; beat <= 0; err <= 1'b0;
            first <= 1'b0; lo0 <= 0; hi_end <= 0; cur <= 0; araddr <= 0; arlen <= 0;
        end else begin
            if (abort) left <= 0;
            else if (cmd_valid && cmd_ready) begin
                cur <= {cmd_addr[63:LB], {LB{1'b0}}};
                left <= beats;
                first <= 1'b1;
                lo0 <= cmd_addr[LB-1:0];
                hi_end <= {1'b0, cmd_addr[LB-1:0] + cmd_bytes[LB-1:0] - 1'b1} + 1'b1;
            end else if (issue) begin
                araddr <= cur;
                arlen <= len[7:0] - 1'b1;
                arvalid <= 1'b1;
                cur <= cur + {len[31-LB:0], {LB{1'b0}}};
                left <= left - len;
                first <= 1'b0;
            end
            if (arvalid && arready) arvalid <= 1'b0;
            outstanding <= outstanding + (arvalid && arready ? 1'b1 : 1'b0) - (burst_done ? 1'b1 : 1'b0);
            if (rbeat) beat <= burst_done ? 9'd0 : beat + 1'b1;
            err <= rbeat && rresp[1];          // a pulse per erroneous beat
        end
    end
endmodule

// Chunks (addr, n <= CO bytes, data) -> one INCR burst each (two when the chunk crosses a
// 4 KiB line), data shifted to the address, WSTRB marking exactly the chunk's bytes.
module cnn_axi_wr #(
    parameter integer DB = 16,
    parameter integer LB = 4,
    parameter integer CO = 64,          // chunk bytes
    parameter integer OUTST = 4,
    parameter integer OAW = 2
) (
    input  wire                clk,
    input  wire                rst,
    input  wire                abort,
    input  wire                chunk_valid,
    output wire                chunk_ready,
    input  wire [63:0]         chunk_addr,
    input  wire [7:0]          chunk_n,
    input  wire [CO*8-1:0]     chunk_data,
    output reg                 err,
    output wire                idle,
    output reg  [63:0]         awaddr,
    output reg  [7:0]          awlen,
    output wire [2:0]          awsize,
    output wire [1:0]          awburst,
    output wire [3:0]          awcache,
    output wire [2:0]          awprot,
    output reg                 awvalid,
    input  wire                awready,
    output wire [DB*8-1:0]     wdata,
    output wire [DB-1:0]       wstrb,
    output wire                wlast,
    output wire                wvalid,
    input  wire                wready,
    /* verilator lint_off UNUSEDSIGNAL */  // BRESP[0]: EXOKAY, never asked for
    input  wire [1:0]          bresp,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire                bvalid,
    output wire                bready
);
    assign awsize = LB[2:0];
    assign awburst = 2'b01;
    assign awcache = 4'b0011;
    assign awprot = 3'b000;
    assign bready = 1'b1;

    localparam integer LW = CO + DB;                    // bytes of a shifted chunk
    localparam integer JW = CO * 8 + LB + 8 + 8 + 8;    // job: data, offset, n, beats, split
    // Jobs wait here from their first AW to their last W beat.
    wire job_full, job_valid;
    wire [JW-1:0] job;
    /* verilator lint_off UNUSEDSIGNAL */
    wire [OAW:0] job_count;
    /* verilator lint_on UNUSEDSIGNAL */
    reg aw_second;                      // the current chunk's second burst is next
    reg [63:0] second_addr;
    reg [7:0]  second_len;
    wire [LB-1:0] off = chunk_addr[LB-1:0];
    wire [12:0] page_left = 13'd4096 - {1'b0, chunk_addr[11:0]};
    wire split = ({5'd0, chunk_n} > page_left);
    /* verilator lint_off UNUSEDSIGNAL */  // at most CO / DB + 1 beats
    wire [8:0] beats_all = ({1'b0, chunk_n} + off + DB - 1) >> LB;
    /* verilator lint_on UNUSEDSIGNAL */
    /* verilator lint_off UNUSEDSIGNAL */  // bytes to the 4 KiB line: a multiple of the beat
    wire [13:0] to_line = {1'b0, page_left} + {{(14-LB){1'b0}}, off};
    /* verilator lint_on UNUSEDSIGNAL */
    wire [7:0] beats_one = split ? to_line[LB+7:LB] : beats_all[7:0];   // the first burst's beats
    reg [OAW+1:0] bursts_out;           // AWs without their B
    wire can_aw = !awvalid && !aw_second && !job_full && !abort && (bursts_out + 2 <= OUTST);
    assign chunk_ready = can_aw;
    wire take = chunk_valid && chunk_ready;
    wire [JW-1:0] job_in = {chunk_data, off, chunk_n, beats_all[7:0], split ? beats_one : 8'd0};

    // W side: beats of the head job.
    wire [CO*8-1:0] j_data = job[JW-1 -: CO*8];
    wire [LB-1:0] j_off = job[8 + 8 + 8 + LB - 1 -: LB];
    wire [7:0] j_n = job[8 + 8 + 8 - 1 -: 8];
    wire [7:0] j_beats = job[8 + 8 - 1 -: 8];
    wire [7:0] j_split = job[7:0];
    reg [7:0] wbeat;
    wire [LW*8-1:0] line = {{(DB*8){1'b0}}, j_data} << ({3'd0, j_off} << 3);
    wire [LW-1:0] mask_n = ({{(LW-1){1'b0}}, 1'b1} << j_n) - 1'b1;
    wire [LW-1:0] mask = mask_n << j_off;
    wire wbeat_go = wvalid && wready;
    wire job_done = wbeat_go && (wbeat + 1'b1 == j_beats);
    assign wdata = line[wbeat * (DB * 8) +: DB * 8];
    assign wstrb = mask[wbeat * DB +: DB];
    assign wlast = (wbeat + 1'b1 == j_beats) || (j_split != 0 && wbeat + 1'b1 == j_split);
    // A job's W beats go out from the cycle its first AW is presented: VALID comes from the
    // job FIFO's registered count, never from a READY.
    assign wvalid = job_valid;
    assign idle = !job_valid && !awvalid && !aw_second && (bursts_out == 0);

    cnn_rfifo #(.W(JW), .AW(OAW)) u_jobs (
        .clk(clk), .rst(rst), .push(take), .din(job_in), .full(job_full),
        .pop(job_done), .dout(job), .valid(job_valid), .count(job_count)
    );

    always @(posedge clk) begin
        if (rst) begin
            awvalid <= 1'b0; aw_second <= 1'b0; wbeat <= 0; err <= 1'b0;
            bursts_out <= 0; awaddr <= 0; awlen <= 0; second_addr <= 0;
            second_len <= 0;
        end else begin
            if (take) begin
                awaddr <= {chunk_addr[63:LB], {LB{1'b0}}};
                awlen <= beats_one - 1'b1;
                awvalid <= 1'b1;
                aw_second <= split;
                second_addr <= {chunk_addr[63:12] + 1'b1, 12'd0};
                second_len <= beats_all[7:0] - beats_one - 1'b1;
            end else if (awvalid && awready) begin
                if (aw_second) begin
                    awaddr <= second_addr;
                    awlen <= second_len;
                    aw_second <= 1'b0;
                end else awvalid <= 1'b0;
            end
            bursts_out <= bursts_out + (awvalid && awready ? 1'b1 : 1'b0)
                          - (bvalid && bready ? 1'b1 : 1'b0);
            if (wbeat_go) wbeat <= job_done ? 8'd0 : wbeat + 1'b1;
            err <= bvalid && bready && bresp[1];
        end
    end
endmodule
`default_nettype wire
