// Backend choice for one flow, as the dataplane makes it (and the simulator replays it):
// the affinity table, then bounded-load Maglev; or one of the baselines (round robin, 5-tuple
// Maglev), as kvs_config.steer_mode says.
#pragma once

#include <cstdint>
#include <span>

#include "kvsteer/abi.h"
#include "kvsteer/core/prefix_hash.h"
#include "kvsteer/core/tables.h"

namespace kvsteer {

struct Choice {
    std::uint16_t backend = KVS_BACKEND_NONE;  // KVS_BACKEND_NONE: no eligible backend
    std::uint8_t via = KVS_VIA_MAGLEV;         // enum kvs_choice_via
};

// Per-worker scratch so a choice allocates nothing.
struct ChooseScratch {
    std::uint32_t in_flight[KVS_MAX_BACKENDS];
    std::uint8_t eligible[KVS_MAX_BACKENDS];
    std::uint32_t rr_cursor = 0;
};

// Reads t.config, t.backends, t.load, t.maglev and t.affinity (nothing else). Eligible: state
// KVS_BE_UP and not in `exclude` (the backends this flow already tried; non-empty makes `via`
// KVS_VIA_RETRY). In-flight: binds - closes. PREFIX mode: the least loaded replica of the
// deepest affinity match whose in_flight + 1 stays within its backend's max_load, or, when that
// is 0, within affinity_bound() (load_bound.h: c x the mean, never below the least in_flight + 1
// + load_slack); else choose_least_loaded() over the active Maglev half on h.prefix with
// miss_tolerance(c, total, n) (the first backend of the walk within floor((c - 1) x mean) of the
// least loaded: the least loaded at light load; via MAGLEV when that is the walk's first
// candidate, else MAGLEV_SPILL).
// FIVE_TUPLE: Maglev on `five_tuple_hash`, load ignored. ROUND_ROBIN: the next eligible id.
// `family` (enum kvs_family): only backends of that address family are eligible (a flow is
// never translated between IPv4 and IPv6); KVS_AF_NONE: any.
Choice choose_backend(const Tables &t, const PrefixHashes &h, std::uint64_t five_tuple_hash,
                      std::span<const std::uint16_t> exclude, ChooseScratch &s,
                      std::uint8_t family = KVS_AF_NONE) noexcept;

}  // namespace kvsteer
