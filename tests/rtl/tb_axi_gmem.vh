// Included by tb_cnn_accel.v under -DAXI_GMEM: cnn_accel_axi, an AXI4 slave memory model on its
// m_axi_gmem (over the testbench's `mem`, `base`, `bad_accesses`), and an AXI4 protocol checker
// of the master's obligations.
//
// The slave offers AWREADY, WREADY and ARREADY each cycle with probability ready_pct % (each
// drawn independently, so AW and W are taken in either order or together, and READY is at times
// up before VALID), holds one AW and one W until both are in, then writes the word (WSTRB
// honoured) and raises BVALID 1 + 0..max_delay cycles later; a read raises RVALID
// 1 + 0..max_delay cycles after the AR handshake. While RVALID is low RDATA carries garbage.
// All draws come from $random(seed).
// err_addr: the first access (read or write) to that word is answered err_resp (2 SLVERR,
// 3 DECERR) and not performed; an access outside the memory is answered DECERR (and counted in
// bad_accesses).
//
// Plusargs: +seed=N (default 1), +ready_pct=P (1..100, default 50), +max_delay=D (default 3),
// +err_addr=HEX (physical byte address; none by default), +err_resp=R (default 2).
// Log line at the end: "A ar r aw w b errors valid_waits aw_first w_first together withdrawn",
// the handshake counts per channel, the error responses sent, the cycles a master VALID waited
// for its READY, how each write's AW and W handshakes were ordered, and (read from inside the
// adapter) how many requests the engine withdrew (SOFT_RESET) while their access was in flight.

    wire [63:0] g_awaddr, g_araddr;
    wire [7:0]  g_awlen, g_arlen;
    wire [2:0]  g_awsize, g_arsize, g_awprot, g_arprot;
    wire [1:0]  g_awburst, g_arburst;
    wire [3:0]  g_awcache, g_arcache, g_wstrb;
    wire [31:0] g_wdata;
    wire        g_awvalid, g_wvalid, g_wlast, g_bready, g_arvalid, g_rready;
    reg         g_awready = 1'b0, g_wready = 1'b0, g_arready = 1'b0;
    reg         g_bvalid = 1'b0, g_rvalid = 1'b0, g_rlast = 1'b0;
    reg  [1:0]  g_bresp = 2'b00, g_rresp = 2'b00;
    reg  [31:0] g_rdata = 32'd0;

    cnn_accel_axi dut (
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
        .m_axi_gmem_awaddr(g_awaddr), .m_axi_gmem_awlen(g_awlen), .m_axi_gmem_awsize(g_awsize),
        .m_axi_gmem_awburst(g_awburst), .m_axi_gmem_awcache(g_awcache),
        .m_axi_gmem_awprot(g_awprot), .m_axi_gmem_awvalid(g_awvalid),
        .m_axi_gmem_awready(g_awready),
        .m_axi_gmem_wdata(g_wdata), .m_axi_gmem_wstrb(g_wstrb), .m_axi_gmem_wlast(g_wlast),
        .m_axi_gmem_wvalid(g_wvalid), .m_axi_gmem_wready(g_wready),
        .m_axi_gmem_bresp(g_bresp), .m_axi_gmem_bvalid(g_bvalid), .m_axi_gmem_bready(g_bready),
        .m_axi_gmem_araddr(g_araddr), .m_axi_gmem_arlen(g_arlen), .m_axi_gmem_arsize(g_arsize),
        .m_axi_gmem_arburst(g_arburst), .m_axi_gmem_arcache(g_arcache),
        .m_axi_gmem_arprot(g_arprot), .m_axi_gmem_arvalid(g_arvalid),
        .m_axi_gmem_arready(g_arready),
        .m_axi_gmem_rdata(g_rdata), .m_axi_gmem_rresp(g_rresp), .m_axi_gmem_rlast(g_rlast),
        .m_axi_gmem_rvalid(g_rvalid), .m_axi_gmem_rready(g_rready)
    );

    // ---- the slave memory model (all outputs registered on the rising edge) -------------------
    integer     seed = 1, ready_pct = 50, max_delay = 3;
    reg  [63:0] err_addr = 64'd0;
    reg         err_armed = 1'b0;
    reg  [1:0]  err_resp = 2'b10;

    wire aw_hs = g_awvalid && g_awready;
    wire w_hs  = g_wvalid && g_wready;
    wire b_hs  = g_bvalid && g_bready;
    wire ar_hs = g_arvalid && g_arready;
    wire r_hs  = g_rvalid && g_rready;

    reg         aw_full = 1'b0, w_full = 1'b0;   // one AW and one W held until the response
    reg  [63:0] aw_q = 64'd0;
    reg  [31:0] w_q = 32'd0, r_q = 32'd0;
    reg  [3:0]  ws_q = 4'd0;
    reg  [1:0]  wr_phase = 2'd0, rd_phase = 2'd0;  // 0 collecting/idle, 1 delay, 2 VALID up
    integer     b_delay = 0, r_delay = 0;
    integer     n_ar = 0, n_r = 0, n_aw = 0, n_w = 0, n_b = 0, n_err = 0, n_wait = 0;
    integer     n_aw_first = 0, n_w_first = 0, n_together = 0, n_withdrawn = 0;

    function chance(input integer dummy);  // one draw: true with probability ready_pct %
        begin
            chance = ({$random(seed)} % 100) < ready_pct;
        end
    endfunction

    function integer delay(input integer dummy);  // one draw: 0..max_delay
        begin
            delay = {$random(seed)} % (max_delay + 1);
        end
    endfunction

    function [63:0] offset_of(input [63:0] addr);
        offset_of = addr - base;
    endfunction

    function in_memory(input [63:0] addr);
        in_memory = addr >= base && offset_of(addr) < 4 * MEM_WORDS;
    endfunction

    // the response to an access at addr, and whether it is performed; disarms the injection
    task respond(input [63:0] addr, output [1:0] resp);
        begin
            if (err_armed && addr[63:2] == err_addr[63:2]) begin
                resp = err_resp;
                err_armed = 1'b0;
                n_err = n_err + 1;
            end else if (!in_memory(addr)) begin
                resp = 2'b11;  // DECERR
                bad_accesses = bad_accesses + 1;
                n_err = n_err + 1;
            end else resp = 2'b00;
        end
    endtask

    reg  [1:0]  resp;
    reg  [31:0] word_at;

    always @(posedge clk) begin
        if (!rst_n) begin
            g_awready <= 1'b0; g_wready <= 1'b0; g_arready <= 1'b0;
            g_bvalid <= 1'b0; g_rvalid <= 1'b0;
            aw_full <= 1'b0; w_full <= 1'b0; wr_phase <= 2'd0; rd_phase <= 2'd0;
        end else begin
            // ---- write: AW and W in any order, then the write, then B after a delay
            if (aw_hs) begin
                aw_full <= 1'b1;
                aw_q <= g_awaddr;
                n_aw = n_aw + 1;
                if (w_hs) n_together = n_together + 1;
                else if (!w_full) n_aw_first = n_aw_first + 1;
            end
            if (w_hs) begin
                w_full <= 1'b1;
                w_q <= g_wdata;
                ws_q <= g_wstrb;
                n_w = n_w + 1;
                if (!aw_hs && !aw_full) n_w_first = n_w_first + 1;
            end
            case (wr_phase)
                2'd0: if (aw_full && w_full) begin
                    respond(aw_q, resp);
                    if (resp == 2'b00) begin
                        word_at = offset_of(aw_q) >> 2;
                        if (ws_q[0]) mem[word_at][7:0]   <= w_q[7:0];
                        if (ws_q[1]) mem[word_at][15:8]  <= w_q[15:8];
                        if (ws_q[2]) mem[word_at][23:16] <= w_q[23:16];
                        if (ws_q[3]) mem[word_at][31:24] <= w_q[31:24];
                    end
                    g_bresp <= resp;
                    b_delay = delay(0);
                    g_bvalid <= b_delay == 0;
                    wr_phase <= b_delay == 0 ? 2'd2 : 2'd1;
                end
                2'd1: begin
                    b_delay = b_delay - 1;
                    if (b_delay == 0) begin
                        g_bvalid <= 1'b1;
                        wr_phase <= 2'd2;
                    end
                end
                default: if (b_hs) begin
                    g_bvalid <= 1'b0;
                    g_bresp <= 2'bxx;
                    aw_full <= 1'b0;
                    w_full <= 1'b0;
                    wr_phase <= 2'd0;
                    n_b = n_b + 1;
                end
            endcase
            // READY offered only while there is room (the AW and W slots free up after B)
            g_awready <= !(aw_full || aw_hs) && chance(0);
            g_wready  <= !(w_full || w_hs) && chance(0);

            // ---- read: AR, then R after a delay; RDATA is garbage while RVALID is low
            case (rd_phase)
                2'd0: if (ar_hs) begin
                    respond(g_araddr, resp);
                    g_rresp <= resp;
                    word_at = offset_of(g_araddr) >> 2;
                    r_q = resp == 2'b00 ? mem[word_at] : 32'hbad0_bad0;
                    r_delay = delay(0);
                    if (r_delay == 0) begin
                        g_rdata <= r_q;
                        g_rvalid <= 1'b1;
                        g_rlast <= 1'b1;
                        rd_phase <= 2'd2;
                    end else rd_phase <= 2'd1;
                    n_ar = n_ar + 1;
                end
                2'd1: begin
                    r_delay = r_delay - 1;
                    if (r_delay == 0) begin
                        g_rdata <= r_q;
                        g_rvalid <= 1'b1;
                        g_rlast <= 1'b1;
                        rd_phase <= 2'd2;
                    end else g_rdata <= $random(seed);
                end
                default: if (r_hs) begin
                    g_rvalid <= 1'b0;
                    g_rlast <= 1'b0;
                    g_rresp <= 2'bxx;
                    g_rdata <= $random(seed);
                    rd_phase <= 2'd0;
                    n_r = n_r + 1;
                end
            endcase
            g_arready <= rd_phase == 2'd0 && !ar_hs && chance(0);
        end
    end

    // ---- the master's AXI4 obligations, checked every cycle ----------------------------------
    reg         checking = 1'b0;
    reg         p_awvalid = 1'b0, p_awready = 1'b0, p_wvalid = 1'b0, p_wready = 1'b0;
    reg         p_arvalid = 1'b0, p_arready = 1'b0;
    reg  [63:0] p_awaddr = 64'd0, p_araddr = 64'd0;
    reg  [31:0] p_wdata = 32'd0;
    reg  [3:0]  p_wstrb = 4'd0;
    reg  [23:0] p_aw_ctl = 24'd0, p_ar_ctl = 24'd0;
    integer     c_aw = 0, c_w = 0, c_b = 0, c_ar = 0, c_r = 0;  // handshakes before this cycle
    wire [23:0] aw_ctl = {g_awlen, g_awsize, g_awburst, g_awcache, g_awprot, 4'd0};
    wire [23:0] ar_ctl = {g_arlen, g_arsize, g_arburst, g_arcache, g_arprot, 4'd0};

    task violation(input [8*64-1:0] what);
        begin
            $display("FATAL: AXI4 protocol violation by m_axi_gmem at %0t ns: %0s", $time, what);
            $fatal(1, "m_axi_gmem: %0s", what);
        end
    endtask

    always @(posedge clk) begin
        if (checking) begin
            if (^{g_awvalid, g_wvalid, g_arvalid, g_bready, g_rready} === 1'bx)
                violation("a VALID or READY is X or Z");
            // a VALID stays up, its payload unchanged, until its READY
            if (p_awvalid && !p_awready) begin
                if (!g_awvalid) violation("AWVALID dropped before AWREADY");
                if (g_awaddr !== p_awaddr || aw_ctl !== p_aw_ctl)
                    violation("AW payload changed while AWVALID waited for AWREADY");
            end
            if (p_wvalid && !p_wready) begin
                if (!g_wvalid) violation("WVALID dropped before WREADY");
                if (g_wdata !== p_wdata || g_wstrb !== p_wstrb || g_wlast !== 1'b1)
                    violation("W payload changed while WVALID waited for WREADY");
            end
            if (p_arvalid && !p_arready) begin
                if (!g_arvalid) violation("ARVALID dropped before ARREADY");
                if (g_araddr !== p_araddr || ar_ctl !== p_ar_ctl)
                    violation("AR payload changed while ARVALID waited for ARREADY");
            end
            // single 4-byte beats, INCR, aligned, no X in a presented payload
            if (g_awvalid) begin
                if (g_awlen !== 8'd0) violation("AWLEN is not 0 (single beat)");
                if (g_awsize !== 3'd2) violation("AWSIZE is not 2 (4 bytes)");
                if (g_awburst !== 2'b01) violation("AWBURST is not INCR");
                if (g_awaddr[1:0] !== 2'b00 || ^g_awaddr === 1'bx)
                    violation("AWADDR unaligned or X");
            end
            if (g_wvalid) begin
                if (g_wlast !== 1'b1) violation("WLAST not set on a single-beat write");
                if (^g_wstrb === 1'bx || g_wstrb == 4'd0) violation("WSTRB empty or X");
                if (^g_wdata === 1'bx) violation("WDATA X");
            end
            if (g_arvalid) begin
                if (g_arlen !== 8'd0) violation("ARLEN is not 0 (single beat)");
                if (g_arsize !== 3'd2) violation("ARSIZE is not 2 (4 bytes)");
                if (g_arburst !== 2'b01) violation("ARBURST is not INCR");
                if (g_araddr[1:0] !== 2'b00 || ^g_araddr === 1'bx)
                    violation("ARADDR unaligned or X");
            end
            // the adapter's own promise: one transaction in flight, a read or a write
            if (g_awvalid && (c_aw > c_b || c_ar > c_r))
                violation("AW presented while a transaction is in flight");
            if (g_wvalid && (c_w > c_b || c_ar > c_r))
                violation("W presented while a transaction is in flight");
            if (g_arvalid && (c_aw > c_b || c_w > c_b || c_ar > c_r))
                violation("AR presented while a transaction is in flight");
            if ((g_awvalid || g_wvalid) && g_arvalid) violation("AR raised together with AW/W");
            if ((g_awvalid && !g_awready) || (g_wvalid && !g_wready) || (g_arvalid && !g_arready))
                n_wait = n_wait + 1;
            // (coverage, from the adapter's inside) a request withdrawn with its access in flight
            if (dut.u_gmem.state != 2'd0 && !dut.u_gmem.mem_req && !dut.u_gmem.dropped)
                n_withdrawn = n_withdrawn + 1;
        end
        checking <= rst_n;
        c_aw <= c_aw + aw_hs; c_w <= c_w + w_hs; c_b <= c_b + b_hs;
        c_ar <= c_ar + ar_hs; c_r <= c_r + r_hs;
        p_awvalid <= g_awvalid; p_awready <= g_awready; p_awaddr <= g_awaddr;
        p_aw_ctl <= aw_ctl;
        p_wvalid <= g_wvalid; p_wready <= g_wready; p_wdata <= g_wdata; p_wstrb <= g_wstrb;
        p_arvalid <= g_arvalid; p_arready <= g_arready; p_araddr <= g_araddr;
        p_ar_ctl <= ar_ctl;
    end

    task axi_gmem_plusargs;
        begin
            if ($value$plusargs("seed=%d", seed)) ;
            if ($value$plusargs("ready_pct=%d", ready_pct)) ;
            if ($value$plusargs("max_delay=%d", max_delay)) ;
            if ($value$plusargs("err_addr=%h", err_addr)) err_armed = 1'b1;
            if ($value$plusargs("err_resp=%d", err_resp)) ;
            if (ready_pct < 1 || ready_pct > 100 || max_delay < 0)
                $fatal(1, "bad +ready_pct or +max_delay");
        end
    endtask

    task axi_gmem_log(input integer fd);
        $fdisplay(fd, "A %0d %0d %0d %0d %0d %0d %0d %0d %0d %0d %0d", n_ar, n_r, n_aw, n_w, n_b,
                  n_err, n_wait, n_aw_first, n_w_first, n_together, n_withdrawn);
    endtask
