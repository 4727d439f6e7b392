// Multi-tenant approximate radix tree in the shape of SGLang's router (sgl-router tree.rs): one
// tree of every routed prompt, each node tagged with the workers (tenants) it was routed to and
// when, a per-tenant size, and LRU eviction of a tenant's leaves down to a size limit. Symbols
// are KV-block-sized chunks of the prompt (chained hashes) rather than characters.
#pragma once
#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kvsteer::sim {

class RadixTree {
   public:
    explicit RadixTree(uint32_t tenants);

    void insert(std::span<const uint64_t> syms, uint16_t tenant, double now);

    struct Match {
        size_t matched = 0;  // leading symbols found in the tree
        int tenant = -1;     // most recently used tenant at the deepest matched node (-1: none)
    };
    Match prefix_match(std::span<const uint64_t> syms) const;

    // Tenant with the fewest symbols (lowest id on ties).
    uint16_t smallest_tenant() const;
    uint64_t tenant_size(uint16_t t) const { return size_[t]; }
    // Drops the tenant's least recently used leaves until its size is <= max_size; returns the
    // number of symbols removed.
    uint64_t evict(uint16_t tenant, uint64_t max_size);
    size_t nodes() const { return nodes_.size() - free_.size(); }

   private:
    struct Node {
        std::vector<uint64_t> label;  // symbols on the edge from the parent
        int32_t parent = -1;
        std::unordered_map<uint64_t, int32_t> children;    // by the child's first symbol
        std::vector<std::pair<uint16_t, double>> tenants;  // tenant, last access
    };
    int32_t alloc();
    void touch(int32_t n, uint16_t tenant, double now);
    static const std::pair<uint16_t, double> *find_tenant(const Node &n, uint16_t t);

    std::vector<Node> nodes_;
    std::vector<int32_t> free_;
    std::vector<uint64_t> size_;
};

}  // namespace kvsteer::sim
