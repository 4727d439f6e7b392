// In-process tests of the binding path: scripted client first flights and scripted backends
// on net_ring ports, against a real BPF flow map.
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include "dp_test_env.h"
#include "flow_install.h"
#include "kvsteer/icmp.h"
#include "port_recovery.h"
#include "kvsteer/cookie.h"
#include "kvsteer/csum.h"
#include "kvsteer/core/maglev.h"
#include "kvsteer/rewrite.h"

using namespace kvsteer;
using namespace kvsteer::dp;
using namespace kvsteer::dp::test;

namespace {

// CLOCK_MONOTONIC in milliseconds, truncated to 32 bits: the backend leg's timestamp clock.
std::uint32_t mono_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint32_t>(static_cast<std::uint64_t>(ts.tv_sec) * 1000 +
                                      ts.tv_nsec / 1000000);
}

class EalEnv : public ::testing::Environment {
   public:
    void SetUp() override { ASSERT_TRUE(init_eal()) << "rte_eal_init failed"; }
};
[[maybe_unused]] auto *const g_env = ::testing::AddGlobalTestEnvironment(new EalEnv);

std::string request(std::size_t body_bytes) {
    std::string body = R"({"model":"m","messages":[{"role":"system","content":")";
    while (body.size() < body_bytes - 4) body += static_cast<char>('a' + body.size() % 26);
    body += R"("}]})";
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: kv\r\nContent-Type: application/json\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
}

// A request head cut off in the middle of a header name: the slowloris shape.
constexpr const char *kIncompleteHead =
    "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Le";

class BindTest : public ::testing::Test {
   protected:
    void SetUp() override {
        static int n = 0;
        tables = make_tables(3, true);
        tables->config.prefix_len = 256;  // hash depth beyond the request: binds on completion
        tables->config.block_size = 512;
        tables->config.max_blocks = 4;
        rp = make_ring_port("kvdp_t" + std::to_string(n++), 2047);
        hz = rte_get_tsc_hz();
        now = rte_rdtsc();
    }
    // The port and its mempool go back: DPDK has only RTE_MAX_ETHPORTS ports, and a port id's
    // next user names its mempool after it.
    void TearDown() override {
        worker.reset();
        drain(rp.tx);
        rte_eth_dev_stop(rp.port);
        rte_eth_dev_close(rp.port);
        rte_mempool_free(rp.pool);
    }
    void make_worker(Mode mode = Mode::Xdp, std::uint32_t max_pending = 64,
                     std::uint32_t per_source = 256, std::uint32_t backend_pool = 0) {
        WorkerParams wp;
        wp.opts.mode = mode;
        wp.opts.max_pending = max_pending;
        wp.opts.max_held_per_source = per_source;
        wp.opts.max_held_packets_per_source = packets_per_source;
        wp.opts.max_flows_per_source = flows_per_source;
        wp.opts.backend_syn_timeout_ms = 100;
        wp.opts.backend_syn_retries = 1;
        wp.opts.max_candidates = 3;
        wp.opts.client_idle_timeout_ms = 1000;
        wp.opts.bind_gap_us = 2000;
        wp.opts.backend_pool = backend_pool;
        wp.opts.backend_pool_min = backend_pool;  // a fixed pool: legs opened ahead
        wp.syn_buckets = syn_buckets;
        wp.port = rp.port;
        wp.pool = rp.pool;
        ports = std::make_unique<PortBusy>();
        wp.ports = ports.get();
        if (mode == Mode::Dpdk) tables->flows_fd = -1;
        worker = std::make_unique<Worker>(tables->view(), wp);
    }
    std::uint64_t ms(std::uint64_t v) const { return v * hz / 1000; }
    std::uint32_t packets_per_source = 0;  // make_worker's max_held_packets_per_source
    std::uint32_t flows_per_source = 0;    // make_worker's max_flows_per_source
    SynBuckets *syn_buckets = nullptr;     // make_worker's shared SYN-ACK buckets (null: its own)
    std::vector<std::vector<std::uint8_t>> step(std::uint64_t at) {
        worker->poll(at);
        return drain(rp.tx);
    }
    // The connection from client port `port` (and address `from`, else the client's) to the VIP,
    // as the cookie hashes it.
    kvs_cookie_tuple cookie_tuple(std::uint16_t port, std::uint32_t from = 0) const {
        kvs_cookie_tuple t{};
        t.saddr[0] = from ? from : client_ip;
        t.daddr[0] = vip;
        t.sport = htons(port);
        t.dport = htons(8000);
        return t;
    }
    // Whether `c` passes the cookie check for the client's connection now (`co`: its options).
    bool cookie_passes(std::uint32_t c, kvs_cookie_opts *co) const {
        const kvs_cookie_tuple t = cookie_tuple(cport);
        return kvs_cookie_check(&tables->config.cookie_key[0][0], &t, c,
                                kvs_cookie_slot(kvs_cookie_now_tai_ns(), 64), co) == 1;
    }
    std::uint32_t cookie_for(std::uint16_t cport, std::uint32_t from = 0) {
        const kvs_cookie_tuple t = cookie_tuple(cport, from);
        return kvs_cookie_make(tables->config.cookie_key[0], &t,
                               kvs_cookie_slot(kvs_cookie_now_tai_ns(), 64),
                               kvs_cookie_pack_opts(1460, 7, 1));
    }
    // The cookie and the TSval our SYN-ACK carried (the client's ISN under the cookie's hash),
    // which every first-flight segment then echoes.
    void sign_synack() {
        const kvs_cookie_tuple t = cookie_tuple(cport);
        kvs_cookie_sign(tables->config.cookie_key[0], &t,
                        kvs_cookie_slot(kvs_cookie_now_tai_ns(), 64),
                        kvs_cookie_pack_opts(1460, 7, 1), isn, &cookie, &t_ours);
    }
    // n connections from the client address (ports first_port..) that each send an incomplete
    // request head and then nothing: the slowloris shape.
    void hold_incomplete_heads(unsigned n, std::uint16_t first_port) {
        for (unsigned k = 0; k < n; ++k) {
            Seg s = client_seg(0, kIncompleteHead, 5);
            s.sport = static_cast<std::uint16_t>(first_port + k);
            s.ack = cookie_for(s.sport) + 1;
            inject(rp.rx, make_seg(rp.pool, s));
        }
    }
    // A whole request from another client address binds at once (a SYN at `at`).
    void expect_another_address_binds(std::uint64_t at) {
        Seg other = client_seg(0, request(600), 5);
        other.saddr = ip4("10.77.0.11");
        other.ack = cookie_for(other.sport, other.saddr) + 1;
        inject(rp.rx, make_seg(rp.pool, other));
        auto out = step(at);
        ASSERT_EQ(out.size(), 1u) << "another address binds at once";
        EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN);
    }
    // n first flights from the client address (ports first_port..), each a whole request: the
    // SYNs the worker sends for them, in the flights' order.
    std::vector<std::vector<std::uint8_t>> open_flows(unsigned n, std::uint16_t first_port) {
        for (unsigned k = 0; k < n; ++k) {
            Seg s = client_seg(0, request(600), 5);
            s.sport = static_cast<std::uint16_t>(first_port + k);
            s.ack = cookie_for(s.sport) + 1;
            inject(rp.rx, make_seg(rp.pool, s));
        }
        return step(now);
    }
    // The client entry's key in kvs_flows: client_ip:cport -> the VIP (IPv4).
    kvs_flow_key client_key() const {
        kvs_flow_key k{};
        k.saddr[0] = client_ip;
        k.daddr[0] = vip;
        k.sport = htons(cport);
        k.dport = htons(8000);
        k.family = KVS_AF_INET;
        k.proto = KVS_IPPROTO_TCP;
        return k;
    }
    Seg client_seg(std::uint32_t off, const std::string &payload, std::uint32_t tsval) {
        Seg s{};
        s.saddr = client_ip;
        s.daddr = vip;
        s.sport = cport;
        s.dport = 8000;
        s.seq = isn + 1 + off;
        s.ack = cookie + 1;
        s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
        s.ts = true;
        s.tsval = tsval;
        s.tsecr = t_ours;
        s.payload = payload;
        return s;
    }
    // The client's SYN (with `flags`) to the VIP from port `port`.
    Seg syn_seg(std::uint8_t flags = KVS_TCP_SYN, std::uint16_t port = 0) {
        Seg s{};
        s.saddr = client_ip;
        s.daddr = vip;
        s.sport = port ? port : cport;
        s.dport = 8000;
        s.seq = isn;
        s.flags = flags;
        return s;
    }
    Seg backend_seg(const kvs_pkt &syn, std::uint8_t flags) {
        Seg s{};
        s.saddr = syn.ip4->daddr;
        s.daddr = syn.ip4->saddr;
        s.sport = ntohs(syn.tcp->dest);
        s.dport = ntohs(syn.tcp->source);
        s.seq = bisn;
        s.ack = isn + 1;
        s.flags = flags;
        s.smac = backend_mac;
        return s;
    }
    // The backend's SYN-ACK to `syn`: MSS 1460, window scale 9, SACK, timestamps (TSval tb).
    Seg synack_to(const kvs_pkt &syn) {
        Seg sa = backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK);
        sa.mss = 1460;
        sa.wscale = 9;
        sa.sack_perm = true;
        sa.ts = true;
        sa.tsval = tb;
        sa.tsecr = syn.opts.tsval;
        return sa;
    }
    int backend_of(const kvs_pkt &p) const {
        for (unsigned i = 0; i < 3; ++i)
            if (tables->backends[i].addr[0] == p.ip4->daddr) return static_cast<int>(i);
        return -1;
    }
    std::uint64_t stat(unsigned r) const { return worker->counter(r); }
    // Per-request steering, up to a request boundary: a connection bound (round robin) to a
    // backend other than the one a fresh connection with `second` reaches (`fresh`, probed from
    // another client port), its entries then marked REBINDING as XDP marks them at a boundary
    // (the 100-byte response complete and acknowledged, TSval 90000 the last sent to the client).
    // `leg_ts`: the backend's SYN-ACK to the first request has timestamps, SACK, window scaling.
    struct Boundary {
        std::string req1, second;
        int fresh = -1, be1 = -1;
        kvs_flow_key kc{}, ks{};
        kvs_flow fc{}, fs{};
        std::uint32_t S = 0;  // the client's next byte: the boundary
        std::uint16_t old_port = 0;
    };
    // The request at the boundary `b` (its segment `r2`, punted by XDP) moves to `b.fresh`: its
    // SYN there (the client's sequence space and options, a new SNAT port), answered with a
    // SYN-ACK (ISN 0x20000000, TSval 777); what the worker sends then is in `out`.
    // `during_hold`: called while the new leg's SYN waits for its answer.
    void move_request(const Boundary &b, const Seg &r2, std::vector<std::vector<std::uint8_t>> &out,
                      const std::function<void()> &during_hold = {}) {
        inject(rp.rx, make_seg(rp.pool, r2));
        out = step(now + ms(100));  // past the first binding's local linger
        ASSERT_EQ(out.size(), 1u);
        if (during_hold) during_hold();
        kvs_pkt syn2 = parse(out[0]);
        EXPECT_EQ(syn2.tcp->flags, KVS_TCP_SYN);
        EXPECT_EQ(backend_of(syn2), b.fresh) << "the policy's choice for this request";
        EXPECT_EQ(ntohl(syn2.tcp->seq), b.S - 1) << "the new leg keeps the client's sequence space";
        EXPECT_EQ(syn2.opts.wscale, 7) << "the client's handshake options, kept in its entry";
        EXPECT_NE(ntohs(syn2.tcp->source), b.old_port);
        Seg sa2 = backend_seg(syn2, KVS_TCP_SYN | KVS_TCP_ACK);
        sa2.seq = 0x20000000u;
        sa2.ack = b.S;
        sa2.ts = true;
        sa2.tsval = 777;
        sa2.tsecr = syn2.opts.tsval;
        inject(rp.rx, make_seg(rp.pool, sa2));
        out = step(now + ms(101));
    }
    // The connection's next request at the boundary `b`, as XDP punts it (its ack: the whole
    // 100-byte response), with TSval `tsval`.
    Seg next_request(const Boundary &b, std::uint32_t tsval = 7) {
        Seg r2 = client_seg(static_cast<std::uint32_t>(b.req1.size()), b.second, tsval);
        r2.ack = cookie + 1 + 100;
        r2.punt_bound = true;  // XDP's tag on what it hands over at a boundary
        return r2;
    }
    void expect_old_leg_reset(const std::function<void(Boundary &)> &before_move);
    // What the worker sent (`out`) is the request at boundary `b` alone, on its old leg.
    void expect_on_old_leg(const Boundary &b, std::vector<std::vector<std::uint8_t>> &out) {
        ASSERT_EQ(out.size(), 1u) << "the request on its old leg, nothing else";
        kvs_pkt data = parse(out[0]);
        EXPECT_EQ(backend_of(data), b.be1);
        EXPECT_EQ(ntohs(data.tcp->source), b.old_port);
        EXPECT_EQ(data.payload_len, b.second.size());
        EXPECT_EQ(data.tcp->doff_res & KVS_TCP_RES_PUNT_BOUND, 0) << "XDP's tag is not sent on";
        EXPECT_TRUE(checksums_ok(out[0]));
    }
    void expect_idle_leg_reset(std::uint64_t idle_s);
    void close_after_resume(std::uint8_t flags, bool from_backend = false);
    // A connection bound with a 600-byte request (the policy's backend, timestamps on the leg:
    // b.be1), then XDP's view at a boundary: the 100-byte response complete and acknowledged,
    // both entries marked. b.S: the client's next byte.
    void bind_then_mark(Boundary &b) {
        cookie = cookie_for(cport);
        b.req1 = request(600);
        inject(rp.rx, make_seg(rp.pool, client_seg(0, b.req1, 6)));
        auto out = step(now);
        ASSERT_EQ(out.size(), 1u);
        kvs_pkt syn = parse(out[0]);
        b.be1 = backend_of(syn);
        inject(rp.rx, make_seg(rp.pool, synack_to(syn)));
        out = step(now + ms(1));
        ASSERT_EQ(out.size(), 2u) << "ACK + the request";
        b.kc = client_key();
        ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &b.kc, &b.fc), 0);
        kvs_flow_reverse_key(&b.kc, &b.fc, &b.ks);
        ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &b.ks, &b.fs), 0);
        b.S = isn + 1 + static_cast<std::uint32_t>(b.req1.size());
        b.fs.next_seq = bisn + 1 + 100;
        b.fs.resp_end = b.fs.next_seq;
        b.fc.state |= KVS_FLOW_REBINDING;
        b.fs.state |= KVS_FLOW_REBINDING;
        ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &b.kc, &b.fc, BPF_EXIST), 0);
        ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &b.ks, &b.fs, BPF_EXIST), 0);
    }
    void bind_to_boundary(bool leg_ts, Boundary &b) {
        // Where a fresh connection with the second request lands (another client port).
        std::string &second = b.second;
        second = request(700);
        second[second.size() - 10] = 'Z';  // a distinct prompt tail, same length
        cookie = cookie_for(cport + 1);
        {
            Seg s = client_seg(0, second, 5);
            s.sport = static_cast<std::uint16_t>(cport + 1);
            inject(rp.rx, make_seg(rp.pool, s));
        }
        auto out = step(now);
        ASSERT_EQ(out.size(), 1u);
        const int fresh = b.fresh = backend_of(parse(out[0]));
        ASSERT_GE(fresh, 0);
        {  // the probe is done with: its client resets (no SYN retries from it later)
            Seg r = client_seg(0, "", 5);
            r.sport = static_cast<std::uint16_t>(cport + 1);
            r.flags = KVS_TCP_RST;
            inject(rp.rx, make_seg(rp.pool, r));
            step(now);
        }
        // The connection under test: bound to another backend than that.
        cookie = cookie_for(cport);
        const std::string &req1 = b.req1 = request(600);
        tables->config.steer_mode =
            KVS_STEER_ROUND_ROBIN;  // first request: any backend but `fresh`
        int &be1 = b.be1;
        for (int tries = 0; tries < 3 && be1 < 0; ++tries) {
            inject(rp.rx, make_seg(rp.pool, client_seg(0, req1, 6)));
            out = step(now);
            ASSERT_EQ(out.size(), 1u);
            kvs_pkt syn = parse(out[0]);
            if (backend_of(syn) == fresh) {  // reset by the backend: the next candidate
                inject(rp.rx, make_seg(rp.pool, backend_seg(syn, KVS_TCP_RST | KVS_TCP_ACK)));
                continue;
            }
            be1 = backend_of(syn);
            inject(rp.rx, make_seg(rp.pool, leg_ts ? synack_to(syn)
                                                   : backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK)));
            out = step(now + ms(1));
            ASSERT_EQ(out.size(), 2u) << "ACK + the request";
        }
        ASSERT_GE(be1, 0);
        ASSERT_NE(be1, fresh);
        tables->config.steer_mode = KVS_STEER_PREFIX;

        // XDP's view at the boundary: the response (100 bytes) complete and acknowledged, both
        // entries marked.
        const kvs_flow_key kc = b.kc = client_key();
        kvs_flow &fc = b.fc, &fs = b.fs;
        ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &kc, &fc), 0);
        const std::uint32_t S = b.S = isn + 1 + static_cast<std::uint32_t>(req1.size());
        EXPECT_EQ(fc.next_seq, S) << "tracking starts after the flushed request";
        EXPECT_EQ(fc.resp_end, S) << "where the request ends: the next one may start there only";
        EXPECT_EQ(fc.resp, KVS_RESP_END);
        EXPECT_EQ(fc.client_wscale, 7);
        kvs_flow_key &ks = b.ks;
        kvs_flow_reverse_key(&kc, &fc, &ks);
        ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &ks, &fs), 0);
        b.old_port = ntohs(fc.new_sport);
        fs.next_seq = bisn + 1 + 100;
        fs.ts_last = 90000;
        fc.state |= KVS_FLOW_REBINDING;
        fs.state |= KVS_FLOW_REBINDING;
        ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &kc, &fc, BPF_EXIST), 0);
        ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &ks, &fs, BPF_EXIST), 0);
    }

    std::unique_ptr<MemTables> tables;
    RingPort rp;
    std::unique_ptr<PortBusy> ports;
    std::unique_ptr<Worker> worker;
    std::uint64_t hz = 0, now = 0;
    const std::uint32_t client_ip = ip4("10.77.0.10"), vip = ip4("10.77.1.1");
    const std::uint16_t cport = 43210;
    std::uint32_t isn = 0xfffffff0u;  // the client's sequence space wraps inside the request
    std::uint32_t t_ours = 777;       // our SYN-ACK's TSval as the client echoes it (777: not ours)
    const std::uint32_t bisn = 0x10000000u, tb = 555555;
    std::uint32_t cookie = 0;
    const std::uint8_t backend_mac[6] = {0x02, 0, 0, 0, 9, 9};
};

// The SNAT port tables of the configured backends exist before any binding (320 KB each, written
// and faulted in off the packet path); a backend added later gets its own at the next 10 ms tick.
TEST_F(BindTest, PortTablesAreReadyBeforeTheFirstBinding) {
    make_worker();
    for (std::uint16_t b = 0; b < 3; ++b) EXPECT_NE(ports->find(b), nullptr) << "backend " << b;
    EXPECT_EQ(ports->find(3), nullptr) << "no backend there";
    step(now);  // the first poll's tick
    tables->backends[3] = tables->backends[2];
    tables->backends[3].addr[0] = ip4("10.77.2.99");
    tables->config.n_backends = 4;
    step(now + ms(1));
    EXPECT_EQ(ports->find(3), nullptr) << "not before the tick";
    step(now + ms(20));
    EXPECT_NE(ports->find(3), nullptr);
}

TEST_F(BindTest, HoldsFirstFlightThenSynWithClientIsnAndOptions) {
    make_worker();
    cookie = cookie_for(cport);
    const std::string req = request(1500);
    const std::size_t cuts[] = {0, 37, 300, 1000, req.size()};  // mid request line, mid JSON
    auto part = [&](int i) { return req.substr(cuts[i], cuts[i + 1] - cuts[i]); };
    inject(rp.rx, make_seg(rp.pool, client_seg(cuts[0], part(0), 1000)));
    inject(rp.rx, make_seg(rp.pool, client_seg(cuts[0], part(0), 1000)));  // duplicate
    inject(rp.rx, make_seg(rp.pool, client_seg(cuts[2], part(2), 1002)));  // out of order
    inject(rp.rx, make_seg(rp.pool, client_seg(cuts[1], part(1), 1001)));
    EXPECT_TRUE(step(now).empty()) << "nothing may be sent before the request is complete";
    EXPECT_EQ(stat(KVS_R_DP_DUP_SEGMENT), 1u);
    inject(rp.rx, make_seg(rp.pool, client_seg(cuts[3], part(3), 1003)));
    const std::uint32_t ms_before = mono_ms();
    auto out = step(now);
    const std::uint32_t ms_after = mono_ms();
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    ASSERT_NE(syn.tcp, nullptr);
    EXPECT_EQ(syn.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(ntohl(syn.tcp->seq), isn) << "the backend SYN carries the client's own ISN";
    EXPECT_EQ(syn.ip4->saddr, ip4("10.77.0.2"));
    EXPECT_GE(ntohs(syn.tcp->source), 10000);
    EXPECT_LE(ntohs(syn.tcp->source), 10999);
    EXPECT_EQ(ntohs(syn.tcp->dest), 8000);
    EXPECT_GE(backend_of(syn), 0);
    EXPECT_EQ(syn.opts.mss, 1460);
    EXPECT_EQ(syn.opts.wscale, 7);
    EXPECT_EQ(syn.opts.sack_perm, 1);
    ASSERT_NE(syn.opts.ts_off, 0);
    // The backend leg runs on the appliance's monotonic millisecond clock (a backend holding
    // the SNAT 4-tuple in TIME_WAIT accepts a SYN with a newer timestamp).
    EXPECT_GE(syn.opts.tsval, ms_before);
    EXPECT_LE(syn.opts.tsval, ms_after);
    EXPECT_TRUE(checksums_ok(out[0]));
    EXPECT_EQ(0, std::memcmp(syn.eth->dst, tables->backends[backend_of(syn)].mac, 6));
    EXPECT_EQ(stat(KVS_R_DP_KEY_OPENAI_CHAT), 1u);
}

TEST_F(BindTest, SynAckFlushesHeldSegmentsRewrittenAndInstallsBothEntries) {
    make_worker();
    cookie = cookie_for(cport);
    const std::string req = request(2500);
    const std::size_t cuts[] = {0, 1, 1448, req.size()};
    for (int i : {0, 2, 1}) {
        auto s = client_seg(cuts[i], req.substr(cuts[i], cuts[i + 1] - cuts[i]), 2000 + i);
        s.window = 1234;
        inject(rp.rx, make_seg(rp.pool, s));
    }
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    const int be = backend_of(syn);
    ASSERT_GE(be, 0);
    const std::uint16_t snat_port = ntohs(syn.tcp->source);

    const Seg sa = synack_to(syn);
    inject(rp.rx, make_seg(rp.pool, sa));
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 4u) << "ACK + three held segments";
    kvs_pkt ack = parse(out[0]);
    EXPECT_EQ(ack.tcp->flags, KVS_TCP_ACK);
    EXPECT_EQ(ntohl(ack.tcp->seq), isn + 1);
    EXPECT_EQ(ntohl(ack.tcp->ack_seq), bisn + 1);
    EXPECT_EQ(ntohs(ack.tcp->window), 1234);
    EXPECT_EQ(ack.opts.tsecr, tb);
    // Client TSvals 2000..2002 moved onto the SYN's clock from the flight's earliest (2000): no
    // held segment is older than what the SYN and the ACK told the backend (PAWS).
    const std::uint32_t ts_delta = syn.opts.tsval - 2000;
    EXPECT_EQ(ack.opts.tsval, 2000 + ts_delta);
    std::string flushed;
    for (int i = 1; i <= 3; ++i) {
        kvs_pkt p = parse(out[i]);
        ASSERT_NE(p.tcp, nullptr);
        EXPECT_TRUE(checksums_ok(out[i])) << "segment " << i;
        EXPECT_EQ(p.ip4->saddr, ip4("10.77.0.2"));
        EXPECT_EQ(p.ip4->daddr, tables->backends[be].addr[0]);
        EXPECT_EQ(ntohs(p.tcp->source), snat_port);
        EXPECT_EQ(ntohs(p.tcp->dest), 8000);
        EXPECT_EQ(ntohl(p.tcp->ack_seq), bisn + 1) << "acks translated into the backend's space";
        EXPECT_EQ(p.opts.tsecr, tb) << "echoed timestamp translated to the backend's clock";
        EXPECT_EQ(p.opts.tsval, 2000 + static_cast<std::uint32_t>(i - 1) + ts_delta)
            << "TSval on the backend leg's clock";
        EXPECT_EQ(ntohl(p.tcp->seq), isn + 1 + static_cast<std::uint32_t>(cuts[i - 1]));
        EXPECT_EQ(0, std::memcmp(p.eth->dst, tables->backends[be].mac, 6));
        flushed.append(reinterpret_cast<const char *>(p.tcp) + p.tcp_hlen, p.payload_len);
    }
    EXPECT_EQ(flushed, req) << "held bytes flushed byte-identical, in order";

    const kvs_flow_key kc = client_key();
    kvs_flow fc{}, fs{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &kc, &fc), 0);
    EXPECT_EQ(fc.dir, KVS_DIR_C2S);
    EXPECT_EQ(fc.ack_delta, bisn - cookie);
    EXPECT_EQ(fc.seq_delta, 0u);
    EXPECT_EQ(fc.tsecr_delta, tb - t_ours);
    EXPECT_EQ(fc.tsval_delta, ts_delta);
    EXPECT_EQ(fc.new_daddr[0], tables->backends[be].addr[0]);
    EXPECT_EQ(ntohs(fc.new_sport), snat_port);
    EXPECT_EQ(fc.backend_id, be);
    kvs_flow_key ks{};
    ks.saddr[0] = tables->backends[be].addr[0];
    ks.daddr[0] = ip4("10.77.0.2");
    ks.sport = htons(8000);
    ks.dport = htons(snat_port);
    ks.family = KVS_AF_INET;
    ks.proto = KVS_IPPROTO_TCP;
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &ks, &fs), 0);
    EXPECT_EQ(fs.dir, KVS_DIR_S2C);
    EXPECT_EQ(fs.seq_delta, cookie - bisn);
    EXPECT_EQ(fs.tsval_delta, t_ours - tb);
    EXPECT_EQ(fs.tsecr_delta, 0u - ts_delta)
        << "echoes of the backend leg's clock back to the client's";
    EXPECT_EQ(fs.win_shl, 2) << "backend shift 9, ours 7";
    EXPECT_EQ(fs.new_daddr[0], client_ip);
    EXPECT_EQ(0, std::memcmp(fs.new_dmac, kClientMac, 6)) << "towards the client's source MAC";

    EXPECT_EQ(tables->load[be].binds, 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 1u);
    ASSERT_EQ(tables->ring_ctl[0].head, 1u);
    EXPECT_EQ(tables->ring[0].backend_id, be);
    EXPECT_EQ(tables->ring[0].key_kind, KVS_KEY_OPENAI_CHAT);
    EXPECT_NE(tables->ring[0].prefix_hash, 0u);
    // The choice ran on the worker's clock (CLOCK_MONOTONIC): the intake gate counted the flow.
    EXPECT_EQ(worker->recent_choices().intake[be].milli, 1000u);
    EXPECT_NE(worker->recent_choices().intake[be].at_ns, 0u);
    EXPECT_EQ(worker->recent_choices().intake_family[0].milli, 1000u);  // IPv4

    // A retransmitted SYN-ACK (our ACK lost) is ACKed again, not forwarded to the client.
    inject(rp.rx, make_seg(rp.pool, sa));
    out = step(now + ms(2));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt re = parse(out[0]);
    EXPECT_EQ(re.tcp->flags, KVS_TCP_ACK);
    EXPECT_EQ(re.ip4->daddr, tables->backends[be].addr[0]);
}

// The backend pool: the worker opens a leg to each backend ahead of any client; a first flight
// then takes the chosen backend's leg (no SYN), spliced with sequence deltas both ways.
TEST_F(BindTest, PooledLegCarriesTheFlightWithSequenceDeltasBothWays) {
    make_worker(Mode::Xdp, 64, 256, 1);
    cookie = cookie_for(cport);
    auto out = step(now);
    ASSERT_EQ(out.size(), 3u) << "one leg to each of the 3 backends";
    std::uint32_t leg_isn[3]{};
    std::uint16_t leg_port[3]{};
    for (auto &f : out) {
        kvs_pkt syn = parse(f);
        ASSERT_NE(syn.tcp, nullptr);
        EXPECT_EQ(syn.tcp->flags, KVS_TCP_SYN);
        EXPECT_EQ(syn.opts.mss, 1460);
        EXPECT_EQ(syn.opts.wscale, 7);
        EXPECT_EQ(syn.opts.sack_perm, 1);
        EXPECT_NE(syn.opts.ts_off, 0);
        const int be = backend_of(syn);
        ASSERT_GE(be, 0);
        leg_isn[be] = ntohl(syn.tcp->seq);
        leg_port[be] = ntohs(syn.tcp->source);
        Seg sa = synack_to(syn);
        sa.ack = leg_isn[be] + 1;
        sa.seq = bisn + static_cast<std::uint32_t>(be);
        inject(rp.rx, make_seg(rp.pool, sa));
    }
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 3u) << "each SYN-ACK acknowledged";
    for (auto &f : out) EXPECT_EQ(parse(f).tcp->flags, KVS_TCP_ACK);
    EXPECT_EQ(stat(KVS_R_DP_POOL_OPENED), 3u);

    const std::string req = request(2000);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, req.substr(0, 1400), 3000)));
    inject(rp.rx, make_seg(rp.pool, client_seg(1400, req.substr(1400), 3001)));
    out = step(now + ms(1) + hz / 5000);  // before the next upkeep (every ms)
    ASSERT_EQ(out.size(), 2u) << "no SYN, no ACK: the two held segments, flushed";
    EXPECT_EQ(stat(KVS_R_DP_POOL_DRAWN), 1u);
    kvs_pkt p0 = parse(out[0]);
    const int be = backend_of(p0);
    ASSERT_GE(be, 0);
    const std::uint32_t delta = leg_isn[be] - isn;
    std::string flushed;
    for (int i = 0; i < 2; ++i) {
        kvs_pkt p = parse(out[i]);
        EXPECT_TRUE(checksums_ok(out[i]));
        EXPECT_EQ(ntohs(p.tcp->source), leg_port[be]) << "the leg's own port";
        EXPECT_EQ(ntohl(p.tcp->seq), isn + 1 + (i ? 1400u : 0u) + delta)
            << "the client's bytes in the leg's sequence space";
        EXPECT_EQ(ntohl(p.tcp->ack_seq), bisn + static_cast<std::uint32_t>(be) + 1);
        flushed.append(reinterpret_cast<const char *>(p.tcp) + p.tcp_hlen, p.payload_len);
    }
    EXPECT_EQ(flushed, req);
    kvs_flow_key kc = client_key();
    kvs_flow fc{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &kc, &fc), 0);
    EXPECT_EQ(fc.seq_delta, delta);
    EXPECT_EQ(ntohs(fc.new_sport), leg_port[be]);
    EXPECT_EQ(fc.win_shl, 0);  // the client's shift (7) is the leg's
    EXPECT_EQ(fc.win_shr, 0);
    kvs_flow_key ks{};
    ks.saddr[0] = tables->backends[be].addr[0];
    ks.daddr[0] = ip4("10.77.0.2");
    ks.sport = htons(8000);
    ks.dport = htons(leg_port[be]);
    ks.family = KVS_AF_INET;
    ks.proto = KVS_IPPROTO_TCP;
    kvs_flow fs{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &ks, &fs), 0);
    EXPECT_EQ(fs.ack_delta, 0u - delta) << "the backend's ACKs back into the client's space";
    EXPECT_EQ(fs.seq_delta, cookie - (bisn + static_cast<std::uint32_t>(be)));
    EXPECT_EQ(fs.last_ack, isn + 1 + delta) << "the boundary check compares in the leg's space";
    EXPECT_EQ(tables->load[be].binds, 1u);

    // The drawn leg is replaced at the next upkeep: one SYN, to the same backend.
    out = step(now + ms(4));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt re = parse(out[0]);
    EXPECT_EQ(re.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(backend_of(re), be);
    EXPECT_NE(ntohs(re.tcp->source), leg_port[be]);
}

// A client that half-closes with its request (the FIN in the held flight): the FIN goes to the
// backend with the flush, not through XDP, so the client entry is installed with it recorded
// (KVS_FLOW_FIN_IN). The sweeper ends a flow on a FIN each way: without the record it would
// hold its SNAT port until the idle timeout once the backend's FIN came.
TEST_F(BindTest, ClientFinInTheFlightIsRecordedInTheClientEntry) {
    make_worker();
    cookie = cookie_for(cport);
    const std::string req = request(600);
    Seg c = client_seg(0, req, 2000);
    c.flags = KVS_TCP_ACK | KVS_TCP_PSH | KVS_TCP_FIN;
    inject(rp.rx, make_seg(rp.pool, c));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    ASSERT_EQ(syn.tcp->flags, KVS_TCP_SYN);
    Seg sa = backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK);
    sa.ts = true;
    sa.tsval = tb;
    sa.tsecr = syn.opts.tsval;
    inject(rp.rx, make_seg(rp.pool, sa));
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 2u) << "ACK + the held segment";
    kvs_pkt flushed = parse(out[1]);
    EXPECT_TRUE(flushed.tcp->flags & KVS_TCP_FIN) << "the FIN goes on with the request";
    EXPECT_EQ(flushed.payload_len, req.size());

    const kvs_flow_key kc = client_key();
    kvs_flow fc{}, fs{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &kc, &fc), 0);
    EXPECT_EQ(fc.state, KVS_FLOW_FIN_IN);
    // The FIN counts in the client's next byte: the backend's FIN, which acknowledges it, is then
    // one XDP takes (counted one short, it was refused as acknowledging unsent data).
    EXPECT_EQ(fc.next_seq, isn + 1 + static_cast<std::uint32_t>(req.size()) + 1);
    kvs_flow_key ks;
    kvs_flow_reverse_key(&kc, &fc, &ks);
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &ks, &fs), 0);
    EXPECT_EQ(fs.state, 0) << "the backend has not closed";
}

TEST_F(BindTest, BackendRstAndTimeoutMoveToNextCandidateThenRstClient) {
    make_worker();
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(400), 5)));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    auto frame1 = out[0];  // the parsed view points into it
    kvs_pkt syn1 = parse(frame1);
    const int b1 = backend_of(syn1);
    ASSERT_GE(b1, 0);
    const std::uint16_t p1 = ntohs(syn1.tcp->source);
    EXPECT_EQ(ports->state(static_cast<std::uint16_t>(b1), p1), kPortBinding);

    inject(rp.rx, make_seg(rp.pool, backend_seg(syn1, KVS_TCP_RST | KVS_TCP_ACK)));
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn2 = parse(out[0]);
    const int b2 = backend_of(syn2);
    EXPECT_NE(b2, b1);
    EXPECT_EQ(ntohl(syn2.tcp->seq), isn);
    EXPECT_EQ(tables->load[b1].bind_fail_rst, 1u);
    EXPECT_EQ(stat(KVS_R_DP_BACKEND_RST), 1u);
    // Ports are per backend: the next candidate takes one towards its backend, the first
    // candidate's goes back, and a late answer from it finds no flow.
    EXPECT_EQ(ports->state(static_cast<std::uint16_t>(b1), p1), kPortFree);
    EXPECT_EQ(ports->state(static_cast<std::uint16_t>(b2), ntohs(syn2.tcp->source)), kPortBinding);
    inject(rp.rx, make_seg(rp.pool, synack_to(syn1)));
    EXPECT_TRUE(step(now + ms(1)).empty());
    EXPECT_EQ(stat(KVS_R_PUNT_BACKEND_OTHER), 1u);

    out = step(now + ms(102));  // first timeout: the SYN is retransmitted to the same backend
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(backend_of(parse(out[0])), b2);
    out = step(now + ms(204));  // retries exhausted: the third candidate
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn3 = parse(out[0]);
    const int b3 = backend_of(syn3);
    EXPECT_NE(b3, b1);
    EXPECT_NE(b3, b2);
    EXPECT_EQ(tables->load[b2].bind_fail_timeout, 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_RETRY), 2u);

    inject(rp.rx, make_seg(rp.pool, backend_seg(syn3, KVS_TCP_RST | KVS_TCP_ACK)));
    out = step(now + ms(205));
    ASSERT_EQ(out.size(), 1u) << "no candidate left: RST to the client";
    kvs_pkt rst = parse(out[0]);
    EXPECT_TRUE(rst.tcp->flags & KVS_TCP_RST);
    EXPECT_EQ(rst.ip4->daddr, client_ip);
    EXPECT_EQ(rst.ip4->saddr, vip);
    EXPECT_EQ(ntohl(rst.tcp->seq), cookie + 1);
    EXPECT_EQ(stat(KVS_R_DP_BIND_FAIL_RST_CLIENT), 1u);
    EXPECT_EQ(worker->slot_count(), 0u);
}

TEST_F(BindTest, ChallengeAckFromTimeWaitIsResetAndSynResent) {
    make_worker();
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(400), 5)));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    Seg ca = backend_seg(syn, KVS_TCP_ACK);  // the backend's TIME_WAIT answers with an old ACK
    ca.seq = 777777;
    ca.ack = 123456;
    inject(rp.rx, make_seg(rp.pool, ca));
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 2u);
    kvs_pkt rst = parse(out[0]);
    EXPECT_EQ(rst.tcp->flags, KVS_TCP_RST);
    EXPECT_EQ(ntohl(rst.tcp->seq), 123456u) << "RST with seq = the challenge ACK's ack";
    kvs_pkt again = parse(out[1]);
    EXPECT_EQ(again.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(ntohl(again.tcp->seq), isn);
    EXPECT_EQ(again.tcp->source, syn.tcp->source);
}

// After a restart most of the range can still be taken by the previous instance's flows: a
// new flow must find the one free port wherever the cursor starts.
TEST_F(BindTest, FindsTheLastFreeSnatPort) {
    make_worker();
    const std::uint16_t lo = worker->snat_lo(), hi = worker->snat_hi();
    ASSERT_GT(hi - lo, 300) << "the test needs a range wider than one bounded scan";
    // The one free port (towards each backend): just before the range's middle, so it is far
    // from most cursors.
    const std::uint16_t free_port = static_cast<std::uint16_t>(lo + (hi - lo) / 2);
    for (std::uint16_t be = 0; be < 3; ++be)
        for (std::uint32_t p = lo; p <= hi; ++p)
            if (p != free_port) ports->set_state(be, static_cast<std::uint16_t>(p), kPortInstalled);
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(400), 5)));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    EXPECT_EQ(syn.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(ntohs(syn.tcp->source), free_port);
    EXPECT_EQ(stat(KVS_R_DP_PORTS_EXHAUSTED), 0u);
}

// A backend leg's 4-tuple includes the backend: flows to two backends share one SNAT port, the
// backends' answers reach their own flows, and each pair is installed with it. A flow whose
// candidate has no port left goes to the next; with none anywhere it is refused, counted.
TEST_F(BindTest, FlowsToDifferentBackendsShareASnatPort) {
    make_worker();
    const std::uint16_t lo = worker->snat_lo(), hi = worker->snat_hi();
    const std::uint16_t shared = static_cast<std::uint16_t>(lo + (hi - lo) / 2);
    for (std::uint16_t be = 0; be < 3; ++be)
        for (std::uint32_t p = lo; p <= hi; ++p)
            if (p != shared) ports->set_state(be, static_cast<std::uint16_t>(p), kPortInstalled);
    auto flight = [&](std::uint16_t sport) {
        Seg c = client_seg(0, request(400), 5);
        c.sport = sport;
        c.ack = cookie_for(sport) + 1;
        inject(rp.rx, make_seg(rp.pool, c));
    };
    flight(cport);
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    auto frame1 = out[0];  // the parsed view points into it
    const kvs_pkt syn1 = parse(frame1);
    const int b1 = backend_of(syn1);
    ASSERT_GE(b1, 0);
    EXPECT_EQ(ntohs(syn1.tcp->source), shared);
    EXPECT_EQ(ports->state(static_cast<std::uint16_t>(b1), shared), kPortBinding);

    // The second flow cannot have the first one's backend (down for its choice).
    tables->backends[b1].state = KVS_BE_DOWN;
    const std::uint16_t cport2 = cport + 1;
    flight(cport2);
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 1u);
    auto frame2 = out[0];
    const kvs_pkt syn2 = parse(frame2);
    const int b2 = backend_of(syn2);
    ASSERT_GE(b2, 0);
    EXPECT_NE(b2, b1);
    EXPECT_EQ(ntohs(syn2.tcp->source), shared) << "the same port, towards another backend";
    EXPECT_EQ(stat(KVS_R_DP_PORTS_EXHAUSTED), 0u);
    tables->backends[b1].state = KVS_BE_UP;

    // Each SYN-ACK reaches its own flow: the ACK and the held request go to its backend.
    for (const kvs_pkt *syn : {&syn2, &syn1}) {
        inject(rp.rx, make_seg(rp.pool, synack_to(*syn)));
        out = step(now + ms(2));
        ASSERT_EQ(out.size(), 2u) << "ACK + the held request";
        for (auto &o : out) {
            const kvs_pkt p = parse(o);
            EXPECT_EQ(p.ip4->daddr, syn->ip4->daddr);
            EXPECT_EQ(ntohs(p.tcp->source), shared);
        }
    }
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 2u);
    EXPECT_EQ(stat(KVS_R_PUNT_BACKEND_OTHER), 0u);
    for (auto [sport, be] : {std::pair{cport, b1}, std::pair{cport2, b2}}) {
        kvs_flow_key kc = client_key();
        kc.sport = htons(sport);
        kvs_flow fc{};
        ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &kc, &fc), 0);
        EXPECT_EQ(fc.backend_id, be);
        EXPECT_EQ(ntohs(fc.new_sport), shared);
        EXPECT_EQ(fc.new_daddr[0], tables->backends[be].addr[0]);
        EXPECT_EQ(ports->state(static_cast<std::uint16_t>(be), shared), kPortInstalled);
    }

    // A third flow: whichever backend the policy picks first, only the one neither flow has
    // still has a port, and the SYN goes there (a candidate without a port is passed over).
    const int b3 = 3 - b1 - b2;
    flight(static_cast<std::uint16_t>(cport + 2));
    out = step(now + ms(3));
    ASSERT_EQ(out.size(), 1u);
    const kvs_pkt syn3 = parse(out[0]);
    EXPECT_EQ(syn3.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(backend_of(syn3), b3);
    EXPECT_EQ(ntohs(syn3.tcp->source), shared);
    const std::uint64_t passed_over = stat(KVS_R_DP_PORTS_EXHAUSTED);
    EXPECT_LE(passed_over, 2u);
    // A fourth: no backend has a port left; every candidate is tried, then the client is reset.
    flight(static_cast<std::uint16_t>(cport + 3));
    out = step(now + ms(4));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_TRUE(parse(out[0]).tcp->flags & KVS_TCP_RST) << "the client is reset";
    EXPECT_EQ(stat(KVS_R_DP_PORTS_EXHAUSTED), passed_over + 3);
    EXPECT_EQ(stat(KVS_R_DP_BIND_FAIL_RST_CLIENT), 1u);
}

TEST_F(BindTest, SilentClientWithIncompleteHeadIsDropped) {
    make_worker();
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, kIncompleteHead, 5)));
    EXPECT_TRUE(step(now).empty());
    EXPECT_TRUE(step(now + ms(50)).empty()) << "an incomplete head is not bound on the idle gap";
    EXPECT_EQ(worker->slot_count(), 1u);
    auto out = step(now + ms(1001));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_TRUE(parse(out[0]).tcp->flags & KVS_TCP_RST);
    EXPECT_EQ(stat(KVS_R_DP_CLIENT_IDLE_DROP), 1u);
    EXPECT_EQ(worker->slot_count(), 0u);
}

TEST_F(BindTest, SilentClientBindsOnWhatItSentAfterTheSlowGap) {
    // Head and part of the body, far below the client's initial window, then silence: not
    // after the short gap (the rest may be a slow write away; binding would key a partial
    // request) but after --slow-bind-gap-ms (20).
    make_worker();
    cookie = cookie_for(cport);
    const std::string req = request(3000);
    inject(rp.rx,
           make_seg(rp.pool, client_seg(0, req.substr(0, 1200), 5)));  // head + part of the body
    EXPECT_TRUE(step(now).empty());
    EXPECT_TRUE(step(now + ms(3)).empty()) << "not bound after the short gap";
    auto out = step(now + ms(21));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN);
}

// An idle worker sleeps on its socket until its first timer is due (here the slow bind gap of a
// held flight), 10 ms at most with none, 1 ms with a backend pool to keep up.
TEST_F(BindTest, IdleSleepLastsUntilTheFirstTimerIsDue) {
    make_worker();
    EXPECT_EQ(worker->wake_sleep_us(now), 10000u) << "nothing due: a heartbeat period";
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(3000).substr(0, 1200), 5)));
    EXPECT_TRUE(step(now).empty());
    EXPECT_TRUE(step(now + ms(15)).empty());
    const unsigned us = worker->wake_sleep_us(now + ms(15));
    EXPECT_GT(us, 4000u) << "the flight binds at 20 ms";
    EXPECT_LE(us, 5000u);
    EXPECT_EQ(worker->wake_sleep_us(now + ms(20)), 10u) << "due now: the shortest sleep";
    ASSERT_EQ(step(now + ms(21)).size(), 1u);  // the SYN; its timeout is 100 ms away
    EXPECT_EQ(worker->wake_sleep_us(now + ms(21)), 10000u);
    worker.reset();
    make_worker(Mode::Xdp, 64, 256, 2);
    EXPECT_EQ(worker->wake_sleep_us(now), 1000u) << "a pool to keep up";
}

// The client's head segment is lost and its body arrives first: the body must wait for the
// retransmitted head, never be bound as the start of the stream (the backend would get a request
// without its head). With timestamps the ISN comes from the echo of our SYN-ACK's TSval.
TEST_F(BindTest, HeadLostWithTimestampsBodyWaitsForTheHead) {
    make_worker();
    sign_synack();
    const std::string req = request(3000);
    const std::size_t head = req.find("\r\n\r\n") + 4;
    inject(rp.rx, make_seg(rp.pool, client_seg(head, req.substr(head, 1400), 10)));
    inject(rp.rx, make_seg(rp.pool, client_seg(head + 1400, req.substr(head + 1400), 11)));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DP_ISN_FROM_TS), 1u);
    EXPECT_TRUE(step(now + ms(3)).empty())
        << "the idle gap must not bind a flight without its start";
    EXPECT_TRUE(step(now + ms(600)).empty());
    EXPECT_EQ(worker->slot_count(), 1u);
    inject(rp.rx,
           make_seg(rp.pool, client_seg(0, req.substr(0, head), 12)));  // the retransmitted head
    auto out = step(now + ms(601));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    EXPECT_EQ(syn.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(ntohl(syn.tcp->seq), isn) << "the backend leg starts at the client's real ISN";
    EXPECT_EQ(stat(KVS_R_DP_KEY_OPENAI_CHAT), 1u);
    inject(rp.rx, make_seg(rp.pool, backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK)));
    out = step(now + ms(602));
    ASSERT_GE(out.size(), 2u);  // our ACK, then the flushed flight
    kvs_pkt first = parse(out[1]);
    EXPECT_EQ(ntohl(first.tcp->seq), isn + 1);
    ASSERT_GE(first.payload_len, 4);
    EXPECT_EQ(0, std::memcmp(out[1].data() + first.l4_off + first.tcp_hlen, "POST", 4))
        << "the stream the backend sees begins with the head";
}

// Without timestamps there is no proof of the start: a flight that does not begin with a
// request line waits (here for the head, which moves the start back); never bound from a body.
TEST_F(BindTest, HeadLostWithoutTimestampsBodyWaitsForTheHead) {
    make_worker();
    cookie = cookie_for(cport);
    const std::string req = request(3000);
    const std::size_t head = req.find("\r\n\r\n") + 4;
    auto seg = [&](std::size_t off, std::string p) {
        Seg s = client_seg(static_cast<std::uint32_t>(off), std::move(p), 0);
        s.ts = false;
        return s;
    };
    inject(rp.rx, make_seg(rp.pool, seg(head, req.substr(head, 1400))));
    inject(rp.rx, make_seg(rp.pool, seg(head + 1400, req.substr(head + 1400))));
    EXPECT_TRUE(step(now).empty());
    EXPECT_TRUE(step(now + ms(3)).empty())
        << "the idle gap must not bind a body as the stream start";
    EXPECT_TRUE(step(now + ms(300)).empty());
    inject(rp.rx, make_seg(rp.pool, seg(0, req.substr(0, head))));
    auto out = step(now + ms(301));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    EXPECT_EQ(ntohl(syn.tcp->seq), isn);
    EXPECT_EQ(stat(KVS_R_DP_KEY_OPENAI_CHAT), 1u);
    EXPECT_EQ(stat(KVS_R_DP_START_UNSURE), 0u);
}

// Not HTTP, no timestamps: nothing can prove the start, so it binds after the unsure-start
// wait (half the client idle timeout here), counted.
TEST_F(BindTest, UnsureStartBindsAfterTheWait) {
    make_worker();
    cookie = cookie_for(cport);
    Seg s = client_seg(0, "{\"not\": \"a request line\"}", 0);
    s.ts = false;
    inject(rp.rx, make_seg(rp.pool, s));
    EXPECT_TRUE(step(now).empty());
    EXPECT_TRUE(step(now + ms(100)).empty());
    auto out = step(now + ms(501));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(stat(KVS_R_DP_START_UNSURE), 1u);
    EXPECT_EQ(stat(KVS_R_DP_KEY_BODY_PREFIX), 1u);
}

// Expect: 100-continue: the client sends no body before the server answers, so the head is
// all there is: bind at once on it (keyed on the 5-tuple: nothing of the prompt is known), not
// after the gap.
TEST_F(BindTest, ExpectContinueBindsOnTheHeadAtOnce) {
    make_worker();
    cookie = cookie_for(cport);
    inject(rp.rx,
           make_seg(rp.pool, client_seg(0,
                                        "POST /v1/completions HTTP/1.1\r\nHost: kv\r\n"
                                        "Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
                                        5)));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u) << "bound without waiting for the idle gap";
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(stat(KVS_R_DP_KEY_FIVE_TUPLE), 1u);
    EXPECT_EQ(stat(KVS_R_DP_KEY_BODY_PREFIX), 0u);
}

// A flow pair is installed all or nothing: with a flow map that takes only one entry the pair's
// second entry fails; the first is removed again, nothing held is flushed, and both the backend
// leg and the client are reset (counted).
TEST_F(BindTest, FailedInstallLeavesNoHalfPairAndResetsBothSides) {
    close(tables->flows_fd);
    tables->flows_fd = bpf_map_create(BPF_MAP_TYPE_HASH, "kvdp_tiny", sizeof(kvs_flow_key),
                                      sizeof(kvs_flow), 1, nullptr);
    ASSERT_GE(tables->flows_fd, 0);
    make_worker();
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(1000), 5)));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    inject(rp.rx, make_seg(rp.pool, backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK)));
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 2u) << "a reset each way, no data";
    unsigned to_client = 0, to_backend = 0;
    for (auto &f : out) {
        kvs_pkt p = parse(f);
        EXPECT_TRUE(p.tcp->flags & KVS_TCP_RST);
        EXPECT_EQ(p.payload_len, 0);
        to_client += p.ip4->daddr == client_ip;
        to_backend += p.ip4->daddr == syn.ip4->daddr;
    }
    EXPECT_EQ(to_client, 1u);
    EXPECT_EQ(to_backend, 1u);
    kvs_flow_key k{};
    EXPECT_NE(bpf_map_get_next_key(tables->flows_fd, nullptr, &k), 0)
        << "no half pair left in the flow map";
    EXPECT_EQ(stat(KVS_R_DP_FLOW_INSTALL_FAIL), 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_FAIL_RST_CLIENT), 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 0u);
    EXPECT_EQ(worker->slot_count(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Installing a burst's flows together

// n pairs of distinct keys/values for install_pairs (pair i: keys 2i and 2i + 1).
struct Pairs {
    std::vector<kvs_flow_key> keys;
    std::vector<kvs_flow> vals;
    explicit Pairs(unsigned n) : keys(2 * n), vals(2 * n) {
        for (unsigned i = 0; i < 2 * n; ++i) {
            keys[i].saddr[0] = htonl(0x0a4e0000u + i);
            keys[i].sport = htons(static_cast<std::uint16_t>(1000 + i));
            keys[i].family = KVS_AF_INET;
            keys[i].proto = KVS_IPPROTO_TCP;
            vals[i].backend_id = static_cast<std::uint16_t>(i);
        }
    }
};

unsigned entries(int fd) {
    kvs_flow_key k{}, next{};
    unsigned n = 0;
    for (const kvs_flow_key *prev = nullptr; bpf_map_get_next_key(fd, prev, &next) == 0; ++n) {
        k = next;
        prev = &k;
    }
    return n;
}

// Whether both entries of pair i hold pair i's values (in) or neither is there (out).
bool pair_in(int fd, const Pairs &p, unsigned i) {
    kvs_flow a{}, b{};
    return bpf_map_lookup_elem(fd, &p.keys[2 * i], &a) == 0 &&
           bpf_map_lookup_elem(fd, &p.keys[2 * i + 1], &b) == 0 &&
           a.backend_id == p.vals[2 * i].backend_id && b.backend_id == p.vals[2 * i + 1].backend_id;
}
bool pair_out(int fd, const Pairs &p, unsigned i) {
    kvs_flow f{};
    return bpf_map_lookup_elem(fd, &p.keys[2 * i], &f) != 0 &&
           bpf_map_lookup_elem(fd, &p.keys[2 * i + 1], &f) != 0;
}

int hash_map(const char *name, unsigned max_entries) {
    return bpf_map_create(BPF_MAP_TYPE_HASH, name, sizeof(kvs_flow_key), sizeof(kvs_flow),
                          max_entries, nullptr);
}

// A hash map of max_entries that already holds pair 3's keys (other values): rewriting them
// needs no room, so pair 3 goes in whatever happened to the pairs before it. -1 on failure.
int map_holding_pair3(const char *name, unsigned max_entries, const Pairs &p) {
    const int fd = hash_map(name, max_entries);
    kvs_flow old{};
    old.backend_id = 999;
    if (fd >= 0 && (bpf_map_update_elem(fd, &p.keys[6], &old, BPF_ANY) != 0 ||
                    bpf_map_update_elem(fd, &p.keys[7], &old, BPF_ANY) != 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

TEST(InstallPairs, ManyPairsInOneCall) {
    const int fd = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "kvdp_ip_lru", sizeof(kvs_flow_key),
                                  sizeof(kvs_flow), 1024, nullptr);
    ASSERT_GE(fd, 0);
    Pairs p(32);
    bool ok[32];
    EXPECT_EQ(install_pairs(fd, p.keys.data(), p.vals.data(), 32, ok), 1u);
    for (unsigned i = 0; i < 32; ++i) {
        EXPECT_TRUE(ok[i]) << i;
        EXPECT_TRUE(pair_in(fd, p, i)) << i;
    }
    EXPECT_EQ(entries(fd), 64u);
    close(fd);
}

// A full map refuses the first entry of a pair: that pair fails, nothing of it is written, and a
// second call installs the pair after it.
TEST(InstallPairs, PairRefusedWholeThenTheRestGoOn) {
    Pairs p(4);
    const int fd = map_holding_pair3("kvdp_ip_even", 6, p);
    ASSERT_GE(fd, 0);
    bool ok[4];
    EXPECT_EQ(install_pairs(fd, p.keys.data(), p.vals.data(), 4, ok), 2u);
    EXPECT_TRUE(ok[0] && ok[1] && ok[3]);
    EXPECT_FALSE(ok[2]);
    EXPECT_TRUE(pair_in(fd, p, 0) && pair_in(fd, p, 1) && pair_in(fd, p, 3));
    EXPECT_TRUE(pair_out(fd, p, 2));
    EXPECT_EQ(entries(fd), 6u);
    close(fd);
}

// A full map refuses the second entry of a pair: its first entry is removed again (no half pair
// is left), and each later batch starts after the pair that failed.
TEST(InstallPairs, HalfWrittenPairIsRemovedAgain) {
    Pairs p(4);
    const int fd = map_holding_pair3("kvdp_ip_odd", 5, p);
    ASSERT_GE(fd, 0);
    bool ok[4];
    // Pair 0 fits (4 entries), pair 1 half (5: full), removed; pair 2 the same; pair 3 replaces.
    EXPECT_EQ(install_pairs(fd, p.keys.data(), p.vals.data(), 4, ok), 3u);
    EXPECT_TRUE(ok[0] && ok[3]);
    EXPECT_FALSE(ok[1] || ok[2]);
    EXPECT_TRUE(pair_in(fd, p, 0) && pair_in(fd, p, 3));
    EXPECT_TRUE(pair_out(fd, p, 1) && pair_out(fd, p, 2));
    EXPECT_EQ(entries(fd), 4u);
    close(fd);
}

// A kernel without batch updates (or one refusing the call's arguments): the call is refused as
// a whole, writing nothing and leaving the count, and every pair still goes in, one update an
// entry. Taken as one pair's failure, every pair failed (each later batch call refused too).
int refuse_batch(int, const void *, const void *, __u32 *, const bpf_map_batch_opts *) {
    errno = EINVAL;
    return -EINVAL;
}

TEST(InstallPairs, ACallRefusedAsAWholeFallsBackToSingleUpdates) {
    Pairs p(4);
    const int fd = hash_map("kvdp_ip_nobatch", 64);
    ASSERT_GE(fd, 0);
    bool ok[4];
    EXPECT_EQ(install_pairs(fd, p.keys.data(), p.vals.data(), 4, ok, refuse_batch), 1u + 8u);
    for (unsigned i = 0; i < 4; ++i) {
        EXPECT_TRUE(ok[i]) << i;
        EXPECT_TRUE(pair_in(fd, p, i)) << i;
    }
    EXPECT_EQ(entries(fd), 8u);
    close(fd);
}

// A flow the worker chose a backend for counts in that backend's in-flight (for the worker's own
// later choices) until the backend's binds count it: a burst chosen within one round trip sees its
// own earlier choices. The count goes when the flow binds, or when it ends without binding.
TEST_F(BindTest, ChosenFlowsArePendingUntilTheirBackendsCountThem) {
    make_worker();
    const auto pending = [&] {
        std::uint32_t n = 0;
        for (std::uint16_t b = 0; b < KVS_MAX_BACKENDS; ++b) n += worker->pending(b);
        return n;
    };
    std::vector<std::vector<std::uint8_t>> syns = open_flows(3, 31000);
    ASSERT_EQ(syns.size(), 3u);
    EXPECT_EQ(pending(), 3u);
    const kvs_pkt first = parse(syns[0]);
    EXPECT_GE(worker->pending(static_cast<std::uint16_t>(backend_of(first))), 1u);
    inject(rp.rx, make_seg(rp.pool, backend_seg(first, KVS_TCP_SYN | KVS_TCP_ACK)));
    step(now + ms(1));
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 1u);
    EXPECT_EQ(pending(), 2u) << "bound: counted in its backend's binds instead";
    Seg rst = client_seg(0, "", 5);
    rst.sport = 31001;
    rst.flags = KVS_TCP_RST;
    inject(rp.rx, make_seg(rp.pool, rst));
    step(now + ms(2));
    EXPECT_EQ(pending(), 1u) << "ended without binding";
}

// Flows whose backends accept in one receive burst: their pairs go in with one call, and each
// flow is acknowledged and flushed after it.
TEST_F(BindTest, FlowsAcceptedInOneBurstAreInstalledWithOneCall) {
    make_worker();
    const unsigned n = 8;
    std::vector<std::vector<std::uint8_t>> syns = open_flows(n, 30000);
    ASSERT_EQ(syns.size(), n);
    for (auto &f : syns)
        inject(rp.rx, make_seg(rp.pool, backend_seg(parse(f), KVS_TCP_SYN | KVS_TCP_ACK)));
    auto out = step(now + ms(1));
    EXPECT_EQ(stat(KVS_R_DP_FLOW_INSTALL_BATCH), 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), n);
    EXPECT_EQ(entries(tables->flows_fd), 2 * n);
    EXPECT_EQ(worker->binding_count(), 0u);
    ASSERT_EQ(out.size(), 2 * n) << "an ACK and the held segment per flow";
    for (unsigned i = 0; i < n; ++i) {
        kvs_pkt ack = parse(out[2 * i]), data = parse(out[2 * i + 1]);
        EXPECT_EQ(ack.tcp->flags, KVS_TCP_ACK) << i;
        EXPECT_EQ(ack.payload_len, 0) << i;
        EXPECT_GT(data.payload_len, 0) << i;
        EXPECT_EQ(ack.tcp->source, data.tcp->source) << "the same flow's SNAT port";
        EXPECT_EQ(ntohl(data.tcp->seq), isn + 1);
    }
}

// A batch that fails part way: the flows whose pair failed are reset both ways and nothing they
// held is sent, exactly as a failed single install; the others bind; no half pair is left.
TEST_F(BindTest, PartialBatchFailureResetsOnlyTheFailedFlows) {
    close(tables->flows_fd);
    tables->flows_fd = hash_map("kvdp_small", 5);
    ASSERT_GE(tables->flows_fd, 0);
    make_worker();
    std::vector<std::vector<std::uint8_t>> syns = open_flows(4, 31000);
    ASSERT_EQ(syns.size(), 4u);
    for (auto &f : syns)
        inject(rp.rx, make_seg(rp.pool, backend_seg(parse(f), KVS_TCP_SYN | KVS_TCP_ACK)));
    auto out = step(now + ms(1));
    // Pairs 0 and 1 fit; pair 2's second entry finds the map full (its first is removed); pair
    // 3 the same in a second call.
    EXPECT_EQ(stat(KVS_R_DP_FLOW_INSTALL_BATCH), 2u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 2u);
    EXPECT_EQ(stat(KVS_R_DP_FLOW_INSTALL_FAIL), 2u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_FAIL_RST_CLIENT), 2u);
    EXPECT_EQ(entries(tables->flows_fd), 4u);
    for (unsigned i = 0; i < 4; ++i) {
        const std::uint16_t snat = parse(syns[i]).tcp->source, client = htons(31000 + i);
        unsigned data = 0, rst_backend = 0, rst_client = 0, acks = 0;
        for (auto &f : out) {
            kvs_pkt p = parse(f);
            if (p.tcp->source == snat && p.payload_len > 0) ++data;
            if (p.tcp->source == snat && p.tcp->flags == KVS_TCP_ACK) ++acks;
            if (p.tcp->source == snat && (p.tcp->flags & KVS_TCP_RST)) ++rst_backend;
            if (p.tcp->dest == client && (p.tcp->flags & KVS_TCP_RST)) ++rst_client;
        }
        if (i < 2) {
            EXPECT_EQ(acks, 1u) << i;
            EXPECT_EQ(data, 1u) << i;
            EXPECT_EQ(rst_backend + rst_client, 0u) << i;
        } else {
            EXPECT_EQ(acks + data, 0u) << i << ": nothing sent before (or without) the install";
            EXPECT_EQ(rst_backend, 1u) << i;
            EXPECT_EQ(rst_client, 1u) << i;
        }
    }
}

// The client resets in the burst that brought its backend's SYN-ACK: the flow ends before the
// install, so nothing of it is installed or flushed, and its backend leg is reset.
TEST_F(BindTest, ClientResetWhileInstallingLeavesNothingInstalled) {
    make_worker();
    std::vector<std::vector<std::uint8_t>> syns = open_flows(1, 32000);
    ASSERT_EQ(syns.size(), 1u);
    kvs_pkt syn = parse(syns[0]);
    inject(rp.rx, make_seg(rp.pool, backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK)));
    Seg rst = client_seg(0, "", 5);
    rst.sport = 32000;
    rst.flags = KVS_TCP_RST;
    inject(rp.rx, make_seg(rp.pool, rst));
    auto out = step(now + ms(1));
    EXPECT_EQ(stat(KVS_R_DP_FLOW_INSTALL_BATCH), 0u);
    EXPECT_EQ(stat(KVS_R_FLOW_RST), 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 0u);
    EXPECT_EQ(entries(tables->flows_fd), 0u);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt p = parse(out[0]);
    EXPECT_EQ(p.tcp->flags, KVS_TCP_RST);
    EXPECT_EQ(p.tcp->source, syn.tcp->source);
    EXPECT_EQ(worker->slot_count(), 0u);
}

// A SYN-ACK repeated in the same burst finds the flow Installing: counted, and the one ACK that
// follows the install answers both.
TEST_F(BindTest, SynAckRepeatedWhileInstallingIsAnsweredByTheOneAck) {
    make_worker();
    std::vector<std::vector<std::uint8_t>> syns = open_flows(1, 33000);
    ASSERT_EQ(syns.size(), 1u);
    kvs_pkt syn = parse(syns[0]);
    inject(rp.rx, make_seg(rp.pool, backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK)));
    inject(rp.rx, make_seg(rp.pool, backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK)));
    auto out = step(now + ms(1));
    EXPECT_EQ(stat(KVS_R_PUNT_BACKEND_SYNACK), 2u);
    EXPECT_EQ(stat(KVS_R_DP_FLOW_INSTALL_BATCH), 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 1u);
    ASSERT_EQ(out.size(), 2u) << "one ACK, the held segment";
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_ACK);
    EXPECT_GT(parse(out[1]).payload_len, 0);
}

// A held segment that no longer parses when it is flushed (its frame was damaged while held)
// is counted and freed, never sent.
TEST_F(BindTest, HeldSegmentDamagedWhileHeldIsCountedAtFlush) {
    make_worker();
    cookie = cookie_for(cport);
    rte_mbuf *held = make_seg(rp.pool, client_seg(0, request(600), 5));
    inject(rp.rx, held);
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    rte_pktmbuf_mtod(held, std::uint8_t *)[14] = 0x00;  // IP version/IHL: no longer IPv4
    inject(rp.rx, make_seg(rp.pool, backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK)));
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 1u) << "the ACK to the backend, not the damaged segment";
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_ACK);
    EXPECT_EQ(stat(KVS_R_DP_HELD_UNPARSABLE), 1u);
}

// A segment the worker must send but cannot build (its mempool is empty) is counted, not lost
// silently: here every mbuf of the pool is taken before the SYN is due.
TEST_F(BindTest, EmptyMempoolIsCountedAsNoMbuf) {
    make_worker();
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(1000), 5)));
    std::vector<rte_mbuf *> taken;
    while (rte_mbuf *m = rte_pktmbuf_alloc(rp.pool)) taken.push_back(m);
    auto out = step(now);
    EXPECT_TRUE(out.empty());
    EXPECT_GE(stat(KVS_R_DP_NO_MBUF), 1u);
    for (rte_mbuf *m : taken) rte_pktmbuf_free(m);
    // The SYN timer retries it once the pool has buffers again.
    out = step(now + ms(150));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN);
}

// A client that sends only a FIN after the handshake gets a reset at once (it used to be left
// retransmitting its FIN into silence); a FIN with a bad cookie is dropped, counted.
TEST_F(BindTest, FinWithoutDataIsAnsweredWithReset) {
    make_worker();
    cookie = cookie_for(cport);
    Seg fin = client_seg(0, "", 5);
    fin.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    inject(rp.rx, make_seg(rp.pool, fin));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt r = parse(out[0]);
    EXPECT_EQ(r.tcp->flags, KVS_TCP_RST | KVS_TCP_ACK);
    EXPECT_EQ(r.ip4->daddr, client_ip);
    EXPECT_EQ(ntohl(r.tcp->seq), cookie + 1);
    EXPECT_EQ(ntohl(r.tcp->ack_seq), isn + 2) << "acknowledges the FIN";
    EXPECT_TRUE(checksums_ok(out[0]));
    EXPECT_EQ(stat(KVS_R_DP_RST_BARE_FIN), 1u);
    EXPECT_EQ(worker->slot_count(), 0u);
    fin.ack ^= 0x5a5a;
    inject(rp.rx, make_seg(rp.pool, fin));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DROP_BAD_COOKIE), 1u);
}

// A client that sent its request and half-closed, whose data segment never reached the worker
// (lost, or refused here under hold pressure): its FIN lies past its ISN + 1, which timestamps
// prove. It is dropped, not answered with a reset, and the data sent again is bound as usual.
TEST_F(BindTest, FinAfterMissingDataWaitsForTheData) {
    make_worker();
    sign_synack();
    const std::string req = request(700);
    Seg fin = client_seg(static_cast<std::uint32_t>(req.size()), "", 10);
    fin.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    inject(rp.rx, make_seg(rp.pool, fin));
    EXPECT_TRUE(step(now).empty()) << "no reset";
    EXPECT_EQ(stat(KVS_R_DP_FIN_AFTER_MISSING_DATA), 1u);
    EXPECT_EQ(stat(KVS_R_DP_RST_BARE_FIN), 0u);
    // The request, retransmitted with its FIN: bound (the backend's SYN goes out).
    Seg data = client_seg(0, req, 11);
    data.flags = KVS_TCP_ACK | KVS_TCP_PSH | KVS_TCP_FIN;
    inject(rp.rx, make_seg(rp.pool, data));
    auto out = step(now + ms(1));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN);
}

// The same proof for a FIN at ISN + 1 (no data ever): still answered with a reset.
TEST_F(BindTest, FinAtTheStreamsStartIsStillAnsweredWithReset) {
    make_worker();
    sign_synack();
    Seg bare = client_seg(0, "", 12);
    bare.flags = KVS_TCP_ACK | KVS_TCP_FIN;
    inject(rp.rx, make_seg(rp.pool, bare));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_RST | KVS_TCP_ACK);
    EXPECT_EQ(stat(KVS_R_DP_RST_BARE_FIN), 1u);
    EXPECT_EQ(stat(KVS_R_DP_FIN_AFTER_MISSING_DATA), 0u);
}

// One client address may hold only its share of the slots being bound; others are unaffected.
TEST_F(BindTest, PerSourceCapHoldsOneAddressToItsShare) {
    make_worker(Mode::Xdp, 64, 3);
    hold_incomplete_heads(5, 40000);
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(worker->slot_count(), 3u);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_SOURCE_CAP), 2u);
    ASSERT_NO_FATAL_FAILURE(expect_another_address_binds(now + ms(1)));
}

// One client address's flights may hold only their share of the worker's held packets: the
// packets beyond are dropped (dp_hold_source_cap; the client resends them), another address's are
// held and bound at once, and the share comes back as the flights go. Before, one address's
// flights (up to 32 segments in each of its 256 slots) could hold every packet the worker may.
TEST_F(BindTest, PerSourcePacketCapHoldsOneAddressToItsShareOfThePackets) {
    packets_per_source = 4;
    make_worker();
    const std::string head = kIncompleteHead;  // never completes
    auto slow = [&](std::uint16_t port, unsigned segs) {
        for (unsigned k = 0; k < segs; ++k) {
            Seg s = client_seg(k * 10, head.substr(k * 10, 10), 5);
            s.sport = port;
            s.ack = cookie_for(port) + 1;
            inject(rp.rx, make_seg(rp.pool, s));
        }
    };
    slow(40000, 3);
    slow(40001, 3);
    // The second flight, refused, binds on what it holds (as when the worker's packets are full).
    auto first = step(now);
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(parse(first[0]).tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_SOURCE_CAP), 2u) << "4 of the address's 6 segments held";
    EXPECT_EQ(stat(KVS_R_DP_HOLD_FULL), 0u);
    ASSERT_NO_FATAL_FAILURE(expect_another_address_binds(now + ms(1)));
    // A third connection of the address: its first segment finds no room, and its slot goes.
    const unsigned slots = worker->slot_count();
    slow(40002, 1);
    EXPECT_TRUE(step(now + ms(1)).empty());
    EXPECT_EQ(stat(KVS_R_DP_HOLD_SOURCE_CAP), 3u);
    EXPECT_EQ(worker->slot_count(), slots);
    // The client idle timeout (1 s) resets the first slow flow: its 3 packets are the address's
    // again (the second, binding, still holds its one).
    step(now + ms(1500));
    slow(40003, 4);
    step(now + ms(1501));
    EXPECT_EQ(stat(KVS_R_DP_HOLD_SOURCE_CAP), 4u) << "3 of 4 held";
}

// The address's held packets go back when its flows bind (the flight is sent on), with other
// flows of the address still binding. Before, a bound flow's packets stayed counted: a gateway
// always binding two flows from one address reached the cap after a few hundred binds, and every
// new connection of it stalled.
TEST_F(BindTest, PerSourcePacketCapCountsOnlyPacketsStillHeld) {
    packets_per_source = 4;
    make_worker();
    Seg slow = client_seg(0, std::string(kIncompleteHead).substr(0, 10), 5);
    slow.sport = 40000;
    slow.ack = cookie_for(slow.sport) + 1;
    inject(rp.rx, make_seg(rp.pool, slow));  // keeps a slot of the address binding throughout
    EXPECT_TRUE(step(now).empty());
    for (std::uint16_t k = 0; k < 8; ++k) {
        Seg s = client_seg(0, request(600), 5);
        s.sport = static_cast<std::uint16_t>(41000 + k);
        s.ack = cookie_for(s.sport) + 1;
        inject(rp.rx, make_seg(rp.pool, s));
        auto out = step(now + ms(1));
        ASSERT_EQ(out.size(), 1u) << "bind " << k;
        const kvs_pkt syn = parse(out[0]);
        ASSERT_EQ(syn.tcp->flags, KVS_TCP_SYN) << "bind " << k;
        inject(rp.rx, make_seg(rp.pool, synack_to(syn)));
        out = step(now + ms(2));
        ASSERT_FALSE(out.empty()) << "the held request sent on, bind " << k;
    }
    EXPECT_EQ(stat(KVS_R_DP_HOLD_SOURCE_CAP), 0u) << "8 binds of one packet each under a cap of 4";
}

// The per-source count's key: an IPv4 address, or an IPv6 /64; the families never share one.
// Before, the /64 whose bytes 4..7 are 03 00 00 00 shared the count of the IPv4 address equal to
// its bytes 0..3: one IPv6 subnet could use up a chosen IPv4 client's share.
TEST(SlotTableSource, FamiliesNeverShareACount) {
    kvs_flow_key v4{}, v6{}, v6b{};
    v4.family = KVS_AF_INET;
    v4.saddr[0] = ip4("32.1.171.205");
    v6.family = KVS_AF_INET6;
    v6.saddr[0] = v4.saddr[0];
    v6.saddr[1] = 3;  // the colliding /64
    EXPECT_NE(kvsteer::dp::SlotTable::source_key(v4), kvsteer::dp::SlotTable::source_key(v6));
    for (std::uint32_t w : {0u, 1u, 2u, 3u, 0x80000000u, 0xffffffffu}) {
        v6.saddr[1] = w;
        ASSERT_NE(kvsteer::dp::SlotTable::source_key(v4), kvsteer::dp::SlotTable::source_key(v6));
    }
    v6b = v6;
    v6b.saddr[2] = 0x12345678;  // the same /64, another host
    v6b.saddr[3] = 9;
    EXPECT_EQ(kvsteer::dp::SlotTable::source_key(v6), kvsteer::dp::SlotTable::source_key(v6b));
}

// A full table makes room by evicting the oldest slot whose head is still incomplete after a
// silent gap (reset, counted); a complete request is never the one evicted.
TEST_F(BindTest, FullTableEvictsASilentIncompleteHead) {
    make_worker(Mode::Xdp, 2, 0);
    hold_incomplete_heads(2, 40000);
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(worker->slot_count(), 2u);
    Seg legit = client_seg(0, request(600), 5);
    legit.sport = 41000;
    legit.ack = cookie_for(legit.sport) + 1;
    inject(rp.rx, make_seg(rp.pool, legit));
    auto out = step(now + ms(5));  // past the bind gap: both heads are silent and incomplete
    ASSERT_EQ(out.size(), 2u) << "a reset for the evicted flow, a SYN for the new one";
    EXPECT_TRUE(parse(out[0]).tcp->flags & KVS_TCP_RST);
    EXPECT_EQ(ntohs(parse(out[0]).tcp->dest), 40000) << "the oldest one goes";
    EXPECT_EQ(parse(out[1]).tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_EVICTED), 1u);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_FULL), 0u);
}

// A client that closes before its request head is complete is reset, not bound (a backend
// connection would only carry a broken head: every closing slowloris connection did that).
TEST_F(BindTest, FullTableEvictsTheSlowHeadFirstAndAFlightMissingItsHeadOnlySilently) {
    make_worker(Mode::Xdp, 2, 0);
    sign_synack();
    // The older flight: a client whose head segment was refused (table full) and whose body got
    // in. It waits for its head's retransmission.
    const std::string req = request(1000);
    const std::size_t head = req.find("\r\n\r\n") + 4;
    inject(rp.rx, make_seg(rp.pool, client_seg(head, req.substr(head), 10)));
    hold_incomplete_heads(1, 40000);  // the younger: a head that stays incomplete
    EXPECT_TRUE(step(now).empty());
    ASSERT_EQ(worker->slot_count(), 2u);

    auto newcomer = [&](std::uint16_t port) {
        Seg s = client_seg(0, request(600), 5);
        s.sport = port;
        s.ack = cookie_for(port) + 1;
        s.tsecr = 777;
        inject(rp.rx, make_seg(rp.pool, s));
    };
    newcomer(41000);
    auto out = step(now + ms(5));
    ASSERT_EQ(out.size(), 2u) << "a reset for the slow head, a SYN for the newcomer";
    EXPECT_TRUE(parse(out[0]).tcp->flags & KVS_TCP_RST);
    EXPECT_EQ(ntohs(parse(out[0]).tcp->dest), 40000) << "the slow head goes, though younger";
    EXPECT_EQ(parse(out[1]).tcp->flags, KVS_TCP_SYN);

    newcomer(41001);
    out = step(now + ms(10));
    ASSERT_EQ(out.size(), 1u) << "only the newcomer's SYN: the waiting client is not reset";
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_EVICTED), 1u);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_EVICTED_GAP), 1u);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_FULL), 0u);
}

TEST_F(BindTest, FinBeforeTheHeadIsCompleteIsResetNotBound) {
    make_worker();
    cookie = cookie_for(cport);
    Seg s = client_seg(0, kIncompleteHead, 5);
    s.flags = KVS_TCP_ACK | KVS_TCP_PSH | KVS_TCP_FIN;
    inject(rp.rx, make_seg(rp.pool, s));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_TRUE(parse(out[0]).tcp->flags & KVS_TCP_RST);
    EXPECT_EQ(parse(out[0]).ip4->daddr, client_ip);
    EXPECT_EQ(stat(KVS_R_DP_RST_FIN_INCOMPLETE_HEAD), 1u);
    EXPECT_EQ(stat(KVS_R_DP_KEY_FIVE_TUPLE), 0u);
    EXPECT_EQ(worker->slot_count(), 0u);
}

// Only what the client could have sent ends a binding: a RST far from its stream (blind, off
// path: only the address and port guessed) and a segment echoing another timestamp without a
// valid cookie are dropped, counted; the client's own RST ends it. Before, either aborted it.
TEST_F(BindTest, BlindResetOrForeignEchoDoesNotEndABinding) {
    make_worker();
    sign_synack();
    inject(rp.rx, make_seg(rp.pool, client_seg(0, kIncompleteHead, 5)));
    EXPECT_TRUE(step(now).empty());
    ASSERT_EQ(worker->slot_count(), 1u);
    Seg blind = client_seg(0x40000000u, "", 5);
    blind.flags = KVS_TCP_RST;
    inject(rp.rx, make_seg(rp.pool, blind));
    EXPECT_TRUE(step(now + ms(1)).empty());
    EXPECT_EQ(stat(KVS_R_CLOSE_OUT_OF_WINDOW), 1u);
    EXPECT_EQ(stat(KVS_R_FLOW_RST), 0u);
    EXPECT_EQ(worker->slot_count(), 1u);
    Seg foreign = client_seg(static_cast<std::uint32_t>(std::strlen(kIncompleteHead)), "x", 5);
    foreign.tsecr ^= 0x5a5a5a5a;  // another SYN-ACK's echo
    foreign.ack ^= 0x00ff0000;    // and no cookie of ours
    inject(rp.rx, make_seg(rp.pool, foreign));
    step(now + ms(2));
    EXPECT_EQ(stat(KVS_R_FLOW_REUSED), 0u);
    EXPECT_EQ(stat(KVS_R_DROP_BAD_COOKIE), 1u) << "not held either";
    EXPECT_EQ(worker->slot_count(), 1u) << "still binding";
    Seg rst = client_seg(static_cast<std::uint32_t>(std::strlen(kIncompleteHead)), "", 5);
    rst.flags = KVS_TCP_RST;
    inject(rp.rx, make_seg(rp.pool, rst));
    step(now + ms(3));
    EXPECT_EQ(stat(KVS_R_FLOW_RST), 1u);
    EXPECT_EQ(worker->slot_count(), 0u);
}

// A client that reuses its port while the old connection's flight is still held (its segments
// echo another SYN-ACK TSval, one that carries the new ISN) starts a new flight: the old slot's
// bytes must not be mixed into the new request.
TEST_F(BindTest, PortReusedWhileHoldingStartsANewFlight) {
    make_worker();
    sign_synack();
    inject(rp.rx, make_seg(rp.pool, client_seg(0, kIncompleteHead, 5)));
    EXPECT_TRUE(step(now).empty());
    ASSERT_EQ(worker->slot_count(), 1u);
    // The same 4-tuple, a new connection with another ISN: the cookie is the same (same tuple
    // and time slot), our TSval is not.
    const std::uint32_t old_isn = isn, old_ts = t_ours;
    isn = old_isn + 100000;
    sign_synack();
    ASSERT_NE(t_ours, old_ts);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(600), 6)));
    auto out = step(now + ms(1));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    EXPECT_EQ(syn.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(ntohl(syn.tcp->seq), isn) << "bound from the new connection's own start";
    EXPECT_EQ(stat(KVS_R_FLOW_REUSED), 1u);
    EXPECT_EQ(stat(KVS_R_DP_KEY_OPENAI_CHAT), 1u);
    EXPECT_EQ(worker->slot_count(), 1u);
}

// A first-flight segment whose checksum is bad (TCP's, or IPv4's header one) is dropped before it
// is held, counted: the backend's kernel drops it and takes its range from another copy, with
// other bytes (its own Content-Length), so a request end read from it would be kvsteer's alone.
TEST_F(BindTest, SegmentWithABadChecksumIsNotHeld) {
    make_worker();
    cookie = cookie_for(cport);
    const std::string req = request(600);
    for (const bool ip_header : {false, true}) {
        SCOPED_TRACE(ip_header ? "IPv4 header" : "TCP");
        rte_mbuf *m = make_seg(rp.pool, client_seg(0, req, 6));
        auto *d = rte_pktmbuf_mtod(m, std::uint8_t *);
        if (ip_header)
            d[14 + 8] ^= 1;  // the TTL, the header checksum not
        else
            d[rte_pktmbuf_data_len(m) - 1] ^= 0x20;  // a payload byte, the TCP checksum not
        inject(rp.rx, m);
        EXPECT_TRUE(step(now).empty());
        EXPECT_EQ(worker->slot_count(), 0u) << "no slot taken for it";
    }
    EXPECT_EQ(stat(KVS_R_DP_DROP_BAD_CHECKSUM), 2u);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, req, 6)));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u) << "the good copy binds";
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN);
}

TEST_F(BindTest, BadCookieIsDropped) {
    make_worker();
    cookie = cookie_for(cport) ^ 0x5a5a;
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(300), 5)));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DROP_BAD_COOKIE), 1u);
    EXPECT_EQ(worker->slot_count(), 0u);
}

// Pure-DPDK mode: the worker answers the client's SYN (checked), then binds `req` through a
// scripted backend. What the binding left: the backend SYN and the request as it was sent to
// the backend, our cookie and SYN-ACK TSval.
struct DpdkBound {
    std::vector<std::uint8_t> bsyn, sent_req;
    std::uint32_t cookie = 0, our_ts = 0;
};

class DpdkBindTest : public BindTest {
   protected:
    // The backend's whole answer (an empty 200, timestamps) to `req`, on the leg of `bsyn`.
    Seg response_to(const kvs_pkt &bsyn, const std::string &req) {
        Seg resp = backend_seg(bsyn, KVS_TCP_ACK | KVS_TCP_PSH);
        resp.seq = bisn + 1;
        resp.ack = isn + 1 + static_cast<std::uint32_t>(req.size());
        resp.ts = true;
        resp.tsval = tb + 5;
        resp.tsecr = 100;
        resp.payload = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        return resp;
    }
    DpdkBound bind_in_dpdk_mode(const std::string &req) {
        DpdkBound b;
        make_worker(Mode::Dpdk);
        Seg syn = syn_seg();
        syn.mss = 1460;
        syn.wscale = 7;
        syn.sack_perm = true;
        syn.ts = true;
        syn.tsval = 99;
        inject(rp.rx, make_seg(rp.pool, syn));
        auto out = step(now);
        EXPECT_EQ(out.size(), 1u);
        if (out.size() != 1) return b;
        kvs_pkt sa = parse(out[0]);
        EXPECT_EQ(sa.tcp->flags, KVS_TCP_SYN | KVS_TCP_ACK);
        EXPECT_EQ(ntohl(sa.tcp->ack_seq), isn + 1);
        EXPECT_TRUE(checksums_ok(out[0]));
        cookie = b.cookie = ntohl(sa.tcp->seq);
        kvs_cookie_opts co{};
        EXPECT_TRUE(cookie_passes(cookie, &co));
        EXPECT_EQ(co.wscale, 7);
        b.our_ts = sa.opts.tsval;

        Seg d = client_seg(0, req, 100);
        d.tsecr = b.our_ts;
        inject(rp.rx, make_seg(rp.pool, d));
        out = step(now);
        EXPECT_EQ(out.size(), 1u);
        if (out.size() != 1) return b;
        b.bsyn = out[0];
        Seg bsa = backend_seg(parse(b.bsyn), KVS_TCP_SYN | KVS_TCP_ACK);
        bsa.ts = true;
        bsa.tsval = tb;
        bsa.tsecr = 100;
        bsa.wscale = 7;
        inject(rp.rx, make_seg(rp.pool, bsa));
        out = step(now + ms(1));
        EXPECT_EQ(out.size(), 2u);  // ACK + the request
        if (out.size() == 2) b.sent_req = out[1];
        return b;
    }
};

TEST_F(DpdkBindTest, DpdkModeAnswersSynAndForwardsBothWays) {
    const std::string req = request(600);
    DpdkBound b = bind_in_dpdk_mode(req);
    ASSERT_FALSE(b.sent_req.empty());
    const std::uint32_t our_ts = b.our_ts;
    kvs_pkt bsyn = parse(b.bsyn);
    std::vector<std::vector<std::uint8_t>> out;

    // Backend response: forwarded to the client in the client's sequence space.
    Seg resp = response_to(bsyn, req);
    inject(rp.rx, make_seg(rp.pool, resp));
    out = step(now + ms(2));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt r = parse(out[0]);
    EXPECT_TRUE(checksums_ok(out[0]));
    EXPECT_EQ(r.ip4->saddr, vip);
    EXPECT_EQ(r.ip4->daddr, client_ip);
    EXPECT_EQ(ntohs(r.tcp->source), 8000);
    EXPECT_EQ(ntohs(r.tcp->dest), cport);
    EXPECT_EQ(ntohl(r.tcp->seq), cookie + 1);
    EXPECT_EQ(r.opts.tsval, our_ts + 5);
    EXPECT_EQ(0, std::memcmp(r.eth->dst, kClientMac, 6));

    // FIN both ways closes the flow once.
    Seg cf = client_seg(static_cast<std::uint32_t>(req.size()), "", 101);
    cf.flags = KVS_TCP_FIN | KVS_TCP_ACK;
    cf.tsecr = our_ts + 5;
    inject(rp.rx, make_seg(rp.pool, cf));
    Seg bf = resp;
    bf.payload.clear();
    bf.seq = bisn + 1 + static_cast<std::uint32_t>(resp.payload.size());
    bf.flags = KVS_TCP_FIN | KVS_TCP_ACK;
    inject(rp.rx, make_seg(rp.pool, bf));
    out = step(now + ms(3));
    EXPECT_EQ(out.size(), 2u);
    const int be = backend_of(bsyn);
    EXPECT_EQ(tables->load[be].binds, 1u);
    EXPECT_EQ(tables->load[be].closes, 1u);
}

// dpdk mode: a bound flow expired idle (no FIN or RST seen: a client gone) counts as closed in
// its backend's load; before, its in-flight count (binds - closes) kept it for good.
TEST_F(DpdkBindTest, DpdkModeFlowExpiredIdleIsClosedInTheLoad) {
    const std::string req = request(600);
    DpdkBound b = bind_in_dpdk_mode(req);
    ASSERT_FALSE(b.sent_req.empty());
    const int be = backend_of(parse(b.bsyn));
    EXPECT_EQ(tables->load[be].binds, 1u);
    step(now + ms(1000));
    EXPECT_EQ(tables->load[be].closes, 0u) << "idle for a second: still bound";
    EXPECT_EQ(worker->slot_count(), 1u);
    step(now + ms(301 * 1000));  // past --flow-idle-timeout-s (300)
    EXPECT_EQ(worker->slot_count(), 0u);
    EXPECT_EQ(tables->load[be].closes, 1u);
    EXPECT_EQ(stat(KVS_R_DP_FLOW_IDLE_EXPIRED), 1u);
}

// dpdk mode, where established flows keep their slots: one client address may have only its
// share of them open (--max-flows-per-source); its next connection is reset, and another
// address's still binds. Before, one address could fill the table with idle connections, and
// every new flow was dropped dp_hold_full until their 300 s idle timeout.
TEST_F(DpdkBindTest, DpdkModeOneAddressHasOnlyItsShareOfTheFlows) {
    flows_per_source = 2;
    make_worker(Mode::Dpdk);
    auto syns = open_flows(2, 40000);
    ASSERT_EQ(syns.size(), 2u);
    for (auto &b : syns) inject(rp.rx, make_seg(rp.pool, synack_to(parse(b))));
    ASSERT_EQ(step(now + ms(1)).size(), 4u) << "an ACK and the request each: both bound";
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 2u);
    Seg third = client_seg(0, request(600), 5);
    third.sport = 40002;
    third.ack = cookie_for(third.sport) + 1;
    inject(rp.rx, make_seg(rp.pool, third));
    auto out = step(now + ms(2));
    ASSERT_EQ(out.size(), 1u);
    const kvs_pkt r = parse(out[0]);
    EXPECT_TRUE(r.tcp->flags & KVS_TCP_RST);
    EXPECT_EQ(ntohs(r.tcp->dest), 40002);
    EXPECT_EQ(ntohl(r.tcp->seq), cookie_for(40002) + 1) << "at the client's acknowledgment";
    EXPECT_EQ(stat(KVS_R_DP_FLOW_SOURCE_CAP), 1u);
    EXPECT_EQ(worker->slot_count(), 2u);
    ASSERT_NO_FATAL_FAILURE(expect_another_address_binds(now + ms(3)));
}

// dpdk mode, the table full of established flows: one idle for a second or more makes room for a
// new flow (the longest idle of those visited), both its sides reset at their next bytes; with
// none idle that long the new flow is dropped (dp_hold_full; the client sends again).
TEST_F(DpdkBindTest, DpdkModeFullTableReclaimsTheLongestIdleEstablishedFlow) {
    make_worker(Mode::Dpdk, 2, 0);
    const std::string req = request(600);
    auto syns = open_flows(2, 40000);
    ASSERT_EQ(syns.size(), 2u);
    int be0 = -1;
    for (auto &b : syns) inject(rp.rx, make_seg(rp.pool, synack_to(parse(b))));
    ASSERT_EQ(step(now + ms(1)).size(), 4u) << "an ACK and the request each: both bound";
    // Flow 40001 is active at 0.6 s (a pure ACK, forwarded); 40000 stays silent.
    Seg ack = client_seg(static_cast<std::uint32_t>(req.size()), "", 6);
    ack.sport = 40001;
    ack.ack = cookie_for(ack.sport) + 1;
    ack.flags = KVS_TCP_ACK;
    inject(rp.rx, make_seg(rp.pool, ack));
    ASSERT_EQ(step(now + ms(600)).size(), 1u);
    Seg third = client_seg(0, req, 7);
    third.sport = 40002;
    third.ack = cookie_for(third.sport) + 1;
    inject(rp.rx, make_seg(rp.pool, third));
    EXPECT_TRUE(step(now + ms(800)).empty()) << "no flow idle for a second yet";
    EXPECT_EQ(stat(KVS_R_DP_HOLD_FULL), 1u);
    EXPECT_EQ(stat(KVS_R_DP_FLOW_RECLAIMED_IDLE), 0u);
    inject(rp.rx, make_seg(rp.pool, third));  // sent again
    auto out = step(now + ms(1200));
    ASSERT_EQ(out.size(), 3u) << "a reset each way for 40000, a SYN for the new flow";
    unsigned rst_client = 0, rst_backend = 0, syn = 0;
    for (auto &f : out) {
        const kvs_pkt p = parse(f);
        if (p.tcp->flags == KVS_TCP_SYN) {
            ++syn;
        } else if ((p.tcp->flags & KVS_TCP_RST) && p.ip4->daddr == client_ip) {
            ++rst_client;
            EXPECT_EQ(ntohs(p.tcp->dest), 40000) << "the flow idle longest goes";
            EXPECT_EQ(ntohl(p.tcp->seq), cookie_for(40000) + 1) << "our next byte to it";
            EXPECT_EQ(ntohl(p.tcp->ack_seq), static_cast<std::uint32_t>(isn + 1 + req.size()))
                << "after its request";
        } else if (p.tcp->flags & KVS_TCP_RST) {
            ++rst_backend;
            EXPECT_GE(backend_of(p), 0);
            EXPECT_EQ(ntohl(p.tcp->seq), static_cast<std::uint32_t>(isn + 1 + req.size()))
                << "the client's next byte";
            be0 = backend_of(p);
        }
    }
    EXPECT_EQ(rst_client, 1u);
    EXPECT_EQ(rst_backend, 1u);
    EXPECT_EQ(syn, 1u);
    EXPECT_EQ(stat(KVS_R_DP_FLOW_RECLAIMED_IDLE), 1u);
    EXPECT_EQ(worker->slot_count(), 2u);
    ASSERT_GE(be0, 0);
    EXPECT_EQ(tables->load[be0].closes, 1u) << "the reclaimed flow left its backend's load";
}

// dpdk mode: a client that half-closed after its request keeps its flow until the backend's FIN
// (the response may still be owed): a SYN on its 4-tuple goes to the backend as on a live flow
// (it reused the tuple: the flow and its response were gone); after both FINs it is reused.
TEST_F(DpdkBindTest, DpdkModeHalfClosedFlowStaysLiveForASyn) {
    const std::string req = request(600);
    DpdkBound b = bind_in_dpdk_mode(req);
    ASSERT_FALSE(b.sent_req.empty());
    kvs_pkt bsyn = parse(b.bsyn);
    Seg cf = client_seg(static_cast<std::uint32_t>(req.size()), "", 101);
    cf.flags = KVS_TCP_FIN | KVS_TCP_ACK;
    inject(rp.rx, make_seg(rp.pool, cf));
    ASSERT_EQ(step(now + ms(2)).size(), 1u);
    Seg syn = syn_seg();
    syn.seq = isn + 777777;
    syn.mss = 1460;
    inject(rp.rx, make_seg(rp.pool, syn));
    auto out = step(now + ms(3));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt fwd = parse(out[0]);
    EXPECT_EQ(fwd.ip4->daddr, bsyn.ip4->daddr) << "to the backend, as on a live flow";
    EXPECT_EQ(fwd.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(stat(KVS_R_FLOW_REUSED), 0u);
    EXPECT_EQ(stat(KVS_R_TX_SYNACK), 1u) << "no SYN-ACK of ours beyond the first";
    // The backend's FIN closes it; a SYN then reuses the tuple (a SYN-ACK of ours).
    Seg bf = backend_seg(bsyn, KVS_TCP_FIN | KVS_TCP_ACK);
    bf.seq = bisn + 1;
    bf.ack = isn + 2 + static_cast<std::uint32_t>(req.size());
    bf.ts = true;
    bf.tsval = tb + 5;
    bf.tsecr = 101;
    inject(rp.rx, make_seg(rp.pool, bf));
    step(now + ms(4));
    EXPECT_EQ(tables->load[backend_of(bsyn)].closes, 1u);
    inject(rp.rx, make_seg(rp.pool, syn));
    out = step(now + ms(5));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN | KVS_TCP_ACK);
    EXPECT_EQ(stat(KVS_R_FLOW_REUSED), 1u);
}

// dpdk mode: a SYN on a client tuple whose flow is being bound (the backend's SYN-ACK awaited), a
// delayed duplicate of the handshake's or forged, is dropped and counted; the binding goes on.
// With timestamps its echo (0) read as another connection's and aborted the binding (the held
// request freed, the backend leg reset); without them its window was taken as the client's.
TEST_F(DpdkBindTest, DpdkModeASynWhileBindingIsDropped) {
    make_worker(Mode::Dpdk);
    Seg syn = syn_seg();
    syn.mss = 1460;
    syn.ts = true;
    syn.tsval = 99;
    inject(rp.rx, make_seg(rp.pool, syn));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt sa = parse(out[0]);
    cookie = ntohl(sa.tcp->seq);
    const std::string req = request(600);
    Seg d = client_seg(0, req, 100);
    d.tsecr = sa.opts.tsval;
    inject(rp.rx, make_seg(rp.pool, d));
    out = step(now);
    ASSERT_EQ(out.size(), 1u);
    std::vector<std::uint8_t> bsyn = out[0];
    EXPECT_EQ(parse(bsyn).tcp->flags, KVS_TCP_SYN) << "the backend leg's SYN";
    inject(rp.rx, make_seg(rp.pool, syn));  // with timestamps (echo 0)
    Seg bare = syn_seg();
    bare.window = 0;  // without: its window must not become the client's
    inject(rp.rx, make_seg(rp.pool, bare));
    EXPECT_EQ(step(now + ms(1)).size(), 0u) << "no RST to the backend, no SYN-ACK";
    EXPECT_EQ(stat(KVS_R_DP_SYN_WHILE_BINDING), 2u);
    EXPECT_EQ(worker->slot_count(), 1u);
    Seg bsa = backend_seg(parse(bsyn), KVS_TCP_SYN | KVS_TCP_ACK);
    bsa.ts = true;
    bsa.tsval = tb;
    bsa.tsecr = 100;
    inject(rp.rx, make_seg(rp.pool, bsa));
    out = step(now + ms(2));
    ASSERT_EQ(out.size(), 2u) << "ACK + the request: bound";
    kvs_pkt ack = parse(out[0]);
    EXPECT_NE(ntohs(ack.tcp->window), 0) << "the client's window, not the SYN's";
    EXPECT_EQ(parse(out[1]).payload_len, req.size());
}

// dpdk mode: a client FIN held in the first flight (request and FIN in one segment) goes to the
// backend with the request and counts in the client's next byte, so the backend's FIN, which
// acknowledges it, closes the flow. Counted without it, every backend ACK was one past the bytes
// seen: its FIN was refused as acknowledging unsent data and the flow was kept for 300 s.
TEST_F(DpdkBindTest, DpdkModeAFinInTheFirstFlightCountsInTheClientsNextByte) {
    make_worker(Mode::Dpdk);
    Seg syn = syn_seg();
    syn.mss = 1460;
    inject(rp.rx, make_seg(rp.pool, syn));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    cookie = ntohl(parse(out[0]).tcp->seq);
    const std::string req = request(600);
    Seg d = client_seg(0, req, 100);
    d.ts = false;
    d.flags = KVS_TCP_ACK | KVS_TCP_PSH | KVS_TCP_FIN;
    inject(rp.rx, make_seg(rp.pool, d));
    out = step(now);
    ASSERT_EQ(out.size(), 1u);
    std::vector<std::uint8_t> bsyn = out[0];
    inject(rp.rx, make_seg(rp.pool, backend_seg(parse(bsyn), KVS_TCP_SYN | KVS_TCP_ACK)));
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 2u) << "ACK + the request with its FIN";
    EXPECT_TRUE(parse(out[1]).tcp->flags & KVS_TCP_FIN);
    Seg resp = backend_seg(parse(bsyn), KVS_TCP_ACK | KVS_TCP_PSH | KVS_TCP_FIN);
    resp.seq = bisn + 1;
    resp.ack = isn + 1 + static_cast<std::uint32_t>(req.size()) + 1;  // the request and its FIN
    resp.payload = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    inject(rp.rx, make_seg(rp.pool, resp));
    ASSERT_EQ(step(now + ms(2)).size(), 1u);
    EXPECT_EQ(stat(KVS_R_CLOSE_OUT_OF_WINDOW), 0u);
    EXPECT_EQ(stat(KVS_R_FLOW_CLOSED), 1u);
    EXPECT_EQ(tables->load[backend_of(parse(bsyn))].closes, 1u);
}

// dpdk mode: a FIN or RST closes a bound flow only where its endpoint takes it (XDP's rule): a
// blind RST or FIN far from the client's stream is sent on (the backend judges it) but closes
// nothing, so a SYN on the tuple still goes to the backend; bytes past a hole with an
// acknowledgment of nothing the backend sent do not move the client's next byte, and a RST
// exactly there closes the flow. Before, any RST closed it: its slot and SNAT port free after
// the linger (at once for a SYN), the response lost, the backend's load one lower.
TEST_F(DpdkBindTest, DpdkModeABlindRstOrFinClosesNothing) {
    const std::string req = request(600);
    DpdkBound b = bind_in_dpdk_mode(req);
    ASSERT_FALSE(b.sent_req.empty());
    const int be = backend_of(parse(b.bsyn));
    const auto n = static_cast<std::uint32_t>(req.size());
    Seg rst = client_seg(n + 0x40000000u, "", 101);
    rst.flags = KVS_TCP_RST;
    inject(rp.rx, make_seg(rp.pool, rst));
    EXPECT_EQ(step(now + ms(2)).size(), 1u) << "sent on: the backend judges it";
    Seg fin = client_seg(n + 0x40000000u, "", 101);
    fin.flags = KVS_TCP_FIN | KVS_TCP_ACK;
    inject(rp.rx, make_seg(rp.pool, fin));
    EXPECT_EQ(step(now + ms(3)).size(), 1u);
    EXPECT_EQ(stat(KVS_R_CLOSE_OUT_OF_WINDOW), 2u);
    EXPECT_EQ(stat(KVS_R_FLOW_CLOSED), 0u);
    EXPECT_EQ(tables->load[be].closes, 0u);
    // Bytes past a hole whose acknowledgment the backend never sent (ours is cookie + 1: the
    // response has not begun): not taken as the client's stream.
    Seg ahead = client_seg(n + 1000, "x", 102);
    ahead.ack = cookie + 1 + 50000;
    inject(rp.rx, make_seg(rp.pool, ahead));
    EXPECT_EQ(step(now + ms(4)).size(), 1u);
    Seg at_ahead = client_seg(n + 1001, "", 103);
    at_ahead.flags = KVS_TCP_RST;
    inject(rp.rx, make_seg(rp.pool, at_ahead));
    step(now + ms(5));
    EXPECT_EQ(stat(KVS_R_CLOSE_OUT_OF_WINDOW), 3u) << "its end is not the client's next byte";
    // A segment overlapping the client's next byte, with an ACK of nothing the backend sent:
    // sent on, but its end is not the client's next byte (a sweep of such segments dragged it
    // along); a FIN without ACK at that byte closes nothing (its endpoint discards it).
    Seg over = client_seg(n - 10, std::string(100, 'y'), 104);
    over.ack = cookie + 1 + 50000;
    inject(rp.rx, make_seg(rp.pool, over));
    step(now + ms(5));
    Seg at_over = client_seg(n + 90, "", 105);
    at_over.flags = KVS_TCP_RST;
    inject(rp.rx, make_seg(rp.pool, at_over));
    Seg bare_fin = client_seg(n, "", 106);
    bare_fin.flags = KVS_TCP_FIN;
    inject(rp.rx, make_seg(rp.pool, bare_fin));
    step(now + ms(5));
    EXPECT_EQ(stat(KVS_R_CLOSE_OUT_OF_WINDOW), 4u) << "the RST at the overlap's end";
    EXPECT_EQ(stat(KVS_R_FIN_WITHOUT_ACK), 1u);
    EXPECT_EQ(stat(KVS_R_FLOW_CLOSED), 0u);
    // A SYN on the tuple: a live flow's, to the backend (no SYN-ACK of ours, the slot kept).
    Seg syn = syn_seg();
    syn.seq = isn + 777777;
    syn.mss = 1460;
    inject(rp.rx, make_seg(rp.pool, syn));
    auto out = step(now + ms(6));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_SYN) << "to the backend, as on a live flow";
    EXPECT_EQ(stat(KVS_R_FLOW_REUSED), 0u);
    EXPECT_EQ(stat(KVS_R_TX_SYNACK), 1u);
    // The client's RST at its next byte closes it, once.
    Seg real = client_seg(n, "", 104);
    real.flags = KVS_TCP_RST;
    inject(rp.rx, make_seg(rp.pool, real));
    step(now + ms(7));
    EXPECT_EQ(stat(KVS_R_FLOW_CLOSED), 1u);
    EXPECT_EQ(tables->load[be].closes, 1u);
}

// A router on the backend leg cannot forward the request (fragmentation needed): its error
// goes on to the client as if about the segment the client sent (icmp.h, as XDP does it).
TEST_F(DpdkBindTest, DpdkModeForwardsIcmpErrorAboutABoundFlowToTheClient) {
    DpdkBound b = bind_in_dpdk_mode(request(600));
    ASSERT_FALSE(b.sent_req.empty());
    kvs_pkt q = parse(b.sent_req);
    const std::size_t ip_off = q.l3_off;
    kvstest::IcmpSpec err;
    std::memcpy(err.smac, backend_mac, 6);
    std::memcpy(err.dmac, kAppMac, 6);
    err.saddr[0] = ip4("10.0.0.254");  // the router
    err.daddr[0] = q.ip4->saddr;       // our SNAT address
    err.rest = 1400;                   // next-hop MTU
    err.quote.assign(b.sent_req.begin() + static_cast<std::ptrdiff_t>(ip_off),
                     b.sent_req.begin() + static_cast<std::ptrdiff_t>(ip_off + 20 + 8));
    inject(rp.rx, to_mbuf(rp.pool, kvstest::build_icmp(err)));
    auto out = step(now + ms(2));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(kvstest::check_icmp_checksums(out[0]), "");
    const std::uint8_t *f = out[0].data();
    EXPECT_EQ(0, std::memcmp(f, kClientMac, 6)) << "to the client";
    const std::uint8_t *ip = f + 14, *icmp = ip + 20, *qip = icmp + 8, *qtcp = qip + 20;
    EXPECT_EQ(0, std::memcmp(ip + 12, &vip, 4)) << "outer source: the VIP";
    EXPECT_EQ(0, std::memcmp(ip + 16, &client_ip, 4));
    EXPECT_EQ(icmp[0], 3);
    EXPECT_EQ(icmp[1], 4);
    EXPECT_EQ((icmp[6] << 8) | icmp[7], 1400) << "the MTU as the router gave it";
    EXPECT_EQ(0, std::memcmp(qip + 12, &client_ip, 4)) << "quote: the client's own segment";
    EXPECT_EQ(0, std::memcmp(qip + 16, &vip, 4));
    EXPECT_EQ((qtcp[0] << 8) | qtcp[1], cport);
    EXPECT_EQ((qtcp[2] << 8) | qtcp[3], 8000);
    std::uint32_t seq;
    std::memcpy(&seq, qtcp + 4, 4);
    EXPECT_EQ(ntohl(seq), isn + 1);
    EXPECT_EQ(stat(KVS_R_ICMP_FWD_TO_CLIENT), 1u);

    // An error about no flow of ours is counted and goes nowhere.
    err.quote[20] ^= 0x55;  // another source port
    inject(rp.rx, to_mbuf(rp.pool, kvstest::build_icmp(err)));
    EXPECT_TRUE(step(now + ms(3)).empty());
    EXPECT_EQ(stat(KVS_R_PASS_ICMP_NO_FLOW), 1u);
}

// dpdk mode: a client's path-MTU error below the floor (MTU 0 included) is not relayed to the
// backend, as XDP does not relay it: the backend would apply it to the SNAT address every client
// shares. At the floor it is. (dpdk mode had no floor.)
TEST_F(DpdkBindTest, DpdkModeDropsAClientsPathMtuErrorBelowTheFloor) {
    const std::string req = request(600);
    DpdkBound b = bind_in_dpdk_mode(req);
    ASSERT_FALSE(b.sent_req.empty());
    inject(rp.rx, make_seg(rp.pool, response_to(parse(b.bsyn), req)));
    auto out = step(now + ms(2));
    ASSERT_EQ(out.size(), 1u);
    const std::vector<std::uint8_t> to_client = out[0];  // VIP -> client: what the error quotes
    kvstest::IcmpSpec err;
    std::memcpy(err.smac, kClientMac, 6);
    std::memcpy(err.dmac, kAppMac, 6);
    err.saddr[0] = client_ip;  // the client itself
    err.daddr[0] = vip;
    err.quote.assign(to_client.begin() + 14, to_client.begin() + 14 + 20 + 8);
    for (std::uint32_t mtu : {0u, 68u, KVS_ICMP_RELAY_MTU_FLOOR - 1}) {
        err.rest = mtu;
        inject(rp.rx, to_mbuf(rp.pool, kvstest::build_icmp(err)));
        EXPECT_TRUE(step(now + ms(3)).empty()) << mtu;
    }
    EXPECT_EQ(stat(KVS_R_DROP_ICMP_MTU_BELOW_FLOOR), 3u);
    err.rest = KVS_ICMP_RELAY_MTU_FLOOR;
    inject(rp.rx, to_mbuf(rp.pool, kvstest::build_icmp(err)));
    EXPECT_EQ(step(now + ms(4)).size(), 1u);
    EXPECT_EQ(stat(KVS_R_ICMP_FWD_TO_BACKEND), 1u);
}

// Two workers: the backend's SYN-ACK arrives on the other worker's queue (RSS does not know
// our SNAT port split) and is handed to the owner, which completes the binding.
// Every frame the worker gives up is counted under its own reason; each of these provokes one.
TEST_F(BindTest, DrainingWorkerRefusesNewFlowsCounted) {
    make_worker(Mode::Dpdk);
    worker->drain();
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(300), 5)));
    inject(rp.rx, make_seg(rp.pool, syn_seg(KVS_TCP_SYN, static_cast<std::uint16_t>(cport + 1))));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DP_DRAINING), 2u) << "a first flight and a SYN while draining";
    EXPECT_EQ(worker->slot_count(), 0u);
    ASSERT_NE(tables->view().ring_ctl, nullptr);
    EXPECT_EQ(tables->view().ring_ctl[0].alive_ns, 0u)
        << "a draining worker's heartbeat says it is going: kvsteerd withdraws the VIP";
}

// Dpdk mode's per-prefix SYN-ACK buckets are indexed by a keyed hash, a key per table (per
// dataplane): prefixes that collide in one table do not in another's. Before, a public hash
// (CRC32C, fixed seed) let anyone find colliding prefixes offline and alternate SYNs between
// them, each refilling the bucket: never limited (a seeded CRC would not do either: CRC is linear,
// so a pair colliding under one seed collides under all).
TEST(SynBucketsTest, CollisionsDifferBetweenTables) {
    auto key_of = [](std::uint32_t p) { return (4ull << 56) | p; };  // an IPv4 /24's bucket key
    SynBuckets one, two;
    // Three pairs of /24s that collide in one table.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> pairs;
    std::unordered_map<std::size_t, std::uint32_t> seen;
    for (std::uint32_t p = 1; p < (1u << 22) && pairs.size() < 3; ++p) {
        auto [it, fresh] = seen.emplace(one.index(key_of(p)), p);
        if (!fresh) {
            pairs.emplace_back(it->second, p);
            seen.erase(it);
        }
    }
    ASSERT_EQ(pairs.size(), 3u);
    int still = 0;
    for (auto [x, y] : pairs) still += two.index(key_of(x)) == two.index(key_of(y));
    EXPECT_LE(still, 1) << "colliding prefixes collide in another table too: the hash is not keyed";
}

TEST_F(BindTest, SynWithFinIsDroppedUnansweredInDpdkMode) {
    make_worker(Mode::Dpdk);
    inject(rp.rx, make_seg(rp.pool, syn_seg(KVS_TCP_SYN | KVS_TCP_FIN)));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DROP_MALFORMED), 1u);
    EXPECT_EQ(stat(KVS_R_TX_SYNACK), 0u);
}

// A frame in a chained mbuf (a NIC's jumbo frame in several segments): the worker reads a packet
// from its first segment only, so one running past it is counted truncated and freed, every
// segment (a SYN with data here: not answered from a frame cut short).
TEST_F(BindTest, ChainedFrameIsCountedAndFreedWhole) {
    make_worker(Mode::Dpdk);
    Seg syn = syn_seg();
    syn.mss = 1460;
    syn.payload = std::string(200, 'd');
    rte_mbuf *m = make_seg(rp.pool, syn);
    ASSERT_NE(m, nullptr);
    rte_mbuf *tail = rte_pktmbuf_alloc(rp.pool);
    ASSERT_NE(tail, nullptr);
    const std::uint16_t cut = 150;
    std::memcpy(rte_pktmbuf_append(tail, cut),
                rte_pktmbuf_mtod_offset(m, char *, rte_pktmbuf_data_len(m) - cut), cut);
    rte_pktmbuf_trim(m, cut);
    ASSERT_EQ(rte_pktmbuf_chain(m, tail), 0);
    const unsigned avail = rte_mempool_avail_count(rp.pool);
    inject(rp.rx, m);
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DROP_TRUNCATED), 1u);
    EXPECT_EQ(stat(KVS_R_TX_SYNACK), 0u);
    EXPECT_EQ(rte_mempool_avail_count(rp.pool), avail + 2) << "both segments back in the pool";
}

// Both checks come before the flow's own handling: a SYN+FIN (or a SYN to a group address) on a
// flow being bound was taken for another connection's SYN there, and ended the binding.
TEST_F(BindTest, MalformedSynsLeaveAFlowBeingBoundAlone) {
    make_worker(Mode::Dpdk);
    cookie = cookie_for(cport);
    inject(rp.rx, make_seg(rp.pool, client_seg(0, request(300), 5)));
    ASSERT_EQ(step(now).size(), 1u) << "the SYN to the backend";
    ASSERT_EQ(worker->slot_count(), 1u);
    Seg fin = syn_seg(KVS_TCP_SYN | KVS_TCP_FIN);
    fin.seq = isn + 12345;  // another connection's ISN, as a SYN on a bound tuple
    inject(rp.rx, make_seg(rp.pool, fin));
    Seg group = syn_seg();
    group.seq = isn + 777;
    static const std::uint8_t kMulticast[6] = {0x01, 0x00, 0x5e, 0x00, 0x00, 0x01};
    group.dmac = kMulticast;
    inject(rp.rx, make_seg(rp.pool, group));
    EXPECT_TRUE(step(now + ms(1)).empty());
    EXPECT_EQ(stat(KVS_R_DROP_MALFORMED), 1u);
    EXPECT_EQ(stat(KVS_R_DROP_SYN_NOT_UNICAST), 1u);
    EXPECT_EQ(stat(KVS_R_FLOW_REUSED), 0u) << "the binding was ended";
    EXPECT_EQ(worker->slot_count(), 1u);
}

TEST_F(BindTest, SynToAGroupAddressIsDroppedUnansweredInDpdkMode) {
    make_worker(Mode::Dpdk);
    Seg syn = syn_seg();
    static const std::uint8_t kBroadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    syn.dmac = kBroadcast;
    inject(rp.rx, make_seg(rp.pool, syn));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DROP_SYN_NOT_UNICAST), 1u);
    EXPECT_EQ(stat(KVS_R_TX_SYNACK), 0u);
    // From one: the same.
    Seg from = syn_seg();
    from.saddr = htonl(0xe0000001);  // 224.0.0.1
    inject(rp.rx, make_seg(rp.pool, from));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DROP_SYN_NOT_UNICAST), 2u);
    EXPECT_EQ(stat(KVS_R_TX_SYNACK), 0u);
}

// CLOCK_MONOTONIC in ns: the worker's clock for its SYN-ACK buckets.
std::uint64_t mono_now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

// Dpdk mode's SYN-ACK limit per client prefix is the appliance's: the workers share one table
// of buckets (each had its own: W x the limit in all). What another worker took from the
// client's network is gone for this one; another network's bucket is its own.
TEST_F(BindTest, SynRateLimitIsSharedBetweenWorkers) {
    tables->config.syn_rate_per_prefix = 1;  // a second: nothing refills within this test
    tables->config.syn_burst_per_prefix = 6;
    SynBuckets shared;
    syn_buckets = &shared;
    make_worker(Mode::Dpdk);
    const std::uint64_t net = (4ull << 56) | (ntohl(client_ip) >> 8);  // kvs_syn_prefix_key
    for (int i = 0; i < 4; i++)
        ASSERT_TRUE(shared.take(net, mono_now_ns(), 1, 6)) << "another worker";
    ASSERT_TRUE(shared.take(net + 1, mono_now_ns(), 1, 6)) << "another network";
    const std::uint64_t tx0 = stat(KVS_R_TX_SYNACK), drop0 = stat(KVS_R_DROP_SYN_RATE);
    for (std::uint16_t i = 0; i < 5; i++)
        inject(rp.rx,
               make_seg(rp.pool, syn_seg(KVS_TCP_SYN, static_cast<std::uint16_t>(40000 + i))));
    EXPECT_EQ(step(now).size(), 2u) << "6 in all, 4 taken elsewhere";
    EXPECT_EQ(stat(KVS_R_TX_SYNACK) - tx0, 2u);
    EXPECT_EQ(stat(KVS_R_DROP_SYN_RATE) - drop0, 3u);
    syn_buckets = nullptr;
}

// The shared table from several threads at once: one network's burst in all.
TEST(SynBucketsTest, ThreadsTakeOneBurstInAll) {
    SynBuckets b;
    const std::uint64_t now = mono_now_ns();
    std::atomic<int> taken{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; t++)
        ts.emplace_back([&] {
            for (int i = 0; i < 1000; i++) taken += b.take(7, now, 1, 100) ? 1 : 0;
        });
    for (auto &t : ts) t.join();
    EXPECT_EQ(taken.load(), 100);
}

TEST_F(BindTest, SynReachingTheWorkerInXdpModeIsCounted) {
    make_worker(Mode::Xdp);
    inject(rp.rx, make_seg(rp.pool, syn_seg()));
    EXPECT_TRUE(step(now).empty()) << "XDP answers SYNs in xdp mode";
    EXPECT_EQ(stat(KVS_R_DP_SYN_NOT_OURS), 1u);
}

TEST_F(BindTest, PureAckWhileHoldingIsCountedAndUpdatesTheWindow) {
    make_worker();
    sign_synack();
    inject(rp.rx, make_seg(rp.pool, client_seg(0, kIncompleteHead, 5)));
    EXPECT_TRUE(step(now).empty());
    Seg ack = client_seg(static_cast<std::uint32_t>(std::strlen(kIncompleteHead)), "", 6);
    ack.flags = KVS_TCP_ACK;
    ack.window = 4321;
    inject(rp.rx, make_seg(rp.pool, ack));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DP_PURE_ACK_HELD), 1u);
    EXPECT_EQ(worker->slot_count(), 1u) << "the flight is still held";
}

// Dual stack: an IPv6 VIP beside the IPv4 one, an IPv6 SNAT address (snat2) and two IPv6
// backends (ids 3 and 4) beside the three IPv4 ones.
class Bind6Test : public BindTest {
   protected:
    void SetUp() override {
        BindTest::SetUp();
        kvs_config &c = tables->config;
        kvstest::ip6("fd77:1::1", c.vips[1].addr);
        c.vips[1].port = htons(8000);
        c.vips[1].family = KVS_AF_INET6;
        c.n_vips = 2;
        kvstest::ip6("fd77::2", c.snat2_addr);
        c.snat2_family = KVS_AF_INET6;
        std::vector<MaglevBackend> mb;
        for (unsigned i = 0; i < 5; ++i) {
            if (i >= 3) {
                kvs_backend &b = tables->backends[i];
                b = tables->backends[0];
                std::memset(b.addr, 0, sizeof(b.addr));
                kvstest::ip6(i == 3 ? "fd77::101" : "fd77::102", b.addr);
                b.family = KVS_AF_INET6;
                b.mac[5] = static_cast<std::uint8_t>(i + 1);
            }
            mb.push_back({i, 1000 + i, 1});
        }
        auto table = build_maglev(mb);
        std::memcpy(tables->maglev.data(), table.data(), KVS_MAGLEV_SIZE * sizeof(std::uint32_t));
        c.n_backends = 5;
        kvstest::ip6("fd77::10", client6);
        std::memcpy(vip6, c.vips[1].addr, 16);
    }
    // Our cookie and SYN-ACK TSval for the IPv6 client's connection (as sign_synack).
    void sign_synack6() {
        kvs_cookie_tuple t{};
        std::memcpy(t.saddr, client6, 16);
        std::memcpy(t.daddr, vip6, 16);
        t.sport = htons(cport);
        t.dport = htons(8000);
        kvs_cookie_sign(tables->config.cookie_key[0], &t,
                        kvs_cookie_slot(kvs_cookie_now_tai_ns(), 64),
                        kvs_cookie_pack_opts(1460, 7, 1), isn, &cookie, &t_ours);
    }
    Seg client_seg6(std::uint32_t off, const std::string &payload, std::uint32_t tsval) {
        Seg s = client_seg(off, payload, tsval);
        s.v6 = true;
        std::memcpy(s.saddr6, client6, 16);
        std::memcpy(s.daddr6, vip6, 16);
        return s;
    }
    int backend6_of(const kvs_pkt &p) const {
        for (unsigned i = 3; i < 5; ++i)
            if (p.ip6 && !std::memcmp(tables->backends[i].addr, p.ip6->daddr, 16))
                return static_cast<int>(i);
        return -1;
    }
    std::uint32_t client6[4]{}, vip6[4]{};
};

TEST_F(Bind6Test, Ipv6FlowBindsToAnIpv6BackendFromTheIpv6SnatAddress) {
    make_worker();
    sign_synack6();
    const std::string req = request(900);
    inject(rp.rx, make_seg(rp.pool, client_seg6(0, req, 3000)));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    ASSERT_NE(syn.ip6, nullptr) << "the backend leg of an IPv6 client is IPv6";
    ASSERT_NE(syn.tcp, nullptr);
    EXPECT_EQ(syn.tcp->flags, KVS_TCP_SYN);
    EXPECT_EQ(ntohl(syn.tcp->seq), isn);
    EXPECT_EQ(0, std::memcmp(syn.ip6->saddr, tables->config.snat2_addr, 16))
        << "from the IPv6 SNAT address";
    const int be = backend6_of(syn);
    ASSERT_GE(be, 3) << "only IPv6 backends are eligible for an IPv6 flow";
    EXPECT_EQ(syn.ip6->hop_limit, 64);
    EXPECT_EQ(syn.opts.mss, 1460);
    EXPECT_TRUE(checksums_ok(out[0]));
    EXPECT_EQ(0, std::memcmp(syn.eth->dst, tables->backends[be].mac, 6));

    // The backend accepts: ACK, the held request flushed over IPv6, both entries installed.
    Seg sa{};
    sa.v6 = true;
    std::memcpy(sa.saddr6, syn.ip6->daddr, 16);
    std::memcpy(sa.daddr6, syn.ip6->saddr, 16);
    sa.sport = ntohs(syn.tcp->dest);
    sa.dport = ntohs(syn.tcp->source);
    sa.seq = bisn;
    sa.ack = isn + 1;
    sa.flags = KVS_TCP_SYN | KVS_TCP_ACK;
    sa.smac = backend_mac;
    sa.mss = 1440;
    sa.wscale = 7;
    sa.ts = true;
    sa.tsval = tb;
    sa.tsecr = syn.opts.tsval;
    inject(rp.rx, make_seg(rp.pool, sa));
    out = step(now + ms(1));
    ASSERT_EQ(out.size(), 2u) << "ACK + the held segment";
    kvs_pkt ack = parse(out[0]);
    ASSERT_NE(ack.ip6, nullptr);
    EXPECT_EQ(ack.tcp->flags, KVS_TCP_ACK);
    EXPECT_EQ(ntohl(ack.tcp->ack_seq), bisn + 1);
    EXPECT_TRUE(checksums_ok(out[0]));
    kvs_pkt data = parse(out[1]);
    ASSERT_NE(data.ip6, nullptr);
    EXPECT_TRUE(checksums_ok(out[1]));
    EXPECT_EQ(0, std::memcmp(data.ip6->saddr, tables->config.snat2_addr, 16));
    EXPECT_EQ(0, std::memcmp(data.ip6->daddr, tables->backends[be].addr, 16));
    EXPECT_EQ(
        std::string(reinterpret_cast<const char *>(data.tcp) + data.tcp_hlen, data.payload_len),
        req);

    kvs_flow_key kc{}, ks{};
    std::memcpy(kc.saddr, client6, 16);
    std::memcpy(kc.daddr, vip6, 16);
    kc.sport = htons(cport);
    kc.dport = htons(8000);
    kc.family = KVS_AF_INET6;
    kc.proto = KVS_IPPROTO_TCP;
    kvs_flow fc{}, fs{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &kc, &fc), 0);
    EXPECT_EQ(fc.dir, KVS_DIR_C2S);
    EXPECT_EQ(0, std::memcmp(fc.new_saddr, tables->config.snat2_addr, 16));
    EXPECT_EQ(0, std::memcmp(fc.new_daddr, tables->backends[be].addr, 16));
    kvs_flow_reverse_key(&kc, &fc, &ks);
    EXPECT_EQ(ks.family, KVS_AF_INET6);
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &ks, &fs), 0);
    EXPECT_EQ(fs.dir, KVS_DIR_S2C);
    EXPECT_EQ(0, std::memcmp(fs.new_saddr, vip6, 16));
    EXPECT_EQ(0, std::memcmp(fs.new_daddr, client6, 16));
    EXPECT_EQ(tables->load[be].binds, 1u);
    EXPECT_EQ(stat(KVS_R_DP_BIND_OK), 1u);
}

TEST_F(Bind6Test, Ipv4FlowsStayOnIpv4BackendsBesideIpv6Ones) {
    make_worker();
    for (std::uint16_t k = 0; k < 16; ++k) {
        Seg s = client_seg(0, request(600 + 37 * k), 5);
        s.sport = static_cast<std::uint16_t>(20000 + k);
        s.ack = cookie_for(s.sport) + 1;
        inject(rp.rx, make_seg(rp.pool, s));
    }
    auto out = step(now);
    ASSERT_EQ(out.size(), 16u);
    for (auto &f : out) {
        kvs_pkt syn = parse(f);
        ASSERT_NE(syn.ip4, nullptr);
        EXPECT_EQ(syn.ip4->saddr, ip4("10.77.0.2"));
        EXPECT_GE(backend_of(syn), 0) << "an IPv4 backend";
    }
}

TEST_F(Bind6Test, Ipv6VipWithoutIpv6SnatAddressIsCountedAndDropped) {
    tables->config.snat2_family = KVS_AF_NONE;
    make_worker();
    sign_synack6();
    inject(rp.rx, make_seg(rp.pool, client_seg6(0, request(600), 5)));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DP_NO_SNAT_FAMILY), 1u);
    EXPECT_EQ(worker->slot_count(), 0u);
}

TEST_F(Bind6Test, DpdkModeAnswersIpv6SynWithCookieAndNeighborSolicitation) {
    make_worker(Mode::Dpdk);
    kvstest::TcpSpec t;
    t.v6 = true;
    std::memcpy(t.saddr, client6, 16);
    std::memcpy(t.daddr, vip6, 16);
    t.sport = cport;
    t.dport = 8000;
    t.seq = isn;
    t.flags = KVS_TCP_SYN;
    t.opts = kvstest::opt_mss(1440);
    inject(rp.rx, to_mbuf(rp.pool, kvstest::build_tcp(t)));
    auto out = step(now);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt sa = parse(out[0]);
    ASSERT_NE(sa.ip6, nullptr);
    EXPECT_EQ(sa.tcp->flags, KVS_TCP_SYN | KVS_TCP_ACK);
    EXPECT_EQ(0, std::memcmp(sa.ip6->saddr, vip6, 16));
    EXPECT_EQ(0, std::memcmp(sa.ip6->daddr, client6, 16));
    EXPECT_EQ(ntohl(sa.tcp->ack_seq), isn + 1);
    EXPECT_TRUE(checksums_ok(out[0]));

    // Neighbor Solicitation for the IPv6 SNAT address -> solicited advertisement with our MAC;
    // one for another address is left alone (counted as ICMP passed).
    auto ns = [&](const char *target) {
        std::vector<std::uint8_t> f(14 + 40 + 32, 0);
        const std::uint8_t mcast[6] = {0x33, 0x33, 0xff, 0, 0, 2};
        std::memcpy(f.data(), mcast, 6);
        std::memcpy(f.data() + 6, kClientMac, 6);
        f[12] = 0x86, f[13] = 0xdd;
        std::uint8_t *ip = f.data() + 14;
        ip[0] = 0x60;
        ip[5] = 32;   // payload length
        ip[6] = 58;   // ICMPv6
        ip[7] = 255;  // hop limit
        std::memcpy(ip + 8, client6, 16);
        kvstest::ip6("ff02::1:ff00:2", reinterpret_cast<std::uint32_t *>(ip + 24));
        std::uint8_t *icmp = ip + 40;
        icmp[0] = 135;
        kvstest::ip6(target, reinterpret_cast<std::uint32_t *>(icmp + 8));
        icmp[24] = 1, icmp[25] = 1;  // source link-layer address
        std::memcpy(icmp + 26, kClientMac, 6);
        return f;
    };
    inject(rp.rx, to_mbuf(rp.pool, ns("fd77::2")));
    out = step(now);
    ASSERT_EQ(out.size(), 1u);
    const std::vector<std::uint8_t> &na = out[0];
    ASSERT_EQ(na.size(), 14u + 40 + 32);
    EXPECT_EQ(0, std::memcmp(na.data(), kClientMac, 6));
    EXPECT_EQ(0, std::memcmp(na.data() + 6, kAppMac, 6));
    const std::uint8_t *ip = na.data() + 14, *icmp = ip + 40;
    EXPECT_EQ(ip[7], 255);
    EXPECT_EQ(0, std::memcmp(ip + 8, tables->config.snat2_addr, 16)) << "from the target";
    EXPECT_EQ(0, std::memcmp(ip + 24, client6, 16)) << "to the soliciting node";
    EXPECT_EQ(icmp[0], 136);
    EXPECT_EQ(icmp[4], 0x60) << "solicited + override";
    EXPECT_EQ(icmp[24], 2) << "target link-layer address option";
    EXPECT_EQ(0, std::memcmp(icmp + 26, kAppMac, 6));
    // The ICMPv6 checksum over the pseudo-header verifies (sums to 0xffff).
    std::uint64_t sum = kvs_csum_pseudo6(reinterpret_cast<const std::uint32_t *>(ip + 8),
                                         reinterpret_cast<const std::uint32_t *>(ip + 24), 58, 32);
    sum = kvs_csum_partial(icmp, 32, sum);
    EXPECT_EQ(kvs_csum_fold(sum), 0xffff);
    EXPECT_EQ(stat(KVS_R_DP_ND_ANSWERED), 1u);
    inject(rp.rx, to_mbuf(rp.pool, ns("fd77::99")));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_PASS_ICMP), 1u);
}

TEST_F(BindTest, ArpForAnotherAddressIsCountedNotAnswered) {
    make_worker(Mode::Dpdk);
    std::vector<std::uint8_t> f(42, 0);
    std::memset(f.data(), 0xff, 6);                 // broadcast
    std::memcpy(f.data() + 6, kClientMac, 6);       // from the client
    f[12] = 0x08, f[13] = 0x06;                     // ARP
    f[14] = 0, f[15] = 1, f[16] = 0x08, f[17] = 0;  // Ethernet / IPv4
    f[18] = 6, f[19] = 4, f[20] = 0, f[21] = 1;     // request
    std::memcpy(f.data() + 22, kClientMac, 6);
    std::memcpy(f.data() + 28, &client_ip, 4);
    const std::uint32_t other = ip4("10.77.9.9");  // neither a VIP nor the SNAT address
    std::memcpy(f.data() + 38, &other, 4);
    inject(rp.rx, to_mbuf(rp.pool, f));
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(stat(KVS_R_DP_ARP_NOT_OURS), 1u);
    // The same request for the VIP is answered.
    std::memcpy(f.data() + 38, &vip, 4);
    inject(rp.rx, to_mbuf(rp.pool, f));
    EXPECT_EQ(step(now).size(), 1u);
}

TEST_F(BindTest, FullInboxOfAnotherWorkerIsCounted) {
    WorkerParams wp;
    wp.opts.max_pending = 64;
    wp.port = rp.port;
    wp.pool = rp.pool;
    wp.n_workers = 2;
    wp.index = 0;
    ports = std::make_unique<PortBusy>();
    wp.ports = ports.get();
    rte_ring *in[2] = {rte_ring_create("kvdp_fi0", 4, SOCKET_ID_ANY, RING_F_SC_DEQ),
                       rte_ring_create("kvdp_fi1", 4, SOCKET_ID_ANY, RING_F_SC_DEQ)};
    ASSERT_TRUE(in[0] && in[1]);
    wp.inboxes = in;
    worker = std::make_unique<Worker>(tables->view(), wp);
    // Backend packets to worker 1's SNAT ports arriving on worker 0's queue: the inbox (room
    // for 3) takes three, the rest are counted and freed.
    const std::uint16_t port1 = static_cast<std::uint16_t>(worker->snat_hi() + 1);
    for (int k = 0; k < 5; ++k) {
        Seg b{};
        b.saddr = tables->backends[0].addr[0];
        b.daddr = ip4("10.77.0.2");
        b.sport = 8000;
        b.dport = port1;
        b.flags = KVS_TCP_ACK;
        inject(rp.rx, make_seg(rp.pool, b));
    }
    EXPECT_TRUE(step(now).empty());
    EXPECT_EQ(rte_ring_count(in[1]), 3u);
    EXPECT_EQ(stat(KVS_R_DP_INBOX_FULL), 2u);
    worker.reset();
    rte_mbuf *m = nullptr;
    while (rte_ring_dequeue(in[1], reinterpret_cast<void **>(&m)) == 0) rte_pktmbuf_free(m);
    for (auto *r : in) rte_ring_free(r);
}

// Per-request steering, as the worker carries it out against a real flow map: XDP marked a
// bound connection's entries REBINDING at a request boundary (done here by hand, with the
// tracking XDP keeps); the next request moves to the backend a fresh connection would reach.
TEST_F(BindTest, RequestBoundaryMovesTheConnectionToANewBackendLeg) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(false, b));
    const std::string &second = b.second;
    const int fresh = b.fresh, be1 = b.be1;
    const kvs_flow_key kc = b.kc, ks = b.ks;
    kvs_flow fs = b.fs;
    const std::uint32_t S = b.S;
    const std::uint16_t old_port = b.old_port;
    std::vector<std::vector<std::uint8_t>> out;

    // kvsteerd restarted with another syn-wscale meanwhile: the client still scales the windows
    // it is sent by the one its SYN-ACK carried (before, the move took today's).
    const unsigned os = tables->config.syn_wscale;
    tables->config.syn_wscale = static_cast<std::uint8_t>(os == 9 ? 5 : 9);
    Seg r2 = next_request(b);  // punted by XDP
    ASSERT_NO_FATAL_FAILURE(move_request(b, r2, out));
    tables->config.syn_wscale = static_cast<std::uint8_t>(os);
    ASSERT_EQ(out.size(), 3u) << "ACK to the new leg, RST to the old one, the request";
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_ACK);
    kvs_pkt rst = parse(out[1]);
    EXPECT_EQ(rst.tcp->flags, KVS_TCP_RST);
    EXPECT_EQ(backend_of(rst), be1);
    EXPECT_EQ(ntohs(rst.tcp->source), old_port);
    EXPECT_EQ(ntohl(rst.tcp->seq), S) << "in the old leg's window";
    EXPECT_EQ(stat(KVS_R_DP_POOL_PARK_REFUSED), 1u)
        << "the old leg has no timestamps (its SYN-ACK had none): reset, not kept for reuse";
    kvs_pkt data = parse(out[2]);
    EXPECT_EQ(backend_of(data), fresh);
    EXPECT_EQ(ntohl(data.tcp->seq), S);
    EXPECT_EQ(ntohl(data.tcp->ack_seq), 0x20000000u + 1) << "acks in the new backend's space";
    EXPECT_EQ(data.tcp->doff_res & KVS_TCP_RES_PUNT_BOUND, 0) << "XDP's tag is not sent on";
    EXPECT_TRUE(checksums_ok(out[2]));

    // The entries: the client's replaced whole (new leg, unmarked), the old server entry gone,
    // the new one continuing the client's view (next server byte after the first response).
    kvs_flow nc{}, ns{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &kc, &nc), 0);
    EXPECT_EQ(nc.backend_id, fresh);
    EXPECT_EQ(nc.state & KVS_FLOW_REBINDING, 0);
    EXPECT_EQ(nc.resp_end, S + static_cast<std::uint32_t>(second.size()))
        << "the moved request's end, for XDP's tracking";
    EXPECT_EQ(nc.resp, KVS_RESP_END);
    EXPECT_NE(bpf_map_lookup_elem(tables->flows_fd, &ks, &fs), 0) << "the old leg's entry";
    EXPECT_FALSE(worker->keyed_by_leg(ks)) << "the reset leg's late segments are nobody's";
    kvs_flow_key ks2;
    kvs_flow_reverse_key(&kc, &nc, &ks2);
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &ks2, &ns), 0);
    EXPECT_EQ(ns.seq_delta + 0x20000000u + 1, cookie + 1 + 100) << "server bytes continue";
    EXPECT_EQ(ns.tsval_delta + 777, 90000u + 1) << "TSvals to the client continue, never back";
    const unsigned bs = nc.leg_backend_wscale == KVS_WSCALE_NONE ? 0 : nc.leg_backend_wscale;
    EXPECT_EQ(ns.win_shl, bs > os ? bs - os : 0) << "the window scale of the client's SYN-ACK";
    EXPECT_EQ(ns.win_shr, os > bs ? os - bs : 0) << "the window scale of the client's SYN-ACK";
    EXPECT_EQ(stat(KVS_R_DP_REQ_MOVED), 1u);
    EXPECT_EQ(tables->load[be1].closes, 1u) << "the first request left its backend";
    EXPECT_EQ(tables->load[fresh].binds, 1u) << "the moved request (the probe never bound)";
}

// A moved request held with a segment past a hole (the client's next bytes, one segment lost
// before the appliance): only the bytes up to the hole reach the new leg; the one past it is
// freed and counted (the client sends it again), and XDP's tracking starts at the hole. Before,
// it was sent on: the backend kept it out of order, the retransmission filling the hole was
// taken for a new request boundary, and a parked leg carried the stray bytes into the next
// client's stream.
TEST_F(BindTest, AMovedRequestsBytesPastAHoleAreNotSentOn) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(false, b));
    Seg past = next_request(b);
    past.seq += static_cast<std::uint32_t>(b.second.size()) + 3;  // 3 bytes lost before it
    past.payload = "POST /x HTTP/1.1\r\n";
    inject(rp.rx, make_seg(rp.pool, past));
    std::vector<std::vector<std::uint8_t>> out;
    ASSERT_NO_FATAL_FAILURE(move_request(b, next_request(b), out));
    ASSERT_EQ(out.size(), 3u) << "ACK to the new leg, RST to the old one, the request alone";
    kvs_pkt data = parse(out[2]);
    EXPECT_EQ(ntohl(data.tcp->seq), b.S);
    EXPECT_EQ(data.payload_len, b.second.size());
    EXPECT_EQ(stat(KVS_R_DP_HELD_PAST_HOLE), 1u);
    kvs_flow nc{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &b.kc, &nc), 0);
    EXPECT_EQ(nc.next_seq, b.S + static_cast<std::uint32_t>(b.second.size()))
        << "XDP's tracking goes on from the hole";
}

// A boundary whose ACK happens to pass the SYN-cookie check (here: the response D bytes long, D a
// multiple of 2^22 that moves only the cookie's option byte, every value of which is valid) is
// still the bound connection's next request: XDP's tag says so. Before, the worker checked the
// cookie first and took such a boundary (about 2^-22 of them) for a new connection's first
// flight: bound anew with options from the cookie's bits, the old leg left open and counted in
// flight for good.
TEST_F(BindTest, BoundaryWhoseAckPassesTheCookieCheckStaysTheConnections) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(false, b));
    const std::uint32_t ob = (cookie >> KVS_COOKIE_MAC_BITS) & 0xff;
    const std::uint32_t D = ((ob == 0xff ? 0u : ob + 1) - ob) << KVS_COOKIE_MAC_BITS;  // mod 2^32
    kvs_cookie_opts co{};
    ASSERT_TRUE(cookie_passes(cookie + D, &co)) << "the boundary's ACK passes the cookie check";
    b.fs.next_seq = bisn + 1 + D;  // XDP's view: the D-byte response complete, acknowledged
    ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &b.ks, &b.fs, BPF_EXIST), 0);
    Seg r2 = next_request(b);
    r2.ack = cookie + 1 + D;
    std::vector<std::vector<std::uint8_t>> out;
    ASSERT_NO_FATAL_FAILURE(move_request(b, r2, out));
    ASSERT_EQ(out.size(), 3u) << "ACK to the new leg, RST to the old one, the request";
    kvs_pkt rst = parse(out[1]);
    EXPECT_EQ(rst.tcp->flags, KVS_TCP_RST);
    EXPECT_EQ(backend_of(rst), b.be1) << "the old leg is reset";
    EXPECT_EQ(stat(KVS_R_DP_REQ_MOVED), 1u);
    EXPECT_EQ(tables->load[b.be1].closes, 1u) << "the first request left its backend";
    kvs_flow ns{};
    EXPECT_NE(bpf_map_lookup_elem(tables->flows_fd, &b.ks, &ns), 0) << "the old leg's entry";
}

// XDP marked a boundary while the backend's FIN crossed it on another CPU (its entry shows the
// FIN by the time the worker reads it): not quiescent after all. The request stays on its
// backend: sent on through the old leg, both entries unmarked, no new leg.
TEST_F(BindTest, BoundaryRacedByTheBackendsFinStaysOnItsBackend) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    b.fs.state |= KVS_FLOW_FIN_IN;
    ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &b.ks, &b.fs, BPF_EXIST), 0);
    Seg r2 = next_request(b);
    inject(rp.rx, make_seg(rp.pool, r2));
    auto out = step(now + ms(100));
    ASSERT_EQ(out.size(), 1u) << "the request on its old leg, nothing else";
    kvs_pkt data = parse(out[0]);
    EXPECT_EQ(backend_of(data), b.be1);
    EXPECT_EQ(ntohs(data.tcp->source), b.old_port);
    EXPECT_EQ(ntohl(data.tcp->seq), b.S + b.fc.seq_delta);
    EXPECT_EQ(data.payload_len, b.second.size());
    EXPECT_EQ(data.tcp->doff_res & KVS_TCP_RES_PUNT_BOUND, 0) << "XDP's tag is not sent on";
    EXPECT_TRUE(checksums_ok(out[0]));
    EXPECT_EQ(stat(KVS_R_DP_REQ_BOUNDARY_RACED), 1u);
    EXPECT_EQ(stat(KVS_R_DP_REQ_MOVED), 0u);
    EXPECT_EQ(worker->slot_count(), 0u) << "nothing held";
    kvs_flow nc{}, ns{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &b.kc, &nc), 0);
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &b.ks, &ns), 0);
    EXPECT_EQ(nc.state & KVS_FLOW_REBINDING, 0);
    EXPECT_EQ(ns.state & KVS_FLOW_REBINDING, 0);
    EXPECT_EQ(nc.resp & KVS_RESP_END, 0) << "no later boundary on this connection";
}

// A boundary request in two segments, the first kept on its backend (raced by the backend's FIN):
// the entries are unmarked by then, and the second, which XDP tagged while they were marked, goes
// on through them too. Before, a tagged segment the worker could not re-bind went on to the
// cookie check: dropped (the client waited out a retransmission), or with an ACK passing the
// check (about 2^-22) bound as a new connection.
TEST_F(BindTest, TaggedSegmentAfterAKeptBoundaryGoesOnThroughTheFlow) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    b.fs.state |= KVS_FLOW_FIN_IN;
    ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &b.ks, &b.fs, BPF_EXIST), 0);
    const auto half = static_cast<std::uint32_t>(b.second.size() / 2);
    const auto off = static_cast<std::uint32_t>(b.req1.size());
    Seg r2a = client_seg(off, b.second.substr(0, half), 7);
    Seg r2b = client_seg(off + half, b.second.substr(half), 7);
    for (Seg *r : {&r2a, &r2b}) {
        r->ack = cookie + 1 + 100;
        r->punt_bound = true;
    }
    inject(rp.rx, make_seg(rp.pool, r2a));
    auto out = step(now + ms(100));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(stat(KVS_R_DP_REQ_BOUNDARY_RACED), 1u);
    inject(rp.rx, make_seg(rp.pool, r2b));
    out = step(now + ms(101));
    ASSERT_EQ(out.size(), 1u) << "the second half on the old leg too";
    kvs_pkt data = parse(out[0]);
    EXPECT_EQ(backend_of(data), b.be1);
    EXPECT_EQ(ntohs(data.tcp->source), b.old_port);
    EXPECT_EQ(ntohl(data.tcp->seq), b.S + half + b.fc.seq_delta);
    EXPECT_EQ(data.payload_len, b.second.size() - half);
    EXPECT_EQ(data.tcp->doff_res & KVS_TCP_RES_PUNT_BOUND, 0) << "XDP's tag is not sent on";
    EXPECT_TRUE(checksums_ok(out[0]));
    EXPECT_EQ(stat(KVS_R_DROP_BAD_COOKIE), 0u);
    EXPECT_EQ(worker->slot_count(), 0u) << "nothing held, nothing bound";
    // The client's FIN and RST, tagged too: not sent on through the entries (XDP's close
    // bookkeeping would be skipped) but dropped, counted (dp_close_left_to_xdp); a FIN's
    // retransmission takes XDP's path, and the backend's next segment draws the RST again.
    for (const std::uint8_t flags :
         {std::uint8_t(KVS_TCP_ACK | KVS_TCP_FIN), std::uint8_t(KVS_TCP_ACK | KVS_TCP_RST)}) {
        Seg fin = client_seg(off + static_cast<std::uint32_t>(b.second.size()), "", 7);
        fin.flags = flags;
        fin.ack = cookie + 1 + 100;
        fin.punt_bound = true;
        inject(rp.rx, make_seg(rp.pool, fin));
        EXPECT_EQ(step(now + ms(102)).size(), 0u);
    }
    EXPECT_EQ(stat(KVS_R_DP_CLOSE_LEFT_TO_XDP), 2u);
}

// A boundary whose server entry is gone (evicted from the LRU map): nothing to continue. The
// client gets a RST in its own sequence space, so it retries on a new connection; before, the
// segment was dropped silently and the connection hung until the client's own timeout.
TEST_F(BindTest, BoundaryOfHalfAFlowResetsTheClient) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    ASSERT_EQ(bpf_map_delete_elem(tables->flows_fd, &b.ks), 0);
    const Seg r2 = next_request(b);
    const std::uint64_t closes = tables->load[b.be1].closes;
    inject(rp.rx, make_seg(rp.pool, r2));
    auto out = step(now + ms(100));
    ASSERT_EQ(out.size(), 2u) << "a RST each way, nothing else";
    // The backend leg's, at the boundary in its own space: it stayed open before, on a port the
    // sweeper hands out again.
    kvs_pkt leg = parse(out[0]);
    ASSERT_NE(leg.tcp, nullptr);
    EXPECT_EQ(leg.tcp->flags, KVS_TCP_RST);
    EXPECT_EQ(backend_of(leg), b.be1);
    EXPECT_EQ(ntohs(leg.tcp->source), b.old_port);
    EXPECT_EQ(ntohl(leg.tcp->seq), b.S + b.fc.seq_delta);
    EXPECT_TRUE(checksums_ok(out[0]));
    EXPECT_EQ(tables->load[b.be1].closes, closes + 1) << "the connection ends: closed in the load";
    kvs_pkt rst = parse(out[1]);
    ASSERT_NE(rst.tcp, nullptr);
    EXPECT_EQ(rst.tcp->flags, KVS_TCP_RST | KVS_TCP_ACK);
    EXPECT_EQ(rst.ip4->daddr, r2.saddr) << "to the client";
    EXPECT_EQ(ntohs(rst.tcp->dest), r2.sport);
    EXPECT_EQ(ntohl(rst.tcp->seq), r2.ack) << "what the client acknowledged";
    EXPECT_EQ(ntohl(rst.tcp->ack_seq), r2.seq + static_cast<std::uint32_t>(r2.payload.size()));
    EXPECT_EQ(stat(KVS_R_DP_REQ_NO_FLOW), 1u);
    kvs_flow nc{};
    EXPECT_NE(bpf_map_lookup_elem(tables->flows_fd, &b.kc, &nc), 0) << "its half deleted";
}

// A draining worker binds nothing new, but a request boundary of a bound connection goes on on
// its backend, its entries unmarked; before, the segment was dropped as a new flow refused with
// the entries still marked, and the connection stalled through the shutdown.
TEST_F(BindTest, BoundaryWhileDrainingStaysOnItsBackend) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    step(now + ms(100));
    worker->drain();
    inject(rp.rx, make_seg(rp.pool, next_request(b)));
    auto out = step(now + ms(100));
    ASSERT_NO_FATAL_FAILURE(expect_on_old_leg(b, out));
    EXPECT_EQ(stat(KVS_R_DP_REQ_KEPT_DRAINING), 1u);
    EXPECT_EQ(stat(KVS_R_DP_DRAINING), 0u);
    kvs_flow nc{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &b.kc, &nc), 0);
    EXPECT_EQ(nc.state & KVS_FLOW_REBINDING, 0) << "unmarked: the connection goes on";
}

// A boundary with no room to hold its request (here: the client's address holds its share of
// the slots being bound, three incomplete heads) stays on its backend, sent on through the flow.
// Before, the segment was dropped with the flow still marked: the connection stalled until a slot
// freed up (every retransmission dropped).
TEST_F(BindTest, BoundaryWithoutRoomStaysOnItsBackend) {
    make_worker(Mode::Xdp, 64, 3);
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    step(now + ms(100));
    hold_incomplete_heads(3, 40000);
    EXPECT_TRUE(step(now + ms(100)).empty());
    const std::uint32_t held = worker->slot_count();
    inject(rp.rx, make_seg(rp.pool, next_request(b)));
    auto out = step(now + ms(100));
    ASSERT_NO_FATAL_FAILURE(expect_on_old_leg(b, out));
    EXPECT_EQ(stat(KVS_R_DP_REQ_KEPT_NO_ROOM), 1u);
    EXPECT_EQ(stat(KVS_R_DP_REQ_BOUNDARY_RACED), 0u);
    EXPECT_LE(worker->slot_count(), held) << "no slot taken";
    kvs_flow nc{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &b.kc, &nc), 0);
    EXPECT_EQ(nc.state & KVS_FLOW_REBINDING, 0) << "unmarked: the connection goes on";
}

// The same when the address holds its share of the held packets (one here, an incomplete head's):
// the boundary's segment stays on its backend instead of being refused on every retransmission.
TEST_F(BindTest, BoundaryOverThePacketShareStaysOnItsBackend) {
    packets_per_source = 1;
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    step(now + ms(100));
    hold_incomplete_heads(1, 40000);
    EXPECT_TRUE(step(now + ms(100)).empty());
    inject(rp.rx, make_seg(rp.pool, next_request(b)));
    auto out = step(now + ms(100));
    ASSERT_EQ(out.size(), 1u) << "the request on its old leg, nothing else";
    EXPECT_EQ(backend_of(parse(out[0])), b.be1);
    EXPECT_EQ(stat(KVS_R_DP_REQ_KEPT_NO_ROOM), 1u);
    EXPECT_EQ(stat(KVS_R_DP_HOLD_SOURCE_CAP), 0u);
}

// A full table whose oldest stalled slot is a request being moved: evicting it sends its partial
// head on on its backend (the slot lingers, freed none), so a lingering slot makes the room.
// Before, the eviction was taken for a freed slot and the new flow was dropped (dp_hold_full).
TEST_F(BindTest, EvictingAMovingRequestStillMakesRoom) {
    make_worker(Mode::Xdp, 2, 0);
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    step(now + ms(100));
    Seg part = next_request(b);
    part.payload = kIncompleteHead;
    inject(rp.rx, make_seg(rp.pool, part));
    EXPECT_TRUE(step(now + ms(100)).empty()) << "held: an incomplete head";
    hold_incomplete_heads(1, 40000);
    EXPECT_TRUE(step(now + ms(100)).empty());
    ASSERT_EQ(worker->slot_count(), 2u) << "the table is full";
    Seg legit = client_seg(0, request(600), 5);
    legit.sport = 41000;
    legit.ack = cookie_for(legit.sport) + 1;
    inject(rp.rx, make_seg(rp.pool, legit));
    auto out = step(now + ms(110));  // past the bind gap: both heads are silent and incomplete
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(backend_of(parse(out[0])), b.be1) << "the moving request's head, on its backend";
    EXPECT_EQ(parse(out.back()).tcp->flags, KVS_TCP_SYN) << "the new flow binds";
    EXPECT_EQ(stat(KVS_R_DP_HOLD_FULL), 0u);
}

// A request at a boundary whose choice is the connection's backend (the same prompt again):
// flushed through the flow's own entries, which are written back unmarked, tracking from the
// end of the flushed bytes, where the request also ends (the next one may start there only).
TEST_F(BindTest, RequestBoundaryOnTheSameBackendResumesTheFlow) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_then_mark(b));
    const std::string &req1 = b.req1;
    const int be = b.be1;
    const kvs_flow_key kc = b.kc, ks = b.ks;
    const kvs_flow fc = b.fc;
    const std::uint32_t S = b.S;

    Seg r2 = client_seg(static_cast<std::uint32_t>(req1.size()), req1, 7);  // the same prompt
    r2.ack = cookie + 1 + 100;
    r2.punt_bound = true;
    inject(rp.rx, make_seg(rp.pool, r2));
    auto out = step(now + ms(100));
    ASSERT_EQ(out.size(), 1u) << "the request, through the flow: no new leg";
    kvs_pkt data = parse(out[0]);
    EXPECT_EQ(backend_of(data), be);
    EXPECT_EQ(ntohs(data.tcp->source), ntohs(fc.new_sport));
    EXPECT_EQ(ntohl(data.tcp->seq), S + fc.seq_delta);
    EXPECT_EQ(stat(KVS_R_DP_REQ_SAME_BACKEND), 1u);
    kvs_flow nc{}, ns{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &kc, &nc), 0);
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &ks, &ns), 0);
    EXPECT_EQ(nc.state & KVS_FLOW_REBINDING, 0);
    EXPECT_EQ(ns.state & KVS_FLOW_REBINDING, 0);
    const std::uint32_t end = S + static_cast<std::uint32_t>(req1.size());
    EXPECT_EQ(nc.next_seq, end);
    EXPECT_EQ(nc.resp_end, end);
    EXPECT_EQ(nc.resp, KVS_RESP_END);
    EXPECT_EQ(nc.msgs, 2);
}

// A FIN or RST XDP tagged while the entries were marked, reaching the worker after the request
// was resumed on its backend (the same burst): not sent on from the lingering copy, where XDP
// never saw it (no FIN on the entry, no close counted: the flow kept for the idle timeout, its
// backend one in flight too many), but dropped, counted: the FIN comes again through XDP.
// `from_backend`: the backend's (closing the kept-alive connection as the request crossed it),
// on the leg the request was resumed on; before, it was sent on to the client.
void BindTest::close_after_resume(std::uint8_t flags, bool from_backend) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_then_mark(b));
    const auto n = static_cast<std::uint32_t>(b.req1.size());
    Seg r2 = client_seg(n, b.req1, 7);  // the same prompt: resumed on its backend
    r2.ack = cookie + 1 + 100;
    r2.punt_bound = true;
    Seg fin = client_seg(2 * n, "", 7);
    fin.flags = flags;
    fin.ack = cookie + 1 + 100;
    if (from_backend) {
        fin.saddr = b.ks.saddr[0];
        fin.daddr = b.ks.daddr[0];
        fin.sport = ntohs(b.ks.sport);
        fin.dport = ntohs(b.ks.dport);
        fin.seq = bisn + 1 + 100;  // the response's end: the backend's next byte
        fin.ack = b.S;
        fin.smac = backend_mac;
    }
    fin.punt_bound = true;
    inject(rp.rx, make_seg(rp.pool, r2));
    inject(rp.rx, make_seg(rp.pool, fin));
    auto out = step(now + ms(100));
    ASSERT_EQ(out.size(), 1u) << "the request alone";
    EXPECT_EQ(parse(out[0]).payload_len, n);
    EXPECT_EQ(stat(KVS_R_DP_REQ_SAME_BACKEND), 1u);
    EXPECT_EQ(stat(KVS_R_DP_CLOSE_LEFT_TO_XDP), 1u);
}
TEST_F(BindTest, AFinAfterAResumeIsLeftToXdp) {
    close_after_resume(KVS_TCP_ACK | KVS_TCP_FIN);
}
TEST_F(BindTest, ARstAfterAResumeIsLeftToXdp) {
    close_after_resume(KVS_TCP_ACK | KVS_TCP_RST);
}
TEST_F(BindTest, ABackendFinAfterAResumeIsLeftToXdp) {
    close_after_resume(KVS_TCP_ACK | KVS_TCP_FIN, true);
}
TEST_F(BindTest, ABackendRstAfterAResumeIsLeftToXdp) {
    close_after_resume(KVS_TCP_ACK | KVS_TCP_RST, true);
}

// The same, its backend entry gone while the request was held (the LRU evicted it): the
// connection cannot carry the request and its response, so both sides are reset, the entries
// removed and the close counted. Before, the request was sent anyway and the client waited on a
// flow half gone until its own timeout.
TEST_F(BindTest, ResumedRequestWhoseEntryWentIsResetBothWays) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_then_mark(b));
    const std::string &req1 = b.req1;
    const int be = b.be1;
    const kvs_flow_key kc = b.kc, ks = b.ks;
    const kvs_flow fc = b.fc;
    const std::uint32_t S = b.S;
    const std::uint64_t closes = tables->load[be].closes;

    // The same prompt again, its head in two segments: held after the first.
    const auto n = static_cast<std::uint32_t>(req1.size());
    Seg a = client_seg(n, req1.substr(0, 100), 7), b2 = client_seg(n + 100, req1.substr(100), 7);
    a.ack = b2.ack = cookie + 1 + 100;
    a.punt_bound = b2.punt_bound = true;
    inject(rp.rx, make_seg(rp.pool, a));
    EXPECT_TRUE(step(now + ms(100)).empty()) << "held: the head is incomplete";
    ASSERT_EQ(bpf_map_delete_elem(tables->flows_fd, &ks), 0);
    inject(rp.rx, make_seg(rp.pool, b2));
    auto out = step(now + ms(101));
    ASSERT_EQ(out.size(), 2u) << "a RST each way, not the request";
    kvs_pkt r1 = parse(out[0]), r2 = parse(out[1]);
    ASSERT_NE(r1.tcp, nullptr);
    ASSERT_NE(r2.tcp, nullptr);
    EXPECT_EQ(r1.tcp->flags, KVS_TCP_RST | KVS_TCP_ACK);
    EXPECT_EQ(r1.ip4->daddr, client_ip) << "first to the client";
    EXPECT_EQ(ntohl(r1.tcp->seq), cookie + 1 + 100) << "its next byte from us";
    EXPECT_EQ(r2.tcp->flags, KVS_TCP_RST);
    EXPECT_EQ(backend_of(r2), be) << "then the backend leg";
    EXPECT_EQ(ntohl(r2.tcp->seq), S + fc.seq_delta);
    EXPECT_TRUE(checksums_ok(out[0]));
    EXPECT_TRUE(checksums_ok(out[1]));
    EXPECT_EQ(stat(KVS_R_DP_REQ_NO_FLOW), 1u);
    // The first request closed at the boundary, the resumed one bound and closed by the reset.
    EXPECT_EQ(tables->load[be].closes, closes + 2);
    EXPECT_EQ(tables->load[be].binds, tables->load[be].closes) << "nothing left in flight";
    kvs_flow nc{};
    EXPECT_NE(bpf_map_lookup_elem(tables->flows_fd, &kc, &nc), 0) << "the client entry removed";
    // The slot lingers (punts that raced); its held request was freed, nothing else is held.
    EXPECT_LE(worker->slot_count(), 1u);
}

// The same move, the old leg now of the pool's option profile (timestamps, SACK, window
// scaling): instead of a reset it is acknowledged up to the response's end and kept ready by the
// pool (--backend-reuse), its port passing from the flow to the pool; the backend's later close
// of it reaches the pool, which resets it and frees the port.
TEST_F(BindTest, RequestBoundaryKeepsTheOldLegForReuse) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    const int fresh = b.fresh, be1 = b.be1;
    const kvs_flow_key ks = b.ks;
    kvs_flow fc = b.fc, fs = b.fs;
    const std::uint32_t S = b.S;
    const std::uint16_t old_port = b.old_port;
    std::vector<std::vector<std::uint8_t>> out;

    // The next request, punted by XDP (its ack: the whole response).
    // Its TSval far ahead (a client clock faster than ours): the old leg carried up to this one,
    // moved, so our ACK on it must not go below that (the backend's PAWS check).
    constexpr std::uint32_t kAhead = 600000;  // ten minutes of milliseconds
    Seg r2 = next_request(b, 7 + kAhead);
    r2.window = 1000;
    ASSERT_NO_FATAL_FAILURE(move_request(b, r2, out));
    ASSERT_EQ(out.size(), 3u) << "ACK to the new leg, ACK to the old one, the request";
    EXPECT_EQ(parse(out[0]).tcp->flags, KVS_TCP_ACK);
    EXPECT_EQ(backend_of(parse(out[0])), fresh);
    kvs_pkt kept = parse(out[1]);
    EXPECT_EQ(kept.tcp->flags, KVS_TCP_ACK);
    EXPECT_EQ(backend_of(kept), be1);
    EXPECT_EQ(ntohs(kept.tcp->source), old_port);
    EXPECT_EQ(ntohl(kept.tcp->seq), S) << "our next byte on the old leg";
    EXPECT_EQ(ntohl(kept.tcp->ack_seq), bisn + 1 + 100) << "the whole response acknowledged";
    ASSERT_NE(kept.opts.ts_off, 0);
    EXPECT_EQ(kept.opts.tsecr, 90000u - fs.tsval_delta) << "the backend's newest TSval echoed";
    EXPECT_EQ(kept.opts.tsval, 7 + kAhead + fc.tsval_delta)
        << "the newest TSval the leg carried, our clock being behind it";
    EXPECT_EQ(ntohs(kept.tcp->window), 1000) << "the client's window (the leg's shift is its own)";
    EXPECT_EQ(backend_of(parse(out[2])), fresh);
    EXPECT_EQ(stat(KVS_R_DP_POOL_PARKED), 1u);
    EXPECT_EQ(stat(KVS_R_DP_REQ_MOVED), 1u);
    EXPECT_NE(bpf_map_lookup_elem(tables->flows_fd, &ks, &fs), 0) << "the old leg's entry";
    EXPECT_EQ(ports->state(static_cast<std::uint16_t>(be1), old_port), kPortBinding)
        << "the pool holds the port now: the sweeper does not free it";

    // The backend closes the idle kept leg: the pool answers with a reset and frees the port.
    Seg fin = backend_seg(kept, KVS_TCP_FIN | KVS_TCP_ACK);
    fin.saddr = kept.ip4->daddr;
    fin.daddr = kept.ip4->saddr;
    fin.sport = ntohs(kept.tcp->dest);
    fin.dport = old_port;
    fin.seq = bisn + 1 + 100;
    fin.ack = S;
    inject(rp.rx, make_seg(rp.pool, fin));
    out = step(now + ms(102));
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt rst = parse(out[0]);
    EXPECT_EQ(rst.tcp->flags, KVS_TCP_RST);
    EXPECT_EQ(ntohs(rst.tcp->source), old_port);
    EXPECT_EQ(ntohl(rst.tcp->seq), S) << "in its window";
    EXPECT_EQ(stat(KVS_R_DP_POOL_CLOSED_BY_BACKEND), 1u);
    EXPECT_EQ(ports->state(static_cast<std::uint16_t>(be1), old_port), kPortFree);
}

// The old leg's entries gone during the hold (evicted), its port freed by the sweeper and
// installed again by a new flow on the same 4-tuple: the move neither parks that port (a port
// two live flows then used) nor deletes the new flow's entry on the old key.
TEST_F(BindTest, AMoveLeavesAnOldLegPortInstalledAgainAlone) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    const auto be1 = static_cast<std::uint16_t>(b.be1);
    kvs_flow later = b.fs;
    later.created_ns = b.fs.created_ns + 1;  // another installation on the same key
    later.state = 0;
    std::vector<std::vector<std::uint8_t>> out;
    ASSERT_NO_FATAL_FAILURE(move_request(b, next_request(b), out, [&] {
        ASSERT_EQ(bpf_map_delete_elem(tables->flows_fd, &b.ks), 0);
        ports->free(be1, b.old_port);  // the sweeper, the entries gone
        ASSERT_TRUE(ports->take(be1, b.old_port));
        ports->set_state(be1, b.old_port, kPortInstalled);  // a new flow's
        ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &b.ks, &later, BPF_NOEXIST), 0);
    }));
    EXPECT_EQ(stat(KVS_R_DP_REQ_MOVED), 1u);
    EXPECT_EQ(stat(KVS_R_DP_POOL_PARKED), 0u);
    EXPECT_EQ(stat(KVS_R_DP_POOL_PARK_REFUSED), 1u);
    EXPECT_EQ(ports->state(be1, b.old_port), kPortInstalled) << "still the new flow's";
    kvs_flow e{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &b.ks, &e), 0) << "the new flow's entry";
    EXPECT_EQ(e.created_ns, later.created_ns);
}

// A move whose old leg is not kept: `before_move` sets up why, at the boundary. The old leg is
// reset as before reuse, and its port stays the flow's (the sweeper frees it with the entries).
void BindTest::expect_old_leg_reset(const std::function<void(Boundary &)> &before_move) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    before_move(b);
    Seg r2 = next_request(b);
    std::vector<std::vector<std::uint8_t>> out;
    ASSERT_NO_FATAL_FAILURE(move_request(b, r2, out));
    ASSERT_EQ(out.size(), 3u) << "ACK to the new leg, RST to the old one, the request";
    kvs_pkt rst = parse(out[1]);
    EXPECT_EQ(rst.tcp->flags, KVS_TCP_RST);
    EXPECT_EQ(backend_of(rst), b.be1);
    EXPECT_EQ(ntohs(rst.tcp->source), b.old_port);
    EXPECT_EQ(stat(KVS_R_DP_POOL_PARK_REFUSED), 1u);
    EXPECT_EQ(stat(KVS_R_DP_POOL_PARKED), 0u);
    EXPECT_EQ(ports->state(static_cast<std::uint16_t>(b.be1), b.old_port), kPortInstalled)
        << "still the flow's: the sweeper frees it with the entries";
}

// The backend has not heard from the leg for `idle_s` (its entries' last_seen): its idle timer
// runs from there, and the pool's max age (2 s here) bounds it.
void BindTest::expect_idle_leg_reset(std::uint64_t idle_s) {
    expect_old_leg_reset([&](Boundary &b) {
        timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        const std::uint64_t mono =
            static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
        b.fc.last_seen_ns = b.fs.last_seen_ns = mono - idle_s * 1000000000ull;
        ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &b.kc, &b.fc, BPF_EXIST), 0);
        ASSERT_EQ(bpf_map_update_elem(tables->flows_fd, &b.ks, &b.fs, BPF_EXIST), 0);
    });
}

TEST_F(BindTest, ALegIdlePastTheMaxAgeIsNotKept) {
    expect_idle_leg_reset(3);
}

// Long idle: nanoseconds times the TSC rate overflow 64 bits past ~6 s, and a wrapped idle time
// used to pass such a leg as fresh. The idle time taken is one whose 64-bit product with this
// machine's TSC rate wraps to under a second.
TEST_F(BindTest, ALegIdleLongEnoughToWrapIsNotKept) {
    const std::uint64_t hz = rte_get_tsc_hz();
    std::uint64_t idle_s = 0;
    for (std::uint64_t sec = 7; sec < 100000 && !idle_s; ++sec) {
        const std::uint64_t wrapped = sec * 1000000000ull * hz;  // mod 2^64, as the old code did
        if (wrapped / 1000000000ull < hz) idle_s = sec;
    }
    ASSERT_NE(idle_s, 0u);
    expect_idle_leg_reset(idle_s);
}

// The pool refuses the leg after its port was taken back (its backend draining): the port goes
// back to the flow, and the leg is reset.
TEST_F(BindTest, ALegOfADrainingBackendIsNotKept) {
    expect_old_leg_reset([&](Boundary &b) { tables->backends[b.be1].state = KVS_BE_DRAIN; });
}

// A kept leg taken again: after the move above, a new connection whose request goes to the old
// backend is spliced onto the kept leg instead of opening one. Its request goes out on the old
// SNAT port at the leg's next byte, acknowledging the whole first response, with a TSval above
// the newest the leg carried; the flow pair installed maps the leg's bytes onto the new client's.
TEST_F(BindTest, AKeptLegCarriesTheNextConnectionsRequest) {
    make_worker();
    Boundary b;
    ASSERT_NO_FATAL_FAILURE(bind_to_boundary(true, b));
    const kvs_flow fc = b.fc, fs = b.fs;
    std::vector<std::vector<std::uint8_t>> out;
    constexpr std::uint32_t kAhead = 600000;  // the client's clock ahead of ours: the TS floor
    Seg r2 = next_request(b, 7 + kAhead);
    ASSERT_NO_FATAL_FAILURE(move_request(b, r2, out));
    ASSERT_EQ(stat(KVS_R_DP_POOL_PARKED), 1u);
    const std::uint32_t floor = 7 + kAhead + fc.tsval_delta;

    // New connections, round robin, until one goes to the old backend (at most one per backend).
    tables->config.steer_mode = KVS_STEER_ROUND_ROBIN;
    const std::string req3 = request(650);
    std::uint16_t port3 = 0;
    std::uint32_t cookie3 = 0;
    kvs_pkt data{};
    for (std::uint16_t k = 0; k < 3 && !port3; ++k) {
        const auto p = static_cast<std::uint16_t>(cport + 10 + k);
        const std::uint32_t ck = cookie_for(p);
        Seg s = client_seg(0, req3, 9);
        s.sport = p;
        s.ack = ck + 1;
        inject(rp.rx, make_seg(rp.pool, s));
        out = step(now + ms(110 + k));
        ASSERT_FALSE(out.empty());
        kvs_pkt first = parse(out[0]);
        if (first.tcp->flags == KVS_TCP_SYN) {  // another backend: a new leg; drop this one
            EXPECT_NE(backend_of(first), b.be1) << "the old backend has a kept leg: no SYN to it";
            Seg r = client_seg(0, "", 9);
            r.sport = p;
            r.ack = ck + 1;
            r.flags = KVS_TCP_RST;
            inject(rp.rx, make_seg(rp.pool, r));
            step(now + ms(110 + k));
            continue;
        }
        ASSERT_EQ(out.size(), 1u) << "the request alone: the leg's handshake is long done";
        port3 = p;
        cookie3 = ck;
        data = parse(out[0]);
    }
    ASSERT_NE(port3, 0) << "round robin reached the old backend";
    EXPECT_EQ(stat(KVS_R_DP_POOL_DRAWN), 1u);
    EXPECT_EQ(backend_of(data), b.be1);
    EXPECT_EQ(ntohs(data.tcp->source), b.old_port) << "the kept leg's SNAT port";
    EXPECT_EQ(ntohl(data.tcp->seq), b.S) << "the leg's next byte";
    EXPECT_EQ(ntohl(data.tcp->ack_seq), bisn + 1 + 100) << "the whole first response acknowledged";
    EXPECT_EQ(data.payload_len, req3.size());
    ASSERT_NE(data.opts.ts_off, 0);
    EXPECT_GT(static_cast<std::int32_t>(data.opts.tsval - floor), 0)
        << "above the newest TSval the leg carried (the backend's PAWS check)";
    EXPECT_EQ(data.opts.tsecr, 90000u - fs.tsval_delta) << "the backend's newest TSval echoed";
    EXPECT_EQ(ports->state(static_cast<std::uint16_t>(b.be1), b.old_port), kPortInstalled)
        << "the port is the new flow's";

    // The pair: the new client's entry onto the leg, and the leg's entry back to that client.
    kvs_flow_key k3 = client_key();
    k3.sport = htons(port3);
    kvs_flow c3{}, s3{};
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &k3, &c3), 0);
    EXPECT_EQ(c3.backend_id, b.be1);
    EXPECT_EQ(ntohs(c3.new_sport), b.old_port);
    EXPECT_EQ(c3.seq_delta + isn + 1 + static_cast<std::uint32_t>(req3.size()),
              b.S + static_cast<std::uint32_t>(req3.size()))
        << "the client's bytes continue the leg's";
    kvs_flow_key ks3;
    kvs_flow_reverse_key(&k3, &c3, &ks3);
    EXPECT_EQ(std::memcmp(&ks3, &b.ks, sizeof ks3), 0) << "the kept leg's own 4-tuple";
    ASSERT_EQ(bpf_map_lookup_elem(tables->flows_fd, &ks3, &s3), 0);
    EXPECT_EQ(s3.seq_delta + bisn + 1 + 100, cookie3 + 1)
        << "the backend's next byte is the new client's first";
}

TEST_F(BindTest, BackendReplyOnAnotherQueueReachesTheOwningWorker) {
    MultiRingPort mp = make_multi_ring_port("kvdp_mq", 2);
    std::vector<rte_ring *> inboxes = {
        rte_ring_create("kvdp_mq_in0", 1024, SOCKET_ID_ANY, RING_F_SC_DEQ),
        rte_ring_create("kvdp_mq_in1", 1024, SOCKET_ID_ANY, RING_F_SC_DEQ)};
    ports = std::make_unique<PortBusy>();
    std::vector<std::unique_ptr<Worker>> ws;
    for (std::uint16_t w = 0; w < 2; ++w) {
        WorkerParams wp;
        wp.opts.max_pending = 64;
        wp.port = mp.port;
        wp.queue = w;
        wp.index = w;
        wp.n_workers = 2;
        wp.pool = mp.pool;
        wp.ports = ports.get();
        wp.inboxes = inboxes.data();
        ws.push_back(std::make_unique<Worker>(tables->view(), wp));
    }
    EXPECT_EQ(ws[0]->snat_hi() + 1, ws[1]->snat_lo()) << "the SNAT range is split between workers";
    cookie = cookie_for(cport);
    inject(mp.rx[1],
           make_seg(mp.pool, client_seg(0, request(500), 5)));  // the flow lands on worker 1
    ws[1]->poll(now);
    auto out = drain(mp.tx[1]);
    ASSERT_EQ(out.size(), 1u);
    kvs_pkt syn = parse(out[0]);
    EXPECT_GE(ntohs(syn.tcp->source), ws[1]->snat_lo());
    EXPECT_LE(ntohs(syn.tcp->source), ws[1]->snat_hi());
    Seg sa = backend_seg(syn, KVS_TCP_SYN | KVS_TCP_ACK);
    inject(mp.rx[0], make_seg(mp.pool, sa));  // ... but its backend's answer on queue 0
    ws[0]->poll(now);
    EXPECT_TRUE(drain(mp.tx[0]).empty());
    ws[1]->poll(now);
    out = drain(mp.tx[1]);
    ASSERT_EQ(out.size(), 2u) << "ACK + flushed request from the owning worker";
    EXPECT_EQ(ws[1]->counter(KVS_R_DP_BIND_OK), 1u);
    ws.clear();
    for (auto *r : inboxes) rte_ring_free(r);
}

}  // namespace

// The receive-path watchdog's in-process recovery (port_recovery.h), the parts that need no
// af_xdp port: a worker parks on request, reports every mbuf it holds, and the mbufs that the
// old socket's rings had (here: allocated and forgotten) go back to the pool, nothing else.
TEST_F(BindTest, ParkedWorkerReportsHeldMbufsAndStrandedOnesReturnToThePool) {
    make_worker();
    hold_incomplete_heads(3, 41000);
    EXPECT_TRUE(step(now).empty());
    ASSERT_EQ(worker->slot_count(), 3u);
    const unsigned size = rp.pool->size;
    std::vector<rte_mbuf *> lost(20);
    ASSERT_EQ(rte_pktmbuf_alloc_bulk(rp.pool, lost.data(), 20), 0);
    lost.clear();  // what a dead socket's fill ring had: owned by nobody any more

    std::atomic<bool> stop{false};
    std::thread runner([&] { worker->run(stop); });
    worker->request_park();
    for (int i = 0; i < 2000 && !worker->parked(); ++i) usleep(1000);
    ASSERT_TRUE(worker->parked());
    std::vector<rte_mbuf *> held;
    worker->held_mbufs(held);
    EXPECT_EQ(held.size(), 3u) << "one incomplete head per held flight";
    EXPECT_EQ(rte_mempool_in_use_count(rp.pool), 3u + 20u);
    EXPECT_EQ(reclaim_stranded_mbufs(rp.pool, held), 20u);
    EXPECT_EQ(rte_mempool_in_use_count(rp.pool), 3u) << "only the held heads are still out";
    EXPECT_EQ(rte_mempool_avail_count(rp.pool), size - 3);
    worker->unpark(rp.port);
    for (int i = 0; i < 2000 && worker->parked(); ++i) usleep(1000);
    EXPECT_FALSE(worker->parked());
    stop = true;
    runner.join();

    // The held flights survived the park and still end as they would have: reset when idle.
    auto out = step(now + ms(1001));
    EXPECT_EQ(out.size(), 3u);
    EXPECT_EQ(stat(KVS_R_DP_CLIENT_IDLE_DROP), 3u);
    EXPECT_EQ(rte_mempool_in_use_count(rp.pool), 0u) << "nothing lost, nothing freed twice";
    // Every reclaimed mbuf is usable again.
    std::vector<rte_mbuf *> all(size);
    ASSERT_EQ(rte_pktmbuf_alloc_bulk(rp.pool, all.data(), size), 0);
    for (rte_mbuf *m : all) EXPECT_EQ(rte_mbuf_refcnt_read(m), 1u);
    rte_pktmbuf_free_bulk(all.data(), size);
}
