#include "kvsteer/control/affinity_policy.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "kvsteer/core/load_bound.h"

namespace kvsteer::control {

// Formats a decision line only when someone listens (compute() runs over many prefixes).
#define KVS_DECISION(...)                           \
    do {                                            \
        if (sink_) sink_(fmt::format(__VA_ARGS__)); \
    } while (0)

AffinityPolicy::AffinityPolicy(const PolicyParams &p) : p_(p) {
    nodes_.reserve(std::min<std::size_t>(p_.index_max, 1u << 20));  // no rehash storms under load
}

double AffinityPolicy::rate_at(const Node &n, std::uint64_t now_ns) const {
    double dt = now_ns > n.rate_ns ? static_cast<double>(now_ns - n.rate_ns) * 1e-9 : 0.0;
    return n.rate * std::exp(-dt / p_.rate_tau_s);
}

bool AffinityPolicy::eligible(std::uint16_t id) const {
    return id < backends_.size() && backends_[id].present && backends_[id].snap.eligible;
}

unsigned AffinityPolicy::family_slot(std::uint16_t id) const {
    return id < backends_.size() && backends_[id].present &&
                   backends_[id].snap.family == KVS_AF_INET6
               ? 1
               : 0;
}

double AffinityPolicy::load_of(std::uint16_t id) const {
    return id < backends_.size() && backends_[id].present ? backends_[id].load : 0.0;
}

double AffinityPolicy::share_of(std::uint16_t id) const {
    return id < backends_.size() && backends_[id].present && backends_[id].snap.share > 0
               ? backends_[id].snap.share
               : 1.0;
}

void AffinityPolicy::erase(Node *n) {
    lru_.erase(n->lru);
    nodes_.erase(n->key);
}

void AffinityPolicy::touch(std::uint64_t key, std::uint8_t depth, std::uint16_t backend,
                           std::uint64_t now_ns) {
    if (key == 0) return;  // 0 marks an empty slot; hashes never produce it
    auto [it, fresh] = nodes_.try_emplace(key);
    Node &n = it->second;
    if (fresh) {
        n.depth = depth;
        n.key = key;
        n.rate_ns = now_ns;
        lru_.push_front(&n);
        n.lru = lru_.begin();
        c_.keys_learned++;
    } else {
        lru_.splice(lru_.begin(), lru_, n.lru);
    }
    // Exponentially decayed event rate: decay to now, then add one event.
    n.rate = rate_at(n, now_ns) + 1.0 / p_.rate_tau_s;
    n.rate_ns = std::max(n.rate_ns, now_ns);
    n.last_ns = std::max(n.last_ns, now_ns);
    for (unsigned i = 0; i < n.n_holders; i++) {
        if (n.holders[i].id == backend) {
            n.holders[i].last_ns = std::max(n.holders[i].last_ns, now_ns);
            return;
        }
    }
    if (n.n_holders < n.holders.size()) {
        n.holders[n.n_holders++] = {backend, now_ns};
    } else {
        auto oldest = std::min_element(
            n.holders.begin(), n.holders.end(),
            [](const Holder &a, const Holder &b) { return a.last_ns < b.last_ns; });
        *oldest = {backend, now_ns};
    }
    c_.holders_added++;
    if (fresh && nodes_.size() > p_.index_max) {
        erase(lru_.back());
        c_.keys_evicted++;
    }
}

void AffinityPolicy::on_report(const kvs_bind_report &r, std::uint64_t now_ns) {
    if (r.backend_id >= KVS_MAX_BACKENDS || r.n_blocks > KVS_MAX_REPORT_BLOCKS) {
        c_.reports_ignored++;
        return;
    }
    c_.reports++;
    // Keyed on the connection (no prompt seen): nothing any other flow shares. Learned, each
    // added an index entry of its own (evicting prompts' ones).
    if (r.key_kind == KVS_KEY_FIVE_TUPLE) {
        c_.reports_unkeyed++;
        return;
    }
    touch(r.prefix_hash, kPrefixDepth, r.backend_id, now_ns);
    for (unsigned i = 0; i < r.n_blocks; i++)
        touch(r.block_hash[i], static_cast<std::uint8_t>(i), r.backend_id, now_ns);
}

void AffinityPolicy::update_backends(std::span<const BackendSnapshot> backends, std::uint64_t) {
    std::vector<BackendState> next(KVS_MAX_BACKENDS);
    for (const auto &s : backends) {
        if (s.id >= KVS_MAX_BACKENDS) continue;
        BackendState st;
        const BackendState &old = backends_[s.id];
        if (old.present)
            st.prev_hit_rate = old.snap.hit_rate ? old.snap.hit_rate : old.prev_hit_rate;
        st.present = true;
        st.snap = s;
        st.load = static_cast<double>(s.in_flight) + s.queue.value_or(0.0);
        // Cache pressure: a nearly full cache evicts, so its prefixes are forgotten sooner;
        // a falling hit rate on a full cache says eviction is happening now.
        double f = 1.0;
        if (s.kv_usage && *s.kv_usage >= 0.9) f = std::max(0.25, 1.0 - (*s.kv_usage - 0.9) * 7.5);
        if (s.kv_usage && *s.kv_usage >= 0.8 && s.hit_rate && st.prev_hit_rate &&
            *s.hit_rate < 0.75 * *st.prev_hit_rate)
            f *= 0.5;
        st.ttl_factor = f;
        if (f < 1.0) {
            c_.ttl_shortened++;
            KVS_DECISION(
                "affinity: backend {} cache pressure (usage {:.2f}, hit rate {}): ttl x{:.2f}",
                s.id, s.kv_usage.value_or(-1),
                s.hit_rate ? fmt::format("{:.2f}", *s.hit_rate) : "unknown", f);
        }
        next[s.id] = st;
        if (s.cache_reset) forget_backend(s.id);
    }
    backends_ = std::move(next);
}

void AffinityPolicy::forget_backend(std::uint16_t id) {
    std::uint64_t flushed = 0;
    for (auto &kv : nodes_) {
        Node &n = kv.second;
        for (unsigned i = 0; i < n.n_holders;) {
            if (n.holders[i].id == id) {
                n.holders[i] = n.holders[--n.n_holders];
                flushed++;
            } else {
                i++;
            }
        }
        for (unsigned i = 0; i < n.n_extra;) {
            if (n.extra[i] == id)
                n.extra[i] = n.extra[--n.n_extra];
            else
                i++;
        }
    }
    c_.holders_flushed += flushed;
    if (flushed)
        KVS_DECISION("affinity: backend {} forgotten ({} prefix holdings dropped)", id, flushed);
}

void AffinityPolicy::pin(std::uint64_t key, std::vector<std::uint16_t> backends) {
    if (backends.size() > KVS_MAX_REPLICAS) backends.resize(KVS_MAX_REPLICAS);
    KVS_DECISION("affinity: pin {:#018x} -> {} backends", key, backends.size());
    pins_[key] = std::move(backends);
}

std::size_t AffinityPolicy::unpin_backend(std::uint16_t id) {
    std::size_t changed = 0;
    for (auto it = pins_.begin(); it != pins_.end();) {
        auto &ids = it->second;
        const auto n = ids.size();
        ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
        if (ids.size() == n) {
            ++it;
            continue;
        }
        changed++;
        KVS_DECISION("affinity: pin {:#018x} loses backend {}{}", it->first, id,
                     ids.empty() ? " (no backend left: unpinned)" : "");
        it = ids.empty() ? pins_.erase(it) : std::next(it);
    }
    return changed;
}

bool AffinityPolicy::unpin(std::uint64_t key) {
    KVS_DECISION("affinity: unpin {:#018x}", key);
    return pins_.erase(key) > 0;
}

AffinityPolicy::Round AffinityPolicy::begin_round() const {
    // Load bound over eligible backends: the dataplane's rule for an affinity choice
    // (affinity_bound: c x the mean, never below the least load + 1 + slack), but over the
    // daemon's view of load, in_flight plus the backend's own waiting queue (the dataplane counts
    // only in_flight), so holders with a queue look fuller here than to the dataplane.
    Round r;
    r.K = std::clamp<unsigned>(p_.replication, 1, KVS_MAX_REPLICAS);
    // The least per unit of weight (the dataplane's rule; equal weights: the least load), per
    // address family: a flow is bound within its own (before, one bound over both families
    // called an IPv4 holder over it by the IPv6 backends' idleness, and a replica of an IPv4
    // holder's prefix could go to an IPv6 backend, which that prefix's flows never use).
    std::array<double, 2> total{}, least{};
    for (std::uint16_t id = 0; id < backends_.size(); id++) {
        if (!eligible(id)) continue;
        const unsigned f = family_slot(id);
        total[f] += load_of(id);
        const double per = load_of(id) / share_of(id);
        least[f] = r.n_elig[f] == 0 ? per : std::min(least[f], per);
        r.n_elig[f]++;
        r.elig.push_back(id);
    }
    for (unsigned f = 0; f < 2; f++)
        r.bound[f] = static_cast<double>(
            affinity_bound(p_.load_factor, p_.load_slack, total[f], r.n_elig[f], least[f]));
    r.planned.assign(KVS_MAX_BACKENDS, 0.0);
    return r;
}

void AffinityPolicy::add_pinned(std::vector<DesiredEntry> &out) {
    for (const auto &[key, ids] : pins_) {
        if (out.size() >= p_.max_entries) break;  // the API keeps pins to a quarter of it
        DesiredEntry e;
        e.key = key;
        e.pinned = true;
        // The key's depth as its reports gave it (a fixed-length prefix's kPrefixDepth, a block's
        // index), so the dataplane weighs a pinned entry as the same match learned: at depth 0 a
        // pinned prefix was taken for a one-block match (its load slack cut to a block's share);
        // a key never reported stays at 0.
        if (auto it = nodes_.find(key); it != nodes_.end()) e.depth = it->second.depth;
        for (auto id : ids) {
            if (eligible(id) && e.n < KVS_MAX_REPLICAS)
                e.backends[e.n++] = id;
            else if (!eligible(id))
                c_.excluded_ineligible++;
        }
        if (e.n == 0) {
            c_.entries_no_backend++;
            continue;
        }
        out.push_back(e);
    }
}

void AffinityPolicy::expire_idle(std::uint64_t now_ns) {
    // From the old end: the LRU tail holds the least recently requested prefixes.
    while (!lru_.empty()) {
        Node *n = lru_.back();
        if (!(now_ns > n->last_ns && now_ns - n->last_ns > p_.ttl_ns)) break;
        KVS_DECISION("affinity: {:#018x} expired (idle)", n->key);
        c_.holders_expired += n->n_holders;
        c_.keys_expired++;
        erase(n);
    }
}

bool AffinityPolicy::age_holders(Node &n, std::uint64_t now_ns) {
    // Each holder with its backend's TTL (shorter under cache pressure).
    for (unsigned i = 0; i < n.n_holders;) {
        double f = n.holders[i].id < backends_.size() && backends_[n.holders[i].id].present
                       ? backends_[n.holders[i].id].ttl_factor
                       : 1.0;
        auto ttl = static_cast<std::uint64_t>(static_cast<double>(p_.ttl_ns) * f);
        if (now_ns > n.holders[i].last_ns && now_ns - n.holders[i].last_ns > ttl) {
            KVS_DECISION("affinity: {:#018x} expired on backend {}", n.key, n.holders[i].id);
            n.holders[i] = n.holders[--n.n_holders];
            c_.holders_expired++;
        } else {
            i++;
        }
    }
    return n.n_holders > 0;
}

DesiredEntry AffinityPolicy::holders_entry(const Node &n, const Round &r, bool *all_over) {
    // Holders, most recent first (ties by id; insertion sort of at most 4), that may take new
    // flows, up to K.
    std::array<Holder, KVS_MAX_REPLICAS> hs = n.holders;
    for (unsigned i = 1; i < n.n_holders && i < hs.size(); i++) {
        Holder h = hs[i];
        unsigned j = i;
        for (; j > 0 && (hs[j - 1].last_ns < h.last_ns ||
                         (hs[j - 1].last_ns == h.last_ns && hs[j - 1].id > h.id));
             j--)
            hs[j] = hs[j - 1];
        hs[j] = h;
    }
    DesiredEntry e;
    e.key = n.key;
    e.depth = n.depth;
    *all_over = true;
    for (unsigned i = 0; i < n.n_holders; i++) {
        if (!eligible(hs[i].id)) {
            c_.excluded_ineligible++;
            continue;
        }
        if (e.n < r.K) {
            e.backends[e.n++] = hs[i].id;
            // Over its bound x its share (LoadView::fits: one flow at least).
            *all_over =
                *all_over && load_of(hs[i].id) + 1 >
                                 std::max(1.0, r.bound[family_slot(hs[i].id)] * share_of(hs[i].id));
        }
    }
    return e;
}

void AffinityPolicy::update_hot(Node &n, const DesiredEntry &e, bool all_over, const Round &r,
                                const RemoteKey *rk, std::uint64_t now_ns) {
    const double local = rate_at(n, now_ns);
    // The other appliances' requests count as ours: together they may make a prefix hot that
    // none of them sees enough of alone.
    const double rate = rk ? local + rk->rate : local;
    bool load_hot = e.n > 0 && all_over && r.n_elig[family_slot(e.backends[0])] > e.n;
    bool was_hot = n.hot;
    // own_hot: this appliance's evidence, with its hysteresis and hold; what it shares. A remote
    // "hot" only adds to it here (never shared on: two appliances would keep each other hot).
    const bool was_own = n.own_hot;
    n.own_hot = load_hot || rate >= p_.hot_rps || (was_own && rate >= p_.hot_rps * p_.cool_ratio);
    const std::uint64_t hot_for = now_ns > n.hot_since_ns ? now_ns - n.hot_since_ns : 0;
    if (was_own && !n.own_hot && hot_for < p_.min_hot_ns) {
        // Too soon to cool: at most one hot period per min_hot_ns. No minimum cool time on
        // the way back: a prefix whose holders are over the bound again needs its replicas now.
        n.own_hot = true;
        c_.held_hot++;
    }
    n.hot = n.own_hot || (rk && rk->hot);
    if (load_hot) c_.over_bound++;
    if (n.hot && !was_hot) {
        n.hot_since_ns = now_ns;
        c_.became_hot++;
        const bool remote_made = !load_hot && local < p_.hot_rps;
        if (remote_made) c_.remote_became_hot++;
        KVS_DECISION("affinity: {:#018x} hot (rate {:.1f}/s{}{})", n.key, rate,
                     load_hot ? ", holders over load bound" : "",
                     remote_made ? fmt::format(", {:.1f}/s of it and hot={} from the fleet",
                                               rk ? rk->rate : 0.0, rk && rk->hot)
                                 : "");
    } else if (!n.hot && was_hot) {
        c_.cooled++;
        KVS_DECISION("affinity: {:#018x} cooled (rate {:.1f}/s), {} extra replicas dropped", n.key,
                     rate, n.n_extra);
        c_.replicas_dropped += n.n_extra;
        n.n_extra = 0;
    }
}

void AffinityPolicy::add_replicas(Node &n, DesiredEntry &e, Round &r, const RemoteKey *rk) {
    auto in_entry = [&](std::uint16_t id) {
        return std::find(e.backends.begin(), e.backends.begin() + e.n, id) !=
               e.backends.begin() + e.n;
    };
    // Keep earlier extra replicas (stable tables), dropping ineligible ones.
    unsigned keep = 0;
    for (unsigned i = 0; i < n.n_extra; i++) {
        auto id = n.extra[i];
        if (eligible(id) && !in_entry(id) && e.n < r.K) {
            e.backends[e.n++] = id;
            n.extra[keep++] = id;
        } else if (!eligible(id)) {
            c_.replicas_dropped++;
        }
    }
    n.n_extra = static_cast<std::uint8_t>(keep);
    // The fleet's holders before any new replica: fewer copies of the prefix across the fleet.
    if (rk) add_remote(e, *rk, r);
    while (e.n < r.K) {
        // Least loaded eligible backend not already in the entry; ties by a per-key hash.
        // Replicas planned in this round count as load so hot prefixes spread out.
        std::optional<std::uint16_t> best;
        double best_load = 0;
        std::uint64_t best_tie = 0;
        for (auto id : r.elig) {
            // Within the holders' family: the prefix's flows are bound there.
            if (in_entry(id) || (e.n > 0 && family_slot(id) != family_slot(e.backends[0])))
                continue;
            double l = (load_of(id) + r.planned[id]) / share_of(id);
            std::uint64_t tie =
                (n.key ^ (0x9e3779b97f4a7c15ull * (id + 1))) * 0xff51afd7ed558ccdull;
            if (!best || l < best_load || (l == best_load && tie < best_tie)) {
                best = id;
                best_load = l;
                best_tie = tie;
            }
        }
        if (!best) break;
        e.backends[e.n++] = *best;
        n.extra[n.n_extra++] = *best;
        r.planned[*best] += 1;
        c_.replicas_added++;
        KVS_DECISION("affinity: {:#018x} replicated to backend {}", n.key, *best);
    }
}

std::vector<DesiredEntry> AffinityPolicy::compute(std::uint64_t now_ns) {
    Round r = begin_round();
    std::vector<DesiredEntry> out;
    add_pinned(out);
    expire_idle(now_ns);
    // Most recently requested first, until the table budget is used; the rest wait their turn.
    auto it = lru_.begin();
    std::size_t passed = 0;  // nodes kept behind the cursor
    while (it != lru_.end() && out.size() < p_.max_entries) {
        Node &n = **it++;
        if (!age_holders(n, now_ns)) {
            c_.keys_expired++;
            erase(&n);
            continue;
        }
        ++passed;
        if (pins_.count(n.key)) continue;
        bool all_over = true;
        DesiredEntry e = holders_entry(n, r, &all_over);
        const RemoteKey *rk = remote(n.key);
        update_hot(n, e, all_over, r, rk, now_ns);
        if (n.hot)
            add_replicas(n, e, r, rk);
        else if (rk)
            add_remote(e, *rk, r);
        e.hot = n.hot;
        if (e.n == 0) {
            c_.entries_no_backend++;
            continue;
        }
        out.push_back(e);
    }
    c_.entries_truncated += lru_.size() - passed;
    add_remote_only(out, r);
    return out;
}

const RemoteKey *AffinityPolicy::remote(std::uint64_t key) const {
    if (remote_.empty()) return nullptr;
    auto it = remote_.find(key);
    return it == remote_.end() ? nullptr : &remote_keys_[it->second];
}

void AffinityPolicy::add_remote(DesiredEntry &e, const RemoteKey &rk, const Round &r) {
    for (std::uint16_t id : rk.holders) {
        if (e.n >= r.K) break;
        if (!eligible(id) ||
            std::find(e.backends.begin(), e.backends.begin() + e.n, id) != e.backends.begin() + e.n)
            continue;
        e.backends[e.n++] = id;
        c_.remote_holders_used++;
    }
}

void AffinityPolicy::add_remote_only(std::vector<DesiredEntry> &out, const Round &r) {
    // Prefixes other appliances see but this one has not (yet): its first request goes where the
    // prefix is cached already. Learned only from this appliance's own reports.
    for (const RemoteKey &k : remote_keys_) {
        if (out.size() >= p_.max_entries) break;
        if ((!k.hot && k.holders.empty()) || nodes_.count(k.key) || pins_.count(k.key)) continue;
        DesiredEntry e;
        e.key = k.key;
        e.depth = k.depth;
        e.hot = k.hot;
        add_remote(e, k, r);
        if (e.n == 0) continue;
        c_.remote_entries++;
        out.push_back(e);
    }
}

void AffinityPolicy::set_remote(std::vector<RemoteKey> keys) {
    std::unordered_map<std::uint64_t, std::size_t> at;
    std::vector<RemoteKey> merged;
    for (auto &k : keys) {
        if (k.key == 0) continue;
        auto [it, fresh] = at.try_emplace(k.key, merged.size());
        if (fresh) {
            merged.push_back(std::move(k));
            continue;
        }
        // The same key twice: one view of it.
        RemoteKey &m = merged[it->second];
        m.rate += k.rate;
        m.hot = m.hot || k.hot;
        for (std::uint16_t id : k.holders)
            if (std::find(m.holders.begin(), m.holders.end(), id) == m.holders.end())
                m.holders.push_back(id);
    }
    std::sort(merged.begin(), merged.end(), [](const RemoteKey &a, const RemoteKey &b) {
        return a.rate != b.rate ? a.rate > b.rate : a.key < b.key;
    });
    remote_.clear();
    for (std::size_t i = 0; i < merged.size(); i++) remote_[merged[i].key] = i;
    remote_keys_ = std::move(merged);
}

std::vector<AffinityPolicy::KeyInfo> AffinityPolicy::top(std::size_t max, double min_rate,
                                                         std::uint64_t now_ns) const {
    std::vector<std::pair<double, const Node *>> c;
    for (const auto &kv : nodes_) {
        const Node &n = kv.second;
        const double rate = rate_at(n, now_ns);
        if ((rate >= min_rate || n.own_hot) && (n.n_holders + n.n_extra > 0 || n.own_hot))
            c.emplace_back(rate, &n);
    }
    auto by_rate = [](const auto &a, const auto &b) {
        return a.first != b.first ? a.first > b.first : a.second->key < b.second->key;
    };
    if (c.size() > max) {
        std::partial_sort(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(max), c.end(),
                          by_rate);
        c.resize(max);
    } else {
        std::sort(c.begin(), c.end(), by_rate);
    }
    std::vector<KeyInfo> out;
    out.reserve(c.size());
    for (const auto &[rate, n] : c) {
        KeyInfo k{n->key, n->depth, rate, n->hot, {}, {}, n->own_hot};
        for (unsigned i = 0; i < n->n_holders; i++) k.holders.push_back(n->holders[i].id);
        for (unsigned i = 0; i < n->n_extra; i++) k.extra.push_back(n->extra[i]);
        out.push_back(std::move(k));
    }
    return out;
}

std::optional<AffinityPolicy::KeyInfo> AffinityPolicy::info(std::uint64_t key,
                                                            std::uint64_t now_ns) const {
    auto it = nodes_.find(key);
    if (it == nodes_.end()) return std::nullopt;
    const Node &n = it->second;
    KeyInfo k{key, n.depth, rate_at(n, now_ns), n.hot, {}, {}, n.own_hot};
    for (unsigned i = 0; i < n.n_holders; i++) k.holders.push_back(n.holders[i].id);
    for (unsigned i = 0; i < n.n_extra; i++) k.extra.push_back(n.extra[i]);
    return k;
}

}  // namespace kvsteer::control
