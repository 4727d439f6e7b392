// Dpdk mode's SYN-ACK buckets per client prefix (synrate.h), one table for every worker of a
// dataplane: the limit is the appliance's whatever queue a SYN arrives on (a table per worker
// answered W x the limit, and RSS, where the port has it, spreads a network's SYNs by port).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include <rte_random.h>

#include "kvsteer/siphash.h"
#include "kvsteer/synrate.h"

namespace kvsteer::dp {

class SynBuckets {
   public:
    static constexpr std::size_t kSlots = 16384;

    SynBuckets() : slots_(std::make_unique<Slot[]>(kSlots)), k0_(rte_rand()), k1_(rte_rand()) {}

    // Takes one SYN-ACK for `prefix` (kvs_syn_prefix_key) at `now`: true if one was left. Safe
    // from every worker at once. Direct-mapped by the prefix's SipHash under a key drawn here (a
    // public hash let anyone find prefixes that collide and alternate SYNs between them, each
    // refilling the bucket: never limited); a prefix whose slot another holds starts a fresh,
    // full bucket there, as XDP's LRU map evicts. (Two workers taking a slot over at once, or one
    // taking from it in between, may let one SYN-ACK more through: the slot's key and bucket are
    // two words.)
    bool take(std::uint64_t prefix, std::uint64_t now, std::uint32_t rate, std::uint32_t burst) {
        Slot &s = slots_[index(prefix)];
        std::uint64_t held = s.key.load(std::memory_order_acquire);
        if (held != prefix &&
            s.key.compare_exchange_strong(held, prefix, std::memory_order_acq_rel))
            __atomic_store_n(&s.bucket.tat_ns, now, __ATOMIC_RELEASE);  // kvs_syn_bucket_init
        return kvs_syn_bucket_take(&s.bucket, now, rate, burst) != 0;
    }

    // The slot of `prefix`.
    std::size_t index(std::uint64_t prefix) const {
        const __u64 m = prefix;  // siphash.h's word type (unsigned long long)
        return kvs_siphash24_words(k0_, k1_, &m, 1) % kSlots;
    }

   private:
    struct Slot {
        std::atomic<std::uint64_t> key{0};
        kvs_syn_bucket bucket{};
    };
    std::unique_ptr<Slot[]> slots_;
    const std::uint64_t k0_, k1_;
};

}  // namespace kvsteer::dp
