// Cycle-level testbench for cnn_accel (bitstreams/fpga_cnn/rtl), built by Verilator.
//
// The accelerator's five AXI masters talk to one DDR model: each read burst's data starts
// `latency` cycles after its AR is accepted, each port moves at most one beat a cycle, and all
// ports together move at most `bw` bytes a cycle (a token bucket: the usable DDR bandwidth).
// Optional seeded random stalls on every READY and VALID the slave drives; RDATA is garbage
// while RVALID is low. Error responses (SLVERR/DECERR) can be injected by address range.
// A checker tests the masters' AXI4 obligations every cycle (VALID held until READY, payload
// stable, INCR bursts of full-width beats, no 4 KiB crossing, burst length and outstanding
// limits, WLAST on the last beat of each burst) and stops with FATAL on the first violation;
// accesses outside the regions the script declared are FATAL too.
//
// The script (one command a line) programs registers through the AXI4-Lite port exactly as
// the driver does and reads memory back:
//   region ADDR LEN [ro]          declare memory (zero-filled; ro: writes are FATAL)
//   load ADDR FILE                copy a file into memory
//   ddr LATENCY BW STALL SEED     DDR model (cycles, bytes/cycle, stall probability, seed)
//   limits MAX_BURST OUTSTANDING  what the checker holds the masters to
//   error PORT LO HI RESP         answer accesses touching [LO, HI) on PORT (wt0 wt1 in rs out) with RESP
//   clear_errors                  no more error responses
//   write REG VALUE | read REG    AXI-Lite (read prints "read REG VALUE")
//   poll REG MASK TIMEOUT         until REG & MASK != 0 ("poll ok CYCLES" or "poll timeout")
//   irq TIMEOUT                   until the interrupt line is high ("irq ok CYCLES" / "irq timeout")
//   wait CYCLES
//   snap INDEX ADDR LEN FILE      copy memory to FILE when descriptor INDEX completes (last image)
//   dump ADDR LEN FILE            copy memory to FILE now
//   stats                         per-port traffic ("port NAME bursts N beats N bytes N maxout N")
#include "Vcnn_accel.h"
#include "Vcnn_accel___024root.h"
#include "verilated.h"
#ifdef TRACE
#include "verilated_vcd_c.h"
static VerilatedVcdC* vcd = nullptr;
static uint64_t trace_from = 0, trace_to = ~0ull;
#endif

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#ifndef AXI_DB
#define AXI_DB 16
#endif

static Vcnn_accel* top;
static uint64_t cycle = 0;
static FILE* out;

[[noreturn]] static void fatal(const std::string& msg) {
    fprintf(out, "FATAL cycle %llu: %s\n", (unsigned long long)cycle, msg.c_str());
    fflush(out);
    fprintf(stderr, "FATAL cycle %llu: %s\n", (unsigned long long)cycle, msg.c_str());
    exit(3);
}

// ---- memory ---------------------------------------------------------------------------------
struct Region { uint64_t lo, hi; bool ro; std::vector<uint8_t> data; };
static std::vector<Region> regions;
static Region* find(uint64_t a, uint64_t n) {
    for (auto& r : regions) if (a >= r.lo && a + n <= r.hi) return &r;
    return nullptr;
}

// ---- wide signal helpers --------------------------------------------------------------------
template <typename T> static void put_bytes(T& sig, const uint8_t* b) {
    if constexpr (sizeof(T) <= 8) {
        uint64_t v = 0;
        for (int i = 0; i < AXI_DB; i++) v |= (uint64_t)b[i] << (8 * i);
        sig = v;
    } else {
        for (int w = 0; w < AXI_DB / 4; w++)
            sig[w] = b[4 * w] | (b[4 * w + 1] << 8) | (b[4 * w + 2] << 16) | ((uint32_t)b[4 * w + 3] << 24);
    }
}
template <typename T> static void get_bytes(const T& sig, uint8_t* b) {
    if constexpr (sizeof(T) <= 8) {
        uint64_t v = sig;
        for (int i = 0; i < AXI_DB; i++) b[i] = (v >> (8 * i)) & 0xFF;
    } else {
        for (int w = 0; w < AXI_DB / 4; w++)
            for (int i = 0; i < 4; i++) b[4 * w + i] = (sig[w] >> (8 * i)) & 0xFF;
    }
}
template <typename T> static bool same(const T& a, const T& b) {
    if constexpr (sizeof(T) <= 8) return a == b;
    else { for (int w = 0; w < AXI_DB / 4; w++) if (a[w] != b[w]) return false; return true; }
}

// ---- DDR model and AXI slaves ---------------------------------------------------------------
static double bw = 1e9, tokens = 0, stall = 0;
static int latency = 1;
static std::mt19937_64 rng(1);
static int max_burst = 256, max_out = 8;
static bool chance() { return stall <= 0 ? true : (std::uniform_real_distribution<double>(0, 1)(rng) >= stall); }
static const uint64_t PAGE = 4096;

struct ErrRange { uint64_t lo, hi; int resp; };
struct Stats { uint64_t bursts = 0, beats = 0, bytes = 0; int maxout = 0; };

struct Burst { uint64_t addr; int len; uint64_t ready_at; int resp; };

struct ReadPort {
    std::string name;
    // pointers into the model
    uint64_t* araddr; uint8_t* arlen; uint8_t* arsize; uint8_t* arburst; uint8_t* arvalid;
    uint8_t* arready; uint8_t* rresp; uint8_t* rlast; uint8_t* rvalid; uint8_t* rready;
    std::function<void(const uint8_t*)> set_rdata;
    std::deque<Burst> q;
    int beat = 0;
    bool r_hold = false;
    std::vector<ErrRange> errs;
    Stats st;
    // checker state
    bool pend = false; uint64_t p_addr = 0; int p_len = 0, p_size = 0, p_burst = 0;
};

struct WJob { uint64_t addr; int len; int got = 0; uint64_t done_at = 0; int resp = 0; bool complete = false; };
struct WritePort {
    std::string name = "out";
    std::deque<WJob> aw;         // accepted AWs in order
    int w_beats_ahead = 0;        // W beats accepted before their AW
    std::deque<std::vector<uint8_t>> early_data;
    std::deque<std::vector<uint8_t>> early_strb;
    std::deque<int> early_last;
    std::deque<std::pair<uint64_t, int>> bq;   // (time, resp)
    bool b_hold = false;
    std::vector<ErrRange> errs;
    Stats st;
    bool pend_aw = false; uint64_t p_addr = 0; int p_len = 0, p_size = 0, p_burst = 0;
    bool pend_w = false; std::vector<uint8_t> p_data, p_strb; int p_last = 0;
};

static std::vector<ReadPort> rports;
static WritePort wport;

static int err_for(const std::vector<ErrRange>& errs, uint64_t a, uint64_t n) {
    for (auto& e : errs) if (a < e.hi && e.lo < a + n) return e.resp;
    return 0;
}

static void check_burst(const std::string& what, uint64_t addr, int len, int size, int burst) {
    if (size != __builtin_ctz(AXI_DB)) fatal(what + ": AxSIZE is not the full data width");
    if (burst != 1) fatal(what + ": not an INCR burst");
    if (addr % AXI_DB) fatal(what + ": address not aligned to the data width");
    if (len + 1 > max_burst) fatal(what + ": burst longer than the limit");
    if ((addr % PAGE) + (uint64_t)(len + 1) * AXI_DB > PAGE) fatal(what + ": burst crosses a 4 KiB boundary");
}

// Before the clock edge: look at what the masters drive, decide the slave's outputs.
static void read_port_step(ReadPort& p) {
    // AR channel
    bool arv = *p.arvalid;
    if (p.pend) {
        if (!arv) fatal(p.name + ": ARVALID dropped before ARREADY");
        if (*p.araddr != p.p_addr || *p.arlen != p.p_len || *p.arsize != p.p_size || *p.arburst != p.p_burst)
            fatal(p.name + ": AR payload changed while waiting for ARREADY");
    }
    bool acc = arv && (int)p.q.size() < 64 && chance();
    *p.arready = acc;
    if (arv) {
        check_burst(p.name + " AR", *p.araddr, *p.arlen, *p.arsize, *p.arburst);
        p.p_addr = *p.araddr; p.p_len = *p.arlen; p.p_size = *p.arsize; p.p_burst = *p.arburst;
    }
    p.pend = arv && !acc;
    if (acc) {
        uint64_t a = *p.araddr; int n = *p.arlen + 1;
        int resp = err_for(p.errs, a, (uint64_t)n * AXI_DB);
        if (!resp && !find(a, (uint64_t)n * AXI_DB)) fatal(p.name + ": read outside the declared memory");
        p.q.push_back({a, n, cycle + latency, resp});
        p.st.bursts++;
        if ((int)p.q.size() > max_out) fatal(p.name + ": more reads outstanding than the limit");
        if ((int)p.q.size() > p.st.maxout) p.st.maxout = p.q.size();
    }
}

static void read_data_step(ReadPort& p) {
    uint8_t buf[AXI_DB];
    bool can = !p.q.empty() && p.q.front().ready_at <= cycle;
    bool give = p.r_hold || (can && tokens >= AXI_DB && chance());
    if (give && !p.r_hold) tokens -= AXI_DB;
    if (give) {
        Burst& b = p.q.front();
        uint64_t a = b.addr + (uint64_t)p.beat * AXI_DB;
        Region* r = find(a, AXI_DB);
        if (b.resp || !r) memset(buf, 0xEE, AXI_DB);   // an error burst's data: anything, but stable
        else memcpy(buf, &r->data[a - r->lo], AXI_DB);
        p.set_rdata(buf);
        *p.rresp = b.resp;
        *p.rlast = (p.beat == b.len - 1);
        *p.rvalid = 1;
    } else {
        for (int i = 0; i < AXI_DB; i++) buf[i] = rng();
        p.set_rdata(buf);
        *p.rvalid = 0; *p.rlast = rng() & 1; *p.rresp = rng() & 3;
    }
}

static void read_data_after(ReadPort& p) {    // after eval with RREADY known
    if (*p.rvalid) {
        if (*p.rready) {
            p.r_hold = false;
            p.st.beats++; p.st.bytes += AXI_DB;
            if (++p.beat == p.q.front().len) { p.beat = 0; p.q.pop_front(); }
        } else p.r_hold = true;     // RVALID stays up, data stays the same
    }
}

#define OUT(sig) top->m_axi_out_##sig
static void write_port_step() {
    WritePort& p = wport;
    bool awv = OUT(awvalid);
    if (p.pend_aw) {
        if (!awv) fatal("out: AWVALID dropped before AWREADY");
        if (OUT(awaddr) != p.p_addr || OUT(awlen) != p.p_len || OUT(awsize) != p.p_size || OUT(awburst) != p.p_burst)
            fatal("out: AW payload changed while waiting for AWREADY");
    }
    bool acc = awv && p.aw.size() < 64 && chance();
    OUT(awready) = acc;
    if (awv) {
        check_burst("out AW", OUT(awaddr), OUT(awlen), OUT(awsize), OUT(awburst));
        p.p_addr = OUT(awaddr); p.p_len = OUT(awlen); p.p_size = OUT(awsize); p.p_burst = OUT(awburst);
    }
    p.pend_aw = awv && !acc;
    if (acc) {
        WJob j; j.addr = OUT(awaddr); j.len = OUT(awlen) + 1;
        j.resp = err_for(p.errs, j.addr, (uint64_t)j.len * AXI_DB);
        if (!j.resp) {
            Region* r = find(j.addr, (uint64_t)j.len * AXI_DB);
            if (!r) fatal("out: write outside the declared memory");
            if (r->ro) fatal("out: write into a read-only region");
        }
        p.aw.push_back(j);
        p.st.bursts++;
        int open = 0;
        for (auto& x : p.aw) if (!x.complete) open++;
        open += p.bq.size();
        if (open > max_out) fatal("out: more writes outstanding than the limit");
        if (open > p.st.maxout) p.st.maxout = open;
    }
    // W channel
    bool wv = OUT(wvalid);
    uint8_t d[AXI_DB];
    get_bytes(OUT(wdata), d);
    std::vector<uint8_t> data(d, d + AXI_DB), strb(AXI_DB);
    for (int i = 0; i < AXI_DB; i++) strb[i] = (OUT(wstrb) >> i) & 1;
    if (p.pend_w) {
        if (!wv) fatal("out: WVALID dropped before WREADY");
        if (data != p.p_data || strb != p.p_strb || (int)OUT(wlast) != p.p_last)
            fatal("out: W payload changed while waiting for WREADY");
    }
    bool wacc = wv && tokens >= AXI_DB && chance();
    OUT(wready) = wacc;
    if (wv) { p.p_data = data; p.p_strb = strb; p.p_last = OUT(wlast); }
    p.pend_w = wv && !wacc;
    if (wacc) {
        tokens -= AXI_DB;
        p.st.beats++;
        p.early_data.push_back(data); p.early_strb.push_back(strb); p.early_last.push_back(OUT(wlast));
    }
    // match W beats with AWs in order
    for (auto& j : p.aw) {
        if (j.complete) continue;
        while (!p.early_data.empty() && j.got < j.len) {
            uint64_t a = j.addr + (uint64_t)j.got * AXI_DB;
            bool last = p.early_last.front();
            if (last != (j.got == j.len - 1)) fatal("out: WLAST is not on the last beat of its burst");
            if (!j.resp) {
                Region* r = find(a, AXI_DB);
                for (int i = 0; i < AXI_DB; i++)
                    if (p.early_strb.front()[i]) { r->data[a - r->lo + i] = p.early_data.front()[i]; p.st.bytes++; }
            }
            p.early_data.pop_front(); p.early_strb.pop_front(); p.early_last.pop_front();
            j.got++;
        }
        if (j.got == j.len) { j.complete = true; p.bq.push_back({cycle + latency, j.resp}); }
        break;   // W beats belong to the oldest incomplete AW
    }
    while (!p.aw.empty() && p.aw.front().complete) p.aw.pop_front();
    // B channel
    bool give = p.b_hold || (!p.bq.empty() && p.bq.front().first <= cycle && chance());
    OUT(bvalid) = give;
    OUT(bresp) = give ? p.bq.front().second : (rng() & 3);
}
static void write_port_after() {
    WritePort& p = wport;
    if (OUT(bvalid)) {
        if (OUT(bready)) { p.b_hold = false; p.bq.pop_front(); }
        else p.b_hold = true;
    }
}

// ---- clock ------------------------------------------------------------------------------------
struct Snap { uint32_t index; uint64_t addr, len; std::string file; bool done = false; };
static std::vector<Snap> snaps;
static uint32_t last_exec = 0;

static void tick() {
    // Slave outputs for this cycle from the masters' registered outputs.
    top->ap_clk = 0;
    top->eval();
    tokens = std::min(tokens + bw, 8.0 * AXI_DB * 4 + bw);
    int n = rports.size();
    for (int i = 0; i < n; i++) read_port_step(rports[(i + cycle) % n]);
    for (int i = 0; i < n; i++) read_data_step(rports[(i + cycle) % n]);
    write_port_step();
    top->eval();
    for (auto& p : rports) read_data_after(p);
    write_port_after();
    top->ap_clk = 1;
    top->eval();
#ifdef TRACE
    if (vcd && cycle >= trace_from && cycle < trace_to) { vcd->dump(2 * cycle); vcd->dump(2 * cycle + 1); }
#endif
    cycle++;
    uint32_t executed = top->rootp->cnn_accel__DOT__executed;
    if (executed != last_exec) {
        uint32_t index = top->rootp->cnn_accel__DOT__d_index;
        for (auto& s : snaps) {
            if (s.index != index) continue;
            Region* r = find(s.addr, s.len);
            if (!r) fatal("snap outside the declared memory");
            std::ofstream f(s.file, std::ios::binary);
            f.write((const char*)&r->data[s.addr - r->lo], s.len);
            s.done = true;
        }
        last_exec = executed;
    }
}

// AXI-Lite master: one transaction at a time, VALIDs held until READY.
static uint32_t lite_read(uint32_t a) {
    top->s_axi_control_araddr = a; top->s_axi_control_arvalid = 1; top->s_axi_control_rready = 1;
    int guard = 0;
    while (true) { top->ap_clk = 0; top->eval(); bool r = top->s_axi_control_arready; tick(); if (r) break; if (++guard > 1000) fatal("AXI-Lite AR hangs"); }
    top->s_axi_control_arvalid = 0;
    while (true) {
        top->ap_clk = 0; top->eval();
        if (top->s_axi_control_rvalid) { uint32_t v = top->s_axi_control_rdata; tick(); top->s_axi_control_rready = 0; return v; }
        tick();
        if (++guard > 2000) fatal("AXI-Lite R hangs");
    }
}
static void lite_write(uint32_t a, uint32_t v) {
    top->s_axi_control_awaddr = a; top->s_axi_control_awvalid = 1;
    top->s_axi_control_wdata = v; top->s_axi_control_wstrb = 0xF; top->s_axi_control_wvalid = 1;
    top->s_axi_control_bready = 1;
    bool aw = false, w = false;
    int guard = 0;
    while (!(aw && w)) {
        top->ap_clk = 0; top->eval();
        bool ar = top->s_axi_control_awready && !aw, wr = top->s_axi_control_wready && !w;
        tick();
        if (ar) { aw = true; top->s_axi_control_awvalid = 0; }
        if (wr) { w = true; top->s_axi_control_wvalid = 0; }
        if (++guard > 1000) fatal("AXI-Lite write hangs");
    }
    while (true) { top->ap_clk = 0; top->eval(); bool b = top->s_axi_control_bvalid; tick(); if (b) break; if (++guard > 2000) fatal("AXI-Lite B hangs"); }
    top->s_axi_control_bready = 0;
}

#define RP(N) do { ReadPort p; p.name = #N; \
    p.araddr = (uint64_t*)&top->m_axi_##N##_araddr; p.arlen = &top->m_axi_##N##_arlen; \
    p.arsize = &top->m_axi_##N##_arsize; p.arburst = &top->m_axi_##N##_arburst; \
    p.arvalid = &top->m_axi_##N##_arvalid; p.arready = &top->m_axi_##N##_arready; \
    p.rresp = &top->m_axi_##N##_rresp; p.rlast = &top->m_axi_##N##_rlast; \
    p.rvalid = &top->m_axi_##N##_rvalid; p.rready = &top->m_axi_##N##_rready; \
    p.set_rdata = [](const uint8_t* b) { put_bytes(top->m_axi_##N##_rdata, b); }; \
    rports.push_back(p); } while (0)

int main(int argc, char** argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s SCRIPT OUT\n", argv[0]); return 2; }
    Verilated::commandArgs(1, argv);
    out = fopen(argv[2], "w");
    top = new Vcnn_accel;
#ifdef TRACE
    // FPGA_SERVE_TRACE=file.vcd[:from[:to]] (cycles)
    if (const char* t = getenv("FPGA_SERVE_TRACE")) {
        std::string spec(t), file = spec;
        size_t c1 = spec.find(':');
        if (c1 != std::string::npos) {
            file = spec.substr(0, c1);
            std::string rest = spec.substr(c1 + 1);
            size_t c2 = rest.find(':');
            trace_from = std::stoull(rest.substr(0, c2));
            if (c2 != std::string::npos) trace_to = std::stoull(rest.substr(c2 + 1));
        }
        Verilated::traceEverOn(true);
        vcd = new VerilatedVcdC;
        top->trace(vcd, 99);
        vcd->open(file.c_str());
    }
#endif
    RP(wt0); RP(wt1); RP(in); RP(rs);
    top->ap_rst_n = 0;
    for (int i = 0; i < 4; i++) tick();
    top->ap_rst_n = 1;
    tick();
    std::ifstream script(argv[1]);
    std::string line;
    while (std::getline(script, line)) {
        std::istringstream in(line);
        std::string cmd;
        if (!(in >> cmd) || cmd[0] == '#') continue;
        if (cmd == "region") {
            uint64_t a, n; std::string ro; in >> std::hex >> a >> n >> ro;
            regions.push_back({a, a + n, ro == "ro", std::vector<uint8_t>(n, 0)});
        } else if (cmd == "load") {
            uint64_t a; std::string f; in >> std::hex >> a >> f;
            std::ifstream fh(f, std::ios::binary);
            std::vector<uint8_t> b((std::istreambuf_iterator<char>(fh)), {});
            Region* r = find(a, b.size());
            if (!r) fatal("load outside the declared memory");
            memcpy(&r->data[a - r->lo], b.data(), b.size());
        } else if (cmd == "ddr") {
            uint64_t seed; in >> std::dec >> latency >> bw >> stall >> seed; rng.seed(seed);
        } else if (cmd == "limits") {
            in >> std::dec >> max_burst >> max_out;
        } else if (cmd == "error") {
            std::string port; uint64_t lo, hi; int resp; in >> port >> std::hex >> lo >> hi >> std::dec >> resp;
            bool hit = false;
            for (auto& p : rports) if (p.name == port) { p.errs.push_back({lo, hi, resp}); hit = true; }
            if (port == "out") { wport.errs.push_back({lo, hi, resp}); hit = true; }
            if (!hit) fatal("unknown port " + port);
        } else if (cmd == "clear_errors") {
            for (auto& p : rports) p.errs.clear();
            wport.errs.clear();
        } else if (cmd == "write") {
            uint32_t a, v; in >> std::hex >> a >> v; lite_write(a, v);
        } else if (cmd == "read") {
            uint32_t a; in >> std::hex >> a; fprintf(out, "read %x %x\n", a, lite_read(a));
        } else if (cmd == "poll") {
            uint32_t a, m; uint64_t t; in >> std::hex >> a >> m >> std::dec >> t;
            uint64_t start = cycle; bool ok = false;
            while (cycle - start < t) { if (lite_read(a) & m) { ok = true; break; } for (int i = 0; i < 64; i++) tick(); }
            if (ok) fprintf(out, "poll ok %llu\n", (unsigned long long)(cycle - start));
            else fprintf(out, "poll timeout\n");
        } else if (cmd == "irq") {
            uint64_t t; in >> std::dec >> t; uint64_t start = cycle;
            while (!top->__SYM__interrupt && cycle - start < t) tick();
            if (top->__SYM__interrupt) fprintf(out, "irq ok %llu\n", (unsigned long long)(cycle - start));
            else fprintf(out, "irq timeout\n");
        } else if (cmd == "wait") {
            uint64_t t; in >> std::dec >> t; for (uint64_t i = 0; i < t; i++) tick();
        } else if (cmd == "snap") {
            Snap s; in >> std::dec >> s.index >> std::hex >> s.addr >> s.len >> s.file; snaps.push_back(s);
        } else if (cmd == "dump") {
            uint64_t a, n; std::string f; in >> std::hex >> a >> n >> f;
            Region* r = find(a, n);
            if (!r) fatal("dump outside the declared memory");
            std::ofstream fh(f, std::ios::binary);
            fh.write((const char*)&r->data[a - r->lo], n);
        } else if (cmd == "stats") {
            for (auto& p : rports)
                fprintf(out, "port %s bursts %llu beats %llu bytes %llu maxout %d\n", p.name.c_str(),
                        (unsigned long long)p.st.bursts, (unsigned long long)p.st.beats,
                        (unsigned long long)p.st.bytes, p.st.maxout);
            fprintf(out, "port out bursts %llu beats %llu bytes %llu maxout %d\n",
                    (unsigned long long)wport.st.bursts, (unsigned long long)wport.st.beats,
                    (unsigned long long)wport.st.bytes, wport.st.maxout);
            fprintf(out, "cycles %llu executed %u index %u\n", (unsigned long long)cycle,
                    (unsigned)top->rootp->cnn_accel__DOT__executed, (unsigned)top->rootp->cnn_accel__DOT__d_index);
        } else fatal("unknown script command " + cmd);
        fflush(out);
    }
    fprintf(out, "end %llu\n", (unsigned long long)cycle);
    fclose(out);
#ifdef TRACE
    if (vcd) vcd->close();
#endif
    top->final();
    delete top;
    return 0;
}
