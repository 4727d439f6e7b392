#include "kvsteer/model/prefix_cache.h"

#include <algorithm>

namespace kvsteer::model {

PrefixCache::PrefixCache(CacheConfig cfg)
    : cfg_(cfg),
      total_blocks_(cfg.block_tokens ? cfg.capacity_tokens / cfg.block_tokens : 0),
      free_blocks_(total_blocks_) {}

uint32_t PrefixCache::match(std::span<const uint64_t> hashes) const {
    uint32_t n = 0;
    for (uint64_t h : hashes) {
        if (!map_.contains(h)) break;
        ++n;
    }
    return n;
}

uint64_t PrefixCache::hit_tokens(std::span<const uint64_t> hashes, uint64_t prompt_tokens) const {
    if (prompt_tokens == 0) return 0;
    const uint64_t max_blocks = (prompt_tokens - 1) / cfg_.block_tokens;
    return std::min<uint64_t>(match(hashes), max_blocks) * cfg_.block_tokens;
}

bool PrefixCache::evict_one() {
    if (lru_.empty()) return false;
    if (record_) events_.push_back({BlockEvent::Removed, lru_.front(), 0, false});
    map_.erase(lru_.front());
    lru_.pop_front();
    ++free_blocks_;
    ++stats_.evicted_blocks;
    return true;
}

std::optional<Allocation> PrefixCache::allocate(std::span<const uint64_t> hashes,
                                                uint64_t prompt_tokens, uint64_t output_tokens) {
    const uint64_t bt = cfg_.block_tokens;
    const uint64_t hit = hit_tokens(hashes, prompt_tokens) / bt;
    const uint64_t need_total = blocks_for(prompt_tokens + output_tokens, cfg_.block_tokens);
    const uint64_t need_private = need_total - hit;
    // Hit blocks that sit in the LRU stop being evictable once pinned: count them out.
    uint64_t hit_in_lru = 0;
    for (uint64_t i = 0; i < hit; ++i)
        if (map_.at(hashes[i]).ref == 0) ++hit_in_lru;
    if (free_blocks_ + lru_.size() - hit_in_lru < need_private) return std::nullopt;

    Allocation a;
    a.hashes.assign(hashes.begin(), hashes.end());
    a.hit_blocks = uint32_t(hit);
    a.committed = uint32_t(hit);
    a.referenced.reserve(hit);
    for (uint64_t i = 0; i < hit; ++i) {
        Entry &e = map_.at(hashes[i]);
        if (e.ref++ == 0) {
            lru_.erase(e.lru_it);
            ++pinned_cached_;
        }
        a.referenced.push_back(hashes[i]);
    }
    while (free_blocks_ < need_private) evict_one();
    free_blocks_ -= need_private;
    private_blocks_ += need_private;
    a.private_blocks = need_private;
    a.live = true;

    stats_.queries_tokens += prompt_tokens;
    stats_.hits_tokens += hit * bt;
    ++stats_.query_requests;
    return a;
}

void PrefixCache::commit(Allocation &a, uint64_t computed_tokens) {
    if (!a.live) return;
    const uint64_t upto = std::min<uint64_t>(computed_tokens / cfg_.block_tokens, a.hashes.size());
    for (uint64_t i = a.committed; i < upto; ++i) {
        const uint64_t h = a.hashes[i];
        auto [it, inserted] = map_.try_emplace(h);
        if (!inserted) {
            // Another request computed the same block meanwhile: ours stays a private duplicate
            // (its chain continues through the cached copy for later requests).
            continue;
        }
        it->second.ref = 1;
        if (record_) events_.push_back({BlockEvent::Stored, h, i ? a.hashes[i - 1] : 0, i > 0});
        ++pinned_cached_;
        --private_blocks_;
        --a.private_blocks;
        a.referenced.push_back(h);
    }
    a.committed = uint32_t(std::max<uint64_t>(a.committed, upto));
}

void PrefixCache::release(Allocation &a) {
    if (!a.live) return;
    for (auto it = a.referenced.rbegin(); it != a.referenced.rend(); ++it) {
        Entry &e = map_.at(*it);
        if (--e.ref == 0) {
            e.lru_it = lru_.insert(lru_.end(), *it);
            --pinned_cached_;
        }
    }
    private_blocks_ -= a.private_blocks;
    free_blocks_ += a.private_blocks;
    a.private_blocks = 0;
    a.referenced.clear();
    a.live = false;
}

double PrefixCache::usage() const {
    return total_blocks_ ? double(used_blocks()) / double(total_blocks_) : 0.0;
}

}  // namespace kvsteer::model
