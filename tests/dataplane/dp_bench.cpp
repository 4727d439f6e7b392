// kvsteer-dp-bench: in-process (net_ring) figures of the dataplane.
//   dp_bind_flows_per_s       binding path, pure-DPDK mode: 1.4 KB first flight -> SYN ->
//                             scripted SYN-ACK -> ACK + flush (flows stay in the worker)
//   dp_bind_xdp_flows_per_s   the same with both kvs_flows entries installed in a BPF map
//   dp_fastpath_mpps          established-flow forwarding in pure-DPDK mode (64 B payloads)
// KVS_BENCH_OUT=path writes them as one flat JSON object; KVS_BENCH_SMOKE=1 runs short.
#include <arpa/inet.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <bpf/bpf.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "dp_test_env.h"
#include "kvsteer/cookie.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"
#include "kvsteer/csum.h"
#include "kvsteer/rewrite.h"
#include "packet.h"

using namespace kvsteer;
using namespace kvsteer::dp;
using namespace kvsteer::dp::test;

namespace {

using Clock = std::chrono::steady_clock;

std::string chat_request(unsigned i, std::size_t bytes) {
    std::string body = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"prefix " +
                       std::to_string(i % 512) + " ";
    while (body.size() < bytes - 120) body += static_cast<char>('a' + body.size() % 26);
    body += "\"}]}";
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: kv\r\nContent-Type: "
           "application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Turns the worker's SYN into the backend's SYN-ACK in place (what a backend would answer).
void synack_in_place(rte_mbuf *m) {
    kvs_pkt p;
    auto *d = rte_pktmbuf_mtod(m, std::uint8_t *);
    kvs_parse(d, d + rte_pktmbuf_data_len(m), &p);
    std::uint8_t mac[6];
    std::memcpy(mac, p.eth->dst, 6);
    std::memcpy(p.eth->dst, p.eth->src, 6);
    std::memcpy(p.eth->src, mac, 6);
    const std::uint32_t a = p.ip4->saddr;
    p.ip4->saddr = p.ip4->daddr;
    p.ip4->daddr = a;
    const std::uint16_t port = p.tcp->source;
    p.tcp->source = p.tcp->dest;
    p.tcp->dest = port;
    std::uint32_t cseq = ntohl(p.tcp->seq);
    p.tcp->seq = htonl(0x20000000u ^ cseq);
    p.tcp->ack_seq = htonl(cseq + 1);
    p.tcp->flags = KVS_TCP_SYN | KVS_TCP_ACK;
    fix_checksums4(&p);
}

// --no-huge memory faults in on first touch: touch every mbuf once so the timed loops measure
// the steady state, not page faults.
void warm_pool(rte_mempool *pool) {
    std::vector<rte_mbuf *> all;
    while (rte_mbuf *m = rte_pktmbuf_alloc(pool)) {
        std::memset(rte_pktmbuf_mtod(m, void *), 0, rte_pktmbuf_tailroom(m));
        all.push_back(m);
    }
    for (auto *m : all) rte_pktmbuf_free(m);
}

struct BindFigures {
    double flows_per_s = 0, ns_per_flow = 0, responder_ns = 0;
};

// Per-request steering: what a request boundary costs the dataplane when the request stays on
// its backend (flush through the entry; entries read and written back) and when it moves (a new
// backend leg: SYN, SYN-ACK, install, ACK, RST to the old leg, flush).
struct RebindFigures {
    double stay_ns = 0, move_ns = 0;
    std::uint64_t stays = 0, moves = 0;
};

BindFigures bench_bind(Mode mode, unsigned n_flows, const std::string &tag,
                       RebindFigures *rebind = nullptr) {
    auto tables = make_tables(8, mode == Mode::Xdp);
    tables->config.snat_port_lo = 1024;
    tables->config.snat_port_hi = 65535;
    tables->config.prefix_len = 256;
    tables->config.block_size = 512;
    tables->config.max_blocks = 2;
    RingPort rp = make_ring_port("kvdp_b" + tag, n_flows + 4095);
    WorkerParams wp;
    wp.opts.mode = mode;
    wp.opts.max_pending = n_flows + 64;
    wp.opts.local_linger_ms = 0;
    wp.port = rp.port;
    wp.pool = rp.pool;
    auto ports = std::make_unique<PortBusy>();
    for (auto &b : ports->busy) b.store(0);
    wp.ports = ports.get();
    Worker w(tables->view(), wp);
    warm_pool(rp.pool);

    // Prebuilt first flights: one 1.4 KB segment each, distinct client address/port, valid cookie.
    std::vector<rte_mbuf *> flights(n_flows);
    const std::uint64_t slot = kvs_cookie_slot(kvs_cookie_now_tai_ns(), 64);
    for (unsigned i = 0; i < n_flows; ++i) {
        Seg s{};
        s.saddr = htonl(ntohl(ip4("10.78.0.0")) + (i >> 14));
        s.daddr = ip4("10.77.1.1");
        s.sport = static_cast<std::uint16_t>(1024 + (i & 16383));
        s.dport = 8000;
        kvs_cookie_tuple t{};
        t.saddr[0] = s.saddr;
        t.daddr[0] = s.daddr;
        t.sport = htons(s.sport);
        t.dport = htons(8000);
        std::uint32_t cookie = kvs_cookie_make(tables->config.cookie_key[0], &t, slot,
                                               kvs_cookie_pack_opts(1460, 7, 1));
        s.seq = 1000u * i + 1;
        s.ack = cookie + 1;
        s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
        s.ts = true;
        s.tsval = 1;
        s.tsecr = 2;
        s.payload = chat_request(i, 1400);
        flights[i] = make_seg(rp.pool, s);
        if (!flights[i]) {
            std::fprintf(stderr, "mbuf pool too small\n");
            std::exit(1);
        }
    }
    void *objs[64];
    std::uint64_t responder_cycles = 0;
    auto t0 = Clock::now();
    std::uint64_t bound_before = w.counter(KVS_R_DP_BIND_OK);
    for (unsigned i = 0; i < n_flows; i += 32) {
        unsigned n = std::min(32u, n_flows - i);
        rte_ring_enqueue_burst(rp.rx, reinterpret_cast<void **>(&flights[i]), n, nullptr);
        w.poll(rte_rdtsc());  // -> SYNs on the tx ring
        std::uint64_t c0 = rte_rdtsc();
        unsigned got = rte_ring_dequeue_burst(rp.tx, objs, 64, nullptr);
        for (unsigned k = 0; k < got; ++k) synack_in_place(static_cast<rte_mbuf *>(objs[k]));
        rte_ring_enqueue_burst(rp.rx, objs, got, nullptr);
        responder_cycles += rte_rdtsc() - c0;
        w.poll(rte_rdtsc());  // -> ACK + flushed segment per flow
        c0 = rte_rdtsc();
        while ((got = rte_ring_dequeue_burst(rp.tx, objs, 64, nullptr)) > 0)
            rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf **>(objs), got);
        responder_cycles += rte_rdtsc() - c0;
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::uint64_t bound = w.counter(KVS_R_DP_BIND_OK) - bound_before;
    if (bound != n_flows)
        std::fprintf(stderr, "warning: %llu of %u flows bound\n", (unsigned long long)bound,
                     n_flows);
    BindFigures f;
    double responder_s = static_cast<double>(responder_cycles) / rte_get_tsc_hz();
    f.responder_ns = responder_s * 1e9 / n_flows;
    f.ns_per_flow = (secs - responder_s) * 1e9 / bound;
    f.flows_per_s = bound / (secs - responder_s);
    if (!rebind || mode != Mode::Xdp) return f;

    // Request boundaries on every bound flow: XDP's marking done here (the entries' tracking as
    // XDP keeps it: a 100-byte response complete), then each flow's next request, punted.
    // `move`: the entry says another backend than the policy's choice, so every request moves.
    auto boundaries = [&](bool move, unsigned round) {
        std::vector<rte_mbuf *> reqs(n_flows);
        for (unsigned i = 0; i < n_flows; ++i) {
            kvs_flow_key kc{}, ks;
            kc.saddr[0] = htonl(ntohl(ip4("10.78.0.0")) + (i >> 14));
            kc.daddr[0] = ip4("10.77.1.1");
            kc.sport = htons(static_cast<std::uint16_t>(1024 + (i & 16383)));
            kc.dport = htons(8000);
            kc.family = KVS_AF_INET;
            kc.proto = KVS_IPPROTO_TCP;
            kvs_flow fc{}, fs{};
            if (bpf_map_lookup_elem(tables->flows_fd, &kc, &fc) != 0) continue;
            kvs_flow_reverse_key(&kc, &fc, &ks);
            if (bpf_map_lookup_elem(tables->flows_fd, &ks, &fs) != 0) continue;
            fs.next_seq += 100;
            fs.ts_last = 1000 + round;
            fc.state |= KVS_FLOW_REBINDING;
            fs.state |= KVS_FLOW_REBINDING;
            if (move) fc.backend_id = static_cast<std::uint16_t>((fc.backend_id + 1) % 8);
            bpf_map_update_elem(tables->flows_fd, &kc, &fc, BPF_EXIST);
            bpf_map_update_elem(tables->flows_fd, &ks, &fs, BPF_EXIST);
            Seg s{};
            s.saddr = kc.saddr[0];
            s.daddr = kc.daddr[0];
            s.sport = ntohs(kc.sport);
            s.dport = 8000;
            s.seq = fc.next_seq;
            s.ack = fs.next_seq + fs.seq_delta;  // the whole response acknowledged
            s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
            s.ts = true;
            s.tsval = 10 + round;
            s.tsecr = 2;
            s.payload = chat_request(i, 1400);
            reqs[i] = make_seg(rp.pool, s);
        }
        const std::uint64_t stays0 = w.counter(KVS_R_DP_REQ_SAME_BACKEND),
                            moves0 = w.counter(KVS_R_DP_REQ_MOVED);
        std::uint64_t resp_cycles = 0;
        const auto t1 = Clock::now();
        for (unsigned i = 0; i < n_flows; i += 32) {
            const unsigned n = std::min(32u, n_flows - i);
            unsigned k = 0;
            rte_mbuf *burst[32];
            for (unsigned j = 0; j < n; ++j)
                if (reqs[i + j]) burst[k++] = reqs[i + j];
            rte_ring_enqueue_burst(rp.rx, reinterpret_cast<void **>(burst), k, nullptr);
            w.poll(rte_rdtsc());  // stays: flushed; moves: SYNs
            std::uint64_t c0 = rte_rdtsc();
            unsigned got;
            if (move) {
                got = rte_ring_dequeue_burst(rp.tx, objs, 64, nullptr);
                for (unsigned q = 0; q < got; ++q)
                    synack_in_place(static_cast<rte_mbuf *>(objs[q]));
                rte_ring_enqueue_burst(rp.rx, objs, got, nullptr);
                resp_cycles += rte_rdtsc() - c0;
                w.poll(rte_rdtsc());  // ACK, RST to the old leg, flush
                c0 = rte_rdtsc();
            }
            while ((got = rte_ring_dequeue_burst(rp.tx, objs, 64, nullptr)) > 0)
                rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf **>(objs), got);
            resp_cycles += rte_rdtsc() - c0;
        }
        const double s1 = std::chrono::duration<double>(Clock::now() - t1).count() -
                          static_cast<double>(resp_cycles) / rte_get_tsc_hz();
        const std::uint64_t stays = w.counter(KVS_R_DP_REQ_SAME_BACKEND) - stays0,
                            moves = w.counter(KVS_R_DP_REQ_MOVED) - moves0;
        if (move) {
            rebind->moves = moves;
            rebind->move_ns = moves ? s1 * 1e9 / static_cast<double>(moves) : 0;
        } else {
            rebind->stays = stays;
            rebind->stay_ns = stays ? s1 * 1e9 / static_cast<double>(stays) : 0;
        }
        if (stays + moves != n_flows)
            std::fprintf(stderr, "warning: %llu of %u boundaries %s\n",
                         static_cast<unsigned long long>(move ? moves : stays), n_flows,
                         move ? "moved" : "stayed");
    };
    boundaries(false, 1);
    boundaries(true, 2);
    return f;
}

double bench_fastpath(unsigned n_flows, unsigned n_packets, double *refresh_ns) {
    auto tables = make_tables(8, false);
    tables->config.snat_port_lo = 1024;
    tables->config.snat_port_hi = 65535;
    RingPort rp = make_ring_port("kvdp_fp", 8191);
    WorkerParams wp;
    wp.opts.mode = Mode::Dpdk;
    wp.opts.max_pending = n_flows + 64;
    wp.port = rp.port;
    wp.pool = rp.pool;
    Worker w(tables->view(), wp);
    const std::uint64_t slot = kvs_cookie_slot(kvs_cookie_now_tai_ns(), 64);
    std::vector<std::vector<std::uint8_t>> templates;  // a later client segment of each flow
    void *objs[64];
    for (unsigned i = 0; i < n_flows; ++i) {
        Seg s{};
        s.saddr = ip4("10.78.0.1");
        s.daddr = ip4("10.77.1.1");
        s.sport = static_cast<std::uint16_t>(2000 + i);
        s.dport = 8000;
        kvs_cookie_tuple t{};
        t.saddr[0] = s.saddr;
        t.daddr[0] = s.daddr;
        t.sport = htons(s.sport);
        t.dport = htons(8000);
        std::uint32_t cookie = kvs_cookie_make(tables->config.cookie_key[0], &t, slot,
                                               kvs_cookie_pack_opts(1460, 7, 1));
        s.seq = 1;
        s.ack = cookie + 1;
        s.flags = KVS_TCP_ACK | KVS_TCP_PSH;
        s.ts = true;
        s.payload = chat_request(i, 600);
        inject(rp.rx, make_seg(rp.pool, s));
        w.poll(rte_rdtsc());
        unsigned got = rte_ring_dequeue_burst(rp.tx, objs, 64, nullptr);
        for (unsigned k = 0; k < got; ++k) synack_in_place(static_cast<rte_mbuf *>(objs[k]));
        rte_ring_enqueue_burst(rp.rx, objs, got, nullptr);
        w.poll(rte_rdtsc());
        while ((got = rte_ring_dequeue_burst(rp.tx, objs, 64, nullptr)) > 0)
            rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf **>(objs), got);
        s.seq = 1 + static_cast<std::uint32_t>(s.payload.size());
        s.payload.assign(64, 'z');
        rte_mbuf *m = make_seg(rp.pool, s);
        auto *d = rte_pktmbuf_mtod(m, std::uint8_t *);
        templates.emplace_back(d, d + rte_pktmbuf_data_len(m));
        rte_pktmbuf_free(m);
    }
    // 256 mbufs circulate: refreshed from their flow's template, forwarded, collected.
    std::vector<rte_mbuf *> inflight(256);
    for (unsigned i = 0; i < inflight.size(); ++i) {
        inflight[i] = rte_pktmbuf_alloc(rp.pool);
        rte_pktmbuf_append(inflight[i], static_cast<std::uint16_t>(templates[i % n_flows].size()));
    }
    std::uint64_t refresh = 0, sent = 0;
    unsigned next_flow = 0;
    auto t0 = Clock::now();
    std::uint64_t fwd0 = w.counter(KVS_R_TX_FWD_C2S);
    while (sent < n_packets) {
        std::uint64_t c0 = rte_rdtsc();
        for (auto *m : inflight) {
            const auto &tpl = templates[next_flow++ % n_flows];
            std::memcpy(rte_pktmbuf_mtod(m, void *), tpl.data(), tpl.size());
        }
        refresh += rte_rdtsc() - c0;
        for (unsigned i = 0; i < inflight.size(); i += 32) {
            rte_ring_enqueue_burst(rp.rx, reinterpret_cast<void **>(&inflight[i]), 32, nullptr);
            w.poll(rte_rdtsc());
        }
        unsigned got = 0;
        while (got < inflight.size()) {
            unsigned n =
                rte_ring_dequeue_burst(rp.tx, reinterpret_cast<void **>(&inflight[got]),
                                       static_cast<unsigned>(inflight.size() - got), nullptr);
            if (n == 0) break;
            got += n;
        }
        if (got != inflight.size()) {
            std::fprintf(stderr, "fast path lost packets (%u of %zu)\n", got, inflight.size());
            std::exit(1);
        }
        sent += inflight.size();
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    double refresh_s = static_cast<double>(refresh) / rte_get_tsc_hz();
    if (w.counter(KVS_R_TX_FWD_C2S) - fwd0 != sent)
        std::fprintf(stderr, "warning: not every packet forwarded\n");
    *refresh_ns = refresh_s * 1e9 / sent;
    return sent / (secs - refresh_s) / 1e6;
}

// Where a bind's time goes: the core pieces alone on the same 1.4 KB first flight.
struct Pieces {
    double locate_ns = 0, hash_ns = 0;
};
Pieces bench_pieces(unsigned iters) {
    std::string req = chat_request(7, 1400);
    std::span<const std::uint8_t> buf(reinterpret_cast<const std::uint8_t *>(req.data()),
                                      req.size());
    HashParams hp;
    hp.prefix_len = 256;
    hp.block_size = 512;
    hp.max_blocks = 2;
    Pieces p;
    std::uint64_t sink = 0;
    auto t0 = Clock::now();
    for (unsigned i = 0; i < iters; ++i) sink += locate_request(buf).key_len;
    p.locate_ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / iters;
    RequestView v = locate_request(buf);
    t0 = Clock::now();
    for (unsigned i = 0; i < iters; ++i)
        sink += hash_prompt(hp, v.model, buf.subspan(v.key_offset, v.key_len)).prefix;
    p.hash_ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / iters;
    if (sink == 42) std::printf(" ");
    return p;
}

}  // namespace

int main(int argc, char **argv) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            std::printf(
                "kvsteer-dp-bench: in-process (net_ring) figures of the dataplane: binding in\n"
                "pure-DPDK mode, binding with the kvs_flows install (needs root), the pure-DPDK\n"
                "fast path. No options. Env: KVS_BENCH_SMOKE=1 (short run), KVS_BENCH_OUT=<file>\n"
                "(flat JSON), KVS_DP_BENCH_BIND_ONLY=1 (only the pure-DPDK binding, for "
                "profiling).\n");
            return 0;
        }
        std::fprintf(stderr, "kvsteer-dp-bench: unknown argument '%s' (see --help)\n", argv[i]);
        return 2;
    }
    const bool smoke =
        std::getenv("KVS_BENCH_SMOKE") && std::string(std::getenv("KVS_BENCH_SMOKE")) == "1";
    if (!init_eal()) {
        std::fprintf(stderr, "rte_eal_init failed\n");
        return 1;
    }
    const unsigned flows = smoke ? 4000 : 20000;
    if (std::getenv("KVS_DP_BENCH_BIND_ONLY")) {  // for profiling the binding path alone
        BindFigures b = bench_bind(Mode::Dpdk, 60000, "p");
        std::printf("binding, pure DPDK: %.0f flows/s\n", b.flows_per_s);
        return 0;
    }
    BindFigures dpdk = bench_bind(Mode::Dpdk, flows, "d");
    RebindFigures rb;
    BindFigures xdp = bench_bind(Mode::Xdp, flows, "x", &rb);
    Pieces pc = bench_pieces(smoke ? 20000 : 200000);
    double refresh_ns = 0;
    double mpps = bench_fastpath(1000, smoke ? 2000000 : 20000000, &refresh_ns);
    std::printf(
        "binding, pure DPDK:        %10.0f flows/s  (%.0f ns/flow; scripted backend %.0f ns/flow "
        "excluded)\n",
        dpdk.flows_per_s, dpdk.ns_per_flow, dpdk.responder_ns);
    std::printf(
        "binding, XDP flow map:     %10.0f flows/s  (%.0f ns/flow; of which %.0f ns: installing "
        "both entries, one bpf_map_update_batch)\n",
        xdp.flows_per_s, xdp.ns_per_flow, xdp.ns_per_flow - dpdk.ns_per_flow);
    std::printf(
        "  per bind: locate_request %.0f ns, hash_prompt %.0f ns (on the same 1.4 KB flight)\n",
        pc.locate_ns, pc.hash_ns);
    std::printf(
        "fast path, pure DPDK:      %10.2f Mpps     (template refresh %.1f ns/pkt excluded)\n",
        mpps, refresh_ns);
    std::printf(
        "request boundary, stays:   %10.0f ns (%llu of them); moves: %.0f ns (%llu; scripted "
        "backend excluded)\n",
        rb.stay_ns, static_cast<unsigned long long>(rb.stays), rb.move_ns,
        static_cast<unsigned long long>(rb.moves));
    if (const char *out = std::getenv("KVS_BENCH_OUT")) {
        FILE *f = std::fopen(out, "w");
        if (!f) {
            std::perror(out);
            return 1;
        }
        std::fprintf(f,
                     "{\"dp_bind_flows_per_s\": %.0f, \"dp_bind_ns_per_flow\": %.0f, "
                     "\"dp_bind_xdp_flows_per_s\": %.0f, \"dp_bind_xdp_ns_per_flow\": %.0f, "
                     "\"dp_bind_flowmap_install_ns\": %.0f, \"dp_bind_locate_ns\": %.0f, "
                     "\"dp_bind_hash_ns\": %.0f, "
                     "\"dp_fastpath_mpps\": %.3f, \"dp_request_stay_ns\": %.0f, "
                     "\"dp_request_move_ns\": %.0f}\n",
                     dpdk.flows_per_s, dpdk.ns_per_flow, xdp.flows_per_s, xdp.ns_per_flow,
                     xdp.ns_per_flow - dpdk.ns_per_flow, pc.locate_ns, pc.hash_ns, mpps, rb.stay_ns,
                     rb.move_ns);
        std::fclose(f);
    }
    return 0;
}
