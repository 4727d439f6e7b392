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

// The most flows one of `n` eligible backends may hold, counting the one being placed, when the
// `n` hold `total` flows between them: ceil(c * (total + 1) / n). A backend with
// in_flight + 1 <= load_bound(...) may take the flow.
// c below 1 (or NaN) counts as 1: a smaller bound could not be met by every backend at once;
// a negative total counts as 0.
// n == 0 gives 0 (no backend may take anything). The result saturates at UINT64_MAX.
std::uint64_t load_bound(double c, double total, std::uint32_t n) noexcept;

}  // namespace kvsteer
