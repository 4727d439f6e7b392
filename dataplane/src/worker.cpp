#include "worker.h"

#include <poll.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <utility>

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_hash_crc.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_random.h>
#include <rte_ring.h>
#include <spdlog/spdlog.h>

#include "arp.h"
#include "flow_install.h"
#include "kvsteer/core/flight_key.h"
#include "kvsteer/flowpair.h"
#include "kvsteer/icmp.h"
#include "kvsteer/rewrite.h"
#include "kvsteer/synrate.h"
#include "packet.h"
#include "rewrite_glue.h"

namespace kvsteer::dp {

namespace {

// `amount` units of 1/per_second s in TSC ticks, in 128 bits (saturating): ns or ms times the TSC
// rate passes 64 bits within seconds or millions of seconds, and a wrapped time is a short one.
std::uint64_t to_ticks(std::uint64_t amount, std::uint64_t per_second, std::uint64_t hz) {
    const unsigned __int128 t = static_cast<unsigned __int128>(amount) * hz / per_second;
    return t > ~std::uint64_t{0} ? ~std::uint64_t{0} : static_cast<std::uint64_t>(t);
}

// The client's next byte once a binding's held bytes are sent (flush_held): a FIN held with
// them goes too, and counts, as XDP counts a FIN it takes. Counted without it, every backend ACK
// was one past the client's bytes seen: the backend's FIN was refused as acknowledging unsent
// data and the flow never closed (kept for the idle timeout).
std::uint32_t client_next_after_flight(const Binder &b) {
    return b.isn() + 1 + b.flight().contiguous() + (b.flight().complete_to_fin() ? 1u : 0u);
}

std::uint64_t mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

// The SNAT port range every worker shares ([lo, hi]) and how many ports each one gets.
struct PortShare {
    std::uint32_t lo, hi, per;
};
PortShare port_share(const Tables &t, const WorkerParams &p) {
    std::uint32_t lo = t.config->snat_port_lo, hi = t.config->snat_port_hi;
    if (lo == 0 || hi < lo) {
        lo = KVS_DEFAULT_SNAT_PORT_LO;
        hi = KVS_DEFAULT_SNAT_PORT_HI;
    }
    const std::uint32_t n = std::max<std::uint16_t>(p.n_workers, 1);
    const std::uint32_t per = (hi - lo + 1) / n;
    return PortShare{lo, lo + per * n - 1, per};
}

BackendSeg backend_seg(const kvs_pkt &pkt) {
    BackendSeg b;
    b.flags = pkt.tcp->flags;
    b.seq = kvs_ntohl(pkt.tcp->seq);
    b.ack = kvs_ntohl(pkt.tcp->ack_seq);
    b.has_ts = pkt.opts.ts_off != 0;
    b.tsval = pkt.opts.tsval;
    b.wscale = pkt.opts.wscale;
    b.len = pkt.payload_len;
    return b;
}

ClientSeg client_seg(rte_mbuf *m, const kvs_pkt &pkt) {
    ClientSeg c;
    c.pkt = m;
    c.data = rte_pktmbuf_mtod_offset(m, const std::uint8_t *, pkt.l4_off + pkt.tcp_hlen);
    c.seq = kvs_ntohl(pkt.tcp->seq);
    c.len = pkt.payload_len;
    c.window = kvs_ntohs(pkt.tcp->window);
    c.fin = (pkt.tcp->flags & KVS_TCP_FIN) != 0;
    c.has_ts = pkt.opts.ts_off != 0;
    c.tsval = pkt.opts.tsval;
    c.tsecr = pkt.opts.tsecr;
    return c;
}

}  // namespace

// What the backend pool takes ports from and sends through: this worker.
struct PoolGlue final : PoolHost {
    explicit PoolGlue(Worker &w) : w(w) {}
    bool take_port(std::uint16_t backend, std::uint16_t &port) override {
        return w.slots_.take_port(backend, port);
    }
    void give_port(std::uint16_t backend, std::uint16_t port) override {
        w.slots_.give_port(backend, port);
    }
    std::uint32_t clock_ms() override { return w.clock_ms(); }
    std::uint32_t new_isn() override { return static_cast<std::uint32_t>(rte_rand()); }
    void inc(unsigned reason) override { w.inc(reason); }
    void send(const PoolLeg &l, const PoolSend &ps) override {
        const kvs_config &c = *w.t_.config;
        const std::uint32_t *snat = kvs_snat_addr(&c, l.family);
        if (!snat) return;  // the family's SNAT address is gone: the leg is dropped unsent
        TcpSpec sp{};
        sp.smac = c.appliance_mac;
        sp.dmac = w.t_.backends[l.backend].mac;
        sp.saddr = snat;
        sp.daddr = l.addr;
        sp.family = l.family;
        sp.sport = kvs_htons(l.port);
        sp.dport = l.bport;
        sp.seq = ps.seq;
        sp.ack = ps.ack;
        sp.window = ps.window;
        sp.ts = ps.ts;
        sp.tsval = ps.tsval;
        sp.tsecr = ps.tsecr;
        switch (ps.kind) {
            case PoolSend::Kind::Syn:
                sp.flags = KVS_TCP_SYN;
                sp.mss = ps.mss;
                sp.wscale = ps.wscale;
                sp.sack_perm = true;
                break;
            case PoolSend::Kind::Ack:
                sp.flags = KVS_TCP_ACK;
                break;
            case PoolSend::Kind::Rst:
                sp.flags = KVS_TCP_RST;
                sp.window = 0;
                sp.ts = false;
                break;
        }
        w.send(build_tcp(w.p_.pool, sp));
    }
    Worker &w;
};

Worker::Worker(const Tables &t, const WorkerParams &p)
    : t_(t),
      p_(p),
      slots_(fmt::format("{}_{}", p.port, p.index), p.opts.max_pending,
             p.opts.max_held_per_source != 0,
             static_cast<std::uint16_t>(port_share(t, p).lo + port_share(t, p).per * p.index),
             static_cast<std::uint16_t>(port_share(t, p).lo + port_share(t, p).per * (p.index + 1) -
                                        1),
             p.ports, p.opts.mode == Mode::Dpdk && p.opts.max_flows_per_source != 0),
      buf_(64 * 1024) {
    stats_ = t_.dp_stats ? t_.dp_stats + static_cast<std::size_t>(p_.index) * KVS_STATS_MAX
                         : local_stats_;
    scratch_.recent = p_.recent;
    syn_buckets_ = p_.syn_buckets;
    if (!syn_buckets_ && answers_handshakes()) {
        own_syn_buckets_ = std::make_unique<SynBuckets>();
        syn_buckets_ = own_syn_buckets_.get();
    }
    const PortShare share = port_share(t_, p_);
    all_lo_ = share.lo;
    all_hi_ = share.hi;
    per_worker_ = share.per;
    timer_heap_.reserve(static_cast<std::size_t>(p_.opts.max_pending) * 4);

    // Held segments must never starve the port's RX refill (af_xdp stalls without mbufs).
    max_held_mbufs_ =
        std::max<std::uint32_t>(64, p_.opts.mbufs / (2 * std::max<std::uint16_t>(p_.n_workers, 1)));
    // One client address may fill only its share of them (its flights of up to kMaxSegs segments
    // each, times max_held_per_source slots, could hold them all): the others' new flows then
    // find room without evicting anyone.
    max_source_mbufs_ = p_.opts.max_held_packets_per_source
                            ? p_.opts.max_held_packets_per_source
                            : std::max<std::uint32_t>(FirstFlight::kMaxSegs, max_held_mbufs_ / 8);
    hz_ = rte_get_tsc_hz();
    auto ms = [this](std::uint64_t v) { return to_ticks(v, 1000, hz_); };
    bcfg_.gap = p_.opts.bind_gap_us * hz_ / 1000000;
    bcfg_.slow_gap = std::max(bcfg_.gap, ms(p_.opts.slow_bind_gap_ms));
    bcfg_.syn_timeout = ms(p_.opts.backend_syn_timeout_ms);
    bcfg_.client_idle = ms(p_.opts.client_idle_timeout_ms);
    // Never longer than half the idle timeout: the flight must bind before it is reset.
    bcfg_.unsure_wait = std::min(ms(FirstFlight::kUnsureStartWaitMs), bcfg_.client_idle / 2);
    bcfg_.syn_retries = p_.opts.backend_syn_retries;
    bcfg_.max_candidates = p_.opts.max_candidates;
    linger_ticks_ = ms(p_.opts.local_linger_ms);
    flow_idle_ticks_ = ms(static_cast<std::uint64_t>(p_.opts.flow_idle_timeout_s) * 1000);
    closed_ticks_ = ms(static_cast<std::uint64_t>(p_.opts.closed_linger_s) * 1000);
    reclaim_idle_ticks_ = ms(kReclaimIdleMs);
    if (t_.ring_ctl) ring_head_ = __atomic_load_n(&t_.ring_ctl[p_.index].head, __ATOMIC_ACQUIRE);
    const bool reuse = p_.opts.backend_reuse && p_.opts.backend_pool_max_age_ms > 0;
    if ((p_.opts.backend_pool || reuse) && p_.opts.mode == Mode::Xdp) {
        PoolConfig pc;
        // Places for the legs it opens and for those requests move off.
        pc.per_backend = p_.opts.backend_pool + (reuse ? p_.opts.backend_reuse : 0);
        pc.open_per_backend = p_.opts.backend_pool;
        pc.min_per_backend = p_.opts.backend_pool_min;
        // A quarter of the worker's SNAT ports at most: flows keep at least three quarters
        // (idle legs are not given back when the flows' share runs out; they age out).
        pc.max_ports = std::max(1u, (slots_.port_hi() - slots_.port_lo() + 1u) / 4u);
        pc.max_age = ms(p_.opts.backend_pool_max_age_ms);
        pc.syn_timeout = bcfg_.syn_timeout;
        pc.syn_retries = bcfg_.syn_retries;
        pc.retry_after = ms(1000);
        pool_ = std::make_unique<BackendPool>(pc);
        pool_host_ = std::make_unique<PoolGlue>(*this);
    }
    if (p_.ports && p_.index < KVS_MAX_WORKERS) {
        sessions_ = std::make_unique<SessionLimiter>();
        p_.ports->limiters[p_.index].store(sessions_.get(), std::memory_order_release);
    }
    prepare_port_tables();
}

Worker::~Worker() {
    for (std::uint32_t i = 0; i < slots_.capacity(); ++i)
        if (slots_[i].used) release(i, false);
    if (pool_) pool_->close_all(*pool_host_);  // the backends keep no idle connection of ours
    flush_tx();
    if (sessions_) p_.ports->limiters[p_.index].store(nullptr, std::memory_order_release);
}

std::uint64_t Worker::counter(unsigned reason) const {
    return reason < KVS_STATS_MAX ? stats_[reason] : 0;
}

// The bytes a flight may hold before it binds: the option, else the published config.
std::uint32_t Worker::max_held() const {
    std::uint32_t v = p_.opts.max_held_bytes ? p_.opts.max_held_bytes : t_.config->max_held_bytes;
    if (v == 0) v = KVS_DEFAULT_MAX_HELD_BYTES;
    return std::min<std::uint32_t>(v, static_cast<std::uint32_t>(buf_.size()));
}

bool Worker::is_vip(const kvs_flow_key &k) const {
    const kvs_config &c = *t_.config;
    for (std::uint32_t i = 0; i < c.n_vips && i < KVS_MAX_VIPS; ++i) {
        const kvs_vip &v = c.vips[i];
        if (v.family == k.family && v.port == k.dport && std::memcmp(v.addr, k.daddr, 16) == 0)
            return true;
    }
    return false;
}

void Worker::tx(rte_mbuf *m) {
    if (ntx_ == std::size(txq_)) flush_tx();
    txq_[ntx_++] = m;
}

void Worker::flush_tx() {
    unsigned sent = 0;
    for (int tries = 0; sent < ntx_ && tries < 8; ++tries)
        sent += rte_eth_tx_burst(p_.port, p_.queue, txq_ + sent,
                                 static_cast<std::uint16_t>(ntx_ - sent));
    for (unsigned i = sent; i < ntx_; ++i) {
        rte_pktmbuf_free(txq_[i]);
        inc(KVS_R_DP_TX_DROP);
    }
    ntx_ = 0;
}

unsigned Worker::poll(std::uint64_t now) {
    poll_ns_ = poll_tai_ns_ = 0;  // the clocks are read once a poll, when first asked (clock_ns)
    rte_mbuf *rx[32];
    unsigned n = KVS_UNLIKELY(p_.rx_off && p_.rx_off->load(std::memory_order_relaxed))
                     ? 0
                     : rte_eth_rx_burst(p_.port, p_.queue, rx, 32);
    for (unsigned i = 0; i < n; ++i) {
        if (i + 1 < n) prefetch_frame(rx[i + 1]);
        handle(rx[i], now);
    }
    if (p_.inboxes) {
        unsigned k = rte_ring_dequeue_burst(p_.inboxes[p_.index], reinterpret_cast<void **>(rx), 32,
                                            nullptr);
        for (unsigned i = 0; i < k; ++i) handle(rx[i], now);
        n += k;
    }
    install_accepted(now);  // before the timers: a flow Installing has no live timer
    // Timers at most every ~100 us; the bound-flow sweep is incremental.
    if (now - last_timer_ >= hz_ / 10000) {
        last_timer_ = now;
        timers(now);
        // A flight a timer settled (a pooled leg) is installed now, not a poll later: an idle
        // worker sleeps up to a pool period (10 ms) before the next one.
        install_accepted(now);
        sweep_bound(now);
        // Not while draining: the legs it opened then stayed open on the backends.
        if (pool_ && !draining() && now - last_pool_ >= pool_period()) {
            last_pool_ = now;
            pool_->upkeep(t_, now, *pool_host_);
        }
        if (now - last_beat_ >= hz_ / 100) {
            last_beat_ = now;
            heartbeat(mono_ns());
            prepare_port_tables();
        }
    }
    flush_tx();
    poll_ns_ = poll_tai_ns_ = 0;
    return n;
}

// The next frame's bytes, while this one is handled. A new flow's first segment is read whole
// (the request's head and the JSON up to the prompt, then the prompt hashed): fetch every line
// of it, up to 2 KB; a frame of a bound flow needs only its headers, and is rarely this long
// here (XDP forwards those).
void Worker::prefetch_frame(const rte_mbuf *m) {
    const auto *p = rte_pktmbuf_mtod(m, const char *);
    const std::uint32_t len = std::min<std::uint32_t>(rte_pktmbuf_data_len(m), 2048);
    for (std::uint32_t off = 0; off < len; off += RTE_CACHE_LINE_SIZE) rte_prefetch0(p + off);
}

// Every configured backend's SNAT port table, allocated here (every 10 ms) rather than by the
// first binding to it. nothrow: a failed allocation is tried again at the next tick, and a
// binding meanwhile finds no port (dp_no_port) rather than throwing.
void Worker::prepare_port_tables() {
    if (!t_.backends) return;
    PortBusy &ports = slots_.ports();
    const std::uint32_t n = std::min<std::uint32_t>(t_.config->n_backends, KVS_MAX_BACKENDS);
    for (std::uint32_t b = 0; b < n; ++b)
        if (t_.backends[b].state != KVS_BE_EMPTY && !ports.find(static_cast<std::uint16_t>(b)))
            ports.block(static_cast<std::uint16_t>(b), true);
}

std::uint64_t Worker::clock_ns() const {
    if (!poll_ns_) poll_ns_ = mono_ns();
    return poll_ns_;
}

std::uint64_t Worker::clock_tai_ns() const {
    if (!poll_tai_ns_) poll_tai_ns_ = kvs_cookie_now_tai_ns();
    return poll_tai_ns_;
}

void Worker::run(const std::atomic<bool> &stop) {
    unsigned idle = 0;
    // The adaptive sleeps are short (10..--idle-sleep-us): the kernel's default 50 us timer
    // slack would stretch each one, adding that to the first packet after an idle spell.
    if (p_.opts.idle == IdlePolicy::Adaptive) prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    const std::uint64_t spin = hz_ * p_.opts.idle_spin_us / 1000000;
    std::uint64_t last_rx = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        park_if_asked();
        const std::uint64_t now = rte_rdtsc();
        if (poll(now) > 0 || p_.opts.idle == IdlePolicy::Busy) {
            idle = 0;
            last_rx = now;
            continue;
        }
        // Adaptive: keep polling --idle-spin-us after the last packet (0 by default), then spin
        // briefly (64 polls), then sleep longer the longer it stays idle (up to --idle-sleep-us)
        // so a 2-CPU box keeps room for the backends and the client.
        if (now - last_rx < spin) {
            rte_pause();
            continue;
        }
        ++idle;
        if (idle < 64) {
            rte_pause();
            continue;
        }
        // On the AF_XDP socket, the next frame ends the sleep: it lasts until the next thing
        // due without one (wake_sleep_us). Plain sleeps grow by 10 us up to --idle-sleep-us.
        if (const int fd = wake_fd_.load(std::memory_order_relaxed); fd >= 0) {
            const unsigned us = wake_sleep_us(now);
            pollfd pfd{fd, POLLIN, 0};
            const timespec ts{0, static_cast<long>(us) * 1000};
            const int r = ppoll(&pfd, 1, &ts, nullptr);
            if (r > 0 && (pfd.revents & POLLIN))
                ++stats_[KVS_R_DP_IDLE_WOKEN];
            else if (r != 0)
                usleep(us);  // an error on the socket (or a signal): no busy loop on it
        } else {
            usleep(std::min(p_.opts.idle_sleep_us, (idle - 63) * 10));
        }
    }
    // The pool's legs are reset here, on the worker's own lcore: in xdp mode the process ends
    // in _exit (the port stays open for XDP), so ~Worker never runs, and the backends kept every
    // idle connection of ours until their own timeouts.
    if (pool_) pool_->close_all(*pool_host_);
    flush_tx();
    heartbeat(0);  // stopped cleanly: kvsteerd need not wait for the heartbeat to go stale
}

// How long an idle worker woken by its socket's next frame may sleep: until its first timer is
// due, at most a heartbeat period (10 ms, well inside kvsteerd's 1 s staleness; lingering slots
// are then swept 64 per 10 ms, and reclaimed at once when the table fills), 1 ms while a backend
// pool opens legs, at least 10 us. Timed sleeps cost a context switch each: when they grew from
// 10 us to 200 us, every idle gap of half a millisecond between connections took ~10.
std::uint64_t Worker::pool_period() const {
    return pool_ && pool_->opens_legs() ? hz_ / 1000 : hz_ / 100;
}

unsigned Worker::wake_sleep_us(std::uint64_t now) const {
    std::uint64_t ticks = pool_period();
    if (!timer_heap_.empty()) {
        const std::uint64_t due = timer_heap_.front().when;
        ticks = std::min(ticks, due > now ? due - now : 0);
    }
    return std::max<unsigned>(10, static_cast<unsigned>(ticks * 1000000 / hz_));
}

// A draining worker (the dataplane stopping) beats 0: kvsteerd withdraws the VIP at once, not
// dataplane-stale after the last beat (the dataplane stopped taking new flows first, while the VIP
// was still announced), and XDP marks no more request boundaries of its flows.
void Worker::heartbeat(std::uint64_t now_ns) {
    if (!t_.ring_ctl || p_.index >= KVS_MAX_WORKERS) return;
    __atomic_store_n(&t_.ring_ctl[p_.index].binding, std::uint64_t{slots_.binding()},
                     __ATOMIC_RELAXED);
    __atomic_store_n(&t_.ring_ctl[p_.index].alive_ns, draining() ? 0 : now_ns, __ATOMIC_RELAXED);
}

void Worker::park_if_asked() {
    if (KVS_LIKELY(!park_.load(std::memory_order_acquire))) return;
    flush_tx();
    parked_.store(true, std::memory_order_release);
    while (park_.load(std::memory_order_acquire)) usleep(500);
    parked_.store(false, std::memory_order_release);
}

void Worker::held_mbufs(std::vector<rte_mbuf *> &out) {
    auto chain = [&out](rte_mbuf *m) {
        for (; m; m = m->next) out.push_back(m);
    };
    for (std::uint32_t i = 0; i < slots_.capacity(); ++i)
        slots_[i].b.flight().each([&](void *pkt) { chain(static_cast<rte_mbuf *>(pkt)); });
    if (!p_.inboxes) return;
    // Single consumer (us, parked): take the inbox's contents and put them back in order.
    rte_ring *r = p_.inboxes[p_.index];
    std::vector<void *> q(rte_ring_count(r));
    const unsigned n = rte_ring_dequeue_bulk(r, q.data(), static_cast<unsigned>(q.size()), nullptr);
    for (unsigned i = 0; i < n; ++i) chain(static_cast<rte_mbuf *>(q[i]));
    if (n && rte_ring_enqueue_bulk(r, q.data(), n, nullptr) != n) {
        // Cannot happen with every producer parked; should it, nothing is lost silently.
        for (unsigned i = 0; i < n; ++i) rte_pktmbuf_free(static_cast<rte_mbuf *>(q[i]));
        stats_[KVS_R_DP_INBOX_FULL] += n;
    }
}

void Worker::handle(rte_mbuf *m, std::uint64_t now) {
    kvs_pkt pkt;
    int st = parse_mbuf(m, &pkt);
    if (KVS_UNLIKELY(st != KVS_PARSE_OK)) {
        if (st == KVS_PARSE_NOT_IP && answers_handshakes()) return on_arp(m);
        if (st == KVS_PARSE_NOT_TCP && pkt.l4proto == KVS_IPPROTO_ICMPV6 && answers_handshakes() &&
            answer_nd(m, *t_.config) == ArpVerdict::Answered) {
            inc(KVS_R_DP_ND_ANSWERED);
            return tx(m);
        }
        if (st == KVS_PARSE_NOT_TCP && owns_bound_flows() &&
            (pkt.l4proto == KVS_IPPROTO_ICMP || pkt.l4proto == KVS_IPPROTO_ICMPV6))
            return on_icmp(m, pkt);
        inc(kvs_parse_reason(st, pkt.l4proto));
        rte_pktmbuf_free(m);
        return;
    }
    kvs_flow_key key;
    kvs_flow_key_of(&pkt, &key);
    if (is_vip(key)) {
        // XDP's tag (xdp mode; proto.h): taken off before anything is done with the segment. A
        // client that set the reserved bit itself only costs the flow-map lookups below.
        punt_bound_ = false;
        if (!owns_bound_flows() && (pkt.tcp->doff_res & KVS_TCP_RES_PUNT_BOUND)) {
            kvs_tcp_res_bits(pkt.tcp, KVS_TCP_RES_PUNT_BOUND, 0);
            punt_bound_ = true;
        }
        return on_client(m, pkt, key, now);
    }
    // The SNAT address of the packet's family (dual stack: one per family, one port range).
    const std::uint32_t *snat = kvs_snat_addr(t_.config, key.family);
    const bool to_snat = snat && std::memcmp(snat, key.daddr, 16) == 0;
    std::uint16_t dport = kvs_ntohs(pkt.tcp->dest);
    if (to_snat && dport >= slots_.port_lo() && dport <= slots_.port_hi())
        return on_backend(m, pkt, key, now);
    if (p_.inboxes && to_snat && dport >= all_lo_ && dport <= all_hi_) {
        // Another worker's SNAT port: RSS put the backend's packet on our queue; hand it over.
        const std::uint32_t owner = (dport - all_lo_) / per_worker_;
        if (rte_ring_enqueue(p_.inboxes[owner], m) != 0) {
            inc(KVS_R_DP_INBOX_FULL);
            rte_pktmbuf_free(m);
        }
        return;
    }
    inc(KVS_R_PASS_NOT_OURS);
    rte_pktmbuf_free(m);
}

// ---------------------------------------------------------------------------------------------
// Client side

void Worker::on_client(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now) {
    const std::uint8_t fl = pkt.tcp->flags;
    // A SYN that starts no connection, dropped before the flow's own handling (as XDP drops it
    // before its flow lookup): on a flow being bound a SYN+FIN was held as its FIN, and either
    // could end a closed flow's slot. SYN+FIN or SYN+RST: RFC 9293 and Linux start nothing. To
    // a group address: not to us (answered, the SYN-ACK left from that address).
    if ((fl & (KVS_TCP_SYN | KVS_TCP_ACK)) == KVS_TCP_SYN) {
        if (fl & (KVS_TCP_FIN | KVS_TCP_RST)) {
            inc(KVS_R_DROP_MALFORMED);
            rte_pktmbuf_free(m);
            return;
        }
        if ((pkt.eth->dst[0] & 1) || kvs_src_not_unicast(&key)) {  // to or from a group address
            inc(KVS_R_DROP_SYN_NOT_UNICAST);
            rte_pktmbuf_free(m);
            return;
        }
    }
    const std::int32_t found = slots_.find(key);
    if (found >= 0) {
        const auto idx = static_cast<std::uint32_t>(found);
        Slot &s = slots_[idx];
        if (s.b.phase() == Binder::Phase::Bound) {
            if (punt_bound_ && rebinding_now(s)) {
                // A new request boundary on a connection whose slot still lingers: the
                // lingering copy is stale; the request is bound again from the flow's entries.
                release(idx, false);
                return on_client(m, pkt, key, now);
            }
            if (!reused_by_new_connection(s, pkt)) {
                // xdp mode: a FIN or RST XDP tagged while the entries were marked, come after
                // the request was resumed here (often in the same burst): sent on from this
                // copy, XDP never saw it close (no FIN on the entry, no close counted: the flow
                // kept for the idle timeout, its backend's in-flight count one too high until
                // then). Dropped: a FIN comes again, through XDP now; the backend's next
                // segment draws the client's RST again.
                if (!owns_bound_flows() && (pkt.tcp->flags & (KVS_TCP_FIN | KVS_TCP_RST))) {
                    inc(KVS_R_DP_CLOSE_LEFT_TO_XDP);
                    rte_pktmbuf_free(m);
                    return;
                }
                return forward(s, m, pkt, true, now);
            }
            // The client has opened a new connection on the same 4-tuple: the old one is over.
            inc(KVS_R_FLOW_REUSED);
            release(idx, owns_bound_flows());
            return on_client(m, pkt, key, now);
        }
        // A SYN on a flow being bound (dpdk mode; in xdp mode XDP answers SYNs): a delayed
        // duplicate of the handshake's, or forged with the client's address and port. Neither
        // ends the binding: with timestamps its echo (0) read as another connection's and
        // aborted it (the held request freed, the backend leg reset), without them its window
        // was taken as the client's. A client that did reuse the tuple (it lost the connection
        // without a RST) is not answered while the binding lasts.
        if ((pkt.tcp->flags & (KVS_TCP_SYN | KVS_TCP_RST)) == KVS_TCP_SYN) {
            inc(KVS_R_DP_SYN_WHILE_BINDING);
            rte_pktmbuf_free(m);
            return;
        }
        const ClientSeg c = client_seg(m, pkt);
        const bool rst = (pkt.tcp->flags & KVS_TCP_RST) != 0;
        // Only what the client could have sent ends a binding: a RST near its stream, another
        // connection's segment with a valid cookie (or a SYN). Before, a blind RST or a segment
        // with any other timestamp echo from the client's address and port aborted it.
        kvs_cookie_opts co{};
        if (rst && !s.b.rst_in_window(c.seq)) {
            inc(KVS_R_CLOSE_OUT_OF_WINDOW);
            rte_pktmbuf_free(m);
            return;
        }
        const bool other = !rst && s.b.from_other_connection(c);
        if (other && !(pkt.tcp->flags & KVS_TCP_SYN) && !cookie_valid(pkt, &co)) {
            inc(KVS_R_DROP_BAD_COOKIE);  // neither this connection's (its echo) nor a new one
            rte_pktmbuf_free(m);
            return;
        }
        if (rst || other) {
            // A reset: the client gave up while we were binding. Another timestamp echo: nothing
            // reaches the client between our SYN-ACK and the bind, so it echoes that SYN-ACK's
            // TSval, which carries its ISN; another echo is another connection on the same
            // 4-tuple (the client reused its port), and the one being bound is over.
            inc(rst ? KVS_R_FLOW_RST : KVS_R_FLOW_REUSED);
            Actions out;
            s.b.abort(env(), out);
            execute(idx, out, now);
            if (rst) {
                rte_pktmbuf_free(m);
                return;
            }
            return on_client(m, pkt, key, now);
        }
        if (pkt.payload_len > 0 || c.fin) return client_segment(idx, m, pkt, now);
        s.b.pure_ack(c);
        inc(KVS_R_DP_PURE_ACK_HELD);  // its window and TSval are taken, nothing to hold
        rte_pktmbuf_free(m);
        return;
    }
    if (punt_bound_ && !(fl & KVS_TCP_SYN)) return bound_punt(m, pkt, key, now);
    if ((fl & (KVS_TCP_SYN | KVS_TCP_ACK | KVS_TCP_RST)) == KVS_TCP_SYN) {
        if (answers_handshakes() && !draining()) return answer_syn(m, pkt);
        // Draining takes no new flows; in xdp mode XDP answers SYNs, so one here is unexpected.
        inc(draining() ? KVS_R_DP_DRAINING : KVS_R_DP_SYN_NOT_OURS);
        rte_pktmbuf_free(m);
        return;
    }
    if (fl & KVS_TCP_RST) {
        inc(KVS_R_DROP_RST_NO_FLOW);
        rte_pktmbuf_free(m);
        return;
    }
    if ((fl & (KVS_TCP_ACK | KVS_TCP_FIN | KVS_TCP_SYN)) == (KVS_TCP_ACK | KVS_TCP_FIN) &&
        pkt.payload_len == 0)
        return answer_bare_fin(m, pkt);
    if ((fl & KVS_TCP_ACK) && !(fl & KVS_TCP_SYN) && pkt.payload_len > 0) {
        if (!draining()) return new_flow(m, pkt, key, now);
        inc(KVS_R_DP_DRAINING);
        rte_pktmbuf_free(m);
        return;
    }
    inc(KVS_R_DROP_PURE_ACK);
    rte_pktmbuf_free(m);
}

// A client segment XDP tagged as a bound connection's (KVS_TCP_RES_PUNT_BOUND) with no binding of
// it here: never taken for a new connection's, whatever its ACK says of the cookie. A request
// boundary (the entries marked) is bound again, or kept on its backend (rebind_flow: draining
// too); with the entries no longer marked (the boundary's first segment was kept on its backend:
// raced, draining, no room) its bytes go on through them, as XDP now sends the connection's
// segments. A FIN or RST is not sent on so (XDP's close bookkeeping, the entry's FIN or RST and
// the backend's closes, would be skipped): dropped, a FIN comes again and takes XDP's path, and
// the backend's next segment draws the client's RST again. Anything else is dropped, counted
// (dp_request_flow_gone for bytes or a FIN, drop_rst_no_flow, drop_pure_ack_no_state). Before, such
// a segment went on to the cookie check: dropped, or with a valid-looking ACK (about 2^-22) bound
// as a new connection, a bare FIN answered as one.
void Worker::bound_punt(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now) {
    const std::uint8_t fl = pkt.tcp->flags;
    if ((fl & KVS_TCP_ACK) && !(fl & KVS_TCP_RST) && pkt.payload_len > 0 &&
        rebind_flow(m, pkt, key, now))
        return;
    kvs_flow c2s{};
    const bool through = t_.flows_fd >= 0 && bpf_map_lookup_elem(t_.flows_fd, &key, &c2s) == 0 &&
                         c2s.dir == KVS_DIR_C2S && !(c2s.state & KVS_FLOW_REBINDING);
    if (through && !(fl & (KVS_TCP_FIN | KVS_TCP_RST))) {
        rewrite_packet(&pkt, rte_pktmbuf_mtod(m, std::uint8_t *) + rte_pktmbuf_data_len(m), c2s);
        inc(KVS_R_TX_FWD_C2S);
        return tx(m);
    }
    inc(through                                       ? KVS_R_DP_CLOSE_LEFT_TO_XDP
        : (fl & KVS_TCP_RST)                          ? KVS_R_DROP_RST_NO_FLOW
        : (pkt.payload_len > 0 || (fl & KVS_TCP_FIN)) ? KVS_R_DP_REQ_NO_FLOW
                                                      : KVS_R_DROP_PURE_ACK);
    rte_pktmbuf_free(m);
}

// Whether a client segment that matches a bound flow's 4-tuple belongs to a new connection
// there. dpdk mode: a SYN on a closed flow (both FINs, or a RST; a SYN on a live flow is
// forwarded: the backend's challenge ACK makes the client reset the old one). A client FIN alone
// keeps the flow live, as XDP does while a response is owed (dpdk mode does not track
// responses): the client's half-closed socket still holds the port, and a spoofed SYN deleted
// the flow with its response. xdp mode:
// the local copy outlives the flow's entries by up to --local-linger-ms, and XDP deletes them
// when the client's SYN reuses the 4-tuple; a punted segment for a bound flow whose entry is
// gone is a new connection's first flight. (The cookie cannot tell: it hashes the 4-tuple and
// the time slot, so a reopened connection gets the same one.)
bool Worker::reused_by_new_connection(const Slot &s, const kvs_pkt &pkt) const {
    const std::uint8_t fl = pkt.tcp->flags;
    if (owns_bound_flows()) return (fl & (KVS_TCP_SYN | KVS_TCP_ACK)) == KVS_TCP_SYN && s.closed;
    if (t_.flows_fd < 0 || (fl & (KVS_TCP_SYN | KVS_TCP_RST))) return false;
    kvs_flow f{};
    return bpf_map_lookup_elem(t_.flows_fd, &s.ckey, &f) != 0;
}

void Worker::answer_syn(rte_mbuf *m, kvs_pkt &pkt) {
    const kvs_config &c = *t_.config;
    if (c.syn_rate_per_prefix &&
        !syn_buckets_->take(kvs_syn_prefix_key(&pkt), clock_ns(), c.syn_rate_per_prefix,
                            c.syn_burst_per_prefix)) {
        // One table for every worker (syn_buckets.h): the limit is the appliance's.
        inc(KVS_R_DROP_SYN_RATE);
        rte_pktmbuf_free(m);
        return;
    }
    unsigned why = 0;
    rte_mbuf *out = build_cookie_synack(m, c, pkt, clock_tai_ns(), &why);
    if (!out) {
        inc(why);
        return;
    }
    inc(KVS_R_TX_SYNACK);
    tx(out);
}

// A client that closes before sending anything (FIN right after the handshake) has nothing to
// bind: answer with a reset so it does not retransmit its FIN into silence.
void Worker::answer_bare_fin(rte_mbuf *m, kvs_pkt &pkt) {
    kvs_cookie_opts co{};
    if (!check_cookie(m, pkt, &co)) return;
    const std::uint32_t seq = kvs_ntohl(pkt.tcp->seq);
    // With timestamps the client's ISN is known (its echo of our SYN-ACK's TSval): a FIN past
    // ISN + 1 follows data we never held (lost before the appliance, or refused here: the hold
    // full, the source's share, an eviction). Dropped, for the client to send its data again; a
    // reset ended a connection whose request was merely late. Without timestamps: no telling.
    std::uint32_t isn = 0;
    if (pkt.opts.ts_off && kvs_cookie_client_isn(&co, pkt.opts.tsecr, seq, 2 * max_held(), &isn) &&
        seq != isn + 1) {
        inc(KVS_R_DP_FIN_AFTER_MISSING_DATA);
        rte_pktmbuf_free(m);
        return;
    }
    if (rst_to_client(pkt, seq + 1)) inc(KVS_R_DP_RST_BARE_FIN);  // acknowledges the FIN
    rte_pktmbuf_free(m);
}

bool Worker::rst_to_client(const kvs_pkt &pkt, std::uint32_t ack) {
    TcpSpec sp{};
    kvs_flow_key key;
    kvs_flow_key_of(&pkt, &key);
    sp.smac = t_.config->appliance_mac;
    sp.dmac = pkt.eth->src;
    sp.saddr = key.daddr;
    sp.daddr = key.saddr;
    sp.family = key.family;
    sp.sport = pkt.tcp->dest;
    sp.dport = pkt.tcp->source;
    sp.seq = kvs_ntohl(pkt.tcp->ack_seq);
    sp.ack = ack;
    sp.flags = KVS_TCP_RST | KVS_TCP_ACK;
    return send(build_tcp(p_.pool, sp));
}

// Every segment a client sends before its flow exists acks our cookie + 1: checked with the
// shared codec; a bad one is dropped here (counted, `m` freed) and false returned.
bool Worker::check_cookie(rte_mbuf *m, const kvs_pkt &pkt, kvs_cookie_opts *co) {
    if (cookie_valid(pkt, co)) return true;
    inc(KVS_R_DROP_BAD_COOKIE);
    rte_pktmbuf_free(m);
    return false;
}

bool Worker::cookie_valid(const kvs_pkt &pkt, kvs_cookie_opts *co) const {
    const kvs_config &c = *t_.config;
    kvs_cookie_tuple tup{};
    kvs_cookie_tuple_of(&pkt, &tup);
    return kvs_cookie_check(&c.cookie_key[0][0], &tup, kvs_ntohl(pkt.tcp->ack_seq) - 1,
                            kvs_cookie_slot(clock_tai_ns(), c.cookie_period_s), co);
}

// xdp mode: whether XDP marked the slot's flow REBINDING (a request boundary).
bool Worker::rebinding_now(const Slot &s) const {
    if (owns_bound_flows() || t_.flows_fd < 0) return false;
    kvs_flow f{};
    return bpf_map_lookup_elem(t_.flows_fd, &s.ckey, &f) == 0 && (f.state & KVS_FLOW_REBINDING);
}

// A client segment at a request boundary of a bound connection (XDP marked both entries
// REBINDING and handed it over): hold the request and bind it again, from the flow's entries.
// False when the segment is no such thing (the caller treats it as a first flight).
bool Worker::rebind_flow(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now) {
    if (t_.flows_fd < 0) return false;
    kvs_flow_key skey;
    kvs_flow c2s{}, s2c{};
    if (bpf_map_lookup_elem(t_.flows_fd, &key, &c2s) != 0 || c2s.dir != KVS_DIR_C2S ||
        !(c2s.state & KVS_FLOW_REBINDING))
        return false;
    if (!segment_checksums_ok(m, pkt)) {  // the entries stay marked: its retransmission comes here
        inc(KVS_R_DP_DROP_BAD_CHECKSUM);
        rte_pktmbuf_free(m);
        return true;
    }
    kvs_flow_reverse_key(&key, &c2s, &skey);
    if (bpf_map_lookup_elem(t_.flows_fd, &skey, &s2c) != 0) {
        // Half a flow (its server entry evicted): nothing to continue. The client is reset, so
        // that it retries on a new connection (before, the segment was dropped silently and the
        // connection hung until the client's own timeout): RST|ACK in its own sequence space.
        // The backend leg is reset too (it stayed open on a port the sweeper hands out again),
        // and the connection counted closed in its backend's load (no FIN or RST will be).
        inc(KVS_R_DP_REQ_NO_FLOW);
        rst_leg(c2s, key.family, kvs_ntohl(pkt.tcp->seq));
        bpf_map_delete_elem(t_.flows_fd, &key);
        count_close(c2s);
        rst_to_client(pkt, kvs_ntohl(pkt.tcp->seq) + pkt.payload_len);
        rte_pktmbuf_free(m);
        return true;
    }
    // XDP marked the boundary on one CPU while the backend's FIN, a RST or more of its bytes
    // crossed on another (the two entries are read without a lock): the connection was not
    // quiescent. The request stays on its backend, as XDP keeps a closing connection's: both
    // entries unmarked, the segment sent on through the flow, the tracking told the request's
    // end is unknown (no later boundary on this connection).
    //
    // The same while draining (no new binding), and when there is no room to hold the request (this
    // client source holds its share of the slots or of the held packets, or the table or the held
    // packets are full and nothing can be evicted): before, the segment was dropped with the flow
    // still marked, so the connection stalled (every packet punted, every retransmission dropped)
    // until a slot freed up, seconds under slowloris.
    const bool raced = ((c2s.state | s2c.state) & (KVS_FLOW_FIN_IN | KVS_FLOW_RST)) ||
                       kvs_ntohl(pkt.tcp->ack_seq) != s2c.next_seq + s2c.seq_delta;
    const bool keep_draining = !raced && draining();
    const bool no_room =
        !raced && !keep_draining &&
        ((p_.opts.max_held_per_source && (slots_.held_by(key) >= p_.opts.max_held_per_source ||
                                          slots_.packets_held_by(key) >= max_source_mbufs_)) ||
         (slots_.full() && !reclaim_bound(now) && !evict_stalled(now)) ||
         (held_mbufs_ >= max_held_mbufs_ && !evict_stalled(now)));
    const std::int32_t taken = raced || no_room || keep_draining ? -1 : slots_.take(key);
    if (taken < 0) {
        // No slot after all (the eviction resumed a moving request, freeing none): kept too,
        // not dropped with the entries marked.
        inc(raced           ? KVS_R_DP_REQ_BOUNDARY_RACED
            : keep_draining ? KVS_R_DP_REQ_KEPT_DRAINING
                            : KVS_R_DP_REQ_KEPT_NO_ROOM);
        c2s.state = static_cast<std::uint8_t>(c2s.state & ~KVS_FLOW_REBINDING);
        s2c.state = static_cast<std::uint8_t>(s2c.state & ~KVS_FLOW_REBINDING);
        c2s.msgs = static_cast<std::uint16_t>(c2s.msgs + 1);
        c2s.next_seq = kvs_ntohl(pkt.tcp->seq) + pkt.payload_len;
        c2s.resp = 0;
        if (bpf_map_update_elem(t_.flows_fd, &skey, &s2c, BPF_EXIST) != 0 ||
            bpf_map_update_elem(t_.flows_fd, &key, &c2s, BPF_EXIST) != 0) {
            inc(KVS_R_DP_REQ_NO_FLOW);
            rte_pktmbuf_free(m);
            return true;
        }
        rewrite_packet(&pkt, rte_pktmbuf_mtod(m, std::uint8_t *) + rte_pktmbuf_data_len(m), c2s);
        inc(KVS_R_TX_FWD_C2S);
        tx(m);
        return true;
    }
    const auto idx = static_cast<std::uint32_t>(taken);
    Slot &s = slots_[idx];
    std::memcpy(s.client_mac, pkt.eth->src, 6);
    std::memcpy(s.snat_addr, c2s.new_saddr, 16);  // a new leg leaves from the same address
    s.rebind = true;
    s.prev_c2s = c2s;
    s.prev_s2c = s2c;
    s.prev_skey = skey;
    s.prev_port = slots_.port_word(c2s.backend_id, kvs_ntohs(c2s.new_sport));
    // The boundary segment is held, not sent on the old leg: the newest TSval that leg carried
    // is at most this one's, moved as the leg moved them.
    s.prev_tsval = pkt.opts.tsval + c2s.tsval_delta;
    slots_.attach_old_leg(idx);
    // The previous request is complete (a quiescent boundary): its session count goes back.
    if (p_.ports) p_.ports->release_session(c2s.backend_id, kvs_ntohs(c2s.new_sport));
    RebindHello r;
    r.h.isn = c2s.next_seq - 1;  // XDP checked the boundary is the next client byte
    r.h.isn_known = true;
    r.h.cookie_isn = s2c.next_seq + s2c.seq_delta - 1;
    r.h.mss = c2s.client_mss;
    r.h.wscale = c2s.client_wscale;
    r.h.sack = c2s.client_sack;
    r.h.ts = c2s.client_ts;
    r.h.ts_ours = s2c.ts_last + 1;  // the client-facing timestamps go on from there
    r.h.tsval = pkt.opts.tsval;
    r.h.window = kvs_ntohs(pkt.tcp->window);
    r.h.tuple_hash = hash_five_tuple(hash_params(*t_.config), key);
    r.h.family = key.family;
    r.backend = c2s.backend_id;
    s.b.start_rebind(env(), r, now);
    client_segment(idx, m, pkt, now, true);
    return true;
}

void Worker::new_flow(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now) {
    const std::uint32_t seq = kvs_ntohl(pkt.tcp->seq), ack = kvs_ntohl(pkt.tcp->ack_seq);
    kvs_cookie_opts co{};
    if (!cookie_valid(pkt, &co)) {
        inc(KVS_R_DROP_BAD_COOKIE);
        rte_pktmbuf_free(m);
        return;
    }
    if (!segment_checksums_ok(m, pkt)) {  // before a slot is taken for it
        inc(KVS_R_DP_DROP_BAD_CHECKSUM);
        rte_pktmbuf_free(m);
        return;
    }
    const std::uint32_t *snat = kvs_snat_addr(t_.config, key.family);
    if (!snat) {  // a VIP of a family the appliance has no SNAT address of (kvsteerd refuses it)
        inc(KVS_R_DP_NO_SNAT_FAMILY);
        rte_pktmbuf_free(m);
        return;
    }
    if (p_.opts.max_held_per_source && slots_.held_by(key) >= p_.opts.max_held_per_source) {
        inc(KVS_R_DP_HOLD_SOURCE_CAP);  // this client address holds its share already
        rte_pktmbuf_free(m);
        return;
    }
    if (owns_bound_flows() && p_.opts.max_flows_per_source &&
        slots_.flows_by(key) >= p_.opts.max_flows_per_source) {
        // dpdk mode: this address has its share of the table open (established flows keep their
        // slots, which free only as the flows end): the connection is refused with a reset, not
        // left retransmitting into a table one client filled with idle connections.
        inc(KVS_R_DP_FLOW_SOURCE_CAP);
        rst_to_client(pkt, seq + pkt.payload_len);
        rte_pktmbuf_free(m);
        return;
    }
    if ((slots_.full() && !reclaim_bound(now) && !evict_stalled(now)) ||
        (held_mbufs_ >= max_held_mbufs_ && !evict_stalled(now))) {
        inc(KVS_R_DP_HOLD_FULL);
        rte_pktmbuf_free(m);
        return;
    }
    const std::int32_t taken = slots_.take(key);
    if (taken < 0) {
        inc(KVS_R_DP_HOLD_FULL);
        rte_pktmbuf_free(m);
        return;
    }
    const auto idx = static_cast<std::uint32_t>(taken);
    Slot &s = slots_[idx];
    std::memcpy(s.client_mac, pkt.eth->src, 6);
    std::memcpy(s.snat_addr, snat, 16);
    ClientHello h;
    h.family = key.family;
    // The client's ISN for sure from its timestamp echo (our SYN-ACK's TSval carries it, see
    // cookie.h), so a flight whose head was lost is never bound from its body; without
    // timestamps, the earliest segment seen (moved back if an earlier one arrives).
    h.isn = seq - 1;
    h.isn_known =
        pkt.opts.ts_off && kvs_cookie_client_isn(&co, pkt.opts.tsecr, seq, 2 * max_held(), &h.isn);
    if (h.isn_known) inc(KVS_R_DP_ISN_FROM_TS);
    h.cookie_isn = ack - 1;
    h.mss = co.mss;
    h.wscale = co.wscale;
    h.sack = co.sack_perm;
    h.ts = pkt.opts.ts_off != 0;
    h.ts_ours = pkt.opts.tsecr;
    h.tsval = pkt.opts.tsval;
    h.window = kvs_ntohs(pkt.tcp->window);
    h.tuple_hash = hash_five_tuple(hash_params(*t_.config), s.ckey);
    s.b.start(env(), h, now);
    inc(KVS_R_PUNT_FIRST_FLIGHT);
    client_segment(idx, m, pkt, now, true);
}

// The checksums of a client segment about to be held (TCP, and IPv4's header): the request is
// read from the held bytes, and a segment the backend's kernel drops for its checksum has its
// range taken from another copy, with other bytes (a Content-Length of its own): the request's
// end would be kvsteer's alone. The NIC's verdict when it gave one, else computed.
bool Worker::segment_checksums_ok(const rte_mbuf *m, const kvs_pkt &pkt) {
    const std::uint64_t l4 = m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
    const std::uint64_t l3 = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
    if (l4 == RTE_MBUF_F_RX_L4_CKSUM_BAD || (pkt.ip4 && l3 == RTE_MBUF_F_RX_IP_CKSUM_BAD))
        return false;
    if (l4 == RTE_MBUF_F_RX_L4_CKSUM_GOOD && (!pkt.ip4 || l3 == RTE_MBUF_F_RX_IP_CKSUM_GOOD))
        return true;
    // The pseudo-header's sum and the TCP header's and payload's: 0xffff when the checksum holds.
    auto holds = [](std::uint32_t phdr, const void *l4, std::size_t len) {
        std::uint32_t sum = phdr + rte_raw_cksum(l4, len);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        return sum == 0xffff;
    };
    if (pkt.ip4) {
        const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(pkt.ip4);
        return rte_raw_cksum(ip, rte_ipv4_hdr_len(ip)) == 0xffff &&
               holds(rte_ipv4_phdr_cksum(ip, 0), pkt.tcp, pkt.l4_len);
    }
    return pkt.ip6 && holds(rte_ipv6_phdr_cksum(reinterpret_cast<const rte_ipv6_hdr *>(pkt.ip6), 0),
                            pkt.tcp, pkt.l4_len);
}

// A client segment with payload or FIN for a flow being bound: the binder holds it or not.
void Worker::client_segment(std::uint32_t idx, rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now,
                            bool checked) {
    Actions out;
    Binder &b = slots_[idx].b;
    if (!checked && !segment_checksums_ok(m, pkt)) {
        inc(KVS_R_DP_DROP_BAD_CHECKSUM);
        rte_pktmbuf_free(m);
        // A new flow holding nothing has no timer: it goes (its retransmission starts it again).
        if (slots_[idx].used && !b.rebinding() && b.phase() == Binder::Phase::Holding &&
            b.flight().size() == 0)
            release(idx, true);
        return;
    }
    const bool source_room = slots_.packets_held_by_source_of(idx) < max_source_mbufs_;
    const FirstFlight::Add r =
        b.segment(env(), client_seg(m, pkt), held_mbufs_ < max_held_mbufs_ && source_room, now, out,
                  source_room ? KVS_R_DP_HOLD_FULL : KVS_R_DP_HOLD_SOURCE_CAP);
    if (r == FirstFlight::Add::Held) {
        ++held_mbufs_;
        slots_.source_packets(idx, 1);
    } else {
        rte_pktmbuf_free(m);  // counted by the binder (duplicate, stale, full, source's share)
    }
    b.flight().take_evicted([this, idx](void *p) {  // gave way to the flight's front (resent)
        rte_pktmbuf_free(static_cast<rte_mbuf *>(p));
        --held_mbufs_;
        slots_.source_packets(idx, -1);
        inc(KVS_R_DP_HOLD_FULL);
    });
    execute(idx, out, now);
    // A new flow whose first segment was not held holds nothing and has no timer: its slot would
    // wait for an eviction. It goes; the client's retransmission starts it again.
    if (r != FirstFlight::Add::Held && slots_[idx].used && !b.rebinding() &&
        b.phase() == Binder::Phase::Holding && b.flight().size() == 0)
        release(idx, true);
}

// ---------------------------------------------------------------------------------------------
// Carrying out the binder's actions

BindEnv Worker::env() {
    bcfg_.max_held = max_held();   // the published config may change it
    scratch_.now_ns = clock_ns();  // the choice's intake gate (choose.h): CLOCK_MONOTONIC
    BindEnv e{bcfg_,          t_, scratch_, stats_, std::span<std::uint8_t>(buf_), clock_ms(),
              sessions_.get()};
    e.pool = pool_ != nullptr;
    return e;
}

void Worker::execute(std::uint32_t idx, const Actions &acts, std::uint64_t now) {
    Slot &s = slots_[idx];
    for (const Action &a : acts) {
        switch (a.kind) {
            case Action::Kind::SynToBackend: {
                // A port towards this backend: the first SYN to a candidate takes one (ports are
                // unique per backend only); a retry reuses it.
                if (!s.snat_port || s.port_backend != s.b.backend()) {
                    if (!take_leg(idx)) {
                        Actions next;
                        s.b.no_port(env(), now, next);
                        execute(idx, next, now);
                        return;  // the flow is reset, or kept on its old leg: nothing else
                    }
                }
                TcpSpec sp = to_backend(s);
                sp.seq = a.seq;
                sp.flags = KVS_TCP_SYN;
                sp.window = 64240;
                sp.mss = s.b.client_mss();
                sp.wscale = s.b.client_wscale();
                sp.sack_perm = s.b.client_sack();
                sp.ts = a.ts;
                sp.tsval = a.tsval;
                send(build_tcp(p_.pool, sp));
                break;
            }
            case Action::Kind::AckToBackend: {
                TcpSpec sp = to_backend(s);
                sp.seq = a.seq;
                sp.ack = a.ack;
                sp.flags = KVS_TCP_ACK;
                sp.window = a.window;
                sp.ts = a.ts;
                sp.tsval = a.tsval;
                sp.tsecr = a.tsecr;
                send(build_tcp(p_.pool, sp));
                break;
            }
            case Action::Kind::RstToBackend: {
                TcpSpec sp = to_backend(s);
                sp.seq = a.seq;
                sp.flags = KVS_TCP_RST;
                send(build_tcp(p_.pool, sp));
                break;
            }
            case Action::Kind::RstToClient: {
                rst_client(s, a.seq, a.ack);
                break;
            }
            case Action::Kind::Connect: {
                Actions next;
                s.b.connect(env(), now, next);
                execute(idx, next, now);
                break;
            }
            case Action::Kind::Install:
                accept_install(idx, now);
                break;
            case Action::Kind::TryPool:
                try_pool(idx, now);
                break;
            case Action::Kind::Flush:
                slots_.bound(idx);
                s.last_seen = now;
                s.linger_until = now + linger_ticks_;
                // dpdk mode: the client's FIN (not past a hole: flush_held frees that one)
                if (s.b.flight().complete_to_fin()) s.fin_mask |= 1;
                flush_held(s);
                break;
            case Action::Kind::Report:
                report(s);
                break;
            case Action::Kind::Arm:
                arm(idx, a.when);
                break;
            case Action::Kind::Release:
                release(idx, true);
                break;
            case Action::Kind::Resume:
                resume(idx, now);
                break;
            case Action::Kind::RstOldLeg: {
                // Moved: the leg it left may serve a later request (a reset otherwise).
                if (pool_ && s.b.phase() == Binder::Phase::Bound && !s.b.old_leg_closed() &&
                    park_old_leg(idx, a.seq, now))
                    break;
                rst_leg(s.prev_c2s, s.ckey.family, a.seq);
                delete_old_leg_entry(s);
                // Its late segments are nobody's (its port goes back once the sweeper sees the
                // entry gone; a pool leg opened on it must get its own SYN-ACK).
                slots_.detach_old_leg(idx);
                // Moved, the client entry was replaced; otherwise the connection is over.
                if (s.b.phase() != Binder::Phase::Bound) bpf_map_delete_elem(t_.flows_fd, &s.ckey);
                break;
            }
        }
    }
}

// A SNAT port towards the slot's backend, and its leg (backend -> SNAT, as the backend's
// segments arrive) keyed to the slot; false when that backend's ports are all taken.
bool Worker::take_leg(std::uint32_t idx) {
    Slot &s = slots_[idx];
    if (!slots_.alloc_port(idx, s.b.backend())) return false;
    const kvs_backend &b = t_.backends[s.b.backend()];
    slots_.key_leg(idx, b.addr, b.port, s.ckey.family);
    return true;
}

// Addresses of a segment the appliance sends to the slot's backend from its SNAT port.
TcpSpec Worker::to_backend(const Slot &s) const {
    const kvs_config &c = *t_.config;
    const kvs_backend &b = t_.backends[s.b.backend()];
    TcpSpec sp{};
    sp.smac = c.appliance_mac;
    sp.dmac = b.mac;
    sp.saddr = s.snat_addr;  // of the flow's family, as the backend chosen (choose_backend)
    sp.daddr = b.addr;
    sp.family = s.ckey.family;
    sp.sport = kvs_htons(s.snat_port);
    sp.dport = b.port;
    return sp;
}

// The backend accepted. Nothing of the flow is sent before its pair is installed (xdp mode), so
// the backend's first reply already finds its flow in XDP: the pair joins this burst's batch,
// and the ACK and the flush follow the install (install_accepted). dpdk mode has nothing to
// install: the flow is bound at once.
void Worker::accept_install(std::uint32_t idx, std::uint64_t now) {
    Slot &s = slots_[idx];
    if (t_.flows_fd < 0) {
        kvs_flow_key k_c2s, k_s2c;
        build_pair(s, clock_ns(), &k_c2s, &k_s2c);
        return installed(idx, true, now);
    }
    if (n_accepted_ == kMaxInstalls) install_accepted(now);
    s.install_id = ++install_seq_;
    accepted_[n_accepted_++] = Accepted{idx, s.install_id};
}

// One bpf_map_update_batch for every pair accepted since the last call, each pair all or
// nothing (install_pairs); then each binder hears whether its pair is in place and acknowledges
// and flushes, or resets both sides. A flow that ended meanwhile (the client reset) is skipped.
void Worker::install_accepted(std::uint64_t now) {
    if (n_accepted_ == 0) return;
    const unsigned n_in = n_accepted_;
    n_accepted_ = 0;
    const std::uint64_t now_ns = clock_ns();
    std::uint32_t idxs[kMaxInstalls];
    unsigned n = 0;
    for (unsigned i = 0; i < n_in; ++i) {
        Slot &s = slots_[accepted_[i].idx];
        if (!s.used || s.install_id != accepted_[i].id) continue;
        s.install_id = 0;
        // The backend leg's entry first: a pair whose second entry fails loses its first again
        // (install_pairs), and on a move the client entry is the connection's live one (marked
        // REBINDING), which resume() needs in place; the backend leg's key is a new one.
        build_pair(s, now_ns, &install_keys_[2 * n + 1], &install_keys_[2 * n]);
        install_vals_[2 * n] = s.s2c;
        install_vals_[2 * n + 1] = s.c2s;
        idxs[n++] = accepted_[i].idx;
    }
    bool ok[kMaxInstalls];
    if (n > 0)
        stats_[KVS_R_DP_FLOW_INSTALL_BATCH] +=
            install_pairs(t_.flows_fd, install_keys_.data(), install_vals_.data(), n, ok);
    for (unsigned i = 0; i < n; ++i) installed(idxs[i], ok[i], now);
}

// The flow pair of a slot whose backend accepted: into s.c2s/s.s2c, keys into k_c2s/k_s2c.
void Worker::build_pair(Slot &s, std::uint64_t now_ns, kvs_flow_key *k_c2s, kvs_flow_key *k_s2c) {
    const kvs_config &c = *t_.config;
    const kvs_backend &b = t_.backends[s.b.backend()];
    kvs_flowpair_params fp{};
    std::memcpy(fp.client_addr, s.ckey.saddr, 16);
    std::memcpy(fp.vip_addr, s.ckey.daddr, 16);
    std::memcpy(fp.snat_addr, s.snat_addr, 16);
    std::memcpy(fp.backend_addr, b.addr, 16);
    fp.client_port = s.ckey.sport;
    fp.vip_port = s.ckey.dport;
    fp.snat_port = kvs_htons(s.snat_port);
    fp.backend_port = b.port;
    fp.family = s.ckey.family;
    fp.client_wscale = s.b.client_wscale();
    fp.synack_wscale = s.b.rebinding() ? synack_wscale_of(s.prev_c2s, s.prev_s2c) : c.syn_wscale;
    fp.backend_wscale = s.b.backend_wscale();
    fp.ts = s.b.both_ts();
    fp.cookie = s.b.cookie_isn();
    fp.backend_isn = s.b.backend_isn();
    fp.synack_tsval = s.b.ts_ours();
    fp.backend_tsval = s.b.backend_tsval();
    fp.client_ts_delta = s.b.ts_delta();
    fp.leg_pooled = s.b.pooled();
    fp.leg_wscale = s.b.leg_wscale();
    fp.leg_seq_delta = s.b.leg_seq_delta();
    std::memcpy(fp.appliance_mac, c.appliance_mac, 6);
    std::memcpy(fp.client_mac, s.client_mac, 6);
    std::memcpy(fp.backend_mac, b.mac, 6);
    fp.backend_id = s.b.backend();
    fp.worker = p_.index;
    fp.now_ns = now_ns;
    kvs_flowpair_build(&fp, k_c2s, &s.c2s, k_s2c, &s.s2c);
    // Where XDP's request tracking starts: after the held bytes (flushed from here, not through
    // XDP), one request owed its response; and the client's handshake for a later move.
    s.c2s.next_seq = client_next_after_flight(s.b);
    s.c2s.msgs = 1;
    track_request(s);
    // A client FIN held in the flight reaches the backend from here, not through XDP: the entry
    // records it as XDP would have (the flow is closed once the backend's FIN follows). One past
    // a hole is not sent (flush_held): it comes again through XDP.
    if (s.b.flight().complete_to_fin()) s.c2s.state |= KVS_FLOW_FIN_IN;
    s.c2s.client_mss = s.b.client_mss();
    s.c2s.client_wscale = s.b.client_wscale();
    s.c2s.client_sack = s.b.client_sack();
    s.c2s.client_ts = s.b.client_ts();
    s.c2s.leg_mss = s.b.leg_mss();
    s.c2s.leg_wscale = s.b.pooled() ? s.b.leg_wscale() : s.b.client_wscale();
    s.c2s.leg_backend_wscale = s.b.backend_wscale();
    s.c2s.leg_ts = s.b.both_ts();
    s.s2c.last_ack = s.b.isn() + 1 + s.b.leg_seq_delta();  // in the backend leg's space
    // The client acknowledged every byte it was sent (the SYN-ACK; at a move, the boundary's
    // check): XDP's RST check reads it (kvs_xdp_rst_acked). Left 0, a signed comparison kept it
    // there for half the connections' sequence spaces.
    s.c2s.last_ack = s.b.cookie_isn() + 1;
}

// The window scale a connection's SYN-ACK told the client, from the entries of its previous
// backend leg (kvs_flowpair_build: the backend's windows go to the client shifted by the
// backend's scale less ours): a moved request keeps it, whatever syn-wscale says now (kvsteerd
// restarted with another value gave every later move the wrong window scaling).
std::uint8_t Worker::synack_wscale_of(const kvs_flow &c2s, const kvs_flow &s2c) {
    const unsigned bs = c2s.leg_backend_wscale == KVS_WSCALE_NONE
                            ? 0
                            : std::min<unsigned>(c2s.leg_backend_wscale, 14);
    const int os = static_cast<int>(bs) + s2c.win_shr - s2c.win_shl;
    return static_cast<std::uint8_t>(std::clamp(os, 0, 14));
}

// After the install: the binder acknowledges the backend and flushes, or resets both sides.
void Worker::installed(std::uint32_t idx, bool ok, std::uint64_t now) {
    Slot &s = slots_[idx];
    if (ok && t_.flows_fd >= 0) slots_.mark_installed(s.port_backend, s.snat_port);
    if (ok && p_.ports) {  // the port holds the request's session count from now on
        p_.ports->hold_session(s.port_backend, s.snat_port, p_.index, s.b.session_slot());
        s.b.hand_over_session();
    }
    if (ok) {  // where this binding's time went, in ns summed over the worker's bindings
        auto ns = [this](std::uint64_t from, std::uint64_t to) {
            return to > from ? static_cast<std::uint64_t>(static_cast<double>(to - from) * 1e9 /
                                                          static_cast<double>(hz_))
                             : 0;
        };
        ++stats_[KVS_R_DP_BIND_TIMED];
        stats_[KVS_R_DP_BIND_HOLD_NS] += ns(s.b.created(), s.b.first_syn_at());
        stats_[KVS_R_DP_BIND_HANDSHAKE_NS] += ns(s.b.first_syn_at(), s.b.synack_at());
        // The poll's clock would read 0 here for an install in the SYN-ACK's own poll.
        stats_[KVS_R_DP_BIND_INSTALL_NS] += ns(s.b.synack_at(), rte_rdtsc());
    }
    Actions out;
    s.b.installed(env(), ok, out);
    execute(idx, out, now);
}

// Where the request just bound ends in the client's sequence space, for XDP's tracking: the
// next request starts there (the client->server entry's resp_end, END set), and nowhere else.
// Unknown (a chunked body whose last chunk is not in the flight, not HTTP): no later request of
// the connection is re-bound.
void Worker::track_request(Slot &s) {
    // Not from bytes two copies of which differed: the backend may have parsed the other copy
    // (one with a bad checksum is dropped there), and re-bound at an end it does not share, a
    // leg parked for reuse could hold a half-read request for the next client.
    if (const std::uint32_t end = s.b.request_end(); end && !s.b.flight().conflicting()) {
        s.c2s.resp_end = s.b.isn() + 1 + end;
        s.c2s.resp = KVS_RESP_END;
        return;
    }
    s.c2s.resp_end = s.b.isn() + 1;
    s.c2s.resp = 0;
    if (t_.config->flags & KVS_CFG_PER_REQUEST) inc(KVS_R_REQ_END_UNKNOWN);
}

// A request at a boundary stays on its backend: the flow's entries as they were lose their
// REBINDING mark (whole values written back; XDP left them alone while marked) and track from
// the end of the held bytes, which are then flushed through them.
void Worker::resume(std::uint32_t idx, std::uint64_t now) {
    Slot &s = slots_[idx];
    slots_.free_port(idx);  // a move that was started and given up
    const std::uint32_t next = client_next_after_flight(s.b);
    s.c2s = s.prev_c2s;
    s.s2c = s.prev_s2c;
    s.bkey = s.prev_skey;
    s.c2s.state = static_cast<std::uint8_t>(s.c2s.state & ~KVS_FLOW_REBINDING);
    s.s2c.state = static_cast<std::uint8_t>(s.s2c.state & ~KVS_FLOW_REBINDING);
    s.c2s.next_seq = next;
    s.c2s.msgs = static_cast<std::uint16_t>(s.c2s.msgs + 1);
    track_request(s);
    if (s.b.flight().complete_to_fin()) s.c2s.state |= KVS_FLOW_FIN_IN;  // as build_pair does
    if (p_.ports) {  // the request stays on the previous leg: that port holds its session count
        p_.ports->hold_session(s.prev_c2s.backend_id, kvs_ntohs(s.prev_c2s.new_sport), p_.index,
                               s.b.session_slot());
        s.b.hand_over_session();
    }
    slots_.bound(idx);
    s.last_seen = now;
    s.linger_until = now + linger_ticks_;
    // The entries unmarked before the request goes (as a new flow's install precedes its
    // flush): sent first, a fast response was punted while both were still REBINDING and
    // forwarded from the worker's copy, which XDP never tracks, so the next boundary raced
    // (dp_request_boundary_raced) and the connection's steering stopped. tx() flushes as soon as
    // 64 frames wait, and a flight holds up to 32.
    if (bpf_map_update_elem(t_.flows_fd, &s.prev_skey, &s.s2c, BPF_EXIST) != 0 ||
        bpf_map_update_elem(t_.flows_fd, &s.ckey, &s.c2s, BPF_EXIST) != 0) {
        // An entry went meanwhile (the LRU evicted it): the connection cannot carry the request
        // and its response. Sent anyway, the client waited on a flow half gone (its segments
        // dropped as cookie failures, or punted with the entry still marked) until its own
        // timeout. Both sides are reset and the entries removed; the request is not sent.
        inc(KVS_R_DP_REQ_NO_FLOW);
        const std::uint32_t client_next = s.b.isn() + 1;  // the boundary: the old leg's next byte
        rst_client(s, s.prev_s2c.next_seq + s.prev_s2c.seq_delta, next);  // its next byte from us
        rst_leg(s.prev_c2s, s.ckey.family, client_next);
        delete_old_leg_entry(s);
        bpf_map_delete_elem(t_.flows_fd, &s.ckey);
        count_close(s.prev_c2s);
        held_mbufs_ -= s.b.flight().size();  // as flush_held: the source's count went when bound
        s.b.flight().drain([](void *h) { rte_pktmbuf_free(static_cast<rte_mbuf *>(h)); });
        return;
    }
    flush_held(s);
}

// Deletes the previous leg's entry, only while it is the one the boundary found (created_ns):
// evicted during the hold, its key may hold a later flow's entry on the same 4-tuple.
void Worker::delete_old_leg_entry(const Slot &s) {
    kvs_flow e{};
    if (same_installation(t_.flows_fd, s.prev_skey, s.prev_s2c.created_ns, &e))
        bpf_map_delete_elem(t_.flows_fd, &s.prev_skey);
}

// A RST|ACK to a slot's client (seq, ack in the client's sequence space).
void Worker::rst_client(const Slot &s, std::uint32_t seq, std::uint32_t ack) {
    TcpSpec sp{};
    sp.smac = t_.config->appliance_mac;
    sp.dmac = s.client_mac;
    sp.saddr = s.ckey.daddr;
    sp.daddr = s.ckey.saddr;
    sp.family = s.ckey.family;
    sp.sport = s.ckey.dport;
    sp.dport = s.ckey.sport;
    sp.seq = seq;
    sp.ack = ack;
    sp.flags = KVS_TCP_RST | KVS_TCP_ACK;
    sp.window = 0;
    send(build_tcp(p_.pool, sp));
}

// A RST on a backend leg, from its client entry's rewrite: `client_seq` (the client's sequence
// space) moved into the leg's.
void Worker::rst_leg(const kvs_flow &c2s, std::uint8_t family, std::uint32_t client_seq) {
    TcpSpec sp{};
    sp.smac = c2s.new_smac;
    sp.dmac = c2s.new_dmac;
    sp.saddr = c2s.new_saddr;
    sp.daddr = c2s.new_daddr;
    sp.family = family;
    sp.sport = c2s.new_sport;
    sp.dport = c2s.new_dport;
    sp.seq = client_seq + c2s.seq_delta;  // into the leg's space (a pooled leg's)
    sp.flags = KVS_TCP_RST;
    send(build_tcp(p_.pool, sp));
}

// A bound connection ended by the worker (its entries removed, no FIN or RST seen by XDP): its
// backend's in-flight count goes back, unless XDP counted its close already.
void Worker::count_close(const kvs_flow &c2s) {
    if (!t_.load || c2s.backend_id >= KVS_MAX_BACKENDS || (c2s.state & KVS_FLOW_CLOSED)) return;
    add_close(c2s.backend_id);
    if (c2s.state & KVS_FLOW_IDLE)
        __atomic_fetch_add(&t_.load[c2s.backend_id].idle_ends, 1, __ATOMIC_RELAXED);
}

// Sends what the flight held through the new flow, in sequence order, up to its first hole: a
// segment past one is freed and counted (the client sends it again). Sent on, the backend kept it
// out of order while XDP's tracking started at the hole (build_pair): the retransmission filling
// the hole was taken for a request boundary and could move to another backend, and the old leg,
// parked for reuse, still held the bytes, which Linux then merged into the next client's stream.
void Worker::flush_held(Slot &s) {
    held_mbufs_ -= s.b.flight().size();  // its source's count: given back when bound (list_del)
    auto past_hole = [&](void *h) {
        inc(KVS_R_DP_HELD_PAST_HOLE);
        rte_pktmbuf_free(static_cast<rte_mbuf *>(h));
    };
    s.b.flight().drain_to_hole(
        [&](void *h) {
            auto *m = static_cast<rte_mbuf *>(h);
            kvs_pkt pkt;
            if (parse_mbuf(m, &pkt) != KVS_PARSE_OK) {  // parsed once already: cannot happen
                inc(KVS_R_DP_HELD_UNPARSABLE);
                rte_pktmbuf_free(m);
                return;
            }
            rewrite_packet(&pkt, rte_pktmbuf_mtod(m, std::uint8_t *) + rte_pktmbuf_data_len(m),
                           s.c2s);
            tx(m);
        },
        past_hole);
}

// Sends a segment the worker built; a null one (the mempool ran dry) is counted, never lost
// silently. Returns whether it was queued.
bool Worker::send(rte_mbuf *m) {
    if (KVS_UNLIKELY(!m)) {
        inc(KVS_R_DP_NO_MBUF);
        return false;
    }
    tx(m);
    return true;
}

void Worker::report(const Slot &s) {
    if (!t_.ring_ctl || !t_.ring) return;
    kvs_ring_ctl &ctl = t_.ring_ctl[p_.index];
    std::uint64_t tail = __atomic_load_n(&ctl.tail, __ATOMIC_ACQUIRE);
    if (ring_head_ - tail >= KVS_BIND_RING_SLOTS) {
        __atomic_store_n(&ctl.dropped, ctl.dropped + 1, __ATOMIC_RELAXED);
        inc(KVS_R_DP_RING_DROPPED);
        return;
    }
    kvs_bind_report &r = t_.ring[static_cast<std::size_t>(p_.index) * KVS_BIND_RING_SLOTS +
                                 (ring_head_ & (KVS_BIND_RING_SLOTS - 1))];
    const PrefixHashes &h = s.b.report_hashes();
    r.ts_ns = clock_ns();
    r.prefix_hash = h.prefix;
    std::memcpy(r.block_hash, h.blocks.data(), sizeof(r.block_hash));
    r.prompt_bytes = s.b.prompt_bytes();
    r.n_blocks = static_cast<std::uint16_t>(h.n_blocks);
    r.backend_id = s.b.backend();
    r.key_kind = static_cast<std::uint8_t>(s.b.key_kind());
    r.via = s.b.via();
    r.worker = p_.index;
    r.pad = 0;
    ++ring_head_;
    __atomic_store_n(&ctl.head, ring_head_, __ATOMIC_RELEASE);
}

// ---------------------------------------------------------------------------------------------
// Backend side

void Worker::on_backend(rte_mbuf *m, kvs_pkt &pkt, const kvs_flow_key &key, std::uint64_t now) {
    const std::int32_t found = slots_.by_leg(key);
    if (found < 0 && pool_ && pool_->owns(key)) return pool_segment(m, pkt, key, now);
    if (found < 0) {
        inc(KVS_R_PUNT_BACKEND_OTHER);
        rte_pktmbuf_free(m);
        return;
    }
    const auto idx = static_cast<std::uint32_t>(found);
    Slot &s = slots_[idx];
    if (s.rebind && s.b.binding() && s.old_keyed &&
        std::memcmp(&key, &s.prev_skey, sizeof key) == 0) {
        // The previous leg while its connection's next request is held: a FIN or RST (the
        // backend closing an idle connection as the request crossed it) makes the request move
        // to a new leg; nothing of it reaches the client, whose connection goes on.
        // Bytes past the response it completed (a 408 written before closing, say) end it too:
        // that leg is not one to keep for another request.
        const std::uint32_t end = kvs_ntohl(pkt.tcp->seq) + pkt.payload_len;
        if ((pkt.tcp->flags & (KVS_TCP_FIN | KVS_TCP_RST)) ||
            (pkt.payload_len && static_cast<std::int32_t>(end - s.prev_s2c.next_seq) > 0))
            s.b.old_leg_closing();
        inc(KVS_R_PUNT_BACKEND_OTHER);
        rte_pktmbuf_free(m);
        return;
    }
    // The slot's current leg, SNAT port included (a move to a new leg on the same backend
    // leaves the old leg's segments to nobody).
    const bool from_backend = key.family == s.bkey.family &&
                              std::memcmp(key.saddr, s.bkey.saddr, 16) == 0 &&
                              key.sport == s.bkey.sport && key.dport == s.bkey.dport;
    if (!from_backend) {  // a late answer from a backend this flow already gave up on
        inc(KVS_R_PUNT_BACKEND_OTHER);
        rte_pktmbuf_free(m);
        return;
    }
    const std::uint8_t fl = pkt.tcp->flags;
    const bool synack = (fl & (KVS_TCP_SYN | KVS_TCP_ACK)) == (KVS_TCP_SYN | KVS_TCP_ACK);
    if (s.b.phase() == Binder::Phase::Bound && !synack) {
        // xdp mode: the backend's FIN or RST that XDP tagged while the entries were marked, come
        // after the request was resumed on this leg (through another worker's inbox, a poll
        // later): dropped as on the client side (on_client), not sent on from this copy, where
        // XDP never sees the close. It comes again through XDP.
        if (!owns_bound_flows() && (fl & (KVS_TCP_FIN | KVS_TCP_RST))) {
            inc(KVS_R_DP_CLOSE_LEFT_TO_XDP);
            rte_pktmbuf_free(m);
            return;
        }
        return forward(s, m, pkt, false, now);
    }
    Actions out;
    s.b.backend_segment(env(), backend_seg(pkt), now, out);
    rte_pktmbuf_free(m);
    execute(idx, out, now);
}

// A backend segment to a pooled leg's port (its SYN-ACK, an idle close): the pool's.
void Worker::pool_segment(rte_mbuf *m, const kvs_pkt &pkt, const kvs_flow_key &key,
                          std::uint64_t now) {
    pool_->segment(key, backend_seg(pkt), now, *pool_host_);
    rte_pktmbuf_free(m);  // counted by the pool
}

// The binder chose a backend: a ready pooled leg to it, if the client's options fit the pool's,
// becomes the flow's backend leg (its port the slot's); otherwise the binder sends a SYN.
void Worker::try_pool(std::uint32_t idx, std::uint64_t now) {
    Slot &s = slots_[idx];
    Actions next;
    PoolLeg leg;
    if (!pool_->fits(s.ckey.family, s.b.client_mss(), s.b.client_wscale(), s.b.client_sack(),
                     s.b.client_ts())) {
        inc(KVS_R_DP_POOL_OPTIONS_MISMATCH);
        s.b.not_pooled(env(), now, next);
    } else if (!pool_->draw(t_, s.b.backend(), s.b.client_mss(), now, leg)) {
        inc(KVS_R_DP_POOL_EMPTY);
        s.b.not_pooled(env(), now, next);
    } else {
        inc(KVS_R_DP_POOL_DRAWN);
        slots_.adopt_port(idx, leg.backend, leg.port);
        slots_.key_leg(idx, leg.addr, leg.bport, leg.family);
        LegHello h;
        h.isn = leg.isn;
        h.backend_isn = leg.backend_isn;
        h.backend_tsval = leg.backend_tsval;
        h.backend_wscale = leg.backend_wscale;
        h.wscale = leg.wscale;
        h.mss = leg.mss;
        h.ts = leg.ts;
        h.ts_floor = leg.ts_floor;
        h.reused = leg.reused;
        s.b.pooled(env(), h, now, next);
    }
    execute(idx, next, now);
}

// A request moved to another backend; the leg it left was at a quiescent point when XDP handed
// the request over (every byte either side sent acknowledged, no FIN or RST, no response owed),
// and the backend has not closed it since: the pool keeps it, ready, for a later request to that
// backend, as if its handshake had just ended (our next byte one past isn, the backend's one past
// backend_isn). Only legs of the pool's option profile (timestamps, SACK, window scaling), on a
// port of this worker's range. The client's acknowledgment of the last response bytes was in
// the held boundary segment, which the leg never carried: it is sent on the leg now.
bool Worker::park_old_leg(std::uint32_t idx, std::uint32_t client_next, std::uint64_t now) {
    Slot &s = slots_[idx];
    const kvs_flow &o = s.prev_c2s, &os = s.prev_s2c;
    const std::uint16_t port = kvs_ntohs(o.new_sport);
    const auto refuse = [this] {
        inc(KVS_R_DP_POOL_PARK_REFUSED);
        return false;
    };
    // The backend's idle timer runs from the leg's last segment, not from now: the leg is as
    // old as that (a leg about to be closed by the backend is not kept).
    const std::uint64_t now_ns = clock_ns();
    const std::uint64_t last_ns = std::max(o.last_seen_ns, os.last_seen_ns);
    const std::uint64_t idle = now_ns > last_ns ? to_ticks(now_ns - last_ns, 1000000000, hz_) : 0;
    // Only a leg the slot alone reaches (attach_old_leg): no other slot may take its segments.
    if (!o.leg_ts || !o.client_sack || o.leg_wscale == KVS_WSCALE_NONE || o.leg_mss == 0 ||
        ((o.state | os.state) & (KVS_FLOW_FIN_IN | KVS_FLOW_RST | KVS_FLOW_CLOSED)) ||
        !s.old_keyed || idle >= pool_->config().max_age || idle > now ||
        o.backend_id >= KVS_MAX_BACKENDS || !slots_.reclaim_port(o.backend_id, port, s.prev_port))
        return refuse();
    PoolLeg l;
    l.backend = o.backend_id;
    l.port = port;
    std::memcpy(l.addr, o.new_daddr, sizeof l.addr);
    l.bport = o.new_dport;
    l.family = s.ckey.family;
    l.backend_wscale = o.leg_backend_wscale;
    l.wscale = o.leg_wscale;
    l.mss = o.leg_mss;
    l.ts = true;
    l.isn = client_next + o.seq_delta - 1;
    l.backend_isn = os.next_seq - 1;
    l.backend_tsval = os.ts_last - os.tsval_delta;  // the newest the client was sent
    const std::uint32_t clock = clock_ms();
    l.ts_floor = static_cast<std::int32_t>(clock - s.prev_tsval) > 0 ? clock : s.prev_tsval;
    if (!pool_->park(t_, l, now - idle)) {
        slots_.mark_installed(o.backend_id, port);  // the sweeper frees it once the leg is reset
        return refuse();
    }
    // The client's window, moved from its scale to the one the leg's SYN offered.
    const std::uint8_t cs = o.client_wscale > 14 ? 14 : o.client_wscale;
    const std::uint8_t ls = l.backend_wscale == KVS_WSCALE_NONE ? 0 : l.wscale > 14 ? 14 : l.wscale;
    const std::uint64_t bytes = std::uint64_t{s.b.client_window()} << cs;
    PoolSend ack{PoolSend::Kind::Ack};
    ack.seq = l.isn + 1;
    ack.ack = l.backend_isn + 1;
    ack.window = static_cast<std::uint16_t>(std::clamp<std::uint64_t>(bytes >> ls, 1, 0xffff));
    ack.ts = true;
    ack.tsval = l.ts_floor;
    ack.tsecr = l.backend_tsval;
    pool_host_->send(l, ack);
    delete_old_leg_entry(s);  // its segments go to the pool from now on
    slots_.detach_old_leg(idx);
    inc(KVS_R_DP_POOL_PARKED);
    return true;
}

// A bound flow's packet that reached us (dpdk mode always; xdp mode only while the install
// raced packets already punted): same rewrite as XDP, same close accounting.
void Worker::forward(Slot &s, rte_mbuf *m, kvs_pkt &pkt, bool c2s, std::uint64_t now) {
    kvs_flow &f = c2s ? s.c2s : s.s2c;
    const std::uint8_t fl = pkt.tcp->flags;
    s.last_seen = now;
    if (owns_bound_flows()) {
        // dpdk mode: the slot is the flow's only record, and both directions are at hand. A FIN
        // or RST closes it only where its endpoint takes it (XDP's rule, kvs_close_plausible):
        // any of them did, and a blind RST (the client's address and port guessed) made a live
        // flow's slot and SNAT port free after the linger, or at once for a SYN on the tuple;
        // the response was lost and the backend's load one lower. Each side's next byte (for
        // those checks and the resets of a reclaimed flow) moves by bytes or a FIN (with ACK)
        // that start at it, or that overlap it or lie past a hole with an acknowledgment the
        // receiver could take (between this side's last one and the other side's next byte);
        // never by a SYN or RST. The acknowledgments kept are of bytes sent (tighter than XDP,
        // which has the reverse entry only on its rare paths).
        const kvs_flow &rev = c2s ? s.s2c : s.c2s;
        const std::uint32_t seq = kvs_ntohl(pkt.tcp->seq), ack = kvs_ntohl(pkt.tcp->ack_seq);
        const std::uint32_t rev_next = rev.next_seq + rev.seq_delta;  // as this side counts it
        const bool has_ack = (fl & KVS_TCP_ACK) != 0;
        const bool ack_sent = has_ack && static_cast<std::int32_t>(rev_next - ack) >= 0;
        // A FIN without ACK: discarded by an established endpoint; it closes nothing and moves
        // nothing (XDP: fin_without_ack).
        const bool fin = (fl & KVS_TCP_FIN) && has_ack;
        if ((fl & KVS_TCP_FIN) && !has_ack) inc(KVS_R_FIN_WITHOUT_ACK);
        bool closes = true;
        if (fl & KVS_TCP_RST)
            closes = seq == f.next_seq || seq + f.seq_delta == rev.last_ack;
        else if (fin)
            closes = f.next_seq - seq <= pkt.payload_len + 1u && rev_next - ack <= KVS_SEQ_SLACK;
        const std::uint32_t end = seq + pkt.payload_len + (fin ? 1 : 0);
        // At the bytes seen without a look; overlapping them or past a hole only with an
        // acknowledgment the receiver could take (a sweep of forged segments across next_seq
        // dragged it along to an end of the attacker's choosing).
        if (!(fl & (KVS_TCP_RST | KVS_TCP_SYN)) &&
            static_cast<std::int32_t>(end - f.next_seq) > 0 && end - f.next_seq <= KVS_SEQ_SLACK &&
            (seq == f.next_seq || (ack_sent && static_cast<std::int32_t>(ack - f.last_ack) >= 0)))
            f.next_seq = end;
        if (ack_sent && !(fl & KVS_TCP_RST) && static_cast<std::int32_t>(ack - f.last_ack) > 0)
            f.last_ack = ack;
        if (!s.closed && ((fl & KVS_TCP_RST) || fin)) {
            if (!closes) {
                inc(KVS_R_CLOSE_OUT_OF_WINDOW);  // sent on: its endpoint judges it
            } else {
                if (fl & KVS_TCP_RST)
                    s.fin_mask = 3;
                else
                    s.fin_mask |= c2s ? 1 : 2;
                if (s.fin_mask == 3) {
                    s.closed = 1;
                    inc(KVS_R_FLOW_CLOSED);
                    add_close(s.b.backend());
                }
            }
        }
    }
    rewrite_packet(&pkt, rte_pktmbuf_mtod(m, std::uint8_t *) + rte_pktmbuf_data_len(m), f);
    inc(c2s ? KVS_R_TX_FWD_C2S : KVS_R_TX_FWD_S2C);
    tx(m);
}

// dpdk mode: an ICMP/ICMPv6 error about a packet a bound flow sent goes on to the host on the
// other leg, rewritten as XDP does it in xdp mode (icmp.h); anything else is counted and freed.
void Worker::on_icmp(rte_mbuf *m, kvs_pkt &pkt) {
    auto *end = rte_pktmbuf_mtod(m, std::uint8_t *) + rte_pktmbuf_data_len(m);
    kvs_icmp_err e{};
    kvs_flow_key k;
    const int st = kvs_icmp_parse(end, &pkt, &e);
    unsigned reason = st == KVS_ICMP_BAD_QUOTE ? KVS_R_PASS_ICMP_BAD_QUOTE : KVS_R_PASS_ICMP;
    if (st == KVS_ICMP_OK) {
        reason = KVS_R_PASS_ICMP_NO_FLOW;
        // F answers the quoted packet, R (the slot's other entry) produced it: F is the slot's
        // client entry when the key is its client tuple, its backend entry when it is the
        // backend leg's tuple to our SNAT port.
        const kvs_flow *f = nullptr, *r = nullptr;
        if (kvs_icmp_flow_key(end, &pkt, &e, &k) == 0) {
            std::int32_t i = slots_.find(k);
            if (i >= 0 && slots_[static_cast<std::uint32_t>(i)].b.phase() == Binder::Phase::Bound) {
                f = &slots_[static_cast<std::uint32_t>(i)].c2s;
                r = &slots_[static_cast<std::uint32_t>(i)].s2c;
            } else if ((i = slots_.by_leg(k)) >= 0) {
                const Slot &s = slots_[static_cast<std::uint32_t>(i)];
                if (s.b.phase() == Binder::Phase::Bound && !std::memcmp(&s.bkey, &k, sizeof k)) {
                    f = &s.s2c;
                    r = &s.c2s;
                }
            }
        }
        // A client's path-MTU error below the floor (0 included) is not relayed, as in XDP: the
        // backend would apply it to the SNAT address every client shares.
        if (f && f->dir == KVS_DIR_C2S && e.icmp &&
            reinterpret_cast<const std::uint8_t *>(e.icmp + 1) <= end &&
            kvs_icmp_below_relay_floor(e.icmp, pkt.ip6 != nullptr)) {
            inc(KVS_R_DROP_ICMP_MTU_BELOW_FLOOR);
            rte_pktmbuf_free(m);
            return;
        }
        if (f && kvs_icmp_rewrite(end, &pkt, &e, f, r->seq_delta) == 0) {
            inc(f->dir == KVS_DIR_S2C ? KVS_R_ICMP_FWD_TO_CLIENT : KVS_R_ICMP_FWD_TO_BACKEND);
            return tx(m);
        }
    }
    inc(reason);
    rte_pktmbuf_free(m);
}

void Worker::on_arp(rte_mbuf *m) {
    switch (answer_arp(m, *t_.config)) {
        case ArpVerdict::Answered:
            tx(m);
            return;
        case ArpVerdict::NotArp:
            inc(KVS_R_PASS_NOT_IP);
            break;
        case ArpVerdict::NotOurs:
            inc(KVS_R_DP_ARP_NOT_OURS);
            break;
    }
    rte_pktmbuf_free(m);
}

// ---------------------------------------------------------------------------------------------
// Timers and slot bookkeeping

// Timers cost O(expired): each binding slot has at most one live entry in a min-heap of due
// times (re-arming leaves the old entry stale; it is skipped when it comes up).
void Worker::arm(std::uint32_t idx, std::uint64_t when) {
    Slot &s = slots_[idx];
    s.timer_id = ++timer_seq_;
    timer_heap_.push_back(Timer{when, idx, s.timer_id});
    std::push_heap(timer_heap_.begin(), timer_heap_.end(), Timer::later);
}

void Worker::timers(std::uint64_t now) {
    while (!timer_heap_.empty() && timer_heap_.front().when <= now) {
        std::pop_heap(timer_heap_.begin(), timer_heap_.end(), Timer::later);
        const Timer e = timer_heap_.back();
        timer_heap_.pop_back();
        Slot &s = slots_[e.idx];
        if (!s.used || s.timer_id != e.id || !s.b.binding()) continue;  // stale
        Actions out;
        s.b.timer(env(), now, out);
        execute(e.idx, out, now);
    }
}

void Worker::sweep_bound(std::uint64_t now) {
    for (unsigned k = 0; k < 64 && slots_.used() > slots_.binding(); ++k) {
        const std::uint32_t i = slots_.next_cursor();
        Slot &s = slots_[i];
        if (!s.used || s.b.phase() != Binder::Phase::Bound) continue;
        if (!owns_bound_flows()) {
            if (now >= s.linger_until) release(i, false);  // XDP has the flow; the sweeper ends it
        } else if ((s.closed && now - s.last_seen >= closed_ticks_) ||
                   now - s.last_seen >= flow_idle_ticks_) {
            if (!s.closed) {
                // Expired idle, never seen closing (a client gone, a lost FIN): its backend's
                // in-flight count (binds - closes) goes back, as the xdp-mode sweeper does it.
                inc(KVS_R_DP_FLOW_IDLE_EXPIRED);
                add_close(s.b.backend());
            }
            release(i, true);
        }
    }
}

// Every slot is taken: a bound flow's makes room for a new flow rather than the new flow being
// dropped. xdp mode: a bound flow's slot only lingers (--local-linger-ms) for punts that raced
// its install (XDP owns the flow); the oldest-visited lingering one goes (at thousands of
// connections/s the lingering slots alone would fill the table). dpdk mode: established flows
// keep their slots; of up to 64 visited, a closed one, else the one idle longest if idle at
// least kReclaimIdleMs, goes, both its sides reset (before, idle connections held the table
// until their --flow-idle-timeout-s, 300 s, and every new flow was dropped dp_hold_full).
bool Worker::reclaim_bound(std::uint64_t now) {
    if (slots_.used() <= slots_.binding()) return false;
    if (owns_bound_flows()) {
        std::int32_t victim = -1;
        for (std::uint32_t k = 0; k < std::min<std::uint32_t>(64, slots_.capacity()); ++k) {
            const std::uint32_t i = slots_.next_cursor();
            const Slot &s = slots_[i];
            if (!s.used || s.b.phase() != Binder::Phase::Bound) continue;
            if (s.closed) {
                victim = static_cast<std::int32_t>(i);
                break;
            }
            if (now - s.last_seen >= reclaim_idle_ticks_ &&
                (victim < 0 || s.last_seen < slots_[static_cast<std::uint32_t>(victim)].last_seen))
                victim = static_cast<std::int32_t>(i);
        }
        if (victim < 0) return false;
        const auto v = static_cast<std::uint32_t>(victim);
        const Slot &s = slots_[v];
        if (!s.closed) {
            rst_client(s, s.s2c.next_seq + s.s2c.seq_delta, s.c2s.next_seq);
            rst_leg(s.c2s, s.ckey.family, s.c2s.next_seq);
            add_close(s.b.backend());
        }
        inc(KVS_R_DP_FLOW_RECLAIMED_IDLE);
        release(v, true);
        return true;
    }
    for (std::uint32_t k = 0; k < slots_.capacity(); ++k) {
        const std::uint32_t i = slots_.next_cursor();
        if (slots_[i].used && slots_[i].b.phase() == Binder::Phase::Bound) {
            release(i, false);
            return true;
        }
    }
    return false;
}

// Frees a slot and whatever its flight still holds.
void Worker::release(std::uint32_t idx, bool free_port) {
    Slot &s = slots_[idx];
    if (!s.used) return;
    held_mbufs_ -= s.b.flight().size();
    slots_.source_packets(idx, -static_cast<std::int32_t>(s.b.flight().size()));
    s.b.flight().drain([](void *m) { rte_pktmbuf_free(static_cast<rte_mbuf *>(m)); });
    s.b.clear_pending(scratch_);  // chosen but never counted in its backend's binds
    if (sessions_) sessions_->release(s.b.session_slot());  // never handed to a port
    s.b.hand_over_session();
    slots_.release(idx, free_port);
}

// Full: the oldest holding slot whose request head is still incomplete after a silent gap (the
// slowloris shape) makes room; a client that sent a complete head is never evicted for another.
// A flight waiting for a retransmission (bytes beyond a hole) goes only when no slow one is
// found, and silently (Binder::evict).
bool Worker::evict_stalled(std::uint64_t now) {
    const BindEnv e = env();
    unsigned looked = 0;
    std::int32_t victim = -1, fallback = -1;
    for (std::int32_t i = slots_.oldest_binding(); i >= 0 && looked < 64;
         i = slots_.next_binding(static_cast<std::uint32_t>(i)), ++looked) {
        Slot &s = slots_[static_cast<std::uint32_t>(i)];
        if (!s.b.evictable(e, now)) continue;
        if (s.b.waits_for_retransmission()) {
            if (fallback < 0) fallback = i;
            continue;
        }
        victim = i;
        break;
    }
    if (victim < 0) victim = fallback;
    if (victim < 0) return false;
    Actions out;
    const auto v = static_cast<std::uint32_t>(victim);
    slots_[v].b.evict(e, out);
    execute(v, out, now);
    // A moving request's slot is not freed: its request goes on on its backend (resumed, its
    // held packets sent), the slot lingering; a lingering one makes the room then.
    return !slots_[v].used || reclaim_bound(now);
}

}  // namespace kvsteer::dp
