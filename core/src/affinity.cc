// Affinity table: open addressing with linear probing inside one table half (abi.h layout).
#include "kvsteer/core/affinity.h"

#include <algorithm>

namespace kvsteer {
namespace {

// The ABI fixes a power-of-two size (mask); other sizes fall back to modulo so a misconfigured
// half still works, with the builder and the lookup agreeing on the slot.
std::size_t home_slot(std::uint64_t key, std::size_t size) {
    return (size & (size - 1)) == 0 ? static_cast<std::size_t>(key & (size - 1))
                                    : static_cast<std::size_t>(key % size);
}

const kvs_affinity_entry *find(std::span<const kvs_affinity_entry> half, std::uint64_t key) {
    if (key == 0 || half.empty()) return nullptr;
    std::size_t slot = home_slot(key, half.size());
    const std::size_t probes = std::min<std::size_t>(KVS_AFFINITY_MAX_PROBE, half.size());
    for (std::size_t i = 0; i < probes; ++i) {
        const kvs_affinity_entry &e = half[slot];
        if (e.key == 0) return nullptr;  // the builder never leaves holes inside a probe run
        if (e.key == key) return e.n_backends > 0 ? &e : nullptr;
        if (++slot == half.size()) slot = 0;
    }
    return nullptr;
}

}  // namespace

const kvs_affinity_entry *affinity_lookup(std::span<const kvs_affinity_entry> half,
                                          const PrefixHashes &h) noexcept {
    const std::uint32_t n = std::min<std::uint32_t>(h.n_blocks, KVS_MAX_REPORT_BLOCKS);
    for (std::uint32_t i = n; i-- > 0;) {
        if (const kvs_affinity_entry *e = find(half, h.blocks[i])) return e;
    }
    return find(half, h.prefix);
}

AffinityBuilder::AffinityBuilder(std::uint32_t slots) : table_(slots, kvs_affinity_entry{}) {}

bool AffinityBuilder::insert(std::uint64_t key, std::span<const std::uint16_t> backends,
                             std::uint8_t depth) {
    if (key == 0 || backends.empty() || table_.empty()) return false;
    std::size_t slot = home_slot(key, table_.size());
    const std::size_t probes = std::min<std::size_t>(KVS_AFFINITY_MAX_PROBE, table_.size());
    for (std::size_t i = 0; i < probes; ++i) {
        kvs_affinity_entry &e = table_[slot];
        if (e.key == 0 || e.key == key) {
            if (e.key == 0) ++used_;
            e = kvs_affinity_entry{};
            e.key = key;
            const std::size_t n = std::min<std::size_t>(backends.size(), KVS_MAX_REPLICAS);
            std::copy_n(backends.begin(), n, e.backends);
            e.n_backends = static_cast<std::uint8_t>(n);
            e.depth = depth;
            return true;
        }
        if (++slot == table_.size()) slot = 0;
    }
    return false;
}

std::size_t AffinityBuilder::insert_all(std::span<const AffinityItem> items,
                                        std::vector<std::uint64_t> *dropped) {
    std::vector<std::uint32_t> order(items.size());
    for (std::uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    const std::size_t size = table_.size();
    std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
        return home_slot(items[a].key, size) < home_slot(items[b].key, size);
    });
    std::size_t n = 0;
    for (const std::uint32_t i : order) {
        if (insert(items[i].key, items[i].backends, items[i].depth)) continue;
        ++n;
        if (dropped) dropped->push_back(items[i].key);
    }
    return n;
}

}  // namespace kvsteer
