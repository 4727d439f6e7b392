// In-process test rig: one EAL per process, net_ring ports, in-memory tables and a real BPF
// flow map (no bpffs needed), and helpers that script clients and backends.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvsteer/abi.h"
#include "kvsteer/parse.h"
#include "pktgen.h"
#include "tables.h"
#include "worker.h"

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

namespace kvsteer::dp::test {

// rte_eal_init once per process (GoogleTest environment / benchmark main).
bool init_eal();

// A net_ring port: packets enqueued on `rx` reach the worker; what it sends lands on `tx`.
struct RingPort {
    std::uint16_t port = 0;
    rte_ring *rx = nullptr, *tx = nullptr;
    rte_mempool *pool = nullptr;
};
RingPort make_ring_port(const std::string &name, std::uint32_t mbufs = 8191);

// A net_ring port with `queues` queue pairs: rx[q] feeds queue q, tx[q] collects what queue q sent.
struct MultiRingPort {
    std::uint16_t port = 0;
    std::vector<rte_ring *> rx, tx;
    rte_mempool *pool = nullptr;
};
MultiRingPort make_multi_ring_port(const std::string &name, unsigned queues,
                                   std::uint32_t mbufs = 8191);

// Tables in plain memory, filled like kvsteerd would; flows_fd is a real LRU hash map.
struct MemTables {
    kvs_config config{};
    std::vector<kvs_backend> backends;
    std::vector<kvs_backend_load> load;
    std::vector<std::uint32_t> maglev;
    std::vector<kvs_affinity_entry> affinity;
    std::vector<kvs_ring_ctl> ring_ctl;
    std::vector<kvs_bind_report> ring;
    std::vector<std::uint64_t> dp_stats;
    int flows_fd = -1;
    Tables view();
    ~MemTables();
};
// n_backends backends at 10.0.0.101.. port 8000; VIP 10.77.1.1:8000; SNAT 10.77.0.2. The flow
// map (an LRU hash, both directions of a flow count) holds flow_entries.
std::unique_ptr<MemTables> make_tables(unsigned n_backends, bool with_flow_map,
                                       unsigned flow_entries = 65536);

constexpr std::uint8_t kClientMac[6] = {0x02, 0, 0, 0, 0, 0x10};
constexpr std::uint8_t kAppMac[6] = {0x02, 0, 0, 0, 0, 0x02};

using kvstest::ip4;  // network order

// A TCP/IPv4 (or IPv6) frame with payload and valid checksums, as the dataplane's own segments look
// (IP id 0, DF, options in Linux's order); built by kvsteer_pktgen.
struct Seg {
    std::uint32_t saddr, daddr;  // network order
    std::uint16_t sport, dport;  // host order
    std::uint32_t seq, ack;
    std::uint8_t flags;
    std::uint16_t window = 502;
    bool ts = false;
    std::uint32_t tsval = 0, tsecr = 0;
    std::uint16_t mss = 0;
    std::uint8_t wscale = KVS_WSCALE_NONE;
    bool sack_perm = false;
    std::string payload;
    const std::uint8_t *smac = kClientMac, *dmac = kAppMac;
    // IPv6 instead: these addresses (network order), saddr/daddr unused.
    bool v6 = false;
    std::uint32_t saddr6[4]{}, daddr6[4]{};
    // XDP's tag on a bound connection's client segment it hands over (KVS_TCP_RES_PUNT_BOUND: a
    // request boundary, or a segment while the connection is bound again), checksum updated.
    bool punt_bound = false;
};
rte_mbuf *make_seg(rte_mempool *pool, const Seg &s);
// A copy of a built frame in a fresh mbuf, or nullptr when the pool is empty or it does not fit.
rte_mbuf *to_mbuf(rte_mempool *pool, const std::vector<std::uint8_t> &frame);

// Everything the worker sent since the last call (frames copied out, mbufs freed).
std::vector<std::vector<std::uint8_t>> drain(rte_ring *tx);
void inject(rte_ring *rx, rte_mbuf *m);

// Parsed view of a copied frame (valid while the vector lives).
kvs_pkt parse(std::vector<std::uint8_t> &frame);
bool checksums_ok(std::vector<std::uint8_t> &frame);

}  // namespace kvsteer::dp::test
