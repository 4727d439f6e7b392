// One dataplane worker: polls one RX queue, holds first flights, binds them to backends,
// installs the flow and flushes what it held. All state is this worker's; nothing is locked.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "kvsteer/core/choose.h"
#include "first_flight.h"
#include "kvsteer/abi.h"
#include "kvsteer/cookie.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/core/prefix_hash.h"
#include "kvsteer/parse.h"
#include "options.h"
#include "packet.h"
#include "tables.h"

struct rte_mbuf;
struct rte_mempool;
struct rte_hash;
struct rte_ring;

namespace kvsteer::dp {

// Shared between workers and the sweeper: which SNAT ports are taken. A worker takes a free
// port (kPortFree -> kPortBinding) for a flow it is binding, and frees it itself if the bind
// fails (and, in dpdk mode, when the flow ends). In xdp mode a bound flow's port becomes
// kPortInstalled: from then on only the sweeper frees it, when the flow's entries are gone from
// kvs_flows, whoever removed them (its own expiry, XDP on a client's port reuse, LRU eviction).
enum : std::uint8_t { kPortFree = 0, kPortBinding = 1, kPortInstalled = 2 };
struct PortBusy {
    std::atomic<std::uint8_t> busy[65536];
};

struct WorkerParams {
    Options opts;
    std::uint16_t port = 0, queue = 0;
    std::uint16_t index = 0, n_workers = 1;
    rte_mempool *pool = nullptr;  // for packets the worker originates
    PortBusy *ports = nullptr;
    // Several workers: inboxes[w] takes backend packets that RSS delivered to another worker
    // than the owner of their SNAT port (multi-producer, single-consumer). Null with one worker.
    rte_ring **inboxes = nullptr;
};

class Worker {
   public:
    Worker(const Tables &t, const WorkerParams &p);
    ~Worker();
    Worker(const Worker &) = delete;
    Worker &operator=(const Worker &) = delete;

    // One iteration at time `now` (TSC ticks): RX burst, timers, TX flush. Returns packets
    // received.
    unsigned poll(std::uint64_t now);
    // Polls until `stop` is set; adaptive idle backs off with pause, then short sleeps.
    void run(const std::atomic<bool> &stop);
    // Stops taking new flows (graceful shutdown); flows being bound finish.
    void drain() { draining_.store(true, std::memory_order_relaxed); }

    // Introspection for tests and the control thread.
    unsigned binding_count() const { return n_binding_; }
    unsigned slot_count() const { return n_used_; }
    std::uint64_t counter(unsigned reason) const;
    std::uint16_t snat_lo() const { return port_lo_; }
    std::uint16_t snat_hi() const { return port_hi_; }

    // Processes one received frame (takes ownership). Public for the benchmark/tests.
    void handle(rte_mbuf *m, std::uint64_t now);
    void flush_tx();

   private:
    enum class St : std::uint8_t { Free, Holding, SynSent, Bound };
    static constexpr unsigned kMaxCand = 8;

    struct Slot {
        St st = St::Free;
        std::uint8_t ncand = 0, syn_tries = 0;
        std::uint8_t client_wscale = KVS_WSCALE_NONE, client_sack = 0, client_ts = 0, ready = 0;
        std::uint8_t via = 0, key_kind = 0, closed = 0, fin_mask = 0;
        std::uint8_t head_incomplete = 1;  // the held bytes do not yet hold a whole request head
        std::uint16_t client_mss = 0, client_window = 0, snat_port = 0, backend = KVS_BACKEND_NONE;
        kvs_flow_key ckey{};  // client -> VIP, as it arrives
        kvs_flow_key bkey{};  // backend -> SNAT, as it arrives
        std::uint8_t client_mac[6]{};
        std::uint32_t cookie_isn = 0, client_tsval = 0, ts_ours = 0;
        std::uint32_t ts_delta = 0;  // client TSval -> the backend leg's (our monotonic ms clock)
        std::uint32_t prompt_bytes = 0;
        std::uint64_t created = 0, last_seg = 0, deadline = 0, last_seen = 0;
        std::uint16_t tried[kMaxCand]{};
        FirstFlight ff;  // the held first flight; ff.isn() is the client's ISN
        kvs_flow c2s{}, s2c{};
        PrefixHashes hashes;
        std::int32_t prev = -1, next = -1;  // binding list (Holding/SynSent), oldest first
        std::uint64_t timer_id = 0;         // the live entry of timer_heap_ (0: none)
    };
    struct Timer {
        std::uint64_t when;
        std::uint32_t idx;
        std::uint64_t id;
        static bool later(const Timer &a, const Timer &b) { return a.when > b.when; }
    };

    void on_client(rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now);
    void on_backend(rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now);
    void on_arp(rte_mbuf *m);
    void answer_syn(rte_mbuf *m, kvs_pkt &pkt);
    bool reused_by_new_connection(const Slot &s, const kvs_pkt &pkt) const;
    void new_flow(rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now);
    void answer_bare_fin(rte_mbuf *m, kvs_pkt &pkt);
    bool check_cookie(rte_mbuf *m, const kvs_pkt &pkt, kvs_cookie_opts *co);
    void add_segment(std::uint32_t idx, rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now);
    void check_ready(std::uint32_t idx, std::uint64_t now, bool gap);
    void free_held(Slot &s);
    // `v`: the request as check_ready located it in buf_ (n bytes).
    void start_bind(std::uint32_t idx, std::uint64_t now, const RequestView &v, std::uint32_t n);
    TcpSpec to_backend(const Slot &s) const;
    bool send_backend_syn(Slot &s);
    void next_candidate(std::uint32_t idx, std::uint64_t now);
    void complete_bind(std::uint32_t idx, kvs_pkt &synack, std::uint64_t now);
    void forward(Slot &s, rte_mbuf *m, kvs_pkt &pkt, bool c2s, std::uint64_t now);
    void rst_client(Slot &s);
    void rst_backend(Slot &s);
    void timers(std::uint64_t now);
    void arm(std::uint32_t idx, std::uint64_t when);
    void arm_holding(std::uint32_t idx, std::uint64_t now);
    void sweep_bound(std::uint64_t now);
    void release(std::uint32_t idx, bool free_port);
    bool reclaim_lingering();
    void report(const Slot &s);
    bool alloc_port(std::uint16_t *port);
    void tx(rte_mbuf *m);
    bool send(rte_mbuf *m);
    bool install_pair(const kvs_flow_key &kc, const kvs_flow &c2s, const kvs_flow_key &ks,
                      const kvs_flow &s2c);
    void inc(unsigned reason) { stats_[reason]++; }
    void list_add(std::uint32_t idx);
    void list_del(std::uint32_t idx);
    unsigned held_by(std::uint32_t saddr) const;
    bool evict_stalled(std::uint64_t now);
    std::uint32_t max_held() const;
    std::uint32_t bind_depth() const;
    bool is_vip(const kvs_pkt &pkt) const;

    Tables t_;
    WorkerParams p_;
    std::uint64_t *stats_;
    std::uint64_t local_stats_[KVS_STATS_MAX]{};
    std::vector<Slot> slots_;
    std::vector<std::uint32_t> free_;
    std::vector<std::int32_t> by_port_;  // snat port - port_lo_ -> slot
    rte_hash *by_client_ = nullptr;
    rte_hash *by_source_ = nullptr;  // client address -> slots it holds while binding
    std::uint16_t port_lo_ = 0, port_hi_ = 0, port_cursor_ = 0;
    std::uint32_t all_lo_ = 0, per_worker_ = 0, all_hi_ = 0;
    std::int32_t list_head_ = -1, list_tail_ = -1;
    std::vector<Timer> timer_heap_;
    std::uint64_t timer_seq_ = 0;
    unsigned n_binding_ = 0, n_used_ = 0;
    std::uint32_t held_mbufs_ = 0, max_held_mbufs_ = 0;
    std::uint32_t sweep_cursor_ = 0;
    std::uint64_t hz_ = 0, last_timer_ = 0;
    std::uint64_t gap_ticks_, syn_timeout_ticks_, client_idle_ticks_, linger_ticks_,
        flow_idle_ticks_, closed_ticks_, unsure_wait_ticks_;
    std::atomic<bool> draining_{false};
    std::uint64_t ring_head_ = 0;
    ChooseScratch scratch_;
    rte_mbuf *txq_[64];
    unsigned ntx_ = 0;
    std::vector<std::uint8_t> buf_;  // assembled first flight
};

}  // namespace kvsteer::dp
