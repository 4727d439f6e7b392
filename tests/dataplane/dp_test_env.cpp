#include "dp_test_env.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include <bpf/bpf.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "eal_setup.h"
#include "kvsteer/csum.h"
#include "kvsteer/cookie.h"
#include "kvsteer/core/maglev.h"

namespace kvsteer::dp::test {

bool init_eal() {
    static bool done = false, ok = false;
    if (done) return ok;
    done = true;
    const char *args[] = {
        "dp-test", "--no-pci",          "--no-huge",     "-m",       "512", "--no-shconf", "-l",
        "0",       "--log-level=error", "--file-prefix", "kvdp-test"};
    ok = rte_eal_init(static_cast<int>(std::size(args)), const_cast<char **>(args)) >= 0;
    return ok;
}

RingPort make_ring_port(const std::string &name, std::uint32_t mbufs) {
    RingPort p;
    p.rx =
        rte_ring_create((name + "_rx").c_str(), 4096, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    p.tx =
        rte_ring_create((name + "_tx").c_str(), 4096, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!p.rx || !p.tx) throw std::runtime_error("rte_ring_create " + name);
    int port = rte_eth_from_rings(name.c_str(), &p.rx, 1, &p.tx, 1, SOCKET_ID_ANY);
    if (port < 0) throw std::runtime_error("rte_eth_from_rings " + name);
    p.port = static_cast<std::uint16_t>(port);
    std::string err;
    if (!start_port(p.port, 1, mbufs, &p.pool, &err)) throw std::runtime_error(err);
    return p;
}

MultiRingPort make_multi_ring_port(const std::string &name, unsigned queues, std::uint32_t mbufs) {
    MultiRingPort p;
    for (unsigned q = 0; q < queues; ++q) {
        p.rx.push_back(rte_ring_create((name + "_rx" + std::to_string(q)).c_str(), 4096,
                                       SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ));
        p.tx.push_back(rte_ring_create((name + "_tx" + std::to_string(q)).c_str(), 4096,
                                       SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ));
        if (!p.rx.back() || !p.tx.back()) throw std::runtime_error("rte_ring_create " + name);
    }
    int port =
        rte_eth_from_rings(name.c_str(), p.rx.data(), queues, p.tx.data(), queues, SOCKET_ID_ANY);
    if (port < 0) throw std::runtime_error("rte_eth_from_rings " + name);
    p.port = static_cast<std::uint16_t>(port);
    std::string err;
    if (!start_port(p.port, static_cast<std::uint16_t>(queues), mbufs, &p.pool, &err))
        throw std::runtime_error(err);
    return p;
}

Tables MemTables::view() {
    Tables t;
    t.config = &config;
    t.backends = backends.data();
    t.load = load.data();
    t.maglev = maglev.data();
    t.affinity = affinity.data();
    t.ring_ctl = ring_ctl.data();
    t.ring = ring.data();
    t.dp_stats = dp_stats.data();
    t.flows_fd = flows_fd;
    return t;
}

MemTables::~MemTables() {
    if (flows_fd >= 0) close(flows_fd);
}

std::unique_ptr<MemTables> make_tables(unsigned n_backends, bool with_flow_map,
                                       unsigned flow_entries) {
    auto t = std::make_unique<MemTables>();
    t->backends.resize(KVS_MAX_BACKENDS);
    t->load.resize(KVS_MAX_BACKENDS);
    t->maglev.assign(2 * KVS_MAGLEV_SIZE, KVS_BACKEND_NONE);
    t->affinity.resize(2 * KVS_AFFINITY_SLOTS);
    t->ring_ctl.resize(KVS_MAX_WORKERS);
    t->ring.resize(static_cast<std::size_t>(KVS_MAX_WORKERS) * KVS_BIND_RING_SLOTS);
    t->dp_stats.resize(static_cast<std::size_t>(KVS_MAX_WORKERS) * KVS_STATS_MAX);
    kvs_config &c = t->config;
    c.n_vips = 1;
    c.vips[0].addr[0] = ip4("10.77.1.1");
    c.vips[0].port = htons(8000);
    c.vips[0].family = KVS_AF_INET;
    c.snat_addr[0] = ip4("10.77.0.2");
    c.snat_family = KVS_AF_INET;
    c.snat_port_lo = 10000;
    c.snat_port_hi = 10999;
    std::memcpy(c.appliance_mac, kAppMac, 6);
    c.n_workers = 1;
    c.cookie_key[0][0] = 0x1111222233334444ULL;
    c.cookie_key[0][1] = 0x5555666677778888ULL;
    c.cookie_period_s = 64;
    c.flags = KVS_CFG_SYN_TIMESTAMPS;
    c.syn_mss = 1460;
    c.syn_wscale = 7;
    c.syn_window = 64240;
    c.steer_mode = KVS_STEER_PREFIX;
    c.prefix_len = 64;
    c.block_size = 128;
    c.max_blocks = 2;
    c.load_factor_milli = 1250;
    c.max_held_bytes = 14600;
    c.hash_seed = 42;
    std::vector<MaglevBackend> mb;
    for (unsigned i = 0; i < n_backends; ++i) {
        kvs_backend &b = t->backends[i];
        b.addr[0] = htonl(ntohl(ip4("10.0.0.101")) + i);
        b.port = htons(8000);
        b.family = KVS_AF_INET;
        b.state = KVS_BE_UP;
        b.weight = 1;
        std::uint8_t mac[6] = {0x02, 0, 0, 0, 1, static_cast<std::uint8_t>(i + 1)};
        std::memcpy(b.mac, mac, 6);
        mb.push_back({i, 1000 + i, 1});
    }
    auto table = build_maglev(mb);
    std::memcpy(t->maglev.data(), table.data(), KVS_MAGLEV_SIZE * sizeof(std::uint32_t));
    c.maglev_active = 0;
    c.n_backends = n_backends;
    if (with_flow_map) {
        t->flows_fd = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "kvdp_test_flows", sizeof(kvs_flow_key),
                                     sizeof(kvs_flow), flow_entries, nullptr);
        if (t->flows_fd < 0) throw std::runtime_error("bpf_map_create kvs_flows");
    }
    return t;
}

rte_mbuf *make_seg(rte_mempool *pool, const Seg &s) {
    kvstest::TcpSpec sp;
    std::memcpy(sp.smac, s.smac, 6);
    std::memcpy(sp.dmac, s.dmac, 6);
    sp.saddr[0] = s.saddr;
    sp.daddr[0] = s.daddr;
    if (s.v6) {
        sp.v6 = true;
        std::memcpy(sp.saddr, s.saddr6, 16);
        std::memcpy(sp.daddr, s.daddr6, 16);
    }
    sp.sport = s.sport;
    sp.dport = s.dport;
    sp.seq = s.seq;
    sp.ack = s.ack;
    sp.flags = s.flags;
    sp.win = s.window;
    sp.ip_id = 0;  // what the dataplane's own segments carry
    kvstest::LinuxOpts o;
    o.mss = s.mss;
    if (s.wscale != KVS_WSCALE_NONE) o.wscale = s.wscale;
    o.sack_perm = s.sack_perm;
    o.ts = s.ts;
    o.tsval = s.tsval;
    o.tsecr = s.tsecr;
    sp.opts = kvstest::opt_linux(o);
    sp.payload.assign(s.payload.begin(), s.payload.end());
    std::vector<std::uint8_t> frame = kvstest::build_tcp(sp);
    if (s.punt_bound) kvs_tcp_res_bits(parse(frame).tcp, KVS_TCP_RES_PUNT_BOUND, 1);
    return to_mbuf(pool, frame);
}

rte_mbuf *to_mbuf(rte_mempool *pool, const std::vector<std::uint8_t> &frame) {
    rte_mbuf *m = rte_pktmbuf_alloc(pool);
    if (!m) return nullptr;
    char *p = rte_pktmbuf_append(m, static_cast<std::uint16_t>(frame.size()));
    if (!p) {
        rte_pktmbuf_free(m);
        return nullptr;
    }
    std::memcpy(p, frame.data(), frame.size());
    return m;
}

std::vector<std::vector<std::uint8_t>> drain(rte_ring *tx) {
    std::vector<std::vector<std::uint8_t>> out;
    void *objs[64];
    unsigned n;
    while ((n = rte_ring_dequeue_burst(tx, objs, 64, nullptr)) > 0) {
        for (unsigned i = 0; i < n; ++i) {
            auto *m = static_cast<rte_mbuf *>(objs[i]);
            auto *d = rte_pktmbuf_mtod(m, std::uint8_t *);
            out.emplace_back(d, d + rte_pktmbuf_data_len(m));
            rte_pktmbuf_free(m);
        }
    }
    return out;
}

void inject(rte_ring *rx, rte_mbuf *m) {
    if (rte_ring_enqueue(rx, m) != 0) rte_pktmbuf_free(m);
}

kvs_pkt parse(std::vector<std::uint8_t> &f) {
    kvs_pkt pkt{};
    kvs_parse(f.data(), f.data() + f.size(), &pkt);
    return pkt;
}

bool checksums_ok(std::vector<std::uint8_t> &f) {
    kvs_pkt pkt = parse(f);
    return (pkt.ip4 || pkt.ip6) && pkt.tcp && kvstest::check_checksums(f).empty();
}

}  // namespace kvsteer::dp::test
