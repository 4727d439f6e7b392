#include "kvsteer/core/choose.h"

#include "kvsteer/core/affinity.h"
#include "kvsteer/core/load_bound.h"
#include "kvsteer/core/maglev.h"

namespace kvsteer {

namespace {
bool excluded(std::span<const std::uint16_t> ex, std::uint32_t id) {
    for (auto e : ex)
        if (e == id) return true;
    return false;
}
}  // namespace

Choice choose_backend(const Tables &t, const PrefixHashes &h, std::uint64_t five_tuple_hash,
                      std::span<const std::uint16_t> exclude, ChooseScratch &s,
                      std::uint8_t family) noexcept {
    const kvs_config &cfg = *t.config;
    // kvsteerd publishes n_backends, backend states and the active table halves with release
    // stores (control/tables.h): acquire loads here, so what they point at is seen complete.
    const std::uint32_t n_published = __atomic_load_n(&cfg.n_backends, __ATOMIC_ACQUIRE);
    std::uint32_t n = n_published < KVS_MAX_BACKENDS ? n_published : KVS_MAX_BACKENDS;
    std::uint32_t n_up = 0;
    std::uint64_t total = 0;
    std::uint32_t min_load = UINT32_MAX;  // least in_flight of an eligible backend
    for (std::uint32_t i = 0; i < n; ++i) {
        const kvs_backend_load &l = t.load[i];
        std::uint64_t b = __atomic_load_n(&l.binds, __ATOMIC_RELAXED);
        std::uint64_t c = __atomic_load_n(&l.closes, __ATOMIC_RELAXED);
        s.in_flight[i] = b > c ? static_cast<std::uint32_t>(b - c) : 0;
        s.eligible[i] = __atomic_load_n(&t.backends[i].state, __ATOMIC_ACQUIRE) == KVS_BE_UP &&
                        (family == KVS_AF_NONE || t.backends[i].family == family) &&
                        !excluded(exclude, i);
        if (s.eligible[i]) {
            ++n_up;
            total += s.in_flight[i];
            if (s.in_flight[i] < min_load) min_load = s.in_flight[i];
        }
    }
    Choice ch;
    if (n_up == 0) return ch;
    const bool retry = !exclude.empty();
    const double c = load_factor(cfg);

    if (cfg.steer_mode == KVS_STEER_ROUND_ROBIN) {
        for (std::uint32_t k = 0; k < n; ++k) {
            std::uint32_t id = (s.rr_cursor + k) % n;
            if (s.eligible[id]) {
                s.rr_cursor = id + 1;
                ch.backend = static_cast<std::uint16_t>(id);
                ch.via = retry ? KVS_VIA_RETRY : KVS_VIA_ROUND_ROBIN;
                return ch;
            }
        }
        return ch;
    }

    LoadView view{std::span<const std::uint32_t>(s.in_flight, n),
                  std::span<const std::uint8_t>(s.eligible, n)};
    const std::uint32_t maglev_half = __atomic_load_n(&cfg.maglev_active, __ATOMIC_ACQUIRE) & 1;
    std::span<const std::uint32_t> table(t.maglev + maglev_half * KVS_MAGLEV_SIZE, KVS_MAGLEV_SIZE);

    if (cfg.steer_mode == KVS_STEER_FIVE_TUPLE) {
        std::uint32_t id = choose_bounded(table, five_tuple_hash, view, 1e9);
        if (id < n) {
            ch.backend = static_cast<std::uint16_t>(id);
            ch.via = retry ? KVS_VIA_RETRY : KVS_VIA_MAGLEV;
        }
        return ch;
    }

    // PREFIX: the deepest affinity match's least-loaded replica within its bound (affinity_bound:
    // c x the mean, never below the least load + 1 + slack); else, a prefix no backend is known to
    // hold, the first backend of the consistent-hash walk on the prefix hash within
    // miss_tolerance() of the least loaded: the least loaded when idle or lightly loaded (a shared
    // preamble no longer sends every miss to one backend), the hash's own backend while loads are
    // within (c - 1) x the mean of each other (a burst of one new prefix stays together).
    const std::uint32_t affinity_half = __atomic_load_n(&cfg.affinity_active, __ATOMIC_ACQUIRE) & 1;
    std::span<const kvs_affinity_entry> half(t.affinity + affinity_half * KVS_AFFINITY_SLOTS,
                                             KVS_AFFINITY_SLOTS);
    if (const kvs_affinity_entry *e = affinity_lookup(half, h)) {
        const std::uint64_t bound = affinity_bound(c, load_slack(cfg), static_cast<double>(total),
                                                   n_up, static_cast<double>(min_load));
        std::uint32_t best = KVS_BACKEND_NONE, best_load = UINT32_MAX;
        for (unsigned r = 0; r < e->n_backends && r < KVS_MAX_REPLICAS; ++r) {
            std::uint32_t id = e->backends[r];
            if (id >= n || !s.eligible[id]) continue;
            const std::uint64_t lim = t.backends[id].max_load ? t.backends[id].max_load : bound;
            if (std::uint64_t{s.in_flight[id]} + 1 > lim) continue;
            if (s.in_flight[id] < best_load) {
                best = id;
                best_load = s.in_flight[id];
            }
        }
        if (best != KVS_BACKEND_NONE) {
            ch.backend = static_cast<std::uint16_t>(best);
            ch.via = retry ? KVS_VIA_RETRY : KVS_VIA_AFFINITY;
            return ch;
        }
    }
    bool spilled = false;
    std::uint32_t id = choose_least_loaded(
        table, h.prefix, view, miss_tolerance(c, static_cast<double>(total), n_up), &spilled);
    if (id < n) {
        ch.backend = static_cast<std::uint16_t>(id);
        ch.via = retry ? KVS_VIA_RETRY : spilled ? KVS_VIA_MAGLEV_SPILL : KVS_VIA_MAGLEV;
    }
    return ch;
}

}  // namespace kvsteer
