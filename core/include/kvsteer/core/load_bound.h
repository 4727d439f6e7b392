// The bounded-load rule (consistent hashing with bounded loads, Mirrokni et al. 2018): the one
// definition that the Maglev walk, the dataplane's backend choice and the daemon's affinity
// policy all apply.
#pragma once

#include <cstdint>

#include "kvsteer/abi.h"

namespace kvsteer {

// Bounded-load factor c when kvs_config.load_factor_milli is 0 (abi.h holds the one value).
inline constexpr double kDefaultLoadFactor = KVS_DEFAULT_LOAD_FACTOR_MILLI / 1000.0;

// c as published in the config: load_factor_milli / 1000, kDefaultLoadFactor when it is 0.
double load_factor(const kvs_config &c) noexcept;

// The bound's absolute slack as published in the config: load_slack, KVS_DEFAULT_LOAD_SLACK when 0.
std::uint32_t load_slack(const kvs_config &c) noexcept;

// The most flows one of `n` eligible backends may hold, counting the one being placed, when the
// `n` hold `total` flows between them: ceil(c * (total + 1) / n). A backend with
// in_flight + 1 <= load_bound(...) may take the flow.
// c below 1 (or NaN) counts as 1: a smaller bound could not be met by every backend at once;
// a negative total counts as 0.
// n == 0 gives 0 (no backend may take anything). The result saturates at UINT64_MAX.
std::uint64_t load_bound(double c, double total, std::uint32_t n) noexcept;

// Share of the mean load that miss_tolerance() grants above the least loaded backend.
inline constexpr double kMissToleranceShare = 0.1;

// How far above the least loaded eligible backend a backend may be and still take a flow whose
// prefix no backend is known to hold (choose_least_loaded's tolerance): floor(mean / 10)
// (kMissToleranceShare x the mean of the `n` eligible backends holding `total`). 0 at light load
// (the least loaded takes it), proportional under load (the consistent-hash choice keeps a new
// prefix's burst together). n == 0 or a negative total gives 0; saturates at UINT32_MAX.
// (Until round 3 of tools/sim/README.md it was floor((c - 1) x mean), 0.25 x the mean
// at c = 1.25.)
std::uint32_t miss_tolerance(double total, std::uint32_t n) noexcept;

// The bound of an affinity choice (a backend that holds the prefix): load_bound(c, total, n), but
// never below floor(min_load) + 1 + slack, `min_load` being the least load of the `n` eligible
// backends. c x the mean alone allows about one flow when backends hold about one (c = 1.25 at a
// mean of 2 gives 3), so a cached prefix would leave its holder on a blip of load; the slack keeps
// it there until the holder has `slack` more flows than the least loaded backend (SGLang's
// gateway likewise overrides the cache only past an absolute load gap). Under load c x the mean
// is the larger and rules. n == 0 gives 0; a negative or NaN min_load counts as 0; saturates at
// UINT64_MAX.
std::uint64_t affinity_bound(double c, std::uint32_t slack, double total, std::uint32_t n,
                             double min_load) noexcept;

}  // namespace kvsteer
