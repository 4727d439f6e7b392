#include "kvsteer/core/choose.h"

#include "kvsteer/core/affinity.h"
#include "kvsteer/core/load_bound.h"
#include "kvsteer/core/maglev.h"

#include <algorithm>
#include <cmath>

namespace kvsteer {

namespace {
// The depth kvsteerd gives a fixed-prefix entry (control's kPrefixDepth): shallower than any block.
constexpr std::uint8_t kFixedPrefixDepth = 0xff;

// load_slack scaled by the share of the flight's `n_blocks` blocks an affinity match of `depth`
// covers (a fixed-prefix match: all of it), at least 1.
std::uint32_t depth_slack(std::uint32_t slack, std::uint8_t depth, std::uint32_t n_blocks) {
    if (n_blocks == 0 || depth == kFixedPrefixDepth) return slack;
    const double f = std::min(1.0, (depth + 1.0) / n_blocks);
    return static_cast<std::uint32_t>(std::max(1.0, std::floor(slack * f)));
}

// RecentChoices::intake_family's index of a backend's address family.
unsigned family_slot(std::uint8_t family) {
    return family == KVS_AF_INET6 ? 1 : 0;
}

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
    std::uint64_t weight_sum = 0;
    std::uint32_t first_weight = 0;
    bool weighted = false;                 // the eligible backends' weights differ
    std::uint32_t min_flows = UINT32_MAX;  // least in_flight of an eligible backend
    std::uint32_t n_fam[2] = {0, 0};       // eligible backends by family_slot()
    for (std::uint32_t i = 0; i < n; ++i) {
        const kvs_backend_load &l = t.load[i];
        std::uint64_t b = __atomic_load_n(&l.binds, __ATOMIC_RELAXED);
        std::uint64_t c = __atomic_load_n(&l.closes, __ATOMIC_RELAXED);
        // Kept-alive connections idle between requests carry no load (XDP counts them).
        c += backend_idle(l);
        s.in_flight[i] = (b > c ? static_cast<std::uint32_t>(b - c) : 0) + s.pending[i];
        // Weight 0 is out of rotation, as kvsteerd's tables leave it (before, such a backend was
        // still chosen as the least loaded, after a walk of the whole Maglev table for it).
        const std::uint32_t w = __atomic_load_n(&t.backends[i].weight, __ATOMIC_RELAXED);
        s.eligible[i] = __atomic_load_n(&t.backends[i].state, __ATOMIC_ACQUIRE) == KVS_BE_UP &&
                        w != 0 && (family == KVS_AF_NONE || t.backends[i].family == family) &&
                        !excluded(exclude, i);
        if (s.eligible[i]) {
            ++n_fam[family_slot(t.backends[i].family)];
            if (n_up++ == 0) first_weight = w;
            weighted |= w != first_weight;
            total += s.in_flight[i];
            if (s.in_flight[i] < min_flows) min_flows = s.in_flight[i];
            weight_sum += w;
        }
    }
    Choice ch;
    if (n_up == 0) return ch;
    // Loads count per unit of weight where the weights differ (LoadView::share): a backend of
    // twice the mean weight is as loaded as the mean's with twice its flows.
    // Filled only then (a pass of its own: equal weights, the common case, pay nothing for it).
    // A weight read 0 now (changed since the pass above) counts as 1: never a division by 0.
    if (weighted) {
        const double mean_weight = static_cast<double>(weight_sum) / n_up;
        for (std::uint32_t i = 0; i < n; ++i) {
            if (!s.eligible[i]) continue;
            const std::uint32_t w = __atomic_load_n(&t.backends[i].weight, __ATOMIC_RELAXED);
            s.share[i] = std::max<std::uint32_t>(w, 1) / mean_weight;
        }
    }
    LoadView view{std::span<const std::uint32_t>(s.in_flight, n),
                  std::span<const std::uint8_t>(s.eligible, n)};
    if (weighted) view.share = std::span<const double>(s.share, n);
    double min_load = min_flows;  // least load of an eligible backend (per unit of weight)
    if (weighted) {
        min_load = -1;
        for (std::uint32_t i = 0; i < n; ++i)
            if (s.eligible[i] && (min_load < 0 || view.norm(i) < min_load)) min_load = view.norm(i);
    }
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

    // PREFIX: the recent choice (shared by the workers) for a block deeper than the table knows (a
    // new prefix's burst follows its first request before kvsteerd publishes it); else the deepest
    // affinity match's least-loaded replica within its bound (affinity_bound: c x the mean, never
    // below the least load + 1 + slack; at light load, a holder whose estimated prompt work in
    // flight is far above the least's loses a flow it matches: a work gate; at any load, a holder
    // that took far more flows than the mean in the last few hundred ms loses it: the intake
    // gate, kIntakeSlack);
    // else, a prefix no backend is known to hold, the first
    // backend of the consistent-hash walk on the prefix hash within miss_tolerance() of the
    // least loaded: the least loaded when idle or lightly loaded (a shared preamble no longer
    // sends every miss to one backend), the hash's own backend while loads are within a tenth of
    // the mean of each other.
    const std::uint32_t affinity_half = __atomic_load_n(&cfg.affinity_active, __ATOMIC_ACQUIRE) & 1;
    std::span<const kvs_affinity_entry> half(t.affinity + affinity_half * KVS_AFFINITY_SLOTS,
                                             KVS_AFFINITY_SLOTS);
    const std::uint64_t bound =
        affinity_bound(c, load_slack(cfg), static_cast<double>(total), n_up, min_load);
    const std::uint32_t generation = __atomic_load_n(&cfg.generation, __ATOMIC_ACQUIRE);
    const std::uint32_t n_blocks = std::min<std::uint32_t>(h.n_blocks, KVS_MAX_REPORT_BLOCKS);
    RecentChoices &rc = s.recent != nullptr ? *s.recent : s.own;
    constexpr std::uint32_t kRecentMask = RecentChoices::kSlots - 1;
    // The backend recently chosen for `key`, or KVS_BACKEND_NONE (none, or too old).
    auto recent = [&](std::uint64_t key) -> std::uint32_t {
        const RecentChoices::Slot &r = rc.slot[key & kRecentMask];
        if (key == 0 || __atomic_load_n(&r.key, __ATOMIC_RELAXED) != key) return KVS_BACKEND_NONE;
        const std::uint64_t v = __atomic_load_n(&r.value, __ATOMIC_RELAXED);
        if (generation - static_cast<std::uint32_t>(v) > kRecentGenerations)
            return KVS_BACKEND_NONE;
        return static_cast<std::uint32_t>(v >> 32);
    };
    // Backend `id`'s estimated prompt blocks in flight (RecentChoices::Work), shrunk in
    // proportion where its in-flight count shows closes since the last update.
    auto work_of = [&](std::uint32_t id) -> std::uint64_t {
        const RecentChoices::Work &w = rc.work[id];
        const std::uint64_t flows = __atomic_load_n(&w.flows, __ATOMIC_RELAXED);
        const std::uint64_t blocks = __atomic_load_n(&w.blocks, __ATOMIC_RELAXED);
        const std::uint64_t now = s.in_flight[id];
        if (now >= flows) return blocks;
        return blocks / flows * now + blocks % flows * now / flows;
    };
    const std::uint64_t flow_blocks = std::max<std::uint64_t>({1, n_blocks, h.prompt_blocks});
    // The work gate of an affinity-table holder while the slack, not c x the mean, sets the bound
    // (light load): the holder takes the flow if its work is within c x the mean work, or within
    // kWorkGateRatio (a match covering every block of the flight) or kWorkGatePartialRatio (a
    // shorter one) x the flow's prompt blocks (what the match may save: the flight says nothing
    // past itself) of the least. A fixed-prefix match is not gated. The least and the total work
    // are summed only here (once per choice, and only when the holder's work is above R x the
    // flow's blocks), so a choice that needs no gate pays nothing for it.
    const bool light = load_bound(c, static_cast<double>(total), n_up) < bound;
    // Work compares per unit of weight, as loads do (weight / mean weight: 1 when equal).
    auto share = [&](std::uint32_t id) { return weighted ? s.share[id] : 1.0; };
    double work_min = -1;
    std::uint64_t work_total = 0;
    auto work_ok = [&](std::uint32_t id, std::uint8_t depth) {
        if (!light || depth == kFixedPrefixDepth) return true;
        const std::uint64_t ratio = depth + 1u < n_blocks ? kWorkGatePartialRatio : kWorkGateRatio;
        const double w = static_cast<double>(work_of(id)) / share(id);
        const double allowance = static_cast<double>(ratio * flow_blocks);
        // Within ratio x the flow's blocks of 0, so of the least: no need to sum.
        if (w <= allowance) return true;
        if (work_min < 0) {
            for (std::uint32_t i = 0; i < n; ++i) {
                if (!s.eligible[i]) continue;
                const std::uint64_t wi = work_of(i);
                work_total += wi;
                const double wn = static_cast<double>(wi) / share(i);
                if (work_min < 0 || wn < work_min) work_min = wn;
            }
        }
        if (w + static_cast<double>(flow_blocks) / share(id) <=
            c * static_cast<double>(work_total + flow_blocks) / n_up)
            return true;
        return w <= work_min + allowance;
    };
    // An intake count (RecentChoices::Intake), decayed to now.
    auto decayed = [&](const RecentChoices::Intake &k) -> double {
        const std::uint64_t at = __atomic_load_n(&k.at_ns, __ATOMIC_RELAXED);
        const double v = static_cast<double>(__atomic_load_n(&k.milli, __ATOMIC_RELAXED)) / 1000.0;
        if (s.now_ns <= at) return v;
        return v * std::exp2(-static_cast<double>(s.now_ns - at) / kIntakeHalfLifeNs);
    };
    auto store = [&](RecentChoices::Intake &k, double v) {
        __atomic_store_n(&k.milli, static_cast<std::uint64_t>(std::llround(v * 1000.0)),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&k.at_ns, s.now_ns, __ATOMIC_RELAXED);
    };
    // The intake gate: `id` takes the flow unless its intake with this flow counted, per unit of
    // weight, is above c x the mean intake of its family's eligible backends (this flow counted)
    // + kIntakeSlack. The family's count is read only when the holder's own could fail it (above
    // the slack). The counts read are kept for remember() (each decayed once a choice). A holder
    // the gate refused is not the miss rule's to choose (`gated`), unless no other is eligible.
    std::uint32_t intake_id = KVS_BACKEND_NONE;
    double intake_v = 0;
    double fam_cache[2] = {-1, -1};
    auto fam_count = [&](unsigned f) {
        if (fam_cache[f] < 0) fam_cache[f] = decayed(rc.intake_family[f]);
        return fam_cache[f];
    };
    std::uint32_t gated[KVS_MAX_REPLICAS + 1];
    std::uint32_t n_gated = 0;
    auto intake_ok = [&](std::uint32_t id) {
        if (s.now_ns == 0) return true;
        intake_id = id;
        intake_v = decayed(rc.intake[id]);
        const double v = (intake_v + 1) / share(id);
        if (v <= kIntakeSlack) return true;
        const unsigned f = family_slot(t.backends[id].family);
        if (v <= c * (fam_count(f) + 1) / std::max<std::uint32_t>(n_fam[f], 1) + kIntakeSlack)
            return true;
        if (n_gated < KVS_MAX_REPLICAS + 1) gated[n_gated++] = id;
        return false;
    };
    auto remember = [&](std::uint32_t id) {
        if (retry) return;
        if (s.now_ns != 0) {
            store(rc.intake[id], (intake_id == id ? intake_v : decayed(rc.intake[id])) + 1);
            const unsigned f = family_slot(t.backends[id].family);
            store(rc.intake_family[f], fam_count(f) + 1);
        }
        __atomic_store_n(&rc.work[id].blocks, work_of(id) + flow_blocks, __ATOMIC_RELAXED);
        __atomic_store_n(&rc.work[id].flows, std::uint64_t{s.in_flight[id]} + 1, __ATOMIC_RELAXED);
        const std::uint64_t v = std::uint64_t{id} << 32 | generation;
        for (std::uint32_t i = 0; i < n_blocks; ++i) {
            RecentChoices::Slot &r = rc.slot[h.blocks[i] & kRecentMask];
            __atomic_store_n(&r.key, h.blocks[i], __ATOMIC_RELAXED);
            __atomic_store_n(&r.value, v, __ATOMIC_RELAXED);
        }
    };
    // Whether `id` may take one more flow: within its own max_load when set, and within `limit`
    // (per unit of weight) unless a static max_load replaces it (a queue cap does not).
    auto within = [&](std::uint32_t id, std::uint64_t limit) {
        if (const std::uint32_t max = t.backends[id].max_load) {
            if (std::uint64_t{s.in_flight[id]} + 1 > max) return false;
            if (!t.backends[id].max_load_cap) return true;
        }
        return view.fits(id, limit);
    };
    const kvs_affinity_entry *e = affinity_lookup(half, h);
    {
        int depth = -1;  // deepest block sent recently
        std::uint32_t id = KVS_BACKEND_NONE;
        for (std::uint32_t i = n_blocks; i-- > 0;) {
            id = recent(h.blocks[i]);
            if (id != KVS_BACKEND_NONE) {
                depth = static_cast<int>(i);
                break;
            }
        }
        const int table_depth = e != nullptr && e->depth != kFixedPrefixDepth ? e->depth : -1;
        if (depth > table_depth && id < n && s.eligible[id] && within(id, bound) && intake_ok(id)) {
            ch.backend = static_cast<std::uint16_t>(id);
            ch.via = retry ? KVS_VIA_RETRY : KVS_VIA_AFFINITY;
            remember(id);
            return ch;
        }
    }
    if (e != nullptr) {
        // The slack in proportion to the share of the flight's blocks the match covers (at least
        // 1): a holder of only a shared preamble keeps few requests above the least loaded.
        const std::uint64_t table_bound =
            affinity_bound(c, depth_slack(load_slack(cfg), e->depth, n_blocks),
                           static_cast<double>(total), n_up, min_load);
        std::uint32_t best = KVS_BACKEND_NONE;
        double best_load = 0;
        for (unsigned r = 0; r < e->n_backends && r < KVS_MAX_REPLICAS; ++r) {
            std::uint32_t id = e->backends[r];
            if (id >= n || !s.eligible[id] || !within(id, table_bound) || !work_ok(id, e->depth) ||
                !intake_ok(id))
                continue;
            if (best == KVS_BACKEND_NONE || view.norm(id) < best_load) {
                best = id;
                best_load = view.norm(id);
            }
        }
        if (best != KVS_BACKEND_NONE) {
            ch.backend = static_cast<std::uint16_t>(best);
            ch.via = retry ? KVS_VIA_RETRY : KVS_VIA_AFFINITY;
            remember(best);
            return ch;
        }
    }
    bool spilled = false;
    // A holder the intake gate refused sits this choice out (it is most often the least loaded:
    // the miss rule would give the flow straight back), unless it leaves no one.
    for (std::uint32_t i = 0; i < n_gated; ++i) s.eligible[gated[i]] = 0;
    std::uint32_t id = choose_least_loaded(
        table, h.prefix, view, miss_tolerance(static_cast<double>(total), n_up), &spilled);
    if (n_gated != 0) {
        for (std::uint32_t i = 0; i < n_gated; ++i) s.eligible[gated[i]] = 1;
        if (id >= n)
            id = choose_least_loaded(table, h.prefix, view,
                                     miss_tolerance(static_cast<double>(total), n_up), &spilled);
    }
    if (id < n) {
        ch.backend = static_cast<std::uint16_t>(id);
        ch.via = retry ? KVS_VIA_RETRY : spilled ? KVS_VIA_MAGLEV_SPILL : KVS_VIA_MAGLEV;
        remember(id);
    }
    return ch;
}

}  // namespace kvsteer
