// Weighted Maglev (Eisenbud et al., NSDI'16) and consistent hashing with bounded loads
// (Mirrokni et al., 2018) walked over the Maglev table.
#include "kvsteer/core/maglev.h"

#include <algorithm>
#include <bitset>
#include <type_traits>
#include <numeric>

#include <xxhash.h>

#include "kvsteer/core/load_bound.h"

namespace kvsteer {
namespace {

// Two independent hashes of a backend's identity give its permutation.
constexpr std::uint64_t kOffsetSeed = 0x6d61676c65766f66ULL;
constexpr std::uint64_t kSkipSeed = 0x6d61676c65767370ULL;

struct Perm {
    std::uint32_t id;
    std::uint64_t identity;
    std::uint64_t weight;
    std::uint64_t next;  // next slot of its permutation
    std::uint64_t skip;
    std::uint64_t credit;  // accumulated weight; one slot per max_weight of credit
};

std::uint64_t hash_identity(std::uint64_t identity, std::uint64_t seed) {
    return XXH3_64bits_withSeed(&identity, sizeof identity, seed);
}

}  // namespace

std::vector<std::uint32_t> build_maglev(std::span<const MaglevBackend> backends,
                                        std::uint32_t size) {
    std::vector<std::uint32_t> table(size, KVS_BACKEND_NONE);
    if (size == 0) return table;

    std::vector<Perm> perms;
    perms.reserve(backends.size());
    for (const MaglevBackend &b : backends) {
        if (b.weight == 0) continue;
        Perm p{b.id, b.identity, b.weight, 0, 1, 0};
        if (size > 1) {
            p.next = hash_identity(b.identity, kOffsetSeed) % size;
            p.skip = hash_identity(b.identity, kSkipSeed) % (size - 1) + 1;
            // A prime size makes every skip a full cycle; for any other size, move the skip
            // to the next value coprime with it so the fill below still terminates.
            while (std::gcd(p.skip, std::uint64_t{size}) != 1) p.skip = p.skip % (size - 1) + 1;
        }
        perms.push_back(p);
    }
    if (perms.empty()) return table;
    // Turn order by identity, so the table does not depend on the order the caller lists them.
    std::sort(perms.begin(), perms.end(), [](const Perm &a, const Perm &b) {
        return a.identity != b.identity ? a.identity < b.identity : a.id < b.id;
    });
    const std::uint64_t max_weight =
        std::max_element(perms.begin(), perms.end(), [](const Perm &a, const Perm &b) {
            return a.weight < b.weight;
        })->weight;

    // Weighted population (as in Katran's Maglev v2): each round every backend earns its weight
    // in credit and claims one slot (its next free preferred slot) per max_weight of credit.
    // Every backend starts with max_weight - weight, so it claims a slot in the first round:
    // one whose weight was below one slot's share got none, and while it was the least loaded
    // every miss walked the whole table (core/README.md: the least loaded is in the table unless
    // its weight is 0). Equal weights start at 0, as before: their tables are unchanged.
    for (Perm &p : perms) p.credit = max_weight - p.weight;
    std::uint32_t filled = 0;
    while (true) {
        for (Perm &p : perms) {
            p.credit += p.weight;
            while (p.credit >= max_weight) {
                p.credit -= max_weight;
                while (table[p.next] != KVS_BACKEND_NONE) {
                    p.next += p.skip;
                    if (p.next >= size) p.next -= size;
                }
                table[p.next] = p.id;
                if (++filled == size) return table;
            }
        }
    }
}

namespace {

// Loads compared as in-flight counts (W false: the integer path, as before weights counted) or
// per unit of weight (W true: in_flight / share).
template <bool W>
struct Loads {
    const LoadView &v;
    using T = std::conditional_t<W, double, std::uint64_t>;
    T at(std::size_t id) const {
        if constexpr (W)
            return v.in_flight[id] / v.share[id];
        else
            return v.in_flight[id];
    }
    bool fits(std::size_t id, std::uint64_t bound) const { return v.fits(id, bound); }
};

template <bool W>
std::uint32_t bounded(std::span<const std::uint32_t> table, std::uint64_t hash,
                      const LoadView &load, double load_factor, bool *spilled) noexcept {
    const Loads<W> L{load};
    const std::size_t n_ids = std::min(load.in_flight.size(), load.eligible.size());
    std::uint64_t total = load.total_in_flight;
    std::uint32_t n_eligible = load.n_eligible;
    if (n_eligible == 0) {
        // Branch-free so the compiler vectorises it (-O3 for this file): at 1024 ids this pass
        // is most of the cost.
        total = 0;
        for (std::size_t id = 0; id < n_ids; ++id) {
            const std::uint32_t e = load.eligible[id] != 0;
            n_eligible += e;
            total += load.in_flight[id] & (0u - e);
        }
    }
    if (n_eligible == 0) return KVS_BACKEND_NONE;

    const std::uint64_t bound = load_bound(load_factor, static_cast<double>(total), n_eligible);

    std::uint32_t best = KVS_BACKEND_NONE;  // least loaded eligible backend seen in the walk
    typename Loads<W>::T best_load = 0;
    bool first = true;
    if (!table.empty()) {
        // Distinct eligible backends seen, to stop once every one has been tried.
        std::bitset<KVS_MAX_BACKENDS> seen;
        std::uint32_t n_seen = 0;
        std::size_t slot = static_cast<std::size_t>(hash % table.size());
        for (std::size_t step = 0; step < table.size(); ++step) {
            const std::uint32_t id = table[slot];
            if (++slot == table.size()) slot = 0;
            if (id >= n_ids || load.eligible[id] == 0) continue;
            if (L.fits(id, bound)) {
                if (spilled != nullptr) *spilled = !first;
                return id;
            }
            first = false;
            if (best == KVS_BACKEND_NONE || L.at(id) < best_load) {
                best = id;
                best_load = L.at(id);
            }
            if (id < KVS_MAX_BACKENDS && !seen.test(id)) {
                seen.set(id);
                if (++n_seen == n_eligible) break;
            }
        }
    }
    if (spilled != nullptr) *spilled = true;
    if (best != KVS_BACKEND_NONE) return best;
    // Eligible backends exist but none is in the table (e.g. all weight 0): still pick one.
    for (std::size_t id = 0; id < n_ids; ++id) {
        if (load.eligible[id] != 0 && (best == KVS_BACKEND_NONE || L.at(id) < best_load)) {
            best = static_cast<std::uint32_t>(id);
            best_load = L.at(id);
        }
    }
    return best;
}

template <bool W>
std::uint32_t least_loaded(std::span<const std::uint32_t> table, std::uint64_t hash,
                           const LoadView &load, std::uint32_t tolerance, bool *spilled) noexcept {
    const Loads<W> L{load};
    const std::size_t n_ids = std::min(load.in_flight.size(), load.eligible.size());
    std::uint32_t argmin = KVS_BACKEND_NONE;
    typename Loads<W>::T min_load = 0;
    for (std::size_t id = 0; id < n_ids; ++id) {
        if (load.eligible[id] != 0 && (argmin == KVS_BACKEND_NONE || L.at(id) < min_load)) {
            argmin = static_cast<std::uint32_t>(id);
            min_load = L.at(id);
        }
    }
    if (argmin == KVS_BACKEND_NONE) return KVS_BACKEND_NONE;
    if (!table.empty()) {
        bool first = true;
        std::size_t slot = static_cast<std::size_t>(hash % table.size());
        for (std::size_t step = 0; step < table.size(); ++step) {
            const std::uint32_t id = table[slot];
            if (++slot == table.size()) slot = 0;
            if (id >= n_ids || load.eligible[id] == 0) continue;
            if (L.at(id) <= min_load + tolerance) {
                if (spilled != nullptr) *spilled = !first;
                return id;
            }
            first = false;
        }
    }
    if (spilled != nullptr) *spilled = true;
    return argmin;
}

}  // namespace

std::uint32_t choose_bounded(std::span<const std::uint32_t> table, std::uint64_t hash,
                             const LoadView &load, double load_factor, bool *spilled) noexcept {
    if (spilled != nullptr) *spilled = false;
    return load.share.empty() ? bounded<false>(table, hash, load, load_factor, spilled)
                              : bounded<true>(table, hash, load, load_factor, spilled);
}

std::uint32_t choose_least_loaded(std::span<const std::uint32_t> table, std::uint64_t hash,
                                  const LoadView &load, std::uint32_t tolerance,
                                  bool *spilled) noexcept {
    if (spilled != nullptr) *spilled = false;
    return load.share.empty() ? least_loaded<false>(table, hash, load, tolerance, spilled)
                              : least_loaded<true>(table, hash, load, tolerance, spilled);
}

}  // namespace kvsteer
