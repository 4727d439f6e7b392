// Backend choice for one flow: affinity table, then bounded-load Maglev; or round robin.
#pragma once

#include <cstdint>
#include <span>

#include "kvsteer/core/prefix_hash.h"
#include "tables.h"

namespace kvsteer::dp {

struct Choice {
    std::uint16_t backend = KVS_BACKEND_NONE;
    std::uint8_t via = KVS_VIA_MAGLEV;  // enum kvs_choice_via
};

// Per-worker scratch so a choice allocates nothing.
struct ChooseScratch {
    std::uint32_t in_flight[KVS_MAX_BACKENDS];
    std::uint8_t eligible[KVS_MAX_BACKENDS];
    std::uint32_t rr_cursor = 0;
};

// `exclude`: backends this flow already tried. `five_tuple_hash` keys FIVE_TUPLE mode.
Choice choose_backend(const Tables &t, const PrefixHashes &h, std::uint64_t five_tuple_hash,
                      std::span<const std::uint16_t> exclude, ChooseScratch &s) noexcept;

}  // namespace kvsteer::dp
