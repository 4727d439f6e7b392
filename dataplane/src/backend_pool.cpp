#include "backend_pool.h"

#include <algorithm>
#include <cstring>

#include "kvsteer/proto.h"
#include "kvsteer/reasons.h"

namespace kvsteer::dp {

BackendPool::BackendPool(const PoolConfig &cfg) : cfg_(cfg) {
    if (!enabled()) return;
    legs_.resize(static_cast<std::size_t>(KVS_MAX_BACKENDS) * cfg_.per_backend);
    demand_.assign(KVS_MAX_BACKENDS, 0);
    demand_prev_.assign(KVS_MAX_BACKENDS, 0);
    live_.assign(KVS_MAX_BACKENDS, 0);
}

BackendPool::LegKey BackendPool::LegKey::of(const kvs_flow_key &k) {
    LegKey r{};
    std::memcpy(r.addr, k.saddr, sizeof r.addr);
    r.bport = k.sport;
    r.port = kvs_ntohs(k.dport);
    r.family = k.family;
    return r;
}

BackendPool::LegKey BackendPool::LegKey::of(const PoolLeg &l) {
    LegKey r{};
    std::memcpy(r.addr, l.addr, sizeof r.addr);
    r.bport = l.bport;
    r.port = l.port;
    r.family = l.family;
    return r;
}

std::size_t BackendPool::LegKeyHash::operator()(const LegKey &k) const {
    std::uint64_t h = (std::uint64_t{k.port} << 24) ^ (std::uint64_t{k.bport} << 8) ^ k.family;
    for (std::uint32_t a : k.addr) h = (h ^ a) * 0x9e3779b97f4a7c15ull;
    return static_cast<std::size_t>(h ^ (h >> 29));
}

bool BackendPool::same_backend(const PoolLeg &l, const kvs_backend &b) {
    return b.family == l.family && b.port == l.bport && std::memcmp(b.addr, l.addr, 16) == 0;
}

std::uint32_t BackendPool::target(std::uint16_t backend) const {
    if (!enabled() || backend >= KVS_MAX_BACKENDS) return 0;
    const std::uint32_t want = std::max(demand_[backend], demand_prev_[backend]);
    return std::min(std::min(cfg_.per_backend, cfg_.open_per_backend),
                    std::max(want, cfg_.min_per_backend));
}

void BackendPool::upkeep(const Tables &t, std::uint64_t now, PoolHost &host) {
    if (!enabled() || !t.config || !t.backends) return;
    if (now - period_start_ >= cfg_.max_age) {  // a new demand period
        demand_prev_.swap(demand_);
        std::fill(demand_.begin(), demand_.end(), 0u);
        period_start_ = now;
    }
    const std::uint32_t n = std::min<std::uint32_t>(t.config->n_backends, KVS_MAX_BACKENDS);
    std::uint32_t opens = 0;
    // Backends past the used ones are looked at only while they still have legs (opened before
    // the table shrank).
    const std::uint32_t span = std::max(n, span_);
    span_ = n;
    for (std::uint32_t b = 0; b < span; ++b) {
        // Nothing to age and nothing to open: the backend's legs are not read (with reuse alone,
        // or a pool sized by demand, most backends of a large table are so at any time).
        if (live_[b] == 0 && target(static_cast<std::uint16_t>(b)) == 0) continue;
        const kvs_backend &be = t.backends[b];
        // A backend that cannot be chosen now keeps no legs (a gone one's legs are retired).
        const bool wanted =
            b < n && be.state == KVS_BE_UP && kvs_snat_addr(t.config, be.family) != nullptr;
        // Legs open or opening, against the demand: only that many are (re)opened.
        const std::uint32_t goal = wanted ? target(static_cast<std::uint16_t>(b)) : 0;
        std::uint32_t live = live_[b];
        for (std::uint32_t i = 0; i < cfg_.per_backend; ++i) {
            PoolLeg &l = leg(static_cast<std::uint16_t>(b), i);
            switch (l.state) {
                case PoolLeg::State::Ready:
                    if (!wanted || !same_backend(l, be) || now - l.since >= cfg_.max_age) {
                        host.inc(KVS_R_DP_POOL_RETIRED);
                        drop(l, 0, host, true);
                        --live;
                    }
                    break;
                case PoolLeg::State::SynSent:
                    if (!wanted || !same_backend(l, be)) {
                        drop(l, 0, host, true);
                        --live;
                    } else if (now - l.since >= cfg_.syn_timeout) {
                        if (l.tries <= cfg_.syn_retries) {
                            syn(l, now, host);
                        } else {
                            host.inc(KVS_R_DP_POOL_OPEN_FAILED);
                            drop(l, now + cfg_.retry_after, host, true);
                            --live;
                        }
                    }
                    break;
                case PoolLeg::State::Free:
                    break;
            }
            if (l.state != PoolLeg::State::Free) span_ = std::max(span_, b + 1);
            if (l.state == PoolLeg::State::Free && live < goal && now >= l.since &&
                opens < cfg_.opens_per_tick) {
                start(t, l, static_cast<std::uint16_t>(b), now, host);
                live += l.state != PoolLeg::State::Free;
                ++opens;
            }
        }
    }
}

void BackendPool::start(const Tables &t, PoolLeg &l, std::uint16_t backend, std::uint64_t now,
                        PoolHost &host) {
    std::uint16_t port = 0;
    // The flows' ports come first: the pool holds at most max_ports of them.
    if (cfg_.max_ports && held_ >= cfg_.max_ports) return;
    if (!host.take_port(backend, port)) return;  // no port now: the next upkeep tries again
    ++held_;
    ++live_[backend];
    const kvs_backend &be = t.backends[backend];
    l = PoolLeg{};
    l.backend = backend;
    l.port = port;
    std::memcpy(l.addr, be.addr, 16);
    l.bport = be.port;
    l.family = be.family;
    l.isn = host.new_isn();
    l.wscale = cfg_.wscale;
    l.mss = mss(l.family);
    by_leg_[LegKey::of(l)] = static_cast<std::int32_t>(&l - legs_.data());
    syn(l, now, host);
}

void BackendPool::syn(PoolLeg &l, std::uint64_t now, PoolHost &host) {
    l.state = PoolLeg::State::SynSent;
    l.since = now;
    ++l.tries;
    PoolSend s{PoolSend::Kind::Syn};
    s.seq = l.isn;
    s.mss = mss(l.family);
    s.window = 64240;
    s.wscale = cfg_.wscale;
    s.ts = true;
    s.tsval = host.clock_ms();
    host.send(l, s);
}

// Ends a leg: a reset (its SYN or the connection; the backend keeps no TIME_WAIT for it), the
// port back, and no new open before `not_before`.
void BackendPool::drop(PoolLeg &l, std::uint64_t not_before, PoolHost &host, bool rst) {
    if (rst) {
        PoolSend s{PoolSend::Kind::Rst};
        s.seq = l.isn + 1;
        host.send(l, s);
    }
    by_leg_.erase(LegKey::of(l));
    host.give_port(l.backend, l.port);
    --held_;
    --live_[l.backend];
    l.state = PoolLeg::State::Free;
    l.port = 0;
    l.since = not_before;
}

bool BackendPool::draw(const Tables &t, std::uint16_t backend, std::uint16_t client_mss,
                       std::uint64_t now, PoolLeg &out) {
    if (!enabled() || backend >= KVS_MAX_BACKENDS) return false;
    if (demand_[backend] < ~0u) ++demand_[backend];
    const kvs_backend &be = t.backends[backend];
    for (std::uint32_t i = 0; i < cfg_.per_backend; ++i) {
        PoolLeg &l = leg(backend, i);
        if (l.state != PoolLeg::State::Ready || now - l.since >= cfg_.max_age ||
            !same_backend(l, be) || l.mss > client_mss)
            continue;
        out = l;
        by_leg_.erase(LegKey::of(l));  // the port goes with the leg
        --held_;
        --live_[backend];
        l.state = PoolLeg::State::Free;
        l.port = 0;
        l.since = 0;  // replaced at the next upkeep
        return true;
    }
    return false;
}

bool BackendPool::park(const Tables &t, const PoolLeg &in, std::uint64_t now) {
    if (!enabled() || in.backend >= KVS_MAX_BACKENDS || !t.config || !t.backends) return false;
    if (in.backend >= std::min<std::uint32_t>(t.config->n_backends, KVS_MAX_BACKENDS)) return false;
    const kvs_backend &be = t.backends[in.backend];
    if (be.state != KVS_BE_UP || !same_backend(in, be)) return false;
    if (cfg_.max_ports && held_ >= cfg_.max_ports) return false;
    for (std::uint32_t i = 0; i < cfg_.per_backend; ++i) {
        PoolLeg &l = leg(in.backend, i);
        if (l.state != PoolLeg::State::Free) continue;
        l = in;
        l.state = PoolLeg::State::Ready;
        l.reused = true;
        l.tries = 0;
        l.since = now;
        by_leg_[LegKey::of(l)] = static_cast<std::int32_t>(&l - legs_.data());
        ++held_;
        ++live_[in.backend];
        span_ = std::max<std::uint32_t>(span_, in.backend + 1u);
        return true;
    }
    return false;
}

void BackendPool::segment(const kvs_flow_key &k, const BackendSeg &b, std::uint64_t now,
                          PoolHost &host) {
    const auto it = by_leg_.find(LegKey::of(k));
    if (it == by_leg_.end()) {
        host.inc(KVS_R_PUNT_BACKEND_OTHER);
        return;
    }
    PoolLeg &l = legs_[static_cast<std::size_t>(it->second)];
    const std::uint8_t fl = b.flags;
    const bool synack = (fl & (KVS_TCP_SYN | KVS_TCP_ACK)) == (KVS_TCP_SYN | KVS_TCP_ACK);
    if (l.state == PoolLeg::State::SynSent) {
        if ((fl & KVS_TCP_RST) && (fl & KVS_TCP_ACK) && b.ack == l.isn + 1) {
            host.inc(KVS_R_DP_POOL_OPEN_FAILED);  // refused
            drop(l, now + cfg_.retry_after, host, false);
            return;
        }
        if (synack && b.ack == l.isn + 1) {
            l.backend_isn = b.seq;
            l.backend_tsval = b.tsval;
            l.backend_wscale = b.wscale;
            l.ts = b.has_ts;
            l.state = PoolLeg::State::Ready;
            l.since = now;
            PoolSend s{PoolSend::Kind::Ack};
            s.seq = l.isn + 1;
            s.ack = b.seq + 1;
            s.window = 502;  // ~64 KB at the pool's shift; the client's own windows follow
            s.ts = b.has_ts;
            s.tsval = host.clock_ms();
            s.tsecr = b.tsval;
            host.send(l, s);
            host.inc(KVS_R_DP_POOL_OPENED);
            return;
        }
        if ((fl & (KVS_TCP_SYN | KVS_TCP_RST | KVS_TCP_ACK)) == KVS_TCP_ACK) {
            // A challenge ACK (the backend holds this 4-tuple in TIME_WAIT): reset that old
            // connection as a TCP client does and send the SYN again, as often as a SYN is sent
            // again on a timeout: a backend (or a forger) answering every SYN so would keep us
            // sending at its pace. Then the open fails like a timed-out one.
            host.inc(KVS_R_DP_CHALLENGE_ACK);
            PoolSend r{PoolSend::Kind::Rst};
            r.seq = b.ack;
            host.send(l, r);
            if (l.tries <= cfg_.syn_retries) {
                syn(l, now, host);
            } else {
                host.inc(KVS_R_DP_POOL_OPEN_FAILED);
                drop(l, now + cfg_.retry_after, host, false);
            }
            return;
        }
    } else if (l.state == PoolLeg::State::Ready) {
        if (fl & KVS_TCP_RST) {
            host.inc(KVS_R_DP_POOL_CLOSED_BY_BACKEND);
            drop(l, 0, host, false);
            return;
        }
        if (fl & KVS_TCP_FIN) {  // an idle close: answered with a reset, and the leg replaced
            host.inc(KVS_R_DP_POOL_CLOSED_BY_BACKEND);
            drop(l, 0, host, true);
            return;
        }
        if (!synack && b.len &&
            static_cast<std::int32_t>(b.seq + b.len - (l.backend_isn + 1)) > 0) {
            // Bytes nobody asked for (a server's greeting, a late 408): the next request would
            // read them as its response. Reset, and replaced like an idle close.
            host.inc(KVS_R_DP_POOL_CLOSED_BY_BACKEND);
            drop(l, 0, host, true);
            return;
        }
        if (!synack && static_cast<std::int32_t>(b.seq - (l.backend_isn + 1)) < 0) {
            // Before the byte it owes next: a retransmission (the ACK that parked the leg was
            // lost) or a keepalive probe. Acknowledged again, so the backend stops resending.
            host.inc(KVS_R_PUNT_BACKEND_OTHER);
            PoolSend s{PoolSend::Kind::Ack};
            s.seq = l.isn + 1;
            s.ack = l.backend_isn + 1;
            const bool scaled = l.wscale != KVS_WSCALE_NONE && l.backend_wscale != KVS_WSCALE_NONE;
            s.window = static_cast<std::uint16_t>(
                scaled ? std::max(1, 0xffff >> std::min<int>(l.wscale, 14)) : 0xffff);
            s.ts = l.ts;
            const std::uint32_t clock = host.clock_ms();
            s.tsval =
                l.reused && static_cast<std::int32_t>(clock - l.ts_floor) < 0 ? l.ts_floor : clock;
            s.tsecr = b.tsval;
            host.send(l, s);
            return;
        }
        if (synack) {  // our ACK was lost: the backend repeats its SYN-ACK
            host.inc(KVS_R_PUNT_BACKEND_SYNACK);
            PoolSend s{PoolSend::Kind::Ack};
            s.seq = l.isn + 1;
            s.ack = l.backend_isn + 1;
            s.window = 502;
            s.ts = l.ts;
            s.tsval = host.clock_ms();
            s.tsecr = b.tsval;
            host.send(l, s);
            return;
        }
    }
    host.inc(KVS_R_PUNT_BACKEND_OTHER);
}

void BackendPool::close_all(PoolHost &host) {
    for (PoolLeg &l : legs_)
        if (l.state != PoolLeg::State::Free) drop(l, 0, host, true);
}

unsigned BackendPool::ready(std::uint16_t backend) const {
    unsigned n = 0;
    for (std::uint32_t i = 0; enabled() && i < cfg_.per_backend; ++i)
        n += legs_[static_cast<std::size_t>(backend) * cfg_.per_backend + i].state ==
             PoolLeg::State::Ready;
    return n;
}

}  // namespace kvsteer::dp
