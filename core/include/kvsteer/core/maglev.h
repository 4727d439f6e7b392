// Weighted Maglev table and the bounded-load choice over it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvsteer/abi.h"

namespace kvsteer {

struct MaglevBackend {
    std::uint32_t id;  // backend id (index into kvs_backends)
    std::uint64_t
        identity;  // stable across rebuilds (e.g. hash of "addr:port"): drives the permutation
    std::uint32_t weight;  // 0 = not in the table
};

// Builds a table of `size` entries (a prime; default KVS_MAGLEV_SIZE) holding backend ids.
// Every slot is filled when at least one backend has weight > 0, else every slot is
// KVS_BACKEND_NONE. Deterministic: same input -> same table. Weighted: a backend's share of
// slots is proportional to its weight. Adding/removing/re-weighting one backend moves close to
// the ideal fraction of slots.
std::vector<std::uint32_t> build_maglev(std::span<const MaglevBackend> backends,
                                        std::uint32_t size = KVS_MAGLEV_SIZE);

// Lower-disruption alternative with the same output format (any table reader works with it):
// each slot goes to the backend with the highest weighted rendezvous score (w / -ln u, u a hash
// of identity and slot), so adding/removing/re-weighting one backend moves only the slots it
// wins or loses; then no backend keeps more than (1 + max_overload) x its weighted share
// (its weakest surplus slots go to their next-best backend with room). Shares are proportional
// to weight in expectation, not exactly as in Maglev. Deterministic. Cost O(size x backends).
std::vector<std::uint32_t> build_rendezvous_table(std::span<const MaglevBackend> backends,
                                                  std::uint32_t size = KVS_MAGLEV_SIZE,
                                                  double max_overload = 0.05);

// What the bounded-load choice needs to know about each backend id.
struct LoadView {
    std::span<const std::uint32_t> in_flight;  // indexed by backend id
    std::span<const std::uint8_t> eligible;    // 1 = up (not down/drained/empty), by backend id
    // Optional summary of the two spans (count of eligible ids, sum of their in_flight), for a
    // caller that keeps it per burst: skips an O(ids) pass. n_eligible == 0: not given.
    std::uint32_t n_eligible = 0;
    std::uint64_t total_in_flight = 0;
    // Optional, by backend id: the backend's weight over the mean weight of the eligible backends.
    // Empty: all equal (1). Loads are then compared per unit of weight: a backend's load is
    // in_flight / share, and it may take a flow while in_flight + 1 <= bound x share, so a backend
    // of twice the mean weight holds twice the mean's flows (before, weights only ordered the walk
    // and the bounded-load rule split flows equally).
    std::span<const double> share{};

    // in_flight[id] per unit of weight.
    double norm(std::size_t id) const noexcept {
        return share.empty() ? static_cast<double>(in_flight[id]) : in_flight[id] / share[id];
    }
    // Whether `id` may take one more flow under `bound` (in units of the mean weight; one flow at
    // least: a backend far below the mean weight, bound x share < 1, is not out of rotation).
    bool fits(std::size_t id, std::uint64_t bound) const noexcept {
        if (share.empty()) return std::uint64_t{in_flight[id]} + 1 <= bound;
        return static_cast<double>(in_flight[id]) + 1 <=
               std::max(1.0, static_cast<double>(bound) * share[id]);
    }
};

// Consistent hashing with bounded loads over a Maglev table: start at slot hash % size and walk
// successive slots; the first eligible backend whose in_flight + 1 <= load_bound(c, total,
// n_eligible) (load_bound.h: ceil(c * (total+1) / n_eligible), c at least 1; x its share when
// load.share is given) wins. Always terminates; returns KVS_BACKEND_NONE only if no backend is
// eligible. If every eligible backend is over its bound, returns the least loaded eligible one
// (per unit of weight). `spilled` (optional) is set when the first
// eligible candidate was skipped for load.
std::uint32_t choose_bounded(std::span<const std::uint32_t> table, std::uint64_t hash,
                             const LoadView &load, double load_factor,
                             bool *spilled = nullptr) noexcept;

// Least loaded, ties by consistent hashing: the least in_flight (per unit of weight when
// load.share is given) of any eligible backend, then the first eligible backend within
// `tolerance` of it on the walk from slot hash % size. With equal loads
// (an idle cluster) it is the table's choice for the hash, so a prefix keeps its backend; a hash
// shared by many requests (a common preamble) no longer sends them all to one backend. Returns
// KVS_BACKEND_NONE only if no backend is eligible; a least loaded backend that is in no slot (all
// weight 0) is still chosen (lowest id). `spilled` (optional) is set when the first eligible
// candidate of the walk was not the one chosen. load.n_eligible / total_in_flight are not used.
std::uint32_t choose_least_loaded(std::span<const std::uint32_t> table, std::uint64_t hash,
                                  const LoadView &load, std::uint32_t tolerance = 0,
                                  bool *spilled = nullptr) noexcept;

}  // namespace kvsteer
