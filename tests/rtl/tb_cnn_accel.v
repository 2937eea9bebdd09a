// Testbench for cnn_accel: a flat memory behind the engine's memory port, and an AXI4-Lite
// master that plays a script of register operations written by tests/rtl/harness.py.
// Compiled with -DAXI_GMEM it tests cnn_accel_axi instead: the same memory behind an AXI4 slave
// model on m_axi_gmem (tb_axi_gmem.vh: random wait states, AW and W in any order, an injected
// error response) and a checker of the master's AXI4 obligations that stops the simulation
// with "FATAL" on the first violation.
//
// Plusargs: +image=FILE (memory words, $readmemh), +words=N (how many to write back),
// +out=FILE ($writememh of the memory after the script), +script=FILE, +log=FILE,
// +base=HEX (physical address of memory word 0), +stall=1 (memory answers after random waits;
// without AXI_GMEM). With AXI_GMEM: +seed=N, +ready_pct=P, +max_delay=D, +err_addr=HEX,
// +err_resp=R (see tb_axi_gmem.vh).
// Script lines are three hex numbers "op a b":
//   1 addr value   AXI-Lite write          2 addr 0      AXI-Lite read, logged "R addr value"
//   3 mask limit   poll STATUS (every ~40 cycles) until (STATUS & mask) != 0, at most `limit`
//                  reads; logged "P status reads"        4 cycles 0    wait
// The log also gets "M bad_accesses" (accesses outside the memory) at the end, and with
// AXI_GMEM "A" and the bus counters (tb_axi_gmem.vh).
`timescale 1ns / 1ps
`default_nettype none

module tb_cnn_accel;
    localparam integer MEM_WORDS = 1 << 20;  // 4 MiB

    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg rst_n = 1'b0;

    reg  [15:0] awaddr = 16'd0, araddr = 16'd0;
    reg         awvalid = 1'b0, wvalid = 1'b0, arvalid = 1'b0;
    reg  [31:0] wdata = 32'd0;
    reg  [3:0]  wstrb = 4'hf;
    wire        awready, wready, bvalid, arready, rvalid;
    wire [1:0]  bresp, rresp;
    wire [31:0] rdata;

    // ---- memory ------------------------------------------------------------------------------
    reg  [31:0] mem [0:MEM_WORDS-1];
    reg  [63:0] base = 64'h4000_0000;
    integer     bad_accesses = 0;

`ifdef AXI_GMEM
    `include "tb_axi_gmem.vh"
`else
    wire        mem_req, mem_we;
    wire [63:0] mem_addr;
    wire [31:0] mem_wdata;
    wire [3:0]  mem_wstrb;
    wire        mem_ready;
    wire [31:0] mem_rdata;

    cnn_accel dut (
        .clk(clk), .rst_n(rst_n),
        .s_axi_control_awaddr(awaddr), .s_axi_control_awvalid(awvalid),
        .s_axi_control_awready(awready), .s_axi_control_wdata(wdata),
        .s_axi_control_wstrb(wstrb), .s_axi_control_wvalid(wvalid),
        .s_axi_control_wready(wready), .s_axi_control_bresp(bresp),
        .s_axi_control_bvalid(bvalid), .s_axi_control_bready(1'b1),
        .s_axi_control_araddr(araddr), .s_axi_control_arvalid(arvalid),
        .s_axi_control_arready(arready), .s_axi_control_rdata(rdata),
        .s_axi_control_rresp(rresp), .s_axi_control_rvalid(rvalid),
        .s_axi_control_rready(1'b1),
        .mem_req(mem_req), .mem_we(mem_we), .mem_addr(mem_addr), .mem_wdata(mem_wdata),
        .mem_wstrb(mem_wstrb), .mem_ready(mem_ready), .mem_rdata(mem_rdata), .mem_err(1'b0)
    );

    reg         stall = 1'b0;
    reg  [15:0] lfsr = 16'hace1;
    wire [63:0] offset = mem_addr - base;
    wire        in_range = mem_addr >= base && offset < 4 * MEM_WORDS;
    wire [31:0] word = offset[33:2];
    assign mem_ready = mem_req && (!stall || lfsr[0]);
    assign mem_rdata = in_range ? mem[word] : 32'hdeadbeef;

    always @(posedge clk) begin
        lfsr <= {lfsr[14:0], lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]};
        if (mem_req && mem_ready) begin
            if (!in_range) bad_accesses = bad_accesses + 1;
            else if (mem_we) begin
                if (mem_wstrb[0]) mem[word][7:0]   <= mem_wdata[7:0];
                if (mem_wstrb[1]) mem[word][15:8]  <= mem_wdata[15:8];
                if (mem_wstrb[2]) mem[word][23:16] <= mem_wdata[23:16];
                if (mem_wstrb[3]) mem[word][31:24] <= mem_wdata[31:24];
            end
        end
    end
`endif

    // ---- AXI4-Lite master (signals change on the falling edge, the DUT samples on rising) ---
    task axi_write(input [15:0] a, input [31:0] d);
        begin
            @(negedge clk);
            awaddr = a; wdata = d; awvalid = 1'b1; wvalid = 1'b1;
            while (!(awready && wready)) @(negedge clk);
            @(negedge clk);
            awvalid = 1'b0; wvalid = 1'b0;
            while (!bvalid) @(negedge clk);
            @(negedge clk);
        end
    endtask

    task axi_read(input [15:0] a, output [31:0] d);
        begin
            @(negedge clk);
            araddr = a; arvalid = 1'b1;
            while (!arready) @(negedge clk);
            @(negedge clk);
            arvalid = 1'b0;
            while (!rvalid) @(negedge clk);
            d = rdata;
            @(negedge clk);
        end
    endtask

    // ---- the script ----------------------------------------------------------------------------
    reg [8*1024-1:0] image_file, out_file, script_file, log_file;
    integer words, fd, log, got, reads;
    reg [63:0] op, a, b;
    reg [31:0] value;

    initial begin
        if (!$value$plusargs("image=%s", image_file)) $fatal(1, "no +image");
        if (!$value$plusargs("out=%s", out_file)) $fatal(1, "no +out");
        if (!$value$plusargs("script=%s", script_file)) $fatal(1, "no +script");
        if (!$value$plusargs("log=%s", log_file)) $fatal(1, "no +log");
        if (!$value$plusargs("words=%d", words)) $fatal(1, "no +words");
        if ($value$plusargs("base=%h", base)) ;
`ifdef AXI_GMEM
        axi_gmem_plusargs;
`else
        if ($test$plusargs("stall")) stall = 1'b1;
`endif
        $readmemh(image_file, mem, 0, words - 1);
        fd = $fopen(script_file, "r");
        log = $fopen(log_file, "w");
        repeat (4) @(posedge clk);
        rst_n = 1'b1;
        got = $fscanf(fd, "%h %h %h\n", op, a, b);
        while (got == 3) begin
            case (op)
                1: axi_write(a[15:0], b[31:0]);
                2: begin
                    axi_read(a[15:0], value);
                    $fdisplay(log, "R %h %h", a[15:0], value);
                end
                3: begin
                    reads = 0;
                    value = 0;
                    while ((value & a[31:0]) == 0 && reads < b) begin
                        if (reads != 0) repeat (32) @(posedge clk);
                        axi_read(16'h0004, value);
                        reads = reads + 1;
                    end
                    $fdisplay(log, "P %h %0d", value, reads);
                end
                4: repeat (a) @(posedge clk);
                default: $fatal(1, "bad script op %0d", op);
            endcase
            got = $fscanf(fd, "%h %h %h\n", op, a, b);
        end
        $fdisplay(log, "M %0d", bad_accesses);
`ifdef AXI_GMEM
        axi_gmem_log(log);
`endif
        $fclose(log);
        $writememh(out_file, mem, 0, words - 1);
        $finish;
    end
endmodule

`default_nettype wire
