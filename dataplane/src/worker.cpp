#include "worker.h"

#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_ring.h>
#include <spdlog/spdlog.h>

#include "kvsteer/core/flight_key.h"
#include "kvsteer/core/locator.h"
#include "kvsteer/flowpair.h"
#include "arp.h"
#include "packet.h"
#include "rewrite_glue.h"

namespace kvsteer::dp {

namespace {

std::uint64_t mono_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

// Sequence-space comparison: a before b.
inline bool seq_lt(std::uint32_t a, std::uint32_t b) {
    return static_cast<std::int32_t>(a - b) < 0;
}

void fill_key4(kvs_flow_key *k, const kvs_pkt &pkt) {
    std::memset(k, 0, sizeof(*k));
    k->saddr[0] = pkt.ip4->saddr;
    k->daddr[0] = pkt.ip4->daddr;
    k->sport = pkt.tcp->source;
    k->dport = pkt.tcp->dest;
    k->family = KVS_AF_INET;
    k->proto = KVS_IPPROTO_TCP;
}

}  // namespace

Worker::Worker(const Tables &t, const WorkerParams &p)
    : t_(t), p_(p), slots_(p.opts.max_pending), buf_(64 * 1024) {
    stats_ = t_.dp_stats ? t_.dp_stats + static_cast<std::size_t>(p_.index) * KVS_STATS_MAX
                         : local_stats_;
    free_.reserve(slots_.size());
    for (std::uint32_t i = static_cast<std::uint32_t>(slots_.size()); i-- > 0;) free_.push_back(i);

    // This worker's share of the SNAT port range.
    std::uint32_t lo = t_.config->snat_port_lo, hi = t_.config->snat_port_hi;
    if (lo == 0 || hi < lo) {
        lo = KVS_DEFAULT_SNAT_PORT_LO;
        hi = KVS_DEFAULT_SNAT_PORT_HI;
    }
    std::uint32_t per = (hi - lo + 1) / std::max<std::uint16_t>(p_.n_workers, 1);
    all_lo_ = lo;
    all_hi_ = lo + per * std::max<std::uint16_t>(p_.n_workers, 1) - 1;
    per_worker_ = per;
    port_lo_ = static_cast<std::uint16_t>(lo + per * p_.index);
    port_hi_ = static_cast<std::uint16_t>(port_lo_ + per - 1);
    // Start anywhere in the range: a restarted dataplane should not reuse first the 4-tuples
    // its previous run just closed (backends keep them in TIME_WAIT).
    port_cursor_ = static_cast<std::uint16_t>(port_lo_ + (per ? rte_rdtsc() % per : 0));
    by_port_.assign(per, -1);

    auto name = fmt::format("kvs_c{}_{}", p_.port, p_.index);
    rte_hash_parameters hp{};
    hp.name = name.c_str();
    hp.entries = std::max<std::uint32_t>(p_.opts.max_pending * 2, 64);
    hp.key_len = sizeof(kvs_flow_key);
    hp.hash_func = rte_hash_crc;
    hp.socket_id = SOCKET_ID_ANY;
    by_client_ = rte_hash_create(&hp);
    if (!by_client_)
        throw std::runtime_error(
            fmt::format("rte_hash_create {}: {}", name, rte_strerror(rte_errno)));
    if (p_.opts.max_held_per_source) {
        auto sname = fmt::format("kvs_s{}_{}", p_.port, p_.index);
        rte_hash_parameters sp{};
        sp.name = sname.c_str();
        sp.entries = std::max<std::uint32_t>(p_.opts.max_pending * 2, 64);
        sp.key_len = sizeof(std::uint32_t);
        sp.hash_func = rte_hash_crc;
        sp.socket_id = SOCKET_ID_ANY;
        by_source_ = rte_hash_create(&sp);
        if (!by_source_)
            throw std::runtime_error(
                fmt::format("rte_hash_create {}: {}", sname, rte_strerror(rte_errno)));
    }
    timer_heap_.reserve(static_cast<std::size_t>(p_.opts.max_pending) * 4);

    // Held segments must never starve the port's RX refill (af_xdp stalls without mbufs).
    max_held_mbufs_ =
        std::max<std::uint32_t>(64, p_.opts.mbufs / (2 * std::max<std::uint16_t>(p_.n_workers, 1)));
    hz_ = rte_get_tsc_hz();
    auto ms = [this](std::uint64_t v) { return v * hz_ / 1000; };
    gap_ticks_ = p_.opts.bind_gap_us * hz_ / 1000000;
    syn_timeout_ticks_ = ms(p_.opts.backend_syn_timeout_ms);
    client_idle_ticks_ = ms(p_.opts.client_idle_timeout_ms);
    linger_ticks_ = ms(p_.opts.local_linger_ms);
    flow_idle_ticks_ = ms(static_cast<std::uint64_t>(p_.opts.flow_idle_timeout_s) * 1000);
    closed_ticks_ = ms(static_cast<std::uint64_t>(p_.opts.closed_linger_s) * 1000);
    // Never longer than half the idle timeout: the flight must bind before it is reset.
    unsure_wait_ticks_ = std::min(ms(FirstFlight::kUnsureStartWaitMs), client_idle_ticks_ / 2);
    if (t_.ring_ctl) ring_head_ = __atomic_load_n(&t_.ring_ctl[p_.index].head, __ATOMIC_ACQUIRE);
}

Worker::~Worker() {
    for (std::uint32_t i = 0; i < slots_.size(); ++i)
        if (slots_[i].st != St::Free) release(i, false);
    flush_tx();
    if (by_client_) rte_hash_free(by_client_);
    if (by_source_) rte_hash_free(by_source_);
}

std::uint64_t Worker::counter(unsigned reason) const {
    return reason < KVS_STATS_MAX ? stats_[reason] : 0;
}

std::uint32_t Worker::max_held() const {
    std::uint32_t v = p_.opts.max_held_bytes ? p_.opts.max_held_bytes : t_.config->max_held_bytes;
    if (v == 0) v = KVS_DEFAULT_MAX_HELD_BYTES;
    return std::min<std::uint32_t>(v, static_cast<std::uint32_t>(buf_.size()));
}

std::uint32_t Worker::bind_depth() const {
    return kvsteer::bind_depth(hash_params(*t_.config));
}

bool Worker::is_vip(const kvs_pkt &pkt) const {
    const kvs_config &c = *t_.config;
    for (std::uint32_t i = 0; i < c.n_vips && i < KVS_MAX_VIPS; ++i) {
        const kvs_vip &v = c.vips[i];
        if (v.family == KVS_AF_INET && v.addr[0] == pkt.ip4->daddr && v.port == pkt.tcp->dest)
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
    rte_mbuf *rx[32];
    unsigned n = rte_eth_rx_burst(p_.port, p_.queue, rx, 32);
    for (unsigned i = 0; i < n; ++i) {
        if (i + 1 < n) rte_prefetch0(rte_pktmbuf_mtod(rx[i + 1], void *));
        handle(rx[i], now);
    }
    if (p_.inboxes) {
        unsigned k = rte_ring_dequeue_burst(p_.inboxes[p_.index], reinterpret_cast<void **>(rx), 32,
                                            nullptr);
        for (unsigned i = 0; i < k; ++i) handle(rx[i], now);
        n += k;
    }
    // Timers at most every ~100 us; the bound-flow sweep is incremental.
    if (now - last_timer_ >= hz_ / 10000) {
        last_timer_ = now;
        timers(now);
        sweep_bound(now);
    }
    flush_tx();
    return n;
}

void Worker::run(const std::atomic<bool> &stop) {
    unsigned idle = 0;
    // The adaptive sleeps are short (10..--idle-sleep-us): the kernel's default 50 us timer
    // slack would stretch each one, adding that to the first packet after an idle spell.
    if (p_.opts.idle == IdlePolicy::Adaptive) prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    while (!stop.load(std::memory_order_relaxed)) {
        if (poll(rte_rdtsc()) > 0 || p_.opts.idle == IdlePolicy::Busy) {
            idle = 0;
            continue;
        }
        // Adaptive: spin briefly, then sleep longer the longer it stays idle (up to
        // --idle-sleep-us) so a 2-CPU box keeps room for the backends and the client.
        ++idle;
        if (idle < 64)
            rte_pause();
        else
            usleep(std::min(p_.opts.idle_sleep_us, (idle - 63) * 10));
    }
    flush_tx();
}

void Worker::handle(rte_mbuf *m, std::uint64_t now) {
    kvs_pkt pkt;
    int st = parse_mbuf(m, &pkt);
    if (KVS_UNLIKELY(st != KVS_PARSE_OK)) {
        if (st == KVS_PARSE_NOT_IP && p_.opts.mode == Mode::Dpdk) return on_arp(m);
        inc(kvs_parse_reason(st, pkt.l4proto));
        rte_pktmbuf_free(m);
        return;
    }
    if (pkt.family != 4) {  // IPv6: structures are ready, the binding path is IPv4 only for now
        inc(KVS_R_DP_IPV6_UNSUPPORTED);
        rte_pktmbuf_free(m);
        return;
    }
    const kvs_config &c = *t_.config;
    if (is_vip(pkt)) return on_client(m, pkt, now);
    std::uint16_t dport = kvs_ntohs(pkt.tcp->dest);
    if (pkt.ip4->daddr == c.snat_addr[0] && dport >= port_lo_ && dport <= port_hi_)
        return on_backend(m, pkt, now);
    if (p_.inboxes && pkt.ip4->daddr == c.snat_addr[0] && dport >= all_lo_ && dport <= all_hi_) {
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

void Worker::on_client(rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now) {
    kvs_flow_key key;
    fill_key4(&key, pkt);
    void *data = nullptr;
    if (rte_hash_lookup_data(by_client_, &key, &data) >= 0) {
        auto idx = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(data));
        Slot &s = slots_[idx];
        if (s.st == St::Bound) {
            if (!reused_by_new_connection(s, pkt)) return forward(s, m, pkt, true, now);
            // The client has opened a new connection on the same 4-tuple: the old one is over.
            inc(KVS_R_FLOW_REUSED);
            release(idx, p_.opts.mode == Mode::Dpdk);
            return on_client(m, pkt, now);
        }
        if (pkt.opts.ts_off && s.client_ts && pkt.opts.tsecr != s.ts_ours &&
            !(pkt.tcp->flags & KVS_TCP_RST)) {
            // Nothing reaches the client between our SYN-ACK and the bind, so it echoes that
            // SYN-ACK's TSval, which carries its ISN: another echo is another connection on
            // the same 4-tuple (the client reused its port). The one being bound is over.
            inc(KVS_R_FLOW_REUSED);
            if (s.st == St::SynSent) rst_backend(s);
            release(idx, true);
            return on_client(m, pkt, now);
        }
        if (pkt.tcp->flags & KVS_TCP_RST) {  // client gave up while we were binding
            if (s.st == St::SynSent) rst_backend(s);
            release(idx, true);
            inc(KVS_R_FLOW_RST);
            rte_pktmbuf_free(m);
            return;
        }
        if (pkt.payload_len > 0 || (pkt.tcp->flags & KVS_TCP_FIN))
            return add_segment(idx, m, pkt, now);
        if (pkt.opts.ts_off) s.client_tsval = pkt.opts.tsval;
        s.client_window = kvs_ntohs(pkt.tcp->window);
        inc(KVS_R_DP_PURE_ACK_HELD);  // pure ACK: its window and TSval are taken, nothing to hold
        rte_pktmbuf_free(m);
        return;
    }
    const std::uint8_t fl = pkt.tcp->flags;
    if ((fl & (KVS_TCP_SYN | KVS_TCP_ACK | KVS_TCP_RST)) == KVS_TCP_SYN) {
        if (p_.opts.mode == Mode::Dpdk && !draining_.load(std::memory_order_relaxed))
            return answer_syn(m, pkt);
        // Draining takes no new flows; in xdp mode XDP answers SYNs, so one here is unexpected.
        inc(draining_.load(std::memory_order_relaxed) ? KVS_R_DP_DRAINING : KVS_R_DP_SYN_NOT_OURS);
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
        if (!draining_.load(std::memory_order_relaxed)) return new_flow(m, pkt, now);
        inc(KVS_R_DP_DRAINING);
        rte_pktmbuf_free(m);
        return;
    }
    inc(KVS_R_DROP_PURE_ACK);
    rte_pktmbuf_free(m);
}

// Whether a client segment that matches a bound flow's 4-tuple belongs to a new connection
// there. dpdk mode: a SYN on a flow whose client sent FIN or either side RST (a SYN on a live
// flow is forwarded: the backend's challenge ACK makes the client reset the old one). xdp mode:
// the local copy outlives the flow's entries by up to --local-linger-ms, and XDP deletes them
// when the client's SYN reuses the 4-tuple; a punted segment for a bound flow whose entry is
// gone is a new connection's first flight. (The cookie cannot tell: it hashes the 4-tuple and
// the time slot, so a reopened connection gets the same one.)
bool Worker::reused_by_new_connection(const Slot &s, const kvs_pkt &pkt) const {
    const std::uint8_t fl = pkt.tcp->flags;
    if (p_.opts.mode == Mode::Dpdk)
        return (fl & (KVS_TCP_SYN | KVS_TCP_ACK)) == KVS_TCP_SYN && ((s.fin_mask & 1) || s.closed);
    if (t_.flows_fd < 0 || (fl & (KVS_TCP_SYN | KVS_TCP_RST))) return false;
    kvs_flow f{};
    return bpf_map_lookup_elem(t_.flows_fd, &s.ckey, &f) != 0;
}

void Worker::answer_syn(rte_mbuf *m, kvs_pkt &pkt) {
    const kvs_config &c = *t_.config;
    rte_mbuf *out = build_cookie_synack(m, c, pkt, kvs_cookie_now_tai_ns());
    if (!out) {
        inc(KVS_R_DROP_NO_CONFIG);
        return;
    }
    inc(KVS_R_TX_SYNACK);
    tx(out);
}

// A client that closes before sending anything (FIN right after the handshake) has nothing to
// bind: answer with a reset so it does not retransmit its FIN into silence.
void Worker::answer_bare_fin(rte_mbuf *m, kvs_pkt &pkt) {
    const kvs_config &c = *t_.config;
    const std::uint32_t seq = kvs_ntohl(pkt.tcp->seq), ack = kvs_ntohl(pkt.tcp->ack_seq);
    kvs_cookie_opts co{};
    if (!check_cookie(m, pkt, &co)) return;
    TcpSpec sp{};
    sp.smac = c.appliance_mac;
    sp.dmac = pkt.eth->src;
    sp.saddr = pkt.ip4->daddr;
    sp.daddr = pkt.ip4->saddr;
    sp.sport = pkt.tcp->dest;
    sp.dport = pkt.tcp->source;
    sp.seq = ack;
    sp.ack = seq + 1;  // the FIN
    sp.flags = KVS_TCP_RST | KVS_TCP_ACK;
    if (send(build_tcp4(p_.pool, sp))) inc(KVS_R_DP_RST_BARE_FIN);
    rte_pktmbuf_free(m);
}

// Every segment a client sends before its flow exists acks our cookie + 1: checked with the
// shared codec; a bad one is dropped here (counted, `m` freed) and false returned.
bool Worker::check_cookie(rte_mbuf *m, const kvs_pkt &pkt, kvs_cookie_opts *co) {
    const kvs_config &c = *t_.config;
    kvs_cookie_tuple tup{};
    kvs_cookie_tuple_of(&pkt, &tup);
    if (kvs_cookie_check(&c.cookie_key[0][0], &tup, kvs_ntohl(pkt.tcp->ack_seq) - 1,
                         kvs_cookie_slot(kvs_cookie_now_tai_ns(), c.cookie_period_s), co))
        return true;
    inc(KVS_R_DROP_BAD_COOKIE);
    rte_pktmbuf_free(m);
    return false;
}

void Worker::new_flow(rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now) {
    const std::uint32_t seq = kvs_ntohl(pkt.tcp->seq), ack = kvs_ntohl(pkt.tcp->ack_seq);
    kvs_cookie_opts co{};
    if (!check_cookie(m, pkt, &co)) return;
    if (p_.opts.max_held_per_source && held_by(pkt.ip4->saddr) >= p_.opts.max_held_per_source) {
        inc(KVS_R_DP_HOLD_SOURCE_CAP);  // this client address holds its share already
        rte_pktmbuf_free(m);
        return;
    }
    if ((free_.empty() && !reclaim_lingering() && !evict_stalled(now)) ||
        (held_mbufs_ >= max_held_mbufs_ && !evict_stalled(now))) {
        inc(KVS_R_DP_HOLD_FULL);
        rte_pktmbuf_free(m);
        return;
    }
    std::uint32_t idx = free_.back();
    free_.pop_back();
    Slot &s = slots_[idx];
    s = Slot{};
    s.st = St::Holding;
    fill_key4(&s.ckey, pkt);
    std::memcpy(s.client_mac, pkt.eth->src, 6);
    // The client's ISN for sure from its timestamp echo (our SYN-ACK's TSval carries it, see
    // cookie.h), so a flight whose head was lost is never bound from its body; without
    // timestamps, the earliest segment seen (moved back if an earlier one arrives).
    std::uint32_t isn = seq - 1;
    const bool isn_known =
        pkt.opts.ts_off && kvs_cookie_client_isn(&co, pkt.opts.tsecr, seq, 2 * max_held(), &isn);
    if (isn_known) inc(KVS_R_DP_ISN_FROM_TS);
    s.ff.start(isn, isn_known);
    s.cookie_isn = ack - 1;
    s.client_mss = co.mss;
    s.client_wscale = co.wscale;
    s.client_sack = co.sack_perm;
    s.client_ts = pkt.opts.ts_off != 0;
    s.ts_ours = pkt.opts.tsecr;
    s.client_tsval = pkt.opts.tsval;
    s.client_window = kvs_ntohs(pkt.tcp->window);
    s.created = s.last_seg = s.last_seen = now;
    s.deadline = now + client_idle_ticks_;
    if (rte_hash_add_key_data(by_client_, &s.ckey,
                              reinterpret_cast<void *>(static_cast<std::uintptr_t>(idx))) < 0) {
        s.st = St::Free;
        free_.push_back(idx);
        inc(KVS_R_DP_HOLD_FULL);
        rte_pktmbuf_free(m);
        return;
    }
    ++n_used_;
    list_add(idx);
    inc(KVS_R_PUNT_FIRST_FLIGHT);
    add_segment(idx, m, pkt, now);
}

void Worker::add_segment(std::uint32_t idx, rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now) {
    Slot &s = slots_[idx];
    const std::uint32_t seq = kvs_ntohl(pkt.tcp->seq);
    const bool fin = (pkt.tcp->flags & KVS_TCP_FIN) != 0;
    if (pkt.opts.ts_off && !seq_lt(pkt.opts.tsval, s.client_tsval)) s.client_tsval = pkt.opts.tsval;
    s.client_window = kvs_ntohs(pkt.tcp->window);
    // max_held_bytes triggers the bind; segments the client keeps sending while the backend
    // handshake runs are still held (up to twice that) so they need no retransmission.
    FirstFlight::Add r =
        held_mbufs_ >= max_held_mbufs_
            ? FirstFlight::Add::Full
            : s.ff.add(m,
                       rte_pktmbuf_mtod_offset(m, const std::uint8_t *, pkt.l4_off + pkt.tcp_hlen),
                       seq, pkt.payload_len, fin, 2 * max_held());
    switch (r) {
        case FirstFlight::Add::Held:
            ++held_mbufs_;
            s.last_seg = now;
            if (s.st == St::Holding) check_ready(idx, now, false);
            if (s.st == St::Holding) arm_holding(idx, now);
            return;
        case FirstFlight::Add::Duplicate:
            inc(KVS_R_DP_DUP_SEGMENT);
            rte_pktmbuf_free(m);
            return;
        case FirstFlight::Add::Stale:
            inc(KVS_R_DP_STALE_SEGMENT);
            rte_pktmbuf_free(m);
            return;
        case FirstFlight::Add::Full:
            inc(KVS_R_DP_HOLD_FULL);
            rte_pktmbuf_free(m);
            if (s.st == St::Holding) {
                s.ready = 1;
                check_ready(idx, now, true);
            }
            return;
    }
}

// Binds the slot's flight once it is worth binding: the contiguous bytes from the stream's
// start cover the hash depth, the request is complete (or waits for 100-continue), the held
// bytes reach max_held_bytes, the head is not HTTP; or, after a silent gap (`gap`), on what is
// held. Never from a flight whose start is unsure (no timestamp proof and no request line)
// before FirstFlight::kUnsureStartWaitMs: its head was most likely lost and is on its way.
void Worker::check_ready(std::uint32_t idx, std::uint64_t now, bool gap) {
    Slot &s = slots_[idx];
    const std::uint32_t n = s.ff.assemble(buf_.data(), max_held());
    if (n == 0) {  // nothing from the stream's start yet
        s.head_incomplete = 1;
        return;
    }
    const bool sure = s.ff.isn_known() || begins_request(buf_.data(), n);
    if (!sure && now - s.created < unsure_wait_ticks_) return;
    RequestView v = locate_request(std::span<const std::uint8_t>(buf_.data(), n));
    s.head_incomplete = v.status == LocateStatus::NeedMoreHead;
    if (s.head_incomplete && s.ff.complete_to_fin() && n == s.ff.contiguous()) {
        // Closed before its request head was complete (a slowloris connection going away):
        // nothing to bind, and a backend connection would only carry a broken head.
        inc(KVS_R_DP_RST_FIN_INCOMPLETE_HEAD);
        rst_client(s);
        release(idx, false);
        return;
    }
    bool ready = gap || s.ready || s.ff.has_fin() || n + 1460 > max_held();
    if (v.status == LocateStatus::Ok)
        ready |= v.body_complete || v.expect_continue || v.key_len >= bind_depth();
    else if (v.status != LocateStatus::NeedMoreHead)
        ready = true;  // not HTTP: nothing to wait for
    else if (gap && !s.ready)
        ready = false;  // silent with an incomplete head: wait for more (or the idle timeout)
    if (!ready) return;
    if (!sure) inc(KVS_R_DP_START_UNSURE);
    start_bind(idx, now, v, n);  // buf_ still holds the assembled bytes
}

// ---------------------------------------------------------------------------------------------
// Binding

void Worker::start_bind(std::uint32_t idx, std::uint64_t now, const RequestView &v,
                        std::uint32_t n) {
    Slot &s = slots_[idx];
    const HashParams hp = hash_params(*t_.config);
    const FlightKey k = key_flight(hp, v, std::span<const std::uint8_t>(buf_.data(), n),
                                   hash_five_tuple(hp, s.ckey));
    const KeyKind kind = k.kind;
    s.hashes = k.hashes;
    s.prompt_bytes = k.prompt_bytes;
    s.key_kind = static_cast<std::uint8_t>(kind);
    switch (kind) {
        case KeyKind::OpenAIPrompt:
            inc(KVS_R_DP_KEY_OPENAI_PROMPT);
            break;
        case KeyKind::OpenAIChat:
            inc(KVS_R_DP_KEY_OPENAI_CHAT);
            break;
        case KeyKind::BodyPrefix:
            inc(KVS_R_DP_KEY_BODY_PREFIX);
            break;
        default:
            inc(KVS_R_DP_KEY_FIVE_TUPLE);
            break;
    }
    if (!alloc_port(&s.snat_port)) {
        inc(KVS_R_DP_PORTS_EXHAUSTED);
        rst_client(s);
        release(idx, false);
        return;
    }
    by_port_[s.snat_port - port_lo_] = static_cast<std::int32_t>(idx);
    s.ncand = 0;
    s.st = St::SynSent;
    next_candidate(idx, now);
}

void Worker::next_candidate(std::uint32_t idx, std::uint64_t now) {
    Slot &s = slots_[idx];
    if (s.ncand >= p_.opts.max_candidates || s.ncand >= kMaxCand) {
        inc(KVS_R_DP_BIND_FAIL_RST_CLIENT);
        rst_client(s);
        release(idx, true);
        return;
    }
    Choice ch = choose_backend(t_, s.hashes, s.hashes.prefix,
                               std::span<const std::uint16_t>(s.tried, s.ncand), scratch_);
    if (ch.backend == KVS_BACKEND_NONE) {
        inc(KVS_R_DP_NO_BACKEND);
        inc(KVS_R_DP_BIND_FAIL_RST_CLIENT);
        rst_client(s);
        release(idx, true);
        return;
    }
    if (s.ncand > 0) inc(KVS_R_DP_BIND_RETRY);
    s.tried[s.ncand++] = ch.backend;
    s.backend = ch.backend;
    s.via = ch.via;
    s.syn_tries = 0;
    const kvs_backend &b = t_.backends[ch.backend];
    std::memset(&s.bkey, 0, sizeof(s.bkey));
    s.bkey.saddr[0] = b.addr[0];
    s.bkey.daddr[0] = t_.config->snat_addr[0];
    s.bkey.sport = b.port;
    s.bkey.dport = kvs_htons(s.snat_port);
    s.bkey.family = KVS_AF_INET;
    s.bkey.proto = KVS_IPPROTO_TCP;
    send_backend_syn(s);
    s.deadline = now + syn_timeout_ticks_;
    arm(idx, s.deadline);
}

// Addresses of a segment the appliance sends to the slot's backend from its SNAT port.
TcpSpec Worker::to_backend(const Slot &s) const {
    const kvs_config &c = *t_.config;
    const kvs_backend &b = t_.backends[s.backend];
    TcpSpec sp{};
    sp.smac = c.appliance_mac;
    sp.dmac = b.mac;
    sp.saddr = c.snat_addr[0];
    sp.daddr = b.addr[0];
    sp.sport = kvs_htons(s.snat_port);
    sp.dport = b.port;
    return sp;
}

bool Worker::send_backend_syn(Slot &s) {
    TcpSpec sp = to_backend(s);
    sp.seq = s.ff.isn();  // the client's own ISN: no sequence translation client -> backend
    sp.ack = 0;
    sp.flags = KVS_TCP_SYN;
    sp.window = 64240;
    sp.mss = s.client_mss;
    sp.wscale = s.client_wscale;
    sp.sack_perm = s.client_sack;
    sp.ts = s.client_ts;
    // The backend leg's timestamps run on our monotonic millisecond clock, not the client's:
    // a backend that still holds this SNAT 4-tuple in TIME_WAIT from an earlier flow accepts a
    // SYN with a newer timestamp (RFC 6191) instead of answering with a challenge ACK.
    if (s.syn_tries == 0)
        s.ts_delta = static_cast<std::uint32_t>(mono_ns() / 1000000) - s.client_tsval;
    sp.tsval = s.client_tsval + s.ts_delta;
    ++s.syn_tries;  // a SYN the mempool could not build counts as sent: the timer retries it
    return send(build_tcp4(p_.pool, sp));
}

void Worker::complete_bind(std::uint32_t idx, kvs_pkt &sa, std::uint64_t now) {
    Slot &s = slots_[idx];
    const kvs_config &c = *t_.config;
    const kvs_backend &b = t_.backends[s.backend];
    const std::uint32_t bisn = kvs_ntohl(sa.tcp->seq);
    const bool ts = s.client_ts && sa.opts.ts_off;
    const std::uint32_t t_backend = sa.opts.tsval;

    kvs_flowpair_params fp{};
    fp.client_addr[0] = s.ckey.saddr[0];
    fp.vip_addr[0] = s.ckey.daddr[0];
    fp.snat_addr[0] = c.snat_addr[0];
    fp.backend_addr[0] = b.addr[0];
    fp.client_port = s.ckey.sport;
    fp.vip_port = s.ckey.dport;
    fp.snat_port = kvs_htons(s.snat_port);
    fp.backend_port = b.port;
    fp.family = KVS_AF_INET;
    fp.client_wscale = s.client_wscale;
    fp.synack_wscale = c.syn_wscale;
    fp.backend_wscale = sa.opts.wscale;
    fp.ts = ts;
    fp.cookie = s.cookie_isn;
    fp.backend_isn = bisn;
    fp.synack_tsval = s.ts_ours;
    fp.backend_tsval = t_backend;
    fp.client_ts_delta = s.ts_delta;
    std::memcpy(fp.appliance_mac, c.appliance_mac, 6);
    std::memcpy(fp.client_mac, s.client_mac, 6);
    std::memcpy(fp.backend_mac, b.mac, 6);
    fp.backend_id = s.backend;
    fp.worker = p_.index;
    fp.now_ns = mono_ns();
    kvs_flow_key k_c2s, k_s2c;
    kvs_flowpair_build(&fp, &k_c2s, &s.c2s, &k_s2c, &s.s2c);
    const kvs_flow &f = s.c2s;

    // Install before anything is sent so the backend's first reply already finds its flow in
    // XDP; both entries or neither (a half pair would strand the flow).
    if (t_.flows_fd >= 0) {
        if (!install_pair(k_c2s, s.c2s, k_s2c, s.s2c)) {
            inc(KVS_R_DP_FLOW_INSTALL_FAIL);
            inc(KVS_R_DP_BIND_FAIL_RST_CLIENT);
            rst_backend(s);
            rst_client(s);
            release(idx, true);
            return;
        }
        // From now on the sweeper frees the port, when the entries are gone.
        if (p_.ports) p_.ports->busy[s.snat_port].store(kPortInstalled, std::memory_order_release);
    }
    // ACK the backend's SYN-ACK as the client would have.
    TcpSpec sp = to_backend(s);
    sp.seq = s.ff.isn() + 1;
    sp.ack = bisn + 1;
    sp.flags = KVS_TCP_ACK;
    sp.window = s.client_window;
    sp.ts = ts;
    sp.tsval = s.client_tsval + s.ts_delta;
    sp.tsecr = t_backend;
    send(build_tcp4(p_.pool, sp));

    list_del(idx);
    s.st = St::Bound;
    s.last_seen = now;
    s.deadline = now + linger_ticks_;
    held_mbufs_ -= s.ff.size();
    s.ff.drain([&](void *h) {
        auto *m = static_cast<rte_mbuf *>(h);
        kvs_pkt pkt;
        if (parse_mbuf(m, &pkt) != KVS_PARSE_OK) {  // parsed once already: cannot happen
            inc(KVS_R_DP_HELD_UNPARSABLE);
            rte_pktmbuf_free(m);
            return;
        }
        rewrite_packet(&pkt, rte_pktmbuf_mtod(m, std::uint8_t *) + rte_pktmbuf_data_len(m), f);
        tx(m);
    });
    if (t_.load) __atomic_fetch_add(&t_.load[s.backend].binds, 1, __ATOMIC_RELAXED);
    inc(KVS_R_DP_BIND_OK);
    switch (s.via) {
        case KVS_VIA_AFFINITY:
            inc(KVS_R_DP_VIA_AFFINITY);
            break;
        case KVS_VIA_MAGLEV:
            inc(KVS_R_DP_VIA_MAGLEV);
            break;
        case KVS_VIA_MAGLEV_SPILL:
            inc(KVS_R_DP_VIA_MAGLEV_SPILL);
            break;
        case KVS_VIA_ROUND_ROBIN:
            inc(KVS_R_DP_VIA_ROUND_ROBIN);
            break;
        default:
            break;
    }
    report(s);
}

// Both directions in one syscall (half the cost of two updates), all or nothing: a batch stops
// at its first failure, so an entry it did write is removed again.
bool Worker::install_pair(const kvs_flow_key &kc, const kvs_flow &c2s, const kvs_flow_key &ks,
                          const kvs_flow &s2c) {
    kvs_flow_key keys[2] = {kc, ks};
    kvs_flow vals[2] = {c2s, s2c};
    __u32 count = 2;
    if (bpf_map_update_batch(t_.flows_fd, keys, vals, &count, nullptr) == 0 && count == 2)
        return true;
    if (count >= 1) bpf_map_delete_elem(t_.flows_fd, &keys[0]);
    if (count >= 2) bpf_map_delete_elem(t_.flows_fd, &keys[1]);
    return false;
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
    r.ts_ns = mono_ns();
    r.prefix_hash = s.hashes.prefix;
    std::memcpy(r.block_hash, s.hashes.blocks.data(), sizeof(r.block_hash));
    r.prompt_bytes = s.prompt_bytes;
    r.n_blocks = static_cast<std::uint16_t>(s.hashes.n_blocks);
    r.backend_id = s.backend;
    r.key_kind = s.key_kind;
    r.via = s.via;
    r.worker = p_.index;
    r.pad = 0;
    ++ring_head_;
    __atomic_store_n(&ctl.head, ring_head_, __ATOMIC_RELEASE);
}

void Worker::rst_client(Slot &s) {
    const kvs_config &c = *t_.config;
    const std::uint32_t n = std::min(s.ff.contiguous(), max_held());
    TcpSpec sp{};
    sp.smac = c.appliance_mac;
    sp.dmac = s.client_mac;
    sp.saddr = s.ckey.daddr[0];
    sp.daddr = s.ckey.saddr[0];
    sp.sport = s.ckey.dport;
    sp.dport = s.ckey.sport;
    sp.seq = s.cookie_isn + 1;
    sp.ack = s.ff.isn() + 1 + n;
    sp.flags = KVS_TCP_RST | KVS_TCP_ACK;
    sp.window = 0;
    send(build_tcp4(p_.pool, sp));
}

// Aborts our half-open connection to the backend (the client went away while binding).
void Worker::rst_backend(Slot &s) {
    TcpSpec sp = to_backend(s);
    sp.seq = s.ff.isn() + 1;
    sp.flags = KVS_TCP_RST;
    send(build_tcp4(p_.pool, sp));
}

// ---------------------------------------------------------------------------------------------
// Backend side

void Worker::on_backend(rte_mbuf *m, kvs_pkt &pkt, std::uint64_t now) {
    std::int32_t idx = by_port_[kvs_ntohs(pkt.tcp->dest) - port_lo_];
    if (idx < 0) {
        inc(KVS_R_PUNT_BACKEND_OTHER);
        rte_pktmbuf_free(m);
        return;
    }
    Slot &s = slots_[idx];
    const bool from_backend = pkt.ip4->saddr == s.bkey.saddr[0] && pkt.tcp->source == s.bkey.sport;
    if (!from_backend) {  // a late answer from a backend this flow already gave up on
        inc(KVS_R_PUNT_BACKEND_OTHER);
        rte_pktmbuf_free(m);
        return;
    }
    const std::uint8_t fl = pkt.tcp->flags;
    if (s.st == St::SynSent) {
        const std::uint32_t ack = kvs_ntohl(pkt.tcp->ack_seq);
        if ((fl & KVS_TCP_RST) && (fl & KVS_TCP_ACK) && ack == s.ff.isn() + 1) {
            inc(KVS_R_DP_BACKEND_RST);
            if (t_.load) __atomic_fetch_add(&t_.load[s.backend].bind_fail_rst, 1, __ATOMIC_RELAXED);
            rte_pktmbuf_free(m);
            return next_candidate(static_cast<std::uint32_t>(idx), now);
        }
        if ((fl & (KVS_TCP_SYN | KVS_TCP_ACK)) == (KVS_TCP_SYN | KVS_TCP_ACK) &&
            ack == s.ff.isn() + 1) {
            inc(KVS_R_PUNT_BACKEND_SYNACK);
            complete_bind(static_cast<std::uint32_t>(idx), pkt, now);
            rte_pktmbuf_free(m);
            return;
        }
        if ((fl & (KVS_TCP_SYN | KVS_TCP_RST | KVS_TCP_ACK)) == KVS_TCP_ACK) {
            // A challenge ACK: the backend still holds this 4-tuple in TIME_WAIT (an earlier
            // flow, or a previous dataplane run). Reset that old connection as a TCP client
            // does (RFC 793: RST with seq = the ACK's ack) and send our SYN again at once.
            TcpSpec sp = to_backend(s);
            sp.seq = ack;
            sp.flags = KVS_TCP_RST;
            send(build_tcp4(p_.pool, sp));
            if (s.syn_tries <= p_.opts.backend_syn_retries + 2) send_backend_syn(s);
        }
        inc(KVS_R_PUNT_BACKEND_OTHER);
        rte_pktmbuf_free(m);
        return;
    }
    if (s.st == St::Bound) {
        if ((fl & (KVS_TCP_SYN | KVS_TCP_ACK)) == (KVS_TCP_SYN | KVS_TCP_ACK)) {
            // Our ACK was lost: the backend repeats its SYN-ACK. Acknowledge it again.
            TcpSpec sp = to_backend(s);
            sp.seq = s.ff.isn() + 1;
            sp.ack = kvs_ntohl(pkt.tcp->seq) + 1;
            sp.flags = KVS_TCP_ACK;
            sp.window = s.client_window;
            sp.ts = s.client_ts && pkt.opts.ts_off;
            sp.tsval = s.client_tsval + s.ts_delta;
            sp.tsecr = pkt.opts.tsval;
            send(build_tcp4(p_.pool, sp));
            inc(KVS_R_PUNT_BACKEND_SYNACK);
            rte_pktmbuf_free(m);
            return;
        }
        return forward(s, m, pkt, false, now);
    }
    inc(KVS_R_PUNT_BACKEND_OTHER);
    rte_pktmbuf_free(m);
}

// A bound flow's packet that reached us (dpdk mode always; xdp mode only while the install
// raced packets already punted): same rewrite as XDP, same close accounting.
void Worker::forward(Slot &s, rte_mbuf *m, kvs_pkt &pkt, bool c2s, std::uint64_t now) {
    kvs_flow &f = c2s ? s.c2s : s.s2c;
    const std::uint8_t fl = pkt.tcp->flags;
    s.last_seen = now;
    if (p_.opts.mode == Mode::Dpdk && !s.closed) {
        if (fl & KVS_TCP_RST)
            s.fin_mask = 3;
        else if (fl & KVS_TCP_FIN)
            s.fin_mask |= c2s ? 1 : 2;
        if (s.fin_mask == 3) {
            s.closed = 1;
            inc(KVS_R_FLOW_CLOSED);
            if (t_.load) __atomic_fetch_add(&t_.load[s.backend].closes, 1, __ATOMIC_RELAXED);
        }
    }
    rewrite_packet(&pkt, rte_pktmbuf_mtod(m, std::uint8_t *) + rte_pktmbuf_data_len(m), f);
    inc(c2s ? KVS_R_TX_FWD_C2S : KVS_R_TX_FWD_S2C);
    tx(m);
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

// When a holding slot next needs a look: its idle deadline, the end of its silent gap, or the
// end of the unsure-start wait, whichever comes first.
void Worker::arm_holding(std::uint32_t idx, std::uint64_t now) {
    const Slot &s = slots_[idx];
    std::uint64_t when = std::min(s.deadline, s.last_seg + gap_ticks_);
    if (when <= now) when = s.deadline;
    if (!s.ff.isn_known() && s.created + unsure_wait_ticks_ > now)
        when = std::min(when, s.created + unsure_wait_ticks_);
    arm(idx, std::max(when, now + 1));
}

void Worker::timers(std::uint64_t now) {
    while (!timer_heap_.empty() && timer_heap_.front().when <= now) {
        std::pop_heap(timer_heap_.begin(), timer_heap_.end(), Timer::later);
        const Timer e = timer_heap_.back();
        timer_heap_.pop_back();
        Slot &s = slots_[e.idx];
        if (s.timer_id != e.id) continue;  // re-armed or released since
        if (s.st == St::Holding) {
            if (now >= s.deadline) {
                inc(KVS_R_DP_CLIENT_IDLE_DROP);
                rst_client(s);
                release(e.idx, false);
                continue;
            }
            // The client is window-limited and silent: bind on what we have, unless not even
            // the request head is complete (or its start is unsure and the wait is not over).
            if (now - s.last_seg >= gap_ticks_) check_ready(e.idx, now, true);
            if (s.st == St::Holding) arm_holding(e.idx, now);
        } else if (s.st == St::SynSent && now >= s.deadline) {
            if (s.syn_tries <= p_.opts.backend_syn_retries) {
                send_backend_syn(s);
                s.deadline = now + syn_timeout_ticks_;
                arm(e.idx, s.deadline);
            } else {
                inc(KVS_R_DP_BACKEND_TIMEOUT);
                if (t_.load)
                    __atomic_fetch_add(&t_.load[s.backend].bind_fail_timeout, 1, __ATOMIC_RELAXED);
                next_candidate(e.idx, now);
            }
        }
    }
}

void Worker::sweep_bound(std::uint64_t now) {
    const std::uint32_t n = static_cast<std::uint32_t>(slots_.size());
    for (unsigned k = 0; k < 64 && n_used_ > n_binding_; ++k) {
        std::uint32_t i = sweep_cursor_++ % n;
        Slot &s = slots_[i];
        if (s.st != St::Bound) continue;
        if (p_.opts.mode == Mode::Xdp) {
            if (now >= s.deadline) release(i, false);  // XDP has the flow; the sweeper expires it
        } else if ((s.closed && now - s.last_seen >= closed_ticks_) ||
                   now - s.last_seen >= flow_idle_ticks_) {
            release(i, true);
        }
    }
}

// xdp mode: a bound flow's slot only lingers (--local-linger-ms) for punts that raced its
// install; XDP owns the flow. When every slot is taken, the oldest-visited lingering one makes
// room for a new flow rather than the new flow being dropped (at thousands of connections/s
// the lingering slots alone would fill the table).
bool Worker::reclaim_lingering() {
    if (p_.opts.mode != Mode::Xdp || n_used_ <= n_binding_) return false;
    const std::uint32_t n = static_cast<std::uint32_t>(slots_.size());
    for (std::uint32_t k = 0; k < n; ++k) {
        std::uint32_t i = sweep_cursor_++ % n;
        if (slots_[i].st == St::Bound) {
            release(i, false);
            return true;
        }
    }
    return false;
}

void Worker::free_held(Slot &s) {
    held_mbufs_ -= s.ff.size();
    s.ff.drain([](void *m) { rte_pktmbuf_free(static_cast<rte_mbuf *>(m)); });
}

void Worker::release(std::uint32_t idx, bool free_port) {
    Slot &s = slots_[idx];
    if (s.st == St::Free) return;
    if (s.st == St::Holding || s.st == St::SynSent) list_del(idx);
    free_held(s);
    rte_hash_del_key(by_client_, &s.ckey);
    if (s.snat_port) {
        by_port_[s.snat_port - port_lo_] = -1;
        // In xdp mode a bound flow keeps its port until the sweeper deletes the flow.
        if ((free_port || s.st != St::Bound) && p_.ports)
            p_.ports->busy[s.snat_port].store(kPortFree, std::memory_order_release);
    }
    s.st = St::Free;
    free_.push_back(idx);
    --n_used_;
}

bool Worker::alloc_port(std::uint16_t *port) {
    const std::uint32_t span = static_cast<std::uint32_t>(port_hi_ - port_lo_) + 1;
    // The whole range if need be: after a restart the ports of the previous instance's lingering
    // flows stay taken until the sweeper sees them go, and the cursor may start among them (a
    // bounded scan there refused new flows while most of the range was free).
    for (std::uint32_t k = 0; k < span; ++k) {
        std::uint16_t p = port_cursor_;
        port_cursor_ = p == port_hi_ ? port_lo_ : static_cast<std::uint16_t>(p + 1);
        if (by_port_[p - port_lo_] >= 0) continue;
        if (p_.ports) {
            std::uint8_t expect = kPortFree;
            if (!p_.ports->busy[p].compare_exchange_strong(expect, kPortBinding,
                                                           std::memory_order_acq_rel))
                continue;
        }
        *port = p;
        return true;
    }
    return false;
}

// The binding list: slots being bound (Holding/SynSent), oldest first; and how many of them
// each client address holds.
void Worker::list_add(std::uint32_t idx) {
    Slot &s = slots_[idx];
    s.prev = list_tail_;
    s.next = -1;
    if (list_tail_ >= 0)
        slots_[list_tail_].next = static_cast<std::int32_t>(idx);
    else
        list_head_ = static_cast<std::int32_t>(idx);
    list_tail_ = static_cast<std::int32_t>(idx);
    ++n_binding_;
    if (by_source_) {
        void *d = nullptr;
        const std::uintptr_t n = rte_hash_lookup_data(by_source_, &s.ckey.saddr[0], &d) >= 0
                                     ? reinterpret_cast<std::uintptr_t>(d)
                                     : 0;
        rte_hash_add_key_data(by_source_, &s.ckey.saddr[0], reinterpret_cast<void *>(n + 1));
    }
}

void Worker::list_del(std::uint32_t idx) {
    Slot &s = slots_[idx];
    if (s.prev >= 0)
        slots_[s.prev].next = s.next;
    else
        list_head_ = s.next;
    if (s.next >= 0)
        slots_[s.next].prev = s.prev;
    else
        list_tail_ = s.prev;
    s.prev = s.next = -1;
    --n_binding_;
    if (by_source_) {
        void *d = nullptr;
        if (rte_hash_lookup_data(by_source_, &s.ckey.saddr[0], &d) < 0) return;
        const auto n = reinterpret_cast<std::uintptr_t>(d);
        if (n <= 1)
            rte_hash_del_key(by_source_, &s.ckey.saddr[0]);
        else
            rte_hash_add_key_data(by_source_, &s.ckey.saddr[0], reinterpret_cast<void *>(n - 1));
    }
}

// Slots a client address holds while they are being bound.
unsigned Worker::held_by(std::uint32_t saddr) const {
    void *d = nullptr;
    if (!by_source_ || rte_hash_lookup_data(by_source_, &saddr, &d) < 0) return 0;
    return static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(d));
}

// Full: the oldest holding slot whose request head is still incomplete after a silent gap (the
// slowloris shape) makes room; a client that sent a complete head is never evicted for another.
bool Worker::evict_stalled(std::uint64_t now) {
    unsigned looked = 0;
    for (std::int32_t i = list_head_; i >= 0 && looked < 64; i = slots_[i].next, ++looked) {
        Slot &s = slots_[i];
        if (s.st != St::Holding || !s.head_incomplete || now - s.last_seg < gap_ticks_) continue;
        inc(KVS_R_DP_HOLD_EVICTED);
        rst_client(s);
        release(static_cast<std::uint32_t>(i), false);
        return true;
    }
    return false;
}

}  // namespace kvsteer::dp
