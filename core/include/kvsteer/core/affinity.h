// Affinity table: chained block hash -> up to K replicas, as an open-addressing array (abi.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvsteer/abi.h"
#include "kvsteer/core/prefix_hash.h"

namespace kvsteer {

// Finds the longest matching chained block hash (deepest block first), then the fixed-prefix
// hash. `half` is one table half of KVS_AFFINITY_SLOTS entries. nullptr when nothing matches.
const kvs_affinity_entry *affinity_lookup(std::span<const kvs_affinity_entry> half,
                                          const PrefixHashes &h) noexcept;

// Builds one table half from scratch (the writer fills the inactive half, then flips).
class AffinityBuilder {
   public:
    explicit AffinityBuilder(std::uint32_t slots = KVS_AFFINITY_SLOTS);
    // false when the probe window is full (the entry is dropped; counted by the caller).
    bool insert(std::uint64_t key, std::span<const std::uint16_t> backends, std::uint8_t depth);
    const std::vector<kvs_affinity_entry> &table() const { return table_; }
    std::uint32_t size() const { return used_; }

   private:
    std::vector<kvs_affinity_entry> table_;
    std::uint32_t used_ = 0;
};

}  // namespace kvsteer
