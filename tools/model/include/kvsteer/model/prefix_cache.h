// Block-level prefix cache with vLLM's automatic-prefix-caching semantics: chained block
// hashes, a request's hit is the longest cached chain of its leading blocks, blocks in use by a
// running request are pinned, free cached blocks are evicted least recently used first.
#pragma once
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kvsteer::model {

struct CacheConfig {
    uint32_t block_tokens = 16;
    // KV capacity in tokens. ~430k is what Llama-3.1-8B (bf16, 128 KiB/token) leaves on an
    // 80 GB GPU at 0.9 memory utilisation: 72 GB - 16 GB weights - ~1.5 GB activations.
    uint64_t capacity_tokens = 430'000;
};

// The blocks one request holds while it runs. Owned by the caller, handed back to release().
struct Allocation {
    std::vector<uint64_t> hashes;      // the request's full prompt blocks (chained hashes)
    uint32_t hit_blocks = 0;           // leading blocks found cached at allocation
    uint32_t committed = 0;            // leading blocks computed (hit or committed since)
    std::vector<uint64_t> referenced;  // cached hashes this request holds a reference on
    uint64_t private_blocks = 0;  // blocks only this request uses (pending, duplicates, output)
    bool live = false;
};

// A change to the set of cached (matchable) blocks, for vLLM-style KV events.
struct BlockEvent {
    enum Type : uint8_t { Stored, Removed } type;
    uint64_t hash;
    uint64_t parent;  // Stored: hash of the previous block in the chain
    bool has_parent;  // false for a chain's first block
};

struct CacheStats {
    uint64_t queries_tokens = 0;  // prompt tokens looked up (vLLM prefix_cache_queries)
    uint64_t hits_tokens = 0;     // of which found cached (vLLM prefix_cache_hits)
    uint64_t query_requests = 0;
    uint64_t evicted_blocks = 0;
};

class PrefixCache {
   public:
    explicit PrefixCache(CacheConfig cfg);

    const CacheConfig &config() const { return cfg_; }
    uint64_t total_blocks() const { return total_blocks_; }

    // Leading blocks of `hashes` that are cached now (no side effects, no counters).
    uint32_t match(std::span<const uint64_t> hashes) const;

    // Cached tokens a prompt of `prompt_tokens` would get. Like vLLM, a full hit is cut so the
    // last prompt token is always recomputed (its logits are needed).
    uint64_t hit_tokens(std::span<const uint64_t> hashes, uint64_t prompt_tokens) const;

    // Admits a request: pins its cached leading blocks and reserves every other block it needs
    // for prompt_tokens + output_tokens, evicting free cached blocks LRU-first. Counts the
    // lookup (queries += prompt_tokens, hits += cached tokens). nullopt when the blocks do not
    // fit now (nothing changed, nothing counted).
    std::optional<Allocation> allocate(std::span<const uint64_t> hashes, uint64_t prompt_tokens,
                                       uint64_t output_tokens);

    // Marks the request's first `computed_tokens` prompt tokens computed: their full blocks
    // become cached (matchable by other requests). Idempotent, monotonic.
    void commit(Allocation &a, uint64_t computed_tokens);

    // The request ended: its cached blocks become evictable (tail of the chain first, as vLLM
    // frees blocks in reverse order), private blocks become free.
    void release(Allocation &a);

    // Blocks in use by running requests / total (vLLM kv_cache_usage_perc, a fraction 0..1).
    double usage() const;
    uint64_t used_blocks() const { return private_blocks_ + pinned_cached_; }
    uint64_t cached_blocks() const { return map_.size(); }
    uint64_t free_blocks() const { return free_blocks_; }
    uint64_t evictable_blocks() const { return lru_.size(); }
    const CacheStats &stats() const { return stats_; }

    // Off by default. When on, every block that becomes cached (Stored) or is evicted (Removed)
    // is recorded until take_events() hands them over.
    void record_events(bool on) { record_ = on; }
    std::vector<BlockEvent> take_events() { return std::exchange(events_, {}); }

    static uint64_t blocks_for(uint64_t tokens, uint32_t block_tokens) {
        return (tokens + block_tokens - 1) / block_tokens;
    }

   private:
    struct Entry {
        uint32_t ref = 0;
        std::list<uint64_t>::iterator lru_it;  // valid when ref == 0
    };
    bool evict_one();

    CacheConfig cfg_;
    uint64_t total_blocks_;
    uint64_t free_blocks_;         // neither cached nor used
    uint64_t private_blocks_ = 0;  // used, not in the map
    uint64_t pinned_cached_ = 0;   // map entries with ref > 0
    std::unordered_map<uint64_t, Entry> map_;
    std::list<uint64_t> lru_;  // cached, ref == 0; front = evicted first
    CacheStats stats_;
    bool record_ = false;
    std::vector<BlockEvent> events_;
};

}  // namespace kvsteer::model
