// One dataplane worker: polls one RX queue, holds first flights, binds them to backends,
// installs the flow and flushes what it held. All state is this worker's; nothing is locked.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend_pool.h"
#include "binder.h"
#include "kvsteer/abi.h"
#include "kvsteer/cookie.h"
#include "kvsteer/core/choose.h"
#include "kvsteer/parse.h"
#include "kvsteer/synrate.h"
#include "options.h"
#include "packet.h"
#include "slot_table.h"
#include "syn_buckets.h"
#include "tables.h"

struct rte_mbuf;
struct rte_mempool;
struct rte_ring;

namespace kvsteer::dp {

struct PoolGlue;

struct WorkerParams {
    Options opts;
    std::uint16_t port = 0, queue = 0;
    std::uint16_t index = 0, n_workers = 1;
    rte_mempool *pool = nullptr;  // for packets the worker originates
    PortBusy *ports = nullptr;
    // Several workers: inboxes[w] takes backend packets that RSS delivered to another worker
    // than the owner of their SNAT port (multi-producer, single-consumer). Null with one worker.
    rte_ring **inboxes = nullptr;
    // Fault injection (--fault-rx-signal): while set, the worker does not receive, which is
    // what a stalled net_af_xdp port looks like from the outside. Null: never.
    const std::atomic<bool> *rx_off = nullptr;
    // The recent PREFIX choices every worker of this dataplane shares (choose.h); null: the
    // worker keeps its own.
    RecentChoices *recent = nullptr;
    // Dpdk mode's SYN-ACK buckets every worker shares (syn_buckets.h); null: the worker keeps its
    // own.
    SynBuckets *syn_buckets = nullptr;
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
    // Polls until `stop` is set; adaptive idle backs off with pause, then short sleeps: on
    // the wake fd (poll(), woken by a frame arriving) when one is set, else plain ones.
    void run(const std::atomic<bool> &stop);
    // The AF_XDP socket of this worker's queue to sleep on when idle (-1: none). Set while the
    // worker is parked or before it runs.
    void set_wake_fd(int fd) { wake_fd_.store(fd, std::memory_order_relaxed); }
    // Stops taking new flows (graceful shutdown); flows being bound finish.
    void drain() { draining_.store(true, std::memory_order_relaxed); }

    // Introspection for tests and the control thread.
    unsigned binding_count() const { return slots_.binding(); }
    unsigned slot_count() const { return slots_.used(); }
    // Whether a slot takes the segments of the backend leg `bkey` names (tests).
    bool keyed_by_leg(const kvs_flow_key &bkey) const { return slots_.by_leg(bkey) >= 0; }
    // Flows chosen for `backend` and not yet counted in its binds (ChooseScratch::pending).
    std::uint32_t pending(std::uint16_t backend) const { return scratch_.pending[backend]; }
    // The SYN-ACK bucket a source prefix key (kvs_syn_prefix_key) uses in dpdk mode (tests).
    // The recent choices this worker's choices read and keep (shared, else its own).
    const RecentChoices &recent_choices() const {
        return scratch_.recent != nullptr ? *scratch_.recent : scratch_.own;
    }
    std::uint64_t counter(unsigned reason) const;
    std::uint16_t snat_lo() const { return slots_.port_lo(); }
    std::uint16_t snat_hi() const { return slots_.port_hi(); }

    // How long run() sleeps when idle on its AF_XDP socket (a frame ends it sooner): until its
    // first timer is due, at most 10 ms (1 ms with a backend pool that opens legs), at least 10 us.
    unsigned wake_sleep_us(std::uint64_t now) const;
    // Port re-creation (the receive-path watchdog). The control thread asks every worker to
    // park; a parked worker has sent what it queued and touches neither the port nor the pool
    // until unparked, with the port (whose id may change) to use from then on.
    void request_park() { park_.store(true, std::memory_order_release); }
    bool parked() const { return parked_.load(std::memory_order_acquire); }
    void unpark(std::uint16_t port) {
        p_.port = port;
        park_.store(false, std::memory_order_release);
    }
    // Only while parked: appends every mbuf this worker holds (held first flights, whole
    // chains, and its inbox's contents, which are put back in order).
    void held_mbufs(std::vector<rte_mbuf *> &out);
    // Parks if asked to (run() calls it; tests that drive poll() may too).
    void park_if_asked();

    // Processes one received frame (takes ownership). The flows it completes are installed by
    // install_accepted() (poll() calls it after each burst). Public for the benchmark/tests.
    void handle(rte_mbuf *m, std::uint64_t now);
    // Installs the flow pairs of the bindings whose backend accepted since the last call, in one
    // bpf_map_update_batch (a few when some fail), then acknowledges and flushes each of them.
    void install_accepted(std::uint64_t now);
    void flush_tx();

   private:
    struct Timer {
        std::uint64_t when;
        std::uint32_t idx;
        std::uint64_t id;
        static bool later(const Timer &a, const Timer &b) { return a.when > b.when; }
    };

    // Classifying what arrives.
    void on_client(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now);
    void on_backend(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now);
    void on_arp(rte_mbuf *m);
    void on_icmp(rte_mbuf *m, kvs_pkt &pkt);
    void answer_syn(rte_mbuf *m, kvs_pkt &pkt);
    void answer_bare_fin(rte_mbuf *m, kvs_pkt &pkt);
    // RST|ACK answering a client's segment, in its sequence space: seq = what it acknowledged,
    // ack = `ack`. Whether it was queued.
    bool rst_to_client(const kvs_pkt &pkt, std::uint32_t ack);
    bool check_cookie(rte_mbuf *m, const kvs_pkt &pkt, kvs_cookie_opts *co);
    bool cookie_valid(const kvs_pkt &pkt, kvs_cookie_opts *co) const;
    bool rebinding_now(const Slot &s) const;
    bool rebind_flow(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now);
    void bound_punt(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now);
    void resume(std::uint32_t idx, std::uint64_t now);
    void rst_leg(const kvs_flow &c2s, std::uint8_t family, std::uint32_t client_seq);
    void rst_client(const Slot &s, std::uint32_t seq, std::uint32_t ack);
    static bool segment_checksums_ok(const rte_mbuf *m, const kvs_pkt &pkt);
    void count_close(const kvs_flow &c2s);
    void delete_old_leg_entry(const Slot &s);
    // One close in `backend`'s load (binds - closes): the caller's flow state makes it once.
    void add_close(std::uint16_t backend) {
        if (t_.load) __atomic_fetch_add(&t_.load[backend].closes, 1, __ATOMIC_RELAXED);
    }
    bool reused_by_new_connection(const Slot &s, const kvs_pkt &pkt) const;
    void new_flow(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now);
    // `checked`: its checksums were verified already (the flow's first segment).
    void client_segment(std::uint32_t idx, rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now,
                        bool checked = false);

    // Carrying out the binder's actions.
    BindEnv env();
    void execute(std::uint32_t idx, const Actions &acts, std::uint64_t now);
    TcpSpec to_backend(const Slot &s) const;
    bool take_leg(std::uint32_t idx);
    void accept_install(std::uint32_t idx, std::uint64_t now);
    void build_pair(Slot &s, std::uint64_t now_ns, kvs_flow_key *k_c2s, kvs_flow_key *k_s2c);
    void installed(std::uint32_t idx, bool ok, std::uint64_t now);
    void flush_held(Slot &s);
    void report(const Slot &s);

    // Bound flows.
    void forward(Slot &s, rte_mbuf *m, kvs_pkt &pkt, bool c2s, std::uint64_t now);

    // Timers and slots.
    void timers(std::uint64_t now);
    void arm(std::uint32_t idx, std::uint64_t when);
    void sweep_bound(std::uint64_t now);
    // Stores the heartbeat kvsteerd watches (kvs_ring_ctl.alive_ns); 0: stopped.
    void heartbeat(std::uint64_t now_ns);
    static std::uint8_t synack_wscale_of(const kvs_flow &c2s, const kvs_flow &s2c);
    void release(std::uint32_t idx, bool free_port);
    bool reclaim_bound(std::uint64_t now);
    bool evict_stalled(std::uint64_t now);

    void tx(rte_mbuf *m);
    bool send(rte_mbuf *m);
    void inc(unsigned reason) { stats_[reason]++; }
    // Every reason has its counter in a worker's row (KVS_STATS_MAX of them): one more reason
    // than that wrote into the next row (or past the map).
    static_assert(KVS_R__COUNT <= KVS_STATS_MAX, "more reasons than counters: raise KVS_STATS_MAX");
    std::uint32_t max_held() const;
    bool is_vip(const kvs_flow_key &k) const;
    // The two things the mode decides, named once. dpdk mode: the workers own the port, so they
    // answer SYNs and ARP, and own bound flows (forward them, see them close, free their SNAT
    // ports). xdp mode: XDP answers SYNs and owns bound flows; a worker's bound slot only
    // lingers for punts that raced the install, and the sweeper frees ports.
    bool answers_handshakes() const { return p_.opts.mode == Mode::Dpdk; }
    bool owns_bound_flows() const { return p_.opts.mode == Mode::Dpdk; }
    bool draining() const { return draining_.load(std::memory_order_relaxed); }

    // The backend connection pool (null without --backend-pool and --backend-reuse) and what it
    // sends through.
    friend struct PoolGlue;
    void pool_segment(rte_mbuf *m, const kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now);
    void try_pool(std::uint32_t idx, std::uint64_t now);
    // A request moved off the slot's previous leg: that leg into the pool for a later request
    // to its backend; false when it cannot be (the caller resets it).
    bool park_old_leg(std::uint32_t idx, std::uint32_t client_next, std::uint64_t now);
    // Ticks between pool upkeeps: 1 ms while it opens legs, 10 ms when it only keeps parked ones.
    std::uint64_t pool_period() const;

    Tables t_;
    WorkerParams p_;
    std::uint64_t *stats_;
    std::uint64_t local_stats_[KVS_STATS_MAX]{};
    SlotTable slots_;
    BinderConfig bcfg_;
    std::uint32_t all_lo_ = 0, per_worker_ = 0, all_hi_ = 0;
    std::vector<Timer> timer_heap_;
    std::uint64_t timer_seq_ = 0;
    std::uint32_t held_mbufs_ = 0, max_held_mbufs_ = 0;
    // The client segment being handled carried XDP's tag for a bound connection's segment
    // (KVS_TCP_RES_PUNT_BOUND, taken off it in handle()): a request boundary, or a segment of a
    // connection being bound again; never a new connection's first flight.
    bool punt_bound_ = false;
    std::uint32_t max_source_mbufs_ = 0;  // of those, the flights of one client address
    std::uint64_t hz_ = 0, last_timer_ = 0, last_beat_ = 0;
    // CLOCK_MONOTONIC read once per poll (clock_ns): flow entries' last_seen, reports' times and
    // the backend legs' timestamps need no finer grain than a burst, and the clock_gettime calls
    // of each flow were ~2-5% of a binding.
    // The same for CLOCK_TAI (the cookies' clock).
    mutable std::uint64_t poll_ns_ = 0, poll_tai_ns_ = 0;
    std::uint64_t clock_ns() const;
    static void prefetch_frame(const rte_mbuf *m);
    void prepare_port_tables();
    void track_request(Slot &s);
    std::uint64_t clock_tai_ns() const;
    std::uint32_t clock_ms() const { return static_cast<std::uint32_t>(clock_ns() / 1000000); }
    std::uint64_t linger_ticks_, flow_idle_ticks_, closed_ticks_, reclaim_idle_ticks_;
    // dpdk mode, the table full: an established flow idle this long may make room (reclaim_bound).
    static constexpr std::uint64_t kReclaimIdleMs = 1000;
    std::atomic<bool> draining_{false};
    std::atomic<bool> park_{false}, parked_{false};
    std::atomic<int> wake_fd_{-1};
    std::uint64_t ring_head_ = 0;
    ChooseScratch scratch_;
    // Bindings whose backend accepted, waiting for the burst's install (xdp mode): the slot and
    // its install_id (a slot released meanwhile, or reused, no longer matches); their pairs.
    static constexpr unsigned kMaxInstalls = 64;
    struct Accepted {
        std::uint32_t idx;
        std::uint64_t id;
    };
    Accepted accepted_[kMaxInstalls];
    unsigned n_accepted_ = 0;
    std::uint64_t install_seq_ = 0;
    std::vector<kvs_flow_key> install_keys_ = std::vector<kvs_flow_key>(2 * kMaxInstalls);
    std::vector<kvs_flow> install_vals_ = std::vector<kvs_flow>(2 * kMaxInstalls);
    // Session affinity's per-key in-flight counts (null without a shared port table: the counts
    // go back when ports are freed, so there is nowhere to keep them).
    std::unique_ptr<SessionLimiter> sessions_;
    std::unique_ptr<BackendPool> pool_;
    std::unique_ptr<PoolGlue> pool_host_;
    std::uint64_t last_pool_ = 0;
    rte_mbuf *txq_[64];
    unsigned ntx_ = 0;
    std::vector<std::uint8_t> buf_;  // an assembled first flight
    // Dpdk mode's SYN-ACK buckets: the dataplane's (WorkerParams::syn_buckets), else its own.
    std::unique_ptr<SynBuckets> own_syn_buckets_;
    SynBuckets *syn_buckets_ = nullptr;
};

}  // namespace kvsteer::dp
