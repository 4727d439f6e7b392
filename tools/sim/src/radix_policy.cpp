// The strong baseline: SGLang Model Gateway's cache_aware policy. It sees the whole prompt. If the
// load is imbalanced ((max - min) > abs threshold and max > rel threshold * min, load = the
// router's running count) it routes to the least loaded worker; otherwise to the worker of the
// longest prefix match in its approximate tree when the matched fraction exceeds cache_threshold,
// else (a weak match) to the least loaded worker (the gateway's current rule; the older router sent
// it to the worker with the smallest tree: `radix_weak_to_smallest_tree`). Least loaded: the
// first worker of the fewest running requests, as the gateway's min_by_key. The prompt is then
// inserted for the chosen worker. Every eviction interval each worker's tree is cut to
// max_tree_size by LRU leaves.
#include <algorithm>
#include <cmath>

#include "policy.h"
#include "radix_tree.h"

namespace kvsteer::sim {
namespace {

class Radix final : public Policy {
   public:
    Radix(uint32_t servers, const PolicyParams &p)
        : p_(p),
          tree_(servers),
          next_evict_(p.eviction_interval_s > 0 ? p.eviction_interval_s : INFINITY) {}

    std::string name() const override { return "radix"; }

    uint32_t choose(uint32_t, const SimRequest &r, double now, const Cluster &c) override {
        syms_.assign(r.blocks.begin(), r.blocks.end());
        if (r.tail) syms_.push_back(r.tail);
        uint32_t mx = 0, mn = UINT32_MAX, argmin = 0;
        for (uint32_t i = 0; i < c.size(); ++i) {
            mx = std::max(mx, c.in_flight[i]);
            if (c.in_flight[i] < mn) {
                mn = c.in_flight[i];
                argmin = i;
            }
        }
        const bool imbalanced = mx - mn > p_.balance_abs_threshold &&
                                double(mx) > p_.balance_rel_threshold * double(mn);
        uint32_t pick;
        if (imbalanced) {
            pick = argmin;
            ++balance_;
        } else {
            const RadixTree::Match m = tree_.prefix_match(syms_);
            const double matched_bytes =
                std::min<double>(double(m.matched) * p_.kv_block_bytes, double(r.prompt_bytes));
            const double rate = r.prompt_bytes ? matched_bytes / double(r.prompt_bytes) : 0.0;
            if (rate > p_.cache_threshold && m.tenant >= 0) {
                pick = uint32_t(m.tenant);
                ++cache_hit_;
            } else {
                pick = p_.radix_weak_to_smallest_tree ? tree_.smallest_tenant() : argmin;
                ++cache_miss_;
            }
        }
        tree_.insert(syms_, uint16_t(pick), now);
        return pick;
    }

    double next_tick() const override { return next_evict_; }
    void tick(double now, const Cluster &c) override {
        const uint64_t max_syms =
            std::max<uint64_t>(1, p_.max_tree_size / std::max<uint32_t>(1, p_.kv_block_bytes));
        for (uint32_t t = 0; t < c.size(); ++t) evicted_ += tree_.evict(uint16_t(t), max_syms);
        while (next_evict_ <= now) next_evict_ += p_.eviction_interval_s;
    }

    std::map<std::string, double> counters() const override {
        return {{"balance_routes", double(balance_)},
                {"cache_routes", double(cache_hit_)},
                {"weak_match_routes", double(cache_miss_)},
                {"tree_evicted_blocks", double(evicted_)},
                {"tree_nodes", double(tree_.nodes())}};
    }

   private:
    PolicyParams p_;
    RadixTree tree_;
    double next_evict_;
    std::vector<uint64_t> syms_;
    uint64_t balance_ = 0, cache_hit_ = 0, cache_miss_ = 0, evicted_ = 0;
};

}  // namespace

std::unique_ptr<Policy> make_radix(uint32_t servers, const PolicyParams &p) {
    return std::make_unique<Radix>(servers, p);
}

}  // namespace kvsteer::sim
