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

// One entry of a batch for AffinityBuilder::insert_all.
struct AffinityItem {
    std::uint64_t key = 0;
    std::span<const std::uint16_t> backends;
    std::uint8_t depth = 0;
};

// Builds one table half from scratch (the writer fills the inactive half, then flips).
class AffinityBuilder {
   public:
    explicit AffinityBuilder(std::uint32_t slots = KVS_AFFINITY_SLOTS);
    // false when the probe window is full (the entry is dropped; counted by the caller).
    bool insert(std::uint64_t key, std::span<const std::uint16_t> backends, std::uint8_t depth);
    // A whole table's worth at once, placing as many as the probe window allows: taken in the
    // order of their home slots, each key gets the first free slot from its home, which for
    // windows of one length places the most (an earliest-deadline-first schedule). Keys taken
    // one by one in any other order lose slots: one key of a full window pushed out early takes
    // a later key's only free slot (at half load, random order drops ~0.5% of the keys, this
    // ~0.006%). Appends the keys it dropped to `dropped` (when given); returns how many.
    std::size_t insert_all(std::span<const AffinityItem> items,
                           std::vector<std::uint64_t> *dropped = nullptr);
    const std::vector<kvs_affinity_entry> &table() const { return table_; }
    std::uint32_t size() const { return used_; }

   private:
    std::vector<kvs_affinity_entry> table_;
    std::uint32_t used_ = 0;
};

}  // namespace kvsteer
